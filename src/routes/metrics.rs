//! `GET /metrics`: the server's [`Metrics`] in the Prometheus text format, on the main
//! listener or, with `server.metrics_listen`, only on that second listener.

use crate::error::Error;
use crate::metrics::Metrics;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// `GET /metrics`.
pub async fn metrics(req: HttpRequest) -> HttpResponse {
    let Some(metrics) = req.app_data::<Metrics>() else {
        return HttpResponse::from_error(Error::NotFound);
    };
    let (content_type, body) = metrics.render();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}
