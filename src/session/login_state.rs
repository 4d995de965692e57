//! A login in progress: what the callback needs to finish it. Kept by the store
//! until the callback takes it (once), encrypted under the login's `state`, for
//! `oidc.login_timeout` (the store's TTL is the only clock it needs).
//!
//! Every `/login` stores one before anyone has authenticated, so its size is part
//! of what an unauthenticated flood can cost: [`LoginState::encode`] is a compact
//! binary form (the nonce and the PKCE verifier as their 32 random bytes, no JSON,
//! no second percent-encoding of `returnTo`), and `returnTo` is capped by
//! [`oidc::login`](crate::oidc)'s rules before it gets here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const FORMAT_V1: u8 = 1;
/// The nonce and the PKCE verifier are 32 random bytes, base64url-encoded.
const RANDOM_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginState {
    /// base64url (no padding) of 32 random bytes.
    pub nonce: String,
    /// base64url (no padding) of 32 random bytes (RFC 7636's 43-character verifier).
    pub pkce_verifier: String,
    pub return_to: String,
}

impl LoginState {
    /// `1 | nonce (32 bytes) | pkce_verifier (32 bytes) | return_to`. `None` when
    /// the nonce or the verifier is not base64url of 32 bytes.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let nonce = random_bytes(&self.nonce)?;
        let verifier = random_bytes(&self.pkce_verifier)?;
        let mut out = Vec::with_capacity(1 + 2 * RANDOM_LEN + self.return_to.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&verifier);
        out.extend_from_slice(self.return_to.as_bytes());
        Some(out)
    }

    /// The state [`LoginState::encode`] wrote, or `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != FORMAT_V1 || rest.len() < 2 * RANDOM_LEN {
            return None;
        }
        let (nonce, rest) = rest.split_at(RANDOM_LEN);
        let (verifier, return_to) = rest.split_at(RANDOM_LEN);
        Some(Self {
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            pkce_verifier: URL_SAFE_NO_PAD.encode(verifier),
            return_to: String::from_utf8(return_to.to_vec()).ok()?,
        })
    }
}

/// The 32 bytes `encoded` stands for, if it is their exact base64url form.
fn random_bytes(encoded: &str) -> Option<[u8; RANDOM_LEN]> {
    URL_SAFE_NO_PAD.decode(encoded).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_state_round_trips_and_garbage_decodes_to_nothing() {
        let state = LoginState {
            nonce: URL_SAFE_NO_PAD.encode([1u8; 32]),
            pkce_verifier: URL_SAFE_NO_PAD.encode([2u8; 32]),
            return_to: "/orders/42?tab=é".into(),
        };
        let bytes = state.encode().unwrap();
        assert_eq!(bytes.len(), 1 + 32 + 32 + state.return_to.len());
        assert_eq!(LoginState::decode(&bytes), Some(state.clone()));
        for cut in 0..65 {
            assert_eq!(LoginState::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert_eq!(LoginState::decode(&other_version), None);
        for bad in ["short", "", &"A".repeat(44)] {
            let odd = LoginState {
                nonce: bad.to_string(),
                ..state.clone()
            };
            assert_eq!(odd.encode(), None, "{bad:?}");
        }
    }
}
