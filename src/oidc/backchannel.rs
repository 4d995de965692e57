//! OpenID Connect Back-Channel Logout 1.0: the provider tells spa-bff, server to
//! server, that a user's session at the provider ended, and spa-bff ends every
//! session that belongs to it.
//!
//! The logout token is a JWT checked as the specification's section 2.6 says:
//! signature with the provider's keys (asymmetric algorithms the provider
//! advertises; never `none` or HMAC), `iss`, `aud` (our client id), `iat` recent,
//! `exp` when present, the back-channel logout `events` member, `sid` or `sub`,
//! no `nonce`, and a `jti` seen only once.

use crate::error::Error;
use crate::oidc::http::OidcHttp;
use crate::oidc::provider::{Provider, ProviderHandle};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;

pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Tolerated clock difference with the provider, and the oldest `iat` accepted.
const LEEWAY_SECS: u64 = 60;
pub const MAX_AGE_SECS: u64 = 600;

/// Whom a valid logout token logs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub jti: String,
    pub sid: Option<String>,
    pub sub: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    iat: Option<u64>,
    jti: Option<String>,
    events: Option<Map<String, Value>>,
    sid: Option<String>,
    sub: Option<String>,
    nonce: Option<Value>,
}

/// Verifies a logout token; refreshes the provider's keys once on an unknown `kid`.
pub async fn verify_logout_token(
    providers: &ProviderHandle,
    http: &OidcHttp,
    client_id: &str,
    token: &str,
    now_secs: u64,
) -> Result<LogoutClaims, Error> {
    let provider = providers.get()?;
    match verify_with(&provider, client_id, token, now_secs) {
        Err(Verdict::UnknownKey) => match providers.refresh_jwks(http, &provider).await? {
            Some(p) => verify_with(&p, client_id, token, now_secs),
            None => Err(Verdict::UnknownKey),
        },
        other => other,
    }
    .map_err(|v| Error::InvalidLogoutToken(v.to_string()))
}

#[derive(Debug, thiserror::Error)]
enum Verdict {
    #[error("signed by a key the provider does not publish")]
    UnknownKey,
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> Verdict {
    Verdict::Invalid(msg.into())
}

fn verify_with(
    provider: &Provider,
    client_id: &str,
    token: &str,
    now_secs: u64,
) -> Result<LogoutClaims, Verdict> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("header: {e}")))?;
    let advertised: Vec<String> = provider
        .metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .filter_map(|a| serde_json::to_value(a).ok()?.as_str().map(String::from))
        .collect();
    let alg_name = format!("{:?}", header.alg);
    if !is_asymmetric(header.alg) || !advertised.contains(&alg_name) {
        return Err(invalid(format!("algorithm {alg_name} is not allowed")));
    }
    let jwks: JwkSet = serde_json::to_value(provider.metadata.jwks())
        .and_then(serde_json::from_value)
        .map_err(|e| invalid(format!("provider keys: {e}")))?;
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid).ok_or(Verdict::UnknownKey)?,
        None if jwks.keys.len() == 1 => &jwks.keys[0],
        None => return Err(invalid("no kid and several provider keys")),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("key: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[provider.issuer()]);
    validation.set_audience(&[client_id]);
    validation.required_spec_claims = HashSet::from(["iss".to_string(), "aud".to_string()]);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true; // only when present: `exp` is optional here
    let data = jsonwebtoken::decode::<RawClaims>(token, &key, &validation)
        .map_err(|e| invalid(e.to_string()))?;
    check_claims(data.claims, now_secs)
}

fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The claim rules of section 2.6 that a JWT library does not know.
fn check_claims(c: RawClaims, now_secs: u64) -> Result<LogoutClaims, Verdict> {
    let iat = c.iat.ok_or_else(|| invalid("no iat"))?;
    if iat > now_secs + LEEWAY_SECS {
        return Err(invalid("issued in the future"));
    }
    if iat + MAX_AGE_SECS < now_secs {
        return Err(invalid("too old"));
    }
    let events = c.events.ok_or_else(|| invalid("no events claim"))?;
    if !events.get(LOGOUT_EVENT).is_some_and(Value::is_object) {
        return Err(invalid("events has no back-channel logout member"));
    }
    if c.nonce.is_some() {
        return Err(invalid("a logout token must not carry a nonce"));
    }
    if c.sid.is_none() && c.sub.is_none() {
        return Err(invalid("neither sid nor sub"));
    }
    let jti = c
        .jti
        .filter(|j| !j.is_empty())
        .ok_or_else(|| invalid("no jti"))?;
    Ok(LogoutClaims {
        jti,
        sid: c.sid,
        sub: c.sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> RawClaims {
        serde_json::from_value(v).unwrap()
    }

    fn good() -> Value {
        json!({ "iat": 1000, "jti": "j", "sid": "s", "events": { LOGOUT_EVENT: {} } })
    }

    #[test]
    fn the_claim_rules_of_the_specification() {
        assert!(check_claims(raw(good()), 1000).is_ok());
        let mut v = good();
        v["nonce"] = json!("n");
        assert!(check_claims(raw(v), 1000).is_err(), "nonce");
        let mut v = good();
        v["events"] = json!({ "other": {} });
        assert!(check_claims(raw(v), 1000).is_err(), "events");
        let mut v = good();
        v.as_object_mut().unwrap().remove("sid");
        assert!(check_claims(raw(v), 1000).is_err(), "sid or sub");
        let mut v = good();
        v.as_object_mut().unwrap().remove("jti");
        assert!(check_claims(raw(v), 1000).is_err(), "jti");
        assert!(
            check_claims(raw(good()), 1000 + MAX_AGE_SECS + 1).is_err(),
            "old"
        );
        assert!(
            check_claims(raw(good()), 1000 - LEEWAY_SECS - 1).is_err(),
            "future"
        );
    }
}
