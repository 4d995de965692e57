//! The session record: what Redis keeps (encrypted) for one signed-in browser.

use crate::secret::Sensitive;
use crate::time::UnixMs;
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
