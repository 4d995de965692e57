//! spa-bff's own access token for `token = "client"` routes (machine-to-machine):
//! obtained with the client credentials grant ([`oidc::client_credentials`]), with
//! the route's `scopes`, `resource` and `audience`, never from a user's session.
//!
//! One token per route and instance, in memory ([`ClientTokens`], shared by every
//! worker), fetched on first use:
//!
//! 1. a cached token is used until it is due ([`renew_at`]): `proxy.refresh_skew`
//!    before its expiry, but never before half its lifetime (so a token that lives
//!    shorter than the skew is not fetched again for every request); a token
//!    without `expires_in` is used for [`NO_EXPIRY_REUSE`];
//! 2. when it is due, one request fetches a new one while the others wait for it
//!    (single flight: one token-endpoint call however many requests wait, each
//!    waiting at most `oidc.http_timeout` + 1 s), then re-check the cache;
//! 3. a failure (provider unreachable, or refusing: the client may not use the
//!    grant, or its authentication is wrong) answers 503 and is remembered for
//!    [`FAILURE_MEMORY`], so queued and following requests answer 503 at once
//!    instead of each calling the provider; it is logged once per failure episode
//!    (WARN when it starts, INFO when a token comes again), never per request;
//! 4. an upstream that rejects the token (`401 invalid_token`) gets one new token
//!    ([`ClientTokenSource::replace_rejected`]), shared by the requests it rejected.
//!
//! With `oidc.dpop`, each route also has a DPoP key per instance, in memory like its
//! token ([`ClientTokenSource::dpop_key`]): the token is bound to it, and the proxy
//! proves possession of it on every call of the route.
//!
//! Nothing here reads or writes a session: client tokens and users' tokens never
//! meet.
//!
//! [`oidc::client_credentials`]: crate::oidc::client_credentials

use crate::config::{OidcSettings, RouteSettings};
use crate::error::Error;
use crate::flows::refresh::FAILURE_MEMORY;
use crate::oidc::client_credentials::{request_client_token, ClientTokenError, TokenAsk};
use crate::oidc::dpop::{DpopKey, DpopNonces, Proofs};
use crate::oidc::{OidcHttp, ProviderHandle};
use crate::secret::Sensitive;
use crate::time::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a token whose answer had no `expires_in` is used.
pub const NO_EXPIRY_REUSE: Duration = Duration::from_secs(300);
/// How much longer than one provider call a request waits for its route's fetch.
const WAIT_MARGIN: Duration = Duration::from_secs(1);

/// The client tokens of every route, shared by the workers of one instance.
#[derive(Default)]
pub struct ClientTokens {
    routes: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One route's token and its fetch.
#[derive(Default)]
struct Slot {
    /// Held while a token is fetched (the single flight).
    flight: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
    /// The route's DPoP key on this instance (`oidc.dpop`), made on first use: its
    /// tokens are bound to it and its calls prove possession of it.
    dpop_key: Mutex<Option<Arc<DpopKey>>>,
}

#[derive(Default)]
struct SlotState {
    token: Option<Cached>,
    /// The last failure, while it is remembered.
    failure: Option<(Instant, String)>,
    /// Whether the current failure episode was logged.
    failing: bool,
}

struct Cached {
    token: Sensitive,
    renew_at: Instant,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientTokens {
    fn slot(&self, prefix: &str) -> Arc<Slot> {
        locked(&self.routes)
            .entry(prefix.to_string())
            .or_default()
            .clone()
    }
}

impl Slot {
    /// The cached token if it is not due at `now`, or the remembered failure.
    fn ready(&self, now: Instant) -> Option<Result<Sensitive, Error>> {
        let state = locked(&self.state);
        if let Some(cached) = state.token.as_ref().filter(|c| now < c.renew_at) {
            return Some(Ok(cached.token.clone()));
        }
        state
            .failure
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < FAILURE_MEMORY)
            .map(|(_, detail)| Err(Error::ClientTokenUnavailable(detail.clone())))
    }
}

/// When a token fetched at `fetched` with `lifetime` is due for renewal: `skew`
/// before it expires, but not before half its lifetime has passed.
pub fn renew_at(fetched: Instant, lifetime: Option<Duration>, skew: Duration) -> Instant {
    match lifetime {
        None => fetched + NO_EXPIRY_REUSE,
        Some(life) => fetched + life.saturating_sub(skew).max(life / 2),
    }
}

/// What fetching client tokens needs.
pub struct ClientTokenSource<'a> {
    pub tokens: &'a ClientTokens,
    pub provider: &'a ProviderHandle,
    pub http: &'a OidcHttp,
    pub oidc: &'a OidcSettings,
    /// `proxy.refresh_skew`.
    pub skew: Duration,
    /// The provider's latest DPoP nonce (`oidc.dpop`).
    pub dpop_nonces: &'a DpopNonces,
}

impl ClientTokenSource<'_> {
    /// The route's token: cached, or fetched once for every request waiting.
    pub async fn token(&self, route: &RouteSettings) -> Result<Sensitive, Error> {
        let slot = self.tokens.slot(&route.prefix);
        if let Some(ready) = slot.ready(Instant::now()) {
            return ready;
        }
        let wait = self.oidc.http_timeout + WAIT_MARGIN;
        let _flight = tokio::time::timeout(wait, slot.flight.lock())
            .await
            .map_err(|_| {
                Error::ClientTokenUnavailable("timed out waiting for the route's token".into())
            })?;
        // Whoever held the flight may have fetched it (or failed) meanwhile.
        if let Some(ready) = slot.ready(Instant::now()) {
            return ready;
        }
        self.fetch(route, &slot).await
    }

    /// The route's DPoP key (made on first use), or `None` without `oidc.dpop`: its
    /// token is bound to this key, and its calls must prove possession of it.
    pub fn dpop_key(&self, route: &RouteSettings) -> Result<Option<Arc<DpopKey>>, Error> {
        if !self.oidc.dpop {
            return Ok(None);
        }
        let slot = self.tokens.slot(&route.prefix);
        let mut key = locked(&slot.dpop_key);
        if key.is_none() {
            *key = Some(Arc::new(DpopKey::generate()?.0));
        }
        Ok(key.clone())
    }

    /// A token other than `rejected`, which the upstream refused: the cache
    /// forgets it (unless it was replaced meanwhile) and a new one is fetched,
    /// once for all the requests it rejected. `None` when the provider gave the same
    /// token again (the upstream's answer then stands).
    pub async fn replace_rejected(
        &self,
        route: &RouteSettings,
        rejected: &Sensitive,
    ) -> Result<Option<Sensitive>, Error> {
        let slot = self.tokens.slot(&route.prefix);
        {
            let mut state = locked(&slot.state);
            if state.token.as_ref().is_some_and(|c| c.token == *rejected) {
                state.token = None;
            }
        }
        let fresh = self.token(route).await?;
        Ok((fresh != *rejected).then_some(fresh))
    }

    /// Fetches the route's token, holding its flight.
    async fn fetch(&self, route: &RouteSettings, slot: &Slot) -> Result<Sensitive, Error> {
        let ask = TokenAsk {
            scopes: &route.scopes,
            resource: route.resource.as_deref(),
            audience: route.audience.as_deref(),
        };
        let key = self.dpop_key(route)?;
        let proofs = key.as_deref().map(|key| Proofs {
            key,
            nonces: self.dpop_nonces,
        });
        let result = match self.provider.get() {
            Ok(provider) => {
                request_client_token(&provider, self.http, self.oidc, ask, proofs, now_ms())
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(ClientTokenError::Unavailable(e.to_string()).to_string()),
        };
        let now = Instant::now();
        let mut state = locked(&slot.state);
        match result {
            Ok(token) => {
                if std::mem::take(&mut state.failing) {
                    tracing::info!(route = %route.prefix, "client credentials token available again");
                }
                state.failure = None;
                state.token = Some(Cached {
                    token: token.access_token.clone(),
                    renew_at: renew_at(now, token.lifetime, self.skew),
                });
                tracing::debug!(route = %route.prefix, "client credentials token fetched");
                Ok(token.access_token)
            }
            Err(detail) => {
                if !std::mem::replace(&mut state.failing, true) {
                    tracing::warn!(route = %route.prefix, "{detail}; the route answers 503 until a token comes (logged once until then)");
                } else {
                    tracing::debug!(route = %route.prefix, "{detail}");
                }
                state.failure = Some((now, detail.clone()));
                Err(Error::ClientTokenUnavailable(detail))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_a_skew_before_expiry_but_not_before_half_its_life() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for (lifetime, skew, due_after) in [
            (Some(s(300)), s(30), s(270)),
            (Some(s(60)), s(30), s(30)),
            (Some(s(40)), s(30), s(20)),
            (Some(s(4)), s(30), s(2)),
            (Some(s(0)), s(30), s(0)),
            (None, s(30), NO_EXPIRY_REUSE),
        ] {
            assert_eq!(
                renew_at(t0, lifetime, skew),
                t0 + due_after,
                "{lifetime:?} {skew:?}"
            );
        }
    }

    #[test]
    fn a_cached_token_is_used_until_due_and_a_failure_is_remembered_briefly() {
        let slot = Slot::default();
        let t0 = Instant::now();
        assert!(slot.ready(t0).is_none());
        locked(&slot.state).token = Some(Cached {
            token: Sensitive::new("t"),
            renew_at: t0 + Duration::from_secs(10),
        });
        assert!(matches!(slot.ready(t0), Some(Ok(t)) if t.expose() == "t"));
        assert!(slot.ready(t0 + Duration::from_secs(10)).is_none());
        let mut state = locked(&slot.state);
        state.token = None;
        state.failure = Some((t0, "down".into()));
        drop(state);
        assert!(matches!(
            slot.ready(t0 + Duration::from_secs(1)),
            Some(Err(Error::ClientTokenUnavailable(_)))
        ));
        assert!(
            slot.ready(t0 + FAILURE_MEMORY).is_none(),
            "forgotten after {FAILURE_MEMORY:?}"
        );
    }
}
