//! spa-bff's own access token: the client credentials grant (RFC 6749 section 4.4)
//! for `token = "client"` routes, with the route's `scopes`, its RFC 8707
//! `resource` and, for providers that want it instead (Auth0), its `audience`.
//! The request is authenticated like every other ([`ClientAuthentication`]).
//!
//! A failure is judged by what the provider sent ([`ClientTokenError`]): a 4xx
//! refuses the grant (the client may not use it, a scope or resource it may not
//! have, or its client authentication), anything else is an outage. Either way the
//! route answers 503; the flow ([`crate::flows::client_token`]) decides how often to
//! ask again and what to log.

use crate::config::OidcSettings;
use crate::oidc::client_auth::{oauth_error, refused_client_auth, ClientAuthentication};
use crate::oidc::dpop::{self, Binding, Proofs};
use crate::oidc::http::OidcHttp;
use crate::oidc::provider::Provider;
use crate::secret::Sensitive;
use crate::time::UnixMs;
use serde_json::Value;
use std::time::Duration;

/// What a client-credentials token is asked for.
#[derive(Debug, Clone, Copy)]
pub struct TokenAsk<'a> {
    pub scopes: &'a [String],
    pub resource: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// An access token the provider issued to spa-bff itself.
#[derive(Debug, Clone)]
pub struct ClientToken {
    pub access_token: Sensitive,
    /// `expires_in`, when the provider said.
    pub lifetime: Option<Duration>,
}

/// Why no token came back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientTokenError {
    /// The provider did not accept spa-bff's client authentication
    /// (`invalid_client`): the secret or key, or its registration, is wrong.
    #[error("the provider refused spa-bff's client authentication (HTTP {status} invalid_client): check oidc.client_auth and the client secret, or the client key and the public key registered at the provider")]
    ClientAuthRefused { status: u16 },
    /// Any other 4xx: the client may not use the grant, or not with these scopes
    /// or this resource (`unauthorized_client`, `invalid_scope`, `invalid_target`...).
    #[error("the provider refused the client credentials grant (HTTP {status} {code})")]
    Refused { status: u16, code: String },
    /// Unreachable, timed out, 5xx, 408/429, or an answer whose token is not of the
    /// expected type (Bearer, or DPoP when a proof was sent).
    #[error("client credentials token unavailable: {0}")]
    Unavailable(String),
}

/// Asks the token endpoint for an access token for spa-bff itself; with `proofs`,
/// one bound to their key (DPoP).
pub async fn request_client_token(
    provider: &Provider,
    http: &OidcHttp,
    oidc: &OidcSettings,
    ask: TokenAsk<'_>,
    proofs: Option<Proofs<'_>>,
    now: UnixMs,
) -> Result<ClientToken, ClientTokenError> {
    let endpoint = provider.metadata.token_endpoint().ok_or_else(|| {
        ClientTokenError::Unavailable("the provider has no token endpoint".into())
    })?;
    let credentials = ClientAuthentication::new(oidc, provider)
        .credentials(now)
        .map_err(|e| ClientTokenError::Unavailable(e.to_string()))?;
    let scope = ask.scopes.join(" ");
    let mut form = vec![("grant_type", "client_credentials")];
    if !scope.is_empty() {
        form.push(("scope", &scope));
    }
    if let Some(resource) = ask.resource {
        form.push(("resource", resource));
    }
    if let Some(audience) = ask.audience {
        form.push(("audience", audience));
    }
    let request = credentials.request(endpoint.as_str(), &form);
    let answer = dpop::send(http, proofs, request, now)
        .await
        .map_err(|e| ClientTokenError::Unavailable(e.to_string()))?;
    let status = answer.status.as_u16();
    if refused_client_auth(status, &answer.body) {
        return Err(ClientTokenError::ClientAuthRefused { status });
    }
    if (400..500).contains(&status) && status != 408 && status != 429 {
        let code = oauth_error(&answer.body).unwrap_or_else(|| "no OAuth error".into());
        return Err(ClientTokenError::Refused { status, code });
    }
    if !answer.status.is_success() {
        return Err(ClientTokenError::Unavailable(format!(
            "the token endpoint answered {status}"
        )));
    }
    parse_token(&answer.body, Binding::of(proofs.as_ref()))
}

/// A token answer: `access_token`, `token_type` as `binding` needs (Bearer, or DPoP
/// when a proof was sent), optional `expires_in`.
fn parse_token(body: &[u8], binding: Binding) -> Result<ClientToken, ClientTokenError> {
    let unusable =
        |why: &str| ClientTokenError::Unavailable(format!("unusable token answer: {why}"));
    let json: Value = serde_json::from_slice(body).map_err(|_| unusable("not JSON"))?;
    let access_token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unusable("no access_token"))?;
    let token_type = json.get("token_type").and_then(Value::as_str).unwrap_or("");
    binding.check(token_type).map_err(|e| unusable(&e))?;
    let lifetime = match json.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .map(Duration::from_secs)
                .ok_or_else(|| unusable("expires_in is not a number of seconds"))?,
        ),
    };
    Ok(ClientToken {
        access_token: Sensitive::new(access_token),
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_bearer(body: &[u8]) -> Result<ClientToken, ClientTokenError> {
        parse_token(body, Binding::Bearer)
    }

    #[test]
    fn only_a_token_of_the_expected_type_with_a_sane_expiry_is_taken() {
        let bound = br#"{"access_token":"a","token_type":"DPoP","expires_in":300}"#;
        assert!(parse_token(bound, Binding::Dpop).is_ok());
        assert!(parse_token(bound, Binding::Bearer).is_err());
        let unbound = br#"{"access_token":"a","token_type":"Bearer","expires_in":300}"#;
        assert!(parse_token(unbound, Binding::Dpop).is_err());
        let ok = parse_bearer(br#"{"access_token":"a","token_type":"Bearer","expires_in":300}"#)
            .unwrap();
        assert_eq!(ok.access_token.expose(), "a");
        assert_eq!(ok.lifetime, Some(Duration::from_secs(300)));
        let quoted =
            parse_bearer(br#"{"access_token":"a","token_type":"bearer","expires_in":"60"}"#)
                .unwrap();
        assert_eq!(quoted.lifetime, Some(Duration::from_secs(60)));
        let forever = parse_bearer(br#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(forever.lifetime, None);
        for bad in [
            &br#"{"access_token":"a","token_type":"DPoP"}"#[..],
            br#"{"access_token":"","token_type":"Bearer"}"#,
            br#"{"token_type":"Bearer"}"#,
            br#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
            b"not json",
        ] {
            assert!(
                matches!(parse_bearer(bad), Err(ClientTokenError::Unavailable(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
