//! The dashboard page and its assets, compiled into the binary (no CDN, no internet), and the
//! API's OpenAPI document. Public: the page asks for the token itself when the API answers 401.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::COOKIE;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /`: the page; `/?token=T` stores the token in an HTTP-only cookie and redirects to `/`
/// (so it leaves the address bar and the history).
pub(crate) async fn index(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(t) = q.get("token") {
        let cookie = match &state.token {
            Some(token) if super::auth::same(t, token) => {
                format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict")
            }
            _ => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        };
        return (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /assets/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    /// The OpenAPI document is JSON and names every route the router has.
    #[test]
    fn the_openapi_document_lists_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/queries",
            "/api/queries/{name}",
            "/api/queries/{name}/savepoint",
            "/api/queries/{name}/results",
            "/api/queries/{name}/ws",
            "/api/topics",
            "/api/topics/{topic}",
            "/api/topics/{topic}/events",
            "/api/sql",
            "/metrics",
            "/healthz",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
    }
}
