//! The one storage layer: everything spa-bff keeps outside its own memory, behind
//! the [`Store`] trait, with methods named by what they are for.
//!
//! Sessions, pending logins, the back-channel logout indexes, refresh locks and
//! replay markers all live in Redis ([`RedisStore`]); [`keys`] is the only place a
//! key is formatted. Callers never see a key, a connection or a Redis command.
//!
//! How Redis is reached (one server, Redis Cluster, Sentinel; TLS and ACL users) is
//! [`topology`]; [`connection`] keeps one worker's connection alive and bounds every
//! operation by `redis_timeout`. The same contract test suite
//! (`tests/it/store_contract.rs`) runs against every topology.
//!
//! Error policy: an unreachable, failing or slow Redis is
//! [`Error::StoreUnavailable`](crate::error::Error::StoreUnavailable) (503, heals by
//! itself); data that does not decrypt or parse is "not there", never an error.

pub mod cache;
pub mod connection;
pub mod events;
pub mod keys;
pub mod redis;
pub mod topology;

pub use connection::RedisHandle;
pub use events::{SessionEvents, SessionWatch};
pub use redis::RedisStore;
pub use topology::RedisReport;

use crate::error::Error;
use crate::session::{LoginState, SessionRecord, SessionRef};
use crate::time::UnixMs;
use std::sync::Arc;
use std::time::Duration;

/// A session read from the store, with the facts the expiry rules need.
#[derive(Debug, Clone)]
pub struct LoadedSession {
    pub reference: SessionRef,
    /// Shared: a cached session is handed to a request without copying its record.
    pub record: Arc<SessionRecord>,
    pub created_at: UnixMs,
    pub last_seen: UnixMs,
    /// Bumped on every rewrite; [`Store::update_session`] compares it.
    pub version: u64,
}

/// What a compare-and-set [`Store::update_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated,
    /// Another writer got there first; re-read the session.
    Conflict,
    /// The session no longer exists (logout, expiry).
    Gone,
}

/// What [`Store::end_session_if_unchanged`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOutcome {
    /// The session was as read, and is gone now.
    Ended,
    /// Someone rewrote it since it was read (newer tokens): it was kept.
    Changed,
    /// It did not exist any more.
    Gone,
}

/// Whether a session still exists, as [`Store::session_alive`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Live,
    /// Deleted (logout, back-channel logout) or past its idle or absolute timeout.
    Ended,
}

/// A held refresh lock; give it back with [`Store::unlock_refresh`].
#[derive(Debug)]
pub struct RefreshLock {
    key: String,
    token: String,
    /// When the lock ends by itself.
    expires: tokio::time::Instant,
}

/// Whose sessions a back-channel logout ends.
#[derive(Debug, Clone, Copy)]
pub enum LogoutScope<'a> {
    /// Every session of one provider session (`sid`).
    ProviderSession(&'a str),
    /// Every session of one user (`sub`).
    User(&'a str),
}

/// Persistence for sessions and for everything that protects them.
///
/// Each worker runs on a single-threaded runtime, so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// Saves a new session under a fresh random reference (never a caller-chosen
    /// one: a session id cannot be fixed by an attacker), indexed by its `sub` and
    /// `sid` for back-channel logout.
    async fn create_session(
        &self,
        record: &SessionRecord,
        now: UnixMs,
    ) -> Result<SessionRef, Error>;

    /// The live session, or `None` when it does not exist, has expired (it is then
    /// deleted) or does not decrypt. Records the activity (idle timeout).
    async fn load_session(
        &self,
        reference: &SessionRef,
        now: UnixMs,
    ) -> Result<Option<LoadedSession>, Error>;

    /// Whether the session is still live at `now`, under the same rules as
    /// [`Store::load_session`], without reading its record or recording activity: for
    /// watchers of long-lived connections (WebSocket tunnels).
    async fn session_alive(&self, reference: &SessionRef, now: UnixMs) -> Result<Liveness, Error>;

    /// Like [`Store::load_session`], but always as the store holds it now, never from
    /// a cached copy: what the refresh flow reads under its lock (a copy that an
    /// announcement has not reached yet could hold a refresh token another instance
    /// already spent).
    async fn load_session_latest(
        &self,
        reference: &SessionRef,
        now: UnixMs,
    ) -> Result<Option<LoadedSession>, Error> {
        self.load_session(reference, now).await
    }

    /// Rewrites the record if nobody rewrote it since `session` was read.
    async fn update_session(
        &self,
        session: &LoadedSession,
        record: &SessionRecord,
    ) -> Result<UpdateOutcome, Error>;

    /// Ends a session: deletes it and its index entries.
    async fn end_session(&self, session: &LoadedSession) -> Result<(), Error>;

    /// Ends the session only if nobody rewrote it since `session` was read (a
    /// compare-and-delete on its version): a refresh refused by the provider must not
    /// end a session another refresh has just saved newer tokens into.
    async fn end_session_if_unchanged(&self, session: &LoadedSession) -> Result<EndOutcome, Error>;

    /// Deletes a session known only by its reference (a login replacing it).
    /// Deleting a missing session is not an error.
    async fn delete_session(&self, reference: &SessionRef) -> Result<(), Error>;

    /// Ends every session in `scope`; returns how many there were.
    async fn end_sessions_of(&self, scope: LogoutScope<'_>) -> Result<usize, Error>;

    /// Takes the session's refresh lock for `ttl`, or `None` when another holder
    /// (on any instance) has it.
    async fn try_lock_refresh(
        &self,
        reference: &SessionRef,
        ttl: Duration,
    ) -> Result<Option<RefreshLock>, Error>;

    /// Releases the lock if it is still ours (it may have expired and been taken by
    /// someone else). Failures are logged: the TTL ends the lock anyway.
    async fn unlock_refresh(&self, lock: RefreshLock);

    /// Keeps a pending login for `ttl`, encrypted under its `state`.
    async fn save_login(&self, state: &str, login: &LoginState, ttl: Duration)
        -> Result<(), Error>;

    /// Takes (reads and deletes at once) the pending login of `state`: one-time.
    async fn take_login(&self, state: &str) -> Result<Option<LoginState>, Error>;

    /// Records that the back-channel logout token `jti` was used; `false` when it
    /// was already recorded within `window` (a replay).
    async fn mark_logout_token_used(&self, jti: &str, window: Duration) -> Result<bool, Error>;

    /// Whether the back-channel logout token `jti` was recorded as used.
    async fn logout_token_used(&self, jti: &str) -> Result<bool, Error>;

    /// Starts watching for announcements that the session changed (another
    /// instance saved new tokens, or ended it): [`SessionWatch::wait`] then returns
    /// as soon as one arrives. Without announcements, waiting is only a timeout.
    fn watch(&self, _reference: &SessionRef) -> SessionWatch {
        SessionWatch::none()
    }

    /// Whether the store serves reads and writes right now (a store that answers
    /// `PING` but holds writes, e.g. `CLIENT PAUSE WRITE`, is not ready).
    async fn ping(&self) -> Result<(), Error>;
}
