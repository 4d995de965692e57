//! Prometheus metrics: what operators need to see spa-bff's health without reading
//! logs (traffic and errors per endpoint, its own latency apart from the upstreams',
//! refreshes, logins, sessions, Redis), served as Prometheus text on `GET /metrics`.
//!
//! One [`Metrics`] per running server (its own registry, so several servers in one
//! process, as in the tests, count apart), cloned into whatever records: the request
//! middleware ([`count_requests`]), the store's connection (Redis latency and errors,
//! sessions created and expired), the flows (refreshes, logouts), the proxy (upstream
//! latency, open tunnels). Call sites are one line: a named method with an enum.
//!
//! Every label value comes from a fixed set, never from the request: the `route` label
//! is an own endpoint, a configured route prefix, `static` or `other` ([`RouteLabels`]),
//! so no caller can create series. No metric carries a token, a user, a session id or a
//! path.

use crate::config::Settings;
use crate::paths;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a refresh of an access token ended (`spa_bff_refreshes_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The provider issued new tokens.
    Ok,
    /// The provider refused the grant (any 4xx but 408/429): the session ends.
    InvalidGrant,
    /// The provider could not answer (unreachable, timed out, 5xx): 503.
    ProviderError,
    /// No refresh of its own: the request waited for another holder's refresh (in
    /// this process or on another instance) and used its tokens.
    LockWait,
    /// The provider answered a resource's refresh with a token naming another
    /// audience: not kept (its rotated refresh token is), the route answers 403.
    WrongAudience,
}

impl RefreshOutcome {
    const ALL: [RefreshOutcome; 5] = [
        RefreshOutcome::Ok,
        RefreshOutcome::InvalidGrant,
        RefreshOutcome::ProviderError,
        RefreshOutcome::LockWait,
        RefreshOutcome::WrongAudience,
    ];

    fn label(self) -> &'static str {
        match self {
            RefreshOutcome::Ok => "ok",
            RefreshOutcome::InvalidGrant => "invalid_grant",
            RefreshOutcome::ProviderError => "provider_error",
            RefreshOutcome::LockWait => "lock_wait",
            RefreshOutcome::WrongAudience => "wrong_audience",
        }
    }
}

/// Why a session ended (`spa_bff_sessions_ended_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `POST /logout`.
    Logout,
    /// The provider's back-channel logout.
    BackChannel,
    /// Found past its idle timeout.
    Idle,
    /// Found past its absolute timeout.
    Absolute,
    /// The provider refused its refresh token.
    RefreshRefused,
    /// A new login in the same browser replaced it.
    Replaced,
}

impl SessionEnd {
    const ALL: [SessionEnd; 6] = [
        SessionEnd::Logout,
        SessionEnd::BackChannel,
        SessionEnd::Idle,
        SessionEnd::Absolute,
        SessionEnd::RefreshRefused,
        SessionEnd::Replaced,
    ];

    fn label(self) -> &'static str {
        match self {
            SessionEnd::Logout => "logout",
            SessionEnd::BackChannel => "back_channel",
            SessionEnd::Idle => "idle",
            SessionEnd::Absolute => "absolute",
            SessionEnd::RefreshRefused => "refresh_refused",
            SessionEnd::Replaced => "replaced",
        }
    }
}

/// How a Redis operation failed (`spa_bff_redis_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    /// No answer within `session.redis_timeout` (connecting included).
    Timeout,
    /// Refused, broken, or answered with an error.
    Error,
}

impl RedisFailure {
    fn label(self) -> &'static str {
        match self {
            RedisFailure::Timeout => "timeout",
            RedisFailure::Error => "error",
        }
    }
}

/// The `route` label of a request: an own endpoint (`/login`, ... `/metrics`), a
/// configured `[[routes]]` prefix, `static` (answered by the SPA's files, found or
/// `index.html`), or `other` (404 outside all of these). Never the raw path.
#[derive(Debug, Clone)]
pub struct RouteLabels {
    prefixes: Vec<String>,
    static_files: bool,
}

/// What a path is, before its status is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own(&'static str),
    Route(usize),
    Rest,
}

impl RouteLabels {
    pub fn new(settings: &Settings) -> Self {
        Self {
            prefixes: settings.routes.iter().map(|r| r.prefix.clone()).collect(),
            static_files: settings.server.static_dir.is_some(),
        }
    }

    fn target(&self, path: &str) -> Target {
        if let Some(own) = paths::RESERVED.iter().find(|p| **p == path) {
            return Target::Own(own);
        }
        match self.prefixes.iter().position(|p| paths::is_under(path, p)) {
            Some(i) => Target::Route(i),
            None => Target::Rest,
        }
    }

    fn label(&self, target: Target, status: StatusCode) -> &str {
        match target {
            Target::Own(path) => path,
            Target::Route(i) => &self.prefixes[i],
            Target::Rest if self.static_files && status != StatusCode::NOT_FOUND => "static",
            Target::Rest => "other",
        }
    }

    /// The label of a request for `path` (as the router matches it) answered `status`.
    pub fn of(&self, path: &str, status: StatusCode) -> &str {
        self.label(self.target(path), status)
    }
}

/// Upper bounds of the request and upstream latency histograms, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the Redis latency histogram, in seconds.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The metrics of one server. Cheap to clone (clones share the registry).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    routes: RouteLabels,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    upstream_duration: HistogramVec,
    refreshes: IntCounterVec,
    logins: IntCounterVec,
    sessions_created: IntCounter,
    sessions_ended: IntCounterVec,
    redis_errors: IntCounterVec,
    redis_duration: Histogram,
    in_flight: IntGauge,
    open_tunnels: IntGauge,
}

impl Default for Metrics {
    /// Metrics nobody serves (a store or connection made outside a server, in tests).
    fn default() -> Self {
        Self::with_routes(RouteLabels {
            prefixes: Vec::new(),
            static_files: false,
        })
    }
}

impl Metrics {
    /// The metrics of a server configured by `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self::with_routes(RouteLabels::new(settings))
    }

    fn with_routes(routes: RouteLabels) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let http_requests = counter(
            "spa_bff_http_requests_total",
            "HTTP requests answered, by route (own endpoint, route prefix, static, other) and status class.",
            &["route", "status_class"],
        );
        let http_duration = histogram(
            "spa_bff_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route (upstream time included for proxied routes).",
            &["route"],
            HTTP_BUCKETS,
        );
        let upstream_duration = histogram(
            "spa_bff_upstream_request_duration_seconds",
            "Time from sending a proxied request upstream to the upstream's response head (or failure), by route prefix.",
            &["route"],
            HTTP_BUCKETS,
        );
        let refreshes = counter(
            "spa_bff_refreshes_total",
            "Access-token refreshes, by outcome (ok, invalid_grant, provider_error, lock_wait, wrong_audience).",
            &["outcome"],
        );
        let logins = counter(
            "spa_bff_logins_total",
            "Logins finished at /callback, by outcome (ok, or the error code answered).",
            &["outcome"],
        );
        let sessions_created = counter(
            "spa_bff_sessions_created_total",
            "Sessions created by a login.",
            &[],
        )
        .with_label_values::<&str>(&[]);
        let sessions_ended = counter(
            "spa_bff_sessions_ended_total",
            "Sessions ended, by reason (logout, back_channel, idle, absolute, refresh_refused, replaced).",
            &["reason"],
        );
        let redis_errors = counter(
            "spa_bff_redis_errors_total",
            "Redis operations that failed, by kind (timeout, error).",
            &["kind"],
        );
        let redis_duration = histogram(
            "spa_bff_redis_command_duration_seconds",
            "Time of one Redis operation (a command, pipeline or script), connecting included.",
            &[],
            REDIS_BUCKETS,
        )
        .with_label_values::<&str>(&[]);
        let in_flight = gauge(
            "spa_bff_in_flight_requests",
            "Requests being handled (until their response head).",
        );
        let open_tunnels = gauge(
            "spa_bff_open_tunnels",
            "WebSocket tunnels open through the proxy.",
        );
        let build_info = IntGaugeVec::new(
            Opts::new(
                "spa_bff_build_info",
                "Always 1; the labels say which build runs.",
            ),
            &["version", "profile"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), profile])
            .set(1);
        // Every fixed label value shows from the start (0), so rates and alerts work
        // before the first event.
        for outcome in RefreshOutcome::ALL {
            refreshes.with_label_values(&[outcome.label()]);
        }
        for reason in SessionEnd::ALL {
            sessions_ended.with_label_values(&[reason.label()]);
        }
        for kind in [RedisFailure::Timeout, RedisFailure::Error] {
            redis_errors.with_label_values(&[kind.label()]);
        }
        logins.with_label_values(&["ok"]);
        Self {
            inner: Arc::new(Inner {
                registry,
                routes,
                http_requests,
                http_duration,
                upstream_duration,
                refreshes,
                logins,
                sessions_created,
                sessions_ended,
                redis_errors,
                redis_duration,
                in_flight,
                open_tunnels,
            }),
        }
    }

    /// Everything, in the Prometheus text format: `(content type, body)`.
    pub fn render(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        if let Err(e) = encoder.encode(&self.inner.registry.gather(), &mut body) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        (encoder.format_type().to_string(), body)
    }

    /// A refresh ended with `outcome`.
    pub fn refresh(&self, outcome: RefreshOutcome) {
        self.inner
            .refreshes
            .with_label_values(&[outcome.label()])
            .inc();
    }

    /// A login at `/callback` ended: `Ok`, or `Err` with the error code it answered
    /// (a fixed set: [`crate::error::Error::code`]).
    pub fn login(&self, outcome: Result<(), &'static str>) {
        let label = outcome.err().unwrap_or("ok");
        self.inner.logins.with_label_values(&[label]).inc();
    }

    /// A login created a session.
    pub fn session_created(&self) {
        self.inner.sessions_created.inc();
    }

    /// `count` sessions ended for `reason`.
    pub fn sessions_ended(&self, reason: SessionEnd, count: usize) {
        self.inner
            .sessions_ended
            .with_label_values(&[reason.label()])
            .inc_by(count as u64);
    }

    /// One session ended for `reason`.
    pub fn session_ended(&self, reason: SessionEnd) {
        self.sessions_ended(reason, 1);
    }

    /// One Redis operation took `elapsed` and ended with `failure`, if it failed.
    pub fn redis_op(&self, elapsed: Duration, failure: Option<RedisFailure>) {
        self.inner.redis_duration.observe(elapsed.as_secs_f64());
        if let Some(f) = failure {
            self.inner
                .redis_errors
                .with_label_values(&[f.label()])
                .inc();
        }
    }

    /// Times one upstream call of route `prefix` until the guard is dropped (the
    /// response head arrived, or the call failed).
    pub fn upstream_timer(&self, prefix: &str) -> Timer {
        Timer {
            histogram: self.inner.upstream_duration.with_label_values(&[prefix]),
            started: Instant::now(),
        }
    }

    /// Counts an open WebSocket tunnel until the guard is dropped.
    pub fn tunnel_open(&self) -> GaugeGuard {
        GaugeGuard::inc(&self.inner.open_tunnels)
    }

    /// A request finished: its route label, status class and duration.
    fn request_done(&self, route: &str, status: StatusCode, elapsed: Duration) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.inner
            .http_requests
            .with_label_values(&[route, class])
            .inc();
        self.inner
            .http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}

/// Observes the time since its creation when dropped.
pub struct Timer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Holds a gauge up by one until dropped.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn inc(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware: counts each request by route label and status class, times it until
/// its response head, and holds the in-flight gauge meanwhile. Needs the server's
/// [`Metrics`] as app data; without it, requests pass uncounted.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(metrics) = req.app_data::<Metrics>().cloned() else {
        return next.call(req).await;
    };
    // The path as the router matches it (percent-decoded where unambiguous).
    let target = metrics.inner.routes.target(req.match_info().as_str());
    let _in_flight = GaugeGuard::inc(&metrics.inner.in_flight);
    let started = Instant::now();
    let result = next.call(req).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    let route = metrics.inner.routes.label(target, status);
    metrics.request_done(route, status, started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(static_files: bool) -> RouteLabels {
        RouteLabels {
            prefixes: vec!["/api".into(), "/files/v2".into()],
            static_files,
        }
    }

    #[test]
    fn the_route_label_is_an_own_endpoint_a_prefix_static_or_other_never_the_path() {
        let ok = StatusCode::OK;
        let missing = StatusCode::NOT_FOUND;
        for (static_files, path, status, expected) in [
            (true, "/login", ok, "/login"),
            (true, "/callback", StatusCode::BAD_REQUEST, "/callback"),
            (true, "/metrics", ok, "/metrics"),
            (true, "/readyz", StatusCode::SERVICE_UNAVAILABLE, "/readyz"),
            (true, "/api", ok, "/api"),
            (true, "/api/some/random/123", ok, "/api"),
            (true, "/api/x", missing, "/api"),
            (true, "/apix/1", ok, "static"),
            (true, "/files/v2/a", ok, "/files/v2"),
            (true, "/files/v3/a", missing, "other"),
            (true, "/", ok, "static"),
            (true, "/orders/42", ok, "static"),
            (true, "/wp-admin.php", missing, "other"),
            (true, "/login/extra", missing, "other"),
            (false, "/orders/42", missing, "other"),
            (false, "/anything", ok, "other"),
        ] {
            assert_eq!(
                labels(static_files).of(path, status),
                expected,
                "{path} {status} (static files: {static_files})"
            );
        }
    }

    #[test]
    fn every_metric_is_in_the_text_format_with_its_fixed_labels_from_the_start() {
        let m = Metrics::default();
        m.refresh(RefreshOutcome::LockWait);
        m.sessions_ended(SessionEnd::BackChannel, 2);
        m.login(Err("invalid_state"));
        let _tunnel = m.tunnel_open();
        let (content_type, body) = m.render();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(body).unwrap();
        for line in [
            "spa_bff_refreshes_total{outcome=\"lock_wait\"} 1",
            "spa_bff_refreshes_total{outcome=\"ok\"} 0",
            "spa_bff_sessions_ended_total{reason=\"back_channel\"} 2",
            "spa_bff_sessions_ended_total{reason=\"idle\"} 0",
            "spa_bff_logins_total{outcome=\"invalid_state\"} 1",
            "spa_bff_logins_total{outcome=\"ok\"} 0",
            "spa_bff_sessions_created_total 0",
            "spa_bff_open_tunnels 1",
            "spa_bff_in_flight_requests 0",
            "spa_bff_redis_errors_total{kind=\"timeout\"} 0",
            "spa_bff_redis_command_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.contains("spa_bff_build_info{profile=\""));
        drop(_tunnel);
        let text = String::from_utf8(m.render().1).unwrap();
        assert!(text.lines().any(|l| l == "spa_bff_open_tunnels 0"));
    }
}
