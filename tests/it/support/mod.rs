//! Test support for spa-bff's integration tests: child processes (Redis, Redis Cluster,
//! Sentinel and TLS deployments, the OpenID provider from `tests/op`), a scripted
//! browser, and small OAuth helpers.
//!
//! Everything here talks to 127.0.0.1 only. Async helpers use awc and must run under
//! `#[actix_web::test]` (awc is !Send). Call [`init`] first in every test.
#![allow(dead_code)]

pub mod app;
pub mod browser;
pub mod demo_api;
pub mod fake_op;
pub mod flow;
pub mod procs;
pub mod raw;
pub mod redis_topology;
pub mod upstream;

#[allow(unused_imports)]
pub use browser::{Browser, Resp};
#[allow(unused_imports)]
pub use procs::{
    free_port, shared_provider, shared_redis, Provider, ProviderOptions, RedisServer,
    RegisteredClient,
};

use std::sync::Once;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Installs rustls' ring crypto provider (needed before any awc client exists) and a
/// tracing subscriber writing to the test output (`RUST_LOG` filters it) and, from
/// WARN up whatever `RUST_LOG` says, to [`logged`]'s buffer. Idempotent.
pub fn init() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let output = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(filter);
        let captured = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| CapturedLog)
            .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
        let _ = tracing_subscriber::registry()
            .with(output)
            .with(captured)
            .try_init();
    });
}

/// `tests/artifacts/logs/<name>`, for figures and logs a run leaves behind.
pub fn artifact_log(name: &str) -> std::path::PathBuf {
    procs::log_path(name)
}

/// Every log line of this test process from WARN up (all tests and apps together:
/// look for something unique to the test, such as its route prefix).
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct CapturedLog;

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines (WARN and up) so far that contain every one of `needles`.
pub fn logged(needles: &[&str]) -> Vec<String> {
    let log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .map(String::from)
        .collect()
}

/// An awc client for direct (non-browser) calls: no redirect following, 10 s timeout.
pub fn http_client() -> awc::Client {
    init();
    awc::Client::builder()
        .disable_redirects()
        .timeout(std::time::Duration::from_secs(10))
        .finish()
}

/// `GET path` at spa-bff as the SPA's fetch sends it: the CSRF header, JSON wanted.
pub async fn api(browser: &Browser, app: &app::TestApp, path: &str) -> Resp {
    browser
        .request(
            "GET",
            &app.at(path),
            &[("x-csrf", "1"), ("accept", "application/json")],
            Vec::new(),
        )
        .await
}

/// `user` with a random suffix, so tests sharing the provider never share a user.
pub fn unique(user: &str) -> String {
    format!("{user}-{}", random_string(4))
}

pub async fn sleep_ms(ms: u64) {
    actix_web::rt::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// A random URL-safe string of `bytes` random bytes (base64url, no padding).
pub fn random_string(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(buf)
}

/// A PKCE pair `(code_verifier, code_challenge)` for method S256.
pub fn pkce_pair() -> (String, String) {
    let verifier = random_string(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The first value of query parameter `name` in `url`, if any.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A query string as decoded pairs.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `url` with `pairs` appended to its query string.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
    url.query_pairs_mut().extend_pairs(pairs);
    url.into()
}

/// Decodes the payload (claims) of a compact JWS without verifying it.
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {jwt}");
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap_or_else(|e| panic!("JWT payload is not base64url: {e}"));
    serde_json::from_slice(&payload).expect("JWT payload is not JSON")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Resident memory of this process (test, spa-bff and upstream alike), in MiB.
pub fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
