//! An in-process copy of recently used sessions, so that a request of a known
//! session needs no Redis round trip, no decryption and no JSON parsing.
//!
//! Correct across instances by construction, not by a time-to-live:
//!
//! - every write to a session (refresh, logout, back-channel logout, activity) is
//!   announced on a Redis pub/sub channel ([`super::events`]); each instance drops
//!   its copy when the announcement arrives;
//! - the subscriber sends a `PING` on its connection every [`super::events::PING_EVERY`]:
//!   Redis answers in order, so when the answer to a `PING` sent at time `t` has
//!   arrived (and the messages before it are applied), every write made before `t`
//!   has been applied here ([`SessionCache::confirm`]). A copy is used only while the
//!   last such `t` is less than [`MAX_STALENESS`] old; otherwise (subscriber down,
//!   Redis slow) every request reads Redis, as without a cache;
//! - a session read from Redis is put in only if no announcement about it arrived
//!   since the read began (the epoch check in [`SessionCache::insert`]), so a read
//!   racing a write cannot put back what the write replaced.
//!
//! So a logout, a back-channel logout or a refreshed token on any instance takes
//! effect here within [`MAX_STALENESS`] plus the announcement's trip (well under a
//! second); idle and absolute expiry are computed from the copy with the same rules
//! as from Redis. A copy also carries the session's full reference (id and secret):
//! it is only handed to a request whose cookie carries exactly that reference.

use super::LoadedSession;
use crate::session::SessionRef;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How old the last confirmation may be for copies to be used.
pub const MAX_STALENESS: Duration = Duration::from_millis(500);
/// How long an announcement is remembered (longer than any read can take).
const REMEMBER_ANNOUNCEMENTS: Duration = Duration::from_secs(5);

/// The cache, shared by every worker of the process.
pub struct SessionCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Counts announcements (and clears); a read notes it when it begins.
    epoch: u64,
    entries: HashMap<String, Slot>,
    /// The send time of the last `PING` whose answer arrived with every message
    /// before it applied.
    confirmed: Option<Instant>,
    last_sweep: Option<Instant>,
}

enum Slot {
    Copy {
        session: Box<LoadedSession>,
        used: Instant,
        /// The epoch its read began at.
        epoch: u64,
    },
    /// An announcement arrived for this session at `epoch`.
    Announced { epoch: u64, at: Instant },
}

/// When a read from Redis began, for [`SessionCache::insert`].
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

impl SessionCache {
    /// A cache of at most `capacity` sessions (0: nothing is cached).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether copies may be used now (confirmed recently enough).
    pub fn usable(&self, now: Instant) -> bool {
        self.capacity > 0 && Self::fresh(&self.lock(), now)
    }

    fn fresh(inner: &Inner, now: Instant) -> bool {
        inner
            .confirmed
            .is_some_and(|t| now.saturating_duration_since(t) < MAX_STALENESS)
    }

    /// The copy of the session `reference` names, if there is one and copies may be
    /// used. The reference must match entirely (the secret too).
    pub fn get(&self, reference: &SessionRef, now: Instant) -> Option<LoadedSession> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.lock();
        if !Self::fresh(&inner, now) {
            return None;
        }
        match inner.entries.get_mut(reference.storage_id()) {
            Some(Slot::Copy { session, used, .. }) if session.reference == *reference => {
                *used = now;
                Some((**session).clone())
            }
            _ => None,
        }
    }

    /// Notes that a read from Redis begins.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.lock().epoch)
    }

    /// Keeps `session` (read with `ticket`) unless an announcement about it arrived
    /// since the read began, or a copy from a later read or of a later version is
    /// already kept.
    pub fn insert(&self, session: &LoadedSession, ticket: ReadTicket, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        let id = session.reference.storage_id();
        let newer_known = match inner.entries.get(id) {
            Some(Slot::Announced { epoch, .. }) => *epoch > ticket.0,
            Some(Slot::Copy {
                session: kept,
                epoch,
                ..
            }) => *epoch > ticket.0 || kept.version > session.version,
            None => false,
        };
        if newer_known {
            return;
        }
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(id) {
            Self::make_room(&mut inner, self.capacity);
        }
        inner.entries.insert(
            id.to_string(),
            Slot::Copy {
                session: Box::new(session.clone()),
                used: now,
                epoch: ticket.0,
            },
        );
    }

    /// Drops the copy of session `id`: it changed or ended (an announcement).
    pub fn announce(&self, id: &str, now: Instant) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let epoch = inner.epoch;
        inner
            .entries
            .insert(id.to_string(), Slot::Announced { epoch, at: now });
        if inner.entries.len() > self.capacity.max(1) * 2 {
            Self::make_room(&mut inner, self.capacity);
        }
    }

    /// Drops the copy of session `id`: this instance wrote it (and announces it to
    /// the others); reads that began before the write must not put it back either.
    pub fn forget(&self, id: &str) {
        self.announce(id, Instant::now());
    }

    /// Every write announced before `sent` has been applied.
    pub fn confirm(&self, sent: Instant) {
        let mut inner = self.lock();
        if inner.confirmed.is_none_or(|t| t < sent) {
            inner.confirmed = Some(sent);
        }
        let sweep_due = inner
            .last_sweep
            .is_none_or(|t| sent.saturating_duration_since(t) > REMEMBER_ANNOUNCEMENTS);
        if sweep_due {
            inner.last_sweep = Some(sent);
            inner.entries.retain(|_, slot| match slot {
                Slot::Announced { at, .. } => {
                    sent.saturating_duration_since(*at) < REMEMBER_ANNOUNCEMENTS
                }
                Slot::Copy { .. } => true,
            });
        }
    }

    /// Announcements may have been missed (the subscriber reconnected): drop every
    /// copy, and use none until the next confirmation.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.entries.clear();
        inner.confirmed = None;
    }

    /// How many sessions are kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|s| matches!(s, Slot::Copy { .. }))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the least recently used half of the copies (announcements stay: they
    /// protect reads in flight).
    fn make_room(inner: &mut Inner, capacity: usize) {
        let mut used: Vec<(Instant, String)> = inner
            .entries
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Copy { used, .. } => Some((*used, id.clone())),
                Slot::Announced { .. } => None,
            })
            .collect();
        if used.len() < capacity {
            return;
        }
        used.sort();
        for (_, id) in used.into_iter().take(capacity / 2 + 1) {
            inner.entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Sensitive;
    use crate::session::{SessionRecord, Tokens};

    fn session(reference: SessionRef) -> LoadedSession {
        LoadedSession {
            reference,
            record: std::sync::Arc::new(SessionRecord {
                sub: "u".into(),
                sid: None,
                claims: Default::default(),
                tokens: Tokens {
                    access_token: Sensitive::new("a"),
                    access_token_expires_at: None,
                    refresh_token: None,
                    id_token: Sensitive::new("i"),
                    scope: None,
                    resource_tokens: Default::default(),
                },
                resources: Default::default(),
                dpop_key: None,
            }),
            created_at: 0,
            last_seen: 0,
            version: 1,
        }
    }

    #[test]
    fn copies_are_used_only_while_the_subscriber_confirmed_recently() {
        let cache = SessionCache::new(10);
        let t0 = Instant::now();
        let r = SessionRef::generate();
        cache.insert(&session(r.clone()), cache.ticket(), t0);
        assert!(cache.get(&r, t0).is_none(), "never confirmed");
        cache.confirm(t0);
        assert!(cache.get(&r, t0 + Duration::from_millis(100)).is_some());
        assert!(
            cache.get(&r, t0 + MAX_STALENESS).is_none(),
            "confirmation too old"
        );
        cache.confirm(t0 + MAX_STALENESS);
        assert!(cache.get(&r, t0 + MAX_STALENESS).is_some());
        cache.clear();
        assert!(cache.get(&r, t0 + MAX_STALENESS).is_none(), "cleared");
    }

    #[test]
    fn an_announcement_drops_the_copy_and_beats_a_read_that_began_before_it() {
        let cache = SessionCache::new(10);
        let now = Instant::now();
        cache.confirm(now);
        let r = SessionRef::generate();
        cache.insert(&session(r.clone()), cache.ticket(), now);
        cache.announce(r.storage_id(), now);
        assert!(cache.get(&r, now).is_none());
        // A read that began before the announcement does not put the old copy back...
        let before = ReadTicket(0);
        cache.insert(&session(r.clone()), before, now);
        assert!(cache.get(&r, now).is_none());
        // ...one that began after it does.
        cache.insert(&session(r.clone()), cache.ticket(), now);
        assert!(cache.get(&r, now).is_some());
    }

    #[test]
    fn a_copy_is_handed_only_to_the_full_reference_and_never_beyond_capacity() {
        let cache = SessionCache::new(4);
        let now = Instant::now();
        cache.confirm(now);
        let r = SessionRef::generate();
        cache.insert(&session(r.clone()), cache.ticket(), now);
        // Same id, another secret (a forged cookie can't make one, but the cache
        // must not rely on that).
        // (One bit of the secret's last byte: flipping a base64 character instead made
        // a non-canonical encoding, which decodes to nothing, one time in four.)
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let mut bytes = URL_SAFE_NO_PAD.decode(r.encode()).unwrap();
        bytes[63] ^= 1;
        let other = SessionRef::decode(&URL_SAFE_NO_PAD.encode(bytes)).unwrap();
        assert_eq!(other.storage_id(), r.storage_id());
        assert!(cache.get(&other, now).is_none());
        for _ in 0..20 {
            cache.insert(&session(SessionRef::generate()), cache.ticket(), now);
            assert!(cache.len() <= 4);
        }
        assert!(SessionCache::new(0).get(&r, now).is_none());
    }
}
