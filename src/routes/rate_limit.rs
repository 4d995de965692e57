//! The login rate limit's middleware (`/login`, `/callback`): 429 with `Retry-After`
//! once a client has used its tokens (see [`crate::edge::rate_limit`]).
//!
//! The buckets are in Redis, shared by every instance. While Redis cannot answer, this
//! instance's in-memory buckets decide instead (the endpoints then mostly answer 503
//! anyway: a login's state lives in Redis too), so the limit never lapses.

use crate::edge::client::client_of;
use crate::edge::rate_limit::{bucket_name, Admission};
use crate::edge::Edge;
use crate::error::Error;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

/// Middleware on `/login` and `/callback`.
pub async fn limit_logins(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limiter = req.app_data::<Edge>().and_then(|e| e.login_limiter.clone());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let (Some(limiter), Some(state)) = (limiter, state) {
        let client = client_of(req.request());
        let server = &state.settings.server;
        let shared = state
            .store
            .admit_login(
                &bucket_name(client.ip),
                server.login_rate_limit,
                server.login_rate_burst,
            )
            .await;
        let admission = match shared {
            Ok(admission) => admission,
            Err(e) => {
                tracing::warn!(
                    "the shared login rate limit is unavailable; this instance's applies: {e}"
                );
                limiter.admit(client.ip, now_ms())
            }
        };
        if let Admission::Limited { retry_after } = admission {
            tracing::warn!(client = %client.ip, "login rate limit reached");
            let retry_after_secs = retry_after.as_millis().div_ceil(1000).max(1) as u64;
            let res = req.error_response(Error::TooManyRequests { retry_after_secs });
            return Ok(res.map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}
