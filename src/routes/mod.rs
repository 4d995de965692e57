//! Thin HTTP handlers: extract, call one domain function, map the result.

pub mod backchannel;
pub mod callback;
pub mod health;
pub mod jwks;
pub mod login;
pub mod logout;
pub mod metrics;
pub mod rate_limit;
pub mod spa;
pub mod user;

use crate::config::Settings;
use crate::error::Error;
use crate::paths;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use rate_limit::limit_logins;

/// The one route table: spa-bff's own paths ([`crate::paths`]), then the proxied `[[routes]]`, then
/// the SPA's files.
pub fn configure(settings: &Settings) -> impl FnOnce(&mut web::ServiceConfig) {
    let static_dir = settings.server.static_dir.clone();
    let routes = settings.routes.clone();
    let jwks_path = settings.oidc.jwks_path.clone();
    let metrics_here = settings.server.metrics_listen.is_none();
    move |cfg| {
        // Unauthenticated callers make spa-bff store login state here: rate-limited.
        cfg.service(get_only(paths::LOGIN, login::login).wrap(from_fn(limit_logins)))
            .service(get_only(paths::CALLBACK, callback::callback).wrap(from_fn(limit_logins)))
            .service(get_only(paths::USER, user::user))
            .service(
                web::resource(paths::LOGOUT)
                    .route(web::post().to(logout::logout))
                    .default_service(web::to(logout::wrong_method)),
            )
            .service(get_only(paths::HEALTHZ, health::healthz))
            .service(get_only(paths::READYZ, health::readyz))
            .service(
                web::resource(paths::BACKCHANNEL_LOGOUT)
                    .route(web::post().to(backchannel::backchannel_logout))
                    .default_service(web::to(|| async {
                        HttpResponse::from_error(Error::MethodNotAllowed(
                            "the provider sends logout tokens with POST",
                        ))
                    })),
            );
        if let Some(path) = &jwks_path {
            cfg.service(get_only(path, jwks::jwks));
        }
        if metrics_here {
            cfg.service(get_only(paths::METRICS, metrics::metrics));
        }
        crate::proxy::configure(cfg, &routes);
        let proxied = routes.into_iter().map(|r| r.prefix).collect();
        spa::configure(cfg, static_dir, proxied);
    }
}

/// A resource answering GET (and HEAD) with `handler`, and 405 for other methods.
pub fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(|| async {
            HttpResponse::from_error(Error::MethodNotAllowed("this endpoint only answers GET"))
        }))
}

/// The query string as pairs; never fails (undecodable bytes become U+FFFD).
pub fn query_pairs(req: &actix_web::HttpRequest) -> Vec<(String, String)> {
    query_pairs_of(req.query_string().as_bytes())
}

/// `application/x-www-form-urlencoded` bytes as pairs; never fails.
pub fn query_pairs_of(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// The first value of query parameter `name`.
pub fn query_param(req: &actix_web::HttpRequest, name: &str) -> Option<String> {
    query_pairs(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}
