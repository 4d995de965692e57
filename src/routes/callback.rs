use crate::error::{Error, LoginError};
use crate::flows::login::{self, Callback};
use crate::oidc::callback::AuthorizationResponse;
use crate::routes::query_pairs;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// `GET /callback`: the provider sends the browser back here with a code (or an error).
pub async fn callback(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let response = AuthorizationResponse::from_pairs(query_pairs(&req));
    let Some(login_state) = response.state.as_deref() else {
        let error = Error::from(LoginError::MissingState);
        state.metrics.login(Err(error.code()));
        return HttpResponse::from_error(error);
    };
    let callback = Callback {
        response: &response,
        state: login_state,
        started_here: state.cookies.has_login(&req, login_state),
        replaces: state.cookies.read_session(&req),
    };
    let finished = login::finish(&state.deps(), callback, now_ms()).await;
    state
        .metrics
        .login(finished.as_ref().map(|_| ()).map_err(Error::code));
    let mut res = match finished {
        Ok(done) => HttpResponse::Found()
            .insert_header((header::LOCATION, done.return_to))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(
                state
                    .cookies
                    .session_cookie(&done.session, state.expiry.absolute),
            )
            .finish(),
        Err(e) => HttpResponse::from_error(e),
    };
    // The login cookie is single-use whatever happened.
    let _ = res.add_cookie(&state.cookies.clear_login(login_state));
    res
}
