//! Logging: a `tracing` subscriber (human-readable, or JSON with
//! `SPA_BFF_LOG_FORMAT=json`), and a request span carrying a request id.
//!
//! Only the path and the client's IP (as [`crate::edge::client`] believes it) are
//! logged, never the query string (it carries authorization codes on /callback) nor
//! any header value.

use crate::edge::client::ClientAddr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use std::time::Instant;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in the request extensions (the proxy passes it upstream).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Installs the global subscriber; `RUST_LOG` filters (default `info`). Lines are
/// written to stdout by a thread of their own, in batches, so a request never waits
/// for a `write` (one line per request is a syscall per request otherwise); none is
/// dropped (a worker waits when 128k lines are queued). Keep the returned guard until
/// the process ends: dropping it writes out what is queued.
pub fn init() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SPA_BFF_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("spa-bff-log")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    guard
}

/// A request id: the caller's `X-Request-Id` when it is short and plain, else random.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(String::from)
        .unwrap_or_else(|| crate::session::crypto::random_id(12))
}

/// Middleware: one span per request, a log line when it finishes, `X-Request-Id` echoed.
pub async fn trace_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let client = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.ip.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("request", method = %req.method(), path = %req.path(), request_id = %id, client = %client);
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            if status >= 500 {
                tracing::warn!(status, elapsed_ms, "request failed");
            } else {
                tracing::info!(status, elapsed_ms, "request finished");
            }
            if let Ok(v) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(REQUEST_ID, v);
            }
            Ok(res)
        }
        Err(e) => {
            tracing::warn!(elapsed_ms, "request error: {e}");
            Err(e)
        }
    }
}
