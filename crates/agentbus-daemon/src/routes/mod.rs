//! The HTTP route table: every route of the daemon, in one place.
//!
//! Routes are added through [`Table::add`], which records (method, path)
//! beside the router, so a test can hold the table against the OpenAPI
//! document (`docs/openapi.json`) and neither can drift from the other.

mod agents;
mod app_api;
mod attach;
mod events;
mod messages;
mod meta;
mod metrics;
mod reactive;
mod stats;
mod ui;

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::MethodRouter;

/// One route: method and path (axum syntax, `{param}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// Reachable without a credential.
    pub open: bool,
}

struct Table {
    open: Router<AppState>,
    protected: Router<AppState>,
    routes: Vec<Route>,
}

impl Table {
    fn add(
        mut self,
        methods: &[&'static str],
        path: &'static str,
        open: bool,
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.list(methods, path, open);
        if open {
            self.open = self.open.route(path, handler);
        } else {
            self.protected = self.protected.route(path, handler);
        }
        self
    }

    /// A route whose handler checks the credential itself (it accepts one
    /// the auth middleware does not know): served without the middleware,
    /// listed as needing a credential.
    fn add_self_checked(
        mut self,
        methods: &[&'static str],
        path: &'static str,
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.list(methods, path, false);
        self.open = self.open.route(path, handler);
        self
    }

    fn list(&mut self, methods: &[&'static str], path: &'static str, open: bool) {
        self.routes
            .extend(methods.iter().map(|method| Route { method, path, open }));
    }
}

fn table() -> Table {
    let t = Table {
        open: Router::new(),
        protected: Router::new(),
        routes: Vec::new(),
    };
    let t = meta::add(t);
    let t = reactive::add(t);
    let t = messages::add(t);
    let t = events::add(t);
    let t = stats::add(t);
    let t = metrics::add(t);
    let t = app_api::add(t);
    let t = ui::add(t);
    agents::add(t)
}

/// The MCP endpoint's methods (a service of its own, see [`crate::mcp`]).
const MCP_METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
const MCP_PATH: &str = "/mcp";

/// Every route of the daemon.
pub fn route_table() -> Vec<Route> {
    let mut routes = table().routes;
    routes.extend(MCP_METHODS.map(|method| Route {
        method,
        path: MCP_PATH,
        open: false,
    }));
    routes
}

/// The whole application: routes, auth, body limit, CORS and origin guard.
pub fn app(state: AppState) -> Router {
    let Table {
        open, protected, ..
    } = table();
    let protected = protected.route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    let api = open
        .merge(protected)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().daemon.max_body_bytes))
        .layer(from_fn(auth::loopback_origin_only))
        .layer(auth::cors())
        .with_state(state.clone());
    // The MCP tools call `api` in process, with the caller's credential.
    let mcp = Router::new()
        .route_service(MCP_PATH, crate::mcp::service(api.clone(), &state))
        .route_layer(from_fn_with_state(state, auth::authenticate))
        .layer(from_fn(auth::loopback_origin_only))
        .layer(auth::cors());
    api.merge(mcp)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The OpenAPI document lists exactly the routes the router serves.
    #[test]
    fn openapi_document_matches_the_router() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut documented = BTreeSet::new();
        for (p, item) in doc["paths"].as_object().unwrap() {
            for (m, op) in item.as_object().unwrap() {
                let open = op
                    .get("security")
                    .is_some_and(|s| s.as_array().is_some_and(|a| a.is_empty()));
                documented.insert((m.to_uppercase(), p.clone(), open));
            }
        }
        let served: BTreeSet<(String, String, bool)> = route_table()
            .into_iter()
            .map(|r| (r.method.to_string(), r.path.to_string(), r.open))
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "served but not documented (or auth differs): {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "documented but not served (or auth differs): {extra:?}"
        );
    }
}
