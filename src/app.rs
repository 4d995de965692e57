//! Builds the HTTP server: shared state, middleware, the route table.

use crate::config::Settings;
use crate::edge::client::identify_client;
use crate::edge::head::limit_headers;
use crate::edge::Edge;
use crate::error::render_errors;
use crate::flows::client_token::ClientTokens;
use crate::flows::refresh::RefreshFlights;
use crate::oidc::ProviderHandle;
use crate::routes;
use crate::state::AppState;
use crate::store::RedisHandle;
use crate::telemetry::trace_requests;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, HttpServer};
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

/// A built, not yet running, spa-bff server.
pub struct App {
    port: u16,
    server: Server,
    provider: Arc<ProviderHandle>,
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
        let redis = RedisHandle::client(&settings.session.redis_url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let settings = Arc::new(settings);
        let provider = ProviderHandle::new(settings.clone());
        actix_web::rt::spawn(provider.clone().discover_until_ready());

        let workers = settings.server.workers;
        let flights = Arc::new(RefreshFlights::default());
        let client_tokens = Arc::new(ClientTokens::default());
        let edge = Edge::new(&settings);
        let shared = (
            settings.clone(),
            provider.clone(),
            flights,
            client_tokens,
            edge,
        );
        let mut server = HttpServer::new(move || {
            let (settings, provider, flights, client_tokens, edge) = shared.clone();
            let configure = routes::configure(&settings);
            let state = AppState::new(settings, provider, redis.clone(), flights, client_tokens);
            // Middleware, innermost first: the head-size limit answers with an error
            // that render_errors turns into a page for navigations; identify_client is
            // outermost so that the request span already knows the client.
            actix_web::App::new()
                .app_data(web::Data::new(state))
                .app_data(edge)
                .configure(configure)
                .wrap(from_fn(limit_headers))
                .wrap(from_fn(render_errors))
                .wrap(
                    DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("Referrer-Policy", "no-referrer"))
                        .add(("X-Frame-Options", "DENY")),
                )
                .wrap(from_fn(trace_requests))
                .wrap(from_fn(identify_client))
        })
        // A client that closes its connection is gone: drop its request at once, so a
        // long-lived upstream response (an event stream) releases its upstream
        // connection instead of holding it until the upstream next writes. Browsers
        // never half-close a connection while waiting for an answer.
        .h1_allow_half_closed(false)
        .listen(listener)?
        .shutdown_timeout(10);
        if let Some(n) = workers {
            server = server.workers(n);
        }
        Ok(App {
            port,
            server: server.run(),
            provider,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`handle().stop(true)` drains in-flight requests).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Whether provider discovery has succeeded.
    pub fn provider_ready(&self) -> bool {
        self.provider.is_ready()
    }

    /// Runs until the server is stopped (SIGINT/SIGTERM or [`ServerHandle::stop`]).
    pub async fn run(self) -> io::Result<()> {
        self.server.await
    }
}
