use crate::error::{no_store_json, Error};
use crate::state::{AppState, SessionLookup};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// `GET /user`: the signed-in user's claims and session facts; never a token.
pub async fn user(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let session = match state.session(&req).await? {
        SessionLookup::Active(s) => s,
        SessionLookup::NoCookie => return Err(Error::Unauthenticated),
        SessionLookup::Stale => {
            // 401, and the browser forgets a cookie that leads nowhere.
            let mut res = HttpResponse::from_error(Error::Unauthenticated);
            state.forget_session(&mut res);
            return Ok(res);
        }
    };
    let expiry = &state.expiry;
    let secs = |ms: u64| ms / 1000;
    Ok(no_store_json(
        StatusCode::OK,
        json!({
            "claims": session.record.claims,
            "session": {
                "expires_at": secs(expiry.expires_at(session.created_at, session.last_seen)),
                "absolute_expires_at": secs(expiry.absolute_expires_at(session.created_at)),
                "created_at": secs(session.created_at),
                "idle_timeout": expiry.idle.as_secs(),
            }
        }),
    ))
}
