//! The one error type every handler returns, and how it becomes HTTP.
//!
//! Policy: callers get a short, stable error code and a human sentence, never
//! internal details (those go to the log with the request id). API callers
//! (fetch/XHR) get JSON; browser navigations get a small HTML page, chosen by
//! [`render_errors`] from `Sec-Fetch-Mode` and `Accept`. Every 5xx means
//! "try again later": nothing here ever reports a panic or a stack trace.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use std::borrow::Cow;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    #[error("{0}")]
    Login(#[from] LoginError),
    /// The provider could not be reached or answered 5xx; the detail is logged only.
    #[error("the identity provider is unavailable, try again shortly")]
    ProviderUnavailable(String),
    /// A `token = "client"` route's token could not be obtained (the provider is
    /// unreachable or refuses the client-credentials grant). The flow logs each
    /// failure episode once; this answer is not logged again per request.
    #[error("the identity provider did not issue this service's access token, try again shortly")]
    ClientTokenUnavailable(String),
    /// Redis could not be reached or timed out; the detail is logged only.
    #[error("the session store is unavailable, try again shortly")]
    StoreUnavailable(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// A proxied path that upstreams could read in more than one way (encoded `/`,
    /// dot segments, `;` parameters...): refused rather than guessed.
    #[error("ambiguous request path: {0}")]
    BadPath(&'static str),
    /// The request body stopped arriving for longer than `server.request_body_timeout`.
    #[error("the request body stopped arriving")]
    BodyTimeout,
    /// The request body is larger than this endpoint accepts.
    #[error("the request body is too large (at most {limit} bytes)")]
    BodyTooLarge { limit: u64 },
    /// The request's headers are larger than `server.max_header_bytes`.
    #[error("the request headers are too large (at most {limit} bytes)")]
    HeadersTooLarge { limit: u64 },
    /// The client made too many login requests; it may try again after `retry_after_secs`.
    #[error("too many login attempts from this address; try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// A proxied upstream refused the connection or failed; the detail is logged only.
    #[error("the upstream service is unavailable")]
    UpstreamUnavailable(String),
    /// A proxied upstream did not answer within the route's timeout.
    #[error("the upstream service did not answer in time")]
    UpstreamTimeout(String),
    /// A back-channel logout request whose logout token is not valid; the
    /// detail is logged only (OpenID Connect Back-Channel Logout 1.0, 2.8).
    #[error("invalid logout token")]
    InvalidLogoutToken(String),
    /// The session cannot get an access token for a route's RFC 8707 resource: its
    /// login did not name the resource (it predates the route's `resource`), the
    /// provider refused it (`invalid_target`), or the provider's token for it is a JWT
    /// whose `aud` names another audience. The session itself is fine; the detail is
    /// logged only.
    #[error("this session has no access to this API's audience; signing in again may help")]
    ResourceRefused(String),
    /// A bug or an impossible state; the detail is logged only.
    #[error("internal error")]
    Internal(String),
}

/// Why a login could not be completed. Shown to the user; none of these leak secrets.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the login response has no state parameter")]
    MissingState,
    #[error("this login link is unknown, expired, already used, or was started in another browser; please log in again")]
    InvalidState,
    #[error("the identity provider answered: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Provider {
        error: String,
        description: Option<String>,
    },
    #[error("the login response came from an unexpected issuer")]
    IssuerMismatch,
    #[error("the login response has no authorization code")]
    MissingCode,
    #[error("the identity provider rejected the authorization code")]
    CodeRejected(String),
    #[error("the identity provider returned an invalid token response")]
    InvalidTokenResponse(String),
    #[error("the identity provider returned an invalid ID token")]
    InvalidIdToken(String),
    /// The provider refused spa-bff's client authentication (`invalid_client`): a
    /// configuration problem, not the user's; the detail is logged only.
    #[error("the identity provider did not accept this application's client authentication; the administrator has to fix its configuration")]
    ClientAuthRejected(String),
    /// The provider refused the pushed authorization request (RFC 9126); its OAuth
    /// error code.
    #[error("the identity provider refused the login request ({0})")]
    PushRefused(String),
    /// A fresh sign-in was asked for (`prompt=login`, `max_age`) and the ID token's
    /// `auth_time` does not show one; the detail is logged only.
    #[error("the identity provider did not confirm a fresh sign-in; please try again")]
    StaleAuthentication(String),
}

impl LoginError {
    fn code(&self) -> &'static str {
        match self {
            LoginError::MissingState | LoginError::InvalidState => "invalid_state",
            LoginError::Provider { .. } => "provider_error",
            LoginError::IssuerMismatch => "issuer_mismatch",
            LoginError::MissingCode => "invalid_request",
            LoginError::CodeRejected(_) => "code_rejected",
            LoginError::InvalidTokenResponse(_) => "invalid_token_response",
            LoginError::InvalidIdToken(_) => "invalid_id_token",
            LoginError::ClientAuthRejected(_) => "client_auth_rejected",
            LoginError::PushRefused(_) => "par_refused",
            LoginError::StaleAuthentication(_) => "stale_authentication",
        }
    }
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::Login(e) => e.code(),
            Error::ProviderUnavailable(_) | Error::ClientTokenUnavailable(_) => {
                "provider_unavailable"
            }
            Error::StoreUnavailable(_) => "store_unavailable",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::BadPath(_) => "bad_path",
            Error::BodyTimeout => "request_timeout",
            Error::BodyTooLarge { .. } => "payload_too_large",
            Error::HeadersTooLarge { .. } => "headers_too_large",
            Error::TooManyRequests { .. } => "rate_limited",
            Error::UpstreamUnavailable(_) => "bad_gateway",
            Error::UpstreamTimeout(_) => "gateway_timeout",
            Error::InvalidLogoutToken(_) => "invalid_request",
            Error::ResourceRefused(_) => "invalid_target",
            Error::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "Not signed in",
            Error::Forbidden(_) => "Forbidden",
            Error::Login(_) => "Sign-in failed",
            Error::ProviderUnavailable(_)
            | Error::ClientTokenUnavailable(_)
            | Error::StoreUnavailable(_) => "Temporarily unavailable",
            Error::NotFound => "Not found",
            Error::MethodNotAllowed(_) => "Method not allowed",
            Error::BadPath(_) | Error::BodyTooLarge { .. } | Error::HeadersTooLarge { .. } => {
                "Bad request"
            }
            Error::BodyTimeout => "Request timeout",
            Error::TooManyRequests { .. } => "Too many requests",
            Error::UpstreamUnavailable(_) | Error::UpstreamTimeout(_) => "Service unavailable",
            Error::InvalidLogoutToken(_) => "Bad request",
            Error::ResourceRefused(_) => "Forbidden",
            Error::Internal(_) => "Something went wrong",
        }
    }

    /// The small page a browser navigation sees.
    pub fn html_page(&self) -> String {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
             <meta name=\"viewport\" content=\"width=device-width\"></head>\
             <body style=\"font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em\">\
             <h1>{title}</h1><p>{message}</p><p><a href=\"/\">Back to the application</a></p></body></html>",
            title = html_escape(self.title()),
            message = html_escape(&self.to_string()),
        )
    }

    fn log(&self) {
        match self {
            Error::ProviderUnavailable(detail)
            | Error::StoreUnavailable(detail)
            | Error::UpstreamUnavailable(detail)
            | Error::UpstreamTimeout(detail) => {
                tracing::warn!(error.code = self.code(), detail = %detail, "dependency unavailable")
            }
            Error::Internal(detail) => {
                tracing::error!(error.code = self.code(), detail = %detail, "internal error")
            }
            // The provider's answer broke the login (a misconfiguration or a provider
            // quirk an operator must see): WARN with the reason. A user's stale link
            // or cancelled consent: INFO.
            Error::Login(LoginError::ClientAuthRejected(detail)) => tracing::warn!(
                error.code = self.code(),
                detail = %detail,
                "login failed: the provider refused spa-bff's client authentication (invalid_client): check oidc.client_auth and the client secret, or the client key and the public key registered at the provider (spa-bff keys)"
            ),
            Error::Login(
                e @ (LoginError::CodeRejected(detail)
                | LoginError::InvalidTokenResponse(detail)
                | LoginError::InvalidIdToken(detail)
                | LoginError::StaleAuthentication(detail)),
            ) => tracing::warn!(
                error.code = self.code(),
                detail = %detail,
                "login failed on the provider's answer: {e}"
            ),
            Error::Login(e @ (LoginError::IssuerMismatch | LoginError::PushRefused(_))) => {
                tracing::warn!(error.code = self.code(), "login failed: {e}")
            }
            Error::Login(e) => tracing::info!(error.code = self.code(), "login failed: {e}"),
            Error::InvalidLogoutToken(detail) => {
                tracing::warn!(error.code = self.code(), detail = %detail, "back-channel logout refused")
            }
            Error::ResourceRefused(detail) => {
                tracing::warn!(error.code = self.code(), detail = %detail, "no token for a route's resource")
            }
            _ => tracing::debug!(error.code = self.code(), "{self}"),
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::ResourceRefused(_) => StatusCode::FORBIDDEN,
            Error::InvalidLogoutToken(_) => StatusCode::BAD_REQUEST,
            Error::Login(LoginError::Provider { .. }) => StatusCode::FORBIDDEN,
            // spa-bff's configuration, not the request: no retry by the user helps.
            Error::Login(LoginError::ClientAuthRejected(_) | LoginError::PushRefused(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Login(_) => StatusCode::BAD_REQUEST,
            Error::ProviderUnavailable(_)
            | Error::ClientTokenUnavailable(_)
            | Error::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadPath(_) => StatusCode::BAD_REQUEST,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            Error::ProviderUnavailable(_)
            | Error::ClientTokenUnavailable(_)
            | Error::StoreUnavailable(_) => {
                res.insert_header((header::RETRY_AFTER, "5"));
            }
            Error::TooManyRequests { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            // The rest of the body will not be read: the connection cannot be reused.
            Error::BodyTimeout | Error::BodyTooLarge { .. } => {
                res.force_close();
            }
            _ => {}
        }
        res.json(json!({ "error": self.code(), "message": self.to_string() }))
    }
}

/// True when the request is a top-level browser navigation rather than fetch/XHR.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    // Names as constants: a `&str` name is parsed into a `HeaderName` on every lookup.
    const SEC_FETCH_MODE: header::HeaderName = header::HeaderName::from_static("sec-fetch-mode");
    const X_CSRF: header::HeaderName = header::HeaderName::from_static("x-csrf");
    const X_REQUESTED_WITH: header::HeaderName =
        header::HeaderName::from_static("x-requested-with");
    let get = |name: &header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    match get(&SEC_FETCH_MODE) {
        "navigate" => return true,
        "" => {}
        _ => return false,
    }
    if headers.contains_key(&X_CSRF) || headers.contains_key(&X_REQUESTED_WITH) {
        return false;
    }
    get(&header::ACCEPT).contains("text/html")
}

/// Middleware: re-renders [`Error`] responses as an HTML page for browser navigations,
/// keeping the status and any `Set-Cookie` headers.
pub async fn render_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let wants_html = prefers_html(req.headers());
    let res = next.call(req).await?;
    let page = match res.response().error().and_then(|e| e.as_error::<Error>()) {
        Some(err) if wants_html => err.html_page(),
        _ => return Ok(res.map_into_left_body()),
    };
    let status = res.status();
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page);
    for name in [header::SET_COOKIE, header::RETRY_AFTER] {
        for v in old.headers().get_all(&name) {
            new.headers_mut().append(name.clone(), v.clone());
        }
    }
    Ok(ServiceResponse::new(req, new).map_into_right_body())
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A JSON 200/other response with `Cache-Control: no-store` (BFF answers are per user).
pub fn no_store_json(status: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn navigations_get_html_and_fetches_get_json() {
        assert!(prefers_html(&headers(&[("sec-fetch-mode", "navigate")])));
        assert!(prefers_html(&headers(&[("accept", "text/html,*/*")])));
        assert!(!prefers_html(&headers(&[
            ("sec-fetch-mode", "cors"),
            ("accept", "text/html")
        ])));
        assert!(!prefers_html(&headers(&[
            ("x-csrf", "1"),
            ("accept", "text/html")
        ])));
        assert!(!prefers_html(&headers(&[("accept", "application/json")])));
        assert!(!prefers_html(&headers(&[])));
    }

    #[test]
    fn provider_text_is_escaped_in_the_page() {
        let e = Error::Login(LoginError::Provider {
            error: "access_denied".into(),
            description: Some("<script>alert(1)</script>".into()),
        });
        let page = e.html_page();
        assert!(page.contains("access_denied"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
    }
}
