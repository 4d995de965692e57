use crate::error::Error;
use crate::flows::login;
use crate::oidc::login::LoginOptions;
use crate::routes::query_pairs;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// `GET /login?returnTo=/path[&prompt=none|login][&max_age=N][&login_hint=...]`:
/// starts the authorization-code flow. Any other parameter is ignored.
pub async fn login(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let pairs = query_pairs(&req);
    let return_to = pairs
        .iter()
        .find(|(k, _)| k == "returnTo")
        .map(|(_, v)| v.as_str());
    let options = LoginOptions::from_query(&pairs);
    let started = login::start(&state.deps(), return_to, &options, now_ms()).await?;
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
