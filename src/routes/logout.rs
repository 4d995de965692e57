use crate::csrf;
use crate::error::{no_store_json, Error};
use crate::oidc::logout::{logout_url, revoke_refresh_token};
use crate::state::{AppState, SessionLookup};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// `POST /logout`: ends the session here, then sends the browser to the provider.
/// A `fetch` with `X-CSRF: 1` gets `{"logoutUrl": ...}`; a form POST gets a 303.
pub async fn logout(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let is_fetch = check_same_origin(&req, &state)?;
    let session = match state.session(&req).await? {
        SessionLookup::Active(s) => Some(s),
        _ => None,
    };
    if let Some(s) = &session {
        state.sessions.end(s).await?;
        tracing::info!(session = %&s.reference.storage_id()[..8], "logged out");
    }
    let provider = state.provider.get().ok();
    let id_token = session.as_ref().map(|s| s.record.tokens.id_token.expose());
    let url = logout_url(provider.as_deref(), &state.settings, id_token);
    if let (Some(p), Some(rt)) = (
        provider,
        session
            .as_ref()
            .and_then(|s| s.record.tokens.refresh_token.clone()),
    ) {
        let http = state.http.clone();
        actix_web::rt::spawn(async move {
            revoke_refresh_token(&p, &http, rt.expose().to_string()).await
        });
    }
    let mut res = if is_fetch {
        no_store_json(StatusCode::OK, json!({ "logoutUrl": url }))
    } else {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()
    };
    let _ = res.add_cookie(&state.cookies.clear_session());
    Ok(res)
}

/// Logout must not be triggerable by another site: a `fetch` carries the CSRF
/// header; a form POST must come from our own origin (`Origin`, or, from browsers
/// that send none, `Sec-Fetch-Site: same-origin`). Returns whether it is a fetch.
fn check_same_origin(req: &HttpRequest, state: &AppState) -> Result<bool, Error> {
    let (headers, settings) = (req.headers(), &state.settings);
    if csrf::has_csrf_header(headers, settings) {
        return Ok(true);
    }
    let same_origin = if headers.contains_key(header::ORIGIN) {
        csrf::origin_is_ours(headers, settings)
    } else {
        headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin")
    };
    if same_origin {
        Ok(false)
    } else {
        Err(Error::Forbidden(
            "logout must come from this application (send X-CSRF: 1, or POST a form from this origin)",
        ))
    }
}

/// Any other method on /logout.
pub async fn wrong_method() -> HttpResponse {
    HttpResponse::from_error(Error::MethodNotAllowed("log out with POST /logout"))
}
