//! A login in progress: what the callback needs to finish it. Kept by the store
//! until the callback takes it (once), encrypted under the login's `state`, for
//! `oidc.login_timeout` (the store's TTL is the only clock it needs).
//!
//! Every `/login` stores one before anyone has authenticated, so its size is part
//! of what an unauthenticated flood can cost: [`LoginState::encode`] is a compact
//! binary form (the nonce and the PKCE verifier as their 32 random bytes, no JSON,
//! no second percent-encoding of `returnTo`), and `returnTo` is capped by
//! [`oidc::login`](crate::oidc)'s rules before it gets here. What `/login` asked
//! of the sign-in ([`Prompt`], `max_age`) costs at most 13 bytes more. With
//! `oidc.dpop`, the session's DPoP key is made at `/login` (its thumbprint is the
//! authorization request's `dpop_jkt`) and kept here as its PKCS#8 document, about 140
//! bytes.

use crate::secret::Sensitive;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// `1 | nonce | verifier | return_to`: written before prompt control existed, still
/// read (a login started by an older instance finishes on a newer one).
const FORMAT_V1: u8 = 1;
/// `2 | nonce | verifier | flags | [since: u64] | [max_age: u32] |
/// [dpop key length: u8 | PKCS#8 document] | return_to`.
const FORMAT_V2: u8 = 2;
/// The nonce and the PKCE verifier are 32 random bytes, base64url-encoded.
const RANDOM_LEN: usize = 32;
const FLAG_SILENT: u8 = 1;
const FLAG_LOGIN: u8 = 2;
const FLAG_MAX_AGE: u8 = 4;
const FLAG_DPOP: u8 = 8;

/// What `/login` asked the provider about the user's sign-in (`prompt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prompt {
    /// Nothing asked: the provider decides.
    #[default]
    Default,
    /// `prompt=none`: no page at all; a provider without a session answers with an
    /// error, which sends the browser back to `returnTo` without a session.
    Silent,
    /// `prompt=login`: a fresh sign-in, even with a provider session. The ID token's
    /// `auth_time` must not be older than `since` (Unix seconds: when the login
    /// started).
    Login { since: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginState {
    /// base64url (no padding) of 32 random bytes.
    pub nonce: String,
    /// base64url (no padding) of 32 random bytes (RFC 7636's 43-character verifier).
    pub pkce_verifier: String,
    pub return_to: String,
    pub prompt: Prompt,
    /// `max_age` as sent to the provider (seconds): `auth_time` must be that recent.
    pub max_age: Option<u32>,
    /// With `oidc.dpop`: the new session's DPoP key (base64url of its PKCS#8
    /// document), whose thumbprint the authorization request named (`dpop_jkt`).
    pub dpop_key: Option<Sensitive>,
}

impl LoginState {
    /// The [`FORMAT_V2`] record. `None` when the nonce or the verifier is not
    /// base64url of 32 bytes, or the DPoP key not base64url of at most 255 bytes.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let nonce = random_bytes(&self.nonce)?;
        let verifier = random_bytes(&self.pkce_verifier)?;
        let dpop_key = match &self.dpop_key {
            Some(key) => Some(URL_SAFE_NO_PAD.decode(key.expose()).ok()?),
            None => None,
        };
        let dpop_len = match &dpop_key {
            Some(der) => Some(u8::try_from(der.len()).ok()?),
            None => None,
        };
        let mut out = Vec::with_capacity(2 + 2 * RANDOM_LEN + 12 + self.return_to.len());
        out.push(FORMAT_V2);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&verifier);
        let mut flags = if self.max_age.is_some() {
            FLAG_MAX_AGE
        } else {
            0
        };
        if dpop_key.is_some() {
            flags |= FLAG_DPOP;
        }
        flags |= match self.prompt {
            Prompt::Default => 0,
            Prompt::Silent => FLAG_SILENT,
            Prompt::Login { .. } => FLAG_LOGIN,
        };
        out.push(flags);
        if let Prompt::Login { since } = self.prompt {
            out.extend_from_slice(&since.to_be_bytes());
        }
        if let Some(max_age) = self.max_age {
            out.extend_from_slice(&max_age.to_be_bytes());
        }
        if let (Some(der), Some(len)) = (&dpop_key, dpop_len) {
            out.push(len);
            out.extend_from_slice(der);
        }
        out.extend_from_slice(self.return_to.as_bytes());
        Some(out)
    }

    /// The state [`LoginState::encode`] wrote (or a [`FORMAT_V1`] one), or `None`
    /// for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if !(version == FORMAT_V1 || version == FORMAT_V2) || rest.len() < 2 * RANDOM_LEN {
            return None;
        }
        let (nonce, rest) = rest.split_at(RANDOM_LEN);
        let (verifier, mut rest) = rest.split_at(RANDOM_LEN);
        let (mut prompt, mut max_age, mut dpop_key) = (Prompt::Default, None, None);
        if version == FORMAT_V2 {
            let (&flags, after) = rest.split_first()?;
            rest = after;
            if flags & !(FLAG_SILENT | FLAG_LOGIN | FLAG_MAX_AGE | FLAG_DPOP) != 0 {
                return None;
            }
            prompt = match flags & (FLAG_SILENT | FLAG_LOGIN) {
                0 => Prompt::Default,
                FLAG_SILENT => Prompt::Silent,
                FLAG_LOGIN => {
                    let (since, after) = split_array::<8>(rest)?;
                    rest = after;
                    Prompt::Login {
                        since: u64::from_be_bytes(since),
                    }
                }
                _ => return None,
            };
            if flags & FLAG_MAX_AGE != 0 {
                let (value, after) = split_array::<4>(rest)?;
                rest = after;
                max_age = Some(u32::from_be_bytes(value));
            }
            if flags & FLAG_DPOP != 0 {
                let (&len, after) = rest.split_first()?;
                if after.len() < usize::from(len) {
                    return None;
                }
                let (der, after) = after.split_at(usize::from(len));
                rest = after;
                dpop_key = Some(Sensitive::new(URL_SAFE_NO_PAD.encode(der)));
            }
        }
        Some(Self {
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            pkce_verifier: URL_SAFE_NO_PAD.encode(verifier),
            return_to: String::from_utf8(rest.to_vec()).ok()?,
            prompt,
            max_age,
            dpop_key,
        })
    }
}

/// The first `N` bytes of `bytes` and the rest, if there are `N`.
fn split_array<const N: usize>(bytes: &[u8]) -> Option<([u8; N], &[u8])> {
    if bytes.len() < N {
        return None;
    }
    let (head, rest) = bytes.split_at(N);
    Some((head.try_into().ok()?, rest))
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
            prompt: Prompt::Default,
            max_age: None,
            dpop_key: None,
        };
        let bytes = state.encode().unwrap();
        assert_eq!(bytes.len(), 2 + 32 + 32 + state.return_to.len());
        assert_eq!(LoginState::decode(&bytes), Some(state.clone()));
        for cut in 0..66 {
            assert_eq!(LoginState::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut other_version = bytes.clone();
        other_version[0] = 3;
        assert_eq!(LoginState::decode(&other_version), None);
        let mut unknown_flag = bytes.clone();
        unknown_flag[65] = 16;
        assert_eq!(LoginState::decode(&unknown_flag), None);
        for (prompt, max_age) in [
            (Prompt::Silent, None),
            (
                Prompt::Login {
                    since: 1_700_000_000,
                },
                None,
            ),
            (Prompt::Login { since: u64::MAX }, Some(0)),
            (Prompt::Default, Some(u32::MAX)),
        ] {
            let asked = LoginState {
                prompt,
                max_age,
                ..state.clone()
            };
            let bytes = asked.encode().unwrap();
            assert!(bytes.len() <= 2 + 64 + 12 + asked.return_to.len());
            assert_eq!(LoginState::decode(&bytes), Some(asked.clone()));
            if prompt != Prompt::Silent {
                // A record cut inside its fixed fields is garbage.
                assert_eq!(LoginState::decode(&bytes[..67]), None, "{asked:?}");
            }
        }
        // A DPoP key travels as its PKCS#8 document, in any combination.
        let key = Sensitive::new(URL_SAFE_NO_PAD.encode([7u8; 138]));
        for (prompt, max_age) in [
            (Prompt::Default, None),
            (Prompt::Login { since: 9 }, Some(60)),
        ] {
            let bound = LoginState {
                prompt,
                max_age,
                dpop_key: Some(key.clone()),
                ..state.clone()
            };
            let bytes = bound.encode().unwrap();
            assert!(bytes.len() <= 2 + 64 + 12 + 1 + 138 + bound.return_to.len());
            assert_eq!(LoginState::decode(&bytes), Some(bound.clone()));
            let fixed = bytes.len() - bound.return_to.len();
            for cut in 66..fixed {
                assert_ne!(
                    LoginState::decode(&bytes[..cut]),
                    Some(bound.clone()),
                    "cut at {cut}"
                );
            }
        }
        for unusable in ["not base64!", &URL_SAFE_NO_PAD.encode([1u8; 256])] {
            let odd = LoginState {
                dpop_key: Some(Sensitive::new(unusable)),
                ..state.clone()
            };
            assert_eq!(odd.encode(), None, "{unusable:?}");
        }
        // A record of the first format still reads.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&[1u8; 32]);
        v1.extend_from_slice(&[2u8; 32]);
        v1.extend_from_slice(state.return_to.as_bytes());
        assert_eq!(LoginState::decode(&v1), Some(state.clone()));
        for bad in ["short", "", &"A".repeat(44)] {
            let odd = LoginState {
                nonce: bad.to_string(),
                ..state.clone()
            };
            assert_eq!(odd.encode(), None, "{bad:?}");
        }
    }
}
