//! `[oidc]`: the provider, spa-bff's client registration there, and what it asks for.

use super::reader::Reader;
use super::server::is_loopback_host;
use crate::secret::Sensitive;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// How spa-bff authenticates to the provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `oidc.issuer` (`SPA_BFF__OIDC__ISSUER`): the provider's issuer, exactly as it
    /// appears in its `iss` claims (discovery is `issuer/.well-known/openid-configuration`).
    /// Required; https, or http for localhost only.
    pub issuer: String,
    /// `oidc.client_id` (`SPA_BFF__OIDC__CLIENT_ID`): required.
    pub client_id: String,
    /// `oidc.client_secret` (`SPA_BFF__OIDC__CLIENT_SECRET`): required; never printed.
    pub client_secret: Sensitive,
    /// `oidc.client_auth` (`SPA_BFF__OIDC__CLIENT_AUTH`): `client_secret_basic`
    /// (default) or `client_secret_post`.
    pub client_auth: ClientAuth,
    /// `oidc.scopes` (`SPA_BFF__OIDC__SCOPES`): requested scopes; must include `openid`.
    pub scopes: Vec<String>,
    /// `oidc.auth_params` (`SPA_BFF__OIDC__AUTH_PARAMS__<NAME>`): extra authorize
    /// parameters (`audience`, `resource`, `prompt`...); not the ones spa-bff sets.
    pub auth_params: BTreeMap<String, String>,
    /// `oidc.http_timeout` (`SPA_BFF__OIDC__HTTP_TIMEOUT`): the deadline of each call to
    /// the provider, response head and whole body together (default 10s).
    pub http_timeout: Duration,
    /// `oidc.login_timeout` (`SPA_BFF__OIDC__LOGIN_TIMEOUT`): how long a started login
    /// may take (default 10m).
    pub login_timeout: Duration,
    /// `oidc.metadata_refresh` (`SPA_BFF__OIDC__METADATA_REFRESH`): how often the
    /// provider's discovery document and keys are read again (default 10m, each
    /// interval jittered by up to 10%); they are also read again when a token names a
    /// key spa-bff does not know.
    pub metadata_refresh: Duration,
}

impl OidcSettings {
    /// The RFC 8707 resource the authorization request names through `auth_params`: the
    /// audience of the session's own access token, if the configuration gives one.
    pub fn default_resource(&self) -> Option<&str> {
        self.auth_params.get("resource").map(String::as_str)
    }
}

/// Authorize parameters spa-bff sets itself; `auth_params` may not override them.
const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "response_mode",
];

/// Whether spa-bff may talk to the provider at `url`: https, or plain http on this
/// machine only (the rule for `oidc.issuer`, and for every endpoint the provider's
/// metadata names, revocation included).
pub fn is_allowed_provider_url(url: &Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(url))
}

/// Reads `[oidc]`; `None` when a required key is missing or unusable (recorded).
pub(super) fn read(r: &mut Reader<'_>) -> Option<OidcSettings> {
    let issuer = r
        .required("oidc", "issuer")
        .and_then(|raw| match Url::parse(&raw) {
            Ok(u) if is_allowed_provider_url(&u) => Some(raw),
            Ok(_) => {
                r.err(
                    "oidc",
                    "issuer",
                    format!("{raw:?} must be https (http is allowed for localhost only)"),
                );
                None
            }
            Err(e) => {
                r.err("oidc", "issuer", format!("{raw:?} is not a URL ({e})"));
                None
            }
        });
    let client_id = r.required("oidc", "client_id");
    let client_secret = r.required("oidc", "client_secret").map(Sensitive::new);
    let client_auth = match r.string("oidc", "client_auth").as_deref() {
        None | Some("client_secret_basic") => ClientAuth::ClientSecretBasic,
        Some("client_secret_post") => ClientAuth::ClientSecretPost,
        Some(other) => {
            r.err(
                "oidc",
                "client_auth",
                format!("{other:?}: expected client_secret_basic or client_secret_post"),
            );
            ClientAuth::ClientSecretBasic
        }
    };
    let scopes = r.list("oidc", "scopes").unwrap_or_else(|| {
        ["openid", "profile", "email", "offline_access"]
            .map(String::from)
            .to_vec()
    });
    if !scopes.iter().any(|s| s == "openid") {
        r.err("oidc", "scopes", "must include openid");
    }
    let auth_params = r.table("oidc", "auth_params");
    for key in auth_params.keys() {
        if RESERVED_AUTH_PARAMS.contains(&key.as_str()) {
            r.err(
                "oidc",
                &format!("auth_params.{key}"),
                "is set by spa-bff itself and cannot be overridden",
            );
        }
    }
    let http_timeout = r.duration("oidc", "http_timeout", "10s");
    let login_timeout = r.duration("oidc", "login_timeout", "10m");
    let metadata_refresh = r.duration("oidc", "metadata_refresh", "10m");
    Some(OidcSettings {
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        client_auth,
        scopes,
        auth_params,
        http_timeout,
        login_timeout,
        metadata_refresh,
    })
}
