//! The rate limit on the endpoints that unauthenticated callers can use to make
//! spa-bff do work and store state (`/login`, `/callback`), per client IP (IPv6
//! clients per /64, the block one subscriber usually holds): `burst` requests at once,
//! refilled at `per_minute`.
//!
//! The limit is shared by every instance through Redis (`RedisStore::admit_login`, the
//! middleware in `routes::rate_limit`), so N instances behind a load balancer still
//! let a client through once per token, not N times. This module holds what both sides
//! need ([`Admission`], [`bucket_name`]) and the in-memory [`RateLimiter`] that takes
//! over, per instance, while Redis cannot answer: its memory is bounded (a bucket that
//! has filled up again is the same as no bucket and is evicted, and when
//! [`MAX_CLIENTS`] addresses are active at once every further address shares one
//! overflow bucket, so a distributed flood is then limited as a whole).

use crate::time::UnixMs;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Buckets kept at most (a few MiB).
pub const MAX_CLIENTS: usize = 100_000;

/// What a client's request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Over the limit: a token is available again after this long.
    Limited {
        retry_after: Duration,
    },
}

/// Whose bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    /// The /64 of an IPv6 address.
    V6(u64),
    Overflow,
}

impl Key {
    fn of(ip: IpAddr) -> Key {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Key::V4(v4.into()),
            IpAddr::V6(v6) => Key::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: UnixMs,
}

struct Buckets {
    map: HashMap<Key, Bucket>,
    last_sweep: UnixMs,
}

pub struct RateLimiter {
    /// Tokens per millisecond.
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: per_minute as f64 / 60_000.0,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                last_sweep: 0,
            }),
        }
    }

    /// Takes one token from `ip`'s bucket at `now`, if there is one.
    pub fn admit(&self, ip: IpAddr, now: UnixMs) -> Admission {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = Key::of(ip);
        if !b.map.contains_key(&key) && b.map.len() >= MAX_CLIENTS {
            self.sweep(&mut b, now);
            if b.map.len() >= MAX_CLIENTS {
                key = Key::Overflow;
            }
        }
        let burst = self.burst;
        let bucket = b.map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_sub(bucket.at) as f64;
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Admission::Allowed;
        }
        let wait_ms = ((1.0 - bucket.tokens) / self.rate).ceil() as u64;
        Admission::Limited {
            retry_after: Duration::from_millis(wait_ms),
        }
    }

    /// Drops the buckets that are full again (at most once a second).
    fn sweep(&self, b: &mut Buckets, now: UnixMs) {
        if now.saturating_sub(b.last_sweep) < 1000 {
            return;
        }
        b.last_sweep = now;
        let (rate, burst) = (self.rate, self.burst);
        b.map.retain(|key, bucket| {
            *key == Key::Overflow
                || bucket.tokens + now.saturating_sub(bucket.at) as f64 * rate < burst
        });
    }

    /// How many clients have a bucket (for tests).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.map.len()).unwrap_or(0)
    }
}

/// The name of the bucket `ip` draws from: the address, or for IPv6 its /64.
pub fn bucket_name(ip: IpAddr) -> String {
    match Key::of(ip) {
        Key::V4(v4) => std::net::Ipv4Addr::from(v4).to_string(),
        Key::V6(prefix) => format!("{}/64", std::net::Ipv6Addr::from(u128::from(prefix) << 64)),
        Key::Overflow => "overflow".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_passes_then_the_rate_refills_one_token_at_a_time() {
        let l = RateLimiter::new(60, 3); // one per second
        for _ in 0..3 {
            assert_eq!(l.admit(ip("203.0.113.1"), 0), Admission::Allowed);
        }
        assert_eq!(
            l.admit(ip("203.0.113.1"), 0),
            Admission::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
        // Another client has its own bucket.
        assert_eq!(l.admit(ip("203.0.113.2"), 0), Admission::Allowed);
        assert_eq!(
            l.admit(ip("203.0.113.1"), 400),
            Admission::Limited {
                retry_after: Duration::from_millis(600)
            }
        );
        assert_eq!(l.admit(ip("203.0.113.1"), 1000), Admission::Allowed);
        assert!(matches!(
            l.admit(ip("203.0.113.1"), 1000),
            Admission::Limited { .. }
        ));
        // Never more than the burst, however long the pause.
        for _ in 0..3 {
            assert_eq!(l.admit(ip("203.0.113.1"), 3_600_000), Admission::Allowed);
        }
        assert!(matches!(
            l.admit(ip("203.0.113.1"), 3_600_000),
            Admission::Limited { .. }
        ));
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let l = RateLimiter::new(60, 1);
        assert_eq!(l.admit(ip("2001:db8:1:2::1"), 0), Admission::Allowed);
        assert!(matches!(
            l.admit(ip("2001:db8:1:2:ffff::9"), 0),
            Admission::Limited { .. }
        ));
        assert_eq!(l.admit(ip("2001:db8:1:3::1"), 0), Admission::Allowed);
    }

    #[test]
    fn bucket_names_are_the_ipv4_address_or_the_ipv6_64() {
        assert_eq!(bucket_name(ip("198.51.100.7")), "198.51.100.7");
        assert_eq!(bucket_name(ip("::ffff:198.51.100.7")), "198.51.100.7");
        assert_eq!(bucket_name(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(
            bucket_name(ip("2001:db8:1:2:ffff::9")),
            bucket_name(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            bucket_name(ip("2001:db8:1:3::1")),
            bucket_name(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn memory_is_bounded_by_evicting_full_buckets_and_sharing_an_overflow_one() {
        let l = RateLimiter::new(60, 2);
        let many = |i: usize| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
        for i in 0..MAX_CLIENTS {
            assert_eq!(l.admit(many(i), 0), Admission::Allowed);
        }
        assert_eq!(l.tracked(), MAX_CLIENTS);
        // All still busy: a new address goes to the shared overflow bucket.
        assert_eq!(l.admit(ip("198.51.100.1"), 10), Admission::Allowed);
        assert_eq!(l.admit(ip("198.51.100.2"), 10), Admission::Allowed);
        assert!(matches!(
            l.admit(ip("198.51.100.3"), 10),
            Admission::Limited { .. }
        ));
        assert_eq!(l.tracked(), MAX_CLIENTS + 1);
        // A minute later every bucket is full again: they are dropped, memory shrinks.
        assert_eq!(l.admit(ip("198.51.100.4"), 60_000), Admission::Allowed);
        assert!(l.tracked() <= 2, "{}", l.tracked());
    }
}
