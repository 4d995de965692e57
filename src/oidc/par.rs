//! Pushed authorization requests (RFC 9126): instead of putting the authorization
//! request in the browser's redirect, spa-bff POSTs it, with client authentication,
//! to the provider's `pushed_authorization_request_endpoint`, and sends the browser
//! to the authorization endpoint with only `client_id` and the `request_uri` the
//! provider answered. The request's parameters (PKCE challenge, state, nonce,
//! scopes, `returnTo`-independent extras) then never pass through the browser and
//! cannot be altered there, and the provider knows the request came from its client.
//!
//! Whether requests are pushed is decided with the provider's metadata
//! ([`AuthorizationRoute`](crate::oidc::provider::AuthorizationRoute)): when
//! `oidc.use_par = true`, and whenever the provider says
//! `require_pushed_authorization_requests` (said once at start-up, at INFO: nothing
//! is wrong, spa-bff adapts). A provider that should get pushed requests but names
//! no PAR endpoint (or one spa-bff may not call) fails discovery with a clear
//! message: `/readyz` stays 503 and the log says why.
//!
//! Errors: an unreachable provider, a timeout or a 5xx is 503; a 4xx is a login
//! error page with the provider's OAuth error code (never its raw body), and an
//! `invalid_client` is reported as the client-authentication problem it is.

use crate::config::OidcSettings;
use crate::error::{Error, LoginError};
use crate::oidc::client_auth::{oauth_error, refused_client_auth, ClientAuthentication};
use crate::oidc::http::OidcHttp;
use crate::oidc::provider::Provider;
use crate::time::UnixMs;
use url::Url;

/// The longest `request_uri` accepted from the provider (it goes into a redirect).
const MAX_REQUEST_URI: usize = 1024;

/// Pushes the authorization request `authorize` (the URL spa-bff would otherwise
/// redirect to) and returns the URL to send the browser to: the authorization
/// endpoint with exactly `client_id` and `request_uri`.
pub async fn push(
    provider: &Provider,
    http: &OidcHttp,
    oidc: &OidcSettings,
    endpoint: &Url,
    authorize: &Url,
    now: UnixMs,
) -> Result<Url, Error> {
    let credentials = ClientAuthentication::new(oidc, provider).credentials(now)?;
    // Every parameter of the request; `client_id` once (the credentials name it,
    // except HTTP Basic, for which it stays in the form as RFC 9126 requires).
    let params: Vec<(String, String)> = authorize
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "client_id" || !credentials.names_client())
        .collect();
    let form: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answer = credentials
        .post(http, endpoint.as_str(), &form)
        .await
        .map_err(|e| Error::ProviderUnavailable(format!("pushed authorization request: {e}")))?;
    let status = answer.status.as_u16();
    if status >= 500 || status == 408 || status == 429 {
        return Err(Error::ProviderUnavailable(format!(
            "pushed authorization request: the provider answered {status}"
        )));
    }
    if !answer.status.is_success() {
        if refused_client_auth(status, &answer.body) {
            return Err(LoginError::ClientAuthRejected(format!(
                "pushed authorization request: HTTP {status} invalid_client"
            ))
            .into());
        }
        let code = oauth_error(&answer.body).unwrap_or_else(|| format!("HTTP {status}"));
        return Err(LoginError::PushRefused(code).into());
    }
    let request_uri = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("request_uri")?.as_str().map(String::from))
        .filter(|u| !u.is_empty() && u.len() <= MAX_REQUEST_URI)
        .ok_or_else(|| LoginError::PushRefused("the answer has no usable request_uri".into()))?;
    let mut url = provider.metadata.authorization_endpoint().url().clone();
    url.query_pairs_mut()
        .append_pair("client_id", &oidc.client_id)
        .append_pair("request_uri", &request_uri);
    Ok(url)
}
