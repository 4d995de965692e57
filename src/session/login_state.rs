//! A login in progress: what the callback needs to finish it. Kept by the store
//! until the callback takes it (once), encrypted under the login's `state`.

use crate::time::UnixMs;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginState {
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub created_at: UnixMs,
}
