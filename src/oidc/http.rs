//! The provider's HTTP client: openidconnect's `AsyncHttpClient` on awc, plus the
//! calls openidconnect does not model (userinfo, revocation, client credentials, PAR),
//! as plain [`Outgoing`] requests that can be sent again (DPoP's nonce retry).
//!
//! Every exchange has ONE deadline, `oidc.http_timeout`, for the response head and
//! the whole body together: awc's own timeout ends at the head, and a provider that
//! sends a head and then stalls mid-body would otherwise hold the handler, the
//! session's refresh mutex and outlive its Redis lock. Redirects are never
//! followed (a provider redirect is not an invitation to fetch another URL: SSRF)
//! and bodies are capped. Through openidconnect, a 5xx answer is reported as a
//! transport error: the provider is unavailable, which callers turn into 503
//! rather than into "your login/refresh is invalid".

use awc::http::header::HeaderMap;
use awc::http::{Method, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// A provider's complete answer (head and body, within the deadline).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct OidcHttp {
    client: awc::Client,
    deadline: Duration,
}

impl OidcHttp {
    /// `deadline` bounds each exchange, head and body together.
    pub fn new(deadline: Duration) -> Self {
        // awc's default limit of 100 connections; idle ones are not reused after
        // `net::POOL_IDLE` (a provider closing them would fail a refresh).
        let client = awc::Client::builder()
            .connector(crate::net::awc_connector(100))
            .disable_redirects()
            .timeout(deadline)
            .finish();
        Self { client, deadline }
    }

    /// Sends `request` with `body` and reads the whole answer, all within the deadline.
    async fn exchange(
        &self,
        request: awc::ClientRequest,
        body: Vec<u8>,
    ) -> Result<Answer, HttpError> {
        let url = request.get_uri().to_string();
        let work = async {
            let mut res = request
                .send_body(body)
                .await
                .map_err(|e| HttpError(format!("{url}: {e}")))?;
            let body = res
                .body()
                .limit(MAX_BODY)
                .await
                .map_err(|e| HttpError(format!("{url}: reading body: {e}")))?;
            Ok(Answer {
                status: res.status(),
                headers: res.headers().clone(),
                body: body.to_vec(),
            })
        };
        tokio::time::timeout(self.deadline, work)
            .await
            .map_err(|_| {
                HttpError(format!(
                    "{url}: no complete answer within {}",
                    humantime::format_duration(self.deadline)
                ))
            })?
    }

    /// Sends `request` and reads the whole answer, all within the deadline.
    pub async fn send(&self, request: Outgoing) -> Result<Answer, HttpError> {
        let mut req = self.client.request(request.method, &request.url);
        for (name, value) in request.headers {
            req = req.append_header((name, value));
        }
        self.exchange(req, request.body).await
    }

    /// openidconnect's request, answered as it came (no 5xx conversion).
    pub async fn call_raw(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        into_oidc_response(self.send(Outgoing::from_oidc(request)?).await?)
    }
}

/// One request to the provider as plain parts, so that it can be sent again (a DPoP
/// proof is made per attempt, see [`crate::oidc::dpop`]).
#[derive(Clone)]
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Outgoing {
    /// `GET url`, asking for JSON.
    pub fn get_json(url: &str) -> Self {
        Self {
            method: Method::GET,
            url: url.to_string(),
            headers: vec![("Accept".into(), b"application/json".to_vec())],
            body: Vec::new(),
        }
    }

    /// `POST url` with a form body; `basic` adds HTTP Basic client authentication
    /// (RFC 6749 section 2.3.1: both parts form-urlencoded first).
    pub fn form_post(url: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut out = Self {
            method: Method::POST,
            url: url.to_string(),
            headers: vec![
                (
                    "Content-Type".into(),
                    b"application/x-www-form-urlencoded".to_vec(),
                ),
                ("Accept".into(), b"application/json".to_vec()),
            ],
            body: body.into_bytes(),
        };
        if let Some((id, secret)) = basic {
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", encode(id), encode(secret));
            out = out.with_header("Authorization", format!("Basic {}", STANDARD.encode(pair)));
        }
        out
    }

    /// openidconnect's request (http 1.x) in awc's terms.
    pub fn from_oidc(request: openidconnect::HttpRequest) -> Result<Self, HttpError> {
        let (parts, body) = request.into_parts();
        let method = Method::from_bytes(parts.method.as_str().as_bytes())
            .map_err(|e| HttpError(format!("method: {e}")))?;
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect();
        Ok(Self {
            method,
            url: parts.uri.to_string(),
            headers,
            body,
        })
    }

    /// This request with one more header.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// A provider's answer as openidconnect takes it (http 1.x).
pub fn into_oidc_response(answer: Answer) -> Result<openidconnect::HttpResponse, HttpError> {
    let mut out = openidconnect::http::Response::builder().status(answer.status.as_u16());
    for (name, value) in &answer.headers {
        out = out.header(name.as_str(), value.as_bytes());
    }
    out.body(answer.body)
        .map_err(|e| HttpError(format!("provider answer: {e}")))
}

/// A 5xx answer as a transport error (the provider is unavailable).
pub fn server_error_as_unavailable(
    response: openidconnect::HttpResponse,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let status = response.status().as_u16();
    if status >= 500 {
        return Err(HttpError(format!("provider answered {status}")));
    }
    Ok(response)
}

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move { server_error_as_unavailable(self.call_raw(request).await?) })
    }
}
