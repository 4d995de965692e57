//! Where settings come from: the TOML file, with `SPA_BFF__*` environment variables
//! merged on top, by figment (`Toml`, then `Env::prefixed(ENV_PREFIX).split("__")`).
//!
//! figment reads an environment value as a number when it looks like one (`007` becomes
//! 7); [`Source::find`] gives a string key the variable's text back, so a numeric client
//! id or secret arrives as written.

use super::ENV_PREFIX;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use std::collections::BTreeMap;

/// The merged configuration, plus the raw text of each `SPA_BFF__*` variable.
pub(super) struct Source {
    figment: Figment,
    /// Raw environment values by dotted key (`oidc.client_id`): figment reads `007` as
    /// the number 7, and a string key must get the text as written.
    env: BTreeMap<String, String>,
}

impl Source {
    /// TOML text alone (no environment).
    pub(super) fn toml(text: &str) -> Result<Source, String> {
        // toml's own message quotes the offending line, which may hold a secret: report
        // the position and the reason only (figment would pass the whole message on).
        if let Err(e) = text.parse::<toml::Table>() {
            let at = e.span().map_or(String::new(), |span| {
                let before = &text[..span.start];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line}, column {column}")
            });
            return Err(format!("invalid TOML{at}: {}", e.message()));
        }
        Ok(Source {
            figment: Figment::from(Toml::string(text)),
            env: BTreeMap::new(),
        })
    }

    /// An empty configuration (every key missing).
    pub(super) fn empty() -> Source {
        Source {
            figment: Figment::new(),
            env: BTreeMap::new(),
        }
    }

    /// The process's `SPA_BFF__<SECTION>__<KEY>` variables, merged over what is there.
    pub(super) fn with_env(mut self) -> Source {
        let env = Env::prefixed(ENV_PREFIX).split("__");
        self.env = env
            .iter()
            .map(|(key, raw)| (key.as_str().to_string(), raw.trim().to_string()))
            .collect();
        self.figment = self.figment.merge(env);
        self
    }

    /// One entry of an array of tables, as a source whose only section is `section`.
    pub(super) fn entry(section: &str, entry: Value) -> Source {
        Source {
            figment: Figment::from(Serialized::default(section, entry)),
            env: BTreeMap::new(),
        }
    }

    /// The whole configuration (empty when there is none).
    pub(super) fn root(&self) -> Dict {
        self.figment.extract::<Dict>().unwrap_or_default()
    }

    /// The value at a dotted path. A number taken from the environment comes back as
    /// the variable's text (`007` stays `007`); a number from the file stays a number.
    pub(super) fn find(&self, path: &str) -> Option<Value> {
        match self.figment.find_value(path).ok()? {
            Value::Num(tag, _) if self.env.contains_key(path) => {
                Some(Value::String(tag, self.env[path].clone()))
            }
            Value::Dict(tag, dict) => Some(Value::Dict(
                tag,
                dict.into_iter()
                    .map(|(k, v)| match (v, self.env.get(&format!("{path}.{k}"))) {
                        (Value::Num(tag, _), Some(raw)) => (k, Value::String(tag, raw.clone())),
                        (v, _) => (k, v),
                    })
                    .collect(),
            )),
            value => Some(value),
        }
    }

    /// ` (set by SPA_BFF__X__Y)` when `path` or something below it came from a variable.
    pub(super) fn origin(&self, path: &str) -> String {
        let below = format!("{path}.");
        self.env
            .keys()
            .find(|k| *k == path || k.starts_with(&below))
            .map_or(String::new(), |k| {
                format!(
                    " (set by {ENV_PREFIX}{})",
                    k.to_uppercase().replace('.', "__")
                )
            })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures must return figment::Error
mod tests {
    use super::super::tests::{minimal, KEY};
    use super::super::{Settings, ENV_PREFIX};
    use figment::Jail;
    use std::path::Path;
    use std::time::Duration;

    /// `Settings::load` of `minimal()` with exactly `vars` in the environment.
    fn load_with(vars: &[(&str, &str)]) -> Result<Settings, Vec<String>> {
        load_text_with(&minimal(), vars)
    }

    /// `Settings::load` of a file holding `text`, with exactly `vars` in the environment.
    fn load_text_with(text: &str, vars: &[(&str, &str)]) -> Result<Settings, Vec<String>> {
        let mut result = None;
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("spa-bff.toml", text)?;
            for (name, value) in vars {
                jail.set_env(name, value);
            }
            result = Some(Settings::load(Some(Path::new("spa-bff.toml"))).map_err(|e| e.0));
            Ok(())
        });
        result.expect("the jail ran")
    }

    #[test]
    fn env_overrides_file_values_including_lists_and_tables() {
        let s = load_with(&[
            ("SPA_BFF__OIDC__CLIENT_SECRET", "from-env"),
            ("SPA_BFF__OIDC__SCOPES", r#"["openid", "api"]"#),
            ("SPA_BFF__OIDC__AUTH_PARAMS__AUDIENCE", "https://api"),
            ("SPA_BFF__SESSION__IDLE_TIMEOUT", "5m"),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        assert_eq!(s.oidc.client_secret.as_ref().unwrap().expose(), "from-env");
        assert_eq!(s.oidc.scopes, vec!["openid", "api"]);
        assert_eq!(s.oidc.auth_params["audience"], "https://api");
        assert_eq!(s.session.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn env_fills_in_what_the_file_lacks_with_every_value_form() {
        let s = load_with(&[
            (
                "SPA_BFF__SESSION__COOKIE_KEYS",
                &format!("[\"{KEY}\", \"{KEY}\"]"),
            ),
            ("SPA_BFF__SESSION__INSECURE_COOKIES", "true"),
            ("SPA_BFF__SERVER__PUBLIC_URL", "http://localhost:8080"),
            ("SPA_BFF__SERVER__WORKERS", "4"),
            ("SPA_BFF__OIDC__SCOPES", "openid,api email"),
            (
                "SPA_BFF__OIDC__AUTH_PARAMS",
                "{ prompt = login, max_age = 60 }",
            ),
        ])
        .unwrap();
        assert_eq!(s.session.cookie_keys.len(), 2);
        assert!(s.session.insecure_cookies);
        assert_eq!(s.server.workers, Some(4));
        assert_eq!(s.oidc.scopes, vec!["openid", "api", "email"]);
        assert_eq!(s.oidc.auth_params["prompt"], "login");
        assert_eq!(s.oidc.auth_params["max_age"], "60");
    }

    #[test]
    fn an_env_table_is_merged_key_by_key_with_the_files() {
        let text = minimal().replace(
            "[session]",
            "auth_params = { prompt = \"login\" }\n[session]",
        );
        let s = load_text_with(
            &text,
            &[("SPA_BFF__OIDC__AUTH_PARAMS__AUDIENCE", "https://api")],
        )
        .unwrap();
        assert_eq!(s.oidc.auth_params["prompt"], "login");
        assert_eq!(s.oidc.auth_params["audience"], "https://api");
        let s = load_text_with(
            &text,
            &[(
                "SPA_BFF__OIDC__AUTH_PARAMS",
                r#"{ audience = "https://api" }"#,
            )],
        )
        .unwrap();
        assert_eq!(s.oidc.auth_params.len(), 2, "{:?}", s.oidc.auth_params);
    }

    #[test]
    fn a_numeric_env_value_is_taken_verbatim_where_a_string_is_expected() {
        let s = load_with(&[
            ("SPA_BFF__OIDC__CLIENT_ID", "007"),
            ("SPA_BFF__OIDC__CLIENT_SECRET", "1.50"),
            ("SPA_BFF__PROXY__CSRF_VALUE", "+1"),
            ("SPA_BFF__OIDC__AUTH_PARAMS__MAX_AGE", "0300"),
        ])
        .unwrap();
        assert_eq!(s.oidc.client_id, "007");
        assert_eq!(s.oidc.client_secret.as_ref().unwrap().expose(), "1.50");
        assert_eq!(s.proxy.csrf_value, "+1");
        assert_eq!(s.oidc.auth_params["max_age"], "0300");
    }

    #[test]
    fn figment_strips_quotes_and_whitespace_from_env_values() {
        let s = load_with(&[
            ("SPA_BFF__OIDC__CLIENT_ID", "\"123\""),
            ("SPA_BFF__SESSION__KEY_PREFIX", "  app: "),
        ])
        .unwrap();
        assert_eq!(s.oidc.client_id, "123");
        assert_eq!(s.session.key_prefix, "app:");
    }

    #[test]
    fn routes_from_the_environment_replace_the_files_routes_as_a_whole() {
        let file = format!(
            "{}\n[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9001\"\n",
            minimal()
        );
        let s = load_text_with(
            &file,
            &[(
                "SPA_BFF__ROUTES",
                r#"[{ prefix = "/orders", upstream = "http://127.0.0.1:9002", token = "none" }]"#,
            )],
        )
        .unwrap();
        let prefixes: Vec<&str> = s.routes.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/orders"]);
        let s = load_text_with(&file, &[]).unwrap();
        assert_eq!(s.routes.len(), 1);
        assert_eq!(s.routes[0].prefix, "/api");
    }

    #[test]
    fn env_problems_name_the_variable() {
        let errs = load_with(&[
            ("SPA_BFF__SESSION__BOGUS", "1"),
            ("SPA_BFF__NOPE", "1"),
            ("SPA_BFF__ROUTES__PREFIX", "/api"),
            ("SPA_BFF__OIDC__SCOPES", r#"["openid", "api""#),
            ("SPA_BFF__SESSION__IDLE_TIMEOUT", "true"),
        ])
        .unwrap_err()
        .join("\n");
        for needle in [
            "session.bogus: unknown key (set by SPA_BFF__SESSION__BOGUS)",
            "nope: unknown section (set by SPA_BFF__NOPE)",
            "routes: expected an array of tables ([[routes]]), got table (set by SPA_BFF__ROUTES__PREFIX)",
            "oidc.scopes: starts with '[' but is not an array",
            "session.idle_timeout: expected a string, got boolean (set by SPA_BFF__SESSION__IDLE_TIMEOUT)",
        ] {
            assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
        }
    }

    #[test]
    fn secrets_from_env_never_appear_in_error_messages() {
        let errs = load_with(&[
            ("SPA_BFF__OIDC__CLIENT_SECRET", "[\"env-secret\"]"),
            ("SPA_BFF__SESSION__REDIS_URL", "http://user:env-password@x"),
            ("SPA_BFF__SESSION__COOKIE_KEYS", "env-key-material"),
        ])
        .unwrap_err()
        .join("\n");
        assert!(errs.contains("oidc.client_secret"), "{errs}");
        assert!(errs.contains("session.redis_url"), "{errs}");
        assert!(errs.contains("session.cookie_keys"), "{errs}");
        assert!(!errs.contains("env-"), "{errs}");
    }

    #[test]
    fn from_toml_str_ignores_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env(format!("{ENV_PREFIX}OIDC__CLIENT_ID"), "from-env");
            jail.set_env(format!("{ENV_PREFIX}SESSION__BOGUS"), "1");
            let s = Settings::from_toml_str(&minimal()).unwrap();
            assert_eq!(s.oidc.client_id, "spa");
            Ok(())
        });
    }
}
