//! Typed settings, loaded from a TOML file and overridden by environment variables.
//!
//! Any key can be set as `SPA_BFF__<SECTION>__<KEY>` (for example
//! `SPA_BFF__OIDC__CLIENT_SECRET`); a value that starts with `[` or `{` is read as a
//! TOML array or inline table, `true`/`false` as booleans, anything else as a string.
//! Validation collects every problem before reporting, so one run of
//! `spa-bff check-config` shows them all. Secrets are [`Sensitive`] and never print.

use crate::secret::Sensitive;
use base64::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value};
use url::Url;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "SPA_BFF__";

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub oidc: OidcSettings,
    pub session: SessionSettings,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `server.listen`: socket address to bind, e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// `server.public_url`: the origin the browser sees; no path.
    pub public_url: Url,
    /// `server.static_dir`: SPA files to serve, with `index.html` fallback.
    pub static_dir: Option<PathBuf>,
    /// `server.workers`: HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
}

impl ServerSettings {
    /// The exact redirect URI registered at the provider.
    pub fn redirect_uri(&self) -> String {
        format!("{}/callback", self.origin())
    }

    /// `scheme://host[:port]` without a trailing slash.
    pub fn origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `oidc.issuer`: the provider's issuer, exactly as it appears in its `iss`
    /// claims (discovery is `issuer/.well-known/openid-configuration`).
    pub issuer: String,
    /// `oidc.client_id`.
    pub client_id: String,
    /// `oidc.client_secret` (env: `SPA_BFF__OIDC__CLIENT_SECRET`).
    pub client_secret: Sensitive,
    /// `oidc.client_auth`: `client_secret_basic` (default) or `client_secret_post`.
    pub client_auth: ClientAuth,
    /// `oidc.scopes`: requested scopes; `openid` is always sent.
    pub scopes: Vec<String>,
    /// `oidc.auth_params`: extra authorize parameters (`audience`, `resource`, `prompt`...).
    pub auth_params: BTreeMap<String, String>,
    /// `oidc.http_timeout`: timeout of each request to the provider.
    pub http_timeout: Duration,
    /// `oidc.login_timeout`: how long a started login may take.
    pub login_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
}

/// Raw key material (cookie keys). Never printed.
#[derive(Clone)]
pub struct KeyMaterial(Vec<u8>);

impl KeyMaterial {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {} bytes]", self.0.len())
    }
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// `session.redis_url` (may hold a password, so it is sensitive).
    pub redis_url: Sensitive,
    /// `session.key_prefix`: every Redis key starts with it.
    pub key_prefix: String,
    /// The effective cookie name (`session.cookie_name`, without `__Host-` when insecure).
    pub cookie_name: String,
    /// `session.cookie_keys`: the first encrypts, all decrypt.
    pub cookie_keys: Vec<KeyMaterial>,
    /// `session.idle_timeout`.
    pub idle_timeout: Duration,
    /// `session.absolute_timeout`.
    pub absolute_timeout: Duration,
    /// `session.same_site`.
    pub same_site: SameSite,
    /// `session.insecure_cookies`: no `Secure`, no `__Host-` (http on localhost only).
    pub insecure_cookies: bool,
    /// `session.redis_timeout`: bound on every Redis command.
    pub redis_timeout: Duration,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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

impl Settings {
    /// Loads `path` (when given), applies `SPA_BFF__*` variables from `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigErrors> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigErrors(vec![format!(
                    "cannot read config file {}: {e}",
                    p.display()
                )])
            })?,
            None => String::new(),
        };
        Self::from_toml_str(&text, env)
    }

    /// Parses TOML text, applies environment overrides, validates.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigErrors> {
        let mut root: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigErrors(vec![format!("invalid TOML: {e}")]))?;
        let mut errors = Vec::new();
        apply_env(&mut root, env, &mut errors);
        let mut r = Reader {
            root: &root,
            errors,
            known: BTreeSet::new(),
        };
        let settings = read_settings(&mut r);
        r.report_unknown_keys();
        match settings {
            Some(s) if r.errors.is_empty() => Ok(s),
            _ => Err(ConfigErrors(r.errors)),
        }
    }
}

fn apply_env(
    root: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<String>,
) {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
            errors.push(format!(
                "{name}: expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. SPA_BFF__OIDC__CLIENT_ID"
            ));
            continue;
        }
        let value = match parse_env_value(&raw) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut table = &mut *root;
        for part in &path[..path.len() - 1] {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            table = entry.as_table_mut().expect("just made a table");
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
}

fn parse_env_value(raw: &str) -> Result<Value, String> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let doc: Table = format!("v = {raw}")
            .parse()
            .map_err(|e: toml::de::Error| format!("not a TOML array/table: {}", e.message()))?;
        return Ok(doc.get("v").cloned().unwrap_or(Value::String(raw.into())));
    }
    Ok(match raw {
        "true" => Value::Boolean(true),
        "false" => Value::Boolean(false),
        _ => Value::String(raw.to_string()),
    })
}

/// Reads typed values out of the merged TOML, recording every problem.
struct Reader<'a> {
    root: &'a Table,
    errors: Vec<String>,
    known: BTreeSet<String>,
}

impl Reader<'_> {
    fn get(&mut self, section: &str, key: &str) -> Option<&Value> {
        self.known.insert(format!("{section}.{key}"));
        self.root
            .get(section)
            .and_then(Value::as_table)
            .and_then(|t| t.get(key))
    }

    fn err(&mut self, section: &str, key: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{section}.{key}: {msg}"));
    }

    fn string(&mut self, section: &str, key: &str) -> Option<String> {
        match self.get(section, key).cloned() {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Integer(i)) => Some(i.to_string()),
            Some(other) => {
                self.err(
                    section,
                    key,
                    format!("expected a string, got {}", other.type_str()),
                );
                None
            }
        }
    }

    fn required(&mut self, section: &str, key: &str) -> Option<String> {
        match self.string(section, key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.err(section, key, "must not be empty");
                None
            }
            None => {
                let env = format!(
                    "{ENV_PREFIX}{}__{}",
                    section.to_uppercase(),
                    key.to_uppercase()
                );
                self.err(section, key, format!("is required (or set {env})"));
                None
            }
        }
    }

    fn bool(&mut self, section: &str, key: &str, default: bool) -> bool {
        match self.get(section, key).cloned() {
            None => default,
            Some(Value::Boolean(b)) => b,
            Some(other) => {
                self.err(
                    section,
                    key,
                    format!("expected true or false, got {}", other.type_str()),
                );
                default
            }
        }
    }

    fn duration(&mut self, section: &str, key: &str, default: &str) -> Duration {
        let raw = self.string(section, key).unwrap_or_else(|| default.into());
        match humantime::parse_duration(&raw) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(section, key, "must be greater than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.err(
                    section,
                    key,
                    format!("{raw:?} is not a duration like 30s, 10m or 12h ({e})"),
                );
                Duration::from_secs(1)
            }
        }
    }

    /// A list given as a TOML array of strings or as one space-separated string.
    fn list(&mut self, section: &str, key: &str) -> Option<Vec<String>> {
        match self.get(section, key).cloned() {
            None => None,
            Some(Value::String(s)) => Some(
                s.split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(s),
                        other => {
                            self.err(
                                section,
                                key,
                                format!("list items must be strings, got {}", other.type_str()),
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Some(other) => {
                self.err(
                    section,
                    key,
                    format!("expected a list of strings, got {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string_table(&mut self, section: &str, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.get(section, key).cloned() {
            None => {}
            Some(Value::Table(t)) => {
                for (k, v) in t {
                    match v {
                        Value::String(s) => {
                            out.insert(k, s);
                        }
                        Value::Integer(_) | Value::Boolean(_) | Value::Float(_) => {
                            out.insert(k, v.to_string());
                        }
                        other => self.err(
                            section,
                            &format!("{key}.{k}"),
                            format!("expected a string, got {}", other.type_str()),
                        ),
                    }
                }
            }
            Some(other) => self.err(
                section,
                key,
                format!("expected a table, got {}", other.type_str()),
            ),
        }
        out
    }

    fn report_unknown_keys(&mut self) {
        let mut unknown = Vec::new();
        for (section, value) in self.root {
            match value.as_table() {
                Some(t) if ["server", "oidc", "session"].contains(&section.as_str()) => {
                    for key in t.keys() {
                        if !self.known.contains(&format!("{section}.{key}")) {
                            unknown.push(format!("{section}.{key}: unknown key"));
                        }
                    }
                }
                _ => unknown.push(format!("{section}: unknown section")),
            }
        }
        self.errors.extend(unknown);
    }
}

fn read_settings(r: &mut Reader<'_>) -> Option<Settings> {
    let server = read_server(r);
    let oidc = read_oidc(r);
    let session = read_session(r, server.as_ref());
    Some(Settings {
        server: server?,
        oidc: oidc?,
        session: session?,
    })
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn read_server(r: &mut Reader<'_>) -> Option<ServerSettings> {
    let listen = r
        .string("server", "listen")
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    if listen.parse::<std::net::SocketAddr>().is_err() {
        r.err(
            "server",
            "listen",
            format!("{listen:?} is not an address like 0.0.0.0:8080"),
        );
    }
    let public_url = r.required("server", "public_url").and_then(|raw| {
        match Url::parse(&raw) {
            Ok(u)
                if (u.scheme() == "https" || u.scheme() == "http")
                    && u.host().is_some()
                    && (u.path() == "/" || u.path().is_empty())
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty() =>
            {
                Some(u)
            }
            Ok(_) => {
                r.err("server", "public_url", format!("{raw:?} must be an http(s) origin without path, query or credentials, e.g. https://app.example.com"));
                None
            }
            Err(e) => {
                r.err("server", "public_url", format!("{raw:?} is not a URL ({e})"));
                None
            }
        }
    });
    let static_dir = r.string("server", "static_dir").map(PathBuf::from);
    if let Some(dir) = &static_dir {
        if !dir.join("index.html").is_file() {
            r.err(
                "server",
                "static_dir",
                format!("{} has no index.html", dir.display()),
            );
        }
    }
    let workers = match r.string("server", "workers") {
        None => None,
        Some(w) => match w.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                r.err("server", "workers", "must be a positive integer");
                None
            }
        },
    };
    Some(ServerSettings {
        listen,
        public_url: public_url?,
        static_dir,
        workers,
    })
}

fn read_oidc(r: &mut Reader<'_>) -> Option<OidcSettings> {
    let issuer = r
        .required("oidc", "issuer")
        .and_then(|raw| match Url::parse(&raw) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)) => {
                Some(raw)
            }
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
    let auth_params = r.string_table("oidc", "auth_params");
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
    Some(OidcSettings {
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        client_auth,
        scopes,
        auth_params,
        http_timeout,
        login_timeout,
    })
}

fn read_session(r: &mut Reader<'_>, server: Option<&ServerSettings>) -> Option<SessionSettings> {
    let redis_url = r
        .string("session", "redis_url")
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    if let Err(e) = redis::Client::open(redis_url.as_str()) {
        // The URL may hold a password: report the kind of problem, not the value.
        let _ = e;
        r.err(
            "session",
            "redis_url",
            "is not a Redis URL (expected redis://, rediss:// or unix://)",
        );
    }
    let key_prefix = r
        .string("session", "key_prefix")
        .unwrap_or_else(|| "spa-bff:".into());
    if key_prefix.contains(['{', '}']) {
        r.err(
            "session",
            "key_prefix",
            "must not contain { or } (they delimit Redis Cluster hash tags)",
        );
    }
    let configured_name = r
        .string("session", "cookie_name")
        .unwrap_or_else(|| "__Host-spa-bff".into());
    if configured_name.is_empty()
        || !configured_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        r.err(
            "session",
            "cookie_name",
            "must be non-empty and use only letters, digits, '-', '_' and '.'",
        );
    }
    let cookie_keys = match r.list("session", "cookie_keys") {
        None => {
            r.err("session", "cookie_keys", "is required: a list of base64 keys of at least 32 bytes (generate one with `openssl rand -base64 32`)");
            Vec::new()
        }
        Some(keys) if keys.is_empty() => {
            r.err("session", "cookie_keys", "needs at least one key");
            Vec::new()
        }
        Some(keys) => {
            let mut out = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                match decode_key(k) {
                    Some(bytes) if bytes.len() >= 32 => out.push(KeyMaterial(bytes)),
                    Some(bytes) => r.err(
                        "session",
                        "cookie_keys",
                        format!(
                            "key #{} is {} bytes; at least 32 are needed",
                            i + 1,
                            bytes.len()
                        ),
                    ),
                    None => r.err(
                        "session",
                        "cookie_keys",
                        format!("key #{} is not valid base64", i + 1),
                    ),
                }
            }
            out
        }
    };
    let idle_timeout = r.duration("session", "idle_timeout", "30m");
    let absolute_timeout = r.duration("session", "absolute_timeout", "12h");
    if idle_timeout > absolute_timeout {
        r.err(
            "session",
            "idle_timeout",
            "must not be longer than absolute_timeout",
        );
    }
    let same_site = match r.string("session", "same_site").as_deref() {
        None | Some("lax") | Some("Lax") => SameSite::Lax,
        Some("strict") | Some("Strict") => SameSite::Strict,
        Some(other) => {
            r.err(
                "session",
                "same_site",
                format!("{other:?}: expected lax or strict (none would allow cross-site requests)"),
            );
            SameSite::Lax
        }
    };
    let insecure_cookies = r.bool("session", "insecure_cookies", false);
    let redis_timeout = r.duration("session", "redis_timeout", "2s");
    if let Some(server) = server {
        let url = &server.public_url;
        if insecure_cookies && !(url.scheme() == "http" && is_loopback_host(url)) {
            r.err(
                "session",
                "insecure_cookies",
                "is only allowed when server.public_url is http://localhost or http://127.0.0.1",
            );
        }
        if !insecure_cookies && url.scheme() == "http" {
            r.err("server", "public_url", "is http: browsers drop Secure cookies on http; use https, or set session.insecure_cookies = true for local development");
        }
    }
    let cookie_name = if insecure_cookies {
        configured_name
            .strip_prefix("__Host-")
            .unwrap_or(&configured_name)
            .to_string()
    } else {
        configured_name
    };
    Some(SessionSettings {
        redis_url: Sensitive::new(redis_url),
        key_prefix,
        cookie_name,
        cookie_keys,
        idle_timeout,
        absolute_timeout,
        same_site,
        insecure_cookies,
        redis_timeout,
    })
}

fn decode_key(k: &str) -> Option<Vec<u8>> {
    let k = k.trim();
    base64::engine::general_purpose::STANDARD
        .decode(k)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(k))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(k))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    fn minimal() -> String {
        format!(
            r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "spa"
client_secret = "s3cret"
[session]
cookie_keys = ["{KEY}"]
"#
        )
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let s = Settings::from_toml_str(&minimal(), no_env()).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.server.redirect_uri(), "https://app.example.com/callback");
        assert_eq!(s.oidc.client_auth, ClientAuth::ClientSecretBasic);
        assert_eq!(
            s.oidc.scopes,
            vec!["openid", "profile", "email", "offline_access"]
        );
        assert_eq!(s.session.cookie_name, "__Host-spa-bff");
        assert_eq!(s.session.key_prefix, "spa-bff:");
        assert_eq!(s.session.idle_timeout, Duration::from_secs(30 * 60));
        assert_eq!(s.session.absolute_timeout, Duration::from_secs(12 * 3600));
        assert_eq!(s.session.same_site, SameSite::Lax);
        assert!(!s.session.insecure_cookies);
    }

    #[test]
    fn env_overrides_file_values_including_lists_and_tables() {
        let env = vec![
            ("SPA_BFF__OIDC__CLIENT_SECRET".into(), "from-env".into()),
            (
                "SPA_BFF__OIDC__SCOPES".into(),
                r#"["openid", "api"]"#.into(),
            ),
            (
                "SPA_BFF__OIDC__AUTH_PARAMS__AUDIENCE".into(),
                "https://api".into(),
            ),
            ("SPA_BFF__SESSION__IDLE_TIMEOUT".into(), "5m".into()),
            ("UNRELATED".into(), "x".into()),
        ];
        let s = Settings::from_toml_str(&minimal(), env).unwrap();
        assert_eq!(s.oidc.client_secret.expose(), "from-env");
        assert_eq!(s.oidc.scopes, vec!["openid", "api"]);
        assert_eq!(s.oidc.auth_params["audience"], "https://api");
        assert_eq!(s.session.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[server]
public_url = "ftp://x"
listen = "nope"
[oidc]
issuer = "http://id.example.com"
client_auth = "private_key_jwt"
auth_params = { state = "x" }
[session]
cookie_keys = ["c2hvcnQ="]
idle_timeout = "2 fortnights and a bit"
same_site = "none"
bogus = 1
[extra]
"#;
        let errs = Settings::from_toml_str(text, no_env()).unwrap_err().0;
        let all = errs.join("\n");
        for needle in [
            "server.listen",
            "server.public_url",
            "oidc.issuer",
            "oidc.client_id: is required",
            "oidc.client_secret: is required (or set SPA_BFF__OIDC__CLIENT_SECRET)",
            "oidc.client_auth",
            "oidc.auth_params.state",
            "session.cookie_keys: key #1 is 5 bytes",
            "session.idle_timeout",
            "session.same_site",
            "session.bogus: unknown key",
            "extra: unknown section",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn insecure_cookies_only_on_http_localhost_and_drop_the_host_prefix() {
        let local = minimal()
            .replace("https://app.example.com", "http://127.0.0.1:8080")
            .replace("[session]", "[session]\ninsecure_cookies = true");
        let s = Settings::from_toml_str(&local, no_env()).unwrap();
        assert_eq!(s.session.cookie_name, "spa-bff");

        let remote = minimal().replace("[session]", "[session]\ninsecure_cookies = true");
        let errs = Settings::from_toml_str(&remote, no_env()).unwrap_err().0;
        assert!(errs[0].starts_with("session.insecure_cookies"), "{errs:?}");

        let http = minimal().replace("https://app.example.com", "http://127.0.0.1:8080");
        let errs = Settings::from_toml_str(&http, no_env()).unwrap_err().0;
        assert!(errs[0].contains("Secure cookies"), "{errs:?}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let s = Settings::from_toml_str(&minimal(), no_env()).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cret"));
        assert!(!dbg.contains(KEY));
    }
}
