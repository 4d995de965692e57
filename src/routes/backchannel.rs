use crate::error::Error;
use crate::oidc::backchannel::{verify_logout_token, MAX_AGE_SECS};
use crate::routes::query_pairs_of;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use std::time::Duration;

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
    let client_id = &state.settings.oidc.client_id;
    let now_secs = now_ms() / 1000;
    let claims =
        verify_logout_token(&state.provider, &state.http, client_id, &token, now_secs).await?;
    let window = Duration::from_secs(2 * MAX_AGE_SECS);
    if !state
        .sessions
        .first_use("logout-jti", &claims.jti, window)
        .await?
    {
        return Err(Error::InvalidLogoutToken("jti already used".into()));
    }
    let ended = state
        .sessions
        .delete_for_logout(claims.sid.as_deref(), claims.sub.as_deref())
        .await?;
    tracing::info!(sessions = ended, "back-channel logout");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
