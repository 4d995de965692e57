//! Keeping the access token fresh: exactly one refresh per expiry, however many
//! requests of one session arrive at once, on however many instances. The proxy
//! calls [`Refresher::ensure_fresh`] before forwarding, and
//! [`Refresher::replace_rejected`] when an upstream refused the token.
//!
//! Providers rotate refresh tokens and revoke the whole grant when a used one comes
//! back, so two racing refreshes end the user's session. Three layers prevent that:
//!
//! 1. in-process: one async mutex per session ([`RefreshFlights`], shared by all
//!    workers); whoever waited re-reads the session and usually finds it fresh;
//! 2. across instances: the store's refresh lock per session
//!    ([`Store::try_lock_refresh`], released only by its holder); an instance that
//!    cannot take it polls the session until the holder has saved new tokens (or
//!    the lock expired: a crashed holder blocks refreshes at most
//!    `proxy.refresh_lock_ttl`);
//! 3. the save is a compare-and-set on the session's version
//!    ([`Store::update_session`]).
//!
//! After taking the lock the session is read again: another instance may have
//! finished a refresh just before. The provider call itself is
//! [`oidc::refresh::refresh_tokens`](crate::oidc::refresh::refresh_tokens).
//!
//! Outcomes: the fresh session; `Err(Unauthenticated)` when the grant is gone
//! (the session is ended); `Err(ProviderUnavailable)` when the provider could not
//! answer (try again later, the session is kept).

use crate::config::Settings;
use crate::error::Error;
use crate::oidc::refresh::{refresh_tokens, RefreshError};
use crate::oidc::{OidcHttp, ProviderHandle};
use crate::secret::Sensitive;
use crate::session::{SessionRef, Tokens};
use crate::store::{LoadedSession, Store, UpdateOutcome};
use crate::time::{now_ms, UnixMs};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often a waiting instance looks at the session again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Above this many entries, forgotten sessions are swept from the map.
const SWEEP_ABOVE: usize = 256;

/// The timing rules of a refresh, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// `proxy.refresh_skew`: refresh when the token expires within this.
    pub skew: Duration,
    /// `proxy.refresh_lock_ttl`: how long one instance may hold the lock.
    pub lock_ttl: Duration,
    /// How long an instance waits for another's refresh before answering 503.
    pub wait_limit: Duration,
}

impl RefreshPolicy {
    pub fn new(settings: &Settings) -> Self {
        let lock_ttl = settings.proxy.refresh_lock_ttl;
        Self {
            skew: settings.proxy.refresh_skew,
            lock_ttl,
            wait_limit: lock_ttl + settings.oidc.http_timeout,
        }
    }
}

/// What a refresh needs, and nothing more.
pub struct Refresher<'a, S> {
    pub store: &'a S,
    pub provider: &'a ProviderHandle,
    pub http: &'a OidcHttp,
    pub flights: &'a RefreshFlights,
    pub policy: RefreshPolicy,
}

impl<S: Store> Refresher<'_, S> {
    /// The session with an access token valid for at least the skew, refreshing
    /// it if needed.
    pub async fn ensure_fresh(&self, session: LoadedSession) -> Result<LoadedSession, Error> {
        self.renew(session, Stale::Expiring).await
    }

    /// The session with an access token other than its current one, which the
    /// upstream rejected. Concurrent callers rejected with the same token share one
    /// refresh like [`Refresher::ensure_fresh`]'s callers do. When the session
    /// cannot be refreshed (no refresh token), it comes back unchanged.
    pub async fn replace_rejected(&self, session: LoadedSession) -> Result<LoadedSession, Error> {
        let rejected = session.record.tokens.access_token.clone();
        self.renew(session, Stale::Rejected(&rejected)).await
    }

    async fn renew(
        &self,
        session: LoadedSession,
        stale: Stale<'_>,
    ) -> Result<LoadedSession, Error> {
        let skew = self.policy.skew;
        if !stale.applies(&session.record.tokens, now_ms(), skew) {
            return Ok(session);
        }
        let mutex = self.flights.mutex(&session.reference.storage_id());
        let _in_process = mutex.lock().await;
        let session = self.reload(&session.reference).await?;
        if !stale.applies(&session.record.tokens, now_ms(), skew) {
            return Ok(session); // refreshed by a request we waited for
        }
        self.across_instances(session, &stale).await
    }

    /// Takes the store's lock and refreshes, or waits for the instance holding it.
    async fn across_instances(
        &self,
        session: LoadedSession,
        stale: &Stale<'_>,
    ) -> Result<LoadedSession, Error> {
        let reference = session.reference.clone();
        let give_up = Instant::now() + self.policy.wait_limit;
        loop {
            if let Some(lock) = self
                .store
                .try_lock_refresh(&reference, self.policy.lock_ttl)
                .await?
            {
                let result = self.refresh_holding_lock(&reference, stale).await;
                self.store.unlock_refresh(lock).await;
                return result;
            }
            actix_web::rt::time::sleep(POLL_INTERVAL).await;
            let current = self.reload(&reference).await?;
            if !stale.applies(&current.record.tokens, now_ms(), self.policy.skew) {
                return Ok(current); // another instance refreshed
            }
            if Instant::now() >= give_up {
                return Err(Error::ProviderUnavailable(
                    "timed out waiting for another instance's token refresh".into(),
                ));
            }
        }
    }

    async fn refresh_holding_lock(
        &self,
        reference: &SessionRef,
        stale: &Stale<'_>,
    ) -> Result<LoadedSession, Error> {
        let session = self.reload(reference).await?;
        let now = now_ms();
        let tokens = &session.record.tokens;
        if !stale.applies(tokens, now, self.policy.skew) {
            return Ok(session);
        }
        if tokens.refresh_token.is_none() && !expired(tokens, now) {
            return Ok(session); // cannot refresh early; use it while it lasts
        }
        let provider = self.provider.get()?;
        let short = &reference.storage_id()[..8];
        let started = Instant::now();
        match refresh_tokens(&provider, self.http, tokens, now).await {
            Ok(new_tokens) => {
                let mut record = session.record.clone();
                record.tokens = new_tokens;
                match self.store.update_session(&session, &record).await? {
                    UpdateOutcome::Updated => {
                        tracing::info!(
                            session = %short,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "access token refreshed"
                        );
                        Ok(LoadedSession {
                            record,
                            version: session.version + 1,
                            ..session
                        })
                    }
                    UpdateOutcome::Conflict => {
                        // Only possible when our lock expired mid-refresh.
                        tracing::warn!(session = %short, "session rewritten during a refresh; using the stored one");
                        self.reload(reference).await
                    }
                    UpdateOutcome::Gone => Err(Error::Unauthenticated),
                }
            }
            Err(e @ (RefreshError::GrantRevoked | RefreshError::NoRefreshToken)) => {
                tracing::info!(session = %short, "session ended: {e}");
                self.store.end_session(&session).await?;
                Err(Error::Unauthenticated)
            }
            Err(RefreshError::Unavailable(detail)) => Err(Error::ProviderUnavailable(detail)),
        }
    }

    async fn reload(&self, reference: &SessionRef) -> Result<LoadedSession, Error> {
        self.store
            .load_session(reference, now_ms())
            .await?
            .ok_or(Error::Unauthenticated)
    }
}

/// One async mutex per session storage id, shared by every worker of the process.
#[derive(Default)]
pub struct RefreshFlights {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl RefreshFlights {
    /// The mutex of session `id`; it lives as long as someone holds or awaits it.
    fn mutex(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = locks.get(id).and_then(Weak::upgrade) {
            return m;
        }
        if locks.len() >= SWEEP_ABOVE {
            locks.retain(|_, w| w.strong_count() > 0);
        }
        let m = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.to_string(), Arc::downgrade(&m));
        m
    }
}

/// Whether the access token expires within `skew` of `now` (unknown expiry: no).
pub fn needs_refresh(tokens: &Tokens, now: UnixMs, skew: Duration) -> bool {
    tokens
        .access_token_expires_at
        .is_some_and(|exp| now.saturating_add(skew.as_millis() as u64) >= exp)
}

fn expired(tokens: &Tokens, now: UnixMs) -> bool {
    tokens.access_token_expires_at.is_some_and(|exp| now >= exp)
}

/// Why the stored access token is not good enough.
enum Stale<'a> {
    /// It expires within the skew.
    Expiring,
    /// The upstream rejected this token (`401 invalid_token`): replace it even if
    /// it looks valid, unless it was replaced meanwhile.
    Rejected(&'a Sensitive),
}

impl Stale<'_> {
    fn applies(&self, tokens: &Tokens, now: UnixMs, skew: Duration) -> bool {
        needs_refresh(tokens, now, skew)
            || matches!(self, Stale::Rejected(bad) if tokens.access_token == **bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(expires_at: Option<UnixMs>) -> Tokens {
        Tokens {
            access_token: Sensitive::new("a"),
            access_token_expires_at: expires_at,
            refresh_token: Some(Sensitive::new("r")),
            id_token: Sensitive::new("i"),
            scope: None,
        }
    }

    #[test]
    fn refresh_is_due_within_the_skew_and_never_without_an_expiry() {
        let skew = Duration::from_secs(30);
        assert!(!needs_refresh(&tokens(Some(100_000)), 69_999, skew));
        assert!(needs_refresh(&tokens(Some(100_000)), 70_000, skew));
        assert!(needs_refresh(&tokens(Some(100_000)), 200_000, skew));
        assert!(!needs_refresh(&tokens(None), u64::MAX, skew));
    }

    #[test]
    fn a_rejected_token_is_stale_until_it_was_replaced() {
        let skew = Duration::from_secs(30);
        let stored = tokens(Some(1_000_000));
        let same = Sensitive::new("a");
        let other = Sensitive::new("replaced-meanwhile");
        assert!(!Stale::Expiring.applies(&stored, 0, skew));
        assert!(Stale::Rejected(&same).applies(&stored, 0, skew));
        assert!(!Stale::Rejected(&other).applies(&stored, 0, skew));
    }

    #[test]
    fn one_mutex_per_session_while_it_is_in_use() {
        let flights = RefreshFlights::default();
        let a = flights.mutex("a");
        assert!(Arc::ptr_eq(&a, &flights.mutex("a")));
        assert!(!Arc::ptr_eq(&a, &flights.mutex("b")));
        drop(a);
        let again = flights.mutex("a");
        assert_eq!(Arc::strong_count(&again), 1);
    }
}
