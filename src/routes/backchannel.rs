use crate::error::Error;
use crate::flows::backchannel;
use crate::routes::query_pairs_of;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// `POST /backchannel-logout` (form field `logout_token`): the provider ends the
/// sessions of one of its sessions or users. Server to server: no cookie, no CSRF
/// header; the signed logout token is the proof.
pub async fn backchannel_logout(
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Error> {
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
