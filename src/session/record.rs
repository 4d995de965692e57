//! The session record: what the store keeps (encrypted) for one signed-in browser,
//! and the tokens a token-endpoint answer gives it.

use crate::secret::Sensitive;
use crate::time::UnixMs;
use openidconnect::core::CoreTokenResponse;
use openidconnect::OAuth2TokenResponse;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The user's subject at the provider.
    pub sub: String,
    /// The provider's session id (`sid` claim), when it sends one.
    pub sid: Option<String>,
    /// User claims shown by `/user`: the ID token's, merged with userinfo.
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub tokens: Tokens,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: Sensitive,
    /// When the access token expires (from `expires_in`), if the provider said.
    pub access_token_expires_at: Option<UnixMs>,
    pub refresh_token: Option<Sensitive>,
    pub id_token: Sensitive,
    /// The scope granted, when the provider said (refresh never asks for more).
    pub scope: Option<String>,
}

impl Tokens {
    /// The tokens of a token-endpoint answer (login or refresh), with the expiry
    /// computed from `now`. `id_token` is the one the session keeps.
    pub fn from_response(answer: &CoreTokenResponse, id_token: Sensitive, now: UnixMs) -> Self {
        Tokens {
            access_token: Sensitive::new(answer.access_token().secret().clone()),
            access_token_expires_at: answer
                .expires_in()
                .map(|d| now.saturating_add(d.as_millis() as u64)),
            refresh_token: answer
                .refresh_token()
                .map(|t| Sensitive::new(t.secret().clone())),
            id_token,
            scope: answer
                .scopes()
                .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        }
    }
}
