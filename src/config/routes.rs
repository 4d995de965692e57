//! `[[routes]]`: the allow-list of paths that reach an upstream. File only: the
//! environment cannot describe an array of tables.

use super::reader::Reader;
use super::server::is_loopback_host;
use crate::paths;
use std::time::Duration;
use url::Url;

/// Whether a route needs, accepts or never gets the user's access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRequirement {
    /// Without a session: 401. With one: `Authorization: Bearer`.
    Required,
    /// Without a session: forwarded without a token.
    Optional,
    /// Never attach a token (the session is not even read).
    None,
    /// spa-bff's own token (client credentials grant), never the user's: no session
    /// is read or needed.
    Client,
}

/// One `[[routes]]` entry: requests under `prefix` go to `upstream`. Its keys come from
/// the file only (no environment variable).
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// `routes[].prefix`: e.g. `/api`; matches `/api` and `/api/...`, never `/apix`.
    /// Required.
    pub prefix: String,
    /// `routes[].upstream`: base URL; the rest of the path is appended, the query kept.
    /// Required.
    pub upstream: Url,
    /// `routes[].token`: `required` (default), `optional`, `none` or `client`.
    pub token: TokenRequirement,
    /// `routes[].scopes`: the scopes of a `client` route's token (none by default).
    pub scopes: Vec<String>,
    /// `routes[].audience`: the `audience` parameter some providers (Auth0) want
    /// instead of `resource` on a `client` route's token request.
    pub audience: Option<String>,
    /// `routes[].strip_prefix` (default true): drop `prefix` before appending the path.
    pub strip_prefix: bool,
    /// `routes[].timeout` (default 30s): until the upstream's response headers arrive.
    pub timeout: Duration,
    /// `routes[].methods`: allowed methods (upper case); `None` allows all.
    pub methods: Option<Vec<String>>,
    /// `routes[].allow_set_cookie` (default false): pass the upstream's `Set-Cookie` on
    /// (never one that would set or clear spa-bff's own cookies).
    pub allow_set_cookie: bool,
    /// `routes[].max_body` (default 10MiB): the largest request body forwarded (413
    /// beyond, judged by `Content-Length` up front and by counting a streamed body).
    pub max_body: u64,
    /// `routes[].allow_shared_cache` (default false): leave the upstream's
    /// `Cache-Control` alone on responses to token-bearing requests. Off, those
    /// responses are made `private` so that no shared cache (CDN) hands one user's
    /// answer to another.
    pub allow_shared_cache: bool,
    /// `routes[].allow_plain_http` (default false): allow an `http://` upstream on a
    /// host that is not loopback for a route that sends tokens (they travel in clear).
    pub allow_plain_http: bool,
    /// `routes[].websocket_idle_timeout` (default 5m): a WebSocket tunnel with no byte
    /// in either direction for this long is closed, both sides.
    pub websocket_idle_timeout: Duration,
    /// `routes[].resource`: an RFC 8707 resource indicator (an absolute URI without a
    /// fragment, kept as written). On a route carrying the user's token it is the
    /// route's audience: the route gets an access token for this resource only, never
    /// the session's default one, and no other route gets that token. On a `client`
    /// route it is the resource the client-credentials token is asked for.
    pub resource: Option<String>,
}

/// Reads every `[[routes]]` entry (each with its own reader, section `routes[i]`, so its
/// unknown keys are found too), then refuses overlapping prefixes.
pub(super) fn read(r: &mut Reader<'_>) -> Vec<RouteSettings> {
    let mut routes = Vec::new();
    for (section, source) in r.entries("routes") {
        let mut entry = Reader::entry(&source);
        let route = read_route(&mut entry, &section);
        entry.report_unknown_keys();
        r.absorb(entry);
        routes.extend(route);
    }
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if paths::paths_overlap(&a.prefix, &b.prefix) {
                r.problem(format!(
                    "routes: prefixes {:?} and {:?} overlap (each request must match one route)",
                    a.prefix, b.prefix
                ));
            }
        }
    }
    routes
}

/// Reads one entry, named `section`; `None` when a required key is missing or unusable.
pub(super) fn read_route(r: &mut Reader<'_>, section: &str) -> Option<RouteSettings> {
    let prefix = r
        .required(section, "prefix")
        .and_then(|p| match prefix_problem(&p) {
            Some(problem) => {
                r.err(section, "prefix", format!("{p:?} {problem}"));
                None
            }
            None => Some(p),
        });
    let upstream = r
        .required(section, "upstream")
        .and_then(|raw| match Url::parse(&raw) {
            Ok(u) if is_upstream(&u) => Some(u),
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
        Some("client") => TokenRequirement::Client,
        Some(other) => {
            r.err(
                section,
                "token",
                format!("{other:?}: expected required, optional, none or client"),
            );
            TokenRequirement::Required
        }
    };
    let (scopes, audience) = read_client_token_keys(r, section, token);
    let strip_prefix = r.bool(section, "strip_prefix", true);
    let timeout = r.duration(section, "timeout", "30s");
    let methods = read_methods(r, section);
    let allow_set_cookie = r.bool(section, "allow_set_cookie", false);
    let max_body = r.byte_size(section, "max_body", "10MiB");
    let allow_shared_cache = r.bool(section, "allow_shared_cache", false);
    let allow_plain_http = r.bool(section, "allow_plain_http", false);
    let websocket_idle_timeout = r.duration(section, "websocket_idle_timeout", "5m");
    let resource = read_resource(r, section, token);
    if let Some(u) = &upstream {
        let clear_text = u.scheme() == "http" && !is_loopback_host(u);
        if clear_text && token != TokenRequirement::None && !allow_plain_http {
            r.err(
                section,
                "upstream",
                format!("{} is plain http on a host that is not loopback: the access token would cross the network in clear text; use https, or set allow_plain_http = true if the network is trusted", u.as_str()),
            );
        }
    }
    Some(RouteSettings {
        prefix: prefix?,
        upstream: upstream?,
        token,
        scopes,
        audience,
        strip_prefix,
        timeout,
        methods,
        allow_set_cookie,
        max_body,
        allow_shared_cache,
        allow_plain_http,
        websocket_idle_timeout,
        resource,
    })
}

/// `scopes` and `audience`: what a `client` route's token is asked for (with its
/// `resource`). They mean nothing on other routes and are refused there.
fn read_client_token_keys(
    r: &mut Reader<'_>,
    section: &str,
    token: TokenRequirement,
) -> (Vec<String>, Option<String>) {
    let scopes = r.list(section, "scopes");
    let audience = r.string(section, "audience");
    if token != TokenRequirement::Client {
        for (key, present) in [
            ("scopes", scopes.is_some()),
            ("audience", audience.is_some()),
        ] {
            if present {
                r.err(section, key, "is only used by token = \"client\" routes");
            }
        }
    }
    (scopes.unwrap_or_default(), audience)
}

/// `resource`: an absolute URI without a fragment (RFC 8707 section 2), on a route that
/// sends a token.
fn read_resource(r: &mut Reader<'_>, section: &str, token: TokenRequirement) -> Option<String> {
    let raw = r.string(section, "resource")?;
    if let Some(problem) = resource_problem(&raw) {
        r.err(section, "resource", format!("{raw:?} {problem}"));
        return None;
    }
    if token == TokenRequirement::None {
        r.err(
            section,
            "resource",
            "is an audience for the route's token, and token = \"none\" sends none",
        );
        return None;
    }
    Some(raw)
}

/// Why `raw` cannot be an RFC 8707 resource indicator, if it cannot.
fn resource_problem(raw: &str) -> Option<&'static str> {
    match Url::parse(raw) {
        Err(_) => Some("is not an absolute URI"),
        Ok(u) if u.fragment().is_some() => Some("must not have a fragment (RFC 8707)"),
        Ok(_) => None,
    }
}

/// The resources of the routes that carry the user's token (per-route audiences), each
/// once, in route order, leaving out `default` (the session's own token is for it).
pub fn user_route_resources(routes: &[RouteSettings], default: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for route in routes {
        let user_route = matches!(
            route.token,
            TokenRequirement::Required | TokenRequirement::Optional
        );
        if let (true, Some(resource)) = (user_route, &route.resource) {
            if Some(resource.as_str()) != default && !out.contains(resource) {
                out.push(resource.clone());
            }
        }
    }
    out
}

/// `methods`: upper-cased, without duplicates; every bad name is reported.
fn read_methods(r: &mut Reader<'_>, section: &str) -> Option<Vec<String>> {
    let list = r.list(section, "methods")?;
    if list.is_empty() {
        r.err(
            section,
            "methods",
            "must name at least one method (or be left out)",
        );
        return None;
    }
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

/// An http(s) URL with a host, and no query, fragment or credentials.
fn is_upstream(u: &Url) -> bool {
    (u.scheme() == "https" || u.scheme() == "http")
        && u.host().is_some()
        && u.query().is_none()
        && u.fragment().is_none()
        && u.username().is_empty()
        && u.password().is_none()
}

/// Why `prefix` cannot be a route prefix, if it cannot.
fn prefix_problem(prefix: &str) -> Option<String> {
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
    // Checked here rather than in checks.rs: spa-bff's paths are constants, not another
    // section, and a route whose upstream is unusable still gets its prefix checked.
    if let Some(own) = paths::RESERVED
        .iter()
        .find(|own| paths::paths_overlap(prefix, own))
    {
        return Some(format!("collides with spa-bff's own path {own}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::minimal;
    use super::super::Settings;
    use super::*;

    #[test]
    fn routes_and_proxy_get_the_documented_defaults() {
        let text = format!(
            "{}\n[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9000/v1\"\n",
            minimal()
        );
        let s = Settings::from_toml_str(&text).unwrap();
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
        assert_eq!(r.max_body, 10 << 20);
        assert!(!r.allow_shared_cache);
        assert_eq!(r.websocket_idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn plain_http_upstreams_off_loopback_need_an_explicit_allow_for_token_routes() {
        let route = |upstream: &str, extra: &str| {
            let text = format!(
                "{}\n[[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\n{extra}\n",
                minimal()
            );
            Settings::from_toml_str(&text).err().map(|e| e.0)
        };
        for ok in [
            ("https://orders.internal", ""),
            ("http://127.0.0.1:8000", ""),
            ("http://localhost:8000", ""),
            ("http://[::1]:8000", ""),
            ("http://orders.internal", "allow_plain_http = true"),
            ("http://cdn.example.com", "token = \"none\""),
        ] {
            assert_eq!(route(ok.0, ok.1), None, "{ok:?}");
        }
        for bad in [
            ("http://orders.internal", ""),
            ("http://10.0.0.7:8000", "token = \"optional\""),
        ] {
            let errs = route(bad.0, bad.1).expect("refused");
            assert!(
                errs.len() == 1
                    && errs[0].starts_with("routes[0].upstream:")
                    && errs[0].contains("clear text"),
                "{bad:?}: {errs:?}"
            );
        }
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
        let errs = Settings::from_toml_str(&text).unwrap_err().0;
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
        let route = |p: &str| format!("[[routes]]\nprefix = \"{p}\"\nupstream = \"https://a\"\n");
        let text = format!(
            "{}\n{}{}{}",
            minimal(),
            route("/api"),
            route("/api/admin"),
            route("/apix")
        );
        let errs = Settings::from_toml_str(&text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("\"/api\" and \"/api/admin\" overlap"),
            "{errs:?}"
        );
        assert!(paths::paths_overlap("/api", "/api"));
        assert!(!paths::paths_overlap("/api", "/apix"));
    }

    #[test]
    fn a_route_resource_is_an_absolute_uri_on_a_token_route() {
        let route = |extra: &str| {
            let text = format!(
                "{}\n[[routes]]\nprefix = \"/api\"\nupstream = \"https://a\"\n{extra}\n",
                minimal()
            );
            Settings::from_toml_str(&text).map(|s| s.routes[0].resource.clone())
        };
        assert_eq!(route(""), Ok(None));
        for ok in [
            "https://orders.example",
            "https://api.example/v1?tenant=7",
            "urn:example:orders",
        ] {
            assert_eq!(
                route(&format!("resource = \"{ok}\"")),
                Ok(Some(ok.to_string()))
            );
            assert!(route(&format!("resource = \"{ok}\"\ntoken = \"optional\"")).is_ok());
        }
        for (bad, why) in [
            ("resource = \"orders\"", "is not an absolute URI"),
            ("resource = \"/orders\"", "is not an absolute URI"),
            ("resource = \"https://orders.example#x\"", "fragment"),
            (
                "resource = \"https://orders.example\"\ntoken = \"none\"",
                "token = \"none\" sends none",
            ),
        ] {
            let errs = route(bad).expect_err(bad).0;
            assert!(
                errs.len() == 1
                    && errs[0].starts_with("routes[0].resource:")
                    && errs[0].contains(why),
                "{bad}: {errs:?}"
            );
        }
    }

    #[test]
    fn the_login_names_each_user_route_resource_once_besides_the_default() {
        let text = format!(
            r#"{}
[[routes]]
prefix = "/orders"
upstream = "https://orders"
resource = "https://orders.example"
[[routes]]
prefix = "/orders2"
upstream = "https://orders"
resource = "https://orders.example"
token = "optional"
[[routes]]
prefix = "/default"
upstream = "https://default"
resource = "https://default.example"
[[routes]]
prefix = "/plain"
upstream = "https://plain"
[[routes]]
prefix = "/reports"
upstream = "https://reports"
resource = "https://reports.example"
"#,
            minimal()
        );
        let s = Settings::from_toml_str(&text).unwrap();
        assert_eq!(
            user_route_resources(&s.routes, Some("https://default.example")),
            ["https://orders.example", "https://reports.example"]
        );
        assert_eq!(
            user_route_resources(&s.routes, None),
            [
                "https://orders.example",
                "https://default.example",
                "https://reports.example"
            ]
        );
    }

    #[test]
    fn a_route_entry_that_is_not_a_table_is_reported() {
        let text = format!("routes = [\"/api\"]\n{}", minimal());
        let errs = Settings::from_toml_str(&text).unwrap_err().0;
        assert_eq!(errs, ["routes[0]: expected a table, got string"]);
        let text = format!("routes = \"/api\"\n{}", minimal());
        let errs = Settings::from_toml_str(&text).unwrap_err().0;
        assert_eq!(
            errs,
            ["routes: expected an array of tables ([[routes]]), got string"]
        );
    }
}
