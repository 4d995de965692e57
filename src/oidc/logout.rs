//! Ending a session at the provider: the RP-initiated logout URL, and revocation
//! of the refresh token (RFC 7009) so a copy of it is worthless.

use crate::config::{is_allowed_provider_url, OidcSettings, Settings};
use crate::oidc::client_auth::ClientAuthentication;
use crate::oidc::http::OidcHttp;
use crate::oidc::provider::Provider;
use crate::time::now_ms;
use url::Url;

/// Where the browser goes after local logout: the provider's `end_session_endpoint`
/// with `id_token_hint`, `client_id` and `post_logout_redirect_uri`, or back to the
/// app when the provider has no such endpoint or there was no session.
pub fn logout_url(
    provider: Option<&Provider>,
    settings: &Settings,
    id_token: Option<&str>,
) -> String {
    let home = format!("{}/", settings.server.origin());
    let (Some(provider), Some(id_token)) = (provider, id_token) else {
        return home;
    };
    let Some(Ok(mut url)) = provider
        .extra()
        .end_session_endpoint
        .as_deref()
        .map(Url::parse)
    else {
        return home;
    };
    url.query_pairs_mut()
        .append_pair("id_token_hint", id_token)
        .append_pair("client_id", &settings.oidc.client_id)
        .append_pair("post_logout_redirect_uri", &home);
    url.into()
}

/// Revokes a refresh token (RFC 7009) so that a copy of it is worthless; failures
/// are logged, never shown (logout goes on).
///
/// The request is spa-bff's own rather than the `oauth2` crate's, which refuses
/// any plain-http revocation URL: the endpoint is allowed wherever the issuer is
/// (https, or http on this machine only), with the configured client
/// authentication.
pub async fn revoke_refresh_token(
    provider: &Provider,
    http: &OidcHttp,
    oidc: &OidcSettings,
    token: &str,
) {
    let Some(endpoint) = provider.extra().revocation_endpoint.as_deref() else {
        tracing::debug!("the provider has no revocation_endpoint; refresh token not revoked");
        return;
    };
    match Url::parse(endpoint) {
        Ok(url) if is_allowed_provider_url(&url) => {}
        _ => {
            tracing::warn!("the provider's revocation_endpoint is not https (nor http on this machine); refresh token not revoked");
            return;
        }
    }
    let credentials = match ClientAuthentication::new(oidc, provider).credentials(now_ms()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("refresh token not revoked: {e}");
            return;
        }
    };
    let form = [("token", token), ("token_type_hint", "refresh_token")];
    match credentials.post(http, endpoint, &form).await {
        Ok(answer) if answer.status.is_success() => tracing::debug!("refresh token revoked"),
        Ok(answer) => tracing::warn!(
            status = answer.status.as_u16(),
            "the provider refused to revoke a refresh token"
        ),
        Err(e) => tracing::warn!("refresh token revocation failed: {e}"),
    }
}
