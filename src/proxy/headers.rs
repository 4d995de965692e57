//! Header hygiene at the proxy boundary, as pure functions over header maps.
//!
//! Towards the upstream: hop-by-hop headers (and every header `Connection` names)
//! belong to one connection and never cross; the browser's `Cookie`, any
//! client-sent `Authorization` and the CSRF header are spa-bff's business, not
//! the API's; `Host` is the upstream's own; forwarding headers are set by us, not
//! trusted from the client (except that an incoming `X-Forwarded-For` chain is
//! extended). Towards the browser: hop-by-hop headers again, and `Set-Cookie`
//! unless the route allows it (an API must not plant cookies on spa-bff's origin).

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 section 7.6.1 connection-specific headers, plus the old `Proxy-*` ones.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers never forwarded to an upstream, whatever the route.
const NEVER_UPSTREAM: &[&str] = &[
    "cookie",
    "authorization",
    "host",
    // the body is re-framed by us (Content-Length or chunked)
    "content-length",
    // set by us from what we know, not from what the client claims
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Headers never passed back from an upstream (the body is re-framed by us).
const NEVER_DOWNSTREAM: &[&str] = &["content-length"];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-")
}

/// The header names listed in `Connection` (lower case).
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

fn filtered(headers: &HeaderMap, drop: impl Fn(&str) -> bool) -> HeaderMap {
    let named = connection_named(headers);
    let mut out = HeaderMap::new();
    for (name, value) in headers.iter() {
        let n = name.as_str();
        if is_hop_by_hop(n) || named.iter().any(|c| c == n) || drop(n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// What the browser sent, minus everything that must not reach an upstream.
/// `csrf_header` is the configured CSRF header name.
pub fn upstream_request_headers(incoming: &HeaderMap, csrf_header: &str) -> HeaderMap {
    let csrf = csrf_header.to_ascii_lowercase();
    filtered(incoming, |n| NEVER_UPSTREAM.contains(&n) || n == csrf)
}

/// The `X-Forwarded-For` value: the client's chain, if any, plus the peer address.
pub fn forwarded_for(incoming: &HeaderMap, peer: Option<&str>) -> Option<String> {
    let chain: Vec<&str> = incoming
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut parts: Vec<&str> = chain;
    parts.extend(peer);
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Adds the forwarding headers and the bearer token to `headers`.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    forwarded_for: Option<String>,
    proto: &str,
    host: &str,
) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    if let Some(ff) = forwarded_for {
        set("x-forwarded-for", &ff);
    }
    set("x-forwarded-proto", proto);
    set("x-forwarded-host", host);
}

/// What the upstream answered, minus what must not reach the browser.
pub fn downstream_response_headers(upstream: &HeaderMap, allow_set_cookie: bool) -> HeaderMap {
    filtered(upstream, |n| {
        NEVER_DOWNSTREAM.contains(&n) || (n == "set-cookie" && !allow_set_cookie)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.as_str().to_string()).collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn browser_credentials_hop_by_hop_and_connection_named_headers_never_reach_the_upstream() {
        let incoming = map(&[
            ("cookie", "__Host-spa-bff=secret"),
            ("authorization", "Bearer forged"),
            ("x-csrf", "1"),
            ("host", "app.example.com"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("content-length", "3"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("accept", "application/json"),
            ("content-type", "text/plain"),
            ("x-custom", "a"),
            ("x-custom", "b"),
        ]);
        let out = upstream_request_headers(&incoming, "X-CSRF");
        assert_eq!(names(&out), ["accept", "content-type", "x-custom"]);
        assert_eq!(out.get_all("x-custom").count(), 2);
    }

    #[test]
    fn forwarded_for_extends_the_chain_with_the_peer() {
        let h = map(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            forwarded_for(&h, Some("10.0.0.1")).as_deref(),
            Some("203.0.113.7, 10.0.0.1")
        );
        assert_eq!(
            forwarded_for(&HeaderMap::new(), Some("10.0.0.1")).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(forwarded_for(&HeaderMap::new(), None), None);
    }

    #[test]
    fn set_cookie_passes_only_when_the_route_allows_it() {
        let upstream = map(&[
            ("set-cookie", "a=b"),
            ("content-type", "application/json"),
            ("connection", "close"),
            ("content-length", "2"),
            ("etag", "\"x\""),
        ]);
        let denied = downstream_response_headers(&upstream, false);
        assert_eq!(names(&denied), ["content-type", "etag"]);
        let allowed = downstream_response_headers(&upstream, true);
        assert_eq!(names(&allowed), ["content-type", "etag", "set-cookie"]);
    }
}
