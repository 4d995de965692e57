//! Typed settings, read from a TOML file with environment variables on top.
//!
//! The reader is [figment](https://docs.rs/figment): the file is its `Toml` provider,
//! the environment its `Env` provider (`SPA_BFF__<SECTION>__<KEY>`, nested tables with
//! more `__`; see the README's Configuration section for how values are parsed).
//!
//! One file per concern: `server`, `oidc`, `session`, `proxy` and `routes` each hold a
//! section's types and its reader; `checks` holds the rules that span sections and runs
//! once, after them. The generic part: `source` (the figment providers), `reader` (the
//! per-key collector, which also finds unknown keys) and `values` (serde types and
//! their messages).
//!
//! Error policy: reading never stops at the first problem. Every bad value, missing
//! key, unknown key or section and cross-section conflict is collected into
//! [`ConfigErrors`], one `section.key: message` line each, so one run of
//! `spa-bff check-config` shows them all. Messages never contain a secret: the client
//! secret, the Redis URL and cookie keys are [`Sensitive`](crate::secret::Sensitive) or
//! [`KeyMaterial`], print as `[redacted]`, and type errors name a value's type, not the
//! value.
//!
//! The keys themselves are defined once, by the readers: [`known_keys`] lists them, and
//! a test holds the README's table to that list.

mod checks;
mod client_key;
mod oidc;
mod proxy;
mod reader;
mod redis;
mod routes;
mod server;
mod session;
mod source;
mod values;

pub use client_key::{p256_public_members, thumbprint, ClientKey, SigningAlg};
pub use oidc::{is_allowed_provider_url, AssertionAudience, ClientAuth, OidcSettings};
pub use proxy::ProxySettings;
pub use reader::KeyKind;
pub use redis::{RedisCa, RedisSettings, RedisTopology};
pub use routes::{user_route_resources, RouteSettings, TokenRequirement};
pub use server::{Cidr, ServerSettings};
pub use session::{KeyMaterial, SameSite, SessionSettings};

use reader::Reader;
use source::Source;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "SPA_BFF__";

#[derive(Debug, Clone)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[oidc]`.
    pub oidc: OidcSettings,
    /// `[session]`.
    pub session: SessionSettings,
    /// `[proxy]`.
    pub proxy: ProxySettings,
    /// `[[routes]]`: the only paths that reach an upstream (an allow-list).
    pub routes: Vec<RouteSettings>,
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

impl Settings {
    /// Reads `path` (when given), merges the process's `SPA_BFF__*` variables over it,
    /// and validates.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigErrors> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigErrors(vec![format!(
                    "cannot read config file {}: {e}",
                    p.display()
                )])
            })?,
            None => String::new(),
        };
        let source = Source::toml(&text).map_err(|e| ConfigErrors(vec![e]))?;
        read(&source.with_env())
    }

    /// Reads and validates TOML text alone: the environment is not consulted (tests
    /// must not pick up a developer's shell variables).
    pub fn from_toml_str(text: &str) -> Result<Settings, ConfigErrors> {
        let source = Source::toml(text).map_err(|e| ConfigErrors(vec![e]))?;
        read(&source)
    }
}

/// Every section, then the cross-section checks, then unknown keys.
fn read(source: &Source) -> Result<Settings, ConfigErrors> {
    let mut r = Reader::new(source);
    let (server, oidc, session, proxy, routes) = read_sections(&mut r);
    let sections = checks::Sections {
        server: server.as_ref(),
        oidc: oidc.as_ref(),
        session: &session,
        proxy: &proxy,
        routes: &routes,
    };
    for problem in checks::check(&sections) {
        r.problem(problem);
    }
    r.report_unknown_keys();
    let (errors, _) = r.finish();
    match (server, oidc) {
        (Some(server), Some(oidc)) if errors.is_empty() => Ok(Settings {
            server,
            oidc,
            session,
            proxy,
            routes,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

type Sections = (
    Option<ServerSettings>,
    Option<OidcSettings>,
    SessionSettings,
    ProxySettings,
    Vec<RouteSettings>,
);

fn read_sections(r: &mut Reader<'_>) -> Sections {
    let server = server::read(r);
    let oidc = oidc::read(r);
    let session = session::read(r);
    let proxy = proxy::read(r);
    let routes = routes::read(r);
    (server, oidc, session, proxy, routes)
}

/// Every key spa-bff reads, as `section.key`, with what it holds. A `[[routes]]` entry's
/// keys are listed as `routes.<key>`, after `routes` itself.
pub fn known_keys() -> BTreeMap<String, KeyKind> {
    let empty = Source::empty();
    let mut r = Reader::new(&empty);
    read_sections(&mut r);
    routes::read_route(&mut r, "routes");
    r.finish().1
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    pub(crate) fn minimal() -> String {
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

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let s = Settings::from_toml_str(&minimal()).unwrap();
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
    fn every_problem_is_reported_at_once() {
        let text = r#"
[server]
public_url = "ftp://x"
listen = "nope"
[oidc]
issuer = "http://id.example.com"
client_auth = "client_secret_jwt"
auth_params = { state = "x" }
[session]
cookie_keys = ["c2hvcnQ="]
idle_timeout = "2 fortnights and a bit"
same_site = "none"
bogus = 1
[extra]
"#;
        let errs = Settings::from_toml_str(text).unwrap_err().0;
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
    fn secrets_never_appear_in_debug_output() {
        let s = Settings::from_toml_str(&minimal()).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cret"));
        assert!(!dbg.contains(KEY));
    }

    #[test]
    fn secrets_never_appear_in_error_messages() {
        let redis = "redis-password-never-printed";
        for text in [
            // Values of the wrong type: messages name the type only.
            minimal().replace("\"s3cret\"", "[\"s3cret\"]").replace(
                "[session]",
                &format!("[session]\nredis_url = [\"{redis}\"]"),
            ),
            minimal().replace("[session]", &format!("[session]\nredis_url = \"{redis}\"")),
            // toml quotes the offending line; spa-bff gives its position only.
            minimal().replace("\"s3cret\"", "\"s3cret"),
            minimal().replace(KEY, "s3cret"),
        ] {
            let all = Settings::from_toml_str(&text).unwrap_err().to_string();
            assert!(!all.contains("s3cret") && !all.contains(redis), "{all}");
        }
    }

    /// `| `section.key` | default | meaning |` rows of the README's Configuration
    /// section, with the kind their default implies (`{}`: a table; `[[x]]`: an array of
    /// tables).
    fn readme_keys() -> BTreeMap<String, KeyKind> {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("\n## Configuration")
            .expect("a Configuration section");
        let section = &readme[start + 1..];
        let end = section[1..].find("\n## ").map_or(section.len(), |i| i + 1);
        let mut keys = BTreeMap::new();
        for line in section[..end].lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, key, default, ..] = cells[..] else {
                continue;
            };
            let Some(key) = key.strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
                continue;
            };
            let (name, kind) = match key.strip_prefix("[[").and_then(|k| k.strip_suffix("]]")) {
                Some(array) => (array, KeyKind::TableArray),
                None if default == "`{}`" => (key, KeyKind::Table),
                None => (key, KeyKind::Value),
            };
            assert!(
                keys.insert(name.to_string(), kind).is_none(),
                "{name} twice"
            );
        }
        keys
    }

    #[test]
    fn readme_lists_exactly_the_keys_the_reader_knows() {
        let readme = readme_keys();
        let code = known_keys();
        for (key, kind) in &code {
            match readme.get(key) {
                None => panic!("README.md's configuration table has no row for `{key}`"),
                Some(k) => assert_eq!(k, kind, "README.md: `{key}` (tables default to `{{}}`)"),
            }
        }
        for key in readme.keys() {
            assert!(
                code.contains_key(key),
                "README.md documents `{key}`, which nothing reads"
            );
        }
        assert!(code.len() > 30, "{code:?}");
        assert_eq!(code["oidc.auth_params"], KeyKind::Table);
        assert_eq!(code["routes"], KeyKind::TableArray);
        assert_eq!(code["routes.prefix"], KeyKind::Value);
    }
}
