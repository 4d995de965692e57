//! `[oidc]`: the provider, spa-bff's client registration there, and what it asks for.

use super::client_key::ClientKey;
use super::reader::Reader;
use super::server::is_loopback_host;
use crate::paths;
use crate::secret::Sensitive;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use url::Url;

/// How spa-bff authenticates to the provider's token endpoint (and to its PAR and
/// revocation endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with `oidc.client_key_file` (RFC 7523); no shared secret.
    PrivateKeyJwt,
}

/// The `aud` of `private_key_jwt` client assertions (`oidc.client_assertion_audience`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    /// The provider's issuer identifier (the default; what the 2025 OpenID Connect
    /// Core errata and draft-ietf-oauth-rfc7523bis recommend).
    Issuer,
    /// The token endpoint URL (providers that document it, e.g. Okta).
    TokenEndpoint,
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `oidc.issuer` (`SPA_BFF__OIDC__ISSUER`): the provider's issuer, exactly as it
    /// appears in its `iss` claims (discovery is `issuer/.well-known/openid-configuration`).
    /// Required; https, or http for localhost only.
    pub issuer: String,
    /// `oidc.client_id` (`SPA_BFF__OIDC__CLIENT_ID`): required.
    pub client_id: String,
    /// `oidc.client_secret` (`SPA_BFF__OIDC__CLIENT_SECRET`): required with the
    /// `client_secret_*` methods, refused with `private_key_jwt`; never printed.
    pub client_secret: Option<Sensitive>,
    /// `oidc.client_auth` (`SPA_BFF__OIDC__CLIENT_AUTH`): `client_secret_basic`
    /// (default), `client_secret_post` or `private_key_jwt`.
    pub client_auth: ClientAuth,
    /// `oidc.client_key_file` (`SPA_BFF__OIDC__CLIENT_KEY_FILE`) and
    /// `oidc.client_key_alg` (`SPA_BFF__OIDC__CLIENT_KEY_ALG`): the private key (PKCS#8
    /// PEM or a private JWK) and its algorithm (RS256, PS256, ES256; default from the
    /// key). Required with `private_key_jwt`, refused otherwise; never printed.
    pub client_key: Option<ClientKey>,
    /// `oidc.client_assertion_audience` (`SPA_BFF__OIDC__CLIENT_ASSERTION_AUDIENCE`):
    /// `issuer` (default) or `token_endpoint`.
    pub client_assertion_audience: AssertionAudience,
    /// `oidc.use_par` (`SPA_BFF__OIDC__USE_PAR`, default false): push every
    /// authorization request (RFC 9126). PAR is also used, whatever this says, when
    /// the provider's metadata says `require_pushed_authorization_requests`.
    pub use_par: bool,
    /// `oidc.dpop` (`SPA_BFF__OIDC__DPOP`, default false): bind the tokens of every new
    /// session, and of client-credentials routes, to a key spa-bff holds (RFC 9449),
    /// proving possession on every token request and proxied call.
    pub dpop: bool,
    /// `oidc.jwks_path` (`SPA_BFF__OIDC__JWKS_PATH`): where spa-bff serves the public
    /// key of `client_key_file` as a JWKS, for providers that fetch a `jwks_uri`;
    /// none by default.
    pub jwks_path: Option<String>,
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
    let client_auth = match r.string("oidc", "client_auth").as_deref() {
        None | Some("client_secret_basic") => ClientAuth::ClientSecretBasic,
        Some("client_secret_post") => ClientAuth::ClientSecretPost,
        Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
        Some(other) => {
            r.err(
                "oidc",
                "client_auth",
                format!("{other:?}: expected client_secret_basic, client_secret_post or private_key_jwt"),
            );
            ClientAuth::ClientSecretBasic
        }
    };
    let credentials = read_credentials(r, client_auth);
    let client_assertion_audience = match r.string("oidc", "client_assertion_audience").as_deref() {
        None | Some("issuer") => AssertionAudience::Issuer,
        Some("token_endpoint") => AssertionAudience::TokenEndpoint,
        Some(other) => {
            r.err(
                "oidc",
                "client_assertion_audience",
                format!("{other:?}: expected issuer or token_endpoint"),
            );
            AssertionAudience::Issuer
        }
    };
    let use_par = r.bool("oidc", "use_par", false);
    let dpop = r.bool("oidc", "dpop", false);
    let jwks_path = read_jwks_path(r, client_auth);
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
    let (client_secret, client_key) = credentials?;
    Some(OidcSettings {
        issuer: issuer?,
        client_id: client_id?,
        client_secret,
        client_auth,
        client_key,
        client_assertion_audience,
        use_par,
        dpop,
        jwks_path,
        scopes,
        auth_params,
        http_timeout,
        login_timeout,
        metadata_refresh,
    })
}

/// The client secret or the client key, as `client_auth` needs: `None` when the one it
/// needs is missing or unusable (recorded). Every key is asked for whatever the method,
/// so that each is known (and a stray one reported).
fn read_credentials(
    r: &mut Reader<'_>,
    client_auth: ClientAuth,
) -> Option<(Option<Sensitive>, Option<ClientKey>)> {
    let secret = r.string("oidc", "client_secret");
    let key_file = r.string("oidc", "client_key_file");
    let key_alg = r.string("oidc", "client_key_alg");
    if client_auth != ClientAuth::PrivateKeyJwt {
        for (key, present) in [
            ("client_key_file", key_file.is_some()),
            ("client_key_alg", key_alg.is_some()),
        ] {
            if present {
                r.err(
                    "oidc",
                    key,
                    "is only used with client_auth = private_key_jwt",
                );
            }
        }
        let secret = r.required("oidc", "client_secret")?;
        return Some((Some(Sensitive::new(secret)), None));
    }
    if secret.is_some() {
        r.err(
            "oidc",
            "client_secret",
            "is not used with client_auth = private_key_jwt (remove it)",
        );
    }
    let file = r.required("oidc", "client_key_file")?;
    match ClientKey::load(Path::new(&file), key_alg.as_deref()) {
        Ok(key) => Some((None, Some(key))),
        Err(problem) => {
            r.err("oidc", "client_key_file", problem);
            None
        }
    }
}

/// `jwks_path`: an own path like `/login` (checked like a route prefix, and not one of
/// spa-bff's other paths); only with a client key to publish.
fn read_jwks_path(r: &mut Reader<'_>, client_auth: ClientAuth) -> Option<String> {
    let path = r.string("oidc", "jwks_path")?;
    let problem = if client_auth != ClientAuth::PrivateKeyJwt {
        Some("needs client_auth = private_key_jwt (there is no public key to serve)".to_string())
    } else if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
        Some("must start with '/' and not end with '/'".into())
    } else if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        || path
            .split('/')
            .skip(1)
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        Some("may only use letters, digits, '/', '-', '.', '_' and '~', without empty, '.' or '..' segments".into())
    } else {
        paths::RESERVED
            .iter()
            .find(|own| paths::paths_overlap(&path, own))
            .map(|own| format!("collides with spa-bff's own path {own}"))
    };
    match problem {
        Some(p) => {
            r.err("oidc", "jwks_path", format!("{path:?} {p}"));
            None
        }
        None => Some(path),
    }
}
