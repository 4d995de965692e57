//! Renewing an access token with the refresh token (RFC 6749 section 6).
//!
//! No `scope` is sent, so the provider grants exactly what was granted before
//! (never more). Providers rotate refresh tokens: the answer's refresh token
//! replaces ours, and must be saved before anyone else refreshes (see
//! [`flows::refresh`](crate::flows::refresh), which guarantees one refresh per
//! expiry). The refreshed ID
//! token, when one comes back, is not used: the login's ID token stays the
//! `id_token_hint` for logout and the claims do not change.

use crate::oidc::http::OidcHttp;
use crate::oidc::provider::{error_chain, Provider};
use crate::session::Tokens;
use crate::time::UnixMs;
use openidconnect::core::{CoreErrorResponseType, CoreTokenType};
use openidconnect::{OAuth2TokenResponse, RefreshToken, RequestTokenError};

/// Why a refresh did not produce new tokens.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The grant is gone (revoked, expired, refresh token reused): the session
    /// cannot be renewed and must end.
    #[error("the provider refused the refresh token (invalid_grant)")]
    GrantRevoked,
    /// The session has no refresh token and its access token expired.
    #[error("the session has no refresh token")]
    NoRefreshToken,
    /// Unreachable, 5xx, or an answer we cannot use: try again later.
    #[error("refresh failed: {0}")]
    Unavailable(String),
}

/// Redeems `tokens.refresh_token` at the token endpoint; returns the new tokens
/// (the old refresh token and scope are kept when the answer has none).
pub async fn refresh_tokens(
    provider: &Provider,
    http: &OidcHttp,
    tokens: &Tokens,
    now: UnixMs,
) -> Result<Tokens, RefreshError> {
    let current = tokens
        .refresh_token
        .as_ref()
        .ok_or(RefreshError::NoRefreshToken)?;
    let refresh_token = RefreshToken::new(current.expose().to_string());
    let request = provider
        .client
        .exchange_refresh_token(&refresh_token)
        .map_err(|e| RefreshError::Unavailable(format!("provider has no token endpoint: {e}")))?;
    let answer = request.request_async(http).await.map_err(|e| match e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == CoreErrorResponseType::InvalidGrant =>
        {
            RefreshError::GrantRevoked
        }
        RequestTokenError::ServerResponse(r) => {
            RefreshError::Unavailable(format!("token endpoint answered {}", r.error()))
        }
        other => RefreshError::Unavailable(error_chain(&other)),
    })?;
    if *answer.token_type() != CoreTokenType::Bearer {
        return Err(RefreshError::Unavailable(format!(
            "token_type {:?} is not Bearer",
            answer.token_type()
        )));
    }
    let fresh = Tokens::from_response(&answer, tokens.id_token.clone(), now);
    Ok(Tokens {
        refresh_token: fresh.refresh_token.or_else(|| tokens.refresh_token.clone()),
        scope: fresh.scope.or_else(|| tokens.scope.clone()),
        ..fresh
    })
}
