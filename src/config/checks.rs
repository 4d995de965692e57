//! Rules that span sections, checked once after every section is read.
//!
//! A section's reader judges only its own keys. A rule that compares two sections lives
//! here, is written once, and reports under the key to change. A rule is skipped when a
//! section it needs could not be read (that problem is already reported).

use super::server::is_loopback_host;
use super::{OidcSettings, ProxySettings, RouteSettings, ServerSettings, SessionSettings};
use crate::paths;

/// The sections as read, before they become [`super::Settings`].
pub(super) struct Sections<'a> {
    pub server: Option<&'a ServerSettings>,
    pub oidc: Option<&'a OidcSettings>,
    pub session: &'a SessionSettings,
    pub proxy: &'a ProxySettings,
    pub routes: &'a [RouteSettings],
}

/// Every cross-section problem, as `section.key: message`.
pub(super) fn check(s: &Sections<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(server) = s.server {
        cookies_suit_public_url(server, s.session, &mut problems);
    }
    if let Some(oidc) = s.oidc {
        refresh_lock_outlives_a_refresh(oidc, s.session, s.proxy, &mut problems);
        jwks_path_is_not_proxied(oidc, s.routes, &mut problems);
    }
    problems
}

/// `Secure` cookies need https; cookies without it are for http on this machine only.
fn cookies_suit_public_url(
    server: &ServerSettings,
    session: &SessionSettings,
    problems: &mut Vec<String>,
) {
    let url = &server.public_url;
    if session.insecure_cookies && !(url.scheme() == "http" && is_loopback_host(url)) {
        problems.push(
            "session.insecure_cookies: is only allowed when server.public_url is http://localhost or http://127.0.0.1".into(),
        );
    }
    if !session.insecure_cookies && url.scheme() == "http" {
        problems.push("server.public_url: is http: browsers drop Secure cookies on http; use https, or set session.insecure_cookies = true for local development".into());
    }
}

/// The Redis commands one refresh may issue while it holds the lock, each bounded by
/// `session.redis_timeout`: reading the session again (a read, and an activity write),
/// saving it (a compare-and-set), and after a conflicting save, reading and saving
/// once more (see `flows::refresh`).
pub const REFRESH_REDIS_COMMANDS: u32 = 6;

/// A refresh must finish while its lock is held: otherwise another instance may take
/// the lock and redeem the same refresh token, and a rotating provider then revokes
/// the grant. Its worst case is one provider call (`oidc.http_timeout`, head and body)
/// plus [`REFRESH_REDIS_COMMANDS`] Redis commands.
fn refresh_lock_outlives_a_refresh(
    oidc: &OidcSettings,
    session: &SessionSettings,
    proxy: &ProxySettings,
    problems: &mut Vec<String>,
) {
    let worst = oidc.http_timeout + session.redis.timeout * REFRESH_REDIS_COMMANDS;
    if proxy.refresh_lock_ttl <= worst {
        problems.push(format!(
            "proxy.refresh_lock_ttl: must be longer than one refresh can take: oidc.http_timeout + {REFRESH_REDIS_COMMANDS} x session.redis_timeout = {} (a refresh must finish while its lock is held)",
            humantime::format_duration(worst)
        ));
    }
}

/// `oidc.jwks_path` is spa-bff's own path: no route may take requests for it.
fn jwks_path_is_not_proxied(
    oidc: &OidcSettings,
    routes: &[RouteSettings],
    problems: &mut Vec<String>,
) {
    let Some(path) = &oidc.jwks_path else { return };
    for (i, route) in routes.iter().enumerate() {
        if paths::paths_overlap(&route.prefix, path) {
            problems.push(format!(
                "routes[{i}].prefix: {:?} collides with oidc.jwks_path {path:?}",
                route.prefix
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::minimal;
    use super::super::Settings;

    fn problems_with(replace: &[(&str, &str)]) -> Vec<String> {
        let mut text = minimal();
        for (from, to) in replace {
            text = text.replace(from, to);
        }
        match Settings::from_toml_str(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    #[test]
    fn cookies_and_public_url_must_agree() {
        let https = "https://app.example.com";
        let insecure = ("[session]", "[session]\ninsecure_cookies = true");
        for (public_url, insecure_cookies, expected) in [
            (https, false, None),
            ("http://localhost:8080", true, None),
            ("http://[::1]:8080", true, None),
            (
                https,
                true,
                Some("session.insecure_cookies: is only allowed"),
            ),
            (
                "http://app.example.com",
                true,
                Some("session.insecure_cookies"),
            ),
            (
                "http://127.0.0.1:8080",
                false,
                Some("server.public_url: is http"),
            ),
        ] {
            let mut replace = vec![(https, public_url)];
            if insecure_cookies {
                replace.push(insecure);
            }
            let problems = problems_with(&replace);
            match expected {
                None => assert!(problems.is_empty(), "{public_url}: {problems:?}"),
                Some(start) => assert!(
                    problems.len() == 1 && problems[0].starts_with(start),
                    "{public_url}: {problems:?}"
                ),
            }
        }
    }

    #[test]
    fn refresh_lock_must_outlast_the_provider_deadline_and_the_redis_commands_of_a_refresh() {
        // Defaults: 10s + 6 x 1s = 16s.
        let lock = |ttl: &str| format!("[proxy]\nrefresh_lock_ttl = \"{ttl}\"\n[oidc]");
        assert!(problems_with(&[]).is_empty(), "the defaults fit");
        assert!(problems_with(&[("[oidc]", &lock("17s"))]).is_empty());
        for ttl in ["16s", "15s", "11s", "5s"] {
            let problems = problems_with(&[("[oidc]", &lock(ttl))]);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(
                    "proxy.refresh_lock_ttl: must be longer than one refresh can take: oidc.http_timeout + 6 x session.redis_timeout = 16s"
                ),
                "{problems:?}"
            );
        }
        // A slower Redis needs a longer lock.
        let slow_redis = ("[session]", "[session]\nredis_timeout = \"5s\"");
        assert_eq!(
            problems_with(&[slow_redis, ("[oidc]", &lock("35s"))]).len(),
            1
        );
        assert!(problems_with(&[slow_redis, ("[oidc]", &lock("41s"))]).is_empty());
    }
}
