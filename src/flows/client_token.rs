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
//! 2. when it is due but still has more than `proxy.min_token_lifetime` left (as
//!    for session tokens, see `flows::refresh`), it is still used, and one fetch of
//!    its successor runs in the background; a failed background fetch is remembered
//!    like any failure (next point), and the token is used meanwhile;
//! 3. when it is due and within `min_token_lifetime` of its end (or there is none),
//!    one request fetches a new one while the others wait for it (single flight: one
//!    token-endpoint call however many requests wait, each waiting at most
//!    `oidc.http_timeout` + 1 s), then re-check the cache;
//! 4. a failure (provider unreachable, or refusing: the client may not use the
//!    grant, or its authentication is wrong) answers 503 and is remembered for
//!    [`FAILURE_MEMORY`], so queued and following requests answer 503 at once
//!    instead of each calling the provider; it is logged once per failure episode
//!    (WARN when it starts, INFO when a token comes again), never per request;
//! 5. an upstream that rejects the token (`401 invalid_token`) gets one new token
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
    /// Held while a token is fetched (the single flight; a background fetch holds
    /// it too).
    flight: Arc<tokio::sync::Mutex<()>>,
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
    /// From then on requests wait for the renewal: `min_token_lifetime` before the
    /// token expires (never before `renew_at`).
    wait_at: Instant,
}

/// What the cache holds for a request.
enum Ready {
    /// A token that is not due.
    Fresh(Sensitive),
    /// A token that is due but still usable; `failed`: a fetch failed moments ago.
    Ahead { token: Sensitive, failed: bool },
    /// No usable token, and a fetch failed moments ago.
    Failed(Error),
    /// No usable token: fetch one.
    Due,
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
    /// What the cache holds at `now`: see [`Ready`].
    fn ready(&self, now: Instant) -> Ready {
        let state = locked(&self.state);
        let failure = state
            .failure
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < FAILURE_MEMORY);
        match (&state.token, failure) {
            (Some(c), _) if now < c.renew_at => Ready::Fresh(c.token.clone()),
            (Some(c), failure) if now < c.wait_at => Ready::Ahead {
                token: c.token.clone(),
                failed: failure.is_some(),
            },
            (_, Some((_, detail))) => Ready::Failed(Error::ClientTokenUnavailable(detail.clone())),
            _ => Ready::Due,
        }
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

/// When a token fetched at `fetched` with `lifetime`, due at `renew_at`, stops being
/// forwarded while its successor is fetched in the background: `min_lifetime` before
/// it expires, never before `renew_at`.
pub fn wait_at(
    fetched: Instant,
    lifetime: Option<Duration>,
    renew_at: Instant,
    min_lifetime: Duration,
) -> Instant {
    match lifetime {
        None => renew_at,
        Some(life) => (fetched + life.saturating_sub(min_lifetime)).max(renew_at),
    }
}

/// What fetching client tokens needs.
pub struct ClientTokenSource<'a> {
    pub tokens: &'a Arc<ClientTokens>,
    pub provider: &'a Arc<ProviderHandle>,
    pub http: &'a OidcHttp,
    pub oidc: &'a OidcSettings,
    /// `proxy.refresh_skew`.
    pub skew: Duration,
    /// `proxy.min_token_lifetime` (at most the skew).
    pub min_lifetime: Duration,
    /// The provider's latest DPoP nonce (`oidc.dpop`).
    pub dpop_nonces: &'a Arc<DpopNonces>,
}

impl ClientTokenSource<'_> {
    /// The route's token: cached, or fetched once for every request waiting.
    pub async fn token(&self, route: &RouteSettings) -> Result<Sensitive, Error> {
        let slot = self.tokens.slot(&route.prefix);
        if let Some(answer) = self.answer(route, &slot) {
            return answer;
        }
        let wait = self.oidc.http_timeout + WAIT_MARGIN;
        let _flight = tokio::time::timeout(wait, slot.flight.lock())
            .await
            .map_err(|_| {
                Error::ClientTokenUnavailable("timed out waiting for the route's token".into())
            })?;
        // Whoever held the flight may have fetched it (or failed) meanwhile.
        if let Some(answer) = self.answer(route, &slot) {
            return answer;
        }
        self.fetch(route, &slot).await
    }

    /// The answer the cache gives without waiting, if it gives one; a due but
    /// usable token starts its successor's fetch in the background.
    fn answer(&self, route: &RouteSettings, slot: &Arc<Slot>) -> Option<Result<Sensitive, Error>> {
        match slot.ready(Instant::now()) {
            Ready::Fresh(token) => Some(Ok(token)),
            Ready::Ahead { token, failed } => {
                if !failed {
                    self.fetch_ahead(route, slot);
                }
                Some(Ok(token))
            }
            Ready::Failed(e) => Some(Err(e)),
            Ready::Due => None,
        }
    }

    /// Fetches the route's next token in the background, unless a fetch is under way.
    fn fetch_ahead(&self, route: &RouteSettings, slot: &Arc<Slot>) {
        let Ok(flight) = Arc::clone(&slot.flight).try_lock_owned() else {
            return;
        };
        let (slot, route) = (Arc::clone(slot), route.clone());
        let tokens = Arc::clone(self.tokens);
        let provider = Arc::clone(self.provider);
        let dpop_nonces = Arc::clone(self.dpop_nonces);
        let (http, oidc) = (self.http.clone(), self.oidc.clone());
        let (skew, min_lifetime) = (self.skew, self.min_lifetime);
        actix_web::rt::spawn(async move {
            let _flight = flight;
            let source = ClientTokenSource {
                tokens: &tokens,
                provider: &provider,
                http: &http,
                oidc: &oidc,
                skew,
                min_lifetime,
                dpop_nonces: &dpop_nonces,
            };
            // Logged and remembered by `fetch` when it fails.
            let _ = source.fetch(&route, &slot).await;
        });
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
                let renew = renew_at(now, token.lifetime, self.skew);
                state.token = Some(Cached {
                    token: token.access_token.clone(),
                    renew_at: renew,
                    wait_at: wait_at(now, token.lifetime, renew, self.min_lifetime),
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
    fn a_due_token_is_forwarded_until_min_lifetime_before_its_end() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // 300 s token, 30 s skew, 10 s minimum: due at 270 s, waited for from 290 s.
        let renew = renew_at(t0, Some(s(300)), s(30));
        assert_eq!(wait_at(t0, Some(s(300)), renew, s(10)), t0 + s(290));
        // A minimum equal to the skew: no window, every renewal is waited for.
        assert_eq!(wait_at(t0, Some(s(300)), renew, s(30)), renew);
        // A token living shorter than the skew is due at half its life: never earlier.
        let short = renew_at(t0, Some(s(4)), s(30));
        assert_eq!(wait_at(t0, Some(s(4)), short, s(10)), short);
        assert_eq!(wait_at(t0, None, t0 + s(5), s(10)), t0 + s(5));
    }

    #[test]
    fn a_cached_token_is_used_until_due_and_a_failure_is_remembered_briefly() {
        let slot = Slot::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(matches!(slot.ready(t0), Ready::Due));
        locked(&slot.state).token = Some(Cached {
            token: Sensitive::new("t"),
            renew_at: t0 + s(10),
            wait_at: t0 + s(20),
        });
        assert!(matches!(slot.ready(t0), Ready::Fresh(t) if t.expose() == "t"));
        assert!(matches!(
            slot.ready(t0 + s(10)),
            Ready::Ahead { token, failed: false } if token.expose() == "t"
        ));
        assert!(matches!(slot.ready(t0 + s(20)), Ready::Due));
        // A failed background fetch: the token is still used, and no fetch starts.
        locked(&slot.state).failure = Some((t0 + s(10), "down".into()));
        assert!(matches!(
            slot.ready(t0 + s(11)),
            Ready::Ahead { failed: true, .. }
        ));
        let mut state = locked(&slot.state);
        state.token = None;
        state.failure = Some((t0, "down".into()));
        drop(state);
        assert!(matches!(
            slot.ready(t0 + s(1)),
            Ready::Failed(Error::ClientTokenUnavailable(_))
        ));
        assert!(
            matches!(slot.ready(t0 + FAILURE_MEMORY), Ready::Due),
            "forgotten after {FAILURE_MEMORY:?}"
        );
    }
}
