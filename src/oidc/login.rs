//! Starting a login: the authorization request (state, nonce, PKCE S256), what a
//! client may ask of it ([`LoginOptions`]: `prompt`, `max_age`, `login_hint`) and
//! the `returnTo` rules. The store keeps the resulting [`LoginState`] until the
//! callback takes it (one-time; several tabs can log in at once, each with its own
//! state).

use crate::config::OidcSettings;
use crate::oidc::dpop::DpopKey;
use crate::oidc::provider::Provider;
use crate::secret::Sensitive;
use crate::session::crypto::random_token;
use crate::session::{LoginState, Prompt};
use crate::time::UnixMs;
use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow};
use openidconnect::{CsrfToken, LoginHint, Nonce, PkceCodeChallenge, Scope};
use percent_encoding::percent_decode_str;
use std::time::Duration;
use url::Url;

/// The longest `login_hint` passed on, in bytes (it is part of what an
/// unauthenticated `/login` makes spa-bff send); a longer one is ignored.
pub const MAX_LOGIN_HINT: usize = 128;

/// What a client may ask of a login besides `returnTo`; anything else it sends to
/// `/login` is ignored, and so is a value outside these rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginOptions {
    /// `prompt`: `none` (a silent check, no page) or `login` (a fresh sign-in).
    pub prompt: PromptRequest,
    /// `max_age`: the longest time since the user last signed in, in seconds (a
    /// non-negative integer).
    pub max_age: Option<u32>,
    /// `login_hint`: passed to the provider (at most [`MAX_LOGIN_HINT`] bytes, no
    /// control characters).
    pub login_hint: Option<String>,
}

/// The `prompt` a client asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptRequest {
    #[default]
    Unset,
    /// `prompt=none`.
    None,
    /// `prompt=login`.
    Login,
}

impl LoginOptions {
    /// The options among `/login`'s query pairs (the first value of each wins).
    pub fn from_query(pairs: &[(String, String)]) -> Self {
        let first = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let prompt = match first("prompt") {
            Some("none") => PromptRequest::None,
            Some("login") => PromptRequest::Login,
            _ => PromptRequest::Unset,
        };
        let max_age = first("max_age")
            .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok());
        let login_hint = first("login_hint")
            .filter(|v| !v.is_empty() && v.len() <= MAX_LOGIN_HINT)
            .filter(|v| !v.chars().any(char::is_control))
            .map(String::from);
        Self {
            prompt,
            max_age,
            login_hint,
        }
    }
}

/// A login ready to send the browser to the provider.
pub struct AuthorizationRequest {
    pub url: Url,
    pub state: String,
    pub login: LoginState,
}

/// Builds the authorization request URL with fresh state, nonce and PKCE verifier,
/// and what the client asked (`options`, which win over the same names in
/// `oidc.auth_params`). `resources` are the routes' RFC 8707 resources (per-route
/// audiences), named besides the default one `auth_params` may give: providers issue
/// tokens only for resources the authorization request named. `dpop_key` (with
/// `oidc.dpop`) is the new session's key: its thumbprint goes as `dpop_jkt` (RFC 9449
/// section 10), so the provider binds the code to it and redeems it only with a proof
/// of that key. `now` is when the login starts.
pub fn authorization_request(
    provider: &Provider,
    settings: &OidcSettings,
    return_to: String,
    options: &LoginOptions,
    resources: &[String],
    dpop_key: Option<(&DpopKey, Sensitive)>,
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
    let prompt = match options.prompt {
        PromptRequest::Unset => Prompt::Default,
        PromptRequest::None => Prompt::Silent,
        PromptRequest::Login => Prompt::Login { since: now / 1000 },
    };
    match prompt {
        Prompt::Default => {}
        Prompt::Silent => req = req.add_prompt(CoreAuthPrompt::None),
        Prompt::Login { .. } => req = req.add_prompt(CoreAuthPrompt::Login),
    }
    if let Some(max_age) = options.max_age {
        req = req.set_max_age(Duration::from_secs(max_age.into()));
    }
    if let Some(hint) = &options.login_hint {
        req = req.set_login_hint(LoginHint::new(hint.clone()));
    }
    let asked = |name: &str| match name {
        "prompt" => prompt != Prompt::Default,
        "max_age" => options.max_age.is_some(),
        "login_hint" => options.login_hint.is_some(),
        _ => false,
    };
    for (k, v) in settings.auth_params.iter().filter(|(k, _)| !asked(k)) {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    for resource in resources {
        req = req.add_extra_param("resource", resource.clone());
    }
    let dpop_key = match dpop_key {
        Some((key, stored)) => {
            req = req.add_extra_param("dpop_jkt", key.thumbprint());
            Some(stored)
        }
        None => None,
    };
    let (url, state, nonce) = req.url();
    AuthorizationRequest {
        url,
        state: state.secret().clone(),
        login: LoginState {
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to,
            prompt,
            max_age: options.max_age,
            dpop_key,
        },
    }
}

/// The query parameter that tells the SPA why a silent login (`prompt=none`) came
/// back without a session: `returnTo` gets `spa_bff_login=<the provider's error>`.
pub const SILENT_OUTCOME_PARAM: &str = "spa_bff_login";

/// The errors with which a provider answers `prompt=none` when it cannot sign the
/// user in without a page (OpenID Connect Core section 3.1.2.6).
pub const SILENT_LOGIN_ERRORS: &[&str] = &[
    "login_required",
    "consent_required",
    "interaction_required",
    "account_selection_required",
];

/// `return_to` (already checked by [`safe_return_to`]) with the silent-login
/// outcome added to its query, before any fragment. `error` must be one of
/// [`SILENT_LOGIN_ERRORS`] (anything else gives `return_to` unchanged): the path is
/// untouched, so the result is exactly as safe as `return_to`.
pub fn with_silent_outcome(return_to: &str, error: &str) -> String {
    let Some(error) = SILENT_LOGIN_ERRORS.iter().find(|e| **e == error) else {
        return return_to.to_string();
    };
    let (before_fragment, fragment) = match return_to.find('#') {
        Some(i) => return_to.split_at(i),
        None => (return_to, ""),
    };
    let separator = if before_fragment.contains('?') {
        if before_fragment.ends_with('?') || before_fragment.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    format!("{before_fragment}{separator}{SILENT_OUTCOME_PARAM}={error}{fragment}")
}

/// The longest `returnTo` kept, in bytes, after normalisation; a longer one becomes
/// `/`. It bounds what one pending login stores (it is written for every `/login`,
/// before anyone has authenticated).
pub const MAX_RETURN_TO: usize = 512;
/// How many percent-decoding layers are judged; a value still changing after that
/// many is refused.
const MAX_DECODING_LAYERS: usize = 8;

/// `returnTo` as a same-origin path, or `/` when it is missing or could leave the
/// origin.
///
/// The value is judged on what a browser will do with the `Location` header it
/// becomes, not on the raw string: tabs and newlines are dropped (as browsers drop
/// them), `\` counts as `/`, dot segments are resolved, and the result must be a
/// path of this origin that does not start with `//` or `/\`. The same holds for
/// every percent-decoding layer of the result (an intermediary or the SPA's router
/// may decode it again). What is returned is the resolved form, at most
/// [`MAX_RETURN_TO`] bytes.
pub fn safe_return_to(raw: Option<&str>) -> String {
    raw.and_then(check_return_to).unwrap_or_else(|| "/".into())
}

fn check_return_to(raw: &str) -> Option<String> {
    // Resolution never shrinks a value by more than its dropped tabs and newlines;
    // anything this long cannot end up within the cap.
    if raw.len() > 4 * MAX_RETURN_TO {
        return None;
    }
    let resolved = resolve_as_browser(raw)?;
    if resolved.len() > MAX_RETURN_TO {
        return None;
    }
    let mut layer = resolved.clone();
    for _ in 0..MAX_DECODING_LAYERS {
        let decoded = percent_decode_str(&layer).decode_utf8().ok()?.into_owned();
        if decoded == layer {
            return Some(resolved);
        }
        resolve_as_browser(&decoded)?;
        layer = decoded;
    }
    None
}

/// What a browser makes of `value` as a `Location` on this origin: the path, query
/// and fragment it navigates to, or `None` when that leaves the origin (or could,
/// under a parser that reads `\` as `/`).
fn resolve_as_browser(value: &str) -> Option<String> {
    // Browsers remove ASCII tab and newline anywhere in a URL.
    let cleaned: String = value
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    // Other control characters have no place in a path; leading ones or spaces
    // would be stripped by the parser, so a value must start with the `/` itself.
    if cleaned.chars().any(|c| c.is_control()) {
        return None;
    }
    if !cleaned.starts_with('/') || cleaned.starts_with("//") {
        return None;
    }
    let base = Url::parse("https://return-to.invalid/").expect("static URL");
    let joined = base.join(&cleaned).ok()?;
    if joined.origin() != base.origin() {
        return None;
    }
    let resolved = &joined[url::Position::BeforePath..];
    // Dot segments may have produced `//host` (`/.//evil.example`).
    if !resolved.starts_with('/') || resolved.starts_with("//") || resolved.starts_with("/\\") {
        return None;
    }
    Some(resolved.to_string())
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
        // Browsers drop tabs and newlines; what remains is a local path.
        assert_eq!(safe_return_to(Some("/ord\ters")), "/orders");
        assert_eq!(safe_return_to(Some("/search?q=a%20b")), "/search?q=a%20b");
        assert_eq!(safe_return_to(Some("/a b")), "/a%20b");
        assert_eq!(safe_return_to(Some("/a\\b")), "/a/b");
        let longest = format!("/{}", "a".repeat(MAX_RETURN_TO - 1));
        assert_eq!(safe_return_to(Some(&longest)), longest);
    }

    fn pairs(query: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn login_options_take_only_what_the_rules_allow() {
        let hint = "a".repeat(MAX_LOGIN_HINT);
        for (query, expected) in [
            ("", LoginOptions::default()),
            (
                "prompt=none",
                LoginOptions {
                    prompt: PromptRequest::None,
                    ..Default::default()
                },
            ),
            (
                "prompt=login&max_age=0",
                LoginOptions {
                    prompt: PromptRequest::Login,
                    max_age: Some(0),
                    ..Default::default()
                },
            ),
            ("prompt=consent&prompt=none", LoginOptions::default()),
            ("prompt=NONE", LoginOptions::default()),
            ("prompt=none%20login", LoginOptions::default()),
            (
                "max_age=300",
                LoginOptions {
                    max_age: Some(300),
                    ..Default::default()
                },
            ),
            ("max_age=-1", LoginOptions::default()),
            ("max_age=%2B5", LoginOptions::default()),
            ("max_age=1.5", LoginOptions::default()),
            ("max_age=99999999999", LoginOptions::default()),
            ("max_age=", LoginOptions::default()),
            (
                "login_hint=alice%40example.com",
                LoginOptions {
                    login_hint: Some("alice@example.com".into()),
                    ..Default::default()
                },
            ),
            (
                &format!("login_hint={hint}"),
                LoginOptions {
                    login_hint: Some(hint.clone()),
                    ..Default::default()
                },
            ),
            (&format!("login_hint={hint}a"), LoginOptions::default()),
            ("login_hint=a%0Ab", LoginOptions::default()),
            ("login_hint=a%00", LoginOptions::default()),
            ("login_hint=", LoginOptions::default()),
            (
                "acr_values=x&redirect_uri=https://evil.example&scope=admin",
                LoginOptions::default(),
            ),
        ] {
            assert_eq!(
                LoginOptions::from_query(&pairs(query)),
                expected,
                "{query:?}"
            );
        }
    }

    #[test]
    fn the_silent_login_outcome_goes_into_the_query_and_only_for_known_errors() {
        for (return_to, error, expected) in [
            ("/", "login_required", "/?spa_bff_login=login_required"),
            (
                "/x?a=1",
                "consent_required",
                "/x?a=1&spa_bff_login=consent_required",
            ),
            (
                "/x?",
                "interaction_required",
                "/x?spa_bff_login=interaction_required",
            ),
            (
                "/x#top",
                "login_required",
                "/x?spa_bff_login=login_required#top",
            ),
            (
                "/x?a=1#t?b",
                "account_selection_required",
                "/x?a=1&spa_bff_login=account_selection_required#t?b",
            ),
            ("/x", "access_denied", "/x"),
            ("/x", "login_required&evil=1", "/x"),
        ] {
            let got = with_silent_outcome(return_to, error);
            assert_eq!(got, expected);
            assert!(stays_on_the_origin_at_any_length(&got).is_ok(), "{got}");
        }
    }

    #[test]
    fn a_return_to_longer_than_the_cap_falls_back_to_root() {
        let long = format!("/{}", "a".repeat(MAX_RETURN_TO));
        assert_eq!(safe_return_to(Some(&long)), "/");
        // Short raw, long once resolved (non-ASCII is percent-encoded).
        let wide = format!("/{}", "é".repeat(MAX_RETURN_TO / 4));
        assert_eq!(safe_return_to(Some(&wide)), "/");
        assert_eq!(safe_return_to(Some(&"/".repeat(10_000))), "/");
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
            // Dot segments that resolve to a scheme-relative URL.
            "/.//evil.example",
            "/./\\evil.example",
            "/a/..//evil.example",
            "/a/../\\evil.example",
            "/%2e//evil.example",
            "/%2E%2E//evil.example",
            "/a/%2e%2e//evil.example",
            "/%2e/%2fevil.example",
            "/.%2f%2fevil.example",
            "/./%5Cevil.example",
            "/%252e/%252fevil.example",
            "/%25252F%25252Fevil.example",
            // Tabs and newlines that browsers drop between the slashes.
            "/\t/evil.example",
            "/\r\n/evil.example",
            "\t//evil.example",
            "/%0a/evil.example",
            "/.\t/%2fevil.example",
            // Control characters and undecodable bytes.
            "/\u{0}/evil.example",
            "/%00/evil.example",
            "/%C0%AF/evil.example",
            // More decoding layers than anyone peels.
            "/%25252525252525252525252F",
        ] {
            assert_eq!(safe_return_to(Some(evil)), "/", "{evil:?} was accepted");
        }
    }

    /// Where a browser on `https://app.example/` goes with `location`, also after the
    /// transformations browsers and routers apply (`\\` as `/`, tabs and newlines
    /// dropped, percent-decoding): every one must stay on the origin.
    fn stays_on_the_origin(location: &str) -> Result<(), String> {
        stays_on_the_origin_at_any_length(location)?;
        if location.len() > MAX_RETURN_TO {
            return Err(format!("{location:?} is longer than the cap"));
        }
        Ok(())
    }

    fn stays_on_the_origin_at_any_length(location: &str) -> Result<(), String> {
        let base = Url::parse("https://app.example/").unwrap();
        let mut forms = vec![location.to_string()];
        let mut layer = location.to_string();
        for _ in 0..MAX_DECODING_LAYERS + 1 {
            let decoded = percent_decode_str(&layer).decode_utf8_lossy().into_owned();
            if decoded == layer {
                break;
            }
            forms.push(decoded.clone());
            layer = decoded;
        }
        for form in forms {
            let browserish: String = form
                .chars()
                .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
                .collect();
            for variant in [
                form.clone(),
                browserish.clone(),
                browserish.replace('\\', "/"),
            ] {
                if let Ok(url) = base.join(&variant) {
                    if url.origin() != base.origin() {
                        return Err(format!(
                            "{location:?} leaves the origin as {variant:?} -> {url}"
                        ));
                    }
                }
            }
        }
        if !location.starts_with('/') || location.starts_with("//") {
            return Err(format!("{location:?} is not a local path"));
        }
        Ok(())
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Pieces attackers combine: separators, dot segments, encodings of both, and
        /// what browsers drop or rewrite.
        fn hostile_piece() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("/".to_string()),
                Just("\\".to_string()),
                Just(".".to_string()),
                Just("..".to_string()),
                Just("%2e".to_string()),
                Just("%2E".to_string()),
                Just("%2f".to_string()),
                Just("%2F".to_string()),
                Just("%5c".to_string()),
                Just("%5C".to_string()),
                Just("%25".to_string()),
                Just("%252f".to_string()),
                Just("\t".to_string()),
                Just("\n".to_string()),
                Just("\r".to_string()),
                Just("%09".to_string()),
                Just("%0a".to_string()),
                Just(" ".to_string()),
                Just(":".to_string()),
                Just("@".to_string()),
                Just("?".to_string()),
                Just("#".to_string()),
                Just("https:".to_string()),
                Just("javascript:".to_string()),
                Just("evil.example".to_string()),
                Just("é".to_string()),
                "[a-z0-9]{1,6}",
                any::<char>().prop_map(String::from),
            ]
        }

        fn hostile_return_to() -> impl Strategy<Value = String> {
            prop::collection::vec(hostile_piece(), 0..16).prop_map(|p| p.concat())
        }

        proptest! {
            #[test]
            fn no_generated_return_to_leaves_the_origin(raw in hostile_return_to()) {
                let location = safe_return_to(Some(&raw));
                prop_assert!(stays_on_the_origin(&location).is_ok(), "{}", stays_on_the_origin(&location).unwrap_err());
                // The rule is stable: what it returns, it returns unchanged.
                prop_assert_eq!(safe_return_to(Some(&location)), location);
            }

            #[test]
            fn no_arbitrary_string_leaves_the_origin(raw in any::<String>()) {
                let location = safe_return_to(Some(&raw));
                prop_assert!(stays_on_the_origin(&location).is_ok(), "{}", stays_on_the_origin(&location).unwrap_err());
            }

            #[test]
            fn a_silent_login_outcome_never_leaves_the_origin(raw in hostile_return_to(), which in 0..SILENT_LOGIN_ERRORS.len()) {
                let location = with_silent_outcome(&safe_return_to(Some(&raw)), SILENT_LOGIN_ERRORS[which]);
                let verdict = stays_on_the_origin_at_any_length(&location);
                prop_assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
            }

            #[test]
            fn plain_local_paths_are_kept(path in "(/[a-z0-9_-]{1,8}){1,6}(\\?[a-z]=[a-z0-9]{1,4})?") {
                prop_assert_eq!(safe_return_to(Some(&path)), path);
            }
        }
    }
}
