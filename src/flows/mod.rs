//! The use cases, one module each, each readable top to bottom: starting and
//! finishing a login, keeping an access token fresh, spa-bff's own tokens for
//! client-credentials routes, logging out, and the provider's back-channel logout. Handlers extract what the request says, call
//! one function here and map the result to HTTP.
//!
//! Flows take narrow inputs ([`Deps`], [`refresh::Refresher`]), never the whole
//! application state: they sit below `state` and `routes` in the module layers.

pub mod backchannel;
pub mod client_token;
pub mod login;
pub mod logout;
pub mod refresh;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::oidc::dpop::DpopNonces;
use crate::oidc::{OidcHttp, ProviderHandle};

/// What the login, logout and back-channel flows need from the application.
pub struct Deps<'a, S> {
    pub settings: &'a Settings,
    pub store: &'a S,
    pub provider: &'a ProviderHandle,
    pub http: &'a OidcHttp,
    /// The provider's latest DPoP nonce (code exchanges of sessions with `oidc.dpop`).
    pub dpop_nonces: &'a DpopNonces,
    /// Where session endings are counted.
    pub metrics: &'a Metrics,
}
