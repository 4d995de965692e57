use crate::edge::body::read_all;
use crate::error::Error;
use crate::flows::backchannel;
use crate::routes::query_pairs_of;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// The largest body `/backchannel-logout` reads: a form with one logout token, a
/// few KiB even with large keys. Anyone can POST here, so it stays small.
pub const MAX_BODY: u64 = 16 * 1024;

/// `POST /backchannel-logout` (form field `logout_token`): the provider ends the
/// sessions of one of its sessions or users. Server to server: no cookie, no CSRF
/// header; the signed logout token is the proof.
pub async fn backchannel_logout(
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Error> {
    let idle = state.settings.server.request_body_timeout;
    let body = read_all(payload, idle, MAX_BODY).await?;
    let token = query_pairs_of(&body)
        .into_iter()
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v)
        .ok_or_else(|| Error::InvalidLogoutToken("no logout_token".into()))?;
    backchannel::logout(&state.deps(), &token, now_ms() / 1000).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
