//! The browser dashboard: its page and assets (compiled into the
//! binary), its login, and the rules a browser session is held to.
//!
//! A dashboard session is two secrets that stand for the person who ran
//! `agentbus ui` (the instance key never reaches the page): a cookie
//! (HttpOnly, SameSite=Strict) and a page token. Browsers send a cookie
//! for 127.0.0.1 to every port of it, so a server on another port the
//! user visits would receive the cookie; the page token never travels
//! by itself: the login hands it over in the redirect's fragment (which
//! no server sees), the page keeps it in its own origin's storage, and
//! sends it on every request (`X-CSRF-Token`; `ui_token=` in the query
//! of a WebSocket upgrade, which cannot carry headers). It is also the
//! CSRF token. Besides both secrets, a request must come from this
//! daemon's own page: the `Host` is a loopback name, an `Origin` (always
//! sent on WebSocket upgrades and on anything but a plain GET) is exactly
//! `http://<Host>`, and `Sec-Fetch-Site` (when the browser sends it) is
//! `same-origin`. The page is served with a Content-Security-Policy that
//! lets it load only its own scripts and styles and connect only to
//! this daemon.

mod sessions;

pub use sessions::{Session, UiSessions};

use crate::auth::{Caller, Identity, is_loopback_origin};
use crate::error::{ApiError, ApiQuery};
use crate::state::{AppState, AuditRecord};
use agentbus_proto::now_ms;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The header every request of the page carries its page token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Where a WebSocket upgrade of the page carries it.
pub const TOKEN_PARAM: &str = "ui_token";

/// Everything the dashboard keeps: the cookie's name and the sessions.
pub struct Ui {
    cookie: String,
    pub sessions: UiSessions,
}

impl Ui {
    /// The cookie's name carries a digest of the data dir: browsers keep
    /// one cookie jar for every port of 127.0.0.1, so two daemons of one
    /// user must not overwrite each other's session.
    pub fn new(data_dir: &std::path::Path) -> Self {
        let tag = hex::encode(Sha256::digest(data_dir.as_os_str().as_encoded_bytes()));
        Ui {
            cookie: format!("agentbus_ui_{}", &tag[..12]),
            sessions: UiSessions::default(),
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn cross_origin(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        format!("a dashboard session is accepted only from this daemon's own page: {why}"),
    )
}

/// The `Host` the request names, if it is a loopback one.
fn loopback_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    is_loopback_origin(&format!("http://{host}")).then_some(host)
}

/// The page token of a WebSocket upgrade's query, and the query without it.
pub fn token_in_query(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            match pair
                .strip_prefix(TOKEN_PARAM)
                .and_then(|v| v.strip_prefix('='))
            {
                Some(v) => {
                    token = Some(v.to_string());
                    false
                }
                None => !pair.is_empty(),
            }
        })
        .collect();
    (token, rest.join("&"))
}

/// The dashboard session a request's cookie opens, held to the page's
/// rules (see the module's comment). `Ok(None)`: no session cookie.
/// `query_token`: the page token a WebSocket upgrade carried.
pub fn dashboard_session(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Option<Session>, ApiError> {
    let Some(secret) = cookie(headers, state.ui().cookie_name()) else {
        return Ok(None);
    };
    let Some(session) = state.ui().sessions.session(secret, now_ms()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ui_session_ended",
            "this dashboard session has expired or was logged out: run `agentbus ui` for a new login link",
        ));
    };
    let host = loopback_host(headers).ok_or_else(|| cross_origin("Host is not a loopback name"))?;
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""));
    if let Some(origin) = origin
        && !origin.eq_ignore_ascii_case(&format!("http://{host}"))
    {
        return Err(cross_origin("the request comes from another origin"));
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(cross_origin(
            "the browser says the request is not same-origin",
        ));
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrade && origin.is_none() {
        return Err(cross_origin("a WebSocket upgrade without an Origin"));
    }
    let token = match (upgrade, headers.get(CSRF_HEADER)) {
        (_, Some(h)) => h.to_str().ok(),
        (true, None) => query_token,
        (false, None) => None,
    };
    if !token.is_some_and(|t| session.csrf_matches(t)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a dashboard request must carry the session's page token (X-CSRF-Token; ui_token= on a WebSocket upgrade): the cookie alone opens nothing",
        ));
    }
    Ok(Some(session))
}

/// The policy of every dashboard page: scripts and styles of its own
/// (the styles xterm.js adds at run time carry the page's nonce),
/// connections to this daemon only, no frames, no plugins, no forms to
/// elsewhere.
fn content_security_policy(nonce: &str) -> String {
    let styles = if nonce.is_empty() {
        "style-src 'self'".to_string()
    } else {
        format!("style-src 'self' 'nonce-{nonce}'")
    };
    format!(
        "default-src 'none'; script-src 'self'; {styles}; img-src 'self' data:; font-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Headers every dashboard response carries.
fn harden(mut resp: Response, nonce: &str) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(
        h,
        "content-security-policy",
        &content_security_policy(nonce),
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    resp
}

/// The page and its assets, compiled in. xterm.js is vendored
/// (`scripts/vendor-xterm.sh` brings it from npm; its license and digests
/// sit beside it): the build fetches nothing.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    (
        "xterm.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/xterm/xterm.mjs"),
    ),
    (
        "xterm.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/vendor/xterm/xterm.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("../../ui/index.html");

fn html(status: StatusCode, body: String, nonce: &str) -> Response {
    let resp = (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    harden(resp, nonce)
}

/// `GET /`: the dashboard. Open: the page holds no data; it asks for
/// everything with the session cookie, and shows how to log in when
/// there is none.
pub async fn index() -> Response {
    let nonce = crate::auth::new_secret()[..32].to_string();
    html(StatusCode::OK, INDEX.replace("{{nonce}}", &nonce), &nonce)
}

/// `GET /ui/assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, kind, bytes)) => harden(
            (
                [
                    (header::CONTENT_TYPE, *kind),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *bytes,
            )
                .into_response(),
            "",
        ),
        None => ApiError::not_found("no_asset", format!("the dashboard has no asset {file:?}"))
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginParams {
    code: String,
}

/// A small page for a login that did not happen (its texts are constants
/// of ours, never anything a request brought).
fn login_page(status: StatusCode, title: &'static str, text: &'static str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>agentbus: {}</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/app.css\"></head><body class=\"notice\">\
         <h1>{}</h1><p>{}</p><p><code>agentbus ui</code> prints a new link.</p></body></html>",
        title, title, text
    );
    html(status, body, "")
}

/// `GET /ui/login?code=...`: the one-time link from `agentbus ui`.
/// Trades the code for a session cookie and sends the browser to `/`;
/// the code then works no more.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<LoginParams>,
) -> Response {
    if loopback_host(&headers).is_none() {
        return login_page(
            StatusCode::FORBIDDEN,
            "Not this address",
            "Open the login link as agentbus printed it (a loopback address).",
        );
    }
    let ttl_s = state.config().ui.session_ttl_s;
    let Some((secret, session)) =
        state
            .ui()
            .sessions
            .redeem(&p.code, now_ms(), (ttl_s * 1000) as i64)
    else {
        state
            .audit_refusal(
                "anonymous",
                "GET /ui/login",
                "unauthorized",
                "login link unknown, used or expired",
            )
            .await;
        return login_page(
            StatusCode::UNAUTHORIZED,
            "This login link does not work",
            "It was used already, it expired, or all sessions were logged out.",
        );
    };
    state
        .audit(AuditRecord::new(
            format!("ui:{}", session.id),
            "ui",
            None,
            "login",
        ))
        .await;
    let cookie = format!(
        "{}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl_s}",
        state.ui().cookie_name()
    );
    // The page token rides in the fragment: the browser keeps it, no
    // server (nor a log of one) ever sees it.
    let resp = (
        StatusCode::SEE_OTHER,
        [
            (
                header::LOCATION,
                format!("/#{TOKEN_PARAM}={}", session.csrf),
            ),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response();
    harden(resp, "")
}

fn session_of(state: &AppState, caller: &Identity) -> Result<Session, ApiError> {
    let Identity::Dashboard(id) = caller else {
        return Err(ApiError::bad_request(
            "not_a_dashboard_session",
            "this route is the dashboard's own: open it from the page `agentbus ui` logs in to",
        ));
    };
    state.ui().sessions.by_id(id, now_ms()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ui_session_ended",
            "this dashboard session has ended",
        )
    })
}

/// `GET /ui/session`: which session this is, when it ends, and which
/// daemon this is (never a secret: the page has its token already).
pub async fn session(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let s = session_of(&state, &caller)?;
    let body = Json(serde_json::json!({
        "session": s.id,
        "expires_ms": s.expires_ms,
        "url": state.url(),
        "version": env!("CARGO_PKG_VERSION"),
    }));
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /ui/logout`: ends this session and clears its cookie.
pub async fn logout(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let s = session_of(&state, &caller)?;
    state.ui().sessions.end(&s.id);
    state
        .audit(AuditRecord::new(caller.actor(), "ui", None, "logout"))
        .await;
    let clear = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        state.ui().cookie_name()
    );
    Ok((
        [(header::SET_COOKIE, clear)],
        Json(serde_json::json!({ "ended": true })),
    )
        .into_response())
}

/// Only the instance key itself: a dashboard session may not mint more
/// sessions nor end the others.
/// Only the instance key may do `what`; anyone else gets 403 saying so.
pub(crate) fn instance_key_only(caller: &Identity, what: &str) -> Result<(), ApiError> {
    match caller {
        Identity::Admin => Ok(()),
        other => Err(ApiError::forbidden(format!(
            "{what} with the instance key, not by {}",
            other.actor()
        ))),
    }
}

const LOGINS: &str = "dashboard logins are managed (`agentbus ui`)";

/// `POST /v1/ui/links`: a one-time login link (what `agentbus ui` prints).
pub async fn new_link(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    instance_key_only(&caller, LOGINS)?;
    let now = now_ms();
    let expires = now + (state.config().ui.link_ttl_s * 1000) as i64;
    let code = state.ui().sessions.new_link(now, expires);
    state
        .audit(
            AuditRecord::new(caller.actor(), "ui", None, "link").detail(format!(
                "login link valid {} s",
                state.config().ui.link_ttl_s
            )),
        )
        .await;
    Ok(Json(serde_json::json!({
        "url": format!("{}/ui/login?code={code}", state.url()),
        "expires_ms": expires,
    })))
}

/// `DELETE /v1/ui/sessions`: logs every dashboard out, and voids the
/// links not used yet.
pub async fn end_all(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    instance_key_only(&caller, LOGINS)?;
    let ended = state.ui().sessions.end_all(now_ms());
    state
        .audit(
            AuditRecord::new(caller.actor(), "ui", None, "logout_all")
                .detail(format!("{ended} sessions ended")),
        )
        .await;
    Ok(Json(serde_json::json!({ "ended": ended })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_token_is_taken_out_of_an_upgrade_query() {
        assert_eq!(
            token_in_query("ui_token=abc"),
            (Some("abc".into()), String::new())
        );
        assert_eq!(
            token_in_query("input=true&ui_token=abc&rows=3"),
            (Some("abc".into()), "input=true&rows=3".into())
        );
        assert_eq!(token_in_query("input=true"), (None, "input=true".into()));
        assert_eq!(token_in_query("ui_tokenx=1"), (None, "ui_tokenx=1".into()));
        assert_eq!(token_in_query(""), (None, String::new()));
    }

    #[test]
    fn a_page_without_a_nonce_names_none() {
        assert!(!content_security_policy("").contains("nonce"));
        assert!(content_security_policy("ab12").contains("style-src 'self' 'nonce-ab12';"));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; agentbus_ui_x=s3; b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("agentbus_ui_y=t"));
        assert_eq!(cookie(&h, "agentbus_ui_x"), Some("s3"));
        assert_eq!(cookie(&h, "agentbus_ui_y"), Some("t"));
        assert_eq!(cookie(&h, "agentbus_ui"), None);
    }

    #[test]
    fn every_asset_has_a_type_and_the_page_names_only_served_assets() {
        for (name, kind, bytes) in ASSETS {
            assert!(!bytes.is_empty() && !kind.is_empty(), "{name}");
        }
        for part in INDEX.split("/ui/assets/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                ASSETS.iter().any(|(n, ..)| *n == name),
                "{name} is not served"
            );
        }
        assert!(INDEX.contains("{{nonce}}"));
    }

    /// The vendored xterm.js is byte for byte what npm published
    /// (`scripts/vendor-xterm.sh` wrote the digests when it fetched it).
    #[test]
    fn the_vendored_terminal_is_what_npm_published() {
        let sums = include_str!("../../ui/vendor/xterm/SHA256SUMS");
        let mut checked = 0;
        for line in sums.lines() {
            let (sum, file) = line.split_once("  ").unwrap();
            let (_, _, bytes) = ASSETS.iter().find(|(n, ..)| *n == file).unwrap();
            assert_eq!(hex::encode(Sha256::digest(bytes)), sum, "{file}");
            checked += 1;
        }
        assert_eq!(checked, 2);
    }
}
