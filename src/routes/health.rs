use crate::error::no_store_json;
use crate::state::AppState;
use crate::store::Store;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    no_store_json(StatusCode::OK, json!({ "status": "ok" }))
}

/// `GET /readyz`: Redis answers and provider discovery is done.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let redis_ok = state.store.ping().await.is_ok();
    let provider_ok = state.provider.is_ready();
    let status = if redis_ok && provider_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    no_store_json(
        status,
        json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "checks": {
                "redis": if redis_ok { "ok" } else { "unavailable" },
                "provider": if provider_ok { "ok" } else { "discovering" },
            }
        }),
    )
}
