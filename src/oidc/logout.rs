//! Ending a session at the provider: the RP-initiated logout URL, and revocation
//! of the refresh token (RFC 7009) so a copy of it is worthless.

use crate::config::Settings;
use crate::oidc::http::OidcHttp;
use crate::oidc::provider::Provider;
use openidconnect::core::CoreRevocableToken;
use openidconnect::{RefreshToken, RevocationUrl};
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

/// Revokes a refresh token; failures are logged, never shown (logout goes on).
pub async fn revoke_refresh_token(provider: &Provider, http: &OidcHttp, token: String) {
    let Some(endpoint) = provider.extra().revocation_endpoint.clone() else {
        return;
    };
    let url = match RevocationUrl::new(endpoint) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("provider revocation_endpoint is not a URL: {e}");
            return;
        }
    };
    let client = provider.client.clone().set_revocation_url(url);
    let request =
        match client.revoke_token(CoreRevocableToken::RefreshToken(RefreshToken::new(token))) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot build revocation request: {e}");
                return;
            }
        };
    match request.request_async(http).await {
        Ok(()) => tracing::debug!("refresh token revoked"),
        Err(e) => tracing::warn!(
            "refresh token revocation failed: {}",
            crate::oidc::provider::error_chain(&e)
        ),
    }
}
