//! The demo API's HTTP side: settings from the environment, the route table, and the
//! RFC 6750 error answers. Token checks live in [`token`].
//!
//! Routes answer both with and without the `/api` prefix, so spa-bff's route works
//! whether it strips the prefix (the default) or not.

mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpServer, ResponseError};
use serde_json::{json, Value};

pub use token::Verifier;
use token::{TokenError, VerifiedToken};

const DEFAULT_AUDIENCE: &str = "urn:spa-bff:demo-api";
const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
const MAX_ECHO_BODY: usize = 16 * 1024;

/// What the demo API is configured with (all from `DEMO_API_*` variables).
#[derive(Clone, Debug)]
pub struct Settings {
    pub issuer: String,
    pub audience: String,
    pub listen: String,
    pub leeway: Duration,
}

impl Settings {
    /// Reads the settings through `var` (`std::env::var` in `main`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let issuer = var("DEMO_API_ISSUER")
            .filter(|v| !v.is_empty())
            .ok_or("DEMO_API_ISSUER must be set to the provider's issuer URL")?;
        url::Url::parse(&issuer).map_err(|e| format!("DEMO_API_ISSUER: {e}"))?;
        let leeway = match var("DEMO_API_LEEWAY_SECS") {
            None => 5,
            Some(v) => v
                .parse()
                .map_err(|_| format!("DEMO_API_LEEWAY_SECS: not a number of seconds: {v:?}"))?,
        };
        Ok(Settings {
            issuer,
            audience: var("DEMO_API_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.into()),
            listen: var("DEMO_API_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()),
            leeway: Duration::from_secs(leeway),
        })
    }
}

/// A bound, not yet awaited server.
pub struct Running {
    pub addr: SocketAddr,
    pub run: Server,
}

/// Binds `settings.listen` and builds the server; discovery starts in the background.
pub fn build(settings: Settings) -> std::io::Result<Running> {
    let verifier = Arc::new(Verifier::new(
        settings.issuer,
        settings.audience,
        settings.leeway,
    ));
    let warm = verifier.clone();
    actix_web::rt::spawn(async move {
        if let Err(e) = warm.warm_up().await {
            tracing::warn!("provider not reachable yet (will retry on the first request): {e}");
        }
    });
    let verifier = web::Data::from(verifier);
    let server = HttpServer::new(move || {
        actix_web::App::new()
            .app_data(verifier.clone())
            .app_data(web::PayloadConfig::new(MAX_ECHO_BODY))
            .route("/healthz", web::get().to(healthz))
            .route("/hello", web::get().to(hello))
            .route("/api/hello", web::get().to(hello))
            .route("/echo", web::post().to(echo))
            .route("/api/echo", web::post().to(echo))
            .default_service(web::to(not_found))
    })
    .workers(2)
    .bind(&settings.listen)?;
    let addr = server.addrs()[0];
    Ok(Running {
        addr,
        run: server.run(),
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found" }))
}

/// `GET /hello` (scope `api:read`): a greeting and what the token said.
async fn hello(req: HttpRequest, verifier: web::Data<Verifier>) -> Result<HttpResponse, ApiError> {
    let token = authorize(&req, &verifier, "api:read").await?;
    Ok(HttpResponse::Ok().json(json!({
        "message": format!("Hello, {}! This answer comes from demo-api.", token.sub),
        "token": token.summary(),
    })))
}

/// `POST /echo` (scope `api:write`): the request body back (JSON or text) and the token.
async fn echo(
    req: HttpRequest,
    body: web::Bytes,
    verifier: web::Data<Verifier>,
) -> Result<HttpResponse, ApiError> {
    let token = authorize(&req, &verifier, "api:write").await?;
    let echo = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(HttpResponse::Ok().json(json!({ "echo": echo, "token": token.summary() })))
}

/// The bearer token of `req`, verified, with `scope` granted.
async fn authorize(
    req: &HttpRequest,
    verifier: &Verifier,
    scope: &'static str,
) -> Result<VerifiedToken, ApiError> {
    let raw = bearer_token(req).ok_or(ApiError::MissingToken)?;
    let token = verifier.verify(raw).await.map_err(|e| match e {
        TokenError::Invalid(why) => ApiError::InvalidToken(why),
        TokenError::Unavailable(why) => ApiError::Unavailable(why),
    })?;
    if !token.scopes.iter().any(|s| s == scope) {
        return Err(ApiError::InsufficientScope(scope));
    }
    Ok(token)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// RFC 6750 errors: 401 without a token or with an invalid one, 403 for a missing scope.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("no bearer token")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the token lacks scope {0}")]
    InsufficientScope(&'static str),
    #[error("cannot check tokens now: {0}")]
    Unavailable(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Descriptions are ours, never token contents; quotes are not possible in them.
        let (code, challenge) = match self {
            ApiError::MissingToken => ("unauthenticated", r#"Bearer realm="demo-api""#.into()),
            ApiError::InvalidToken(why) => (
                "invalid_token",
                format!(
                    r#"Bearer realm="demo-api", error="invalid_token", error_description="{why}""#
                ),
            ),
            ApiError::InsufficientScope(scope) => (
                "insufficient_scope",
                format!(r#"Bearer realm="demo-api", error="insufficient_scope", scope="{scope}""#),
            ),
            ApiError::Unavailable(_) => ("temporarily_unavailable", String::new()),
        };
        tracing::info!("refused: {self}");
        let mut res = HttpResponse::build(self.status_code());
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            if !challenge.is_empty() {
                res.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        if matches!(self, ApiError::Unavailable(_)) {
            res.insert_header((header::RETRY_AFTER, "5"));
        }
        res.insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({ "error": code, "error_description": self.to_string() }))
    }
}
