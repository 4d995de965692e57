//! openidconnect's HTTP client, implemented on awc.
//!
//! Redirects are never followed (a provider redirect is not an invitation to
//! fetch another URL: SSRF), every call has a timeout, and bodies are capped.
//! A 5xx answer is reported as a transport error: the provider is unavailable,
//! which callers turn into 503 rather than into "your login/refresh is invalid".

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

#[derive(Clone)]
pub struct OidcHttp {
    client: awc::Client,
}

impl OidcHttp {
    pub fn new(timeout: Duration) -> Self {
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(timeout)
            .finish();
        Self { client }
    }

    /// The underlying awc client, for calls openidconnect does not model (userinfo).
    pub fn client(&self) -> &awc::Client {
        &self.client
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let method = awc::http::Method::from_bytes(parts.method.as_str().as_bytes())
                .map_err(|e| HttpError(format!("method: {e}")))?;
            let url = parts.uri.to_string();
            let mut req = self.client.request(method, &url);
            for (name, value) in parts.headers.iter() {
                req = req.append_header((name.as_str(), value.as_bytes().to_vec()));
            }
            let mut res = req
                .send_body(body)
                .await
                .map_err(|e| HttpError(format!("{url}: {e}")))?;
            let status = res.status().as_u16();
            if status >= 500 {
                return Err(HttpError(format!("{url}: provider answered {status}")));
            }
            let bytes = res
                .body()
                .limit(MAX_BODY)
                .await
                .map_err(|e| HttpError(format!("{url}: reading body: {e}")))?;
            let mut out = openidconnect::http::Response::builder().status(status);
            for (name, value) in res.headers() {
                out = out.header(name.as_str(), value.as_bytes());
            }
            out.body(bytes.to_vec())
                .map_err(|e| HttpError(format!("{url}: {e}")))
        })
    }
}
