//! `[proxy]`: settings shared by every `[[routes]]` entry (CSRF header, token refresh).

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
    /// `proxy.refresh_lock_ttl` (`SPA_BFF__PROXY__REFRESH_LOCK_TTL`): how long one
    /// instance may hold a session's refresh lock (a crashed holder blocks the session's
    /// refresh at most this long; default 30s). Must exceed the worst case of one
    /// refresh: `oidc.http_timeout` plus the Redis commands of a refresh (see
    /// `config::checks`).
    pub refresh_lock_ttl: Duration,
}

/// Headers that cannot serve as the CSRF header (browsers or spa-bff set them).
const FORBIDDEN_CSRF_HEADERS: &[&str] = &[
    "cookie",
    "authorization",
    "host",
    "origin",
    "referer",
    "content-type",
    "content-length",
    "accept",
    "connection",
    "transfer-encoding",
];

/// Reads `[proxy]`. Problems are recorded; the settings returned then hold stand-ins.
pub(super) fn read(r: &mut Reader<'_>) -> ProxySettings {
    let csrf_header = r
        .string("proxy", "csrf_header")
        .unwrap_or_else(|| "X-CSRF".into());
    match HeaderName::from_bytes(csrf_header.as_bytes()) {
        Ok(name) if !FORBIDDEN_CSRF_HEADERS.contains(&name.as_str()) => {}
        Ok(_) => r.err(
            "proxy",
            "csrf_header",
            format!("{csrf_header:?} is a standard header; use a custom one like X-CSRF"),
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
    ProxySettings {
        csrf_header,
        csrf_value,
        refresh_skew: r.duration("proxy", "refresh_skew", "30s"),
        refresh_lock_ttl: r.duration("proxy", "refresh_lock_ttl", "30s"),
    }
}
