//! Access-token verification: provider discovery, a JWKS cache that is fetched again
//! when a token names an unknown `kid` (key rotation), and the RFC 9068 checks.
//!
//! The cryptography is jsonwebtoken's (ring). What we add: only RS256, PS256 and ES256,
//! `typ` must be `at+jwt` (so an ID token is never taken for an access token), a `kid`
//! that names a signing key of the right type, `iss`, `aud`, `exp`, `nbf`, `sub`.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

const ALLOWED_ALGS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];
/// A token with an unknown `kid` triggers a JWKS fetch at most this often.
const MIN_REFETCH: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not acceptable (401 invalid_token). The text is ours, safe to show.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The provider's metadata or keys could not be fetched (503).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::Invalid(why.into())
}

/// What a verified token said; never the token itself.
#[derive(Debug)]
pub struct VerifiedToken {
    pub sub: String,
    pub scopes: Vec<String>,
    claims: Claims,
    alg: Algorithm,
    kid: String,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: Value,
    exp: u64,
    iat: Option<u64>,
    client_id: Option<String>,
    scope: Option<String>,
}

impl VerifiedToken {
    /// The JSON the API shows its caller.
    pub fn summary(&self) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "valid": true,
            "sub": self.sub,
            "client_id": self.claims.client_id,
            "issuer": self.claims.iss,
            "audience": self.claims.aud,
            "scopes": self.scopes,
            "issued_at": self.claims.iat,
            "expires_at": self.claims.exp,
            "expires_in": self.claims.exp.saturating_sub(now),
            "alg": format!("{:?}", self.alg),
            "kid": self.kid,
        })
    }
}

#[derive(Default)]
struct KeyCache {
    jwks_uri: Option<String>,
    keys: Vec<Jwk>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens of one issuer for one audience. Shared by every worker.
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: Duration,
    cache: RwLock<KeyCache>,
    /// Single flight for metadata and JWKS fetches.
    fetching: tokio::sync::Mutex<()>,
}

impl Verifier {
    pub fn new(issuer: String, audience: String, leeway: Duration) -> Verifier {
        Verifier {
            issuer,
            audience,
            leeway,
            cache: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Discovers the provider and loads its keys ahead of the first request.
    pub async fn warm_up(&self) -> Result<(), TokenError> {
        self.refresh_keys(None).await
    }

    /// Verifies `token`: header, key, signature and claims.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("not a signed JWT (or an unsupported alg)"))?;
        if !ALLOWED_ALGS.contains(&header.alg) {
            return Err(invalid(format!("alg {:?} is not accepted", header.alg)));
        }
        let typ = header
            .typ
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err(invalid("typ is not at+jwt (not an access token)"));
        }
        let kid = header.kid.ok_or_else(|| invalid("no kid in the header"))?;
        let key = self.key_for(&kid, header.alg).await?;

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(match e.kind() {
                K::ExpiredSignature => "expired",
                K::ImmatureSignature => "not valid yet (nbf)",
                K::InvalidIssuer => "wrong issuer",
                K::InvalidAudience => "wrong audience",
                K::InvalidSignature => "bad signature",
                K::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "malformed or unverifiable",
            })
        })?;
        let claims = data.claims;
        let scopes = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Ok(VerifiedToken {
            sub: claims.sub.clone(),
            scopes,
            claims,
            alg: header.alg,
            kid,
        })
    }

    /// The key called `kid`, usable with `alg`; fetches the JWKS again when `kid` is unknown.
    async fn key_for(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        if let Some(jwk) = self.cached(kid) {
            return decoding_key(&jwk, alg);
        }
        self.refresh_keys(Some(kid)).await?;
        match self.cached(kid) {
            Some(jwk) => decoding_key(&jwk, alg),
            None => Err(invalid("unknown kid (not a key of this issuer)")),
        }
    }

    fn cached(&self, kid: &str) -> Option<Jwk> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned()
    }

    /// Fetches metadata (once) and the JWKS, unless another caller just did, or, for an
    /// unknown `kid`, unless the last fetch is younger than [`MIN_REFETCH`].
    async fn refresh_keys(&self, wanted_kid: Option<&str>) -> Result<(), TokenError> {
        let _flight = self.fetching.lock().await;
        let (jwks_uri, fresh) = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < MIN_REFETCH);
            (cache.jwks_uri.clone(), fresh)
        };
        if fresh || wanted_kid.is_some_and(|kid| self.cached(kid).is_some()) {
            return Ok(());
        }
        let jwks_uri = match jwks_uri {
            Some(uri) => uri,
            None => self.discover().await?,
        };
        let jwks = get_json(&jwks_uri).await?;
        let keys: Vec<Jwk> = jwks["keys"]
            .as_array()
            .ok_or_else(|| TokenError::Unavailable("JWKS has no keys array".into()))?
            .iter()
            // Keys of types or algorithms jsonwebtoken does not know are skipped, not fatal.
            .filter_map(|k| serde_json::from_value(k.clone()).ok())
            .collect();
        tracing::info!(keys = keys.len(), "fetched the provider's JWKS");
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.jwks_uri = Some(jwks_uri);
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }

    /// OpenID Connect discovery; the document must name our issuer exactly.
    async fn discover(&self) -> Result<String, TokenError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let metadata = get_json(&url).await?;
        if metadata["issuer"].as_str() != Some(self.issuer.as_str()) {
            return Err(TokenError::Unavailable(format!(
                "discovery names issuer {} instead of {}",
                metadata["issuer"], self.issuer
            )));
        }
        metadata["jwks_uri"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| TokenError::Unavailable("discovery has no jwks_uri".into()))
    }
}

/// A decoding key from `jwk`, if it is a signing key that fits `alg`.
fn decoding_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, TokenError> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err(invalid("the kid names a key that is not for signatures"));
    }
    if let Some(key_alg) = jwk.common.key_algorithm {
        if format!("{key_alg:?}") != format!("{alg:?}") {
            return Err(invalid("alg differs from the key's alg"));
        }
    }
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, Algorithm::RS256 | Algorithm::PS256),
        AlgorithmParameters::EllipticCurve(ec) => {
            alg == Algorithm::ES256 && ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    if !fits {
        return Err(invalid("alg does not fit the key type"));
    }
    DecodingKey::from_jwk(jwk).map_err(|_| invalid("the provider's key is unusable"))
}

/// GET `url` as JSON: no redirects, a timeout, a size cap. Any failure is `Unavailable`.
async fn get_json(url: &str) -> Result<Value, TokenError> {
    let unavailable = |e: String| TokenError::Unavailable(format!("{url}: {e}"));
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(HTTP_TIMEOUT)
        .finish();
    let mut res = client
        .get(url)
        .insert_header(("Accept", "application/json"))
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if !res.status().is_success() {
        return Err(unavailable(format!("status {}", res.status())));
    }
    let body = res
        .body()
        .limit(MAX_DOCUMENT)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))
}
