//! Who may call what (docs/configuration.md, "Keys and tenants"): a middleware in front of
//! every route. Endpoints fall in four classes:
//!
//! - open: `/health`, `/ready`, the UI's assets and login page;
//! - inference (`POST /v1/chat/completions`, `/v1/messages`, `/v1/embeddings`) and tenant data (traces,
//!   conversations, feedback, the tool cache, the UI's search, trace and conversation
//!   pages): a valid key when keys are required; the key's limits and budget are checked
//!   for inference, and reads are narrowed to its tenant;
//! - admin (`/metrics`, `/v1/keys`, stats, drift, alerts, experiments, prompts, evals,
//!   review, and their UI pages): an admin key when keys are required, or the admin
//!   listener;
//! - `/admin/*` (reload): an admin key, the admin listener, or — when no keys are required —
//!   a client on a loopback address. It is never open to the network.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::GatewayError;
use crate::keys::Caller;
use crate::state::SharedState;

/// Set on each request by the accept loop: who connected, and on which listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Accepted on `[server] admin_listen`.
    pub admin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Open,
    Inference,
    Tenant,
    Admin,
    /// `/admin/*`: loopback-only even without keys.
    AdminStrict,
}

fn classify(method: &Method, path: &str) -> Class {
    if path == "/health"
        || path == "/ready"
        || path.starts_with("/ui/assets/")
        || path == "/ui/login"
    {
        return Class::Open;
    }
    if path.starts_with("/admin/") {
        return Class::AdminStrict;
    }
    if method == Method::POST
        && (path == "/v1/chat/completions" || path == "/v1/embeddings" || path == "/v1/messages")
    {
        return Class::Inference;
    }
    const ADMIN: [&str; 14] = [
        "/metrics",
        "/v1/keys",
        "/v1/stats",
        "/v1/drift",
        "/v1/alerts",
        "/v1/evals",
        "/v1/experiments",
        "/v1/prompts",
        "/v1/review",
        "/ui/routes",
        "/ui/experiments",
        "/ui/evals",
        "/ui/drift",
        "/ui/review",
    ];
    if ADMIN
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
    {
        return Class::Admin;
    }
    Class::Tenant
}

/// The key a request presents: `Authorization: Bearer`, `x-api-key`, or (for the UI) the
/// `trestle_key` cookie.
fn presented(headers: &HeaderMap, ui: bool) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim(),
        );
    }
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    if !ui {
        return None;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("trestle_key="))
}

/// A refusal: JSON for the API, the login page for the UI.
fn refuse(e: GatewayError, path: &str) -> Response {
    if path.starts_with("/ui") && matches!(e, GatewayError::Unauthorized(_)) {
        return Redirect::to(&format!("/ui/login?next={}", crate::ui::encode(path)))
            .into_response();
    }
    e.into_response()
}

/// The middleware.
pub async fn authorize(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    // Borrowed: nothing is allocated per request unless it is refused.
    let path = req.uri().path();
    let class = classify(req.method(), path);
    if class == Class::Open {
        return next.run(req).await;
    }
    let conn = req.extensions().get::<ConnInfo>().copied();
    let on_admin_listener = conn.is_some_and(|c| c.admin);
    let rt = state.runtime();
    let required = state.keys.required(&rt.config.auth);
    let caller = match presented(req.headers(), path.starts_with("/ui")) {
        Some(key) if required || !key.is_empty() => match state.keys.authenticate(key) {
            Ok(c) => Some(c),
            // Without required keys a stray header (an SDK's placeholder key) is ignored.
            Err(_) if !required => None,
            Err(e) => return refuse(e, path),
        },
        _ => None,
    };
    let is_admin = caller.as_ref().is_some_and(|c| c.key.admin);
    match class {
        Class::Open => {}
        Class::AdminStrict | Class::Admin if on_admin_listener || is_admin => {}
        Class::AdminStrict | Class::Admin if required => {
            return match caller {
                None => refuse(
                    GatewayError::Unauthorized(
                        "this endpoint needs an admin key (Authorization: Bearer <key> of a key made with `trestle keys create --admin`) or the admin listener ([server] admin_listen)".into(),
                    ),
                    path,
                ),
                Some(c) => GatewayError::Forbidden {
                    message: format!(
                        "API key {} is not an admin key: {path} is for admin keys or the admin listener ([server] admin_listen)",
                        c.key.id
                    ),
                    code: "admin_only",
                }
                .into_response(),
            };
        }
        Class::AdminStrict => {
            let loopback = conn.is_none_or(|c| c.peer.ip().is_loopback());
            if !loopback {
                return GatewayError::Forbidden {
                    message: format!(
                        "{path} is open only to loopback clients, the admin listener ([server] admin_listen), or an admin key"
                    ),
                    code: "admin_only",
                }
                .into_response();
            }
        }
        Class::Admin => {}
        Class::Inference | Class::Tenant => {
            if required && caller.is_none() {
                return refuse(
                    GatewayError::Unauthorized(
                        "missing API key: send Authorization: Bearer <key> (keys are made with `trestle keys create`)".into(),
                    ),
                    path,
                );
            }
        }
    }
    if let Some(c) = caller {
        if class == Class::Inference
            && let Err(e) = state.keys.admit(&c).await
        {
            metrics::counter!("trestle_key_refusals_total", "reason" => e.code()).increment(1);
            return e.into_response();
        }
        req.extensions_mut().insert(c);
    }
    next.run(req).await
}

/// The caller set by [`authorize`], if any.
pub type MaybeCaller = Option<axum::Extension<Caller>>;

/// The tenant a request's reads are narrowed to.
pub fn tenant(caller: &MaybeCaller) -> Option<String> {
    crate::keys::scope(caller.as_ref().map(|e| &e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_fall_in_their_class() {
        assert_eq!(classify(&Method::GET, "/health"), Class::Open);
        assert_eq!(
            classify(&Method::POST, "/v1/chat/completions"),
            Class::Inference
        );
        assert_eq!(classify(&Method::POST, "/v1/messages"), Class::Inference);
        // Counting tokens needs a key when keys are on, but spends none of its limits.
        assert_eq!(
            classify(&Method::POST, "/v1/messages/count_tokens"),
            Class::Tenant
        );
        assert_eq!(classify(&Method::GET, "/v1/traces/abc"), Class::Tenant);
        assert_eq!(classify(&Method::GET, "/ui/traces/abc"), Class::Tenant);
        assert_eq!(classify(&Method::GET, "/ui"), Class::Tenant);
        assert_eq!(classify(&Method::GET, "/metrics"), Class::Admin);
        assert_eq!(classify(&Method::GET, "/v1/stats/routes"), Class::Admin);
        assert_eq!(classify(&Method::GET, "/v1/statsx"), Class::Tenant);
        assert_eq!(classify(&Method::POST, "/admin/reload"), Class::AdminStrict);
        assert_eq!(classify(&Method::GET, "/ui/review/compare"), Class::Admin);
    }

    #[test]
    fn keys_come_from_the_header_or_the_ui_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer tk_x_y".parse().unwrap());
        assert_eq!(presented(&h, false), Some("tk_x_y"));
        let mut c = HeaderMap::new();
        c.insert(header::COOKIE, "a=b; trestle_key=tk_1_2".parse().unwrap());
        assert_eq!(presented(&c, true), Some("tk_1_2"));
        assert_eq!(presented(&c, false), None);
    }
}
