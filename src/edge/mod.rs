//! The HTTP edge: what spa-bff decides about a request before any flow sees it.
//!
//! spa-bff faces the internet (or a load balancer that does), so a request is judged
//! here on what it is, not on what it claims:
//!
//! - [`client`]: who the client is. Only hops from `server.trusted_proxies` are
//!   believed in `X-Forwarded-For`; the rate limiter, the logs and the proxy's
//!   outgoing `X-Forwarded-For` all use this one answer.
//! - [`head`]: the request head's size (431 beyond `server.max_header_bytes`).
//! - [`body`]: a request body is read with a deadline on every pause (408) and a size
//!   limit (413), whether it is buffered or streamed to an upstream.
//! - [`rate_limit`]: `/login` and `/callback` per client IP (429), so unauthenticated
//!   callers cannot make spa-bff store login state without bound (the buckets are in
//!   Redis, shared by the instances; in memory per instance while Redis is away).
//!
//! Everything else here is per instance and in memory; [`Edge`] is what the
//! middlewares read from the app's data.

pub mod body;
pub mod client;
pub mod head;
pub mod rate_limit;

use crate::config::{Cidr, Settings};
use rate_limit::RateLimiter;
use std::sync::Arc;

/// The edge's settings and shared state, one per instance (every worker holds a clone).
#[derive(Clone)]
pub struct Edge {
    pub trusted_proxies: Arc<Vec<Cidr>>,
    pub max_header_bytes: u64,
    /// `None` when `server.login_rate_limit` is 0.
    pub login_limiter: Option<Arc<RateLimiter>>,
}

impl Edge {
    pub fn new(settings: &Settings) -> Edge {
        let s = &settings.server;
        Edge {
            trusted_proxies: Arc::new(s.trusted_proxies.clone()),
            max_header_bytes: s.max_header_bytes,
            login_limiter: (s.login_rate_limit > 0)
                .then(|| Arc::new(RateLimiter::new(s.login_rate_limit, s.login_rate_burst))),
        }
    }
}
