use crate::error::{Error, LoginError};
use crate::oidc::callback::{complete_login, AuthorizationResponse};
use crate::oidc::login::take_login;
use crate::routes::query_pairs;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// `GET /callback`: the provider sends the browser back here with a code (or an error).
pub async fn callback(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let response = parse(&req);
    let Some(login_state) = response.state.clone() else {
        return HttpResponse::from_error(Error::from(LoginError::MissingState));
    };
    let mut res = match finish(&req, &state, &response, &login_state).await {
        Ok(res) => res,
        Err(e) => HttpResponse::from_error(e),
    };
    // The login cookie is single-use whatever happened.
    let _ = res.add_cookie(&state.cookies.clear_login(&login_state));
    res
}

async fn finish(
    req: &HttpRequest,
    state: &AppState,
    response: &AuthorizationResponse,
    login_state: &str,
) -> Result<HttpResponse, Error> {
    // The state must have been started in this browser, and not used before.
    if !state.cookies.has_login(req, login_state) {
        return Err(LoginError::InvalidState.into());
    }
    let sessions = &state.sessions;
    let login = take_login(sessions.redis(), sessions.prefix(), login_state)
        .await?
        .ok_or(LoginError::InvalidState)?;
    let return_to = login.return_to.clone();
    let now = now_ms();
    let record = complete_login(&state.provider, &state.http, response, login, now).await?;
    // A login replaces whatever session this browser had (no fixation, no leftovers).
    if let Some(old) = state.cookies.read_session(req) {
        sessions.delete(&old).await?;
    }
    let reference = sessions.create(&record, now).await?;
    tracing::info!(session = %&reference.storage_id()[..8], "login completed");
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, return_to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(
            state
                .cookies
                .session_cookie(&reference, sessions.expiry().absolute),
        )
        .finish())
}

fn parse(req: &HttpRequest) -> AuthorizationResponse {
    let mut r = AuthorizationResponse::default();
    for (k, v) in query_pairs(req) {
        let slot = match k.as_str() {
            "code" => &mut r.code,
            "state" => &mut r.state,
            "error" => &mut r.error,
            "error_description" => &mut r.error_description,
            "iss" => &mut r.iss,
            _ => continue,
        };
        slot.get_or_insert(v);
    }
    r
}
