//! `GET <oidc.jwks_path>`: the public key of `oidc.client_key_file` as a JWKS, for
//! providers that fetch a `private_key_jwt` client's keys from its `jwks_uri`
//! instead of having them registered. Only the public part, the same document
//! `spa-bff keys` prints.

use crate::error::Error;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpResponse};

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    match &state.settings.oidc.client_key {
        Some(key) => HttpResponse::Ok()
            // Public data, the same for everyone; a provider may cache it briefly.
            .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
            .json(key.public_jwks()),
        None => HttpResponse::from_error(Error::NotFound),
    }
}
