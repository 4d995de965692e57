//! Liveness and readiness for orchestrators and load balancers.
//!
//! `/readyz` claims only what it checked just now: Redis answered a `PING` (every
//! master, on a cluster) and served a write within `redis_timeout`, provider
//! discovery is done, and the instance is not shutting down (it turns 503 first, so
//! balancers drain it before its listener closes). A paused (`CLIENT PAUSE`, even
//! `WRITE` only) or unreachable Redis is 503 within the timeout.

use crate::error::no_store_json;
use crate::state::AppState;
use crate::store::Store;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    no_store_json(StatusCode::OK, json!({ "status": "ok" }))
}

/// `GET /readyz`: Redis answers, provider discovery is done, not shutting down.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let draining = state.lifecycle.is_draining();
    let provider_ok = state.provider.is_ready();
    // A draining instance is not ready whatever Redis says: skip the round trip.
    let redis_ok = !draining && state.store.ping().await.is_ok();
    let ready = redis_ok && provider_ok && !draining;
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    no_store_json(
        status,
        json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "redis": match (draining, redis_ok) {
                    (true, _) => "not_checked",
                    (false, true) => "ok",
                    (false, false) => "unavailable",
                },
                "provider": if provider_ok { "ok" } else { "discovering" },
                "instance": if draining { "shutting_down" } else { "ok" },
            }
        }),
    )
}
