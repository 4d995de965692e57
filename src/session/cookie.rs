//! The cookies spa-bff sets: the session cookie, and one short-lived login cookie
//! per login in progress that binds the `state` to the browser that started it.
//!
//! Values are encrypted and authenticated with AES-256-GCM by the `cookie` crate's
//! private jar (the cookie name is the associated data). The first configured key
//! encrypts; every key decrypts, so keys can be rotated. Anything that does not
//! decrypt — tampered, truncated, foreign, empty — is simply "no cookie".

use crate::config::{SameSite, SessionSettings};
use crate::session::crypto::{digest_hex, SessionRef};
use actix_web::cookie::{self, Cookie, CookieJar, Key};
use actix_web::HttpRequest;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// What a request's session cookie is.
pub enum SessionCookie {
    /// No session cookie at all.
    Absent,
    /// Session cookies that do not decrypt (tampered, foreign, old keys).
    Unreadable,
    Valid(SessionRef),
}

/// How many logins one browser may have in progress before older ones are dropped.
pub const MAX_PENDING_LOGINS: usize = 5;

pub struct CookieCodec {
    keys: Vec<Key>,
    name: String,
    secure: bool,
    same_site: SameSite,
    /// Session cookie values seen recently and the reference each decrypted to: a
    /// browser sends the same value with every request, and decrypting it (AES-GCM,
    /// plus the reference's storage id) is a good part of a cached request's cost. A
    /// value is authenticated ciphertext, so equal values mean equal references.
    decoded: Mutex<HashMap<String, SessionRef>>,
}

/// How many cookie values [`CookieCodec::read_session`] remembers (then it starts over).
const DECODED_VALUES: usize = 4096;

impl CookieCodec {
    pub fn new(settings: &SessionSettings) -> Self {
        Self {
            keys: settings
                .cookie_keys
                .iter()
                .map(|k| Key::derive_from(k.expose()))
                .collect(),
            name: settings.cookie_name.clone(),
            secure: !settings.insecure_cookies,
            same_site: settings.same_site,
            decoded: Mutex::new(HashMap::new()),
        }
    }

    /// The session cookie for `reference`, living `max_age` (the absolute timeout).
    pub fn session_cookie(&self, reference: &SessionRef, max_age: Duration) -> Cookie<'static> {
        let same_site = match self.same_site {
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::Strict => cookie::SameSite::Strict,
        };
        let c = self.base(self.name.clone(), reference.encode(), same_site, max_age);
        self.encrypt(c)
    }

    /// A cookie that deletes the session cookie.
    pub fn clear_session(&self) -> Cookie<'static> {
        self.removal(self.name.clone())
    }

    /// The session reference of the first session cookie that decrypts.
    pub fn read_session(&self, req: &HttpRequest) -> Option<SessionRef> {
        match self.session_cookie_of(req) {
            SessionCookie::Valid(reference) => Some(reference),
            SessionCookie::Absent | SessionCookie::Unreadable => None,
        }
    }

    /// The request's session cookie: none, none that decrypts, or the reference of
    /// the first that does.
    pub fn session_cookie_of(&self, req: &HttpRequest) -> SessionCookie {
        let values = cookie_values(req, &self.name);
        if values.is_empty() {
            return SessionCookie::Absent;
        }
        values
            .iter()
            .find_map(|v| self.decode_session(v))
            .map_or(SessionCookie::Unreadable, SessionCookie::Valid)
    }

    fn decode_session(&self, value: &str) -> Option<SessionRef> {
        let lock = || self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reference) = lock().get(value) {
            return Some(reference.clone());
        }
        let reference = SessionRef::decode(&self.decrypt(&self.name, value)?)?;
        let mut decoded = lock();
        if decoded.len() >= DECODED_VALUES {
            decoded.clear();
        }
        decoded.insert(value.to_string(), reference.clone());
        Some(reference)
    }

    fn login_cookie_name(&self, state: &str) -> String {
        format!(
            "{}-login-{}",
            self.name,
            &digest_hex(b"spa-bff/login-cookie/v1", state.as_bytes())[..16]
        )
    }

    /// Binds a login's `state` to this browser. Always `SameSite=Lax`: it must come
    /// back on the provider's top-level redirect to /callback.
    pub fn login_cookie(&self, state: &str, max_age: Duration) -> Cookie<'static> {
        let c = self.base(
            self.login_cookie_name(state),
            state.to_string(),
            cookie::SameSite::Lax,
            max_age,
        );
        self.encrypt(c)
    }

    /// Whether this browser holds the login cookie for `state`.
    pub fn has_login(&self, req: &HttpRequest, state: &str) -> bool {
        let name = self.login_cookie_name(state);
        self.values(req, &name).into_iter().any(|v| {
            self.decrypt(&name, &v)
                .is_some_and(|s| bool::from(s.as_bytes().ct_eq(state.as_bytes())))
        })
    }

    pub fn clear_login(&self, state: &str) -> Cookie<'static> {
        self.removal(self.login_cookie_name(state))
    }

    /// Removals for this browser's pending-login cookies once there are
    /// [`MAX_PENDING_LOGINS`] of them: each `/login` adds one for its lifetime, and
    /// a user clicking "log in" over and over must not grow the Cookie header
    /// without bound. A handful of tabs logging in at once stay unaffected.
    pub fn excess_logins(&self, req: &HttpRequest) -> Vec<Cookie<'static>> {
        let prefix = format!("{}-login-", self.name);
        let pending: Vec<String> = req
            .cookies()
            .map(|all| {
                all.iter()
                    .filter(|c| c.name().starts_with(&prefix))
                    .map(|c| c.name().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if pending.len() < MAX_PENDING_LOGINS {
            return Vec::new();
        }
        pending.into_iter().map(|name| self.removal(name)).collect()
    }

    fn base(
        &self,
        name: String,
        value: String,
        same_site: cookie::SameSite,
        max_age: Duration,
    ) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
            .finish()
    }

    fn removal(&self, name: String) -> Cookie<'static> {
        let mut c = self.base(name, String::new(), cookie::SameSite::Lax, Duration::ZERO);
        c.make_removal();
        c
    }

    fn encrypt(&self, c: Cookie<'static>) -> Cookie<'static> {
        let name = c.name().to_string();
        let mut jar = CookieJar::new();
        jar.private_mut(&self.keys[0]).add(c);
        jar.get(&name)
            .cloned()
            .expect("the private jar keeps what was just added")
    }

    fn decrypt(&self, name: &str, value: &str) -> Option<String> {
        if value.is_empty() {
            return None;
        }
        self.keys.iter().find_map(|key| {
            let mut jar = CookieJar::new();
            jar.add_original(Cookie::new(name.to_string(), value.to_string()));
            jar.private(key).get(name).map(|c| c.value().to_string())
        })
    }

    /// Every value sent under `name` (a hostile sibling domain may add duplicates).
    fn values(&self, req: &HttpRequest, name: &str) -> Vec<String> {
        cookie_values(req, name)
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }
}

/// The values of every cookie named `name` in the request's `Cookie` headers, read
/// exactly as actix-web's `HttpRequest::cookies` reads them (pairs split on `;` and
/// trimmed, the value's surrounding double quotes dropped, names and values
/// percent-decoded, a pair that does not decode skipped, and no cookies at all when a
/// header is not UTF-8), but without parsing and allocating every other cookie of the
/// header: a request of a known session needs one value, and browsers send many.
pub fn cookie_values<'r>(req: &'r HttpRequest, name: &str) -> Vec<Cow<'r, str>> {
    let mut found = Vec::new();
    for header in req.headers().get_all(actix_web::http::header::COOKIE) {
        let Ok(text) = std::str::from_utf8(header.as_bytes()) else {
            return Vec::new();
        };
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            let (n, v) = (n.trim(), trim_quotes(v.trim()).trim());
            // Only text with a `%` can decode to something else, or fail to decode.
            let decoded = |s: &'r str| match s.contains('%') {
                false => Ok(Cow::Borrowed(s)),
                true => percent_encoding::percent_decode_str(s).decode_utf8(),
            };
            if n.is_empty() || decoded(n).map_or(true, |n| n != name) {
                continue;
            }
            if let Ok(v) = decoded(v) {
                found.push(v);
            }
        }
    }
    found
}

/// `"value"` -> `value` (as the `cookie` crate reads a quoted value).
fn trim_quotes(s: &str) -> &str {
    match s.as_bytes() {
        [b'"', .., b'"'] => &s[1..s.len() - 1],
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyMaterial, RedisSettings, SessionSettings};
    use actix_web::test::TestRequest;

    /// The values of the cookies named `name`, by actix-web's own parser.
    fn actix_values(req: &HttpRequest, name: &str) -> Vec<String> {
        req.cookies()
            .map(|all| {
                all.iter()
                    .filter(|c| c.name() == name)
                    .map(|c| c.value().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn owned(values: Vec<Cow<'_, str>>) -> Vec<String> {
        values.into_iter().map(Cow::into_owned).collect()
    }

    #[test]
    fn cookie_values_reads_what_actix_webs_cookie_parser_reads() {
        let headers: &[&[&[u8]]] = &[
            &[b"s=abc"],
            &[b"a=1; s=abc; b=2"],
            &[b"  s = abc ;s=def;;  ; =x; s"],
            &[b"s=\"quoted+/=\"; s=\"; s=\"\""],
            &[b"s=a%2Bb%3D; %73=encoded-name; s=%ZZ; s=%FF; x=%FF"],
            &[b"a=1", b"s=second-header; s=again"],
            &[b"s=ok", b"t=\xff"],
            &[b"S=case; s\t=tab; s=AbC+/=="],
            &[],
        ];
        for header in headers {
            let mut req = TestRequest::default();
            for h in *header {
                req = req.append_header((
                    actix_web::http::header::COOKIE,
                    actix_web::http::header::HeaderValue::from_bytes(h).unwrap(),
                ));
            }
            let req = req.to_http_request();
            assert_eq!(
                owned(cookie_values(&req, "s")),
                actix_values(&req, "s"),
                "{header:?}"
            );
        }
    }

    fn settings(keys: &[&[u8]], insecure: bool) -> SessionSettings {
        SessionSettings {
            redis: RedisSettings::standalone("redis://127.0.0.1", Duration::from_secs(1)),
            key_prefix: "t:".into(),
            cookie_name: if insecure {
                "spa-bff"
            } else {
                "__Host-spa-bff"
            }
            .into(),
            cookie_keys: keys.iter().map(|k| KeyMaterial::new(k.to_vec())).collect(),
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(600),
            same_site: SameSite::Lax,
            insecure_cookies: insecure,
            allow_cookie_without_host_prefix: false,
            cache_sessions: 0,
        }
    }

    fn request_with(name: &str, value: &str) -> HttpRequest {
        TestRequest::default()
            .cookie(Cookie::new(name.to_string(), value.to_string()))
            .to_http_request()
    }

    #[test]
    fn session_cookie_has_the_hardened_attributes() {
        let codec = CookieCodec::new(&settings(&[&[7u8; 32]], false));
        let c = codec.session_cookie(&SessionRef::generate(), Duration::from_secs(600));
        let s = c.to_string();
        assert!(s.starts_with("__Host-spa-bff="), "{s}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(s.contains(attr), "{attr} missing in {s}");
        }
        assert!(!s.contains("Domain"), "{s}");
    }

    #[test]
    fn cookie_round_trips_and_keys_rotate() {
        let old = settings(&[&[1u8; 32]], false);
        let rotated = settings(&[&[2u8; 32], &[1u8; 32]], false);
        let foreign = settings(&[&[3u8; 32]], false);
        let r = SessionRef::generate();
        let c = CookieCodec::new(&old).session_cookie(&r, Duration::from_secs(60));
        let req = request_with(c.name(), c.value());
        assert_eq!(CookieCodec::new(&old).read_session(&req), Some(r.clone()));
        assert_eq!(CookieCodec::new(&rotated).read_session(&req), Some(r));
        assert_eq!(CookieCodec::new(&foreign).read_session(&req), None);
    }

    #[test]
    fn tampered_truncated_and_empty_cookies_are_no_session() {
        let codec = CookieCodec::new(&settings(&[&[1u8; 32]], false));
        let c = codec.session_cookie(&SessionRef::generate(), Duration::from_secs(60));
        let v = c.value().to_string();
        let mut flipped = v.clone().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        for bad in [
            String::from_utf8(flipped).unwrap(),
            v[..v.len() / 2].to_string(),
            String::new(),
            "%%%not-base64".into(),
        ] {
            assert_eq!(
                codec.read_session(&request_with(c.name(), &bad)),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn login_cookie_binds_exactly_one_state() {
        let codec = CookieCodec::new(&settings(&[&[1u8; 32]], true));
        let c = codec.login_cookie("state-a", Duration::from_secs(600));
        assert!(c.to_string().contains("SameSite=Lax"));
        assert!(!c.to_string().contains("Secure"));
        let req = request_with(c.name(), c.value());
        assert!(codec.has_login(&req, "state-a"));
        assert!(!codec.has_login(&req, "state-b"));
    }

    mod properties {
        use super::*;
        use actix_web::http::header::HeaderValue;
        use proptest::prelude::*;

        fn codec() -> CookieCodec {
            CookieCodec::new(&settings(&[&[5u8; 32]], false))
        }

        fn with_cookie_header(value: HeaderValue) -> HttpRequest {
            TestRequest::default()
                .insert_header(("cookie", value))
                .to_http_request()
        }

        proptest! {
            #[test]
            fn a_session_reference_decodes_only_from_its_own_encoding(value in any::<String>()) {
                if let Some(r) = SessionRef::decode(&value) {
                    prop_assert_eq!(r.encode(), value);
                }
            }

            #[test]
            fn cookie_values_agrees_with_actix_webs_parser(header in proptest::collection::vec(
                prop_oneof![Just(b'n'), Just(b's'), Just(b'='), Just(b';'), Just(b' '), Just(b'"'),
                            Just(b'%'), Just(b'2'), Just(b'F'), Just(0xffu8), any::<u8>()],
                0..40,
            )) {
                if let Ok(value) = HeaderValue::from_bytes(&header) {
                    let req = with_cookie_header(value);
                    prop_assert_eq!(owned(cookie_values(&req, "s")), actix_values(&req, "s"));
                }
            }

            #[test]
            fn arbitrary_cookie_values_are_no_session(value in "[ -~]{0,600}") {
                let codec = codec();
                let req = with_cookie_header(
                    HeaderValue::from_str(&format!("__Host-spa-bff={value}")).unwrap(),
                );
                prop_assert_eq!(codec.read_session(&req), None);
            }

            #[test]
            fn arbitrary_cookie_headers_are_no_session(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    prop_assert_eq!(codec().read_session(&with_cookie_header(value)), None);
                }
            }

            #[test]
            fn an_altered_real_cookie_is_no_session(
                at in any::<prop::sample::Index>(),
                replacement in "[A-Za-z0-9_%=-]",
                cut in any::<bool>(),
            ) {
                let codec = codec();
                let reference = SessionRef::generate();
                let real = codec
                    .session_cookie(&reference, Duration::from_secs(60))
                    .value()
                    .to_string();
                let i = at.index(real.len());
                let altered = if cut {
                    real[..i].to_string()
                } else {
                    format!("{}{replacement}{}", &real[..i], &real[i + 1..])
                };
                let read = codec.read_session(&request_with("__Host-spa-bff", &altered));
                if altered == real {
                    prop_assert_eq!(read, Some(reference));
                } else {
                    prop_assert_eq!(read, None);
                }
            }
        }
    }
}
