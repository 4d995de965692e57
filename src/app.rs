//! Builds the HTTP server: shared state, middleware, the route table (and, with
//! `server.metrics_listen`, a second listener serving only `/metrics`); runs it until
//! a signal, draining first ([`Shutdown`]); and checks a configuration against the
//! real provider and Redis ([`check_online`]).

use crate::config::{OidcSettings, Settings};
use crate::edge::client::identify_client;
use crate::edge::head::limit_headers;
use crate::edge::Edge;
use crate::error::{render_errors, Error};
use crate::flows::client_token::ClientTokens;
use crate::flows::refresh::RefreshFlights;
use crate::metrics::{count_requests, Metrics};
use crate::oidc::dpop::DpopNonces;
use crate::oidc::provider::{authorization_route, dpop_support, DpopSupport, ExtraMetadata};
use crate::oidc::{OidcHttp, ProviderHandle};
use crate::routes;
use crate::state::{AppState, Lifecycle, Shared};
use crate::store::keys::Keys;
use crate::store::{RedisHandle, RedisReport, SessionEvents};
use crate::telemetry::trace_requests;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, HttpServer};
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// A built, not yet running, spa-bff server.
pub struct App {
    port: u16,
    server: Server,
    /// The `/metrics`-only server on `server.metrics_listen`, and its port.
    metrics_server: Option<(Server, u16)>,
    provider: Arc<ProviderHandle>,
    shutdown: Shutdown,
}

/// Stops the server the way load balancers need: `/readyz` turns 503 at once,
/// requests are still served for `server.shutdown_delay` (long enough for the
/// balancer's next readiness probes to take the instance out), then the listener
/// closes and in-flight requests finish (up to 10 s).
#[derive(Clone)]
pub struct Shutdown {
    handle: ServerHandle,
    /// The `/metrics`-only server's, stopped with the main one.
    metrics_handle: Option<ServerHandle>,
    lifecycle: Arc<Lifecycle>,
    delay: Duration,
}

impl Shutdown {
    /// Drains, then stops. A second call while draining does nothing.
    pub async fn begin(self) {
        if !self.lifecycle.start_draining() {
            return;
        }
        tracing::info!(
            delay_ms = self.delay.as_millis() as u64,
            "shutting down: /readyz answers 503, the listener closes after the delay"
        );
        actix_web::rt::time::sleep(self.delay).await;
        self.stop_all().await;
    }

    /// Stops without the readiness delay (in-flight requests still finish).
    pub async fn now(self) {
        self.lifecycle.start_draining();
        self.stop_all().await;
    }

    async fn stop_all(self) {
        self.handle.stop(true).await;
        if let Some(metrics) = self.metrics_handle {
            metrics.stop(true).await;
        }
    }
}

impl App {
    /// Binds `server.listen` and builds the server. Provider discovery starts in
    /// the background (call from inside an actix/tokio runtime).
    pub fn build(settings: Settings) -> io::Result<App> {
        let listener = TcpListener::bind(&settings.server.listen)?;
        Self::build_with_listener(settings, listener)
    }

    /// Like [`App::build`] on an already bound listener (tests bind port 0).
    pub fn build_with_listener(settings: Settings, listener: TcpListener) -> io::Result<App> {
        let port = listener.local_addr()?.port();
        // Bound first: an address in use fails the build before any server runs.
        let metrics_listener = match &settings.server.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr)?),
            None => None,
        };
        let redis = RedisHandle::new(&settings.session.redis)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, detail(&e)))?;
        let settings = Arc::new(settings);
        let provider = ProviderHandle::new(settings.clone());
        actix_web::rt::spawn(provider.clone().discover_until_ready());
        actix_web::rt::spawn(log_redis_report(redis.clone()));

        let workers = settings.server.workers;
        let metrics = Metrics::new(&settings);
        let edge = Edge::new(&settings);
        let lifecycle = Arc::new(Lifecycle::default());
        let events = SessionEvents::new(
            &Keys::new(settings.session.key_prefix.clone()),
            settings.session.cache_sessions,
        );
        actix_web::rt::spawn(events.clone().run(redis.target(), redis.timeout()));
        let shared = Shared {
            settings: settings.clone(),
            provider: provider.clone(),
            flights: Arc::new(RefreshFlights::default()),
            lifecycle: lifecycle.clone(),
            client_tokens: Arc::new(ClientTokens::default()),
            metrics: metrics.clone(),
            events,
            dpop_nonces: Arc::new(DpopNonces::default()),
        };
        let (target, timeout) = (redis.target(), redis.timeout());
        let mut server = HttpServer::new(move || {
            let shared = shared.clone();
            let (settings, metrics) = (shared.settings.clone(), shared.metrics.clone());
            let configure = routes::configure(&settings);
            // Each worker keeps a connection of its own.
            let redis = RedisHandle::with_target(target.clone(), timeout);
            let state = AppState::new(shared, redis);
            // Middleware, innermost first: the head-size limit answers with an error
            // that render_errors turns into a page for navigations; identify_client is
            // outermost so that the request span already knows the client;
            // count_requests sees the status every other middleware settled on.
            actix_web::App::new()
                .app_data(web::Data::new(state))
                .app_data(edge.clone())
                .app_data(metrics)
                .configure(configure)
                .wrap(from_fn(limit_headers))
                .wrap(from_fn(render_errors))
                .wrap(
                    DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("Referrer-Policy", "no-referrer"))
                        .add(("X-Frame-Options", "DENY")),
                )
                .wrap(from_fn(count_requests))
                .wrap(from_fn(trace_requests))
                .wrap(from_fn(identify_client))
        })
        // A client that closes its connection is gone: drop its request at once, so a
        // long-lived upstream response (an event stream) releases its upstream
        // connection instead of holding it until the upstream next writes. Browsers
        // never half-close a connection while waiting for an answer.
        .h1_allow_half_closed(false)
        // Nagle off on accepted sockets too (see `net`).
        .tcp_nodelay(true)
        .listen(listener)?
        // spa-bff handles SIGTERM/SIGINT itself, to drain first (see `run`).
        .disable_signals()
        .shutdown_timeout(10);
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server.run();
        let metrics_server = match metrics_listener {
            Some(listener) => Some(metrics_server(listener, metrics)?),
            None => None,
        };
        let shutdown = Shutdown {
            handle: server.handle(),
            metrics_handle: metrics_server.as_ref().map(|(s, _)| s.handle()),
            lifecycle,
            delay: settings.server.shutdown_delay,
        };
        Ok(App {
            port,
            server,
            metrics_server,
            provider,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the `/metrics`-only listener, when `server.metrics_listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(_, port)| *port)
    }

    /// Stops the server (`handle().stop(true)` drains in-flight requests).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Shuts the server down as SIGTERM does.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Whether provider discovery has succeeded.
    pub fn provider_ready(&self) -> bool {
        self.provider.is_ready()
    }

    /// Runs until the server is stopped: SIGTERM drains ([`Shutdown::begin`]);
    /// SIGINT (Ctrl-C), or a second signal while draining, stops without the delay.
    pub async fn run(self) -> io::Result<()> {
        actix_web::rt::spawn(stop_on_signals(self.shutdown.clone()));
        let metrics = self.metrics_server.map(|(server, _)| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let result = self.server.await;
        if let Some(metrics) = metrics {
            metrics.stop(true).await;
        }
        result
    }
}

/// The second server of `server.metrics_listen`: `GET /metrics` and nothing else
/// (everything else is 404), one worker. Its scrapes are not counted.
fn metrics_server(listener: TcpListener, metrics: Metrics) -> io::Result<(Server, u16)> {
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        actix_web::App::new()
            .app_data(metrics.clone())
            .service(routes::get_only(
                crate::paths::METRICS,
                routes::metrics::metrics,
            ))
            .default_service(web::to(|| async {
                actix_web::HttpResponse::from_error(Error::NotFound)
            }))
    })
    .workers(1)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(1)
    .run();
    Ok((server, port))
}

async fn stop_on_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => {
            actix_web::rt::spawn(shutdown.clone().begin());
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ = int.recv() => {}
    }
    shutdown.now().await;
}

/// Logs once, at start, what Redis is (or why it cannot be reached: a wrong
/// password or an untrusted certificate does not stop spa-bff; `/readyz` says 503).
async fn log_redis_report(redis: RedisHandle) {
    match redis.report().await {
        Ok(r) => tracing::info!(
            mode = r.mode,
            version = %r.version,
            replicas = r.replicas,
            tls = r.tls,
            "Redis reached"
        ),
        Err(e) => tracing::warn!("Redis not reachable at start: {}", detail(&e)),
    }
}

/// What `spa-bff check-config --online` found.
pub struct OnlineReport {
    /// One line per finding, `ok` or not.
    pub lines: Vec<String>,
    pub ok: bool,
}

/// Reaches the provider (discovery: the issuer must match, the endpoints spa-bff
/// uses must be there; whether authorization requests are pushed and can be; DPoP
/// support when `oidc.dpop` is on) and Redis (mode, version, authentication and TLS).
pub async fn check_online(settings: Settings) -> OnlineReport {
    let mut lines = Vec::new();
    let mut ok = true;
    let settings = Arc::new(settings);
    let discovery = ProviderHandle::new(settings.clone());
    match discovery
        .fetch(&OidcHttp::new(settings.oidc.http_timeout))
        .await
    {
        Ok(m) => {
            lines.push(format!(
                "provider: ok, issuer {} matches oidc.issuer",
                m.issuer().as_str()
            ));
            let token = m.token_endpoint().is_some();
            let extra = m.additional_metadata();
            lines.push(format!(
                "provider endpoints: authorization yes, token {}, jwks yes, userinfo {}, end_session {}, revocation {}",
                yes(token),
                yes(m.userinfo_endpoint().is_some()),
                yes(extra.end_session_endpoint.is_some()),
                yes(extra.revocation_endpoint.is_some()),
            ));
            if !token {
                ok = false;
                lines.push("provider: has no token endpoint".into());
            }
            let (par, par_ok) = par_report(extra, &settings.oidc);
            ok &= par_ok;
            lines.push(par);
            if settings.oidc.dpop {
                let (dpop, dpop_ok) = dpop_report(extra);
                ok &= dpop_ok;
                lines.push(dpop);
            }
        }
        Err(e) => {
            ok = false;
            lines.push(format!("provider: discovery failed: {e}"));
        }
    }
    match RedisHandle::new(&settings.session.redis) {
        Ok(redis) => match redis.report().await {
            Ok(RedisReport {
                mode,
                version,
                replicas,
                tls,
            }) => lines.push(format!(
                "redis: ok, mode {mode}, version {version}, replicas {}, tls {}, authentication ok",
                yes(replicas),
                yes(tls)
            )),
            Err(e) => {
                ok = false;
                lines.push(format!("redis: {}", detail(&e)));
            }
        },
        Err(e) => {
            ok = false;
            lines.push(format!("redis: {}", detail(&e)));
        }
    }
    OnlineReport { lines, ok }
}

/// Whether the provider requires pushed authorization requests (RFC 9126), whether
/// spa-bff will push them, and whether it can (a PAR endpoint it may call).
fn par_report(meta: &ExtraMetadata, oidc: &OidcSettings) -> (String, bool) {
    let required = meta.require_pushed_authorization_requests;
    let endpoint = meta.pushed_authorization_request_endpoint.is_some();
    let pushes = match (oidc.use_par, required) {
        (true, _) => "yes (oidc.use_par)",
        (false, true) => "yes (the provider requires it)",
        (false, false) => "no",
    };
    match authorization_route(meta, oidc) {
        Ok(_) => (
            format!(
                "par: required by the provider {}, endpoint {}, spa-bff pushes {pushes}",
                yes(required),
                yes(endpoint)
            ),
            true,
        ),
        Err(problem) => (format!("par: {problem}"), false),
    }
}

/// Whether the provider takes spa-bff's DPoP proofs (ES256), for `oidc.dpop`.
fn dpop_report(meta: &ExtraMetadata) -> (String, bool) {
    match dpop_support(meta) {
        DpopSupport::Advertised => ("dpop: ok, the provider accepts ES256 proofs".into(), true),
        DpopSupport::NotAdvertised => (
            "dpop: the provider's metadata does not advertise DPoP (dpop_signing_alg_values_supported); logins fail if it issues Bearer tokens".into(),
            true,
        ),
        DpopSupport::Refused => (
            "dpop: the provider's dpop_signing_alg_values_supported does not name ES256, the algorithm of spa-bff's proofs".into(),
            false,
        ),
    }
}

/// The logged detail of a store error (never a secret).
fn detail(e: &Error) -> String {
    match e {
        Error::StoreUnavailable(d) | Error::Internal(d) => d.clone(),
        other => other.to_string(),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
