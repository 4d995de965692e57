use crate::error::{no_store_json, Error};
use crate::flows::logout::{self, Caller};
use crate::state::AppState;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// `POST /logout`: ends the session here, then sends the browser to the provider.
/// A `fetch` with the CSRF header gets `{"logoutUrl": ...}`; a same-origin form
/// POST gets a 303.
pub async fn logout(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let deps = state.deps();
    let caller = logout::caller(&deps, req.headers())?;
    let session = state.session(&req).await?.active();
    let url = logout::end(&deps, session).await?;
    let mut res = match caller {
        Caller::Fetch => no_store_json(StatusCode::OK, json!({ "logoutUrl": url })),
        Caller::Form => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
    };
    state.forget_session(&mut res);
    Ok(res)
}

/// Any other method on /logout.
pub async fn wrong_method() -> HttpResponse {
    HttpResponse::from_error(Error::MethodNotAllowed("log out with POST /logout"))
}
