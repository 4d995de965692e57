//! Logging: a `tracing` subscriber (human-readable, or JSON with
//! `SPA_BFF_LOG_FORMAT=json`), and a request span carrying a request id.
//!
//! Only the path and the client's IP (as [`crate::edge::client`] believes it) are
//! logged, never the query string (it carries authorization codes on /callback) nor
//! any header value.
//!
//! The line that ends each request is the one log line every request writes. Run by
//! `tracing`'s formatter it was about an eighth of a proxied request's instructions,
//! so when the output has no colours, [`init`] sets up [`AccessLog`], which writes it
//! by hand into the same buffer, byte for byte as the formatter would (text or JSON;
//! a unit test holds the two to each other). Every other line goes through `tracing`.

use crate::edge::client::ClientAddr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
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
    if !ansi {
        let _ = ACCESS_LOG.set(AccessLog {
            json,
            out: stdout.clone(),
        });
    }
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

/// The request lines' writer, when [`init`] could set it up (see the module doc).
static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

/// Writes the "request finished" line by hand, as `tracing_subscriber::fmt` would
/// (its default `Full` text format without colours, or `json().flatten_event(true)`),
/// for a `request` span with only `request_id` and no span above it.
struct AccessLog {
    json: bool,
    out: BufferedStdout,
}

/// What the "request finished" line says.
struct RequestLine<'a> {
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    client: Option<std::net::IpAddr>,
    status: u16,
    elapsed_ms: f64,
}

impl AccessLog {
    fn write(&self, line: &RequestLine<'_>) {
        thread_local! {
            static BUF: RefCell<String> = const { RefCell::new(String::new()) };
        }
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            format_request_line(&mut buf, self.json, now, line);
            self.out.append(buf.as_bytes());
        });
    }
}

/// `line` in the subscriber's text or JSON format, stamped `now` (since the epoch).
fn format_request_line(
    out: &mut String,
    json: bool,
    now: std::time::Duration,
    line: &RequestLine<'_>,
) {
    if json {
        out.push_str("{\"timestamp\":\"");
        write_timestamp(out, now);
        out.push_str("\",\"level\":\"INFO\",\"message\":\"request finished\",\"method\":");
        json_string(out, line.method);
        out.push_str(",\"path\":");
        json_string(out, line.path);
        out.push_str(",\"client\":\"");
        push_client(out, line.client);
        out.push_str("\",\"status\":");
        push_decimal(out, u64::from(line.status), 1);
        out.push_str(",\"elapsed_ms\":");
        json_f64(out, line.elapsed_ms);
        out.push_str(",\"target\":\"spa_bff::telemetry\",\"span\":{\"request_id\":");
        json_string(out, line.request_id);
        out.push_str(",\"name\":\"request\"},\"spans\":[{\"request_id\":");
        json_string(out, line.request_id);
        out.push_str(",\"name\":\"request\"}]}\n");
    } else {
        write_timestamp(out, now);
        out.push_str("  INFO request{request_id=");
        out.push_str(line.request_id);
        out.push_str("}: spa_bff::telemetry: request finished method=");
        out.push_str(line.method);
        out.push_str(" path=");
        out.push_str(line.path);
        out.push_str(" client=");
        push_client(out, line.client);
        out.push_str(" status=");
        push_decimal(out, u64::from(line.status), 1);
        let _ = writeln!(out, " elapsed_ms={:?}", line.elapsed_ms);
    }
}

/// The client's IP, or nothing when unknown.
fn push_client(out: &mut String, client: Option<std::net::IpAddr>) {
    if let Some(ip) = client {
        crate::edge::client::push_ip(out, ip);
    }
}

/// `n` in decimal, zero-padded to at least `width` digits (at most 20).
fn push_decimal(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n > 0 || digits.len() - start < width.clamp(1, 20) {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// `s` as a JSON string, escaped as serde_json (the JSON formatter's) escapes it.
fn json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn json_f64(out: &mut String, v: f64) {
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// `2026-12-01T21:40:41.123456Z`, as `tracing_subscriber`'s default timer writes it.
/// The date and time of day are worked out once per second per thread.
fn write_timestamp(out: &mut String, since_epoch: std::time::Duration) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let secs = since_epoch.as_secs();
    let (cached, mut text) = SECOND.with(Cell::get);
    if cached != secs {
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        let mut s = String::with_capacity(19);
        let _ = write!(
            s,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        if s.len() != 19 {
            // A year beyond 9999: not worth a fast path.
            out.push_str(&s);
            let _ = write!(out, ".{:06}Z", since_epoch.subsec_micros());
            return;
        }
        text.copy_from_slice(s.as_bytes());
        SECOND.with(|c| c.set((secs, text)));
    }
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    out.push('.');
    push_decimal(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push('Z');
}

/// (year, month, day) of the day `days` after 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    /// Adds `bytes` (whole lines) to what is waiting.
    fn append(&self, bytes: &[u8]) {
        let full = {
            let mut pending = self.lock();
            pending.extend_from_slice(bytes);
            pending.len() >= FLUSH_ABOVE
        };
        if full {
            self.flush();
        }
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
        self.append(buf);
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
    let client_ip = req.extensions().get::<ClientAddr>().map(|c| c.ip);
    let (method, path) = (req.method().clone(), req.path().to_string());
    // The span carries only the request id: every line logged inside the request names
    // it; what the request was is said once, on the line that says how it ended
    // (fields a span carries are formatted when it is created, for every request).
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let client = tracing::field::display(DisplayIp(client_ip));
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            if status >= 500 {
                tracing::warn!(%method, %path, %client, status, elapsed_ms, "request failed");
            } else {
                match ACCESS_LOG.get() {
                    Some(log) if tracing::enabled!(tracing::Level::INFO) => {
                        log.write(&RequestLine {
                            request_id: &id,
                            method: method.as_str(),
                            path: &path,
                            client: client_ip,
                            status,
                            elapsed_ms,
                        })
                    }
                    _ => {
                        tracing::info!(%method, %path, %client, status, elapsed_ms, "request finished")
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::cookie::time::OffsetDateTime;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;

    #[test]
    fn push_decimal_writes_zero_padded_decimals() {
        for (n, width, want) in [
            (0, 1, "0"),
            (7, 1, "7"),
            (200, 1, "200"),
            (42, 6, "000042"),
            (999_999, 6, "999999"),
            (1_234_567, 6, "1234567"),
            (u64::MAX, 1, "18446744073709551615"),
        ] {
            let mut out = String::new();
            push_decimal(&mut out, n, width);
            assert_eq!(out, want, "{n} {width}");
        }
    }

    /// A timer that always writes the same text.
    struct Fixed(String);

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
            w.write_str(&self.0)
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// The timestamp text of `since_epoch` by the `time` crate.
    fn reference_timestamp(since_epoch: Duration) -> String {
        let t = OffsetDateTime::from_unix_timestamp_nanos(since_epoch.as_nanos() as i128).unwrap();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }

    /// `line` as the `tracing` subscriber `init` installs writes it, in the span
    /// `trace_requests` makes, stamped `timestamp`.
    fn through_tracing(json: bool, timestamp: String, line: &RequestLine<'_>) -> String {
        let capture = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_timer(Fixed(timestamp))
            .with_writer(capture.clone());
        let dispatch = if json {
            tracing::Dispatch::new(builder.json().flatten_event(true).finish())
        } else {
            tracing::Dispatch::new(builder.finish())
        };
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("request", request_id = %line.request_id);
            let _entered = span.enter();
            let (method, path, status, elapsed_ms) =
                (line.method, line.path, line.status, line.elapsed_ms);
            let client = tracing::field::display(DisplayIp(line.client));
            tracing::info!(target: "spa_bff::telemetry", %method, %path, %client, status, elapsed_ms, "request finished");
        });
        let out = capture.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_hand_written_request_line_is_the_one_tracing_would_write() {
        let paths = [
            "/api/orders",
            "/api/caf%C3%A9/a%20b.txt",
            "/",
            "/api/\"quoted\"\\back",
            "/api/é/\u{7f}",
        ];
        let clients = [
            None,
            Some("127.0.0.1".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ];
        let elapsed = [0.853, 0.1 + 0.2, 12.0, 1e-7, 123_456.789_012, 0.0];
        let instants = [
            Duration::new(1_796_161_241, 123_456_789),
            Duration::new(0, 0),
            Duration::new(951_782_400, 999_999_999), // 2000-02-29
            Duration::new(253_402_300_799, 1_000),   // 9999-12-31T23:59:59
        ];
        let mut i = 0;
        for json in [false, true] {
            for path in paths {
                for client in clients {
                    for elapsed_ms in elapsed {
                        i += 1;
                        let now = instants[i % instants.len()];
                        let line = RequestLine {
                            request_id: if i % 2 == 0 {
                                "Ab3-x_y.z"
                            } else {
                                "q1w2e3r4t5y6"
                            },
                            method: ["GET", "POST", "DELETE"][i % 3],
                            path,
                            client,
                            status: [200, 201, 304, 404, 499][i % 5],
                            elapsed_ms,
                        };
                        let mut ours = String::new();
                        format_request_line(&mut ours, json, now, &line);
                        assert_eq!(ours, through_tracing(json, reference_timestamp(now), &line));
                    }
                }
            }
        }
    }

    #[test]
    fn timestamps_match_the_calendar() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            // xorshift: seconds anywhere from 1970 to 9999, any microsecond
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let now = Duration::new(x % 253_402_300_800, (x % 1_000_000_000) as u32);
            let mut ours = String::new();
            write_timestamp(&mut ours, now);
            assert_eq!(ours, reference_timestamp(now), "{now:?}");
        }
    }
}
