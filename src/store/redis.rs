//! [`Store`] on Redis.
//!
//! A session is one hash (see [`keys`](super::keys)): `data` is the
//! [`SessionRecord`] as JSON sealed under the per-session secret only the cookie
//! carries; `created` and `seen` (Unix ms) feed the expiry rules and are not secret;
//! `ver` is bumped on every rewrite for compare-and-set updates. The key's TTL always
//! equals the time left under the idle and absolute timeouts plus [`EXPIRED_KEPT`]:
//! the rules are enforced in code on every read, and a browser that comes back
//! shortly after its session ended finds it there, so the session is counted as
//! ended by the timeout that ended it (metrics), then deleted.
//!
//! Redis Cluster: every command, pipeline and script touches one hash tag (one
//! slot). Work that spans keys of different tags (a session and its index sets, the
//! sessions a back-channel logout ends) is one command per key, sent concurrently;
//! the cluster client refuses a pipeline across slots.
//!
//! Announcements: every script or command that changes or ends a session publishes
//! its storage id on the session-events channel, in the same script (atomically:
//! there is no write without its announcement), so other instances drop their cached
//! copy and wake their refresh waiters ([`super::events`]). With
//! [`RedisStore::with_events`], reads are served from the process's session cache
//! while it is current ([`super::cache`]).
//!
//! Durability of rotated tokens: where the deployment has replicas, the save of
//! rotated tokens waits (`WAIT 1`, at most half of `redis_timeout`) for one of them
//! to hold the write, so a failover right after a refresh does not lose it. A save
//! that fails is not retried here: the refresh flow keeps the tokens and saves them
//! again (`flows::refresh`).

use super::connection::RedisHandle;
use super::events::{SessionEvents, SessionWatch};
use super::keys::{Keys, LOGIN_DOMAIN};
use super::{EndOutcome, Liveness, LoadedSession, LogoutScope, RefreshLock, Store, UpdateOutcome};
use crate::edge::rate_limit::Admission;
use crate::error::Error;
use crate::metrics::SessionEnd;
use crate::session::crypto::{open, random_token, seal};
use crate::session::expiry::Ended;
use crate::session::{ExpiryPolicy, LoginState, SessionRecord, SessionRef};
use crate::time::UnixMs;
use futures_util::future::try_join_all;
use redis::{Cmd, FromRedisValue, Pipeline, Script, ScriptInvocation};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Moves `seen` forward and re-arms the TTL, only if the session still exists
/// (announced: ARGV[3] is the channel, ARGV[4] the storage id).
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then
            local seen = tonumber(redis.call('HGET', KEYS[1], 'seen') or '0')
            if tonumber(ARGV[1]) > seen then
              redis.call('HSET', KEYS[1], 'seen', ARGV[1])
              redis.call('PEXPIRE', KEYS[1], ARGV[2])
              redis.call('PUBLISH', ARGV[3], ARGV[4])
            end
            return 1
          end
          return 0",
    )
});

/// Replaces `data` and bumps `ver`, only if `ver` is still the one the caller read.
/// The TTL is left alone (a rewrite is not activity). 1: updated, 0: someone else
/// rewrote it first, -1: the session is gone. Announced (ARGV[3] channel, ARGV[4]
/// storage id). Sent as `EVAL` (not `EVALSHA`) in a pipeline with `WAIT`, which must
/// follow the write on the same connection.
const UPDATE: &str = r"if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
          local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
          if ver ~= ARGV[1] then return 0 end
          redis.call('HSET', KEYS[1], 'data', ARGV[2], 'ver', tonumber(ver) + 1)
          redis.call('PUBLISH', ARGV[3], ARGV[4])
          return 1";

/// Deletes a lock only if it still holds the caller's token.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

/// Deletes the session only if `ver` is still the one the caller read.
/// 1: deleted, 0: someone else rewrote it first, -1: the session is gone.
/// Announced (ARGV[2] channel, ARGV[3] storage id).
static END_IF_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
          local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
          if ver ~= ARGV[1] then return 0 end
          redis.call('DEL', KEYS[1])
          redis.call('PUBLISH', ARGV[2], ARGV[3])
          return 1",
    )
});

/// Deletes a session and announces it (ARGV[1] channel, ARGV[2] storage id); the
/// number of keys deleted.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = redis.call('DEL', KEYS[1])
          redis.call('PUBLISH', ARGV[1], ARGV[2])
          return n",
    )
});

/// One request against a shared rate limit (GCRA, the token bucket written as one
/// timestamp): KEYS[1] holds the time at which the bucket is full again (the
/// "theoretical arrival time", µs on Redis's clock, so instances' clocks do not
/// matter); ARGV[1] is the µs one token takes to come back, ARGV[2] the burst. 0:
/// admitted (the key moves on by one token and expires when the bucket is full);
/// otherwise the µs until a token is there.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
          local interval = tonumber(ARGV[1])
          local tolerance = interval * (tonumber(ARGV[2]) - 1)
          local tat = tonumber(redis.call('GET', KEYS[1]) or now)
          if tat < now then tat = now end
          local wait = tat - tolerance - now
          if wait > 0 then return wait end
          local full = tat + interval
          redis.call('SET', KEYS[1], string.format('%d', full), 'PX', math.ceil((full - now) / 1000))
          return 0",
    )
});

/// How long Redis keeps a session's hash after its idle or absolute timeout (the code
/// refuses it from the deadline on): long enough for a browser coming back to be told
/// apart from one that never had a session, so the ending is counted with its reason.
pub const EXPIRED_KEPT: Duration = Duration::from_secs(5 * 60);

/// Pause between two tries of a lock release.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// After a `WAIT` no replica answered, skip `WAIT` this long (replica gone).
const WAIT_PAUSE_AFTER_NO_ACK: Duration = Duration::from_secs(30);

/// Whether a read may be served from the process's session cache.
#[derive(Debug, Clone, Copy)]
enum Copies {
    Allowed,
    Refused,
}

/// Cheap to clone: clones share one connection (a background save outlives the
/// request that started it).
#[derive(Clone)]
pub struct RedisStore {
    redis: RedisHandle,
    keys: Keys,
    expiry: ExpiryPolicy,
    /// Until when `WAIT` is skipped (no replica acknowledged the last one).
    wait_paused_until: Arc<Mutex<Option<Instant>>>,
    /// The process's announcements and session cache (none: every read goes to
    /// Redis, and refresh waiters poll).
    events: Option<Arc<SessionEvents>>,
}

impl RedisStore {
    pub fn new(redis: RedisHandle, prefix: impl Into<String>, expiry: ExpiryPolicy) -> Self {
        Self {
            redis,
            keys: Keys::new(prefix),
            expiry,
            wait_paused_until: Arc::new(Mutex::new(None)),
            events: None,
        }
    }

    /// This store, serving reads from `events`' cache while it is current and
    /// waking refresh waiters on announcements.
    pub fn with_events(self, events: Arc<SessionEvents>) -> Self {
        Self {
            events: Some(events),
            ..self
        }
    }

    /// Drops this instance's copy of session `id` (it is being written here).
    fn forget(&self, id: &str) {
        if let Some(events) = &self.events {
            events.cache.forget(id);
        }
    }

    /// Deletes session `id` (announced); whether it existed.
    async fn delete(&self, id: &str) -> Result<bool, Error> {
        self.forget(id);
        let mut call = DELETE.key(self.keys.session(id));
        call.arg(self.keys.session_events()).arg(id);
        let deleted: i64 = self.script(&call).await?;
        self.forget(id);
        Ok(deleted == 1)
    }

    /// The connection handle (readiness and reports use it).
    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    /// One request of `client` (a [`crate::edge::rate_limit::bucket_name`]) against the
    /// login rate limit that every instance sharing this Redis enforces together:
    /// `burst` at once, refilled at `per_minute`.
    pub async fn admit_login(
        &self,
        client: &str,
        per_minute: u32,
        burst: u32,
    ) -> Result<Admission, Error> {
        let interval_us = 60_000_000 / u64::from(per_minute.max(1));
        let mut call = ADMIT.key(self.keys.login_rate(client));
        call.arg(interval_us.max(1)).arg(burst.max(1));
        let wait_us: u64 = self.script(&call).await?;
        Ok(match wait_us {
            0 => Admission::Allowed,
            us => Admission::Limited {
                retry_after: Duration::from_micros(us),
            },
        })
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        self.redis
            .run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Error> {
        self.redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    async fn script<T: FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> Result<T, Error> {
        self.redis
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await
    }

    /// The index sets `record` belongs to: its user's, and its provider session's.
    fn index_keys(&self, record: &SessionRecord) -> Vec<String> {
        let mut keys = vec![self.keys.user_sessions(&record.sub)];
        keys.extend(
            record
                .sid
                .as_deref()
                .map(|sid| self.keys.provider_sessions(sid)),
        );
        keys
    }

    /// Records which sessions belong to a provider session (`sid`) and to a user
    /// (`sub`). Entries of sessions that ended meanwhile are harmless; the sets
    /// expire with the absolute timeout.
    async fn index(&self, id: &str, record: &SessionRecord) -> Result<(), Error> {
        let ttl = self.expiry.absolute.as_millis() as u64;
        let pipes: Vec<Pipeline> = self
            .index_keys(record)
            .iter()
            .map(|key| {
                let mut pipe = redis::pipe();
                pipe.cmd("SADD").arg(key).arg(id).ignore();
                pipe.cmd("PEXPIRE").arg(key).arg(ttl).ignore();
                pipe
            })
            .collect();
        try_join_all(pipes.iter().map(|p| self.pipeline::<()>(p))).await?;
        Ok(())
    }

    /// Removes a session's storage id from its index sets (one command per set:
    /// they live in other Cluster slots).
    async fn unindex(&self, id: &str, record: &SessionRecord) -> Result<(), Error> {
        let srems: Vec<Cmd> = self
            .index_keys(record)
            .iter()
            .map(|index| {
                let mut srem = redis::cmd("SREM");
                srem.arg(index).arg(id);
                srem
            })
            .collect();
        try_join_all(srems.iter().map(|c| self.query::<i64>(c))).await?;
        Ok(())
    }

    /// `SET key value NX PX ttl`: whether the key was set (it did not exist).
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, Error> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(ttl_ms);
        let set: Option<String> = self.query(&cmd).await?;
        Ok(set.is_some())
    }

    /// Moves the session's `seen` to `now` and re-arms its TTL; `false` when the
    /// session was deleted meanwhile.
    async fn touch(&self, id: &str, created: UnixMs, now: UnixMs) -> Result<bool, Error> {
        let ttl = self
            .expiry
            .remaining(created, now, now)
            .map(|d| (d + EXPIRED_KEPT).as_millis() as u64)
            .unwrap_or(1);
        self.forget(id);
        let mut call = TOUCH.key(self.keys.session(id));
        call.arg(now)
            .arg(ttl.max(1))
            .arg(self.keys.session_events())
            .arg(id);
        let touched: i64 = self.script(&call).await?;
        self.forget(id);
        Ok(touched == 1)
    }

    /// A session read: from this instance's cached copy when `copies` allows it and
    /// the copy is current (see `super::cache`), else from Redis (then cached).
    async fn load(
        &self,
        reference: &SessionRef,
        now: UnixMs,
        copies: Copies,
    ) -> Result<Option<LoadedSession>, Error> {
        let cache = self.events.as_ref().map(|e| &e.cache);
        let copy = match copies {
            Copies::Allowed => cache.and_then(|c| c.get(reference, std::time::Instant::now())),
            Copies::Refused => None,
        };
        if let Some(copy) = copy {
            // Ended, or activity to record: the read below decides and writes.
            let ended = self.expiry.ended_by(copy.created_at, copy.last_seen, now);
            if ended.is_none() && !self.expiry.touch_due(copy.last_seen, now) {
                return Ok(Some(copy));
            }
        }
        // Boxed: the read's future is large, and most requests never need it.
        Box::pin(self.read(reference, now)).await
    }

    /// A session read from Redis (then cached, when a cache is in use).
    async fn read(
        &self,
        reference: &SessionRef,
        now: UnixMs,
    ) -> Result<Option<LoadedSession>, Error> {
        let id = reference.storage_id();
        let cache = self.events.as_ref().map(|e| &e.cache);
        let ticket = cache.map(|c| c.ticket());
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.session(id))
            .arg(&["data", "created", "seen", "ver"]);
        let (data, created, seen, version): (
            Option<Vec<u8>>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        ) = self.query(&cmd).await?;
        let (Some(data), Some(created), Some(seen)) = (data, created, seen) else {
            return Ok(None);
        };
        if let Some(ended) = self.expiry.ended_by(created, seen, now) {
            // Counted once, by whoever deleted it.
            if self.delete(id).await? {
                self.redis.metrics().session_ended(match ended {
                    Ended::Idle => SessionEnd::Idle,
                    Ended::Absolute => SessionEnd::Absolute,
                });
            }
            return Ok(None);
        }
        let short = &id[..8];
        let Some(plain) = reference.open(&data) else {
            tracing::warn!(session = %short, "session record does not decrypt");
            return Ok(None);
        };
        let record: SessionRecord = match serde_json::from_slice(&plain) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(session = %short, "unreadable session record: {e}");
                return Ok(None);
            }
        };
        let mut session = LoadedSession {
            reference: reference.clone(),
            record: Arc::new(record),
            created_at: created,
            last_seen: seen,
            version: version.unwrap_or(0),
        };
        if self.expiry.touch_due(seen, now) {
            // Announced: the copies (this one's included) are read again next time.
            match self.touch(id, created, now).await {
                Ok(true) => session.last_seen = now,
                Ok(false) => return Ok(None), // deleted meanwhile (logout elsewhere)
                Err(e) => tracing::warn!("could not record session activity: {e}"),
            }
        } else if let (Some(cache), Some(ticket)) = (cache, ticket) {
            cache.insert(&session, ticket, std::time::Instant::now());
        }
        Ok(Some(session))
    }

    /// `WAIT`'s timeout, when this write should wait for a replica.
    fn replica_wait(&self) -> Option<u64> {
        let paused = self
            .wait_paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until);
        (self.redis.has_replicas() && !paused)
            .then(|| (self.redis.timeout().as_millis() as u64 / 2).max(1))
    }

    /// One compare-and-set of the record, then (with replicas) `WAIT 1`.
    async fn save_once(&self, id: &str, expected: u64, blob: &[u8]) -> Result<i64, Error> {
        let wait = self.replica_wait();
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(UPDATE)
            .arg(1)
            .arg(self.keys.session(id))
            .arg(expected)
            .arg(blob)
            .arg(self.keys.session_events())
            .arg(id);
        if let Some(ms) = wait {
            pipe.cmd("WAIT").arg(1).arg(ms);
        }
        let replies: Vec<i64> = self.pipeline(&pipe).await?;
        let outcome = replies.first().copied().unwrap_or(-1);
        if let (Some(ms), Some(0)) = (wait, replies.get(1)) {
            tracing::warn!(
                "no replica acknowledged a token save within {ms} ms; \
                 not waiting for replicas for {}s",
                WAIT_PAUSE_AFTER_NO_ACK.as_secs()
            );
            *self
                .wait_paused_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + WAIT_PAUSE_AFTER_NO_ACK);
        }
        Ok(outcome)
    }
}

impl Store for RedisStore {
    async fn create_session(
        &self,
        record: &SessionRecord,
        now: UnixMs,
    ) -> Result<SessionRef, Error> {
        let reference = SessionRef::generate();
        let id = reference.storage_id();
        let key = self.keys.session(id);
        let blob = reference.seal(&serialize(record)?);
        let ttl = (self.expiry.idle.min(self.expiry.absolute) + EXPIRED_KEPT).as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("data")
            .arg(blob)
            .arg("created")
            .arg(now)
            .arg("seen")
            .arg(now)
            .arg("ver")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl)
            .ignore();
        self.pipeline::<()>(&pipe).await?;
        self.index(id, record).await?;
        self.redis.metrics().session_created();
        Ok(reference)
    }

    async fn load_session(
        &self,
        reference: &SessionRef,
        now: UnixMs,
    ) -> Result<Option<LoadedSession>, Error> {
        self.load(reference, now, Copies::Allowed).await
    }

    async fn load_session_latest(
        &self,
        reference: &SessionRef,
        now: UnixMs,
    ) -> Result<Option<LoadedSession>, Error> {
        self.load(reference, now, Copies::Refused).await
    }

    async fn session_alive(&self, reference: &SessionRef, now: UnixMs) -> Result<Liveness, Error> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.session(reference.storage_id()))
            .arg(&["created", "seen"]);
        let (created, seen): (Option<u64>, Option<u64>) = self.query(&cmd).await?;
        Ok(match (created, seen) {
            (Some(created), Some(seen)) if self.expiry.remaining(created, seen, now).is_some() => {
                Liveness::Live
            }
            _ => Liveness::Ended,
        })
    }

    async fn update_session(
        &self,
        session: &LoadedSession,
        record: &SessionRecord,
    ) -> Result<UpdateOutcome, Error> {
        let id = session.reference.storage_id();
        let blob = session.reference.seal(&serialize(record)?);
        self.forget(id);
        let outcome = self.save_once(id, session.version, &blob).await;
        self.forget(id);
        let outcome = outcome?;
        Ok(match outcome {
            1 => UpdateOutcome::Updated,
            0 => UpdateOutcome::Conflict,
            _ => UpdateOutcome::Gone,
        })
    }

    async fn end_session(&self, session: &LoadedSession) -> Result<(), Error> {
        let id = session.reference.storage_id();
        self.delete(id).await?;
        self.unindex(id, &session.record).await
    }

    async fn end_session_if_unchanged(&self, session: &LoadedSession) -> Result<EndOutcome, Error> {
        let id = session.reference.storage_id();
        let key = self.keys.session(id);
        let mut call = END_IF_UNCHANGED.key(&key);
        call.arg(session.version)
            .arg(self.keys.session_events())
            .arg(id);
        self.forget(id);
        let outcome = self.script::<i64>(&call).await;
        self.forget(id);
        let outcome = outcome?;
        Ok(match outcome {
            1 => {
                // The index sets live in other Cluster slots; a stale entry is harmless.
                if let Err(e) = self.unindex(id, &session.record).await {
                    tracing::warn!("ended session left in its index sets: {e}");
                }
                EndOutcome::Ended
            }
            0 => EndOutcome::Changed,
            _ => EndOutcome::Gone,
        })
    }

    async fn delete_session(&self, reference: &SessionRef) -> Result<(), Error> {
        self.delete(reference.storage_id()).await.map(|_| ())
    }

    async fn end_sessions_of(&self, scope: LogoutScope<'_>) -> Result<usize, Error> {
        let index = match scope {
            LogoutScope::ProviderSession(sid) => self.keys.provider_sessions(sid),
            LogoutScope::User(sub) => self.keys.user_sessions(sub),
        };
        let mut members = redis::cmd("SMEMBERS");
        members.arg(&index);
        let ids: Vec<String> = self.query(&members).await?;
        // One deletion per session: they live in different Cluster slots.
        let deleted = try_join_all(ids.iter().map(|id| self.delete(id))).await?;
        let mut del_index = redis::cmd("DEL");
        del_index.arg(&index);
        self.query::<i64>(&del_index).await?;
        Ok(deleted.iter().filter(|d| **d).count())
    }

    async fn try_lock_refresh(
        &self,
        reference: &SessionRef,
        ttl: Duration,
    ) -> Result<Option<RefreshLock>, Error> {
        let key = self.keys.refresh_lock(reference.storage_id());
        let token = random_token(16);
        let taken = self.set_nx(&key, &token, ttl).await?;
        Ok(taken.then(|| RefreshLock {
            key,
            token,
            expires: Instant::now() + ttl,
        }))
    }

    async fn unlock_refresh(&self, lock: RefreshLock) {
        let mut call = UNLOCK.key(&lock.key);
        call.arg(&lock.token);
        let Err(e) = self.script::<i64>(&call).await else {
            return;
        };
        // Redis is away (a failover?): keep trying in the background while the lock
        // would still block this session's refreshes.
        tracing::warn!("could not release a refresh lock, retrying in the background: {e}");
        let redis = self.redis.clone();
        actix_web::rt::spawn(async move {
            let mut call = UNLOCK.key(&lock.key);
            call.arg(&lock.token);
            while Instant::now() + RETRY_PAUSE < lock.expires {
                tokio::time::sleep(RETRY_PAUSE).await;
                let released = redis
                    .run(|mut c| {
                        let call = &call;
                        async move { call.invoke_async::<i64>(&mut c).await }
                    })
                    .await;
                if released.is_ok() {
                    return;
                }
            }
        });
    }

    async fn save_login(
        &self,
        state: &str,
        login: &LoginState,
        ttl: Duration,
    ) -> Result<(), Error> {
        let key = self.keys.login(state);
        let plain = login
            .encode()
            .ok_or_else(|| Error::Internal("login state fields too long".into()))?;
        let blob = seal(state.as_bytes(), LOGIN_DOMAIN, &plain, key.as_bytes());
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key)
            .arg(blob)
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        self.query(&cmd).await
    }

    async fn take_login(&self, state: &str) -> Result<Option<LoginState>, Error> {
        let key = self.keys.login(state);
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(&key);
        let blob: Option<Vec<u8>> = self.query(&cmd).await?;
        Ok(blob
            .and_then(|b| open(state.as_bytes(), LOGIN_DOMAIN, &b, key.as_bytes()))
            .and_then(|p| LoginState::decode(&p)))
    }

    async fn mark_logout_token_used(&self, jti: &str, window: Duration) -> Result<bool, Error> {
        self.set_nx(&self.keys.logout_token(jti), "1", window).await
    }

    async fn logout_token_used(&self, jti: &str) -> Result<bool, Error> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.keys.logout_token(jti));
        let exists: i64 = self.query(&cmd).await?;
        Ok(exists == 1)
    }

    fn watch(&self, reference: &SessionRef) -> SessionWatch {
        match &self.events {
            Some(events) => events.watch(reference.storage_id()),
            None => SessionWatch::none(),
        }
    }

    async fn ping(&self) -> Result<(), Error> {
        // PING reaches every master of a cluster; DEL of a key that never exists
        // is a write command that changes nothing: it proves writes are served
        // (a paused or read-only Redis still answers PING).
        let mut del = redis::cmd("DEL");
        del.arg(self.keys.readiness());
        self.redis
            .run(|mut c| {
                let del = &del;
                async move {
                    redis::cmd("PING").query_async::<String>(&mut c).await?;
                    del.query_async::<i64>(&mut c).await
                }
            })
            .await
            .map(|_| ())
    }
}

fn serialize(record: &SessionRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(record).map_err(|e| Error::Internal(format!("serialize session: {e}")))
}
