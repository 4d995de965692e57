use crate::error::{Error, LoginError};
use crate::flows::login::{self, Callback, Finished};
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
    state.metrics.login(match &finished {
        Ok(Finished::SignedIn { .. }) => Ok(()),
        Ok(Finished::NotSignedIn { .. }) => Err("silent_login_without_session"),
        Err(e) => Err(e.code()),
    });
    let mut res = match finished {
        Ok(Finished::SignedIn { session, return_to }) => HttpResponse::Found()
            .insert_header((header::LOCATION, return_to))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(
                state
                    .cookies
                    .session_cookie(&session, state.expiry.absolute),
            )
            .finish(),
        // A silent login without a provider session: back to the app, no session.
        Ok(Finished::NotSignedIn { return_to }) => HttpResponse::Found()
            .insert_header((header::LOCATION, return_to))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => HttpResponse::from_error(e),
    };
    // The login cookie is single-use whatever happened.
    let _ = res.add_cookie(&state.cookies.clear_login(login_state));
    res
}
