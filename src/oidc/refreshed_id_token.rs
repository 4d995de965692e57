//! An ID token that comes back with a refresh (OpenID Connect Core 12.2): checked
//! like the login's, then used for `/user`'s claims and for logout's `id_token_hint`.
//!
//! The checks are the login's ([`check_id_token`]: signature with the provider's keys,
//! `iss`, `aud`, `azp`, `exp`, `iat` not in the future, `at_hash` when present), except
//! the nonce: a refreshed ID token need not carry one, and one that does must carry the
//! login's. Then its `sub` must be the session's.
//!
//! What each outcome means is the refresh flow's decision
//! ([`flows::refresh`](crate::flows::refresh)); this module only says what the token is.

use crate::oidc::callback::{check_id_token, PROTOCOL_CLAIMS, TOKEN_ONLY_CLAIMS};
use crate::oidc::jwt;
use crate::oidc::provider::{error_chain, Provider};
use crate::secret::Sensitive;
use crate::session::SessionRecord;
use crate::time::UnixMs;
use openidconnect::core::CoreTokenResponse;
use openidconnect::{ClaimsVerificationError, Nonce, SignatureVerificationError, TokenResponse};
use serde_json::{Map, Value};

/// What a refresh answer's ID token is.
#[derive(Debug)]
pub enum RefreshedIdToken {
    /// The answer carries none: the session keeps the one it has.
    Absent,
    /// Valid and about the session's user: the session's ID token from now on, with
    /// the claims `/user` shows ([`refreshed_claims`]).
    Valid {
        id_token: Sensitive,
        claims: Map<String, Value>,
    },
    /// Valid, but about another user (`sub` differs): the provider says these tokens
    /// are not this session's user's.
    OtherSubject,
    /// Signed with a key spa-bff does not know (yet): it cannot be checked now.
    UnknownKey,
    /// Not valid (why, for the log): nothing in it can be believed.
    Invalid(String),
}

/// Checks the ID token of a refresh `answer` for the session `record`.
pub fn check_refreshed_id_token(
    provider: &Provider,
    answer: &CoreTokenResponse,
    record: &SessionRecord,
    now: UnixMs,
) -> RefreshedIdToken {
    let Some(id_token) = answer.id_token() else {
        return RefreshedIdToken::Absent;
    };
    // 12.2: "if the ID Token contains a nonce Claim, its value MUST be the same as in
    // the ID Token issued at the time of the original authentication".
    let login_nonce = jwt::claims(record.tokens.id_token.expose())
        .and_then(|c| c.get("nonce").and_then(Value::as_str).map(String::from));
    let nonce = move |nonce: Option<&Nonce>| match (nonce, &login_nonce) {
        (None, _) => Ok(()),
        (Some(n), Some(login)) if n.secret() == login => Ok(()),
        (Some(_), _) => Err("a nonce other than the login's".to_string()),
    };
    let claims = match check_id_token(provider, id_token, answer, nonce, now) {
        Ok(claims) => claims,
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => return RefreshedIdToken::UnknownKey,
        Err(e) => return RefreshedIdToken::Invalid(error_chain(&e)),
    };
    if claims.get("sub").and_then(Value::as_str) != Some(record.sub.as_str()) {
        return RefreshedIdToken::OtherSubject;
    }
    RefreshedIdToken::Valid {
        id_token: Sensitive::new(id_token.to_string()),
        claims: refreshed_claims(&record.claims, claims),
    }
}

/// The claims `/user` shows after a refresh brought a valid ID token: the new token's
/// (without the token-only ones, as at login), plus what the session knew that the new
/// token does not say (userinfo's claims merged at login, say, when the refreshed token
/// carries only `sub`). Protocol claims (`iat`, `exp`, `auth_time`, `sid`, ...) come
/// from the new token only. Where both speak, the newer statement (the token's) wins.
pub fn refreshed_claims(old: &Map<String, Value>, new: Map<String, Value>) -> Map<String, Value> {
    let mut claims = new;
    for k in TOKEN_ONLY_CLAIMS {
        claims.remove(*k);
    }
    for (k, v) in old {
        if !PROTOCOL_CLAIMS.contains(&k.as_str()) && !claims.contains_key(k) {
            claims.insert(k.clone(), v.clone());
        }
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn refreshed_claims_are_the_new_tokens_plus_what_only_the_session_knew() {
        let old = map(json!({
            "sub": "alice", "iat": 1, "exp": 2, "auth_time": 1, "sid": "s1",
            "name": "Alice", "email": "alice@example.test", "locale": "de",
        }));
        let new = map(json!({
            "sub": "alice", "iat": 100, "exp": 200, "nonce": "n", "at_hash": "h",
            "name": "Alice Smith",
        }));
        assert_eq!(
            Value::Object(refreshed_claims(&old, new)),
            json!({
                "sub": "alice", "iat": 100, "exp": 200, "name": "Alice Smith",
                "email": "alice@example.test", "locale": "de",
            }),
            "protocol claims only from the new token (no stale auth_time or sid), \
             token-only claims dropped, userinfo's kept unless the token says otherwise"
        );
    }
}
