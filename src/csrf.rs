//! Cross-site request checks shared by every state-changing entry point.
//!
//! A fetch proves it is ours with the configured CSRF header (`X-CSRF: 1` by
//! default): a custom header forces a CORS preflight, which spa-bff never grants.
//! Where a browser cannot add headers (form POSTs, WebSocket handshakes), the
//! request must come from our own origin.

use crate::config::Settings;
use actix_web::http::header::{self, HeaderMap};

/// The request carries the configured CSRF header with its value.
pub fn has_csrf_header(headers: &HeaderMap, settings: &Settings) -> bool {
    let proxy = &settings.proxy;
    headers
        .get(proxy.csrf_header.as_str())
        .is_some_and(|v| v.as_bytes() == proxy.csrf_value.as_bytes())
}

/// `Origin` names spa-bff's public origin.
pub fn origin_is_ours(headers: &HeaderMap, settings: &Settings) -> bool {
    headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == settings.server.origin().as_bytes())
}

/// The header a fetch must send, as `Name: value` (for error messages).
pub fn expected_header(settings: &Settings) -> String {
    format!(
        "{}: {}",
        settings.proxy.csrf_header, settings.proxy.csrf_value
    )
}
