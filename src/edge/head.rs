//! The size of a request's head.
//!
//! actix-http refuses on its own a head that does not parse within 128 KiB or has more
//! than 96 headers: it answers `431` with an empty body and closes the connection.
//! Below that, `server.max_header_bytes` (default 32 KiB, counted as the sum of every
//! header's name and value) is spa-bff's own, configurable limit, answered with a
//! proper `431` error (JSON or a page). Upstreams commonly refuse heads of 8–16 KiB,
//! and nothing spa-bff expects from a browser comes near 32 KiB.

use super::Edge;
use crate::error::Error;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;

/// The bytes of a header section as counted against `server.max_header_bytes`.
pub fn header_bytes(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
        .sum()
}

/// Middleware: 431 for a head larger than `server.max_header_bytes`.
pub async fn limit_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = req
        .app_data::<Edge>()
        .map_or(u64::MAX, |e| e.max_header_bytes);
    if header_bytes(req.headers()) > limit {
        let res = req.error_response(Error::HeadersTooLarge { limit });
        return Ok(res.map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
