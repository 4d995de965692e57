//! Client authentication: the one way spa-bff proves to the provider that it is its
//! client, used by every token-endpoint-like request (the code exchange, refresh,
//! client credentials, revocation and pushed authorization requests).
//!
//! - `client_secret_basic`: HTTP Basic with the client id and secret, each
//!   form-urlencoded first (RFC 6749 section 2.3.1);
//! - `client_secret_post`: `client_id` and `client_secret` in the form;
//! - `private_key_jwt` (RFC 7523, OpenID Connect Core section 9): no secret;
//!   `client_id`, `client_assertion_type` (`...:jwt-bearer`) and `client_assertion`, a
//!   JWT signed with `oidc.client_key_file` whose header names the key (`kid`, its
//!   RFC 7638 thumbprint) and `alg`, and whose claims are `iss` = `sub` = the client
//!   id, `aud` = the provider's issuer (or its token endpoint, with
//!   `oidc.client_assertion_audience = "token_endpoint"`), a fresh random `jti`,
//!   `iat` and `exp` [`ASSERTION_LIFETIME_SECS`] later. A new assertion per request:
//!   providers refuse a `jti` twice.
//!
//! The issuer is the default audience: the 2025 updates that followed the
//! audience-injection findings against `private_key_jwt` (the OpenID Connect Core
//! errata, and draft-ietf-oauth-rfc7523bis) make the authorization server's issuer
//! identifier, as a single string, the audience to use: an assertion naming an
//! endpoint URL could be accepted by another party that serves it. node-oidc-provider
//! and Auth0 accept it; providers that document the token endpoint URL (Okta) get it
//! by configuration.
//!
//! openidconnect's requests (code exchange, refresh) apply the secret methods from
//! the client [`Provider`] built, and carry the assertion as extra parameters
//! ([`ClientAuthentication::assertion_params`]); spa-bff's own requests take
//! everything from [`ClientAuthentication::credentials`].

use crate::config::{AssertionAudience, ClientAuth, OidcSettings};
use crate::error::Error;
use crate::oidc::http::{Answer, HttpError, OidcHttp, Outgoing};
use crate::oidc::provider::Provider;
use crate::session::crypto::random_token;
use crate::time::UnixMs;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 section 2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client assertion is valid: one request's worth, with room for clock
/// differences (providers add their own tolerance).
pub const ASSERTION_LIFETIME_SECS: u64 = 60;

/// Authenticates spa-bff's requests to one provider.
pub struct ClientAuthentication<'a> {
    oidc: &'a OidcSettings,
    provider: &'a Provider,
}

/// What one of spa-bff's own requests carries to authenticate it: form fields,
/// and HTTP Basic credentials for `client_secret_basic`. Not `Debug`: it holds the
/// secret or a live assertion.
pub struct Credentials {
    pub fields: Vec<(&'static str, String)>,
    pub basic: Option<(String, String)>,
}

impl Credentials {
    /// `POST url` with `form` plus these credentials.
    pub async fn post(
        &self,
        http: &OidcHttp,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Answer, HttpError> {
        http.send(self.request(url, form)).await
    }

    /// The request `POST url` with `form` plus these credentials, to send (again).
    pub fn request(&self, url: &str, form: &[(&str, &str)]) -> Outgoing {
        let mut all: Vec<(&str, &str)> = form.to_vec();
        all.extend(self.fields.iter().map(|(k, v)| (*k, v.as_str())));
        let basic = self.basic.as_ref().map(|(id, s)| (id.as_str(), s.as_str()));
        Outgoing::form_post(url, &all, basic)
    }

    /// Whether the form fields name the client (all methods but Basic).
    pub fn names_client(&self) -> bool {
        self.fields.iter().any(|(k, _)| *k == "client_id")
    }
}

impl<'a> ClientAuthentication<'a> {
    pub fn new(oidc: &'a OidcSettings, provider: &'a Provider) -> Self {
        Self { oidc, provider }
    }

    /// The extra parameters of an openidconnect token request: the client
    /// assertion for `private_key_jwt`, nothing for the secret methods (the
    /// openidconnect client applies those itself).
    pub fn assertion_params(&self, now: UnixMs) -> Result<Vec<(&'static str, String)>, Error> {
        match self.oidc.client_auth {
            ClientAuth::PrivateKeyJwt => Ok(vec![
                ("client_assertion_type", ASSERTION_TYPE.to_string()),
                ("client_assertion", self.assertion(now)?),
            ]),
            ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost => Ok(Vec::new()),
        }
    }

    /// Everything one of spa-bff's own requests needs to authenticate it.
    pub fn credentials(&self, now: UnixMs) -> Result<Credentials, Error> {
        let id = self.oidc.client_id.clone();
        let secret = || {
            self.oidc
                .client_secret
                .as_ref()
                .map(|s| s.expose().to_string())
                .ok_or_else(|| Error::Internal("client_secret missing".into()))
        };
        Ok(match self.oidc.client_auth {
            ClientAuth::ClientSecretBasic => Credentials {
                fields: Vec::new(),
                basic: Some((id, secret()?)),
            },
            ClientAuth::ClientSecretPost => Credentials {
                fields: vec![("client_id", id), ("client_secret", secret()?)],
                basic: None,
            },
            ClientAuth::PrivateKeyJwt => {
                let mut fields = vec![("client_id", id)];
                fields.extend(self.assertion_params(now)?);
                Credentials {
                    fields,
                    basic: None,
                }
            }
        })
    }

    /// A fresh client assertion (RFC 7523 section 3), signed with the client key.
    fn assertion(&self, now: UnixMs) -> Result<String, Error> {
        let key = self
            .oidc
            .client_key
            .as_ref()
            .ok_or_else(|| Error::Internal("private_key_jwt without a client key".into()))?;
        let aud = match self.oidc.client_assertion_audience {
            AssertionAudience::Issuer => self.provider.issuer().to_string(),
            AssertionAudience::TokenEndpoint => self
                .provider
                .metadata
                .token_endpoint()
                .map(|u| u.as_str().to_string())
                .ok_or_else(|| Error::Internal("the provider has no token endpoint".into()))?,
        };
        let iat = now / 1000;
        let header = json!({ "alg": key.alg().name(), "kid": key.kid(), "typ": "JWT" });
        let claims = json!({
            "iss": self.oidc.client_id,
            "sub": self.oidc.client_id,
            "aud": aud,
            "jti": random_token(24),
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let signature = key
            .sign(input.as_bytes())
            .map_err(|e| Error::Internal(format!("client assertion: {e}")))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Whether a provider's 4xx answer (its JSON `error`) says it did not accept
/// spa-bff's client authentication: a configuration problem (wrong secret or key,
/// key not registered), never the user's.
pub fn refused_client_auth(status: u16, body: &[u8]) -> bool {
    (status == 400 || status == 401) && oauth_error(body).as_deref() == Some("invalid_client")
}

/// The OAuth `error` code of a provider's JSON answer, if it is a short, plain
/// token (never the raw body).
pub fn oauth_error(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = value.get("error")?.as_str()?;
    let plain = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    plain.then(|| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_invalid_client_error_is_a_client_authentication_refusal() {
        for (status, body, expected) in [
            (401, r#"{"error":"invalid_client"}"#, true),
            (
                400,
                r#"{"error":"invalid_client","error_description":"x"}"#,
                true,
            ),
            (400, r#"{"error":"invalid_grant"}"#, false),
            (401, "Unauthorized", false),
            (500, r#"{"error":"invalid_client"}"#, false),
        ] {
            assert_eq!(
                refused_client_auth(status, body.as_bytes()),
                expected,
                "{status} {body}"
            );
        }
        assert_eq!(oauth_error(br#"{"error":"<script>"}"#), None);
        assert_eq!(
            oauth_error(br#"{"error":"unauthorized_client"}"#).as_deref(),
            Some("unauthorized_client")
        );
    }
}
