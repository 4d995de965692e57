//! The session store on Redis.
//!
//! One Redis hash per session, under `<prefix>session:{<sha256 of the session id>}`
//! (the braces are a Redis Cluster hash tag, so every key of one session lands in
//! one slot). Fields: `data` (the [`SessionRecord`] as JSON, sealed under the
//! per-session secret), `created` and `seen` (Unix ms, needed for the expiry rules
//! and not secret), `ver` (bumped on every rewrite, for compare-and-set updates).
//! The key's TTL always equals the time left under the idle and absolute timeouts.

use crate::error::Error;
use crate::session::backend::RedisHandle;
use crate::session::crypto::SessionRef;
use crate::session::expiry::ExpiryPolicy;
use crate::session::record::SessionRecord;
use crate::time::UnixMs;
use redis::Script;
use std::sync::LazyLock;

/// Moves `seen` forward and re-arms the TTL, only if the session still exists.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then
            local seen = tonumber(redis.call('HGET', KEYS[1], 'seen') or '0')
            if tonumber(ARGV[1]) > seen then
              redis.call('HSET', KEYS[1], 'seen', ARGV[1])
              redis.call('PEXPIRE', KEYS[1], ARGV[2])
            end
            return 1
          end
          return 0",
    )
});

/// Replaces `data` and bumps `ver`, only if `ver` is still the one the caller read.
/// The TTL is left alone (a rewrite is not activity). 1: updated, 0: someone else
/// rewrote it first, -1: the session is gone.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
          local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
          if ver ~= ARGV[1] then return 0 end
          redis.call('HSET', KEYS[1], 'data', ARGV[2], 'ver', tonumber(ver) + 1)
          return 1",
    )
});

/// Deletes a lock only if it still holds the caller's token (it may have expired
/// and been taken by another instance meanwhile).
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

/// What a compare-and-set [`SessionStore::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated,
    /// Another writer got there first; re-read the session.
    Conflict,
    /// The session no longer exists (logout, expiry).
    Gone,
}

/// A held per-session lock; release it with [`SessionStore::unlock`].
#[derive(Debug)]
pub struct SessionLock {
    key: String,
    token: String,
}

/// A session read from Redis, with the facts the expiry rules need.
#[derive(Debug, Clone)]
pub struct LoadedSession {
    pub reference: SessionRef,
    pub record: SessionRecord,
    pub created_at: UnixMs,
    pub last_seen: UnixMs,
    pub version: u64,
}

pub struct SessionStore {
    redis: RedisHandle,
    prefix: String,
    expiry: ExpiryPolicy,
}

impl SessionStore {
    pub fn new(redis: RedisHandle, prefix: impl Into<String>, expiry: ExpiryPolicy) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
            expiry,
        }
    }

    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    pub fn expiry(&self) -> &ExpiryPolicy {
        &self.expiry
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of a session.
    pub fn key(&self, reference: &SessionRef) -> String {
        self.key_of(&reference.storage_id())
    }

    /// The Redis key of the session whose storage id is `id`.
    fn key_of(&self, id: &str) -> String {
        format!("{}session:{{{id}}}", self.prefix)
    }

    /// Saves a new session under a fresh random reference (never a caller-chosen one,
    /// so a session id cannot be fixed by an attacker).
    pub async fn create(&self, record: &SessionRecord, now: UnixMs) -> Result<SessionRef, Error> {
        let reference = SessionRef::generate();
        let key = self.key(&reference);
        let blob = reference.seal(&serialize(record)?);
        let ttl = self.expiry.idle.min(self.expiry.absolute).as_millis() as u64;
        self.redis
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
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
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        self.index(&reference, record).await?;
        Ok(reference)
    }

    fn index_key(&self, kind: &str, value: &str) -> String {
        let digest =
            crate::session::crypto::digest_hex(b"spa-bff/session-index/v1", value.as_bytes());
        format!("{}{kind}:{{{digest}}}", self.prefix)
    }

    /// The index sets `record` belongs to: its user's, and its provider session's.
    fn index_keys(&self, record: &SessionRecord) -> Vec<String> {
        let mut keys = vec![self.index_key("sub", &record.sub)];
        keys.extend(record.sid.as_deref().map(|sid| self.index_key("sid", sid)));
        keys
    }

    /// Records which sessions belong to a provider session (`sid`) and to a user
    /// (`sub`), so a back-channel logout can find them. Entries of sessions that
    /// ended meanwhile are harmless; the sets expire with the absolute timeout.
    async fn index(&self, reference: &SessionRef, record: &SessionRecord) -> Result<(), Error> {
        let id = reference.storage_id();
        let ttl = self.expiry.absolute.as_millis() as u64;
        let keys = self.index_keys(record);
        self.redis
            .run(|mut c| async move {
                // One slot per index key (Redis Cluster): no MULTI across them.
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("SADD").arg(key).arg(&id).ignore();
                    pipe.cmd("PEXPIRE").arg(key).arg(ttl).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    /// Ends `session`: deletes it and its index entries.
    pub async fn end(&self, session: &LoadedSession) -> Result<(), Error> {
        let key = self.key(&session.reference);
        let id = session.reference.storage_id();
        let indexes = self.index_keys(&session.record);
        self.redis
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(&key).ignore();
                for index in &indexes {
                    pipe.cmd("SREM").arg(index).arg(&id).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    /// Ends every session of provider session `sid` (or, without one, of user
    /// `sub`). Returns how many sessions were deleted.
    pub async fn delete_for_logout(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<usize, Error> {
        let index = match (sid, sub) {
            (Some(sid), _) => self.index_key("sid", sid),
            (None, Some(sub)) => self.index_key("sub", sub),
            (None, None) => return Ok(0),
        };
        let idx = index.clone();
        let ids: Vec<String> = self
            .redis
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(&idx).query_async(&mut c).await })
            .await?;
        let keys: Vec<String> = ids.iter().map(|id| self.key_of(id)).collect();
        let deleted: Vec<usize> = self
            .redis
            .run(|mut c| async move {
                // One DEL per key: sessions live in different Cluster slots.
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("DEL").arg(key);
                }
                pipe.cmd("DEL").arg(&index).ignore();
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(deleted.iter().sum())
    }

    /// True the first time `what` is seen within `ttl` (replay protection).
    pub async fn first_use(
        &self,
        kind: &str,
        what: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, Error> {
        self.set_nx(self.index_key(kind, what), "1".into(), ttl)
            .await
    }

    /// `SET key value NX PX ttl`: whether the key was set (it did not exist).
    async fn set_nx(
        &self,
        key: String,
        value: String,
        ttl: std::time::Duration,
    ) -> Result<bool, Error> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let set: Option<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// The live session for `reference`, or `None` when it does not exist, has
    /// expired (it is then deleted), or does not decrypt. Records the activity.
    pub async fn load(
        &self,
        reference: &SessionRef,
        now: UnixMs,
    ) -> Result<Option<LoadedSession>, Error> {
        let key = self.key(reference);
        let k = key.clone();
        let (data, created, seen, version): (
            Option<Vec<u8>>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        ) = self
            .redis
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&k)
                    .arg(&["data", "created", "seen", "ver"])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let (Some(data), Some(created), Some(seen)) = (data, created, seen) else {
            return Ok(None);
        };
        if self.expiry.remaining(created, seen, now).is_none() {
            self.delete(reference).await?;
            return Ok(None);
        }
        let Some(plain) = reference.open(&data) else {
            tracing::warn!(session = %&reference.storage_id()[..8], "session record does not decrypt");
            return Ok(None);
        };
        let record: SessionRecord = match serde_json::from_slice(&plain) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(session = %&reference.storage_id()[..8], "unreadable session record: {e}");
                return Ok(None);
            }
        };
        let mut last_seen = seen;
        if self.expiry.touch_due(seen, now) {
            let ttl = self
                .expiry
                .remaining(created, now, now)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(1);
            let touched = self
                .redis
                .run(|mut c| async move {
                    TOUCH
                        .key(&key)
                        .arg(now)
                        .arg(ttl.max(1))
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            match touched {
                Ok(1) => last_seen = now,
                Ok(_) => return Ok(None), // deleted meanwhile (logout elsewhere)
                Err(e) => tracing::warn!("could not record session activity: {e}"),
            }
        }
        Ok(Some(LoadedSession {
            reference: reference.clone(),
            record,
            created_at: created,
            last_seen,
            version: version.unwrap_or(0),
        }))
    }

    /// Rewrites the record of `session` if nobody rewrote it since it was read
    /// (its `version`). Used by token refresh, where a lost update would lose a
    /// rotated refresh token.
    pub async fn update(
        &self,
        session: &LoadedSession,
        record: &SessionRecord,
    ) -> Result<UpdateOutcome, Error> {
        let key = self.key(&session.reference);
        let blob = session.reference.seal(&serialize(record)?);
        let expected = session.version;
        let outcome = self
            .redis
            .run(|mut c| async move {
                UPDATE
                    .key(&key)
                    .arg(expected)
                    .arg(blob)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(match outcome {
            1 => UpdateOutcome::Updated,
            0 => UpdateOutcome::Conflict,
            _ => UpdateOutcome::Gone,
        })
    }

    /// The key of a session's refresh lock (same hash tag, so same Cluster slot).
    fn lock_key(&self, reference: &SessionRef) -> String {
        format!("{}:lock", self.key(reference))
    }

    /// Tries to take the session's lock for `ttl` (`SET NX PX` with a random
    /// token). `None` when another holder has it.
    pub async fn try_lock(
        &self,
        reference: &SessionRef,
        ttl: std::time::Duration,
    ) -> Result<Option<SessionLock>, Error> {
        let key = self.lock_key(reference);
        let token = crate::session::crypto::random_token(16);
        let taken = self.set_nx(key.clone(), token.clone(), ttl).await?;
        Ok(taken.then_some(SessionLock { key, token }))
    }

    /// Releases a lock if it is still ours. Errors are logged: the TTL ends it anyway.
    pub async fn unlock(&self, lock: SessionLock) {
        let SessionLock { key, token } = lock;
        let result = self
            .redis
            .run(|mut c| async move {
                UNLOCK
                    .key(&key)
                    .arg(&token)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("could not release a session lock (it expires by itself): {e}");
        }
    }

    /// Removes the session. Deleting a missing session is not an error.
    pub async fn delete(&self, reference: &SessionRef) -> Result<(), Error> {
        let key = self.key(reference);
        self.redis
            .run(
                |mut c| async move { redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await },
            )
            .await
            .map(|_| ())
    }
}

fn serialize(record: &SessionRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(record).map_err(|e| Error::Internal(format!("serialize session: {e}")))
}
