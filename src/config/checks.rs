//! Rules that span sections, checked once after every section is read.
//!
//! A section's reader judges only its own keys. A rule that compares two sections lives
//! here, is written once, and reports under the key to change. A rule is skipped when a
//! section it needs could not be read (that problem is already reported).

use super::server::is_loopback_host;
use super::{OidcSettings, ProxySettings, ServerSettings, SessionSettings};

/// The sections as read, before they become [`super::Settings`].
pub(super) struct Sections<'a> {
    pub server: Option<&'a ServerSettings>,
    pub oidc: Option<&'a OidcSettings>,
    pub session: &'a SessionSettings,
    pub proxy: &'a ProxySettings,
}

/// Every cross-section problem, as `section.key: message`.
pub(super) fn check(s: &Sections<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(server) = s.server {
        cookies_suit_public_url(server, s.session, &mut problems);
    }
    if let Some(oidc) = s.oidc {
        refresh_lock_outlives_a_provider_call(oidc, s.proxy, &mut problems);
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

/// A refresh (one provider call) must finish while its lock is held.
fn refresh_lock_outlives_a_provider_call(
    oidc: &OidcSettings,
    proxy: &ProxySettings,
    problems: &mut Vec<String>,
) {
    if proxy.refresh_lock_ttl <= oidc.http_timeout {
        problems.push("proxy.refresh_lock_ttl: must be longer than oidc.http_timeout (a refresh must finish while its lock is held)".into());
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
    fn refresh_lock_must_outlast_the_provider_timeout() {
        let lock = |ttl: &str| format!("[proxy]\nrefresh_lock_ttl = \"{ttl}\"\n[oidc]");
        assert!(problems_with(&[("[oidc]", &lock("11s"))]).is_empty());
        for ttl in ["10s", "5s"] {
            let problems = problems_with(&[("[oidc]", &lock(ttl))]);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0]
                .starts_with("proxy.refresh_lock_ttl: must be longer than oidc.http_timeout"));
        }
    }
}
