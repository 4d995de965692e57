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

/// Installs the global subscriber; `RUST_LOG` filters (default `info`). Lines go to
/// stdout through [`BufferedStdout`]. Keep the returned guard until the process ends:
/// dropping it writes out what is buffered.
pub fn init() -> FlushOnDrop {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SPA_BFF_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let stdout = BufferedStdout::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(stdout.clone());
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    FlushOnDrop(stdout)
}

/// Log lines for stdout, collected in memory and written out in batches: when 32 KiB
/// are waiting, and by a thread of its own every [`FLUSH_EVERY`] otherwise. One
/// `write` per request line (an access-log line per request) would be a system call
/// per request, and handing each line to a writer thread a context switch per
/// request; a batch is one system call for hundreds of lines. A line is in the
/// output at most [`FLUSH_EVERY`] after it was logged (lost if the process is
/// killed meanwhile; a normal exit writes everything out).
#[derive(Clone)]
pub struct BufferedStdout {
    pending: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// How long a log line may wait in memory.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
const FLUSH_ABOVE: usize = 32 * 1024;

impl BufferedStdout {
    /// A buffer, and the thread that writes it out every [`FLUSH_EVERY`].
    pub fn start() -> Self {
        let out = Self {
            pending: Default::default(),
        };
        let flusher = out.clone();
        let _ = std::thread::Builder::new()
            .name("spa-bff-log".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                flusher.flush();
            });
        out
    }

    /// Writes out whatever is waiting.
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.lock());
        if !batch.is_empty() {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&batch);
            let _ = stdout.flush();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::io::Write for BufferedStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = self.lock();
            pending.extend_from_slice(buf);
            pending.len() >= FLUSH_ABOVE
        };
        if full {
            BufferedStdout::flush(self);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        BufferedStdout::flush(self);
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStdout {
    type Writer = BufferedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes out the buffered log lines when dropped (at the end of `main`).
pub struct FlushOnDrop(BufferedStdout);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// The client's IP for a log line, or nothing when unknown.
struct DisplayIp(Option<std::net::IpAddr>);

impl std::fmt::Display for DisplayIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
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
    let client = req.extensions().get::<ClientAddr>().map(|c| c.ip);
    let (method, path) = (req.method().clone(), req.path().to_string());
    // The span carries only the request id: every line logged inside the request names
    // it; what the request was is said once, on the line that says how it ended
    // (fields a span carries are formatted when it is created, for every request).
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let client = tracing::field::display(DisplayIp(client));
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            if status >= 500 {
                tracing::warn!(%method, %path, %client, status, elapsed_ms, "request failed");
            } else {
                tracing::info!(%method, %path, %client, status, elapsed_ms, "request finished");
            }
            if let Ok(v) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(REQUEST_ID, v);
            }
            Ok(res)
        }
        Err(e) => {
            tracing::warn!(%method, %path, %client, elapsed_ms, "request error: {e}");
            Err(e)
        }
    }
}
