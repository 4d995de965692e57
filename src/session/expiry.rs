//! When a session ends: after `idle` without a request, and in any case `absolute`
//! after it was created. Times are passed in, so every rule is unit-tested.

use crate::time::UnixMs;
use std::time::Duration;

/// Which timeout ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `idle` passed without a request.
    Idle,
    /// `absolute` passed since the login.
    Absolute,
}

#[derive(Debug, Clone, Copy)]
pub struct ExpiryPolicy {
    pub idle: Duration,
    pub absolute: Duration,
}

impl ExpiryPolicy {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self { idle, absolute }
    }

    pub fn absolute_expires_at(&self, created: UnixMs) -> UnixMs {
        created.saturating_add(self.absolute.as_millis() as u64)
    }

    /// When the session ends if no further request arrives.
    pub fn expires_at(&self, created: UnixMs, last_seen: UnixMs) -> UnixMs {
        let idle_end = last_seen.saturating_add(self.idle.as_millis() as u64);
        idle_end.min(self.absolute_expires_at(created))
    }

    /// Time left at `now`, or `None` when the session has ended.
    pub fn remaining(&self, created: UnixMs, last_seen: UnixMs, now: UnixMs) -> Option<Duration> {
        let end = self.expires_at(created, last_seen);
        (now < end).then(|| Duration::from_millis(end - now))
    }

    /// Which timeout ended the session, or `None` while it lives at `now`: the
    /// deadline that came first (idle when both are equal).
    pub fn ended_by(&self, created: UnixMs, last_seen: UnixMs, now: UnixMs) -> Option<Ended> {
        self.remaining(created, last_seen, now).is_none().then(|| {
            let idle_end = last_seen.saturating_add(self.idle.as_millis() as u64);
            match idle_end <= self.absolute_expires_at(created) {
                true => Ended::Idle,
                false => Ended::Absolute,
            }
        })
    }

    /// Whether `last_seen` is stale enough to be written back. Writing on every
    /// request would cost a Redis write per request; the idle clock is allowed to lag
    /// by at most a twentieth of `idle` (and never more than a minute).
    pub fn touch_due(&self, last_seen: UnixMs, now: UnixMs) -> bool {
        let interval = (self.idle / 20).min(Duration::from_secs(60));
        now.saturating_sub(last_seen) >= interval.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn policy() -> ExpiryPolicy {
        ExpiryPolicy::new(Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600))
    }

    #[test]
    fn idle_timeout_ends_a_quiet_session() {
        let p = policy();
        assert!(p.remaining(0, 0, 29 * MIN).is_some());
        assert!(p.remaining(0, 0, 30 * MIN).is_none());
        // activity moves the idle deadline
        assert!(p.remaining(0, 20 * MIN, 45 * MIN).is_some());
    }

    #[test]
    fn absolute_timeout_wins_over_activity() {
        let p = policy();
        let created = 0;
        let seen = 12 * 60 * MIN - MIN; // active a minute before the end
        assert_eq!(
            p.remaining(created, seen, 12 * 60 * MIN - 1),
            Some(Duration::from_millis(1))
        );
        assert!(p.remaining(created, seen, 12 * 60 * MIN).is_none());
        assert_eq!(p.expires_at(created, seen), 12 * 60 * MIN);
    }

    #[test]
    fn the_deadline_that_came_first_is_the_reason_a_session_ended() {
        let p = policy(); // 30 min idle, 12 h absolute
        let h12 = 12 * 60 * MIN;
        for (created, seen, now, expected) in [
            (0, 0, 29 * MIN, None),
            (0, 0, 30 * MIN, Some(Ended::Idle)),
            (0, 0, 5 * h12, Some(Ended::Idle)), // idle ended it long before absolute
            (0, h12 - MIN, h12 - 1, None),
            (0, h12 - MIN, h12, Some(Ended::Absolute)),
            (0, h12 - MIN, h12 + 40 * MIN, Some(Ended::Absolute)),
            (0, h12 - 30 * MIN, h12, Some(Ended::Idle)), // both at once: idle
        ] {
            assert_eq!(
                p.ended_by(created, seen, now),
                expected,
                "created {created}, seen {seen}, now {now}"
            );
        }
    }

    #[test]
    fn last_seen_is_written_back_at_most_every_twentieth_of_idle() {
        let p = policy(); // 30 min idle: a twentieth is 90 s, capped at 60 s
        assert!(!p.touch_due(0, 59_999));
        assert!(p.touch_due(0, 60_000));
        let short = ExpiryPolicy::new(Duration::from_secs(2), Duration::from_secs(10));
        assert!(short.touch_due(0, 100));
        assert!(!short.touch_due(0, 99));
    }
}
