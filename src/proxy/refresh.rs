//! Keeping the access token fresh: exactly one refresh per expiry, however many
//! requests of one session arrive at once, on however many instances.
//!
//! Providers rotate refresh tokens and revoke the whole grant when a used one comes
//! back, so two racing refreshes end the user's session. Three layers prevent that:
//!
//! 1. in-process: one async mutex per session ([`RefreshFlights`], shared by all
//!    workers); whoever waited re-reads the session and usually finds it fresh;
//! 2. across instances: a Redis lock per session (`SET NX PX` with a random token,
//!    released only by its holder); an instance that cannot take it polls the
//!    session until the holder has saved new tokens (or the lock expired: a crashed
//!    holder blocks refreshes at most `proxy.refresh_lock_ttl`);
//! 3. the save is a compare-and-set on the session's version.
//!
//! After taking the lock the session is read again: another instance may have
//! finished a refresh just before.

use crate::error::Error;
use crate::oidc::refresh::{refresh_tokens, RefreshError};
use crate::secret::Sensitive;
use crate::session::{LoadedSession, SessionRef, Tokens, UpdateOutcome};
use crate::state::AppState;
use crate::time::{now_ms, UnixMs};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often a waiting instance looks at the session again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Above this many entries, forgotten sessions are swept from the map.
const SWEEP_ABOVE: usize = 256;

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

/// The session with an access token valid for at least the skew, refreshing it
/// if needed. `Err(Unauthenticated)`: the session ended (it is deleted);
/// `Err(ProviderUnavailable)`: try again later, the session is kept.
pub async fn ensure_fresh(
    state: &AppState,
    session: LoadedSession,
) -> Result<LoadedSession, Error> {
    renew(state, session, Stale::Expiring).await
}

/// The session with an access token other than its current one, which the
/// upstream rejected. Concurrent callers rejected with the same token share one
/// refresh like [`ensure_fresh`]'s callers do. When the session cannot be
/// refreshed (no refresh token), it comes back unchanged.
pub async fn replace_rejected(
    state: &AppState,
    session: LoadedSession,
) -> Result<LoadedSession, Error> {
    let rejected = session.record.tokens.access_token.clone();
    renew(state, session, Stale::Rejected(&rejected)).await
}

async fn renew(
    state: &AppState,
    session: LoadedSession,
    stale: Stale<'_>,
) -> Result<LoadedSession, Error> {
    let skew = state.settings.proxy.refresh_skew;
    if !stale.applies(&session.record.tokens, now_ms(), skew) {
        return Ok(session);
    }
    let id = session.reference.storage_id();
    let mutex = state.flights.mutex(&id);
    let _in_process = mutex.lock().await;
    let session = reload(state, &session.reference).await?;
    if !stale.applies(&session.record.tokens, now_ms(), skew) {
        return Ok(session); // refreshed by a request we waited for
    }
    across_instances(state, session, &stale).await
}

/// Takes the Redis lock and refreshes, or waits for the instance holding it.
async fn across_instances(
    state: &AppState,
    session: LoadedSession,
    stale: &Stale<'_>,
) -> Result<LoadedSession, Error> {
    let proxy = &state.settings.proxy;
    let reference = session.reference.clone();
    let give_up = Instant::now() + proxy.refresh_lock_ttl + state.settings.oidc.http_timeout;
    loop {
        if let Some(lock) = state
            .sessions
            .try_lock(&reference, proxy.refresh_lock_ttl)
            .await?
        {
            let result = refresh_holding_lock(state, &reference, stale).await;
            state.sessions.unlock(lock).await;
            return result;
        }
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
        let current = reload(state, &reference).await?;
        if !stale.applies(&current.record.tokens, now_ms(), proxy.refresh_skew) {
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
    state: &AppState,
    reference: &SessionRef,
    stale: &Stale<'_>,
) -> Result<LoadedSession, Error> {
    let session = reload(state, reference).await?;
    let now = now_ms();
    let tokens = &session.record.tokens;
    if !stale.applies(tokens, now, state.settings.proxy.refresh_skew) {
        return Ok(session);
    }
    if tokens.refresh_token.is_none() && !expired(tokens, now) {
        return Ok(session); // cannot refresh early; use it while it lasts
    }
    let provider = state.provider.get()?;
    let short = &reference.storage_id()[..8];
    let started = Instant::now();
    match refresh_tokens(&provider, &state.http, tokens, now).await {
        Ok(new_tokens) => {
            let mut record = session.record.clone();
            record.tokens = new_tokens;
            match state.sessions.update(&session, &record).await? {
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
                    reload(state, reference).await
                }
                UpdateOutcome::Gone => Err(Error::Unauthenticated),
            }
        }
        Err(e @ (RefreshError::GrantRevoked | RefreshError::NoRefreshToken)) => {
            tracing::info!(session = %short, "session ended: {e}");
            state.sessions.end(&session).await?;
            Err(Error::Unauthenticated)
        }
        Err(RefreshError::Unavailable(detail)) => Err(Error::ProviderUnavailable(detail)),
    }
}

async fn reload(state: &AppState, reference: &SessionRef) -> Result<LoadedSession, Error> {
    state
        .sessions
        .load(reference, now_ms())
        .await?
        .ok_or(Error::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Sensitive;

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
