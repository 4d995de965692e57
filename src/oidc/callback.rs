//! Finishing a login: check the authorization response, exchange the code (with the
//! PKCE verifier and the configured client authentication), validate the ID token,
//! and build the session record.
//!
//! openidconnect validates the ID token's signature (against the provider's JWKS,
//! allowed algorithms only, never `none`), `iss`, `aud`, `exp` and `nonce`.
//! What it leaves to us, we check here: `azp` (when present it must be our client
//! id; several audiences need one), `iat` not in the future, `at_hash` when
//! present, `token_type`, the RFC 9207 `iss` response parameter, and that userinfo
//! speaks about the same `sub`.

use crate::error::{Error, LoginError};
use crate::oidc::http::OidcHttp;
use crate::oidc::provider::{error_chain, Provider, ProviderHandle};
use crate::secret::Sensitive;
use crate::session::{LoginState, Resources, SessionRecord, Target, Tokens};
use crate::time::UnixMs;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreIdToken, CoreTokenResponse, CoreTokenType};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClaimsVerificationError, Nonce, NonceVerifier,
    OAuth2TokenResponse, PkceCodeVerifier, RequestTokenError, SignatureVerificationError,
    TokenResponse,
};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Tolerated clock difference with the provider.
const CLOCK_SKEW_SECS: i64 = 60;

/// Claims that describe the token, not the user: not shown by `/user`.
pub(crate) const TOKEN_ONLY_CLAIMS: &[&str] = &["nonce", "at_hash", "c_hash", "s_hash"];
/// Claims userinfo may not override.
pub(crate) const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "nbf",
    "auth_time",
    "nonce",
    "sid",
    "acr",
    "amr",
    "at_hash",
    "c_hash",
    "jti",
];

/// The authorization response's query parameters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AuthorizationResponse {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

impl AuthorizationResponse {
    /// The response's parameters from the callback's query pairs; the first value
    /// of each wins, unknown ones are ignored.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut r = Self::default();
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "code" => &mut r.code,
                "state" => &mut r.state,
                "error" => &mut r.error,
                "error_description" => &mut r.error_description,
                "iss" => &mut r.iss,
                _ => continue,
            };
            slot.get_or_insert(v);
        }
        r
    }
}

/// Checks the authorization response (after the state was matched) and redeems it.
/// `resources` are the RFC 8707 resources the authorization request named: the code
/// exchange asks for the default one when there were several.
pub async fn complete_login(
    providers: &ProviderHandle,
    http: &OidcHttp,
    response: &AuthorizationResponse,
    login: LoginState,
    resources: Resources,
    now: UnixMs,
) -> Result<SessionRecord, Error> {
    let provider = providers.get()?;
    check_issuer_parameter(&provider, response.iss.as_deref())?;
    if let Some(error) = &response.error {
        return Err(LoginError::Provider {
            error: truncate(error, 100),
            description: response
                .error_description
                .as_deref()
                .map(|d| truncate(d, 300)),
        }
        .into());
    }
    let code = response.code.clone().ok_or(LoginError::MissingCode)?;
    let resource = resources
        .token_request_resource(Target::Default)
        .unwrap_or_default();
    let tokens = exchange_code(&provider, http, code, login.pkce_verifier, resource).await?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| LoginError::InvalidTokenResponse("no id_token".into()))?;
    let mut claims = verify_id_token(
        providers,
        http,
        provider.clone(),
        id_token,
        &tokens,
        &login.nonce,
        now,
    )
    .await?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| LoginError::InvalidIdToken("no sub".into()))?
        .to_string();
    let sid = claims.get("sid").and_then(Value::as_str).map(String::from);
    if let Some(info) = userinfo(&provider, http, tokens.access_token().secret(), &sub).await {
        for (k, v) in info {
            if !PROTOCOL_CLAIMS.contains(&k.as_str()) {
                claims.insert(k, v);
            }
        }
    }
    for k in TOKEN_ONLY_CLAIMS {
        claims.remove(*k);
    }
    Ok(SessionRecord {
        sub,
        sid,
        claims,
        tokens: Tokens::from_response(&tokens, Sensitive::new(id_token.to_string()), now),
        resources,
    })
}

/// RFC 9207: when the response names its issuer it must be ours; when the provider
/// promised to always name it, it must be there (mix-up attack defence).
fn check_issuer_parameter(provider: &Provider, iss: Option<&str>) -> Result<(), LoginError> {
    match iss {
        Some(iss) if iss == provider.issuer() => Ok(()),
        Some(_) => Err(LoginError::IssuerMismatch),
        None if provider
            .extra()
            .authorization_response_iss_parameter_supported =>
        {
            Err(LoginError::IssuerMismatch)
        }
        None => Ok(()),
    }
}

async fn exchange_code(
    provider: &Provider,
    http: &OidcHttp,
    code: String,
    verifier: String,
    resource: Option<&str>,
) -> Result<CoreTokenResponse, Error> {
    let mut request = provider
        .client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Error::Internal(format!("provider has no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier));
    if let Some(resource) = resource {
        request = request.add_extra_param("resource", resource.to_string());
    }
    let tokens = request.request_async(http).await.map_err(|e| match e {
        RequestTokenError::ServerResponse(r) => {
            LoginError::CodeRejected(format!("{}", r.error())).into()
        }
        RequestTokenError::Request(e) => Error::ProviderUnavailable(format!("token endpoint: {e}")),
        other => LoginError::InvalidTokenResponse(error_chain(&other)).into(),
    })?;
    if *tokens.token_type() != CoreTokenType::Bearer {
        return Err(LoginError::InvalidTokenResponse(format!(
            "token_type {:?} is not Bearer",
            tokens.token_type()
        ))
        .into());
    }
    Ok(tokens)
}

async fn verify_id_token(
    providers: &ProviderHandle,
    http: &OidcHttp,
    provider: Arc<Provider>,
    id_token: &CoreIdToken,
    tokens: &CoreTokenResponse,
    nonce: &str,
    now: UnixMs,
) -> Result<Map<String, Value>, Error> {
    let nonce = Nonce::new(nonce.to_string());
    match check_id_token(&provider, id_token, tokens, &nonce, now) {
        // A key id we do not know: the provider may have rotated its keys.
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => match providers.refresh_jwks(http, &provider).await? {
            Some(p) => check_id_token(&p, id_token, tokens, &nonce, now),
            None => Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )),
        },
        other => other,
    }
    .map_err(|e| LoginError::InvalidIdToken(error_chain(&e)).into())
}

/// Every check of an ID token but the nonce's, which `nonce` decides (the login's
/// must match; a refreshed one follows OpenID Connect Core 12.2).
pub(crate) fn check_id_token(
    provider: &Provider,
    id_token: &CoreIdToken,
    tokens: &CoreTokenResponse,
    nonce: impl NonceVerifier,
    now: UnixMs,
) -> Result<Map<String, Value>, ClaimsVerificationError> {
    let now_secs = (now / 1000) as i64;
    let verifier = provider
        .client
        .id_token_verifier()
        .set_issue_time_verifier_fn(move |iat| {
            if iat.timestamp() > now_secs + CLOCK_SKEW_SECS {
                Err("issued in the future".to_string())
            } else {
                Ok(())
            }
        });
    let claims = id_token.claims(&verifier, nonce)?;
    // OpenID Connect Core 3.1.3.7 steps 4-5, which openidconnect leaves undone: an
    // `azp` must name us, and several audiences need one.
    match claims.authorized_party() {
        Some(azp) if **azp != **provider.client.client_id() => {
            return Err(ClaimsVerificationError::InvalidAudience(format!(
                "azp names another client ({})",
                truncate(azp, 100)
            )));
        }
        None if claims.audiences().len() > 1 => {
            return Err(ClaimsVerificationError::InvalidAudience(
                "several audiences and no azp".into(),
            ));
        }
        _ => {}
    }
    if let Some(expected) = claims.access_token_hash() {
        let other = |e: &dyn std::fmt::Display| ClaimsVerificationError::Other(e.to_string());
        let alg = id_token.signing_alg().map_err(|e| other(&e))?;
        let key = id_token.signing_key(&verifier).map_err(|e| other(&e))?;
        let actual =
            AccessTokenHash::from_token(tokens.access_token(), alg, key).map_err(|e| other(&e))?;
        if actual != *expected {
            return Err(ClaimsVerificationError::Other("at_hash mismatch".into()));
        }
    }
    payload_claims(&id_token.to_string())
        .ok_or_else(|| ClaimsVerificationError::Other("payload is not a JSON object".into()))
}

/// The JSON payload of a JWT whose signature was already verified.
pub(crate) fn payload_claims(jwt: &str) -> Option<Map<String, Value>> {
    jwt.split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
}

/// The provider's userinfo claims, or `None` when it has no such endpoint, refuses
/// this access token (common for JWT access tokens bound to an API), or answers
/// about another subject (then the answer must not be used at all).
async fn userinfo(
    provider: &Provider,
    http: &OidcHttp,
    access_token: &str,
    sub: &str,
) -> Option<Map<String, Value>> {
    let endpoint = provider.metadata.userinfo_endpoint()?;
    let res = http
        .get_with_bearer(endpoint.as_str(), access_token)
        .await
        .map_err(|e| tracing::warn!("userinfo unavailable; using ID token claims only: {e}"))
        .ok()?;
    if !res.status.is_success() {
        tracing::debug!(
            status = res.status.as_u16(),
            "userinfo refused the access token; using ID token claims only"
        );
        return None;
    }
    let info: Map<String, Value> = serde_json::from_slice(&res.body).ok()?;
    if info.get("sub").and_then(Value::as_str) != Some(sub) {
        tracing::warn!("userinfo answered for another subject; ignoring it");
        return None;
    }
    Some(info)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
