//! [`Store`] on Redis.
//!
//! A session is one hash (see [`keys`](super::keys)): `data` is the
//! [`SessionRecord`] as JSON sealed under the per-session secret only the cookie
//! carries; `created` and `seen` (Unix ms) feed the expiry rules and are not secret;
//! `ver` is bumped on every rewrite for compare-and-set updates. The key's TTL always
//! equals the time left under the idle and absolute timeouts.
//!
//! Every command is single-key or pipelined per key (no `MULTI` across hash tags),
//! so the layout works unchanged on Redis Cluster.

use super::connection::RedisHandle;
use super::keys::{Keys, LOGIN_DOMAIN};
use super::{EndOutcome, Liveness, LoadedSession, LogoutScope, RefreshLock, Store, UpdateOutcome};
use crate::error::Error;
use crate::session::crypto::{open, random_token, seal};
use crate::session::{ExpiryPolicy, LoginState, SessionRecord, SessionRef};
use crate::time::UnixMs;
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

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

/// Deletes the session only if `ver` is still the one the caller read.
/// 1: deleted, 0: someone else rewrote it first, -1: the session is gone.
static END_IF_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
          local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
          if ver ~= ARGV[1] then return 0 end
          redis.call('DEL', KEYS[1])
          return 1",
    )
});

/// Deletes a lock only if it still holds the caller's token.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

/// Cheap to clone: clones share one connection (a background save outlives the
/// request that started it).
#[derive(Clone)]
pub struct RedisStore {
    redis: Arc<RedisHandle>,
    keys: Keys,
    expiry: ExpiryPolicy,
}

impl RedisStore {
    pub fn new(redis: RedisHandle, prefix: impl Into<String>, expiry: ExpiryPolicy) -> Self {
        Self {
            redis: Arc::new(redis),
            keys: Keys::new(prefix),
            expiry,
        }
    }

    /// Removes a session's storage id from its index sets.
    async fn unindex(&self, id: &str, record: &SessionRecord) -> Result<(), Error> {
        let indexes = self.index_keys(record);
        self.redis
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for index in &indexes {
                    pipe.cmd("SREM").arg(index).arg(id).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
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
        let keys = self.index_keys(record);
        self.redis
            .run(|mut c| async move {
                // One slot per index key (Redis Cluster): no MULTI across them.
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("SADD").arg(key).arg(id).ignore();
                    pipe.cmd("PEXPIRE").arg(key).arg(ttl).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    /// `SET key value NX PX ttl`: whether the key was set (it did not exist).
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, Error> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let set: Option<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Moves the session's `seen` to `now` and re-arms its TTL; `false` when the
    /// session was deleted meanwhile.
    async fn touch(&self, key: &str, created: UnixMs, now: UnixMs) -> Result<bool, Error> {
        let ttl = self
            .expiry
            .remaining(created, now, now)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let touched = self
            .redis
            .run(|mut c| async move {
                TOUCH
                    .key(key)
                    .arg(now)
                    .arg(ttl.max(1))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(touched == 1)
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
        let key = self.keys.session(&id);
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
        self.index(&id, record).await?;
        Ok(reference)
    }

    async fn load_session(
        &self,
        reference: &SessionRef,
        now: UnixMs,
    ) -> Result<Option<LoadedSession>, Error> {
        let key = self.keys.session(&reference.storage_id());
        let (data, created, seen, version): (
            Option<Vec<u8>>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        ) = self
            .redis
            .run(|mut c| {
                let key = &key;
                async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(&["data", "created", "seen", "ver"])
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let (Some(data), Some(created), Some(seen)) = (data, created, seen) else {
            return Ok(None);
        };
        if self.expiry.remaining(created, seen, now).is_none() {
            self.delete_session(reference).await?;
            return Ok(None);
        }
        let short = &reference.storage_id()[..8];
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
        let mut last_seen = seen;
        if self.expiry.touch_due(seen, now) {
            match self.touch(&key, created, now).await {
                Ok(true) => last_seen = now,
                Ok(false) => return Ok(None), // deleted meanwhile (logout elsewhere)
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

    async fn session_alive(&self, reference: &SessionRef, now: UnixMs) -> Result<Liveness, Error> {
        let key = self.keys.session(&reference.storage_id());
        let (created, seen): (Option<u64>, Option<u64>) = self
            .redis
            .run(|mut c| {
                let key = &key;
                async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(&["created", "seen"])
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
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
        let key = self.keys.session(&session.reference.storage_id());
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

    async fn end_session(&self, session: &LoadedSession) -> Result<(), Error> {
        let id = session.reference.storage_id();
        let key = self.keys.session(&id);
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

    async fn end_session_if_unchanged(&self, session: &LoadedSession) -> Result<EndOutcome, Error> {
        let id = session.reference.storage_id();
        let key = self.keys.session(&id);
        let expected = session.version;
        let outcome = self
            .redis
            .run(|mut c| async move {
                END_IF_UNCHANGED
                    .key(&key)
                    .arg(expected)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(match outcome {
            1 => {
                // The index sets live in other Cluster slots; a stale entry is harmless.
                if let Err(e) = self.unindex(&id, &session.record).await {
                    tracing::warn!("ended session left in its index sets: {e}");
                }
                EndOutcome::Ended
            }
            0 => EndOutcome::Changed,
            _ => EndOutcome::Gone,
        })
    }

    async fn delete_session(&self, reference: &SessionRef) -> Result<(), Error> {
        let key = self.keys.session(&reference.storage_id());
        self.redis
            .run(
                |mut c| async move { redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await },
            )
            .await
            .map(|_| ())
    }

    async fn end_sessions_of(&self, scope: LogoutScope<'_>) -> Result<usize, Error> {
        let index = match scope {
            LogoutScope::ProviderSession(sid) => self.keys.provider_sessions(sid),
            LogoutScope::User(sub) => self.keys.user_sessions(sub),
        };
        let ids: Vec<String> = self
            .redis
            .run(|mut c| {
                let index = &index;
                async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await }
            })
            .await?;
        let sessions: Vec<String> = ids.iter().map(|id| self.keys.session(id)).collect();
        let deleted: Vec<usize> = self
            .redis
            .run(|mut c| async move {
                // One DEL per key: sessions live in different Cluster slots.
                let mut pipe = redis::pipe();
                for key in &sessions {
                    pipe.cmd("DEL").arg(key);
                }
                pipe.cmd("DEL").arg(&index).ignore();
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(deleted.iter().sum())
    }

    async fn try_lock_refresh(
        &self,
        reference: &SessionRef,
        ttl: Duration,
    ) -> Result<Option<RefreshLock>, Error> {
        let key = self.keys.refresh_lock(&reference.storage_id());
        let token = random_token(16);
        let taken = self.set_nx(&key, &token, ttl).await?;
        Ok(taken.then_some(RefreshLock { key, token }))
    }

    async fn unlock_refresh(&self, lock: RefreshLock) {
        let RefreshLock { key, token } = lock;
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
            tracing::warn!("could not release a refresh lock (it expires by itself): {e}");
        }
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
        let ttl_ms = ttl.as_millis() as u64;
        self.redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(blob)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn take_login(&self, state: &str) -> Result<Option<LoginState>, Error> {
        let key = self.keys.login(state);
        let blob: Option<Vec<u8>> = self
            .redis
            .run(|mut c| {
                let key = &key;
                async move { redis::cmd("GETDEL").arg(key).query_async(&mut c).await }
            })
            .await?;
        Ok(blob
            .and_then(|b| open(state.as_bytes(), LOGIN_DOMAIN, &b, key.as_bytes()))
            .and_then(|p| LoginState::decode(&p)))
    }

    async fn mark_logout_token_used(&self, jti: &str, window: Duration) -> Result<bool, Error> {
        self.set_nx(&self.keys.logout_token(jti), "1", window).await
    }

    async fn logout_token_used(&self, jti: &str) -> Result<bool, Error> {
        let key = self.keys.logout_token(jti);
        let exists: i64 = self
            .redis
            .run(|mut c| async move { redis::cmd("EXISTS").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(exists == 1)
    }

    async fn ping(&self) -> Result<(), Error> {
        self.redis.ping().await
    }
}

fn serialize(record: &SessionRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(record).map_err(|e| Error::Internal(format!("serialize session: {e}")))
}
