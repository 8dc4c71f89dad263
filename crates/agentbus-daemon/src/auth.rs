//! Who is calling, and what they may do.
//!
//! Two credentials open this daemon today: the **instance key** (admin,
//! new at every launch, in `<data dir>/authkey`) and **agent tokens** (one
//! per agent, minted when it is opened or registered, handed to its pane
//! as `AGENTBUS_AGENT_TOKEN`). Either arrives as `X-AuthKey: <secret>` or
//! `Authorization: Bearer <secret>`. An agent token makes the caller that
//! agent: what it sends is sent as itself, whatever a body claims.
//!
//! Tokens are stored only as SHA-256 digests and looked up by digest; the
//! instance key is compared in constant time.

use crate::error::ApiError;
use crate::state::AppState;
use agentbus_proto::AgentId;
use agentbus_proto::jekt::Trust;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub const AUTH_KEY_HEADER: &str = "x-authkey";
/// Agent tokens start with this, so a leaked one is recognisable.
pub const AGENT_TOKEN_PREFIX: &str = "abt_";

/// The resolved caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Holder of the instance key: may do everything.
    Admin,
    /// Holder of this agent's token.
    Agent(AgentId),
    /// A peer instance on this machine, forwarding a jekt with the
    /// forward token from our registry entries: may only inject.
    Peer,
    /// This instance's poller, delivering what the relay handed over.
    /// Never the caller of an HTTP request.
    Relay,
    /// The browser dashboard of a person logged in with a link from
    /// `agentbus ui` (the session's short id): may do what the instance
    /// key does over HTTP, from this daemon's own page only (see
    /// [`crate::ui`]); named `ui:<id>` in the audit log.
    Dashboard(String),
}

/// The routes a forward token opens: a jekt, and mail, for an agent of
/// this instance.
pub const FORWARD_ROUTES: [(&str, &str); 2] = [
    ("POST", "/agentmux/reactive/inject"),
    ("POST", "/v1/messages"),
];

/// Sender name used when the instance key sends without naming one.
pub const DEFAULT_ADMIN_SENDER: &str = "user";

impl Identity {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Identity::Admin => "admin".into(),
            Identity::Agent(a) => format!("agent:{a}"),
            Identity::Peer => "peer".into(),
            Identity::Relay => "relay".into(),
            Identity::Dashboard(id) => format!("ui:{id}"),
        }
    }

    /// The instance key, or a dashboard session (which stands for the
    /// person who holds it).
    pub fn is_admin(&self) -> bool {
        matches!(self, Identity::Admin | Identity::Dashboard(_))
    }

    /// Who a jekt or message is from, and what may be claimed about it:
    /// an agent token sends as its agent (proven) and may not name
    /// another; the instance key names anyone (a claim), `user` by default.
    pub fn sender(&self, claimed: Option<&AgentId>) -> Result<(String, Trust), ApiError> {
        match self {
            Identity::Agent(me) => match claimed {
                Some(other) if other != me => Err(ApiError::forbidden(format!(
                    "an agent token for {me} cannot send as {other}"
                ))),
                _ => Ok((me.to_string(), Trust::HostVerified)),
            },
            Identity::Admin | Identity::Dashboard(_) => Ok((
                claimed.map_or_else(|| DEFAULT_ADMIN_SENDER.to_string(), ToString::to_string),
                Trust::SelfDeclared,
            )),
            // A forwarded or relayed jekt keeps its sender; what the peer
            // vouches for is applied by `sender_vouched`, what the relay
            // vouches for by the poller.
            Identity::Peer | Identity::Relay => Ok((
                claimed.map_or_else(|| DEFAULT_ADMIN_SENDER.to_string(), ToString::to_string),
                Trust::SelfDeclared,
            )),
        }
    }

    /// [`Identity::sender`] for a request that may carry `origin_trust`:
    /// a peer instance vouches for the sender it forwards, so a sender
    /// proven there is channel-verified here. From anyone else the field
    /// is ignored.
    pub fn sender_vouched(
        &self,
        claimed: Option<&AgentId>,
        origin_trust: Option<Trust>,
    ) -> Result<(String, Trust), ApiError> {
        let (from, trust) = self.sender(claimed)?;
        if *self == Identity::Peer && origin_trust.as_ref().is_some_and(Trust::is_proven) {
            return Ok((from, Trust::ChannelVerified));
        }
        Ok((from, trust))
    }

    /// Whether this caller is held to the rate limits. A peer's or the
    /// relay's jekts were limited where they started.
    pub fn is_limited(&self, limits: &crate::config::LimitsConfig) -> bool {
        match self {
            Identity::Agent(_) => true,
            Identity::Admin | Identity::Dashboard(_) => limits.apply_to_admin,
            Identity::Peer | Identity::Relay => false,
        }
    }

    /// Agent tokens may act only on their own agent; the admin on any.
    pub fn own_or_admin(&self, id: &AgentId, what: &str) -> Result<(), ApiError> {
        match self {
            Identity::Agent(me) if me != id => Err(ApiError::forbidden(format!(
                "an agent token for {me} may use only its own {what}, not {id}'s"
            ))),
            _ => Ok(()),
        }
    }
}

/// A fresh 256-bit secret, hex encoded.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    // invariant: the OS random source is available on every platform we
    // run on; without it no credential could be made at all.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    hex::encode(bytes)
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// An extra App API token of an agent (`agentbus token create`), held to
/// the scopes it was minted with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtraToken {
    pub token_id: String,
    pub agent_id: AgentId,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_ms: i64,
    #[serde(skip)]
    pub parsed: std::sync::Arc<Vec<crate::rpc::scope::Scope>>,
}

#[derive(Debug, Clone)]
enum Grant {
    /// The token an agent's pane gets; scopes come from the policy.
    Own(AgentId),
    Extra(ExtraToken),
}

impl Grant {
    fn agent(&self) -> &AgentId {
        match self {
            Grant::Own(a) => a,
            Grant::Extra(t) => &t.agent_id,
        }
    }
}

/// A presented credential, resolved.
#[derive(Debug, Clone)]
pub struct Credential {
    pub identity: Identity,
    /// Set for an extra token: it opens only the App API, within these.
    pub extra: Option<ExtraToken>,
}

pub struct Auth {
    instance_key_digest: [u8; 32],
    forward_token_digest: [u8; 32],
    // A std RwLock: lookups are short and never span an await.
    tokens: RwLock<HashMap<[u8; 32], Grant>>,
}

impl Auth {
    pub fn new(instance_key: &str, forward_token: &str) -> Self {
        Self {
            instance_key_digest: digest(instance_key),
            forward_token_digest: digest(forward_token),
            tokens: RwLock::new(HashMap::new()),
        }
    }

    /// Mints the token of `agent`'s own pane, replacing the one it had
    /// (its extra tokens stay valid).
    pub fn mint(&self, agent: &AgentId) -> String {
        let token = format!("{AGENT_TOKEN_PREFIX}{}", new_secret());
        if let Ok(mut t) = self.tokens.write() {
            t.retain(|_, g| !matches!(g, Grant::Own(a) if a == agent));
            t.insert(digest(&token), Grant::Own(agent.clone()));
        }
        token
    }

    /// Mints an extra App API token for `agent`, held to `scopes`.
    pub fn mint_extra(
        &self,
        agent: &AgentId,
        scopes: Vec<String>,
        label: Option<String>,
    ) -> Result<(String, ExtraToken), String> {
        let parsed = crate::rpc::scope::parse_all(&scopes)?;
        let token = format!("{AGENT_TOKEN_PREFIX}{}", new_secret());
        let info = ExtraToken {
            token_id: format!("tok_{}", &new_secret()[..12]),
            agent_id: agent.clone(),
            scopes,
            label,
            created_ms: agentbus_proto::now_ms(),
            parsed: std::sync::Arc::new(parsed),
        };
        if let Ok(mut t) = self.tokens.write() {
            t.insert(digest(&token), Grant::Extra(info.clone()));
        }
        Ok((token, info))
    }

    /// Extra tokens, oldest first (never their secrets).
    pub fn extra_tokens(&self) -> Vec<ExtraToken> {
        let mut v: Vec<ExtraToken> = self
            .tokens
            .read()
            .map(|t| {
                t.values()
                    .filter_map(|g| match g {
                        Grant::Extra(e) => Some(e.clone()),
                        Grant::Own(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| (a.created_ms, &a.token_id).cmp(&(b.created_ms, &b.token_id)));
        v
    }

    /// Revokes one extra token by id; whether it existed.
    pub fn revoke_extra(&self, token_id: &str) -> bool {
        let Ok(mut t) = self.tokens.write() else {
            return false;
        };
        let before = t.len();
        t.retain(|_, g| !matches!(g, Grant::Extra(e) if e.token_id == token_id));
        t.len() != before
    }

    /// Invalidates every token of `agent`, its extra tokens too.
    pub fn revoke(&self, agent: &AgentId) {
        if let Ok(mut t) = self.tokens.write() {
            t.retain(|_, g| g.agent() != agent);
        }
    }

    pub fn is_instance_key(&self, presented: &str) -> bool {
        // Both sides are digests of equal length, compared in constant time.
        bool::from(digest(presented).ct_eq(&self.instance_key_digest))
    }

    /// Whether `value` is any credential this daemon accepts.
    pub fn is_credential(&self, value: &str) -> bool {
        self.lookup(value).is_some()
    }

    pub fn identify(&self, presented: &str) -> Option<Identity> {
        self.lookup(presented).map(|c| c.identity)
    }

    pub fn lookup(&self, presented: &str) -> Option<Credential> {
        let plain = |identity| Credential {
            identity,
            extra: None,
        };
        if self.is_instance_key(presented) {
            return Some(plain(Identity::Admin));
        }
        let d = digest(presented);
        if bool::from(d.ct_eq(&self.forward_token_digest)) {
            return Some(plain(Identity::Peer));
        }
        match self.tokens.read().ok()?.get(&d)? {
            Grant::Own(a) => Some(plain(Identity::Agent(a.clone()))),
            Grant::Extra(e) => Some(Credential {
                identity: Identity::Agent(e.agent_id.clone()),
                extra: Some(e.clone()),
            }),
        }
    }
}

/// The secret a request presents, if any.
pub fn presented_credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(AUTH_KEY_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware for every route but `/healthz` and `/version`: resolves the
/// caller or answers 401 (and audits the refusal, never the secret).
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if presented_credential(req.headers()).is_none() {
        let (query_token, rest) = crate::ui::token_in_query(req.uri().query().unwrap_or(""));
        match crate::ui::dashboard_session(&state, req.headers(), query_token.as_deref()) {
            Ok(Some(session)) => {
                // The route never sees the token in its query.
                if query_token.is_some() {
                    let path = req.uri().path();
                    let uri = if rest.is_empty() {
                        path.to_string()
                    } else {
                        format!("{path}?{rest}")
                    };
                    if let Ok(uri) = uri.parse() {
                        *req.uri_mut() = uri;
                    }
                }
                req.extensions_mut().insert(Identity::Dashboard(session.id));
                return next.run(req).await;
            }
            Ok(None) => {}
            Err(e) => {
                let target = route_of(req.method(), req.uri().path());
                state.audit_refusal("ui", &target, e.code, &e.message).await;
                return e.into_response();
            }
        }
    }
    let credential = match presented_credential(req.headers()) {
        None => Err("missing credential"),
        Some(c) => state.auth().lookup(c).ok_or("invalid credential"),
    };
    if let Ok(Credential {
        extra: Some(token), ..
    }) = &credential
    {
        let target = route_of(req.method(), req.uri().path());
        state
            .audit_refusal(
                &format!("agent:{}", token.agent_id),
                &target,
                "forbidden",
                "App API token",
            )
            .await;
        return ApiError::forbidden(format!(
            "token {} opens only the App API (/ws); use the agent's own token for HTTP",
            token.token_id
        ))
        .into_response();
    }
    let identity = credential.map(|c| c.identity);
    let forward_elsewhere = matches!(identity, Ok(Identity::Peer))
        && !FORWARD_ROUTES.contains(&(req.method().as_str(), req.uri().path()));
    match identity {
        Ok(_) if forward_elsewhere => {
            let target = route_of(req.method(), req.uri().path());
            state
                .audit_refusal("peer", &target, "forbidden", "forward token")
                .await;
            ApiError::forbidden(
                "a forward token opens only POST /agentmux/reactive/inject and POST /v1/messages",
            )
            .into_response()
        }
        Ok(id) => {
            req.extensions_mut().insert(id);
            next.run(req).await
        }
        Err(why) => {
            let target = route_of(req.method(), req.uri().path());
            state
                .audit_refusal("anonymous", &target, "unauthorized", why)
                .await;
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("{why}: send the instance key as X-AuthKey, or an agent token as Authorization: Bearer"),
            )
            .into_response()
        }
    }
}

/// How refusals name a route in the audit log: `METHOD /path` (cut).
fn route_of(method: &Method, path: &str) -> String {
    format!("{method} {}", truncate(path, 200))
}

pub fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Any authenticated caller.
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing credential",
                )
            })
    }
}

/// Only the instance key (or a dashboard session, which stands for the
/// person who holds it); an agent token gets 403 (audited). Carries how
/// the audit log names the caller.
pub struct AdminOnly(pub String);

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await?.0 {
            id if id.is_admin() => Ok(AdminOnly(id.actor())),
            agent => {
                let target = route_of(&parts.method, parts.uri.path());
                state
                    .audit_refusal(&agent.actor(), &target, "forbidden", "admin route")
                    .await;
                Err(ApiError::forbidden(format!(
                    "{} needs the instance key; an agent token ({}) may not call it",
                    target,
                    agent.actor()
                )))
            }
        }
    }
}

/// Whether an `Origin` header names this machine.
pub fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        rest.split([':', '/']).next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Middleware: a request that carries an `Origin` (a browser) must come
/// from a loopback page. Blocks other sites from driving the daemon even
/// where CORS would not (simple requests, WebSocket upgrades).
pub async fn loopback_origin_only(req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(is_loopback_origin);
        if !ok {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "requests from web pages are accepted only from loopback origins",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Headers an MCP client sends besides the credential (the streamable
/// HTTP transport's session, protocol version and resumption).
const MCP_HEADERS: [&str; 3] = ["mcp-session-id", "mcp-protocol-version", "last-event-id"];

/// CORS for loopback pages only. Preflights are answered here, before
/// authentication (a browser sends no credential with them).
pub fn cors() -> CorsLayer {
    let mut headers = vec![
        header::CONTENT_TYPE,
        header::AUTHORIZATION,
        header::HeaderName::from_static(AUTH_KEY_HEADER),
    ];
    headers.extend(MCP_HEADERS.map(header::HeaderName::from_static));
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(is_loopback_origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(headers)
        .expose_headers([header::HeaderName::from_static("mcp-session-id")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_identify_their_agent_until_revoked() {
        let auth = Auth::new("k", "fwd");
        let bob = AgentId::parse("bob").unwrap();
        let t1 = auth.mint(&bob);
        assert!(t1.starts_with(AGENT_TOKEN_PREFIX) && t1.len() == 4 + 64);
        assert_eq!(auth.identify(&t1), Some(Identity::Agent(bob.clone())));
        assert_eq!(auth.identify("k"), Some(Identity::Admin));
        assert_eq!(auth.identify("fwd"), Some(Identity::Peer));
        let t2 = auth.mint(&bob);
        assert_eq!(
            auth.identify(&t1),
            None,
            "re-minting replaces the old token"
        );
        auth.revoke(&bob);
        assert_eq!(auth.identify(&t2), None);
        assert_eq!(auth.identify(""), None);
    }

    #[test]
    fn credentials_come_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented_credential(&h), Some("abc"));
        h.insert("x-authkey", HeaderValue::from_static("key"));
        assert_eq!(presented_credential(&h), Some("key"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_credential(&h), None);
    }

    #[test]
    fn only_loopback_origins_pass() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://[::1]:3000",
            "http://127.1.2.3",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "http://evil.com",
            "null",
            "http://127.0.0.1.evil.com",
            "file://",
            "http://localhost.evil",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }
}
