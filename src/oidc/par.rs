//! Pushed authorization requests (RFC 9126): instead of putting the authorization
//! request in the browser's redirect, spa-bff POSTs it, with client authentication,
//! to the provider's `pushed_authorization_request_endpoint`, and sends the browser
//! to the authorization endpoint with only `client_id` and the `request_uri` the
//! provider answered. The request's parameters (PKCE challenge, state, nonce,
//! scopes, `returnTo`-independent extras) then never pass through the browser and
//! cannot be altered there, and the provider knows the request came from its client.
//!
//! PAR is used when `oidc.use_par = true`, and whenever the provider's metadata says
//! `require_pushed_authorization_requests` (said once at start-up, at INFO: nothing
//! is wrong, spa-bff adapts). A provider that should get pushed requests but names
//! no PAR endpoint (or one spa-bff may not call) fails discovery with a clear
//! message: `/readyz` stays 503 and the log says why.
//!
//! Errors: an unreachable provider, a timeout or a 5xx is 503; a 4xx is a login
//! error page with the provider's OAuth error code (never its raw body), and an
//! `invalid_client` is reported as the client-authentication problem it is.

use crate::config::{is_allowed_provider_url, OidcSettings};
use crate::error::{Error, LoginError};
use crate::oidc::client_auth::{oauth_error, refused_client_auth, ClientAuthentication};
use crate::oidc::http::OidcHttp;
use crate::oidc::provider::{ExtraMetadata, Provider};
use crate::time::UnixMs;
use url::Url;

/// The longest `request_uri` accepted from the provider (it goes into a redirect).
const MAX_REQUEST_URI: usize = 1024;

/// How authorization requests reach the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationRoute {
    /// In the browser's redirect (the query of the authorization URL).
    Redirect,
    /// Pushed to this endpoint first (RFC 9126).
    Pushed(Url),
}

/// Whether requests are pushed, from `oidc.use_par` and the provider's metadata.
pub fn route(meta: &ExtraMetadata, oidc: &OidcSettings) -> Result<AuthorizationRoute, String> {
    let required = meta.require_pushed_authorization_requests;
    if !oidc.use_par && !required {
        return Ok(AuthorizationRoute::Redirect);
    }
    let why = if required {
        "the provider requires pushed authorization requests"
    } else {
        "oidc.use_par = true"
    };
    let Some(raw) = meta.pushed_authorization_request_endpoint.as_deref() else {
        return Err(format!(
            "{why}, but the provider's metadata names no pushed_authorization_request_endpoint"
        ));
    };
    match Url::parse(raw) {
        Ok(url) if is_allowed_provider_url(&url) => Ok(AuthorizationRoute::Pushed(url)),
        _ => Err(format!(
            "{why}, but its pushed_authorization_request_endpoint is not https (nor http on this machine)"
        )),
    }
}

/// Says once, at start-up, that PAR is used although not configured.
pub fn announce(provider: &Provider, oidc: &OidcSettings) {
    let pushed = matches!(provider.authorization, AuthorizationRoute::Pushed(_));
    if pushed && !oidc.use_par {
        tracing::info!(
            "the provider requires pushed authorization requests (require_pushed_authorization_requests); /login pushes them although oidc.use_par = false"
        );
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn oidc(use_par: bool) -> OidcSettings {
        let text = format!(
            "{}\n",
            crate::config::tests::minimal()
                .replace("[oidc]", &format!("[oidc]\nuse_par = {use_par}"))
        );
        Settings::from_toml_str(&text).unwrap().oidc
    }

    fn meta(endpoint: Option<&str>, required: bool) -> ExtraMetadata {
        ExtraMetadata {
            pushed_authorization_request_endpoint: endpoint.map(String::from),
            require_pushed_authorization_requests: required,
            ..ExtraMetadata::default()
        }
    }

    #[test]
    fn requests_are_pushed_when_configured_or_required_and_an_endpoint_is_needed_then() {
        let par = "https://id.example.com/par";
        let pushed = AuthorizationRoute::Pushed(par.parse().unwrap());
        for (use_par, endpoint, required, expected) in [
            (false, None, false, Ok(AuthorizationRoute::Redirect)),
            (false, Some(par), false, Ok(AuthorizationRoute::Redirect)),
            (true, Some(par), false, Ok(pushed.clone())),
            (false, Some(par), true, Ok(pushed.clone())),
            (true, None, false, Err("oidc.use_par = true, but")),
            (false, None, true, Err("the provider requires pushed")),
            (
                true,
                Some("http://id.example.com/par"),
                false,
                Err("not https"),
            ),
        ] {
            let got = route(&meta(endpoint, required), &oidc(use_par));
            match (got, expected) {
                (Ok(g), Ok(e)) => assert_eq!(g, e),
                (Err(g), Err(e)) => assert!(g.contains(e), "{g:?} lacks {e:?}"),
                (g, e) => panic!("{use_par} {endpoint:?} {required}: {g:?} vs {e:?}"),
            }
        }
    }
}
