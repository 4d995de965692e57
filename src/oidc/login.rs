//! Starting a login: the authorization request (state, nonce, PKCE S256) and the
//! `returnTo` rules. The store keeps the resulting [`LoginState`] until the
//! callback takes it (one-time; several tabs can log in at once, each with its own
//! state).

use crate::config::OidcSettings;
use crate::oidc::provider::Provider;
use crate::session::crypto::random_token;
use crate::session::LoginState;
use crate::time::UnixMs;
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge, Scope};
use percent_encoding::percent_decode_str;
use url::Url;

/// A login ready to send the browser to the provider.
pub struct AuthorizationRequest {
    pub url: Url,
    pub state: String,
    pub login: LoginState,
}

/// Builds the authorization request URL with fresh state, nonce and PKCE verifier.
pub fn authorization_request(
    provider: &Provider,
    settings: &OidcSettings,
    return_to: String,
    now: UnixMs,
) -> AuthorizationRequest {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = provider.client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        || CsrfToken::new(random_token(32)),
        || Nonce::new(random_token(32)),
    );
    // openidconnect always sends `openid` itself.
    for scope in settings.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(scope.clone()));
    }
    req = req.set_pkce_challenge(challenge);
    for (k, v) in &settings.auth_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    let (url, state, nonce) = req.url();
    AuthorizationRequest {
        url,
        state: state.secret().clone(),
        login: LoginState {
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to,
            created_at: now,
        },
    }
}

/// `returnTo` as a same-origin path, or `/` when it is missing or could leave the
/// origin: absolute URLs, scheme-relative `//host`, backslash tricks browsers read as
/// `//`, control characters and whitespace (browsers strip tabs and newlines), and
/// any of these hidden behind percent-encoding.
pub fn safe_return_to(raw: Option<&str>) -> String {
    raw.and_then(check_return_to).unwrap_or_else(|| "/".into())
}

fn check_return_to(raw: &str) -> Option<String> {
    if raw.len() > 2048 {
        return None;
    }
    let mut candidate = raw.to_string();
    // Check every decoding layer an intermediary might peel off.
    for _ in 0..4 {
        if !looks_local(&candidate) {
            return None;
        }
        let decoded = percent_decode_str(&candidate)
            .decode_utf8()
            .ok()?
            .into_owned();
        if decoded == candidate {
            break;
        }
        candidate = decoded;
    }
    let base = Url::parse("https://return-to.invalid/").expect("static URL");
    let joined = base.join(raw).ok()?;
    if joined.origin() != base.origin() {
        return None;
    }
    Some(joined[url::Position::BeforePath..].to_string())
}

fn looks_local(s: &str) -> bool {
    s.starts_with('/')
        && !s.starts_with("//")
        && !s.contains('\\')
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_paths_are_kept() {
        assert_eq!(safe_return_to(Some("/")), "/");
        assert_eq!(
            safe_return_to(Some("/orders/42?tab=items#top")),
            "/orders/42?tab=items#top"
        );
        assert_eq!(safe_return_to(Some("/a/../b")), "/b");
        assert_eq!(safe_return_to(Some("/caf%C3%A9")), "/caf%C3%A9");
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn anything_that_could_leave_the_origin_falls_back_to_root() {
        for evil in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "HTTPS://evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "/%2Fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/\t/evil.example",
            "/%09/evil.example",
            "/\n/evil.example",
            " //evil.example",
            "evil.example",
            "",
        ] {
            assert_eq!(safe_return_to(Some(evil)), "/", "{evil:?} was accepted");
        }
    }
}
