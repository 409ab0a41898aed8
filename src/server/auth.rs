//! The token check: with `--token`, every API request carries `Authorization: Bearer T` or the
//! session cookie that opening `/?token=T` sets (so the page's EventSource, which cannot send
//! headers, is let in). Checked in a middleware, before the handler's extractors: a request
//! without it is answered 401 before its body is read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::error;

/// The cookie the page's token is kept in.
pub(crate) const COOKIE: &str = "paystream_token";

/// Lets a request through when the server has no token or the request carries it.
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(why) = cross_site(request.headers(), state.loopback) {
        return error(StatusCode::FORBIDDEN, why).into_response();
    }
    match &state.token {
        Some(token) if !carries(request.headers(), token) => error(
            StatusCode::UNAUTHORIZED,
            "this server needs its token: send `Authorization: Bearer <token>`, or open the dashboard once as /?token=<token>",
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Why a request must be refused as coming from another site, if it must: a browser's request
/// whose `Origin` is not this server (a page elsewhere posting to a loopback API without a
/// token), or, on a loopback address, a `Host` that is not a loopback name (DNS rebinding).
/// `curl` and other clients send no `Origin`.
pub(crate) fn cross_site(headers: &HeaderMap, loopback: bool) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if loopback {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(n, _)| n);
        let local = name.eq_ignore_ascii_case("localhost")
            || name
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok();
        if !host.is_empty() && !local {
            return Some(format!(
                "host {host} is not this server's address; open it by its IP address or localhost"
            ));
        }
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    (authority != host).then(|| {
        format!("a request from {origin} (another site) is refused; use the API from this server's own page or a client without an Origin")
    })
}

/// Whether `headers` carry `token`, as a bearer token or the session cookie.
pub(crate) fn carries(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .any(|t| same(t.trim(), token));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|t| same(t, token));
    bearer || cookie
}

/// Compares in time independent of where the first difference is.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_requests_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cross_site(&h, true), None);
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert_eq!(cross_site(&h, true), None);
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(cross_site(&h, true).is_some());
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "evil.example:8080".parse().unwrap());
        assert!(cross_site(&h, true).is_some(), "rebinding");
        assert_eq!(cross_site(&h, false), None);
        h.insert(header::HOST, "localhost:8080".parse().unwrap());
        assert_eq!(cross_site(&h, true), None);
    }

    #[test]
    fn a_bearer_token_or_the_cookie_lets_in() {
        let mut h = HeaderMap::new();
        assert!(!carries(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(carries(&h, "s3cret"));
        assert!(!carries(&h, "s3cre"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; paystream_token=s3cret".parse().unwrap(),
        );
        assert!(carries(&h, "s3cret"));
        h.insert(header::COOKIE, "paystream_token=wrong".parse().unwrap());
        assert!(!carries(&h, "s3cret"));
    }
}
