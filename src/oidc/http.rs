//! The provider's HTTP client: openidconnect's `AsyncHttpClient` on awc, plus the
//! calls openidconnect does not model (userinfo, revocation).
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
use awc::http::StatusCode;
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
        let client = awc::Client::builder()
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

    /// `GET url` with `Authorization: Bearer <token>`, asking for JSON (userinfo).
    pub async fn get_with_bearer(&self, url: &str, token: &str) -> Result<Answer, HttpError> {
        let request = self
            .client
            .get(url)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Accept", "application/json"));
        self.exchange(request, Vec::new()).await
    }

    /// `POST url` with a form body; `basic` adds HTTP Basic client authentication
    /// (RFC 6749 section 2.3.1: both parts form-urlencoded first).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Answer, HttpError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .client
            .post(url)
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .insert_header(("Accept", "application/json"));
        if let Some((id, secret)) = basic {
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(id), encode(secret));
        }
        self.exchange(request, body.into_bytes()).await
    }

    /// openidconnect's request, answered as it came (no 5xx conversion).
    pub async fn call_raw(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let method = awc::http::Method::from_bytes(parts.method.as_str().as_bytes())
            .map_err(|e| HttpError(format!("method: {e}")))?;
        let url = parts.uri.to_string();
        let mut req = self.client.request(method, &url);
        for (name, value) in parts.headers.iter() {
            req = req.append_header((name.as_str(), value.as_bytes().to_vec()));
        }
        let answer = self.exchange(req, body).await?;
        let mut out = openidconnect::http::Response::builder().status(answer.status.as_u16());
        for (name, value) in &answer.headers {
            out = out.header(name.as_str(), value.as_bytes());
        }
        out.body(answer.body)
            .map_err(|e| HttpError(format!("{url}: {e}")))
    }
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
