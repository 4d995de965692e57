//! Renewing an access token with the refresh token (RFC 6749 section 6).
//!
//! No `scope` is sent, so the provider grants exactly what was granted before
//! (never more). Providers rotate refresh tokens: the answer's refresh token
//! replaces ours, and must be saved before anyone else refreshes (see
//! [`flows::refresh`](crate::flows::refresh), which guarantees one refresh per
//! expiry).
//!
//! A refresh is for a [`Target`]: the session's own access token, or one for a single
//! RFC 8707 resource (a route's audience), asked for with `resource=<uri>` (RFC 8707
//! section 2.2). The `resource` sent is the one the login named for that target
//! ([`Resources::token_request_resource`](crate::session::Resources::token_request_resource)).
//! The answer to a refresh for a resource is checked for what it is for
//! ([`resource_audience`](super::resource_audience)): a JWT access token whose `aud`
//! does not name the resource is left out of the tokens (reported in
//! [`Refreshed::other_audience`]), while the rotated refresh token is taken as always
//! (the old one is spent). Opaque access tokens cannot be read and are taken as before;
//! the session's own token (the default target) is not checked.
//! An ID token in the answer is checked ([`refreshed_id_token`](super::refreshed_id_token))
//! and reported, not used: the flow decides. A session whose tokens are bound to a
//! DPoP key proves possession of it on the refresh ([`crate::oidc::dpop`]): the new
//! access token is bound to the same key.
//!
//! A failure is judged by what the provider actually sent ([`RefreshError`]): any
//! 4xx, an OAuth error or a bare status, refuses the grant (the session ends), except
//! `invalid_target` (RFC 8707), which refuses one resource; no answer, a timeout,
//! 5xx, 408 and 429 are an outage (503, the session is kept). One 4xx is not about
//! the grant either: `invalid_client` says the provider did not accept spa-bff's
//! own client authentication (a wrong secret or key), which ending every user's
//! session would not fix: it is an outage, logged as what it is.

use crate::config::OidcSettings;
use crate::oidc::client_auth::{oauth_error, refused_client_auth, ClientAuthentication};
use crate::oidc::dpop::{DpopKey, DpopNonces, Proofs, TokenHttp};
use crate::oidc::http::{server_error_as_unavailable, HttpError, OidcHttp};
use crate::oidc::provider::{error_chain, Provider};
use crate::oidc::refreshed_id_token::{check_refreshed_id_token, RefreshedIdToken};
use crate::oidc::resource_audience::{resource_audience, ResourceAudience};
use crate::session::{SessionRecord, Target, Tokens};
use crate::time::UnixMs;
use openidconnect::core::CoreErrorResponseType;
use openidconnect::{OAuth2TokenResponse, RefreshToken, RequestTokenError};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;

/// Why a refresh did not produce new tokens.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider answered 4xx (`invalid_grant` or anything else, JSON or bare):
    /// the grant is gone (revoked, expired, refresh token reused) and the session
    /// must end. `detail` says what the provider sent (status, and a short excerpt
    /// of its answer with the refresh token blanked out).
    #[error("the provider refused the refresh token ({detail})")]
    Refused { detail: String },
    /// The provider will not issue a token for the resource asked for
    /// (`invalid_target`, RFC 8707 section 2), or the login never named it: the grant
    /// may be fine for everything else.
    #[error("no token for this resource ({detail})")]
    TargetRefused { detail: String },
    /// The session has no refresh token and its access token expired.
    #[error("the session has no refresh token")]
    NoRefreshToken,
    /// Unreachable, timed out, 5xx, 408/429, or an answer we cannot use: try again
    /// later, the session is kept.
    #[error("refresh failed: {0}")]
    Unavailable(String),
}

/// What a refresh brought.
#[derive(Debug)]
pub struct Refreshed {
    /// The session's tokens with the answer applied for the target
    /// ([`Tokens::refreshed`]); the ID token is still the session's. Without the
    /// answer's access token when it names another audience ([`Self::other_audience`]):
    /// then only the refresh token is new ([`Tokens::with_refresh_token_of`]).
    pub tokens: Tokens,
    /// The answer's ID token, checked.
    pub id_token: RefreshedIdToken,
    /// Set when the target was a resource and the answer's access token is a JWT
    /// whose `aud` does not name it: that token is in no field of this answer.
    pub other_audience: Option<OtherAudience>,
}

/// A token asked for `resource` that says it is for `audiences` (audience URIs, not
/// secrets: fit for a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherAudience {
    pub resource: String,
    pub audiences: Vec<String>,
}

/// Redeems the session's refresh token at the token endpoint for `target`; with a
/// proof of the session's DPoP key when it has one (`nonces` remembers the
/// provider's).
pub async fn refresh_tokens(
    provider: &Provider,
    http: &OidcHttp,
    oidc: &OidcSettings,
    nonces: &DpopNonces,
    record: &SessionRecord,
    target: Target<'_>,
    now: UnixMs,
) -> Result<Refreshed, RefreshError> {
    let tokens = &record.tokens;
    let current = tokens
        .refresh_token
        .as_ref()
        .ok_or(RefreshError::NoRefreshToken)?;
    let resource = record
        .resources
        .token_request_resource(target)
        .map_err(|_| RefreshError::TargetRefused {
            detail: "the login did not name this resource".into(),
        })?;
    let refresh_token = RefreshToken::new(current.expose().to_string());
    let mut request = provider
        .client
        .exchange_refresh_token(&refresh_token)
        .map_err(|e| RefreshError::Unavailable(format!("provider has no token endpoint: {e}")))?;
    let assertion = ClientAuthentication::new(oidc, provider)
        .assertion_params(now)
        .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
    for (name, value) in assertion {
        request = request.add_extra_param(name, value);
    }
    if let Some(resource) = resource {
        request = request.add_extra_param("resource", resource.to_string());
    }
    let key = match &record.dpop_key {
        Some(stored) => Some(
            DpopKey::from_stored(stored).map_err(|e| RefreshError::Unavailable(e.to_string()))?,
        ),
        None => None,
    };
    let observed = Observed {
        http: TokenHttp {
            http,
            proofs: key.as_ref().map(|key| Proofs { key, nonces }),
            now,
        },
        answer: RefCell::new(None),
    };
    let result = request.request_async(&observed).await;
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => {
            let seen = observed.answer.borrow_mut().take();
            let invalid_target = matches!(&e, RequestTokenError::ServerResponse(r)
                if matches!(r.error(), CoreErrorResponseType::Extension(code) if code == "invalid_target"));
            return Err(match classify(seen, &e, current.expose()) {
                RefreshError::Refused { detail } if invalid_target => {
                    RefreshError::TargetRefused { detail }
                }
                other => other,
            });
        }
    };
    observed
        .http
        .binding()
        .check(answer.token_type().as_ref())
        .map_err(RefreshError::Unavailable)?;
    let fresh = Tokens::from_response(&answer, tokens.id_token.clone(), now);
    let other_audience = match target {
        Target::Resource(resource) => {
            match resource_audience(fresh.access_token.expose(), resource) {
                ResourceAudience::Names | ResourceAudience::Unreadable => None,
                ResourceAudience::Other(audiences) => Some(OtherAudience {
                    resource: resource.to_string(),
                    audiences,
                }),
            }
        }
        // The session's own token: whatever the login's audience is (unchanged).
        Target::Default => None,
    };
    let tokens = match other_audience {
        None => tokens.refreshed(fresh, target),
        Some(_) => tokens.with_refresh_token_of(fresh),
    };
    Ok(Refreshed {
        tokens,
        id_token: check_refreshed_id_token(provider, &answer, record, now),
        other_audience,
    })
}

/// A failed refresh by what the provider sent: any 4xx (but 408 and 429, which
/// mean "later") refuses the grant, whether its body is an OAuth error or not;
/// everything else (no answer, a timeout, 5xx, an unusable 2xx) is an outage. So is a
/// refused DPoP proof (`invalid_dpop_proof`, or a nonce demanded again after the one
/// retry): about spa-bff's proof, not the grant.
fn classify<E: std::error::Error>(
    seen: Option<(u16, Vec<u8>)>,
    error: &E,
    refresh_token: &str,
) -> RefreshError {
    match seen {
        Some((status, body)) if refused_client_auth(status, &body) => RefreshError::Unavailable(
            format!("the provider refused spa-bff's client authentication (HTTP {status} invalid_client): check oidc.client_auth and the client secret or key"),
        ),
        Some((status, body)) if refused_dpop_proof(&body) => RefreshError::Unavailable(format!(
            "the provider refused the DPoP proof (HTTP {status}: {})",
            excerpt(&body, refresh_token)
        )),
        Some((status, body)) if (400..500).contains(&status) && status != 408 && status != 429 => {
            RefreshError::Refused {
                detail: format!("HTTP {status}: {}", excerpt(&body, refresh_token)),
            }
        }
        _ => RefreshError::Unavailable(error_chain(error)),
    }
}

/// Whether a 4xx is about the DPoP proof, not the grant.
fn refused_dpop_proof(body: &[u8]) -> bool {
    matches!(
        oauth_error(body).as_deref(),
        Some("invalid_dpop_proof" | "use_dpop_nonce")
    )
}

/// The start of a provider's answer, fit for a log line: printable, short, and
/// without the refresh token should the provider echo it.
fn excerpt(body: &[u8], refresh_token: &str) -> String {
    let text = String::from_utf8_lossy(body).replace(refresh_token, "[redacted]");
    let printable: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    match printable.trim() {
        "" => "empty body".into(),
        t => t.to_string(),
    }
}

/// The provider's HTTP client (with DPoP proofs when the session has a key), noting
/// the status and body of the answer so that a failed refresh can be judged by what
/// the provider actually sent.
struct Observed<'a> {
    http: TokenHttp<'a>,
    answer: RefCell<Option<(u16, Vec<u8>)>>,
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Observed<'_> {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.http.call_raw(request).await?;
            *self.answer.borrow_mut() = Some((response.status().as_u16(), response.body().clone()));
            server_error_as_unavailable(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Failed;

    fn verdict(status: Option<u16>, body: &str) -> String {
        match classify(
            status.map(|s| (s, body.as_bytes().to_vec())),
            &Failed,
            "rt-secret",
        ) {
            RefreshError::Refused { detail } => format!("refused: {detail}"),
            RefreshError::Unavailable(_) => "unavailable".into(),
            RefreshError::NoRefreshToken | RefreshError::TargetRefused { .. } => "none".into(),
        }
    }

    #[test]
    fn a_4xx_refuses_the_grant_and_anything_else_is_an_outage() {
        for (status, body, expected) in [
            (
                Some(400),
                r#"{"error":"invalid_grant"}"#,
                r#"refused: HTTP 400: {"error":"invalid_grant"}"#,
            ),
            (Some(400), "", "refused: HTTP 400: empty body"),
            (Some(401), "Unauthorized", "refused: HTTP 401: Unauthorized"),
            (
                Some(403),
                "no\nway rt-secret",
                "refused: HTTP 403: no way [redacted]",
            ),
            (Some(401), r#"{"error":"invalid_client"}"#, "unavailable"),
            (Some(400), r#"{"error":"invalid_client"}"#, "unavailable"),
            (Some(400), r#"{"error":"use_dpop_nonce"}"#, "unavailable"),
            (
                Some(400),
                r#"{"error":"invalid_dpop_proof"}"#,
                "unavailable",
            ),
            (Some(408), "", "unavailable"),
            (Some(429), "slow down", "unavailable"),
            (Some(500), "", "unavailable"),
            (Some(503), "", "unavailable"),
            (Some(200), "not json", "unavailable"),
            (Some(302), "", "unavailable"),
            (None, "", "unavailable"),
        ] {
            assert_eq!(verdict(status, body), expected, "{status:?} {body:?}");
        }
        let long = "x".repeat(1000);
        assert_eq!(
            verdict(Some(400), &long).len(),
            "refused: HTTP 400: ".len() + 200
        );
    }
}
