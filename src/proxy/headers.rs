//! Header hygiene at the proxy boundary, as pure functions over header maps.
//!
//! Towards the upstream: hop-by-hop headers (and every header `Connection` names)
//! belong to one connection and never cross; the browser's `Cookie`, any
//! client-sent `Authorization` and the CSRF header are spa-bff's business, not
//! the API's; `Host` is the upstream's own; forwarding headers are set by us, not
//! trusted from the client (the `X-Forwarded-For` sent on holds only the hops that
//! [`crate::edge::client`] believed); method and URL override headers
//! (`X-HTTP-Method-Override`, `X-Original-URL`, ...) are dropped, since frameworks that
//! honour them would run another method or path than the route allowed; `Expect` is
//! answered by spa-bff itself (the client already got its `100 Continue`), so an
//! upstream that ignores it cannot stall the request.
//!
//! Towards the browser: hop-by-hop headers again; `Set-Cookie` unless the route allows
//! it, and never one that names spa-bff's own cookies (an API must not plant, replace
//! or clear the session); and on answers to token-bearing requests, a `Cache-Control`
//! that keeps shared caches out ([`make_private`]).

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

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
    // a DPoP proof is spa-bff's to make, for the token it attaches
    "dpop",
    "host",
    // the body is re-framed by us (Content-Length or chunked)
    "content-length",
    // set by us from what we know, not from what the client claims (and every
    // other `x-forwarded-*`, see `never_upstream`)
    "forwarded",
    "x-real-ip",
    // method and URL overrides: they would defeat the route's `methods` and prefix
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    // answered by spa-bff itself
    "expect",
];

fn never_upstream(name: &str) -> bool {
    NEVER_UPSTREAM.contains(&name) || name.starts_with("x-forwarded-")
}

/// Headers never passed back from an upstream (the body is re-framed by us).
const NEVER_DOWNSTREAM: &[&str] = &["content-length"];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-")
}

/// The header names listed in `Connection` (lower case).
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

fn filtered(headers: &HeaderMap, drop: impl Fn(&str) -> bool) -> HeaderMap {
    let named = connection_named(headers);
    // Room for everything kept and the few headers the proxy adds: no rehashing.
    let mut out = HeaderMap::with_capacity(headers.len() + 8);
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
    // Header names are lower case; the configured one may not be.
    filtered(incoming, |n| {
        never_upstream(n) || n.eq_ignore_ascii_case(csrf_header)
    })
}

/// What may come back from an upstream.
#[derive(Debug, Clone, Copy)]
pub struct ResponsePolicy<'a> {
    /// The route passes `Set-Cookie` on.
    pub allow_set_cookie: bool,
    /// The session cookie's name; it and `<name>-login-*` are never set by an upstream.
    pub session_cookie: &'a str,
}

/// What the upstream answered, minus what must not reach the browser.
pub fn downstream_response_headers(upstream: &HeaderMap, policy: ResponsePolicy<'_>) -> HeaderMap {
    let own = |value: &HeaderValue| {
        let own = names_own_cookie(value.as_bytes(), policy.session_cookie);
        if own {
            tracing::warn!("an upstream tried to set spa-bff's own cookie; dropped");
        }
        own
    };
    let mut out = filtered(upstream, |n| {
        NEVER_DOWNSTREAM.contains(&n) || (n == "set-cookie" && !policy.allow_set_cookie)
    });
    if policy.allow_set_cookie {
        let kept: Vec<HeaderValue> = out
            .get_all("set-cookie")
            .filter(|v| !own(v))
            .cloned()
            .collect();
        out.remove("set-cookie");
        for v in kept {
            out.append(HeaderName::from_static("set-cookie"), v);
        }
    }
    out
}

/// Whether a `Set-Cookie` value sets (or clears) the session cookie or a login
/// cookie, however it is spelt: names compared without case and without a
/// `__Host-`/`__Secure-` prefix (browsers treat prefixes without case), a nameless
/// cookie by its value.
fn names_own_cookie(set_cookie: &[u8], session_cookie: &str) -> bool {
    let text = String::from_utf8_lossy(set_cookie);
    let pair = text.split(';').next().unwrap_or("");
    let name = match pair.split_once('=') {
        Some((name, _)) => name,
        None => pair, // a nameless cookie: browsers send its value alone
    };
    let base = |n: &str| {
        let n = n.trim().to_ascii_lowercase();
        let n = n.strip_prefix("__host-").unwrap_or(&n);
        n.strip_prefix("__secure-").unwrap_or(n).to_string()
    };
    let (name, ours) = (base(name), base(session_cookie));
    name == ours || name.starts_with(&format!("{ours}-login-"))
}

/// Makes an answer to a token-bearing request private to the browser that asked:
/// `Cache-Control` loses `public`, `s-maxage` and `proxy-revalidate` (shared-cache
/// directives) and gains `private` (a qualified `private="..."` becomes plain);
/// `no-store` and the browser's own directives stay. `Vary` gains `Cookie`, so that
/// the browser's cache does not hand this answer to another session either.
pub fn make_private(headers: &mut HeaderMap) {
    // Most API answers say nothing about caching, or vary on nothing: no parsing then.
    if !headers.contains_key(&header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    } else {
        rewrite_cache_control(headers);
    }
    if !headers.contains_key(&header::VARY) {
        headers.insert(header::VARY, HeaderValue::from_static("Cookie"));
    } else {
        add_vary_cookie(headers);
    }
}

/// The upstream's `Cache-Control` with `private` first and no shared-cache directive.
fn rewrite_cache_control(headers: &mut HeaderMap) {
    let mut directives: Vec<String> = headers
        .get_all("cache-control")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let name = d
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !matches!(
                name.as_str(),
                "public" | "s-maxage" | "proxy-revalidate" | "private"
            )
        })
        .collect();
    directives.insert(0, "private".into());
    if let Ok(v) = HeaderValue::from_str(&directives.join(", ")) {
        headers.insert(HeaderName::from_static("cache-control"), v);
    }
}

/// The upstream's `Vary`, with `Cookie` unless it varies on everything already.
fn add_vary_cookie(headers: &mut HeaderMap) {
    let vary: Vec<String> = headers
        .get_all("vary")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if !vary
        .iter()
        .any(|v| v == "*" || v.eq_ignore_ascii_case("cookie"))
    {
        let mut vary = vary;
        vary.push("Cookie".into());
        if let Ok(v) = HeaderValue::from_str(&vary.join(", ")) {
            headers.insert(HeaderName::from_static("vary"), v);
        }
    }
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
            ("dpop", "forged.proof.jwt"),
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
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-prefix", "/admin"),
            ("x-real-ip", "6.6.6.6"),
            ("x-http-method-override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
            ("x-method-override", "PUT"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("expect", "100-continue"),
            ("accept", "application/json"),
            ("content-type", "text/plain"),
            ("x-custom", "a"),
            ("x-custom", "b"),
        ]);
        let out = upstream_request_headers(&incoming, "X-CSRF");
        assert_eq!(names(&out), ["accept", "content-type", "x-custom"]);
        assert_eq!(out.get_all("x-custom").count(), 2);
    }

    fn policy(allow_set_cookie: bool) -> ResponsePolicy<'static> {
        ResponsePolicy {
            allow_set_cookie,
            session_cookie: "__Host-spa-bff",
        }
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
        let denied = downstream_response_headers(&upstream, policy(false));
        assert_eq!(names(&denied), ["content-type", "etag"]);
        let allowed = downstream_response_headers(&upstream, policy(true));
        assert_eq!(names(&allowed), ["content-type", "etag", "set-cookie"]);
    }

    #[test]
    fn an_upstream_never_sets_or_clears_spa_bffs_own_cookies() {
        let upstream = map(&[
            ("set-cookie", "__Host-spa-bff=attacker; Path=/; Secure"),
            ("set-cookie", "__host-SPA-BFF=x; Path=/api"),
            ("set-cookie", "spa-bff=x; Path=/api"),
            ("set-cookie", "__Secure-spa-bff=x"),
            ("set-cookie", " __Host-spa-bff =x"),
            ("set-cookie", "__Host-spa-bff=; Max-Age=0"),
            ("set-cookie", "__Host-spa-bff-login-0123456789abcdef=x"),
            ("set-cookie", "__Host-spa-bff"),
            ("set-cookie", "theme=dark; Path=/"),
            ("set-cookie", "spa-bff-prefs=1"),
        ]);
        let out = downstream_response_headers(&upstream, policy(true));
        let kept: Vec<&str> = out
            .get_all("set-cookie")
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(kept, ["theme=dark; Path=/", "spa-bff-prefs=1"]);
    }

    #[test]
    fn answers_to_token_bearing_requests_are_kept_out_of_shared_caches() {
        for (cache_control, vary, expected_cc, expected_vary) in [
            (None, None, "private", "Cookie"),
            (
                Some("public, max-age=600"),
                None,
                "private, max-age=600",
                "Cookie",
            ),
            (
                Some("max-age=60, s-maxage=600, Public"),
                Some("Accept"),
                "private, max-age=60",
                "Accept, Cookie",
            ),
            (Some("no-store"), Some("*"), "private, no-store", "*"),
            (
                Some("private=\"set-cookie\", no-cache"),
                Some("cookie"),
                "private, no-cache",
                "cookie",
            ),
        ] {
            let mut pairs = Vec::new();
            pairs.extend(cache_control.map(|v| ("cache-control", v)));
            pairs.extend(vary.map(|v| ("vary", v)));
            let mut h = map(&pairs);
            make_private(&mut h);
            assert_eq!(
                h.get("cache-control").unwrap(),
                expected_cc,
                "{cache_control:?}"
            );
            assert_eq!(h.get("vary").unwrap(), expected_vary, "{vary:?}");
        }
    }
}
