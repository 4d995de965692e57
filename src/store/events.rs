//! Announcements between instances that a session changed or ended, over a Redis
//! pub/sub channel ([`Keys::session_events`](super::keys::Keys::session_events)).
//!
//! Every write to a session (a refresh's save, a logout, a back-channel logout, a
//! recorded activity, an expiry found) is followed by a `PUBLISH` of its storage id
//! (see [`RedisStore`](super::RedisStore)). One subscriber per process
//! ([`SessionEvents::run`]) receives them and
//!
//! - drops the session's copy from the [`SessionCache`] (so no instance serves a
//!   session, or an access token, another instance ended or replaced);
//! - wakes the requests waiting for another instance's refresh of that session
//!   ([`SessionWatch`]): a lost refresh race costs about one round trip, not a
//!   polling interval.
//!
//! Pub/sub delivers at most once: a subscriber that reconnects may have missed
//! messages, so the cache is cleared then, and copies are used only while a `PING`
//! on the subscriber connection was answered recently (see the cache's module doc).
//! Waiters also poll, as a fallback.

use super::cache::SessionCache;
use super::keys::Keys;
use super::topology::{describe, Target};
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often the subscriber proves its connection (and so the cache) current.
pub const PING_EVERY: Duration = Duration::from_millis(100);
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// The announcements of one process: its session cache and its waiters.
pub struct SessionEvents {
    channel: String,
    pub cache: SessionCache,
    watches: Mutex<HashMap<String, Weak<WatchEntry>>>,
}

struct WatchEntry {
    announced: AtomicU64,
    notify: Notify,
}

/// Waits for announcements about one session (another instance saved new tokens).
pub struct SessionWatch {
    entry: Option<Arc<WatchEntry>>,
    seen: u64,
}

impl SessionWatch {
    /// A watch that is never woken (no subscriber): waiting is only a timeout.
    pub fn none() -> Self {
        Self {
            entry: None,
            seen: 0,
        }
    }

    /// Waits until the session was announced since the watch began (or since the
    /// last `wait` returned), or `timeout` passed.
    pub async fn wait(&mut self, timeout: Duration) {
        let Some(entry) = &self.entry else {
            tokio::time::sleep(timeout).await;
            return;
        };
        let notified = entry.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = entry.announced.load(Ordering::Acquire);
        if now == self.seen {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
        self.seen = entry.announced.load(Ordering::Acquire);
    }
}

impl SessionEvents {
    /// The announcements under `keys`' prefix, with a cache of `capacity` sessions.
    pub fn new(keys: &Keys, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            channel: keys.session_events(),
            cache: SessionCache::new(capacity),
            watches: Mutex::new(HashMap::new()),
        })
    }

    /// Starts watching session `id` (before reading it, so no announcement is missed).
    pub fn watch(&self, id: &str) -> SessionWatch {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match watches.get(id).and_then(Weak::upgrade) {
            Some(entry) => entry,
            None => {
                if watches.len() > 1024 {
                    watches.retain(|_, w| w.strong_count() > 0);
                }
                let entry = Arc::new(WatchEntry {
                    announced: AtomicU64::new(0),
                    notify: Notify::new(),
                });
                watches.insert(id.to_string(), Arc::downgrade(&entry));
                entry
            }
        };
        let seen = entry.announced.load(Ordering::Acquire);
        SessionWatch {
            entry: Some(entry),
            seen,
        }
    }

    /// An announcement arrived: drop the copy, wake the waiters.
    fn deliver(&self, id: &str, now: std::time::Instant) {
        self.cache.announce(id, now);
        let entry = self
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .and_then(Weak::upgrade);
        if let Some(entry) = entry {
            entry.announced.fetch_add(1, Ordering::AcqRel);
            entry.notify.notify_waiters();
        }
    }

    /// Receives announcements for as long as the process runs, reconnecting (with
    /// backoff) whenever the subscription breaks; the cache is cleared on every
    /// reconnect, since messages may have been missed meanwhile.
    pub async fn run(self: Arc<Self>, target: Arc<Target>, timeout: Duration) {
        let mut delay = RECONNECT_FIRST;
        let mut failing = false;
        loop {
            self.cache.clear();
            let subscribed = |failing: &mut bool| {
                if std::mem::take(failing) {
                    tracing::info!("session announcements resumed; the session cache is on");
                }
            };
            if let Err(e) = self
                .subscribe_and_listen(&target, timeout, &mut || subscribed(&mut failing))
                .await
            {
                if !failing {
                    tracing::warn!(
                        "session announcements: {e}; the session cache is off until they resume"
                    );
                    failing = true;
                } else {
                    delay = (delay * 2).min(RECONNECT_MAX);
                }
            }
            self.cache.clear();
            tokio::time::sleep(delay).await;
            if !failing {
                delay = RECONNECT_FIRST;
            }
        }
    }

    /// One subscription: subscribe, then apply messages and prove the connection
    /// current with a `PING` every [`PING_EVERY`]. Returns when it breaks.
    async fn subscribe_and_listen(
        &self,
        target: &Target,
        timeout: Duration,
        subscribed: &mut dyn FnMut(),
    ) -> Result<(), String> {
        let pubsub = target.pubsub().await.map_err(|e| describe(&e))?;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(timeout, sink.subscribe(&self.channel))
            .await
            .map_err(|_| "subscribing timed out".to_string())?
            .map_err(|e| describe(&e))?;
        subscribed();
        let mut ticker = tokio::time::interval(PING_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.apply(&message),
                    None => return Err("the subscription ended".into()),
                },
                _ = ticker.tick() => {
                    let sent = std::time::Instant::now();
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(describe(&e)),
                        Err(_) => return Err("PING on the subscription timed out".into()),
                    }
                    // Redis answered in order: every message published before the
                    // PING is in the stream by now. Apply them, then confirm.
                    while let Some(Some(message)) = stream.next().now_or_never() {
                        self.apply(&message);
                    }
                    self.cache.confirm(sent);
                }
            }
        }
    }

    fn apply(&self, message: &redis::Msg) {
        if let Ok(id) = std::str::from_utf8(message.get_payload_bytes()) {
            self.deliver(id, std::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[actix_web::test]
    async fn a_watch_wakes_on_an_announcement_made_after_it_began_and_times_out_otherwise() {
        let events = SessionEvents::new(&Keys::new("t:"), 10);
        let mut watch = events.watch("abc");
        let started = Instant::now();
        watch.wait(Duration::from_millis(50)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "no announcement"
        );

        // Announced between the watch's start and the wait: returns at once.
        let mut watch = events.watch("abc");
        events.deliver("abc", std::time::Instant::now());
        let started = Instant::now();
        watch.wait(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));

        // Announced while waiting: wakes up.
        let mut watch = events.watch("abc");
        let waiter = async {
            watch.wait(Duration::from_secs(5)).await;
            Instant::now()
        };
        let announcer = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            events.deliver("abc", std::time::Instant::now());
        };
        let started = Instant::now();
        let (woke, ()) = futures_util::future::join(waiter, announcer).await;
        assert!(woke - started < Duration::from_secs(1));
    }
}
