use crate::error::Error;
use crate::flows::login;
use crate::routes::query_param;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// `GET /login?returnTo=/path`: starts the authorization-code flow.
pub async fn login(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let return_to = query_param(&req, "returnTo");
    let started = login::start(&state.deps(), return_to.as_deref()).await?;
    let mut res = HttpResponse::Found()
        .insert_header((header::LOCATION, started.redirect.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    for stale in state.cookies.excess_logins(&req) {
        let _ = res.add_cookie(&stale);
    }
    let ttl = state.settings.oidc.login_timeout;
    let _ = res.add_cookie(&state.cookies.login_cookie(&started.state, ttl));
    Ok(res)
}
