//! The provider's metadata and signing keys, discovered at start-up and followed
//! afterwards.
//!
//! Discovery retries with capped exponential backoff until the provider answers
//! (`/readyz` is 503 meanwhile), so spa-bff can start before its provider. The
//! JWKS is cached with the metadata. Both are read again every `oidc.metadata_refresh`
//! (jittered, so that instances do not ask together) and when a token names a key id
//! we do not know (key rotation), at most once per [`JWKS_REFRESH_MIN_INTERVAL`];
//! callers that find a re-read under way wait for it and use what it installed. So a
//! provider that moves an endpoint, changes its algorithms or rotates its keys is
//! followed without a restart. A re-read that fails keeps the current metadata (a
//! WARN; readiness is unaffected), and so does a document naming another issuer
//! (refused as at start-up: every token's `iss` is compared with the configured one).
//! The metadata also decides how authorization requests reach the provider
//! ([`AuthorizationRoute`]): a provider that must get pushed requests but names no
//! usable PAR endpoint fails discovery, with that sentence in the log.

use crate::config::{is_allowed_provider_url, ClientAuth, OidcSettings, Settings};
use crate::error::Error;
use crate::oidc::http::OidcHttp;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, ProviderMetadata, RedirectUrl,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use url::Url;

/// Do not hammer the provider's JWKS endpoint with tokens naming unknown keys.
pub const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);
const DISCOVERY_BACKOFF_START: Duration = Duration::from_millis(200);
const DISCOVERY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Discovery fields openidconnect does not model.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
    pub end_session_endpoint: Option<String>,
    /// RFC 7009 token revocation.
    pub revocation_endpoint: Option<String>,
    /// RFC 9207: the provider always adds `iss` to authorization responses.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 9126: where authorization requests are pushed.
    pub pushed_authorization_request_endpoint: Option<String>,
    /// RFC 9126: the provider accepts pushed authorization requests only.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// RFC 9449: the algorithms the provider accepts for DPoP proofs.
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

pub type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovered provider: metadata, keys, and a client configured for spa-bff.
pub struct Provider {
    pub metadata: Metadata,
    pub client: OidcClient,
    /// How authorization requests reach the provider (pushed or in the redirect).
    pub authorization: AuthorizationRoute,
}

impl Provider {
    fn new(metadata: Metadata, settings: &Settings) -> Result<Self, String> {
        let oidc = &settings.oidc;
        let redirect = RedirectUrl::new(settings.server.redirect_uri())
            .map_err(|e| format!("redirect URI: {e}"))?;
        // With private_key_jwt there is no secret: openidconnect then puts
        // `client_id` in the form, and the assertion is added per request
        // (`oidc::client_auth`).
        let secret = oidc
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().to_string()));
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(oidc.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect)
        .set_auth_type(match oidc.client_auth {
            ClientAuth::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuth::ClientSecretPost | ClientAuth::PrivateKeyJwt => AuthType::RequestBody,
        });
        let authorization = authorization_route(metadata.additional_metadata(), oidc)?;
        Ok(Self {
            metadata,
            client,
            authorization,
        })
    }

    pub fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    pub fn extra(&self) -> &ExtraMetadata {
        self.metadata.additional_metadata()
    }
}

/// The current provider, shared by every worker; empty until discovery succeeds.
pub struct ProviderHandle {
    settings: Arc<Settings>,
    current: RwLock<Option<Arc<Provider>>>,
    /// When the JWKS was last fetched again; held while a fetch is under way, so
    /// that concurrent callers wait for its keys instead of giving up.
    last_jwks_refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Whether the start-up notes about the provider (PAR) were logged.
    announced: AtomicBool,
}

impl ProviderHandle {
    pub fn new(settings: Arc<Settings>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            current: RwLock::new(None),
            last_jwks_refresh: tokio::sync::Mutex::new(None),
            announced: AtomicBool::new(false),
        })
    }

    /// The discovered provider, or 503 while discovery has not succeeded yet.
    pub fn get(&self) -> Result<Arc<Provider>, Error> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Error::ProviderUnavailable("provider discovery not done yet".into()))
    }

    pub fn is_ready(&self) -> bool {
        self.get().is_ok()
    }

    fn set(&self, provider: Provider) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(provider));
    }

    /// Reads the discovery document and the JWKS it names. openidconnect refuses a
    /// document whose `issuer` is not the configured one.
    pub async fn fetch(&self, http: &OidcHttp) -> Result<Metadata, String> {
        let issuer =
            IssuerUrl::new(self.settings.oidc.issuer.clone()).map_err(|e| e.to_string())?;
        Metadata::discover_async(issuer, http)
            .await
            .map_err(|e| error_chain(&e))
    }

    /// Fetches the discovery document and JWKS once.
    pub async fn discover(&self, http: &OidcHttp) -> Result<(), String> {
        let metadata = self.fetch(http).await?;
        let provider = Provider::new(metadata, &self.settings)?;
        if !self.announced.swap(true, Ordering::Relaxed) {
            announce(&provider, &self.settings.oidc);
        }
        self.set(provider);
        Ok(())
    }

    /// Installs `metadata` if it differs from the current provider's; returns the
    /// provider to use.
    fn install_if_changed(&self, metadata: Metadata) -> Result<Arc<Provider>, String> {
        if let Ok(current) = self.get() {
            if same_metadata(&current.metadata, &metadata) {
                return Ok(current);
            }
        }
        self.set(Provider::new(metadata, &self.settings)?);
        tracing::info!(issuer = %self.settings.oidc.issuer, "provider metadata or keys changed; following them");
        self.get().map_err(|e| e.to_string())
    }

    /// Retries discovery with capped exponential backoff until it succeeds, then
    /// reads the metadata again every `oidc.metadata_refresh` (jittered by up to
    /// 10%), for as long as the server runs.
    pub async fn discover_until_ready(self: Arc<Self>) {
        let http = OidcHttp::new(self.settings.oidc.http_timeout);
        let mut delay = DISCOVERY_BACKOFF_START;
        loop {
            match self.discover(&http).await {
                Ok(()) => {
                    tracing::info!(issuer = %self.settings.oidc.issuer, "provider discovered");
                    break;
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.settings.oidc.issuer, retry_in_ms = delay.as_millis() as u64, "provider discovery failed: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(DISCOVERY_BACKOFF_MAX);
                }
            }
        }
        loop {
            tokio::time::sleep(jittered(self.settings.oidc.metadata_refresh)).await;
            let read = self.fetch(&http).await;
            if let Err(e) = read.and_then(|m| self.install_if_changed(m)) {
                tracing::warn!(issuer = %self.settings.oidc.issuer, "reading the provider's metadata again failed; keeping the current one: {e}");
            }
        }
    }

    /// Reads the metadata and JWKS again after a token named an unknown key, `seen`
    /// being the provider the caller checked the token with (a provider may publish
    /// new keys under a new `jwks_uri`). Returns the provider to retry with: the one
    /// installed since the caller looked (by a concurrent call, whose fetch this waits
    /// for, or by the periodic re-read), or a freshly read one; `None` when nothing
    /// changed and a read happened too recently.
    pub async fn refresh_jwks(
        &self,
        http: &OidcHttp,
        seen: &Arc<Provider>,
    ) -> Result<Option<Arc<Provider>>, Error> {
        // One fetch at a time; a fetch is bounded by the provider deadline.
        let mut last = self.last_jwks_refresh.lock().await;
        let current = self.get()?;
        if !Arc::ptr_eq(&current, seen) {
            return Ok(Some(current));
        }
        if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN_INTERVAL) {
            return Ok(None);
        }
        *last = Some(Instant::now());
        let metadata = self
            .fetch(http)
            .await
            .map_err(|e| Error::ProviderUnavailable(format!("metadata and keys: {e}")))?;
        let provider = self.install_if_changed(metadata).map_err(Error::Internal)?;
        tracing::info!("provider metadata and signing keys read again after an unknown key");
        Ok(Some(provider))
    }
}

/// How authorization requests reach the provider: pushed first (RFC 9126, see
/// [`crate::oidc::par`]) when `oidc.use_par` says so or the provider requires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationRoute {
    /// In the browser's redirect (the query of the authorization URL).
    Redirect,
    /// Pushed to this endpoint first (RFC 9126).
    Pushed(Url),
}

/// Whether requests are pushed, from `oidc.use_par` and the provider's metadata.
pub fn authorization_route(
    meta: &ExtraMetadata,
    oidc: &OidcSettings,
) -> Result<AuthorizationRoute, String> {
    let required = meta.require_pushed_authorization_requests;
    if !oidc.use_par && !required {
        return Ok(AuthorizationRoute::Redirect);
    }
    let why = if required {
        "the provider requires pushed authorization requests"
    } else {
        "oidc.use_par = true"
    };
    let Some(raw) = meta.pushed_authorization_request_endpoint.as_deref() else {
        return Err(format!(
            "{why}, but the provider's metadata names no pushed_authorization_request_endpoint"
        ));
    };
    match Url::parse(raw) {
        Ok(url) if is_allowed_provider_url(&url) => Ok(AuthorizationRoute::Pushed(url)),
        _ => Err(format!(
            "{why}, but its pushed_authorization_request_endpoint is not https (nor http on this machine)"
        )),
    }
}

/// Says once, at start-up, that PAR is used although not configured, and that the
/// provider does not take spa-bff's DPoP proofs.
fn announce(provider: &Provider, oidc: &OidcSettings) {
    let pushed = matches!(provider.authorization, AuthorizationRoute::Pushed(_));
    if pushed && !oidc.use_par {
        tracing::info!(
            "the provider requires pushed authorization requests (require_pushed_authorization_requests); /login pushes them although oidc.use_par = false"
        );
    }
    if let (true, DpopSupport::Refused) = (oidc.dpop, dpop_support(provider.extra())) {
        tracing::warn!("oidc.dpop = true, but the provider's dpop_signing_alg_values_supported does not name ES256: its token endpoint will refuse spa-bff's proofs");
    }
}

/// What the provider's metadata says about DPoP proofs signed with ES256 (spa-bff's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopSupport {
    /// `dpop_signing_alg_values_supported` names ES256.
    Advertised,
    /// The metadata says nothing about DPoP (it may still work).
    NotAdvertised,
    /// The metadata names DPoP algorithms, but not ES256.
    Refused,
}

pub fn dpop_support(meta: &ExtraMetadata) -> DpopSupport {
    match &meta.dpop_signing_alg_values_supported {
        None => DpopSupport::NotAdvertised,
        Some(algs) if algs.iter().any(|a| a == "ES256") => DpopSupport::Advertised,
        Some(_) => DpopSupport::Refused,
    }
}

/// Whether two readings of the provider say the same (the keys included).
fn same_metadata(a: &Metadata, b: &Metadata) -> bool {
    let json = |m: &Metadata| serde_json::to_value(m).ok();
    let keys = |m: &Metadata| serde_json::to_value(m.jwks()).ok();
    json(a) == json(b) && keys(a) == keys(b)
}

/// `every`, give or take up to 10%: instances started together do not ask together.
fn jittered(every: Duration) -> Duration {
    every.mul_f64(0.9 + rand::random::<f64>() * 0.2)
}

/// An error and its sources, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn oidc(use_par: bool) -> OidcSettings {
        let text = format!(
            "{}\n",
            crate::config::tests::minimal()
                .replace("[oidc]", &format!("[oidc]\nuse_par = {use_par}"))
        );
        Settings::from_toml_str(&text).unwrap().oidc
    }

    fn meta(endpoint: Option<&str>, required: bool) -> ExtraMetadata {
        ExtraMetadata {
            pushed_authorization_request_endpoint: endpoint.map(String::from),
            require_pushed_authorization_requests: required,
            ..ExtraMetadata::default()
        }
    }

    #[test]
    fn requests_are_pushed_when_configured_or_required_and_an_endpoint_is_needed_then() {
        let par = "https://id.example.com/par";
        let pushed = AuthorizationRoute::Pushed(par.parse().unwrap());
        for (use_par, endpoint, required, expected) in [
            (false, None, false, Ok(AuthorizationRoute::Redirect)),
            (false, Some(par), false, Ok(AuthorizationRoute::Redirect)),
            (true, Some(par), false, Ok(pushed.clone())),
            (false, Some(par), true, Ok(pushed.clone())),
            (true, None, false, Err("oidc.use_par = true, but")),
            (false, None, true, Err("the provider requires pushed")),
            (
                true,
                Some("http://id.example.com/par"),
                false,
                Err("not https"),
            ),
        ] {
            let got = authorization_route(&meta(endpoint, required), &oidc(use_par));
            match (got, expected) {
                (Ok(g), Ok(e)) => assert_eq!(g, e),
                (Err(g), Err(e)) => assert!(g.contains(e), "{g:?} lacks {e:?}"),
                (g, e) => panic!("{use_par} {endpoint:?} {required}: {g:?} vs {e:?}"),
            }
        }
    }

    #[test]
    fn dpop_proofs_are_taken_when_es256_is_advertised_and_refused_when_it_is_not() {
        let with = |algs: Option<&[&str]>| ExtraMetadata {
            dpop_signing_alg_values_supported: algs
                .map(|a| a.iter().map(|s| s.to_string()).collect()),
            ..ExtraMetadata::default()
        };
        assert_eq!(
            dpop_support(&with(Some(&["ES256", "EdDSA"]))),
            DpopSupport::Advertised
        );
        assert_eq!(dpop_support(&with(None)), DpopSupport::NotAdvertised);
        assert_eq!(
            dpop_support(&with(Some(&["RS256", "PS256"]))),
            DpopSupport::Refused
        );
    }
}
