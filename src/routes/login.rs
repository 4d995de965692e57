use crate::error::Error;
use crate::oidc::login::{authorization_request, safe_return_to, save_login};
use crate::routes::query_param;
use crate::state::AppState;
use crate::time::now_ms;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// `GET /login?returnTo=/path`: starts the authorization-code flow.
pub async fn login(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let provider = state.provider.get()?;
    let settings = &state.settings;
    let return_to = safe_return_to(query_param(&req, "returnTo").as_deref());
    let auth = authorization_request(&provider, &settings.oidc, return_to, now_ms());
    let ttl = settings.oidc.login_timeout;
    save_login(
        state.sessions.redis(),
        state.sessions.prefix(),
        &auth.state,
        &auth.login,
        ttl,
    )
    .await?;
    let mut res = HttpResponse::Found()
        .insert_header((header::LOCATION, auth.url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    for stale in state.cookies.excess_logins(&req) {
        let _ = res.add_cookie(&stale);
    }
    let _ = res.add_cookie(&state.cookies.login_cookie(&auth.state, ttl));
    Ok(res)
}
