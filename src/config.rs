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
    pub proxy: ProxySettings,
    /// `[[routes]]`: the only paths that reach an upstream (an allow-list).
    pub routes: Vec<RouteSettings>,
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

/// `[proxy]`: settings shared by every `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `proxy.csrf_header`: the header every proxied request must carry (default
    /// `X-CSRF`). A custom header forces a CORS preflight on cross-site callers.
    pub csrf_header: String,
    /// `proxy.csrf_value`: its required value (default `1`).
    pub csrf_value: String,
    /// `proxy.refresh_skew`: refresh the access token when it expires within this.
    pub refresh_skew: Duration,
    /// `proxy.refresh_lock_ttl`: how long one instance may hold a session's refresh
    /// lock (a crashed holder blocks the session's refresh at most this long).
    pub refresh_lock_ttl: Duration,
}

/// Whether a route needs, accepts or never gets the user's access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRequirement {
    /// Without a session: 401. With one: `Authorization: Bearer`.
    Required,
    /// Without a session: forwarded without a token.
    Optional,
    /// Never attach a token (the session is not even read).
    None,
}

/// One `[[routes]]` entry: requests under `prefix` go to `upstream`.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// `prefix`: e.g. `/api`; matches `/api` and `/api/...`, never `/apix`.
    pub prefix: String,
    /// `upstream`: base URL; the rest of the path is appended, the query kept.
    pub upstream: Url,
    /// `token`: `required` (default), `optional` or `none`.
    pub token: TokenRequirement,
    /// `strip_prefix` (default true): drop `prefix` before appending the path.
    pub strip_prefix: bool,
    /// `timeout` (default 30s): until the upstream's response headers arrive.
    pub timeout: Duration,
    /// `methods`: allowed methods (upper case); `None` allows all.
    pub methods: Option<Vec<String>>,
    /// `allow_set_cookie` (default false): pass the upstream's `Set-Cookie` on.
    pub allow_set_cookie: bool,
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
            None if section.starts_with("routes[") => {
                self.err(section, key, "is required");
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
            if section == "routes" {
                continue; // read (and checked key by key) by read_routes
            }
            match value.as_table() {
                Some(t) if ["server", "oidc", "session", "proxy"].contains(&section.as_str()) => {
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
    let proxy = read_proxy(r, oidc.as_ref());
    let routes = read_routes(r);
    Some(Settings {
        server: server?,
        oidc: oidc?,
        session: session?,
        proxy,
        routes,
    })
}

fn read_proxy(r: &mut Reader<'_>, oidc: Option<&OidcSettings>) -> ProxySettings {
    let csrf_header = r
        .string("proxy", "csrf_header")
        .unwrap_or_else(|| "X-CSRF".into());
    match actix_web::http::header::HeaderName::from_bytes(csrf_header.as_bytes()) {
        Ok(name) if !FORBIDDEN_CSRF_HEADERS.contains(&name.as_str()) => {}
        Ok(_) => r.err(
            "proxy",
            "csrf_header",
            format!("{csrf_header:?} is a standard header; use a custom one like X-CSRF"),
        ),
        Err(_) => r.err(
            "proxy",
            "csrf_header",
            format!("{csrf_header:?} is not a valid header name"),
        ),
    }
    let csrf_value = r
        .string("proxy", "csrf_value")
        .unwrap_or_else(|| "1".into());
    if csrf_value.is_empty() || actix_web::http::header::HeaderValue::from_str(&csrf_value).is_err()
    {
        r.err(
            "proxy",
            "csrf_value",
            "must be a non-empty, printable header value",
        );
    }
    let refresh_skew = r.duration("proxy", "refresh_skew", "30s");
    let refresh_lock_ttl = r.duration("proxy", "refresh_lock_ttl", "15s");
    if let Some(oidc) = oidc {
        if refresh_lock_ttl <= oidc.http_timeout {
            r.err(
                "proxy",
                "refresh_lock_ttl",
                "must be longer than oidc.http_timeout (a refresh must finish while its lock is held)",
            );
        }
    }
    ProxySettings {
        csrf_header,
        csrf_value,
        refresh_skew,
        refresh_lock_ttl,
    }
}

/// Headers that cannot serve as the CSRF header (browsers or spa-bff set them).
const FORBIDDEN_CSRF_HEADERS: &[&str] = &[
    "cookie",
    "authorization",
    "host",
    "origin",
    "referer",
    "content-type",
    "content-length",
    "accept",
    "connection",
    "transfer-encoding",
];

const ROUTE_KEYS: &[&str] = &[
    "prefix",
    "upstream",
    "token",
    "strip_prefix",
    "timeout",
    "methods",
    "allow_set_cookie",
];

/// `[[routes]]`: an array of tables. Each entry is read with its own [`Reader`]
/// (section name `routes[i]`), so every typed getter and its messages apply.
fn read_routes(r: &mut Reader<'_>) -> Vec<RouteSettings> {
    let entries = match r.root.get("routes") {
        None => return Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            r.errors.push(format!(
                "routes: expected an array of tables ([[routes]]), got {}",
                other.type_str()
            ));
            return Vec::new();
        }
    };
    let mut routes = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let section = format!("routes[{i}]");
        let Value::Table(table) = entry else {
            r.errors.push(format!(
                "{section}: expected a table, got {}",
                entry.type_str()
            ));
            continue;
        };
        for key in table.keys() {
            if !ROUTE_KEYS.contains(&key.as_str()) {
                r.errors.push(format!("{section}.{key}: unknown key"));
            }
        }
        let mut root = Table::new();
        root.insert(section.clone(), Value::Table(table));
        let mut sub = Reader {
            root: &root,
            errors: Vec::new(),
            known: BTreeSet::new(),
        };
        let route = read_route(&mut sub, &section);
        r.errors.append(&mut sub.errors);
        routes.extend(route);
    }
    check_route_overlaps(r, &routes);
    routes
}

fn read_route(r: &mut Reader<'_>, section: &str) -> Option<RouteSettings> {
    let prefix = r
        .required(section, "prefix")
        .and_then(|p| match route_prefix_problem(&p) {
            Some(problem) => {
                r.err(section, "prefix", format!("{p:?} {problem}"));
                None
            }
            None => Some(p),
        });
    let upstream = r
        .required(section, "upstream")
        .and_then(|raw| match Url::parse(&raw) {
            Ok(u)
                if (u.scheme() == "https" || u.scheme() == "http")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                Some(u)
            }
            Ok(_) => {
                r.err(
                    section,
                    "upstream",
                    format!(
                        "{raw:?} must be an http(s) URL without query, fragment or credentials"
                    ),
                );
                None
            }
            Err(e) => {
                r.err(section, "upstream", format!("{raw:?} is not a URL ({e})"));
                None
            }
        });
    let token = match r.string(section, "token").as_deref() {
        None | Some("required") => TokenRequirement::Required,
        Some("optional") => TokenRequirement::Optional,
        Some("none") => TokenRequirement::None,
        Some(other) => {
            r.err(
                section,
                "token",
                format!("{other:?}: expected required, optional or none"),
            );
            TokenRequirement::Required
        }
    };
    let strip_prefix = r.bool(section, "strip_prefix", true);
    let timeout = r.duration(section, "timeout", "30s");
    let methods = match r.list(section, "methods") {
        None => None,
        Some(list) if list.is_empty() => {
            r.err(
                section,
                "methods",
                "must name at least one method (or be left out)",
            );
            None
        }
        Some(list) => {
            let mut out = Vec::new();
            for m in list {
                let upper = m.to_ascii_uppercase();
                if upper.is_empty()
                    || !upper
                        .bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
                {
                    r.err(section, "methods", format!("{m:?} is not an HTTP method"));
                } else if !out.contains(&upper) {
                    out.push(upper);
                }
            }
            Some(out)
        }
    };
    let allow_set_cookie = r.bool(section, "allow_set_cookie", false);
    Some(RouteSettings {
        prefix: prefix?,
        upstream: upstream?,
        token,
        strip_prefix,
        timeout,
        methods,
        allow_set_cookie,
    })
}

/// Why `prefix` cannot be a route prefix, if it cannot.
fn route_prefix_problem(prefix: &str) -> Option<String> {
    if !prefix.starts_with('/') {
        return Some("must start with '/'".into());
    }
    if prefix == "/" {
        return Some("would proxy everything, including spa-bff's own paths".into());
    }
    if prefix.ends_with('/') {
        return Some("must not end with '/' (/api already covers /api/...)".into());
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
    {
        return Some("may only use letters, digits, '/', '-', '.', '_' and '~'".into());
    }
    if prefix
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Some("must not contain empty, '.' or '..' segments".into());
    }
    if let Some(own) = crate::routes::RESERVED_PATHS
        .iter()
        .find(|own| paths_overlap(prefix, own))
    {
        return Some(format!("collides with spa-bff's own path {own}"));
    }
    None
}

/// Whether one path is the other or lies under it (segment-wise).
pub fn paths_overlap(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    under(a, b) || under(b, a)
}

fn check_route_overlaps(r: &mut Reader<'_>, routes: &[RouteSettings]) {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if paths_overlap(&a.prefix, &b.prefix) {
                r.errors.push(format!(
                    "routes: prefixes {:?} and {:?} overlap (each request must match one route)",
                    a.prefix, b.prefix
                ));
            }
        }
    }
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

    #[test]
    fn routes_and_proxy_get_the_documented_defaults() {
        let text = format!(
            "{}\n[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9000/v1\"\n",
            minimal()
        );
        let s = Settings::from_toml_str(&text, no_env()).unwrap();
        assert_eq!(s.proxy.csrf_header, "X-CSRF");
        assert_eq!(s.proxy.csrf_value, "1");
        assert_eq!(s.proxy.refresh_skew, Duration::from_secs(30));
        let r = &s.routes[0];
        assert_eq!(r.prefix, "/api");
        assert_eq!(r.upstream.as_str(), "http://127.0.0.1:9000/v1");
        assert_eq!(r.token, TokenRequirement::Required);
        assert!(r.strip_prefix);
        assert!(!r.allow_set_cookie);
        assert_eq!(r.timeout, Duration::from_secs(30));
        assert_eq!(r.methods, None);
    }

    #[test]
    fn every_route_problem_is_reported_with_its_index() {
        let text = format!(
            r#"{}
[proxy]
csrf_header = "Cookie"
refresh_skew = "soon"
colour = "blue"

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:9000"
methods = ["get", "P O S T"]

[[routes]]
prefix = "/api/v2"
upstream = "ftp://example.com"
token = "sometimes"
verbose = true

[[routes]]
prefix = "api"

[[routes]]
prefix = "/user/data"
upstream = "https://u:p@example.com"

[[routes]]
prefix = "/x/../y"
upstream = "http://example.com?q=1"
"#,
            minimal()
        );
        let errs = Settings::from_toml_str(&text, no_env()).unwrap_err().0;
        let all = errs.join("\n");
        for needle in [
            "proxy.csrf_header",
            "proxy.refresh_skew",
            "proxy.colour: unknown key",
            "routes[0].methods: \"P O S T\" is not an HTTP method",
            "routes[1].upstream",
            "routes[1].token",
            "routes[1].verbose: unknown key",
            "routes[2].prefix: \"api\" must start with '/'",
            "routes[2].upstream: is required",
            "routes[3].prefix: \"/user/data\" collides with spa-bff's own path /user",
            "routes[3].upstream",
            "routes[4].prefix",
            "routes[4].upstream",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn overlapping_route_prefixes_are_refused() {
        let route = |p: &str| format!("[[routes]]\nprefix = \"{p}\"\nupstream = \"http://a\"\n");
        let text = format!(
            "{}\n{}{}{}",
            minimal(),
            route("/api"),
            route("/api/admin"),
            route("/apix")
        );
        let errs = Settings::from_toml_str(&text, no_env()).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("\"/api\" and \"/api/admin\" overlap"),
            "{errs:?}"
        );
        assert!(paths_overlap("/api", "/api"));
        assert!(!paths_overlap("/api", "/apix"));
    }
}
