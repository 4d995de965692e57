//! `[proxy]`: settings shared by every `[[routes]]` entry (CSRF header, token refresh,
//! the upstream connection pool).

use super::reader::Reader;
use actix_web::http::header::{HeaderName, HeaderValue};
use std::time::Duration;

/// `[proxy]`: settings shared by every `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `proxy.csrf_header` (`SPA_BFF__PROXY__CSRF_HEADER`): the header every proxied
    /// request must carry (default `X-CSRF`). A custom header forces a CORS preflight on
    /// cross-site callers.
    pub csrf_header: String,
    /// `proxy.csrf_value` (`SPA_BFF__PROXY__CSRF_VALUE`): its required value (default `1`).
    pub csrf_value: String,
    /// `proxy.refresh_skew` (`SPA_BFF__PROXY__REFRESH_SKEW`): refresh the access token
    /// when it expires within this (default 30s).
    pub refresh_skew: Duration,
    /// `proxy.min_token_lifetime` (`SPA_BFF__PROXY__MIN_TOKEN_LIFETIME`): the least
    /// lifetime an access token that can be refreshed must have left to be forwarded
    /// (default 10s). Between `refresh_skew` and this before expiry, requests go on
    /// with the current token while one refresh runs in the background; within this,
    /// they wait for the refresh. Read as at most `refresh_skew` (equal to it, every
    /// refresh is waited for).
    pub min_token_lifetime: Duration,
    /// `proxy.refresh_lock_ttl` (`SPA_BFF__PROXY__REFRESH_LOCK_TTL`): how long one
    /// instance may hold a session's refresh lock (a crashed holder blocks the session's
    /// refresh at most this long; default 30s). Must exceed the worst case of one
    /// refresh: `oidc.http_timeout` plus the Redis commands of a refresh (see
    /// `config::checks`).
    pub refresh_lock_ttl: Duration,
    /// `proxy.max_upstream_connections` (`SPA_BFF__PROXY__MAX_UPSTREAM_CONNECTIONS`):
    /// connections each worker may hold open to upstreams at once, all routes together
    /// (default 10000; 0 = no limit but the process's file descriptors). A streamed
    /// response holds one until its body ends, a WebSocket tunnel until it closes.
    pub max_upstream_connections: usize,
}

/// Headers that cannot serve as the CSRF header. The CORS-safelisted request headers
/// (Fetch standard) are the point: a cross-site page may send them without a preflight,
/// so requiring one proves nothing. The others are set by browsers or by spa-bff itself,
/// or page scripts may not set them at all.
const FORBIDDEN_CSRF_HEADERS: &[&str] = &[
    // CORS-safelisted: sent cross-site without a preflight
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "range",
    // set by the browser or by spa-bff; forbidden to page scripts
    "cookie",
    "authorization",
    "host",
    "origin",
    "referer",
    "content-length",
    "connection",
    "transfer-encoding",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "via",
    "date",
    "dnt",
    "forwarded",
    "x-request-id",
];

/// Name prefixes that cannot start the CSRF header (the browser sets `Sec-*` and
/// `Proxy-*`; spa-bff sets the `X-Forwarded-*` headers).
const FORBIDDEN_CSRF_PREFIXES: &[&str] = &["sec-", "proxy-", "x-forwarded-", "access-control-"];

/// Whether `name` (already lower case) cannot be the CSRF header.
fn forbidden_csrf_header(name: &str) -> bool {
    FORBIDDEN_CSRF_HEADERS.contains(&name)
        || FORBIDDEN_CSRF_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Reads `[proxy]`. Problems are recorded; the settings returned then hold stand-ins.
pub(super) fn read(r: &mut Reader<'_>) -> ProxySettings {
    let csrf_header = r
        .string("proxy", "csrf_header")
        .unwrap_or_else(|| "X-CSRF".into());
    match HeaderName::from_bytes(csrf_header.as_bytes()) {
        Ok(name) if !forbidden_csrf_header(name.as_str()) => {}
        Ok(_) => r.err(
            "proxy",
            "csrf_header",
            format!("{csrf_header:?} is a standard header (browsers send some cross-site without a CORS preflight, or set them themselves); use a custom one like X-CSRF"),
        ),
        Err(_) => r.err(
            "proxy",
            "csrf_header",
            format!("{csrf_header:?} is not a valid header name"),
        ),
    }
    let csrf_value = r
        .string("proxy", "csrf_value")
        .unwrap_or_else(|| "1".into());
    if csrf_value.is_empty() || HeaderValue::from_str(&csrf_value).is_err() {
        r.err(
            "proxy",
            "csrf_value",
            "must be a non-empty, printable header value",
        );
    }
    let refresh_skew = r.duration("proxy", "refresh_skew", "30s");
    ProxySettings {
        csrf_header,
        csrf_value,
        refresh_skew,
        // Taken as at most the skew: a token is due before it must be waited for.
        min_token_lifetime: r
            .duration("proxy", "min_token_lifetime", "10s")
            .min(refresh_skew),
        refresh_lock_ttl: r.duration("proxy", "refresh_lock_ttl", "30s"),
        max_upstream_connections: r.count("proxy", "max_upstream_connections", 10_000) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::minimal;
    use super::super::Settings;

    #[test]
    fn csrf_headers_that_browsers_send_cross_site_without_a_preflight_are_refused() {
        for name in [
            "Accept",
            "accept-language",
            "Content-Language",
            "CONTENT-TYPE",
            "Range",
            "Cookie",
            "Sec-Fetch-Site",
            "Proxy-Foo",
            "X-Forwarded-Host",
            "X-Request-Id",
        ] {
            let text = format!("{}\n[proxy]\ncsrf_header = \"{name}\"\n", minimal());
            let errs = Settings::from_toml_str(&text).unwrap_err().0;
            assert!(
                errs.len() == 1 && errs[0].starts_with("proxy.csrf_header"),
                "{name}: {errs:?}"
            );
        }
        for name in ["X-CSRF", "X-Requested-With", "X-App-Csrf"] {
            let text = format!("{}\n[proxy]\ncsrf_header = \"{name}\"\n", minimal());
            assert!(Settings::from_toml_str(&text).is_ok(), "{name}");
        }
    }
}
