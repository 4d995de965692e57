//! `Browser`: a scripted user agent over awc. It never follows redirects by itself, keeps
//! cookies per `host:port` (with Path matching and expiry, ignoring Domain and Secure), and
//! can drive node-oidc-provider's development login, consent, abort and logout pages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use actix_web::cookie::{time::OffsetDateTime, Cookie, Expiration};
use url::Url;

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    /// Every header line in order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The raw `Location` header.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// Whether the status is 3xx.
    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.status)
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response ({}) is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The raw `Set-Cookie` header values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.header_all("set-cookie")
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Clone, Debug)]
struct StoredCookie {
    name: String,
    value: String,
    path: String,
    expires: Option<SystemTime>,
}

impl StoredCookie {
    fn live(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

#[derive(Default)]
struct State {
    /// `host:port` -> cookies
    jar: HashMap<String, Vec<StoredCookie>>,
    last_set_cookies: Vec<String>,
}

/// A scripted user agent. Methods take `&self`, so one browser can have several requests
/// in flight (e.g. `futures_util::future::join`), all sharing the cookie jar.
pub struct Browser {
    client: awc::Client,
    state: RefCell<State>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

/// `host:port` of a URL, or `origin` itself if it has no scheme (`127.0.0.1:8080`).
fn jar_key(origin: &str) -> String {
    if origin.contains("://") {
        let url = Url::parse(origin).unwrap_or_else(|e| panic!("bad URL {origin:?}: {e}"));
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        )
    } else {
        origin.trim_end_matches('/').to_owned()
    }
}

fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// RFC 6265 default-path of a request path.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => request_path[..i].to_owned(),
    }
}

/// Finds `<form ... action="X"` and the hidden input called `name` in `html`.
fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let start = form.find("action=\"")? + "action=\"".len();
    let end = form[start..].find('"')?;
    Some(html_unescape(&form[start..start + end]))
}

fn hidden_input(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let start = tag.find("value=\"")? + "value=\"".len();
    let end = tag[start..].find('"')?;
    Some(html_unescape(&tag[start..start + end]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&#x2F;", "/")
        .replace("&#x3D;", "=")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Browser {
    pub fn new() -> Browser {
        super::init();
        Browser {
            client: awc::Client::builder()
                .disable_redirects()
                .timeout(Duration::from_secs(15))
                .finish(),
            state: RefCell::new(State::default()),
        }
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Resp {
        self.request("GET", url, &[], Vec::new()).await
    }

    /// `GET url` with extra request headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", url, headers, Vec::new()).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.request("POST", url, &all, super::form_encode(form).into_bytes())
            .await
    }

    /// Any request. The jar's cookies for the URL are sent unless `headers` has a `cookie`
    /// header (then only that is sent). `Set-Cookie` answers update the jar. Panics if no
    /// response arrives (see [`Browser::try_request`]).
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        self.try_request(method, url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Browser::request`], but a failure to connect, a timeout or an unreadable body
    /// is an `Err` describing it.
    pub async fn try_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Resp, String> {
        let parsed = Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let key = jar_key(url);
        let method: awc::http::Method = method
            .parse()
            .map_err(|e| format!("bad method {method:?}: {e}"))?;
        let mut req = self.client.request(method.clone(), url);
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        {
            if let Some(cookie) = self.cookie_header(&key, parsed.path()) {
                req = req.insert_header(("cookie", cookie));
            }
        }
        let mut res = req
            .send_body(body)
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let body = res
            .body()
            .limit(16 << 20)
            .await
            .map_err(|e| format!("{method} {url}: reading body: {e}"))?
            .to_vec();
        let headers: Vec<(String, String)> = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let resp = Resp {
            status: res.status().as_u16(),
            headers,
            body,
        };
        self.store_cookies(&key, parsed.path(), &resp.set_cookies());
        Ok(resp)
    }

    /// GETs `url` and follows up to `max` redirects (relative `Location`s resolved). Returns
    /// the final response and the chain of URLs requested, starting with `url`. Panics if
    /// the last response is still a redirect after `max` hops.
    pub async fn follow(&self, url: &str, max: usize) -> (Resp, Vec<String>) {
        let mut chain = vec![url.to_owned()];
        let mut resp = self.get(url).await;
        while resp.is_redirect() {
            assert!(
                chain.len() <= max,
                "more than {max} redirects: {chain:?} -> {:?}",
                resp.location()
            );
            let next = resolve(chain.last().unwrap(), resp.location().expect("Location"));
            resp = self.get(&next).await;
            chain.push(next);
        }
        (resp, chain)
    }

    /// The live cookie `name` for `origin` (`http://host:port` or `host:port`), any path.
    pub fn cookie(&self, origin: &str, name: &str) -> Option<String> {
        let now = SystemTime::now();
        let state = self.state.borrow();
        state
            .jar
            .get(&jar_key(origin))?
            .iter()
            .find(|c| c.name == name && c.live(now))
            .map(|c| c.value.clone())
    }

    /// Sets cookie `name` (Path `/`, session) for `origin`.
    pub fn set_cookie(&self, origin: &str, name: &str, value: &str) {
        let mut state = self.state.borrow_mut();
        let cookies = state.jar.entry(jar_key(origin)).or_default();
        cookies.retain(|c| !(c.name == name && c.path == "/"));
        cookies.push(StoredCookie {
            name: name.to_owned(),
            value: value.to_owned(),
            path: "/".to_owned(),
            expires: None,
        });
    }

    /// Removes every cookie `name` (any path) for `origin`.
    pub fn remove_cookie(&self, origin: &str, name: &str) {
        if let Some(cookies) = self.state.borrow_mut().jar.get_mut(&jar_key(origin)) {
            cookies.retain(|c| c.name != name);
        }
    }

    /// The raw `Set-Cookie` values of the most recent response.
    pub fn last_set_cookies(&self) -> Vec<String> {
        self.state.borrow().last_set_cookies.clone()
    }

    fn cookie_header(&self, key: &str, path: &str) -> Option<String> {
        let now = SystemTime::now();
        let state = self.state.borrow();
        let mut cookies: Vec<&StoredCookie> = state
            .jar
            .get(key)?
            .iter()
            .filter(|c| c.live(now) && path_matches(&c.path, path))
            .collect();
        cookies.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        let header = cookies
            .iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ");
        (!header.is_empty()).then_some(header)
    }

    fn store_cookies(&self, key: &str, request_path: &str, raw: &[String]) {
        let mut state = self.state.borrow_mut();
        state.last_set_cookies = raw.to_vec();
        let now = SystemTime::now();
        for line in raw {
            let Ok(c) = Cookie::parse(line.as_str()) else {
                continue;
            };
            let path = c
                .path()
                .filter(|p| p.starts_with('/'))
                .map(str::to_owned)
                .unwrap_or_else(|| default_path(request_path));
            let expires = if let Some(max_age) = c.max_age() {
                Some(if max_age.whole_seconds() <= 0 {
                    SystemTime::UNIX_EPOCH
                } else {
                    now + Duration::from_secs(max_age.whole_seconds() as u64)
                })
            } else if let Some(Expiration::DateTime(at)) = c.expires() {
                let secs = (at - OffsetDateTime::UNIX_EPOCH).whole_seconds().max(0);
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64))
            } else {
                None
            };
            let cookies = state.jar.entry(key.to_owned()).or_default();
            cookies.retain(|old| !(old.name == c.name() && old.path == path));
            if expires.is_none_or(|t| t > now) {
                cookies.push(StoredCookie {
                    name: c.name().to_owned(),
                    value: c.value().to_owned(),
                    path,
                    expires,
                });
            }
        }
    }

    // ---- node-oidc-provider's devInteractions ----

    /// Drives the provider's development login and consent pages, starting at the
    /// authorization URL, as user `login` (any password). Returns the URL the provider
    /// finally redirects to outside itself (the client's redirect URI with `code`, `state`,
    /// `iss`, or an error), without requesting it. Works with an existing provider session
    /// (no login form) and an existing grant (no consent form).
    pub async fn provider_login(&self, authorize_url: &str, login: &str) -> String {
        self.drive_interactions(authorize_url, Some(login)).await
    }

    /// Starts at the authorization URL and aborts at the first interaction (GET
    /// `/interaction/<uid>/abort`, devInteractions' abort route). Returns the redirect to the client, which carries
    /// `error=access_denied`.
    pub async fn provider_abort(&self, authorize_url: &str) -> String {
        self.drive_interactions(authorize_url, None).await
    }

    async fn drive_interactions(&self, authorize_url: &str, login: Option<&str>) -> String {
        let op_origin = origin_of(&Url::parse(authorize_url).expect("authorize URL"));
        let mut url = authorize_url.to_owned();
        for _ in 0..20 {
            let resp = self.get(&url).await;
            if resp.is_redirect() {
                let next = resolve(&url, resp.location().expect("Location"));
                if origin_of(&Url::parse(&next).unwrap()) != op_origin {
                    return next;
                }
                url = next;
                continue;
            }
            let html = resp.text();
            assert!(
                resp.status == 200 && html.contains("<form"),
                "unexpected provider page at {url} ({}):\n{html}",
                resp.status
            );
            let action = resolve(&url, &form_action(&html).expect("form action"));
            let submitted = match (login, hidden_input(&html, "prompt").as_deref()) {
                (None, _) => self.get(&format!("{action}/abort")).await,
                (Some(user), Some("login")) => {
                    let form = [("prompt", "login"), ("login", user), ("password", "x")];
                    self.post_form(&action, &form, &[]).await
                }
                (Some(_), Some("consent")) => {
                    self.post_form(&action, &[("prompt", "consent")], &[]).await
                }
                (_, other) => panic!("unknown interaction prompt {other:?} at {url}:\n{html}"),
            };
            assert!(
                submitted.is_redirect(),
                "interaction at {action} answered {}:\n{}",
                submitted.status,
                submitted.text()
            );
            url = resolve(&action, submitted.location().unwrap());
            if origin_of(&Url::parse(&url).unwrap()) != op_origin {
                return url;
            }
        }
        panic!("no redirect out of the provider after 20 steps, last at {url}");
    }

    /// GETs the provider's end_session URL, confirms "Yes, sign me out" (`logout=yes` with
    /// the form's `xsrf`), and returns the provider's answer to that POST (a 303 to the
    /// post_logout_redirect_uri, or to its own success page), without following it.
    pub async fn provider_logout_confirm(&self, end_session_url: &str) -> Resp {
        let (page, chain) = self.follow(end_session_url, 5).await;
        let html = page.text();
        let last = chain.last().unwrap();
        let action = form_action(&html)
            .unwrap_or_else(|| panic!("no logout form at {last} ({}):\n{html}", page.status));
        let xsrf = hidden_input(&html, "xsrf").expect("xsrf input in logout form");
        let action = resolve(last, &action);
        self.post_form(&action, &[("xsrf", &xsrf), ("logout", "yes")], &[])
            .await
    }
}

/// `location` resolved against `base`.
pub fn resolve(base: &str, location: &str) -> String {
    Url::parse(base)
        .and_then(|b| b.join(location))
        .unwrap_or_else(|e| panic!("cannot resolve {location:?} against {base:?}: {e}"))
        .into()
}
