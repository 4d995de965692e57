//! Per-worker application state: one struct instead of many `Data` parameters.
//! What the whole process shares ([`Shared`]: settings, the discovered provider, the
//! refresh flights, the session announcements and cache, metrics...) is built once;
//! the awc clients are per worker (awc is not `Send`), and so is the store's Redis
//! connection handle.
//!
//! Handlers reach the flows through [`AppState::deps`], [`AppState::refresher`]
//! and [`AppState::client_tokens`], which lend each flow only what it needs.
//! [`Lifecycle`] tells `/readyz` that the instance is shutting down.

use crate::config::Settings;
use crate::error::Error;
use crate::flows::client_token::{ClientTokenSource, ClientTokens};
use crate::flows::refresh::{RefreshFlights, RefreshPolicy, Refresher};
use crate::flows::Deps;
use crate::metrics::Metrics;
use crate::oidc::dpop::DpopNonces;
use crate::oidc::{OidcHttp, ProviderHandle};
use crate::session::{CookieCodec, ExpiryPolicy, SessionCookie};
use crate::store::{LoadedSession, RedisHandle, RedisStore, SessionEvents, Store};
use crate::time::now_ms;
use actix_web::{HttpRequest, HttpResponse};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct AppState {
    pub settings: Arc<Settings>,
    pub provider: Arc<ProviderHandle>,
    pub http: OidcHttp,
    pub store: RedisStore,
    pub expiry: ExpiryPolicy,
    pub cookies: CookieCodec,
    /// The client for `[[routes]]` upstreams: no redirects followed, no client-wide
    /// timeout (each route sets its own), responses not decompressed, at most
    /// `proxy.max_upstream_connections` connections (awc's default of 100 would let a
    /// hundred long-lived streams stall every other call).
    pub upstream: awc::Client,
    /// In-process refresh single-flight, shared by every worker.
    pub flights: Arc<RefreshFlights>,
    /// The client-credentials tokens of `token = "client"` routes, shared by every
    /// worker.
    pub client_tokens: Arc<ClientTokens>,
    /// Whether the instance is shutting down, shared by every worker.
    pub lifecycle: Arc<Lifecycle>,
    /// The latest DPoP nonces of the provider and of each upstream (`oidc.dpop`),
    /// shared by every worker.
    pub dpop_nonces: Arc<DpopNonces>,
    /// The server's metrics, shared by every worker (also counted by the store's
    /// connection, which carries the same handle).
    pub metrics: Metrics,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` for the upstreams, made once.
    pub forwarding: crate::edge::client::Forwarding,
}

/// What every worker of the process shares, built once by `app`.
#[derive(Clone)]
pub struct Shared {
    pub settings: Arc<Settings>,
    pub provider: Arc<ProviderHandle>,
    pub flights: Arc<RefreshFlights>,
    pub lifecycle: Arc<Lifecycle>,
    pub client_tokens: Arc<ClientTokens>,
    pub metrics: Metrics,
    /// The session announcements and the session cache (`store::events`).
    pub events: Arc<SessionEvents>,
    /// The latest DPoP nonces of the provider and of each upstream origin.
    pub dpop_nonces: Arc<DpopNonces>,
}

/// Serving, or draining before shutdown (`/readyz` turns 503 first, so load
/// balancers stop sending before the listener closes).
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// Marks the instance as shutting down; `false` when it already was.
    pub fn start_draining(&self) -> bool {
        !self.draining.swap(true, Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// What the request's session cookie led to.
pub enum SessionLookup {
    /// No session cookie at all.
    NoCookie,
    /// A cookie that does not decrypt, or whose session ended.
    Stale,
    Active(Box<LoadedSession>),
}

impl SessionLookup {
    /// The session, if there is a live one.
    pub fn active(self) -> Option<LoadedSession> {
        match self {
            SessionLookup::Active(s) => Some(*s),
            _ => None,
        }
    }
}

impl AppState {
    /// `redis` is this worker's own connection handle (it counts in the shared
    /// metrics).
    pub fn new(shared: Shared, redis: RedisHandle) -> Self {
        let Shared {
            settings,
            provider,
            flights,
            lifecycle,
            client_tokens,
            metrics,
            events,
            dpop_nonces,
        } = shared;
        let s = &settings.session;
        let redis = redis.with_metrics(metrics.clone());
        let expiry = ExpiryPolicy::new(s.idle_timeout, s.absolute_timeout);
        let store = RedisStore::new(redis, s.key_prefix.clone(), expiry).with_events(events);
        Self {
            http: OidcHttp::new(settings.oidc.http_timeout),
            cookies: CookieCodec::new(s),
            forwarding: crate::edge::client::Forwarding::new(&settings.server.public_url),
            upstream: awc::Client::builder()
                .connector(crate::net::awc_connector(
                    settings.proxy.max_upstream_connections,
                ))
                .disable_redirects()
                .disable_timeout()
                .finish(),
            flights,
            lifecycle,
            client_tokens,
            dpop_nonces,
            metrics,
            store,
            expiry,
            provider,
            settings,
        }
    }

    /// What the login, logout and back-channel flows need.
    pub fn deps(&self) -> Deps<'_, RedisStore> {
        Deps {
            settings: &self.settings,
            store: &self.store,
            provider: &self.provider,
            http: &self.http,
            dpop_nonces: &self.dpop_nonces,
            metrics: &self.metrics,
        }
    }

    /// What the refresh flow needs.
    pub fn refresher(&self) -> Refresher<'_, RedisStore> {
        Refresher {
            store: &self.store,
            provider: &self.provider,
            http: &self.http,
            flights: &self.flights,
            oidc: &self.settings.oidc,
            dpop_nonces: &self.dpop_nonces,
            policy: RefreshPolicy::new(&self.settings),
            metrics: &self.metrics,
        }
    }

    /// What `token = "client"` routes need.
    pub fn client_tokens(&self) -> ClientTokenSource<'_> {
        ClientTokenSource {
            tokens: &self.client_tokens,
            provider: &self.provider,
            http: &self.http,
            oidc: &self.settings.oidc,
            skew: self.settings.proxy.refresh_skew,
            min_lifetime: self.settings.proxy.min_token_lifetime,
            dpop_nonces: &self.dpop_nonces,
        }
    }

    /// The session the request's cookie refers to.
    pub async fn session(&self, req: &HttpRequest) -> Result<SessionLookup, Error> {
        let reference = match self.cookies.session_cookie_of(req) {
            SessionCookie::Absent => return Ok(SessionLookup::NoCookie),
            SessionCookie::Unreadable => return Ok(SessionLookup::Stale),
            SessionCookie::Valid(reference) => reference,
        };
        Ok(match self.store.load_session(&reference, now_ms()).await? {
            Some(s) => SessionLookup::Active(Box::new(s)),
            None => SessionLookup::Stale,
        })
    }

    /// Makes the browser forget its session cookie (the session ended, or the
    /// cookie leads nowhere). The one place a response clears it.
    pub fn forget_session(&self, res: &mut HttpResponse) {
        let _ = res.add_cookie(&self.cookies.clear_session());
    }
}
