//! The SPA's static files, with `index.html` for client-side routes.

use crate::error::Error;
use crate::paths;
use actix_files::{Files, NamedFile};
use actix_web::dev::{fn_service, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse, Responder};
use std::path::PathBuf;

/// `proxied`: the `[[routes]]` prefixes; like spa-bff's own paths, they never get
/// `index.html`.
pub fn configure(cfg: &mut web::ServiceConfig, static_dir: Option<PathBuf>, proxied: Vec<String>) {
    let proxied = std::sync::Arc::new(proxied);
    match static_dir {
        Some(dir) => {
            let index = dir.join("index.html");
            cfg.service(
                Files::new("/", dir)
                    .index_file("index.html")
                    .prefer_utf8(true)
                    .default_handler(fn_service(move |req: ServiceRequest| {
                        let index = index.clone();
                        let proxied = proxied.clone();
                        async move { fallback(req, index, &proxied).await }
                    })),
            );
        }
        None => {
            cfg.default_service(web::to(|| async {
                HttpResponse::from_error(Error::NotFound)
            }));
        }
    }
}

/// Unknown GET paths that accept HTML are client-side routes: answer `index.html`.
/// Everything else, and anything under spa-bff's own paths, is a 404.
async fn fallback(
    req: ServiceRequest,
    index: PathBuf,
    proxied: &[String],
) -> Result<ServiceResponse, actix_web::Error> {
    let (req, _) = req.into_parts();
    let is_page = matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    let path = req.path();
    let reserved = paths::RESERVED
        .iter()
        .copied()
        .chain(proxied.iter().map(String::as_str))
        .any(|base| paths::is_under(path, base));
    if !is_page || reserved {
        return Ok(ServiceResponse::new(
            req,
            HttpResponse::from_error(Error::NotFound),
        ));
    }
    let file = NamedFile::open_async(&index).await?;
    let res = file
        .customize()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .respond_to(&req)
        .map_into_boxed_body();
    Ok(ServiceResponse::new(req, res))
}
