//! DPoP (RFC 9449): sender-constrained tokens. With `oidc.dpop = true` spa-bff binds
//! the tokens it gets to a key pair only it holds, and proves possession of that key
//! on every request that uses them, so a token copied out of a log, a proxy or an
//! upstream's memory is worthless without the key.
//!
//! **Which key.** One per session: a P-256 key pair ([`DpopKey`], ES256 with *ring*)
//! generated at `/callback` just before the code exchange, kept in the session record
//! (encrypted at rest under the session's own secret, like its tokens) and used for
//! everything the session does: the code exchange, every refresh (per-resource ones
//! included), userinfo at login, and every proxied call. Any instance can use the
//! session's tokens because the key travels with them; a key per instance would tie a
//! session to the instance that logged it in, and one key for all sessions would make
//! every stolen token usable with one stolen key. Client-credentials routes have no
//! session: each route gets a key per instance, in memory, like its token
//! ([`crate::flows::client_token`]).
//!
//! **Proofs** (RFC 9449 section 4): a JWT with header `typ: dpop+jwt`, `alg: ES256` and
//! the public `jwk`, and claims `jti` (random), `htm` (the method), `htu` (the URL
//! without query and fragment), `iat`, `ath` (base64url SHA-256 of the access token)
//! on requests that carry one, and `nonce` when the server gave one. A new proof for
//! every request, and for every retry.
//!
//! **Nonces** (RFC 9449 sections 8 and 9). A server may demand a nonce of its own in
//! the proofs: the provider answers a token request `400 {"error":"use_dpop_nonce"}`
//! (userinfo, like any resource server, `401` with `WWW-Authenticate: DPoP
//! error="use_dpop_nonce"`) and a `DPoP-Nonce` header. spa-bff retries such a request
//! exactly once with the nonce it brought (never when the nonce is the one it just
//! sent: no loop), and remembers the latest nonce each server sent, on any answer,
//! per instance ([`DpopNonces`]: the provider's, and one per upstream origin), for the
//! requests that follow. The challenge comes before the provider looks at the grant,
//! so the retried code exchange or refresh redeems the code or refresh token once.
//!
//! **Token types.** A token request that carried a proof must come back with
//! `token_type: DPoP`; one without a proof with `Bearer` ([`Binding`]). A provider
//! that ignores the proof and issues a Bearer token does not bind tokens for this
//! client: the login fails with a page (`invalid_token_response`) and the log says
//! why, rather than spa-bff quietly sending unbound tokens that the configuration says
//! are bound.

use crate::config::{p256_public_members, thumbprint};
use crate::error::Error;
use crate::oidc::client_auth::oauth_error;
use crate::oidc::http::{
    into_oidc_response, server_error_as_unavailable, Answer, HttpError, OidcHttp, Outgoing,
};
use crate::secret::Sensitive;
use crate::session::crypto::random_token;
use crate::time::UnixMs;
use awc::http::header::{HeaderMap, WWW_AUTHENTICATE};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// The header that carries a proof, and the one that carries a server's nonce.
pub const DPOP: &str = "DPoP";
pub const DPOP_NONCE: &str = "DPoP-Nonce";
/// The longest nonce taken from a server (it goes into every later proof).
const MAX_NONCE: usize = 512;

/// A DPoP key pair (P-256, ES256). Not `Clone`: shared by reference or `Arc`.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    /// The public key as a JWK (`kty`, `crv`, `x`, `y`).
    jwk: Map<String, Value>,
    /// The proofs' header, base64url-encoded once.
    header: String,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("jkt", &self.thumbprint())
            .field("private", &"[redacted]")
            .finish()
    }
}

impl DpopKey {
    /// A fresh key, and its private form to keep (base64url of its PKCS#8 document,
    /// for the session record; never printed).
    pub fn generate() -> Result<(DpopKey, Sensitive), Error> {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| Error::Internal("DPoP key generation failed".into()))?;
        let stored = Sensitive::new(URL_SAFE_NO_PAD.encode(document.as_ref()));
        Ok((Self::from_stored(&stored)?, stored))
    }

    /// The key [`DpopKey::generate`] gave as `stored`.
    pub fn from_stored(stored: &Sensitive) -> Result<DpopKey, Error> {
        let unusable = || Error::Internal("the session's DPoP key is unusable".into());
        let der = URL_SAFE_NO_PAD
            .decode(stored.expose())
            .map_err(|_| unusable())?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(|_| unusable())?;
        let jwk = p256_public_members(pair.public_key().as_ref());
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk });
        Ok(DpopKey {
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            pair,
            jwk,
        })
    }

    /// The key's RFC 7638 thumbprint: the `jkt` a provider binds tokens to
    /// (`cnf.jkt` in JWT access tokens).
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.jwk)
    }

    /// A fresh proof for `method url` (query and fragment are left out of `htu`);
    /// `access_token` adds its hash (`ath`, requests to a resource), `nonce` the
    /// server's nonce.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: UnixMs,
    ) -> Result<String, Error> {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let mut claims = json!({
            "jti": random_token(16),
            "htm": method,
            "htu": htu,
            "iat": now / 1000,
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| Error::Internal("DPoP proof signing failed".into()))?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The latest nonce each server sent, shared by the workers of one instance: the
/// provider's, and each upstream's by origin (routes name a fixed set of them).
#[derive(Default)]
pub struct DpopNonces {
    provider: Mutex<Option<String>>,
    upstreams: Mutex<HashMap<String, String>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DpopNonces {
    /// The provider's latest nonce.
    pub fn provider(&self) -> Option<String> {
        locked(&self.provider).clone()
    }

    /// Keeps the nonce of a provider answer, if it has one.
    pub fn remember_provider(&self, headers: &HeaderMap) {
        if let Some(nonce) = nonce_in(headers) {
            *locked(&self.provider) = Some(nonce);
        }
    }

    /// The latest nonce of the upstream at `origin`.
    pub fn upstream(&self, origin: &str) -> Option<String> {
        locked(&self.upstreams).get(origin).cloned()
    }

    /// Keeps the nonce of an answer from the upstream at `origin`, if it has one.
    pub fn remember_upstream(&self, origin: &str, headers: &HeaderMap) {
        if let Some(nonce) = nonce_in(headers) {
            locked(&self.upstreams).insert(origin.to_string(), nonce);
        }
    }
}

/// A `DPoP-Nonce` header's value, if it is a well-formed nonce (RFC 9449 section 8.1:
/// `1*NQCHAR`), not too long.
fn nonce_in(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(DPOP_NONCE)?.as_bytes();
    let nqchar = |b: &u8| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e);
    (!value.is_empty() && value.len() <= MAX_NONCE && value.iter().all(nqchar))
        .then(|| String::from_utf8_lossy(value).into_owned())
}

/// The nonce a server demands (a `use_dpop_nonce` answer with a `DPoP-Nonce`): the
/// provider's token endpoint says so with `400 {"error":"use_dpop_nonce"}`, a
/// resource server (userinfo, an upstream) with `401` and `WWW-Authenticate: DPoP
/// ... error="use_dpop_nonce"`.
pub fn demanded_nonce(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let demanded = match status {
        400 => oauth_error(body).as_deref() == Some("use_dpop_nonce"),
        401 => resource_demands_nonce(headers),
        _ => false,
    };
    demanded.then(|| nonce_in(headers)).flatten()
}

/// Whether a resource server's `401` demands a nonce (`WWW-Authenticate: DPoP ...
/// error="use_dpop_nonce"`, RFC 9449 section 9).
pub fn resource_demands_nonce(headers: &HeaderMap) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .filter_map(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .any(|v| v.starts_with("dpop") && v.contains("error=\"use_dpop_nonce\""))
}

/// What proves possession of a key towards the provider: the key, and where its
/// nonce is remembered.
#[derive(Clone, Copy)]
pub struct Proofs<'a> {
    pub key: &'a DpopKey,
    pub nonces: &'a DpopNonces,
}

impl Proofs<'_> {
    /// Sends `request` with a fresh proof (with the provider's latest nonce, and the
    /// `ath` of `access_token` when it carries one). A `use_dpop_nonce` answer is
    /// retried once, with the nonce it brought, unless that is the nonce just sent.
    pub async fn send(
        &self,
        http: &OidcHttp,
        request: Outgoing,
        access_token: Option<&str>,
        now: UnixMs,
    ) -> Result<Answer, HttpError> {
        let sent = self.nonces.provider();
        let answer = self
            .attempt(http, request.clone(), access_token, sent.as_deref(), now)
            .await?;
        match demanded_nonce(answer.status.as_u16(), &answer.headers, &answer.body) {
            Some(nonce) if Some(&nonce) != sent.as_ref() => {
                tracing::debug!(url = %request.url, "the provider demands a DPoP nonce; retrying once with it");
                self.attempt(http, request, access_token, Some(&nonce), now)
                    .await
            }
            _ => Ok(answer),
        }
    }

    async fn attempt(
        &self,
        http: &OidcHttp,
        request: Outgoing,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: UnixMs,
    ) -> Result<Answer, HttpError> {
        let proof = self
            .key
            .proof(
                request.method.as_str(),
                &request.url,
                access_token,
                nonce,
                now,
            )
            .map_err(|e| HttpError(e.to_string()))?;
        let answer = http.send(request.with_header(DPOP, proof)).await?;
        self.nonces.remember_provider(&answer.headers);
        Ok(answer)
    }
}

/// Sends `request` to the provider, with a proof when there is a key.
pub async fn send(
    http: &OidcHttp,
    proofs: Option<Proofs<'_>>,
    request: Outgoing,
    now: UnixMs,
) -> Result<Answer, HttpError> {
    match proofs {
        Some(p) => p.send(http, request, None, now).await,
        None => http.send(request).await,
    }
}

/// openidconnect's HTTP client for token requests (code exchange, refresh): with a
/// key, each request carries a fresh proof and a nonce challenge is answered once.
pub struct TokenHttp<'a> {
    pub http: &'a OidcHttp,
    pub proofs: Option<Proofs<'a>>,
    pub now: UnixMs,
}

impl TokenHttp<'_> {
    /// The request, answered as it came (no 5xx conversion).
    pub async fn call_raw(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let request = Outgoing::from_oidc(request)?;
        into_oidc_response(send(self.http, self.proofs, request, self.now).await?)
    }

    /// How the answer's tokens must be bound.
    pub fn binding(&self) -> Binding {
        Binding::of(self.proofs.as_ref())
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move { server_error_as_unavailable(self.call_raw(request).await?) })
    }
}

/// What a token request's answer must say it issued (`token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// No proof was sent: a Bearer token.
    Bearer,
    /// A proof was sent: a token bound to its key (`token_type: DPoP`).
    Dpop,
}

impl Binding {
    pub fn of(proofs: Option<&Proofs<'_>>) -> Self {
        match proofs {
            Some(_) => Binding::Dpop,
            None => Binding::Bearer,
        }
    }

    /// Whether `token_type` is what this binding needs (compared without case, as
    /// RFC 6749 section 5.1 says).
    pub fn check(self, token_type: &str) -> Result<(), String> {
        match self {
            Binding::Bearer if token_type.eq_ignore_ascii_case("bearer") => Ok(()),
            Binding::Dpop if token_type.eq_ignore_ascii_case("dpop") => Ok(()),
            Binding::Dpop if token_type.eq_ignore_ascii_case("bearer") => Err(
                "the provider issued a Bearer token although spa-bff sent a DPoP proof: it does not bind tokens for this client (enable DPoP for the client at the provider, or set oidc.dpop = false)"
                    .into(),
            ),
            Binding::Bearer => Err(format!(
                "token_type {:?} is not Bearer",
                truncate(token_type, 40)
            )),
            Binding::Dpop => Err(format!(
                "token_type {:?} is not DPoP",
                truncate(token_type, 40)
            )),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use awc::http::header::{HeaderName, HeaderValue};
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn part(jwt: &str, i: usize) -> Value {
        let p = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_is_signed_by_the_key_in_its_header_and_says_what_it_is_for() {
        let (key, stored) = DpopKey::generate().unwrap();
        let again = DpopKey::from_stored(&stored).unwrap();
        assert_eq!(
            key.thumbprint(),
            again.thumbprint(),
            "the stored form is the key"
        );
        let proof = key
            .proof(
                "POST",
                "https://api.example/orders/7?x=1#frag",
                Some("the-token"),
                Some("n-1"),
                1_700_000_000_123,
            )
            .unwrap();
        let header = part(&proof, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert!(header["jwk"].get("d").is_none(), "{header}");
        assert_eq!(
            thumbprint(header["jwk"].as_object().unwrap()),
            key.thumbprint()
        );
        let claims = part(&proof, 1);
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://api.example/orders/7");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"the-token"))
        );
        let jti = claims["jti"].as_str().unwrap().to_string();
        let other = part(&key.proof("GET", "https://a/", None, None, 0).unwrap(), 1);
        assert_ne!(other["jti"], jti.as_str(), "a fresh jti per proof");
        assert!(other.get("ath").is_none() && other.get("nonce").is_none());

        let x = URL_SAFE_NO_PAD
            .decode(header["jwk"]["x"].as_str().unwrap())
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode(header["jwk"]["y"].as_str().unwrap())
            .unwrap();
        let point = [&[4u8][..], &x, &y].concat();
        let (input, signature) = proof.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .expect("the signature verifies with the header's jwk");
        let (other_key, _) = DpopKey::generate().unwrap();
        assert_ne!(other_key.thumbprint(), key.thumbprint());
        assert!(!format!("{key:?}").contains(stored.expose()));
    }

    #[test]
    fn nonce_challenges_are_recognised_from_the_provider_and_from_resource_servers() {
        let nonce = [("dpop-nonce", "n-2")];
        let dpop_401 = [
            ("dpop-nonce", "n-2"),
            ("www-authenticate", "DPoP error=\"use_dpop_nonce\""),
        ];
        let use_nonce = br#"{"error":"use_dpop_nonce"}"#;
        for (status, hs, body, expected) in [
            (400, &nonce[..], &use_nonce[..], Some("n-2")),
            (400, &[][..], &use_nonce[..], None),
            (400, &nonce[..], &br#"{"error":"invalid_grant"}"#[..], None),
            (401, &dpop_401[..], &b""[..], Some("n-2")),
            (401, &nonce[..], &b""[..], None),
            (
                401,
                &[
                    ("dpop-nonce", "n-2"),
                    ("www-authenticate", "Bearer error=\"invalid_token\""),
                ][..],
                &b""[..],
                None,
            ),
            (200, &nonce[..], &use_nonce[..], None),
            (
                400,
                &[("dpop-nonce", "bad\"nonce")][..],
                &use_nonce[..],
                None,
            ),
        ] {
            assert_eq!(
                demanded_nonce(status, &headers(hs), body).as_deref(),
                expected,
                "{status} {hs:?}"
            );
        }
        let nonces = DpopNonces::default();
        nonces.remember_provider(&headers(&[]));
        assert_eq!(nonces.provider(), None);
        nonces.remember_provider(&headers(&nonce));
        assert_eq!(nonces.provider().as_deref(), Some("n-2"));
        nonces.remember_upstream("http://a:1", &headers(&nonce));
        assert_eq!(nonces.upstream("http://a:1").as_deref(), Some("n-2"));
        assert_eq!(nonces.upstream("http://b:1"), None);
    }

    #[test]
    fn a_proof_needs_a_dpop_token_and_no_proof_a_bearer_one() {
        for (binding, token_type, ok) in [
            (Binding::Bearer, "Bearer", true),
            (Binding::Bearer, "bearer", true),
            (Binding::Bearer, "DPoP", false),
            (Binding::Dpop, "DPoP", true),
            (Binding::Dpop, "dpop", true),
            (Binding::Dpop, "Bearer", false),
            (Binding::Dpop, "N_A", false),
        ] {
            assert_eq!(
                binding.check(token_type).is_ok(),
                ok,
                "{binding:?} {token_type}"
            );
        }
        let refused = Binding::Dpop.check("Bearer").unwrap_err();
        assert!(refused.contains("does not bind tokens"), "{refused}");
    }
}
