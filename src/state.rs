//! Per-worker application state: one struct instead of many `Data` parameters.
//! Settings and the discovered provider are shared by all workers; the awc client
//! is per worker (it is not `Send`), and so is the Redis connection.

use crate::config::Settings;
use crate::error::Error;
use crate::oidc::{OidcHttp, ProviderHandle};
use crate::proxy::RefreshFlights;
use crate::session::{CookieCodec, ExpiryPolicy, LoadedSession, RedisHandle, SessionStore};
use crate::time::now_ms;
use actix_web::HttpRequest;
use std::sync::Arc;

pub struct AppState {
    pub settings: Arc<Settings>,
    pub provider: Arc<ProviderHandle>,
    pub http: OidcHttp,
    pub sessions: SessionStore,
    pub cookies: CookieCodec,
    /// The client for `[[routes]]` upstreams: no redirects followed, no client-wide
    /// timeout (each route sets its own), responses not decompressed.
    pub upstream: awc::Client,
    /// In-process refresh single-flight, shared by every worker.
    pub flights: Arc<RefreshFlights>,
}

/// What the request's session cookie led to.
pub enum SessionLookup {
    /// No session cookie at all.
    NoCookie,
    /// A cookie that does not decrypt, or whose session ended.
    Stale,
    Active(Box<LoadedSession>),
}

impl AppState {
    pub fn new(
        settings: Arc<Settings>,
        provider: Arc<ProviderHandle>,
        redis: redis::Client,
        flights: Arc<RefreshFlights>,
    ) -> Self {
        let s = &settings.session;
        let sessions = SessionStore::new(
            RedisHandle::from_client(redis, s.redis_timeout),
            s.key_prefix.clone(),
            ExpiryPolicy::new(s.idle_timeout, s.absolute_timeout),
        );
        Self {
            http: OidcHttp::new(settings.oidc.http_timeout),
            cookies: CookieCodec::new(s),
            upstream: awc::Client::builder()
                .disable_redirects()
                .disable_timeout()
                .finish(),
            flights,
            sessions,
            provider,
            settings,
        }
    }

    /// The session the request's cookie refers to.
    pub async fn session(&self, req: &HttpRequest) -> Result<SessionLookup, Error> {
        let has_cookie = req
            .cookies()
            .map(|c| {
                c.iter()
                    .any(|c| c.name() == self.cookies.session_cookie_name())
            })
            .unwrap_or(false);
        if !has_cookie {
            return Ok(SessionLookup::NoCookie);
        }
        let Some(reference) = self.cookies.read_session(req) else {
            return Ok(SessionLookup::Stale);
        };
        Ok(match self.sessions.load(&reference, now_ms()).await? {
            Some(s) => SessionLookup::Active(Box::new(s)),
            None => SessionLookup::Stale,
        })
    }
}
