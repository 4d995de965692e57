//! Finishing a login: check the authorization response, exchange the code (with the
//! PKCE verifier and the configured client authentication), validate the ID token,
//! and build the session record.
//!
//! openidconnect validates the ID token's signature (against the provider's JWKS,
//! allowed algorithms only, never `none`), `iss`, `aud`, `exp` and `nonce`.
//! What it leaves to us, we check here: `azp` (when present it must be our client
//! id; several audiences need one), `iat` not in the future, `at_hash` when
//! present, `token_type` (Bearer, or DPoP when a proof went with the exchange), the
//! RFC 9207 `iss` response parameter, that userinfo speaks about the same `sub`, and,
//! when `/login` asked for a fresh sign-in (`prompt=login`, `max_age`), the ID token's
//! `auth_time` ([`check_auth_time`]).
//!
//! With `oidc.dpop`, the new session's DPoP key is made here, before the code
//! exchange: the exchange and userinfo prove possession of it, and the record keeps it
//! ([`crate::oidc::dpop`]).
//!
//! A silent login (`prompt=none`) that the provider answers with one of
//! [`SILENT_LOGIN_ERRORS`] is not a failure: it completes as
//! [`Completion::NotSignedIn`].

use crate::config::OidcSettings;
use crate::error::{Error, LoginError};
use crate::oidc::client_auth::ClientAuthentication;
use crate::oidc::dpop::{DpopKey, DpopNonces, Proofs, TokenHttp};
use crate::oidc::http::{OidcHttp, Outgoing};
use crate::oidc::login::SILENT_LOGIN_ERRORS;
use crate::oidc::provider::{error_chain, Provider, ProviderHandle};
use crate::secret::Sensitive;
use crate::session::{LoginState, Prompt, Resources, SessionRecord, Target, Tokens};
use crate::time::UnixMs;
use openidconnect::core::{CoreErrorResponseType, CoreIdToken, CoreTokenResponse};
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

/// How a login the provider answered ended.
#[derive(Debug)]
pub enum Completion {
    /// The user is signed in: the new session's record.
    SignedIn(Box<SessionRecord>),
    /// A silent login (`prompt=none`) the provider could not complete without a
    /// page; its error, one of [`SILENT_LOGIN_ERRORS`].
    NotSignedIn(&'static str),
}

/// Checks the authorization response (after the state was matched) and redeems it.
/// `resources` are the RFC 8707 resources the authorization request named: the code
/// exchange asks for the default one when there were several. With `oidc.dpop`, the
/// new session's DPoP key is made here, just before the code exchange, which binds
/// the tokens to it ([`crate::oidc::dpop`]); `nonces` remembers the provider's.
#[allow(clippy::too_many_arguments)]
pub async fn complete_login(
    providers: &ProviderHandle,
    http: &OidcHttp,
    oidc: &OidcSettings,
    nonces: &DpopNonces,
    response: &AuthorizationResponse,
    login: LoginState,
    resources: Resources,
    now: UnixMs,
) -> Result<Completion, Error> {
    let provider = providers.get()?;
    check_issuer_parameter(&provider, response.iss.as_deref())?;
    if let Some(error) = &response.error {
        let silent = SILENT_LOGIN_ERRORS.iter().find(|e| **e == error.as_str());
        if let (Prompt::Silent, Some(silent)) = (login.prompt, silent) {
            return Ok(Completion::NotSignedIn(silent));
        }
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
    let (prompt, max_age) = (login.prompt, login.max_age);
    let auth = ClientAuthentication::new(oidc, &provider);
    let resource = resources
        .token_request_resource(Target::Default)
        .unwrap_or_default();
    // The key the login started with (its thumbprint bound the code); a login
    // started without one (DPoP just switched on) gets a new one here.
    let dpop = match (oidc.dpop, login.dpop_key.clone()) {
        (true, Some(stored)) => Some((DpopKey::from_stored(&stored)?, stored)),
        (true, None) => Some(DpopKey::generate()?),
        (false, _) => None,
    };
    let proofs = dpop.as_ref().map(|(key, _)| Proofs { key, nonces });
    let token_http = TokenHttp { http, proofs, now };
    let tokens = exchange_code(
        &provider,
        &token_http,
        &auth,
        code,
        login.pkce_verifier,
        resource,
        now,
    )
    .await?;
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
    check_auth_time(claims.get("auth_time"), prompt, max_age, now)
        .map_err(LoginError::StaleAuthentication)?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| LoginError::InvalidIdToken("no sub".into()))?
        .to_string();
    let sid = claims.get("sid").and_then(Value::as_str).map(String::from);
    let access_token = tokens.access_token().secret();
    if let Some(info) = userinfo(&provider, http, proofs, access_token, &sub, now).await {
        for (k, v) in info {
            if !PROTOCOL_CLAIMS.contains(&k.as_str()) {
                claims.insert(k, v);
            }
        }
    }
    for k in TOKEN_ONLY_CLAIMS {
        claims.remove(*k);
    }
    Ok(Completion::SignedIn(Box::new(SessionRecord {
        sub,
        sid,
        claims,
        tokens: Tokens::from_response(&tokens, Sensitive::new(id_token.to_string()), now),
        resources,
        dpop_key: dpop.map(|(_, stored)| stored),
    })))
}

/// OpenID Connect Core 3.1.2.1 and 3.1.3.7 (12, 13): when `/login` asked for a
/// fresh sign-in, the ID token's `auth_time` must be there and show one:
/// `prompt=login` needs a sign-in after the login started, `max_age` one within
/// that many seconds; never in the future. [`CLOCK_SKEW_SECS`] of tolerance each.
/// Nothing is checked when neither was asked.
pub fn check_auth_time(
    auth_time: Option<&Value>,
    prompt: Prompt,
    max_age: Option<u32>,
    now: UnixMs,
) -> Result<(), String> {
    if !matches!(prompt, Prompt::Login { .. }) && max_age.is_none() {
        return Ok(());
    }
    let now = (now / 1000) as i64;
    let Some(auth_time) =
        auth_time.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    else {
        return Err("the ID token has no auth_time although a fresh sign-in was asked for".into());
    };
    if auth_time > now + CLOCK_SKEW_SECS {
        return Err("the ID token's auth_time is in the future".into());
    }
    if let Prompt::Login { since } = prompt {
        if auth_time < since as i64 - CLOCK_SKEW_SECS {
            return Err(format!(
                "prompt=login, but the user signed in {} s before the login started",
                since as i64 - auth_time
            ));
        }
    }
    if let Some(max_age) = max_age {
        if now - auth_time > i64::from(max_age) + CLOCK_SKEW_SECS {
            return Err(format!(
                "max_age={max_age}, but the user signed in {} s ago",
                now - auth_time
            ));
        }
    }
    Ok(())
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
    http: &TokenHttp<'_>,
    auth: &ClientAuthentication<'_>,
    code: String,
    verifier: String,
    resource: Option<&str>,
    now: UnixMs,
) -> Result<CoreTokenResponse, Error> {
    let mut request = provider
        .client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Error::Internal(format!("provider has no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier));
    for (name, value) in auth.assertion_params(now)? {
        request = request.add_extra_param(name, value);
    }
    if let Some(resource) = resource {
        request = request.add_extra_param("resource", resource.to_string());
    }
    let tokens = request.request_async(http).await.map_err(|e| match e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == CoreErrorResponseType::InvalidClient =>
        {
            LoginError::ClientAuthRejected(format!(
                "token endpoint: invalid_client{}",
                r.error_description()
                    .map(|d| format!(" ({})", truncate(d, 200)))
                    .unwrap_or_default()
            ))
            .into()
        }
        RequestTokenError::ServerResponse(r) => {
            LoginError::CodeRejected(format!("{}", r.error())).into()
        }
        RequestTokenError::Request(e) => Error::ProviderUnavailable(format!("token endpoint: {e}")),
        other => LoginError::InvalidTokenResponse(error_chain(&other)).into(),
    })?;
    http.binding()
        .check(tokens.token_type().as_ref())
        .map_err(LoginError::InvalidTokenResponse)?;
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
    super::jwt::claims(&id_token.to_string())
        .ok_or_else(|| ClaimsVerificationError::Other("payload is not a JSON object".into()))
}

/// The provider's userinfo claims, or `None` when it has no such endpoint, refuses
/// this access token (common for JWT access tokens bound to an API), or answers
/// about another subject (then the answer must not be used at all). A DPoP-bound
/// access token goes with its scheme and a proof (`ath`).
async fn userinfo(
    provider: &Provider,
    http: &OidcHttp,
    proofs: Option<Proofs<'_>>,
    access_token: &str,
    sub: &str,
    now: UnixMs,
) -> Option<Map<String, Value>> {
    let endpoint = provider.metadata.userinfo_endpoint()?;
    let request = Outgoing::get_json(endpoint.as_str());
    let res = match proofs {
        None => {
            http.send(request.with_header("Authorization", format!("Bearer {access_token}")))
                .await
        }
        Some(p) => {
            let request = request.with_header("Authorization", format!("DPoP {access_token}"));
            p.send(http, request, Some(access_token), now).await
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_time_must_show_the_fresh_sign_in_that_was_asked_for() {
        let now: UnixMs = 1_700_000_000_000;
        let secs = 1_700_000_000i64;
        let login = Prompt::Login {
            since: secs as u64 - 30,
        };
        for (auth_time, prompt, max_age, ok) in [
            // Nothing asked: nothing checked, not even presence.
            (None, Prompt::Default, None, true),
            (Some(json!(1)), Prompt::Default, None, true),
            (None, Prompt::Silent, None, true),
            // prompt=login: after the login started (60 s tolerance).
            (Some(json!(secs - 10)), login, None, true),
            (Some(json!(secs - 90)), login, None, true),
            (Some(json!(secs - 91)), login, None, false),
            (Some(json!(secs - 3600)), login, None, false),
            (None, login, None, false),
            (Some(json!("yesterday")), login, None, false),
            // max_age: within that many seconds (60 s tolerance).
            (Some(json!(secs - 300)), Prompt::Default, Some(300), true),
            (Some(json!(secs - 360)), Prompt::Default, Some(300), true),
            (Some(json!(secs - 361)), Prompt::Default, Some(300), false),
            (Some(json!(secs)), Prompt::Default, Some(0), true),
            (Some(json!(secs - 61)), Prompt::Default, Some(0), false),
            (None, Prompt::Default, Some(300), false),
            (
                Some(json!((secs - 5) as f64)),
                Prompt::Default,
                Some(300),
                true,
            ),
            // Never in the future.
            (Some(json!(secs + 61)), login, Some(300), false),
            (Some(json!(secs + 60)), login, Some(300), true),
        ] {
            assert_eq!(
                check_auth_time(auth_time.as_ref(), prompt, max_age, now).is_ok(),
                ok,
                "{auth_time:?} {prompt:?} {max_age:?}"
            );
        }
    }
}
