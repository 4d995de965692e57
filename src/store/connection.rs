//! The Redis connection of one worker: made lazily (spa-bff starts, and reports
//! not-ready, while Redis is down or refuses its credentials), replaced when it
//! breaks, and every operation bounded by `redis_timeout` — connecting included —
//! so a hung or vanished Redis is a 503 within that bound, never a stall.
//!
//! Why not the crate's `ConnectionManager`: after a failed reconnect it hands the
//! cached failure to the next caller and only then reconnects, so the first request
//! after Redis returns fails (and its backoff starts at a second); and it cannot
//! re-discover a Sentinel master. Here:
//!
//! - **Down**: a failed connect is retried by the next operation after a short
//!   backoff (50 ms doubling to 500 ms); an operation that arrives during the
//!   backoff waits for its end (within its timeout) rather than failing, so the first
//!   request after Redis returns succeeds.
//! - **Connecting**: concurrent operations share one attempt.
//! - **Up**: the connection is replaced when it reports a broken link, when a
//!   server turned replica answers `READONLY` (a Sentinel failover: the master is
//!   discovered again), and when an operation times out (a hung server, or a
//!   cluster whose slot map went stale). On one server or a Sentinel master, an
//!   operation that finds its connection already dropped (e.g. Redis restarted
//!   while idle) is retried once on a new one, within the same timeout. The cluster
//!   connection reconnects nodes and follows MOVED/ASK, CLUSTERDOWN and failovers
//!   by itself (see [`super::topology`]).
//!
//! Failures are logged when the state changes (up → failing, or a different
//! reason), in words from [`describe`] that never include a password.

use super::topology::{describe, Connected, Connection, RedisReport, Target};
use crate::config::RedisSettings;
use crate::error::Error;
use crate::metrics::{Metrics, RedisFailure};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use redis::{ErrorKind, RedisError, RedisResult};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

type Attempt = Shared<BoxFuture<'static, Result<Connected, Arc<RedisError>>>>;

/// One worker's way to Redis. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisHandle {
    target: Arc<Target>,
    timeout: Duration,
    state: Arc<Mutex<State>>,
    /// Where every operation's latency and failure is counted.
    metrics: Metrics,
}

struct State {
    phase: Phase,
    /// Consecutive failed connects (the backoff grows with it).
    failures: u32,
    next_id: u64,
    /// What the last logged failure said (`None` while healthy): log changes only.
    reported: Option<String>,
}

enum Phase {
    Down {
        retry_at: Instant,
    },
    Connecting {
        id: u64,
        attempt: Attempt,
        /// When the attempt gives up by itself (callers that timed out may have
        /// left it unfinished: then it is abandoned).
        ends: Instant,
    },
    Up {
        id: u64,
        connected: Connected,
    },
}

/// The connection an operation got, and whether it was made for it.
struct Lease {
    id: u64,
    connected: Connected,
    fresh: bool,
}

impl RedisHandle {
    /// A handle on the deployment `settings` describe; nothing connects yet.
    pub fn new(settings: &RedisSettings) -> Result<Self, Error> {
        let target = Target::new(settings)
            .map_err(|e| Error::Internal(format!("Redis settings: {}", describe(&e))))?;
        Ok(Self::with_target(Arc::new(target), settings.timeout))
    }

    /// A handle of its own on a shared target (one per worker).
    pub fn with_target(target: Arc<Target>, timeout: Duration) -> Self {
        Self {
            target,
            timeout,
            state: Arc::new(Mutex::new(State {
                phase: Phase::Down {
                    retry_at: Instant::now(),
                },
                failures: 0,
                next_id: 1,
                reported: None,
            })),
            metrics: Metrics::default(),
        }
    }

    /// This handle, counting its operations in `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self { metrics, ..self }
    }

    /// The metrics its operations count in (the store counts sessions there too).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The shared target, to give other workers handles of their own.
    pub fn target(&self) -> Arc<Target> {
        self.target.clone()
    }

    /// `session.redis_timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the current connection found replicas that can acknowledge writes.
    pub fn has_replicas(&self) -> bool {
        matches!(&self.lock().phase, Phase::Up { connected, .. } if connected.replicas)
    }

    /// Runs `op` on a connection, within `redis_timeout` from now (connecting
    /// included). `op` may run twice: once more on a new connection when the one it
    /// got turns out to be dropped already.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut used = None;
        // A command the server did not answer in time fails with the connection's own
        // response timeout: that is a timeout too, not an error answer.
        let mut timed_out = false;
        let outcome = tokio::time::timeout_at(deadline, async {
            let lease = self.lease(deadline).await?;
            used = Some(lease.id);
            match op(lease.connected.connection.clone()).await {
                Ok(v) => Ok(v),
                Err(e) if !lease.fresh && self.retry_on_new_connection(&e) => {
                    self.replace(lease.id, &e);
                    let lease = self.lease(deadline).await?;
                    used = Some(lease.id);
                    op(lease.connected.connection.clone()).await.map_err(|e| {
                        timed_out = e.is_timeout();
                        self.after_error(lease.id, &e);
                        unavailable(&e)
                    })
                }
                Err(e) => {
                    timed_out = e.is_timeout();
                    self.after_error(lease.id, &e);
                    Err(unavailable(&e))
                }
            }
        })
        .await;
        let failure = match &outcome {
            Ok(Ok(_)) => None,
            Ok(Err(_)) if !timed_out => Some(RedisFailure::Error),
            Ok(Err(_)) | Err(_) => Some(RedisFailure::Timeout),
        };
        self.metrics.redis_op(started.elapsed(), failure);
        match outcome {
            Ok(result) => result,
            Err(_elapsed) => {
                if let Some(id) = used {
                    self.replace_after_timeout(id);
                }
                Err(Error::StoreUnavailable(format!(
                    "Redis did not answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// Mode, version and replication of the deployment, connecting if needed.
    pub async fn report(&self) -> Result<RedisReport, Error> {
        let target = self.target.clone();
        self.run(|c| {
            let target = target.clone();
            async move { target.report(&c).await }
        })
        .await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current connection, or a new one (waiting out the backoff if it ends
    /// before `deadline`).
    async fn lease(&self, deadline: Instant) -> Result<Lease, Error> {
        enum Next {
            Use(Lease),
            Await(u64, Attempt),
            WaitUntil(Instant),
        }
        loop {
            let next = {
                let mut state = self.lock();
                match &state.phase {
                    Phase::Up { id, connected } => Next::Use(Lease {
                        id: *id,
                        connected: connected.clone(),
                        fresh: false,
                    }),
                    Phase::Connecting { id, attempt, ends } if *ends > Instant::now() => {
                        Next::Await(*id, attempt.clone())
                    }
                    Phase::Down { retry_at } if *retry_at > Instant::now() => {
                        Next::WaitUntil(*retry_at)
                    }
                    Phase::Connecting { .. } | Phase::Down { .. } => {
                        let id = state.next_id;
                        state.next_id += 1;
                        let attempt = self.attempt();
                        state.phase = Phase::Connecting {
                            id,
                            attempt: attempt.clone(),
                            ends: Instant::now() + self.timeout,
                        };
                        Next::Await(id, attempt)
                    }
                }
            };
            match next {
                Next::Use(lease) => return Ok(lease),
                Next::WaitUntil(retry_at) if retry_at >= deadline => {
                    return Err(Error::StoreUnavailable(
                        "Redis unavailable (reconnecting)".into(),
                    ))
                }
                Next::WaitUntil(retry_at) => tokio::time::sleep_until(retry_at).await,
                Next::Await(id, attempt) => {
                    let result = attempt.await;
                    self.settle(id, &result);
                    return match result {
                        Ok(connected) => Ok(Lease {
                            id,
                            connected,
                            fresh: true,
                        }),
                        Err(e) => Err(unavailable(&e)),
                    };
                }
            }
        }
    }

    /// One connect, bounded by the timeout however long its callers wait.
    fn attempt(&self) -> Attempt {
        let target = self.target.clone();
        let timeout = self.timeout;
        async move {
            match tokio::time::timeout(timeout, target.connect()).await {
                Ok(result) => result.map_err(Arc::new),
                Err(_) => Err(Arc::new(RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))),
            }
        }
        .boxed()
        .shared()
    }

    /// Records how attempt `id` ended (the first of its waiters to get here does).
    fn settle(&self, id: u64, result: &Result<Connected, Arc<RedisError>>) {
        let mut state = self.lock();
        if !matches!(state.phase, Phase::Connecting { id: current, .. } if current == id) {
            return;
        }
        match result {
            Ok(connected) => {
                if state.reported.take().is_some() || state.failures > 0 || id == 1 {
                    tracing::info!(
                        mode = self.target.mode(),
                        replicas = connected.replicas,
                        "Redis connection established"
                    );
                }
                state.failures = 0;
                state.phase = Phase::Up {
                    id,
                    connected: connected.clone(),
                };
            }
            Err(e) => {
                let backoff = BACKOFF_START
                    .saturating_mul(1 << state.failures.min(8))
                    .min(BACKOFF_MAX);
                state.failures += 1;
                state.phase = Phase::Down {
                    retry_at: Instant::now() + backoff,
                };
                let reason = describe(e);
                if state.reported.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(
                        mode = self.target.mode(),
                        "Redis connection failed: {reason}; retrying"
                    );
                    state.reported = Some(reason);
                }
            }
        }
    }

    /// Drops connection `id` (if still current) so the next operation reconnects.
    fn replace(&self, id: u64, why: &RedisError) {
        let mut state = self.lock();
        if matches!(state.phase, Phase::Up { id: current, .. } if current == id) {
            let reason = describe(why);
            tracing::warn!(mode = self.target.mode(), "Redis connection lost: {reason}");
            state.reported = Some(reason);
            state.phase = Phase::Down {
                retry_at: Instant::now(),
            };
        }
    }

    fn replace_after_timeout(&self, id: u64) {
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        self.replace(id, &timed_out);
    }

    /// A connection-level error ends the connection. A cluster connection repairs
    /// itself (it reconnects nodes and re-reads slots), so only timeouts end it.
    fn after_error(&self, id: u64, e: &RedisError) {
        let broken = e.is_unrecoverable_error() || e.kind() == ErrorKind::ReadOnly;
        if broken && !self.target.is_cluster() {
            self.replace(id, e);
        }
    }

    /// The connection was gone before the operation could use it: safe to retry.
    fn retry_on_new_connection(&self, e: &RedisError) -> bool {
        !self.target.is_cluster() && (e.is_connection_dropped() || e.is_connection_refusal())
    }
}

fn unavailable(e: &RedisError) -> Error {
    Error::StoreUnavailable(format!("Redis: {}", describe(e)))
}
