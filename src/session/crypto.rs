//! Encryption at rest: AES-256-GCM under a key derived (HKDF-SHA256) from a
//! per-session secret that only the browser's cookie carries.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// What the session cookie carries: a random session id and a random secret.
/// The Redis key is derived from the id; the record is encrypted under the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRef {
    id: [u8; 32],
    secret: [u8; 32],
    /// [`SessionRef::storage_id`], computed once: every request needs it several
    /// times (Redis key, encryption's associated data, logs, single-flight).
    storage_id: String,
}

impl fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionRef({}…)", &self.storage_id()[..8])
    }
}

impl SessionRef {
    /// A fresh reference from the OS random generator.
    pub fn generate() -> Self {
        let mut id = [0u8; 32];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self::from_parts(id, secret)
    }

    fn from_parts(id: [u8; 32], secret: [u8; 32]) -> Self {
        let storage_id = digest_hex(b"spa-bff/session-id/v1", &id);
        Self {
            id,
            secret,
            storage_id,
        }
    }

    /// The plaintext cookie value (it is encrypted again by the cookie codec).
    pub fn encode(&self) -> String {
        let mut buf = [0u8; 64];
        buf[..32].copy_from_slice(&self.id);
        buf[32..].copy_from_slice(&self.secret);
        URL_SAFE_NO_PAD.encode(buf)
    }

    pub fn decode(value: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        if bytes.len() != 64 {
            return None;
        }
        let mut id = [0u8; 32];
        let mut secret = [0u8; 32];
        id.copy_from_slice(&bytes[..32]);
        secret.copy_from_slice(&bytes[32..]);
        Some(Self::from_parts(id, secret))
    }

    /// A one-way function of the session id: safe to use in Redis keys and logs.
    pub fn storage_id(&self) -> &str {
        &self.storage_id
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        seal(
            &self.secret,
            b"spa-bff/session-record/v1",
            plaintext,
            self.storage_id().as_bytes(),
        )
    }

    pub fn open(&self, blob: &[u8]) -> Option<Vec<u8>> {
        open(
            &self.secret,
            b"spa-bff/session-record/v1",
            blob,
            self.storage_id().as_bytes(),
        )
    }
}

/// Hex SHA-256 of `domain || data`; the domain separates uses of the same input.
pub fn digest_hex(domain: &[u8], data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(data);
    hex(&h.finalize())
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// `n` random bytes from the thread's generator (seeded from the OS, fast), base64url
/// without padding: for identifiers that need to be unique, not secret (request ids).
pub fn random_id(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// `n` random bytes from the OS generator, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn cipher(secret: &[u8], info: &[u8]) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(None, secret);
    let mut key = [0u8; 32];
    hk.expand(info, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new(&key.into())
}

/// `version || nonce || ciphertext+tag`, authenticated with `aad`.
pub fn seal(secret: &[u8], info: &[u8], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher(secret, info)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// The plaintext, or `None` when the blob is truncated, tampered with or foreign.
pub fn open(secret: &[u8], info: &[u8], blob: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if blob.len() < 1 + NONCE_LEN + 16 || blob[0] != FORMAT_V1 {
        return None;
    }
    let (nonce, ct) = blob[1..].split_at(NONCE_LEN);
    cipher(secret, info)
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_opens_only_with_its_own_reference() {
        let a = SessionRef::generate();
        let b = SessionRef::generate();
        let blob = a.seal(b"tokens");
        assert_eq!(a.open(&blob).as_deref(), Some(&b"tokens"[..]));
        assert_eq!(b.open(&blob), None);
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(a.open(&tampered), None);
        assert_eq!(a.open(&blob[..10]), None);
        assert_eq!(a.open(&[]), None);
    }

    #[test]
    fn references_round_trip_and_reject_garbage() {
        let r = SessionRef::generate();
        assert_eq!(SessionRef::decode(&r.encode()), Some(r.clone()));
        assert_eq!(SessionRef::decode("short"), None);
        assert_eq!(SessionRef::decode("!!!"), None);
        assert_eq!(r.storage_id().len(), 64);
        assert!(!r.storage_id().contains(&r.encode()[..10]));
    }
}
