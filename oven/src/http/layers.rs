//! What every response goes through (contract §2): CORS as flask-cors sends it, repeated
//! slashes accepted (`//v1/compile` from the Configurator's Docker proxy), and JSON for every
//! error, including axum's own rejections and unknown routes.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use super::error::ApiError;

/// The methods a preflight may ask for (flask-cors' default list).
pub const ALLOWED_METHODS: &str = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT";

/// Adds the fallback (slash merging, then JSON 404) and the outer layers to `routes`.
pub fn wrap(routes: Router) -> Router {
    let plain = routes.clone().fallback(not_found);
    routes
        .fallback(move |req: Request| {
            let plain = plain.clone();
            async move {
                match merged_slashes(&req) {
                    Some(uri) => {
                        let (mut parts, body) = req.into_parts();
                        parts.uri = uri;
                        match plain.oneshot(Request::from_parts(parts, body)).await {
                            Ok(res) => res,
                            Err(never) => match never {},
                        }
                    }
                    None => not_found().await,
                }
            }
        })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(cors))
}

/// The request URI with runs of `/` merged, if the path has any.
fn merged_slashes(req: &Request) -> Option<axum::http::Uri> {
    let path = req.uri().path();
    if !path.contains("//") {
        return None;
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    if let Some(q) = req.uri().query() {
        merged.push('?');
        merged.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = merged.parse().ok();
    axum::http::Uri::from_parts(parts).ok()
}

pub async fn not_found() -> Response {
    ApiError::new(404, "Not Found: no such route").into_response()
}

pub async fn method_not_allowed() -> Response {
    ApiError::new(405, "Method Not Allowed").into_response()
}

/// Turns any error response that is not JSON (axum rejections, static file misses) into the
/// contract's JSON error shape with the same status.
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return res;
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let (mut parts, _) = res.into_parts();
    let fresh = ApiError::new(status.as_u16(), reason).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, fresh.into_body())
}

/// Whether a request path matches a route path template: `{name}` is one segment, except
/// `{keyboard}`, which takes one or more (keyboard names contain `/`).
fn path_matches(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut got = path.split('/').filter(|s| !s.is_empty()).peekable();
    // Both start with `/`: skip the empty first segment of the template.
    want.next();
    while let Some(w) = want.next() {
        if w == "{keyboard}" {
            // Greedy, but leaves what the rest of the template needs.
            let rest: Vec<&str> = want.collect();
            let segs: Vec<&str> = got.collect();
            return segs.len() > rest.len() && segs[segs.len() - rest.len()..] == rest[..];
        }
        match got.next() {
            Some(g) if w.starts_with('{') || w == g => {}
            _ => return false,
        }
    }
    got.peek().is_none()
}

/// The `Allow` header of a path, as Flask sends it on `OPTIONS`: the route's methods, `HEAD`
/// with every `GET`, and `OPTIONS`, sorted. `None` for a path no route serves.
pub fn allow_for(path: &str) -> Option<String> {
    let mut methods: Vec<&str> = super::ROUTES
        .iter()
        .filter(|r| path_matches(r.path, path))
        .flat_map(|r| match r.method {
            "GET" => vec!["GET", "HEAD"],
            m => vec![m],
        })
        .collect();
    if methods.is_empty() {
        return None;
    }
    methods.push("OPTIONS");
    methods.sort_unstable();
    methods.dedup();
    Some(methods.join(", "))
}

/// CORS on every response; `OPTIONS` answered here for every path.
async fn cors(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut res = if req.method() == Method::OPTIONS {
        preflight(req.uri().path(), req.headers())
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    match origin {
        Some(o) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    res
}

fn preflight(path: &str, req: &HeaderMap) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    // What this route has (not the CORS list below, which flask-cors sends for every path).
    if let Some(allow) = allow_for(path).and_then(|a| HeaderValue::from_str(&a).ok()) {
        h.insert(header::ALLOW, allow);
    }
    let wanted = req
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .map(str::trim);
    let allowed = wanted.is_some_and(|m| ALLOWED_METHODS.split(", ").any(|a| a == m));
    if !allowed {
        return res;
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    let mut names: Vec<&str> = req
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !names.is_empty() {
        names.sort_unstable();
        if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_what_the_route_has() {
        let get = Some("GET, HEAD, OPTIONS".to_owned());
        assert_eq!(allow_for("/v1/compile"), Some("OPTIONS, POST".to_owned()));
        assert_eq!(allow_for("/v1"), get);
        assert_eq!(allow_for("/v1/compile/abc"), get);
        assert_eq!(allow_for("/v1/compile/abc/download"), get);
        assert_eq!(allow_for("//v1//compile/abc/source"), get);
        assert_eq!(allow_for("/v1/keyboards/clueboard/66/rev3"), get);
        assert_eq!(allow_for("/v1/keyboards/clueboard/66/rev3/readme"), get);
        assert_eq!(allow_for("/v1/keyboards/all"), get);
        assert_eq!(allow_for("/v1/compile/abc/nope"), None);
        assert_eq!(allow_for("/v2"), None);
        assert_eq!(allow_for("/"), None);
    }
}
