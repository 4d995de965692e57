//! Keeping the access token fresh: exactly one refresh per expiry, however many
//! requests of one session arrive at once, on however many instances, and never a
//! refresh token lost. The proxy calls [`Refresher::ensure_fresh`] before
//! forwarding, and [`Refresher::replace_rejected`] when an upstream refused the
//! token.
//!
//! A token inside the skew but with more than `proxy.min_token_lifetime` left is
//! refreshed *ahead*: the request goes on with it at once, and one refresh runs in the
//! background (one per session and target on this instance, [`RefreshFlights`]; the
//! same lock and save as below across instances), so the provider's answer time is
//! paid by no request. Only a token that is missing, expires within
//! `min_token_lifetime`, or was rejected by an upstream makes requests wait. A
//! background refresh that fails leaves the current token in use (the failure is
//! remembered and logged; the next request after [`FAILURE_MEMORY`] tries again) until
//! it is within `min_token_lifetime`, when requests wait and get the failure's answer.
//!
//! Each call is for one [`Target`]: the session's own access token, or the one for a
//! route's RFC 8707 resource (per-route audiences). A token for a resource is got from
//! the session's refresh token like any refresh (with `resource=<uri>`), kept in the
//! encrypted session record, and refreshed within the skew of its expiry. Every
//! refresh of a session, whatever its target, spends the one refresh token, so all of
//! them go through the same single flight, lock and save below: one use of the
//! refresh token at a time, across instances too. A resource the login did not name,
//! or that the provider refuses (`invalid_target`, remembered for [`FAILURE_MEMORY`]
//! per session and resource), is `Err(ResourceRefused)` for that route only; the
//! session is kept.
//!
//! A token for a resource is also refused when the provider's answer says it is for
//! another API: a JWT access token whose `aud` does not name the resource asked for
//! (a provider that ignores `resource` on refresh and returns the login's audience, a
//! misconfiguration, a mix-up; see [`oidc::resource_audience`](crate::oidc::resource_audience)).
//! That token is neither stored nor sent: `Err(ResourceRefused)`, a WARN naming the
//! resource and the audiences that came back. The refresh token was spent all the
//! same, so the answer's rotated refresh token (and a valid refreshed ID token) is
//! saved exactly like any refresh's ([`save_kept`], [`decide`]): the session and its
//! other routes go on. The refusal is remembered for [`FAILURE_MEMORY`] per session and
//! resource on this instance, so the route's requests meanwhile answer 403 at once
//! instead of each spending the refresh token again. An opaque access token cannot be
//! read and is used as before.
//!
//! Providers rotate refresh tokens and revoke the whole grant when a used one comes
//! back, so two racing refreshes end the user's session. Three layers prevent that:
//!
//! 1. in-process: one async mutex per session ([`RefreshFlights`], shared by all
//!    workers), waited on for at most `wait_limit`; whoever waited re-reads the
//!    session and usually finds it fresh;
//! 2. across instances: the store's refresh lock per session
//!    ([`Store::try_lock_refresh`], released only by its holder); an instance that
//!    cannot take it waits until the holder has saved new tokens, woken by the
//!    save's announcement ([`Store::watch`]; a lost race costs about one round trip)
//!    and polling every 50 ms as a fallback, or until the lock expired (a crashed
//!    holder blocks refreshes at most `proxy.refresh_lock_ttl`);
//! 3. the save is a compare-and-set on the session's version
//!    ([`Store::update_session`]).
//!
//! Once the provider has answered, its old refresh token is spent, so the new
//! tokens must survive whatever happens to the save ([`save_kept`]):
//!
//! - saved: done;
//! - the compare-and-set conflicts: decided by content ([`decide`]): if the store
//!   still holds the tokens we refreshed from, ours win (saved again on the version
//!   just read); if it holds newer ones (someone else refreshed), ours are dropped;
//! - the store refuses or times out: the tokens are kept in memory
//!   ([`RefreshFlights`], per session), the request is served with them, and the
//!   save is retried in the background (with backoff, holding the Redis lock so no
//!   other instance redeems the spent token) and by every later request of that
//!   session on this instance, which uses the kept tokens meanwhile;
//! - the session ended meanwhile (logout): the new refresh token is revoked.
//!
//! A refused refresh (any 4xx, see [`oidc::refresh`](crate::oidc::refresh)) ends the
//! session only if nobody saved newer tokens since it was read
//! ([`Store::end_session_if_unchanged`]).
//!
//! An ID token in the answer ([`RefreshedIdToken`]) is the session's from then on when
//! it is valid and about the same user: logout's `id_token_hint`, and `/user`'s claims.
//! Valid but naming another `sub` (OpenID Connect Core 12.2): the provider says these
//! tokens are someone else's, so they are never used; the session ends and the new
//! refresh token is revoked. Invalid (signature, `iss`, `aud`, `exp`, `iat`...) or
//! signed with a key not known yet: nothing in it can be believed, and nothing in it is
//! needed: the new access and refresh tokens came over the provider's authenticated
//! token endpoint in answer to our own refresh token, exactly as without an ID token.
//! They are kept, the bad ID token is dropped (the session keeps the one it had) and
//! a WARN says why; on an unknown key the provider's metadata is read again in the
//! background for the next refresh. A provider failure (unreachable, timed
//! out, 5xx) is remembered for [`FAILURE_MEMORY`]: the session's queued requests
//! answer 503 at once instead of each calling the provider again.
//!
//! Outcomes: the fresh session; `Err(Unauthenticated)` when the grant is gone
//! (the session is ended); `Err(ProviderUnavailable)` when the provider could not
//! answer (try again later, the session is kept).

use crate::config::{OidcSettings, Settings};
use crate::error::Error;
use crate::metrics::{Metrics, RefreshOutcome, SessionEnd};
use crate::oidc::dpop::DpopNonces;
use crate::oidc::logout::revoke_refresh_token;
use crate::oidc::refresh::{refresh_tokens, RefreshError};
use crate::oidc::refreshed_id_token::RefreshedIdToken;
use crate::oidc::{OidcHttp, ProviderHandle};
use crate::secret::Sensitive;
use crate::session::{SessionRef, Target, Tokens};
use crate::store::{EndOutcome, LoadedSession, RefreshLock, Store, UpdateOutcome};
use crate::time::{now_ms, UnixMs};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often a waiting instance looks at the session again when no announcement of
/// the holder's save wakes it first (see `store::events`).
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Above this many entries, forgotten sessions are swept from the maps.
const SWEEP_ABOVE: usize = 256;
/// How long a provider failure answers a session's refreshes with 503 at once.
pub const FAILURE_MEMORY: Duration = Duration::from_millis(1500);
/// Backoff of the background save of kept tokens.
const SAVE_RETRY_FIRST: Duration = Duration::from_millis(50);
const SAVE_RETRY_MAX: Duration = Duration::from_secs(1);

/// The timing rules of a refresh, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// `proxy.refresh_skew`: refresh when the token expires within this.
    pub skew: Duration,
    /// `proxy.min_token_lifetime` (at most `skew`): within the skew but not within
    /// this, the current token is used while the refresh runs in the background.
    pub min_lifetime: Duration,
    /// `proxy.refresh_lock_ttl`: how long one instance may hold the lock.
    pub lock_ttl: Duration,
    /// How long a request waits for the session's refresh (in this process or on
    /// another instance) before answering 503.
    pub wait_limit: Duration,
    /// `session.absolute_timeout`: kept tokens are saved at most until then.
    pub session_lifetime: Duration,
}

impl RefreshPolicy {
    pub fn new(settings: &Settings) -> Self {
        let lock_ttl = settings.proxy.refresh_lock_ttl;
        Self {
            skew: settings.proxy.refresh_skew,
            min_lifetime: settings.proxy.min_token_lifetime,
            lock_ttl,
            wait_limit: lock_ttl + settings.oidc.http_timeout,
            session_lifetime: settings.session.absolute_timeout,
        }
    }
}

/// What a refresh needs, and nothing more.
pub struct Refresher<'a, S> {
    pub store: &'a S,
    pub provider: &'a Arc<ProviderHandle>,
    pub http: &'a OidcHttp,
    pub flights: &'a Arc<RefreshFlights>,
    /// For revoking refresh tokens nobody will use.
    pub oidc: &'a OidcSettings,
    /// The provider's latest DPoP nonce (sessions whose tokens are bound to a key).
    pub dpop_nonces: &'a Arc<DpopNonces>,
    pub policy: RefreshPolicy,
    /// Where refresh outcomes are counted.
    pub metrics: &'a Metrics,
}

impl<S: Store + Clone + 'static> Refresher<'_, S> {
    /// The session with an access token for `target` valid for at least the skew,
    /// refreshing (or, for a resource, first getting) it if needed; or, when the
    /// current one is inside the skew but still has more than `min_token_lifetime`
    /// left, the session as it is, with the refresh started in the background.
    pub async fn ensure_fresh(
        &self,
        session: LoadedSession,
        target: Target<'_>,
    ) -> Result<LoadedSession, Error> {
        let need = Need {
            target,
            stale: Stale::Expiring,
        };
        // The common cases, decided without a future of their own: the proxy's request
        // future stays small (it is moved into a box for every request).
        let covered = session
            .record
            .resources
            .token_request_resource(target)
            .is_ok();
        let kept = self.flights.kept(session.reference.storage_id()).is_some();
        if covered && !kept {
            let (tokens, now) = (&session.record.tokens, now_ms());
            if !need.applies(tokens, now, self.policy.skew) {
                return Ok(session);
            }
            if tokens.refresh_token.is_some()
                && !need.applies(tokens, now, self.policy.min_lifetime)
            {
                self.refresh_ahead(&session, target);
                return Ok(session);
            }
        }
        Box::pin(self.renew(session, need)).await
    }

    /// Starts the background refresh of a token that is inside the skew but still
    /// usable, unless one is running for this session and target on this instance, or
    /// one failed (or was refused) moments ago.
    fn refresh_ahead(&self, session: &LoadedSession, target: Target<'_>) {
        let id = session.reference.storage_id();
        if self.flights.recent_failure(id).is_some() {
            return;
        }
        let resource = match target {
            Target::Default => None,
            Target::Resource(r) if self.flights.recent_refusal(id, r).is_some() => return,
            Target::Resource(r) => Some(r.to_owned()),
        };
        let Some(ticket) = RefreshFlights::start_ahead(self.flights, id, resource.clone()) else {
            return; // already under way
        };
        let detached = Detached {
            store: self.store.clone(),
            provider: Arc::clone(self.provider),
            http: self.http.clone(),
            flights: Arc::clone(self.flights),
            oidc: self.oidc.clone(),
            dpop_nonces: Arc::clone(self.dpop_nonces),
            policy: self.policy,
            metrics: self.metrics.clone(),
        };
        let session = session.clone();
        actix_web::rt::spawn(async move {
            let _ticket = ticket;
            let target = resource
                .as_deref()
                .map_or(Target::Default, Target::Resource);
            let need = Need {
                target,
                stale: Stale::Expiring,
            };
            let short = session.reference.storage_id()[..8].to_string();
            match detached.refresher().renew(session, need).await {
                Ok(_) => {}
                // Logged where they were decided (the session ended, or the
                // resource's token was refused).
                Err(Error::Unauthenticated | Error::ResourceRefused(_)) => {}
                Err(e) => tracing::warn!(
                    session = %short,
                    resource = ?target,
                    "background token refresh failed ({e}); the current token is used until it is within proxy.min_token_lifetime of its expiry"
                ),
            }
        });
    }

    /// The session with an access token for `target` other than its current one,
    /// which the upstream rejected. Concurrent callers rejected with the same token
    /// share one refresh like [`Refresher::ensure_fresh`]'s callers do. When the
    /// session's own token cannot be refreshed (no refresh token), the session comes
    /// back unchanged.
    pub async fn replace_rejected(
        &self,
        session: LoadedSession,
        target: Target<'_>,
    ) -> Result<LoadedSession, Error> {
        let rejected = session.record.tokens.access_token_for(target).cloned();
        let need = Need {
            target,
            stale: match &rejected {
                Some(token) => Stale::Rejected(token),
                None => Stale::Expiring,
            },
        };
        Box::pin(self.renew(session, need)).await
    }

    async fn renew(&self, session: LoadedSession, need: Need<'_>) -> Result<LoadedSession, Error> {
        // A resource the login did not name is not covered by the grant: asking would
        // only be refused (and a rotating provider may spend the refresh token on it).
        session
            .record
            .resources
            .token_request_resource(need.target)
            .map_err(|_| {
                Error::ResourceRefused("the session's login did not name this resource".into())
            })?;
        let skew = self.policy.skew;
        let id = session.reference.storage_id().to_string();
        // Tokens this instance got but could not save are newer than the store's.
        let session = match self.flights.kept(&id) {
            Some(_) => self.settle(session).await?,
            None => session,
        };
        if !need.applies(&session.record.tokens, now_ms(), skew) {
            return Ok(session);
        }
        let mutex = self.flights.mutex(&id);
        let _in_process = tokio::time::timeout(self.policy.wait_limit, mutex.lock())
            .await
            .map_err(|_| {
                Error::ProviderUnavailable(
                    "timed out waiting for this session's token refresh".into(),
                )
            })?;
        let session = self.current(&session.reference).await?;
        if !need.applies(&session.record.tokens, now_ms(), skew) {
            self.metrics.refresh(RefreshOutcome::LockWait);
            return Ok(session); // refreshed by a request we waited for
        }
        if let Some(detail) = self.flights.recent_failure(&id) {
            return Err(Error::ProviderUnavailable(format!(
                "a refresh of this session failed moments ago: {detail}"
            )));
        }
        if let Target::Resource(resource) = need.target {
            if let Some(detail) = self.flights.recent_refusal(&id, resource) {
                return Err(Error::ResourceRefused(format!("moments ago: {detail}")));
            }
        }
        self.across_instances(session, &need).await
    }

    /// Takes the store's lock and refreshes, or waits for the instance holding it.
    async fn across_instances(
        &self,
        session: LoadedSession,
        need: &Need<'_>,
    ) -> Result<LoadedSession, Error> {
        let reference = session.reference.clone();
        let give_up = Instant::now() + self.policy.wait_limit;
        // Woken when the holder's save is announced; polls as a fallback.
        let mut watch = self.store.watch(&reference);
        loop {
            if let Some(lock) = self
                .store
                .try_lock_refresh(&reference, self.policy.lock_ttl)
                .await?
            {
                return self.refresh_holding_lock(&reference, need, lock).await;
            }
            watch.wait(POLL_INTERVAL).await;
            let current = self.current(&reference).await?;
            if !need.applies(&current.record.tokens, now_ms(), self.policy.skew) {
                self.metrics.refresh(RefreshOutcome::LockWait);
                return Ok(current); // another instance refreshed
            }
            if Instant::now() >= give_up {
                return Err(Error::ProviderUnavailable(
                    "timed out waiting for another instance's token refresh".into(),
                ));
            }
        }
    }

    /// Refreshes with the lock held, and gives the lock back once the new tokens are
    /// saved (or hands it to the background save that keeps trying).
    async fn refresh_holding_lock(
        &self,
        reference: &SessionRef,
        need: &Need<'_>,
        lock: RefreshLock,
    ) -> Result<LoadedSession, Error> {
        let outcome = self.refresh_once(reference, need).await;
        match outcome {
            Refreshed::Done(result) => {
                self.store.unlock_refresh(lock).await;
                result
            }
            Refreshed::Kept(session, refused) => {
                self.spawn_background_save(&session, lock);
                match refused {
                    Some(error) => Err(error),
                    None => Ok(session),
                }
            }
        }
    }

    async fn refresh_once(&self, reference: &SessionRef, need: &Need<'_>) -> Refreshed {
        let done = Refreshed::Done;
        let session = match self.current(reference).await {
            Ok(s) => s,
            Err(e) => return done(Err(e)),
        };
        let now = now_ms();
        let tokens = &session.record.tokens;
        if !need.applies(tokens, now, self.policy.skew) {
            return done(Ok(session));
        }
        if tokens.refresh_token.is_none() {
            match need.target {
                Target::Default if !expired(tokens, now) => {
                    return done(Ok(session)); // cannot refresh early; use it while it lasts
                }
                Target::Default => {}
                Target::Resource(_) => {
                    return done(Err(Error::ResourceRefused(
                        "the session has no refresh token to get one with".into(),
                    )))
                }
            }
        }
        let provider = match self.provider.get() {
            Ok(p) => p,
            Err(e) => return done(Err(e)),
        };
        let id = reference.storage_id();
        let short = &id[..8];
        let started = Instant::now();
        let answer = refresh_tokens(
            &provider,
            self.http,
            self.oidc,
            self.dpop_nonces,
            &session.record,
            need.target,
            now,
        )
        .await;
        let refreshed = match answer {
            Ok(r) => r,
            Err(RefreshError::TargetRefused { detail }) if need.target != Target::Default => {
                // Remembered like an audience refusal: the route's next requests
                // answer 403 at once instead of each asking the provider again.
                if let Target::Resource(resource) = need.target {
                    self.flights.remember_refusal(id, resource, &detail);
                }
                return done(Err(Error::ResourceRefused(detail)));
            }
            Err(
                e @ (RefreshError::Refused { .. }
                | RefreshError::TargetRefused { .. }
                | RefreshError::NoRefreshToken),
            ) => {
                tracing::warn!(session = %short, "refresh refused: {e}");
                self.metrics.refresh(RefreshOutcome::InvalidGrant);
                return done(self.end_unless_changed(&session).await);
            }
            Err(RefreshError::Unavailable(detail)) => {
                self.metrics.refresh(RefreshOutcome::ProviderError);
                self.flights.remember_failure(id, &detail);
                return done(Err(Error::ProviderUnavailable(detail)));
            }
        };
        self.flights.forget_failure(id);
        self.metrics.refresh(match refreshed.other_audience {
            None => RefreshOutcome::Ok,
            Some(_) => RefreshOutcome::WrongAudience,
        });
        // A token for another API: not kept, not sent; the rest of the answer is saved.
        let refused = match (&refreshed.other_audience, need.target) {
            (Some(other), _) => {
                tracing::warn!(
                    session = %short,
                    resource = %other.resource,
                    audiences = ?other.audiences,
                    "the provider's token for this resource names another audience; it is neither kept nor sent (the rotated refresh token is kept)"
                );
                let detail = format!(
                    "the provider's token for this resource names another audience (asked for {}, got {:?})",
                    other.resource, other.audiences
                );
                self.flights.remember_refusal(id, &other.resource, &detail);
                Some(detail)
            }
            (None, Target::Resource(resource)) => {
                self.flights.forget_refusal(id, resource);
                None
            }
            (None, Target::Default) => None,
        };
        let mut kept = Kept {
            from: tokens.clone(),
            tokens: refreshed.tokens,
            claims: None,
        };
        match refreshed.id_token {
            RefreshedIdToken::Absent => {}
            RefreshedIdToken::Valid { id_token, claims } => {
                kept.tokens.id_token = id_token;
                kept.claims = Some(claims);
            }
            RefreshedIdToken::OtherSubject => {
                tracing::warn!(session = %short, "the refreshed ID token names another user; ending the session and revoking its new refresh token");
                self.revoke_in_background(&kept.tokens);
                return done(match self.store.end_session(&session).await {
                    Ok(()) => Err(Error::Unauthenticated),
                    Err(e) => Err(e),
                });
            }
            RefreshedIdToken::UnknownKey => {
                tracing::warn!(session = %short, "the refreshed ID token names an unknown signing key; keeping the new access and refresh tokens and the session's ID token, reading the provider's keys again");
                self.reread_keys_in_background(&provider);
            }
            RefreshedIdToken::Invalid(reason) => {
                tracing::warn!(session = %short, "the refreshed ID token is invalid ({reason}); keeping the new access and refresh tokens and the session's ID token");
            }
        }
        // The refresh's answer once saved: the session, or the refusal of its token.
        let outcome = |session: LoadedSession| match &refused {
            Some(detail) => Err(Error::ResourceRefused(detail.clone())),
            None => Ok(session),
        };
        match save_kept(self.store, &session, &kept).await {
            SaveOutcome::Saved(fresh) => {
                tracing::info!(
                    session = %short,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    resource = ?need.target,
                    "access token refreshed"
                );
                done(outcome(fresh))
            }
            SaveOutcome::Superseded(stored) => {
                tracing::warn!(session = %short, "another refresh saved newer tokens first; ours are dropped");
                done(outcome(stored))
            }
            SaveOutcome::Gone => {
                tracing::info!(session = %short, "session ended during its refresh; revoking the new refresh token");
                self.revoke_in_background(&kept.tokens);
                done(Err(Error::Unauthenticated))
            }
            SaveOutcome::NotYet(e) => {
                tracing::warn!(session = %short, "refreshed tokens not saved yet ({e}); keeping them and retrying");
                self.flights.keep(id, kept.clone());
                let mut session = session;
                kept.apply(Arc::make_mut(&mut session.record));
                Refreshed::Kept(session, refused.map(Error::ResourceRefused))
            }
        }
    }

    /// The provider refused the refresh: end the session, unless someone saved
    /// newer tokens since it was read (then those are the session's now).
    async fn end_unless_changed(&self, session: &LoadedSession) -> Result<LoadedSession, Error> {
        match self.store.end_session_if_unchanged(session).await? {
            EndOutcome::Ended => {
                self.metrics.session_ended(SessionEnd::RefreshRefused);
                Err(Error::Unauthenticated)
            }
            EndOutcome::Gone => Err(Error::Unauthenticated),
            EndOutcome::Changed => self.current(&session.reference).await,
        }
    }

    /// The session as stored, with this instance's kept tokens saved (or, while the
    /// store refuses, used) in place of older ones.
    async fn current(&self, reference: &SessionRef) -> Result<LoadedSession, Error> {
        let session = self
            .store
            .load_session_latest(reference, now_ms())
            .await?
            .ok_or(Error::Unauthenticated)?;
        self.settle(session).await
    }

    /// Saves the kept tokens of `session`, if any; see the module doc.
    async fn settle(&self, mut session: LoadedSession) -> Result<LoadedSession, Error> {
        let id = session.reference.storage_id();
        let Some(kept) = self.flights.kept(id) else {
            return Ok(session);
        };
        match save_kept(self.store, &session, &kept).await {
            SaveOutcome::Saved(s) | SaveOutcome::Superseded(s) => {
                self.flights.forget_kept(id, &kept);
                Ok(s)
            }
            SaveOutcome::Gone => {
                self.flights.forget_kept(id, &kept);
                self.revoke_in_background(&kept.tokens);
                Err(Error::Unauthenticated)
            }
            SaveOutcome::NotYet(_) => {
                kept.apply(Arc::make_mut(&mut session.record));
                Ok(session)
            }
        }
    }

    /// After a refreshed ID token named a key we do not know: reads the provider's
    /// metadata and keys again (rate-limited), so that the next one can be checked.
    fn reread_keys_in_background(&self, seen: &Arc<crate::oidc::Provider>) {
        let providers = Arc::clone(self.provider);
        let http = self.http.clone();
        let seen = Arc::clone(seen);
        actix_web::rt::spawn(async move {
            if let Err(e) = providers.refresh_jwks(&http, &seen).await {
                tracing::warn!("reading the provider's keys again failed: {e}");
            }
        });
    }

    fn revoke_in_background(&self, tokens: &Tokens) {
        let (Some(token), Ok(provider)) = (tokens.refresh_token.clone(), self.provider.get())
        else {
            return;
        };
        let http = self.http.clone();
        let oidc = self.oidc.clone();
        actix_web::rt::spawn(async move {
            revoke_refresh_token(&provider, &http, &oidc, token.expose()).await
        });
    }

    /// Retries saving the kept tokens of `session` with backoff until the store
    /// takes them, someone else's newer tokens or the session's end make them moot,
    /// or the session would have expired anyway; then releases the refresh lock.
    fn spawn_background_save(&self, session: &LoadedSession, lock: RefreshLock) {
        let store = self.store.clone();
        let flights = Arc::clone(self.flights);
        let providers = Arc::clone(self.provider);
        let http = self.http.clone();
        let oidc = self.oidc.clone();
        let reference = session.reference.clone();
        let until = session
            .created_at
            .saturating_add(self.policy.session_lifetime.as_millis() as u64);
        actix_web::rt::spawn(async move {
            let id = reference.storage_id();
            let mut delay = SAVE_RETRY_FIRST;
            let mut revoke = None;
            while now_ms() < until {
                actix_web::rt::time::sleep(delay).await;
                delay = (delay * 2).min(SAVE_RETRY_MAX);
                let mutex = flights.mutex(id);
                let _in_process = mutex.lock().await;
                let Some(kept) = flights.kept(id) else {
                    break; // a request of the session saved them
                };
                let session = match store.load_session_latest(&reference, now_ms()).await {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        flights.forget_kept(id, &kept);
                        revoke = kept.tokens.refresh_token.clone();
                        break;
                    }
                    Err(_) => continue,
                };
                match save_kept(&store, &session, &kept).await {
                    SaveOutcome::Saved(_) | SaveOutcome::Superseded(_) => {
                        flights.forget_kept(id, &kept);
                        tracing::info!(session = %&id[..8], "kept tokens saved");
                        break;
                    }
                    SaveOutcome::Gone => {
                        flights.forget_kept(id, &kept);
                        revoke = kept.tokens.refresh_token.clone();
                        break;
                    }
                    SaveOutcome::NotYet(_) => continue,
                }
            }
            if now_ms() >= until {
                // The session has expired by now: nothing left to save them into.
                if let Some(kept) = flights.kept(id) {
                    flights.forget_kept(id, &kept);
                }
            }
            store.unlock_refresh(lock).await;
            if let (Some(token), Ok(provider)) = (revoke, providers.get()) {
                revoke_refresh_token(&provider, &http, &oidc, token.expose()).await;
            }
        });
    }
}

/// What a background refresh owns: a [`Refresher`]'s parts, cloned.
struct Detached<S> {
    store: S,
    provider: Arc<ProviderHandle>,
    http: OidcHttp,
    flights: Arc<RefreshFlights>,
    oidc: OidcSettings,
    dpop_nonces: Arc<DpopNonces>,
    policy: RefreshPolicy,
    metrics: Metrics,
}

impl<S> Detached<S> {
    fn refresher(&self) -> Refresher<'_, S> {
        Refresher {
            store: &self.store,
            provider: &self.provider,
            http: &self.http,
            flights: &self.flights,
            oidc: &self.oidc,
            dpop_nonces: &self.dpop_nonces,
            policy: self.policy,
            metrics: &self.metrics,
        }
    }
}

/// How a refresh with the lock held ended.
enum Refreshed {
    /// Finished: release the lock.
    Done(Result<LoadedSession, Error>),
    /// New tokens the store has not taken yet: serve with them (unless the answer's
    /// token for the resource was refused: this error), keep the lock for the
    /// background save.
    Kept(LoadedSession, Option<Error>),
}

/// Tokens the provider issued for a session, and the ones they replace.
#[derive(Clone)]
pub struct Kept {
    /// What the session held when it was refreshed (its refresh token is spent).
    pub from: Tokens,
    /// The session's tokens with the provider's answer applied.
    pub tokens: Tokens,
    /// `/user`'s claims from a valid refreshed ID token, if the answer had one.
    pub claims: Option<Map<String, Value>>,
}

impl Kept {
    /// Puts the new tokens (and claims) into `record`.
    fn apply(&self, record: &mut crate::session::SessionRecord) {
        record.tokens = self.tokens.clone();
        if let Some(claims) = &self.claims {
            record.claims = claims.clone();
        }
    }
}

/// What [`save_kept`] did.
enum SaveOutcome {
    Saved(LoadedSession),
    /// The store holds newer tokens than ours (someone else refreshed): ours are
    /// dropped and the stored session is returned.
    Superseded(LoadedSession),
    /// The session ended meanwhile.
    Gone,
    /// The store did not take them (error, timeout, repeated conflicts).
    NotYet(Error),
}

/// Whose tokens a session should hold, by what the store holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The store still holds what we refreshed from: save ours.
    Ours,
    /// The store already holds ours.
    AlreadySaved,
    /// The store holds other, newer tokens: drop ours.
    Newer,
}

/// Decides by content, never by version alone: a version bump that left the tokens
/// we refreshed from in place must not drop the only copy of the new ones.
pub fn decide(stored: &Tokens, kept: &Kept) -> Decision {
    if stored.same_grant_state(&kept.tokens) {
        Decision::AlreadySaved
    } else if stored.same_grant_state(&kept.from) {
        Decision::Ours
    } else {
        Decision::Newer
    }
}

/// Saves `kept` into `session` with a compare-and-set, re-reading once after a
/// conflict and deciding by content ([`decide`]).
async fn save_kept<S: Store>(store: &S, session: &LoadedSession, kept: &Kept) -> SaveOutcome {
    let mut current = session.clone();
    for _ in 0..2 {
        match decide(&current.record.tokens, kept) {
            Decision::Ours => {}
            Decision::AlreadySaved => return SaveOutcome::Saved(current),
            Decision::Newer => return SaveOutcome::Superseded(current),
        }
        let mut record = (*current.record).clone();
        kept.apply(&mut record);
        match store.update_session(&current, &record).await {
            Ok(UpdateOutcome::Updated) => {
                return SaveOutcome::Saved(LoadedSession {
                    record: Arc::new(record),
                    version: current.version + 1,
                    ..current
                })
            }
            Ok(UpdateOutcome::Gone) => return SaveOutcome::Gone,
            Ok(UpdateOutcome::Conflict) => {
                match store
                    .load_session_latest(&current.reference, now_ms())
                    .await
                {
                    Ok(Some(s)) => current = s,
                    Ok(None) => return SaveOutcome::Gone,
                    Err(e) => return SaveOutcome::NotYet(e),
                }
            }
            Err(e) => return SaveOutcome::NotYet(e),
        }
    }
    SaveOutcome::NotYet(Error::StoreUnavailable(
        "the session kept changing during the save".into(),
    ))
}

/// What the in-process refreshes of every worker share, per session storage id:
/// one mutex, tokens the store has not taken yet, a recent provider failure,
/// recently refused resource tokens (per resource), and the background refreshes
/// under way (per target).
#[derive(Default)]
pub struct RefreshFlights {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// (session id, resource) of the background refreshes under way.
    ahead: Mutex<HashSet<(String, Option<String>)>>,
    kept: Mutex<HashMap<String, Kept>>,
    failures: Mutex<HashMap<String, (Instant, String)>>,
    /// (session id, resource) -> when and why its token was refused.
    refusals: Mutex<HashMap<(String, String), (Instant, String)>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One background refresh under way; dropping it lets the next one start.
struct AheadTicket {
    flights: Arc<RefreshFlights>,
    key: (String, Option<String>),
}

impl Drop for AheadTicket {
    fn drop(&mut self) {
        locked(&self.flights.ahead).remove(&self.key);
    }
}

impl RefreshFlights {
    /// Marks a background refresh of session `id` (for `resource`) as under way;
    /// `None` when one already is.
    fn start_ahead(flights: &Arc<Self>, id: &str, resource: Option<String>) -> Option<AheadTicket> {
        let key = (id.to_string(), resource);
        locked(&flights.ahead)
            .insert(key.clone())
            .then(|| AheadTicket {
                flights: Arc::clone(flights),
                key,
            })
    }

    /// The mutex of session `id`; it lives as long as someone holds or awaits it.
    fn mutex(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = locked(&self.locks);
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

    /// Tokens of session `id` the store has not taken yet.
    fn kept(&self, id: &str) -> Option<Kept> {
        locked(&self.kept).get(id).cloned()
    }

    fn keep(&self, id: &str, kept: Kept) {
        locked(&self.kept).insert(id.to_string(), kept);
    }

    /// Forgets `kept` once saved or moot (not newer ones kept meanwhile).
    fn forget_kept(&self, id: &str, kept: &Kept) {
        let mut all = locked(&self.kept);
        if all
            .get(id)
            .is_some_and(|k| k.tokens.same_grant_state(&kept.tokens))
        {
            all.remove(id);
        }
    }

    fn remember_failure(&self, id: &str, detail: &str) {
        let mut failures = locked(&self.failures);
        if failures.len() >= SWEEP_ABOVE {
            failures.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
        }
        failures.insert(id.to_string(), (Instant::now(), detail.to_string()));
    }

    fn forget_failure(&self, id: &str) {
        locked(&self.failures).remove(id);
    }

    /// The provider failure of session `id` within the last [`FAILURE_MEMORY`].
    fn recent_failure(&self, id: &str) -> Option<String> {
        locked(&self.failures)
            .get(id)
            .filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
            .map(|(_, detail)| detail.clone())
    }

    /// Remembers that the provider's token for `resource` was refused (it named
    /// another audience), for [`FAILURE_MEMORY`].
    fn remember_refusal(&self, id: &str, resource: &str, detail: &str) {
        let mut refusals = locked(&self.refusals);
        if refusals.len() >= SWEEP_ABOVE {
            refusals.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
        }
        refusals.insert(
            (id.to_string(), resource.to_string()),
            (Instant::now(), detail.to_string()),
        );
    }

    fn forget_refusal(&self, id: &str, resource: &str) {
        locked(&self.refusals).remove(&(id.to_string(), resource.to_string()));
    }

    /// Why session `id`'s token for `resource` was refused within the last
    /// [`FAILURE_MEMORY`].
    fn recent_refusal(&self, id: &str, resource: &str) -> Option<String> {
        locked(&self.refusals)
            .get(&(id.to_string(), resource.to_string()))
            .filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
            .map(|(_, detail)| detail.clone())
    }
}

/// Whether the access token for `target` is missing (a resource not fetched yet) or
/// expires within `skew` of `now` (unknown expiry: no).
pub fn needs_refresh(tokens: &Tokens, target: Target<'_>, now: UnixMs, skew: Duration) -> bool {
    tokens.access_token_for(target).is_none()
        || tokens
            .expires_at_for(target)
            .is_some_and(|exp| now.saturating_add(skew.as_millis() as u64) >= exp)
}

fn expired(tokens: &Tokens, now: UnixMs) -> bool {
    tokens.access_token_expires_at.is_some_and(|exp| now >= exp)
}

/// Which access token a request needs, and why the stored one may not do.
struct Need<'a> {
    target: Target<'a>,
    stale: Stale<'a>,
}

impl Need<'_> {
    fn applies(&self, tokens: &Tokens, now: UnixMs, skew: Duration) -> bool {
        self.stale.applies(tokens, self.target, now, skew)
    }
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
    fn applies(&self, tokens: &Tokens, target: Target<'_>, now: UnixMs, skew: Duration) -> bool {
        needs_refresh(tokens, target, now, skew)
            || matches!(self, Stale::Rejected(bad) if tokens.access_token_for(target) == Some(*bad))
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
            resource_tokens: Default::default(),
        }
    }

    #[test]
    fn refresh_is_due_within_the_skew_and_never_without_an_expiry() {
        let skew = Duration::from_secs(30);
        let default = Target::Default;
        assert!(!needs_refresh(
            &tokens(Some(100_000)),
            default,
            69_999,
            skew
        ));
        assert!(needs_refresh(&tokens(Some(100_000)), default, 70_000, skew));
        assert!(needs_refresh(
            &tokens(Some(100_000)),
            default,
            200_000,
            skew
        ));
        assert!(!needs_refresh(&tokens(None), default, u64::MAX, skew));
    }

    #[test]
    fn a_resource_token_is_due_when_missing_or_expiring_whatever_the_default_one_does() {
        let skew = Duration::from_secs(30);
        let orders = Target::Resource("https://orders");
        let mut t = tokens(Some(1_000_000));
        assert!(needs_refresh(&t, orders, 0, skew), "never fetched");
        t.resource_tokens.insert(
            "https://orders".into(),
            crate::session::ResourceToken {
                access_token: Sensitive::new("orders"),
                expires_at: Some(100_000),
            },
        );
        assert!(!needs_refresh(&t, orders, 69_999, skew));
        assert!(needs_refresh(&t, orders, 70_000, skew));
        assert!(!needs_refresh(&t, Target::Default, 70_000, skew));
        assert!(needs_refresh(
            &t,
            Target::Resource("https://reports"),
            0,
            skew
        ));
        let rejected = Sensitive::new("orders");
        assert!(Stale::Rejected(&rejected).applies(&t, orders, 0, skew));
        assert!(!Stale::Rejected(&rejected).applies(&t, Target::Default, 0, skew));
    }

    #[test]
    fn a_rejected_token_is_stale_until_it_was_replaced() {
        let skew = Duration::from_secs(30);
        let stored = tokens(Some(1_000_000));
        let same = Sensitive::new("a");
        let other = Sensitive::new("replaced-meanwhile");
        let default = Target::Default;
        assert!(!Stale::Expiring.applies(&stored, default, 0, skew));
        assert!(Stale::Rejected(&same).applies(&stored, default, 0, skew));
        assert!(!Stale::Rejected(&other).applies(&stored, default, 0, skew));
    }

    fn kept(from: &str, to: &str) -> Kept {
        let with = |at: &str| Tokens {
            access_token: Sensitive::new(format!("at-{at}")),
            refresh_token: Some(Sensitive::new(format!("rt-{at}"))),
            ..tokens(Some(1))
        };
        Kept {
            from: with(from),
            tokens: with(to),
            claims: None,
        }
    }

    #[test]
    fn kept_tokens_win_over_the_ones_they_replace_and_lose_to_newer_ones() {
        let k = kept("1", "2");
        assert_eq!(decide(&k.from, &k), Decision::Ours);
        assert_eq!(decide(&k.tokens, &k), Decision::AlreadySaved);
        assert_eq!(decide(&kept("x", "3").tokens, &k), Decision::Newer);
        // A provider that does not rotate: same refresh token, new access token.
        let mut same_rt = kept("1", "2");
        same_rt.tokens.refresh_token = same_rt.from.refresh_token.clone();
        assert_eq!(decide(&same_rt.from, &same_rt), Decision::Ours);
        // A refresh for a resource: only that resource's token and the refresh token
        // change; someone else's newer resource token wins over ours.
        let resource = |at: &str| crate::session::ResourceToken {
            access_token: Sensitive::new(at),
            expires_at: None,
        };
        let mut for_orders = kept("1", "1");
        for_orders.tokens.refresh_token = Some(Sensitive::new("rt-2"));
        for_orders
            .tokens
            .resource_tokens
            .insert("https://orders".into(), resource("orders-2"));
        assert_eq!(decide(&for_orders.from, &for_orders), Decision::Ours);
        assert_eq!(
            decide(&for_orders.tokens, &for_orders),
            Decision::AlreadySaved
        );
        let mut newer = for_orders.from.clone();
        newer.refresh_token = Some(Sensitive::new("rt-3"));
        newer
            .resource_tokens
            .insert("https://orders".into(), resource("orders-3"));
        assert_eq!(decide(&newer, &for_orders), Decision::Newer);
    }

    #[test]
    fn one_background_refresh_per_session_and_target_at_a_time() {
        let flights = Arc::new(RefreshFlights::default());
        let first = RefreshFlights::start_ahead(&flights, "a", None).expect("none under way");
        assert!(RefreshFlights::start_ahead(&flights, "a", None).is_none());
        let other_target =
            RefreshFlights::start_ahead(&flights, "a", Some("https://orders".into()));
        assert!(other_target.is_some(), "another target of the session");
        assert!(RefreshFlights::start_ahead(&flights, "b", None).is_some());
        drop(first);
        assert!(RefreshFlights::start_ahead(&flights, "a", None).is_some());
    }

    #[test]
    fn min_token_lifetime_is_at_most_the_skew() {
        let settings = |proxy: &str| {
            let text = format!("{}\n[proxy]\n{proxy}\n", crate::config::tests::minimal());
            RefreshPolicy::new(&Settings::from_toml_str(&text).unwrap())
        };
        let default = settings("");
        assert_eq!(
            (default.skew, default.min_lifetime),
            (Duration::from_secs(30), Duration::from_secs(10))
        );
        let short_skew = settings("refresh_skew = \"2s\"");
        assert_eq!(
            short_skew.min_lifetime,
            Duration::from_secs(2),
            "every refresh waited for"
        );
    }

    #[test]
    fn a_provider_failure_is_remembered_briefly() {
        let flights = RefreshFlights::default();
        assert_eq!(flights.recent_failure("a"), None);
        flights.remember_failure("a", "down");
        assert_eq!(flights.recent_failure("a").as_deref(), Some("down"));
        assert_eq!(flights.recent_failure("b"), None);
        flights.forget_failure("a");
        assert_eq!(flights.recent_failure("a"), None);
    }

    #[test]
    fn a_refused_resource_token_is_remembered_briefly_per_session_and_resource() {
        let flights = RefreshFlights::default();
        flights.remember_refusal("a", "https://orders", "other audience");
        assert_eq!(
            flights.recent_refusal("a", "https://orders").as_deref(),
            Some("other audience")
        );
        assert_eq!(flights.recent_refusal("a", "https://reports"), None);
        assert_eq!(flights.recent_refusal("b", "https://orders"), None);
        assert_eq!(flights.recent_failure("a"), None, "not a provider failure");
        flights.forget_refusal("a", "https://orders");
        assert_eq!(flights.recent_refusal("a", "https://orders"), None);
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
