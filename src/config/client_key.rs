//! `oidc.client_key_file`: spa-bff's own private key, for `private_key_jwt` client
//! authentication (RFC 7523, OpenID Connect Core section 9) instead of a shared
//! secret.
//!
//! The key is read and checked once, when the configuration is read, so that
//! `check-config` and start-up report every problem with it (missing or unreadable
//! file, neither PEM nor JWK, an encrypted or public key, a key type that does not
//! fit `oidc.client_key_alg`, an EC curve other than P-256, an RSA key under 2048
//! bits). It is held by *ring* (the crypto library rustls already brings): no
//! second crypto stack. A [`ClientKey`] never prints its private part; its `Debug`
//! shows the algorithm and key id only.
//!
//! Accepted forms: a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, RSA or EC P-256), a
//! PKCS#1 RSA PEM (`-----BEGIN RSA PRIVATE KEY-----`), or a private JWK (JSON, RSA
//! with its CRT members, or EC P-256 with `d`). The key id is the key's RFC 7638
//! thumbprint, which `spa-bff keys` prints with the public key to register.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::rsa::{KeyPairComponents, PublicKeyComponents};
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The JWS algorithm client assertions are signed with (`oidc.client_key_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys; their default).
    Rs256,
    /// RSASSA-PSS with SHA-256 (RSA keys).
    Ps256,
    /// ECDSA P-256 with SHA-256 (EC keys; their default).
    Es256,
}

impl SigningAlg {
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Ps256 => "PS256",
            SigningAlg::Es256 => "ES256",
        }
    }

    /// The algorithm named `name`, if spa-bff signs with it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(SigningAlg::Rs256),
            "PS256" => Some(SigningAlg::Ps256),
            "ES256" => Some(SigningAlg::Es256),
            _ => None,
        }
    }
}

/// A loaded private key, ready to sign client assertions. Cheap to clone.
#[derive(Clone)]
pub struct ClientKey {
    inner: Arc<Inner>,
}

struct Inner {
    pair: Pair,
    alg: SigningAlg,
    kid: String,
    /// The public JWK members (`kty` and `n`/`e` or `crv`/`x`/`y`).
    public: Map<String, Value>,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.inner.alg.name())
            .field("kid", &self.inner.kid)
            .field("private", &"[redacted]")
            .finish()
    }
}

impl ClientKey {
    /// Reads the key file at `path`; `alg` is `oidc.client_key_alg` as written (the
    /// default follows the key: RS256 for RSA, ES256 for EC, or the JWK's `alg`).
    /// Every problem is a sentence that never contains key material.
    pub fn load(path: &Path, alg: Option<&str>) -> Result<ClientKey, String> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
            _ => format!("{} cannot be read ({e})", path.display()),
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is neither a PEM file nor a JWK", path.display()))?;
        Self::parse(&text, alg).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A key from the text of a PEM file or a private JWK.
    pub fn parse(text: &str, alg: Option<&str>) -> Result<ClientKey, String> {
        let wanted = match alg {
            None => None,
            Some(name) => Some(SigningAlg::parse(name).ok_or_else(|| {
                format!("client_key_alg {name:?} is not supported: expected RS256, PS256 or ES256")
            })?),
        };
        let trimmed = text.trim_start();
        let (pair, jwk_alg) = if trimmed.starts_with('{') {
            parse_jwk(trimmed)?
        } else if trimmed.starts_with("-----BEGIN") {
            (parse_pem(trimmed)?, None)
        } else {
            return Err("is neither a PEM private key nor a JWK".into());
        };
        let alg = match (wanted, jwk_alg) {
            (Some(w), Some(j)) if w != j => {
                return Err(format!(
                    "the JWK says alg {} but oidc.client_key_alg is {}",
                    j.name(),
                    w.name()
                ))
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => match pair {
                Pair::Rsa(_) => SigningAlg::Rs256,
                Pair::Ec(_) => SigningAlg::Es256,
            },
        };
        match (&pair, alg) {
            (Pair::Rsa(_), SigningAlg::Rs256 | SigningAlg::Ps256) => {}
            (Pair::Ec(_), SigningAlg::Es256) => {}
            (Pair::Rsa(_), a) => {
                return Err(format!(
                    "{} needs an EC P-256 key; this is an RSA key",
                    a.name()
                ))
            }
            (Pair::Ec(_), a) => {
                return Err(format!(
                    "{} needs an RSA key; this is an EC P-256 key",
                    a.name()
                ))
            }
        }
        let public = public_members(&pair);
        let kid = thumbprint(&public);
        Ok(ClientKey {
            inner: Arc::new(Inner {
                pair,
                alg,
                kid,
                public,
            }),
        })
    }

    pub fn alg(&self) -> SigningAlg {
        self.inner.alg
    }

    /// The key id: the RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The public key as a JWK to register at the provider: `kty`, `n`/`e` or
    /// `crv`/`x`/`y`, `kid`, `alg`, `use: "sig"`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.inner.public.clone();
        jwk.insert("kid".into(), json!(self.inner.kid));
        jwk.insert("alg".into(), json!(self.inner.alg.name()));
        jwk.insert("use".into(), json!("sig"));
        Value::Object(jwk)
    }

    /// `{"keys": [public_jwk]}`: what `spa-bff keys` prints and `oidc.jwks_path` serves.
    pub fn public_jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk()] })
    }

    /// The JWS signature of `message` (for ES256 the fixed-size `r || s` form JWS
    /// uses).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match &self.inner.pair {
            Pair::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.inner.alg {
                    SigningAlg::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, message, &mut out)
                    .map_err(|_| "RSA signing failed".to_string())?;
                Ok(out)
            }
            Pair::Ec(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string()),
        }
    }
}

/// A PEM private key: PKCS#8 (RSA or EC P-256) or PKCS#1 RSA.
fn parse_pem(text: &str) -> Result<Pair, String> {
    let label_start = "-----BEGIN ".len();
    let label_end = text[label_start..]
        .find("-----")
        .ok_or("is not a well-formed PEM file")?;
    let label = &text[label_start..label_start + label_end];
    let end_marker = format!("-----END {label}-----");
    let body_start = label_start + label_end + 5;
    let body_end = text
        .find(&end_marker)
        .ok_or("is not a well-formed PEM file (no END line)")?;
    let body: String = text[body_start..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| "is not a well-formed PEM file (bad base64)")?;
    match label {
        "PRIVATE KEY" => parse_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
            .map(Pair::Rsa)
            .map_err(|e| rsa_problem(&e)),
        "EC PRIVATE KEY" => Err(
            "is a SEC1 EC key; convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt -in key.pem)"
                .into(),
        ),
        "ENCRYPTED PRIVATE KEY" => Err(
            "is an encrypted private key; spa-bff needs it unencrypted (protect the file instead)"
                .into(),
        ),
        "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => Err(format!(
            "holds a {}, not the private key",
            label.to_lowercase()
        )),
        _ => Err(format!("holds a PEM {label:?}, not a private key")),
    }
}

/// PKCS#8: RSA, else EC P-256; an EC key on another curve is named as such.
fn parse_pkcs8(der: &[u8]) -> Result<Pair, String> {
    match RsaKeyPair::from_pkcs8(der) {
        Ok(pair) => return Ok(Pair::Rsa(pair)),
        Err(e) if e.to_string() != "WrongAlgorithm" => return Err(rsa_problem(&e)),
        Err(_) => {}
    }
    let rng = SystemRandom::new();
    match EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
        Ok(pair) => return Ok(Pair::Ec(pair)),
        Err(e) if e.to_string() != "WrongAlgorithm" => {
            return Err(format!("is not a usable EC P-256 key ({e})"))
        }
        Err(_) => {}
    }
    if EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der, &rng).is_ok() {
        return Err("is an EC key on curve P-384; only P-256 (ES256) is supported".into());
    }
    Err("is neither an RSA nor an EC P-256 private key".into())
}

fn rsa_problem(e: &ring::error::KeyRejected) -> String {
    match e.to_string().as_str() {
        "TooSmall" => "is an RSA key smaller than 2048 bits; use 2048 bits or more".into(),
        "TooLarge" => "is an RSA key larger than 8192 bits".into(),
        other => format!("is not a usable RSA private key ({other})"),
    }
}

/// A private JWK; returns the key and the JWK's own `alg`, if it names one.
fn parse_jwk(text: &str) -> Result<(Pair, Option<SigningAlg>), String> {
    let jwk: Map<String, Value> =
        serde_json::from_str(text).map_err(|_| "is not a JSON object (JWK)".to_string())?;
    let member = |name: &str| -> Result<Vec<u8>, String> {
        let value = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the JWK has no {name:?} member"))?;
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("the JWK's {name:?} is not base64url"))
    };
    let alg = match jwk.get("alg").and_then(Value::as_str) {
        None => None,
        Some(name) => Some(SigningAlg::parse(name).ok_or_else(|| {
            format!("the JWK's alg {name:?} is not supported: expected RS256, PS256 or ES256")
        })?),
    };
    if !jwk.contains_key("d") {
        return Err("is a public JWK; spa-bff needs the private key (with \"d\")".into());
    }
    let pair = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let components = KeyPairComponents {
                public_key: PublicKeyComponents {
                    n: member("n")?,
                    e: member("e")?,
                },
                d: member("d")?,
                p: member("p")?,
                q: member("q")?,
                dP: member("dp")?,
                dQ: member("dq")?,
                qInv: member("qi")?,
            };
            Pair::Rsa(RsaKeyPair::from_components(&components).map_err(|e| rsa_problem(&e))?)
        }
        Some("EC") => {
            match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => {}
                Some(other) => {
                    return Err(format!(
                        "is an EC key on curve {other}; only P-256 (ES256) is supported"
                    ))
                }
                None => return Err("the JWK has no \"crv\" member".into()),
            }
            let (x, y, d) = (member("x")?, member("y")?, member("d")?);
            if x.len() != 32 || y.len() != 32 || d.len() != 32 {
                return Err("is not a well-formed P-256 JWK (x, y and d must be 32 bytes)".into());
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let rng = SystemRandom::new();
            Pair::Ec(
                EcdsaKeyPair::from_private_key_and_public_key(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &d,
                    &point,
                    &rng,
                )
                .map_err(|e| format!("is not a usable EC P-256 key ({e})"))?,
            )
        }
        Some(other) => {
            return Err(format!(
                "is a JWK of type {other:?}; only RSA and EC (P-256) keys are supported"
            ))
        }
        None => return Err("the JWK has no \"kty\" member".into()),
    };
    Ok((pair, alg))
}

/// The public JWK members RFC 7638 hashes, as base64url of their big-endian bytes
/// (`n`/`e` without leading zeros, `x`/`y` at the curve's full size).
fn public_members(pair: &Pair) -> Map<String, Value> {
    match pair {
        Pair::Rsa(pair) => {
            let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
            let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public());
            let strip = |b: &[u8]| -> Vec<u8> {
                let first = b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1);
                b[first..].to_vec()
            };
            let mut out = Map::new();
            out.insert("kty".into(), json!("RSA"));
            out.insert("n".into(), b64(&strip(&parts.n)));
            out.insert("e".into(), b64(&strip(&parts.e)));
            out
        }
        Pair::Ec(pair) => p256_public_members(pair.public_key().as_ref()),
    }
}

/// The public JWK members of a P-256 key (`kty`, `crv`, `x`, `y`) from its
/// uncompressed point (`04 || x || y`, as *ring* gives it). Also the `jwk` of DPoP
/// proofs ([`crate::oidc::dpop`]).
pub fn p256_public_members(point: &[u8]) -> Map<String, Value> {
    let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
    let mut out = Map::new();
    out.insert("kty".into(), json!("EC"));
    out.insert("crv".into(), json!("P-256"));
    out.insert("x".into(), b64(&point[1..33]));
    out.insert("y".into(), b64(&point[33..65]));
    out
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no spaces.
/// The key id of client keys, and the `jkt` of DPoP keys.
pub fn thumbprint(public: &Map<String, Value>) -> String {
    let s = |k: &str| public.get(k).and_then(Value::as_str).unwrap_or_default();
    let canonical = match s("kty") {
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e"), s("n")),
        _ => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv"),
            s("x"),
            s("y")
        ),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EC P-256 PKCS#8 key made by ring, as PEM.
    fn ec_pem() -> String {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        pem("PRIVATE KEY", der.as_ref())
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn an_ec_key_defaults_to_es256_and_its_kid_is_the_rfc7638_thumbprint() {
        let key = ClientKey::parse(&ec_pem(), None).unwrap();
        assert_eq!(key.alg(), SigningAlg::Es256);
        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none(), "{jwk}");
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(
            key.kid(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
        assert_eq!(key.sign(b"x").unwrap().len(), 64);
    }

    #[test]
    fn rfc7638s_example_thumbprint_is_reproduced() {
        // RFC 7638 section 3.1.
        let mut public = Map::new();
        public.insert("kty".into(), json!("RSA"));
        public.insert("e".into(), json!("AQAB"));
        public.insert("n".into(), json!("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"));
        assert_eq!(
            thumbprint(&public),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn an_ec_key_cannot_sign_rs256_and_unknown_algorithms_are_named() {
        let err = ClientKey::parse(&ec_pem(), Some("RS256")).unwrap_err();
        assert!(err.contains("RS256 needs an RSA key"), "{err}");
        let err = ClientKey::parse(&ec_pem(), Some("HS256")).unwrap_err();
        assert!(err.contains("\"HS256\" is not supported"), "{err}");
    }

    #[test]
    fn unusable_key_files_are_refused_with_the_reason() {
        let rng = SystemRandom::new();
        let p384 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .unwrap();
        let ed = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        for (text, expected) in [
            (pem("PRIVATE KEY", p384.as_ref()), "curve P-384"),
            (
                pem("PRIVATE KEY", ed.as_ref()),
                "neither an RSA nor an EC P-256",
            ),
            (pem("ENCRYPTED PRIVATE KEY", b"xx"), "encrypted"),
            (pem("PUBLIC KEY", b"xx"), "not the private key"),
            (pem("EC PRIVATE KEY", b"xx"), "PKCS#8"),
            (
                "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----".into(),
                "bad base64",
            ),
            ("hello".into(), "neither a PEM private key nor a JWK"),
            (
                "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}".into(),
                "public JWK",
            ),
            (
                "{\"kty\":\"EC\",\"crv\":\"P-384\",\"d\":\"AA\"}".into(),
                "curve P-384",
            ),
            ("{\"kty\":\"OKP\",\"d\":\"AA\"}".into(), "\"OKP\""),
            (
                "{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"d\":\"AQAB\"}".into(),
                "\"p\"",
            ),
            ("[1]".into(), "neither a PEM private key nor a JWK"),
        ] {
            let err = ClientKey::parse(&text, None).map(|_| ()).unwrap_err();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = ClientKey::parse(&ec_pem(), None).unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains("ES256") && dbg.contains("[redacted]"), "{dbg}");
    }
}
