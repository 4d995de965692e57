//! `[session]`: where sessions live (Redis, see [`super::redis`]), the cookie that
//! points at them, and how long they last.

use super::reader::Reader;
use super::redis::RedisSettings;
use base64::Engine;
use std::fmt;
use std::time::Duration;

/// The session cookie's `SameSite` attribute (`None` is refused).
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
    /// The Redis deployment: `session.redis_url` or `redis_cluster_urls` or
    /// `redis_sentinel_urls`, credentials, CA, `redis_timeout` (see [`RedisSettings`]).
    pub redis: RedisSettings,
    /// `session.key_prefix` (`SPA_BFF__SESSION__KEY_PREFIX`): every Redis key starts with
    /// it (default `spa-bff:`).
    pub key_prefix: String,
    /// `session.cookie_name` (`SPA_BFF__SESSION__COOKIE_NAME`), as used: the configured
    /// name (default `__Host-spa-bff`) without `__Host-` when `insecure_cookies`.
    pub cookie_name: String,
    /// `session.cookie_keys` (`SPA_BFF__SESSION__COOKIE_KEYS`): base64 keys of at least
    /// 32 bytes; the first encrypts, all decrypt. Required; never printed.
    pub cookie_keys: Vec<KeyMaterial>,
    /// `session.idle_timeout` (`SPA_BFF__SESSION__IDLE_TIMEOUT`): a session ends after
    /// this long without a request (default 30m).
    pub idle_timeout: Duration,
    /// `session.absolute_timeout` (`SPA_BFF__SESSION__ABSOLUTE_TIMEOUT`): a session ends
    /// this long after login (default 12h).
    pub absolute_timeout: Duration,
    /// `session.same_site` (`SPA_BFF__SESSION__SAME_SITE`): `lax` (default) or `strict`.
    pub same_site: SameSite,
    /// `session.insecure_cookies` (`SPA_BFF__SESSION__INSECURE_COOKIES`): no `Secure`, no
    /// `__Host-` (http on localhost only; default false).
    pub insecure_cookies: bool,
    /// `session.allow_cookie_without_host_prefix`
    /// (`SPA_BFF__SESSION__ALLOW_COOKIE_WITHOUT_HOST_PREFIX`): accept a `cookie_name`
    /// without `__Host-` in secure mode (default false: such a name is refused, since
    /// without the prefix a sibling subdomain can set or shadow the session cookie).
    pub allow_cookie_without_host_prefix: bool,
    /// `session.cache_sessions` (`SPA_BFF__SESSION__CACHE_SESSIONS`): how many
    /// sessions each instance keeps decrypted in memory, so a request of a known
    /// session needs no Redis round trip (default 10000; 0 turns the cache off).
    /// Copies are dropped within a second of any change on any instance (see
    /// `store::cache`).
    pub cache_sessions: usize,
}

/// Reads `[session]`. Problems are recorded; the settings returned then hold stand-ins.
pub(super) fn read(r: &mut Reader<'_>) -> SessionSettings {
    let redis = super::redis::read(r);
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
    let configured_name = read_cookie_name(r);
    let cookie_keys = read_cookie_keys(r);
    let idle_timeout = r.duration("session", "idle_timeout", "30m");
    let absolute_timeout = r.duration("session", "absolute_timeout", "12h");
    if idle_timeout > absolute_timeout {
        r.err(
            "session",
            "idle_timeout",
            "must not be longer than absolute_timeout",
        );
    }
    let same_site = read_same_site(r);
    let insecure_cookies = r.bool("session", "insecure_cookies", false);
    let allow_cookie_without_host_prefix =
        r.bool("session", "allow_cookie_without_host_prefix", false);
    if !insecure_cookies
        && !allow_cookie_without_host_prefix
        && !configured_name.starts_with("__Host-")
    {
        r.err(
            "session",
            "cookie_name",
            "must start with __Host- (the browser then refuses the cookie from another subdomain, over http, or with a Domain); set session.allow_cookie_without_host_prefix = true to accept a name without it",
        );
    }
    let cookie_name = match insecure_cookies {
        true => configured_name
            .strip_prefix("__Host-")
            .unwrap_or(&configured_name)
            .to_string(),
        false => configured_name,
    };
    let cache_sessions = r.count("session", "cache_sessions", 10_000) as usize;
    SessionSettings {
        redis,
        key_prefix,
        cookie_name,
        cookie_keys,
        idle_timeout,
        absolute_timeout,
        same_site,
        insecure_cookies,
        allow_cookie_without_host_prefix,
        cache_sessions,
    }
}

/// `session.cookie_name` as configured (`insecure_cookies` may drop its `__Host-`).
fn read_cookie_name(r: &mut Reader<'_>) -> String {
    let name = r
        .string("session", "cookie_name")
        .unwrap_or_else(|| "__Host-spa-bff".into());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        r.err(
            "session",
            "cookie_name",
            "must be non-empty and use only letters, digits, '-', '_' and '.'",
        );
    }
    name
}

fn read_same_site(r: &mut Reader<'_>) -> SameSite {
    match r.string("session", "same_site").as_deref() {
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
    }
}

/// `session.cookie_keys`: every key is checked; messages give its position, never its value.
fn read_cookie_keys(r: &mut Reader<'_>) -> Vec<KeyMaterial> {
    let Some(keys) = r.list("session", "cookie_keys") else {
        r.err("session", "cookie_keys", "is required: a list of base64 keys of at least 32 bytes (generate one with `openssl rand -base64 32`)");
        return Vec::new();
    };
    if keys.is_empty() {
        r.err("session", "cookie_keys", "needs at least one key");
    }
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
    use super::super::tests::minimal;
    use super::super::Settings;

    #[test]
    fn insecure_cookies_only_on_http_localhost_and_drop_the_host_prefix() {
        let local = minimal()
            .replace("https://app.example.com", "http://127.0.0.1:8080")
            .replace("[session]", "[session]\ninsecure_cookies = true");
        let s = Settings::from_toml_str(&local).unwrap();
        assert_eq!(s.session.cookie_name, "spa-bff");

        let remote = minimal().replace("[session]", "[session]\ninsecure_cookies = true");
        let errs = Settings::from_toml_str(&remote).unwrap_err().0;
        assert!(errs[0].starts_with("session.insecure_cookies"), "{errs:?}");

        let http = minimal().replace("https://app.example.com", "http://127.0.0.1:8080");
        let errs = Settings::from_toml_str(&http).unwrap_err().0;
        assert!(errs[0].contains("Secure cookies"), "{errs:?}");
    }

    #[test]
    fn secure_mode_refuses_a_cookie_name_without_the_host_prefix_unless_allowed() {
        let plain = minimal().replace("[session]", "[session]\ncookie_name = \"sid\"");
        let errs = Settings::from_toml_str(&plain).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("session.cookie_name: must start with __Host-"),
            "{errs:?}"
        );
        let allowed = plain.replace(
            "[session]",
            "[session]\nallow_cookie_without_host_prefix = true",
        );
        assert_eq!(
            Settings::from_toml_str(&allowed)
                .unwrap()
                .session
                .cookie_name,
            "sid"
        );
        let prefixed = minimal().replace("[session]", "[session]\ncookie_name = \"__Host-app\"");
        assert!(Settings::from_toml_str(&prefixed).is_ok());
        // Local development (http, no Secure) cannot use the prefix at all.
        let local = plain
            .replace("https://app.example.com", "http://127.0.0.1:8080")
            .replace("[session]", "[session]\ninsecure_cookies = true");
        assert!(Settings::from_toml_str(&local).is_ok());
    }
}
