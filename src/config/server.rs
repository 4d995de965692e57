//! `[server]`: where spa-bff listens, the origin the browser sees, the SPA's files, and
//! the limits of its HTTP edge (who is a trusted proxy, request sizes and deadlines, the
//! login rate limit).

use super::reader::Reader;
use crate::paths;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `server.listen` (`SPA_BFF__SERVER__LISTEN`): socket address to bind, e.g.
    /// `127.0.0.1:8080` (the default).
    pub listen: String,
    /// `server.public_url` (`SPA_BFF__SERVER__PUBLIC_URL`): the origin the browser sees;
    /// no path. Required.
    pub public_url: Url,
    /// `server.static_dir` (`SPA_BFF__SERVER__STATIC_DIR`): SPA files to serve, with
    /// `index.html` fallback.
    pub static_dir: Option<PathBuf>,
    /// `server.workers` (`SPA_BFF__SERVER__WORKERS`): HTTP worker threads (default: one
    /// per core).
    pub workers: Option<usize>,
    /// `server.trusted_proxies` (`SPA_BFF__SERVER__TRUSTED_PROXIES`): CIDRs of the load
    /// balancers in front of spa-bff. Only hops from them are believed in
    /// `X-Forwarded-For`; the client is the rightmost hop that is not one of them.
    /// Default: none (the TCP peer is the client).
    pub trusted_proxies: Vec<Cidr>,
    /// `server.login_rate_limit` (`SPA_BFF__SERVER__LOGIN_RATE_LIMIT`): requests per
    /// minute one client IP may make to `/login` and `/callback` together, per instance
    /// (default 60; 0 turns the limit off).
    pub login_rate_limit: u32,
    /// `server.login_rate_burst` (`SPA_BFF__SERVER__LOGIN_RATE_BURST`): how many of them
    /// may come at once (default 20).
    pub login_rate_burst: u32,
    /// `server.request_body_timeout` (`SPA_BFF__SERVER__REQUEST_BODY_TIMEOUT`): the
    /// longest pause allowed while a request body arrives (default 30s); a body that
    /// stalls longer is answered 408.
    pub request_body_timeout: Duration,
    /// `server.max_header_bytes` (`SPA_BFF__SERVER__MAX_HEADER_BYTES`): the largest
    /// request header section (names and values) accepted (default 32KiB); larger is 431.
    pub max_header_bytes: u64,
    /// `server.shutdown_delay` (`SPA_BFF__SERVER__SHUTDOWN_DELAY`): on SIGTERM, how long
    /// `/readyz` answers 503 while requests are still served, before the listener
    /// closes (default 5s; `0s` stops at once).
    pub shutdown_delay: Duration,
    /// `server.metrics_listen` (`SPA_BFF__SERVER__METRICS_LISTEN`): socket address of a
    /// second listener serving only `GET /metrics`; then the main listener answers 404
    /// there. Unset (the default): `/metrics` is on the main listener.
    pub metrics_listen: Option<String>,
}

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or
/// /128).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(raw: &str) -> Result<Cidr, String> {
        let raw = raw.trim();
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{raw:?} is not an IP address or CIDR like 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{raw:?}: the prefix length must be 0 to {max}")),
            },
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != network {
            return Err(format!(
                "{raw:?} has host bits set (did you mean {}?)",
                Cidr {
                    network: cidr.masked(network),
                    prefix
                }
            ));
        }
        Ok(cidr)
    }

    /// `ip` with the bits outside this network's prefix cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl ServerSettings {
    /// The exact redirect URI registered at the provider.
    pub fn redirect_uri(&self) -> String {
        format!("{}{}", self.origin(), paths::CALLBACK)
    }

    /// `scheme://host[:port]` without a trailing slash.
    pub fn origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}

/// Reads `[server]`; `None` when `public_url` is missing or unusable (recorded).
pub(super) fn read(r: &mut Reader<'_>) -> Option<ServerSettings> {
    let listen = r
        .string("server", "listen")
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    if listen.parse::<std::net::SocketAddr>().is_err() {
        r.err(
            "server",
            "listen",
            format!("{listen:?} is not an address like 0.0.0.0:8080"),
        );
    }
    let public_url = r
        .required("server", "public_url")
        .and_then(|raw| match Url::parse(&raw) {
            Ok(u) if is_origin(&u) => Some(u),
            Ok(_) => {
                r.err("server", "public_url", format!("{raw:?} must be an http(s) origin without path, query or credentials, e.g. https://app.example.com"));
                None
            }
            Err(e) => {
                r.err("server", "public_url", format!("{raw:?} is not a URL ({e})"));
                None
            }
        });
    let static_dir = r.string("server", "static_dir").map(PathBuf::from);
    if let Some(dir) = &static_dir {
        if !dir.join("index.html").is_file() {
            r.err(
                "server",
                "static_dir",
                format!("{} has no index.html", dir.display()),
            );
        }
    }
    let workers = r.string("server", "workers").and_then(|w| match w.parse() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            r.err("server", "workers", "must be a positive integer");
            None
        }
    });
    let trusted_proxies = read_trusted_proxies(r);
    let login_rate_limit = rate(r, "login_rate_limit", 60);
    let login_rate_burst = rate(r, "login_rate_burst", 20);
    if login_rate_limit > 0 && login_rate_burst == 0 {
        r.err(
            "server",
            "login_rate_burst",
            "must be at least 1 while login_rate_limit is on",
        );
    }
    let request_body_timeout = r.duration("server", "request_body_timeout", "30s");
    let max_header_bytes = r.byte_size("server", "max_header_bytes", "32KiB");
    let shutdown_delay = match r.string("server", "shutdown_delay") {
        None => Duration::from_secs(5),
        Some(text) => humantime::parse_duration(text.trim()).unwrap_or_else(|_| {
            r.err(
                "server",
                "shutdown_delay",
                format!("{text:?} is not a duration like 5s or 0s"),
            );
            Duration::from_secs(5)
        }),
    };
    let metrics_listen = r.string("server", "metrics_listen");
    if let Some(addr) = &metrics_listen {
        match addr.parse::<std::net::SocketAddr>() {
            Err(_) => r.err(
                "server",
                "metrics_listen",
                format!("{addr:?} is not an address like 127.0.0.1:9100"),
            ),
            Ok(a) if a.port() != 0 && *addr == listen => r.err(
                "server",
                "metrics_listen",
                "must differ from server.listen (unset it to serve /metrics there)",
            ),
            Ok(_) => {}
        }
    }
    Some(ServerSettings {
        listen,
        public_url: public_url?,
        static_dir,
        workers,
        trusted_proxies,
        login_rate_limit,
        login_rate_burst,
        request_body_timeout,
        max_header_bytes,
        shutdown_delay,
        metrics_listen,
    })
}

/// `server.trusted_proxies`: every entry is checked and each bad one reported.
fn read_trusted_proxies(r: &mut Reader<'_>) -> Vec<Cidr> {
    let mut out = Vec::new();
    for raw in r.list("server", "trusted_proxies").unwrap_or_default() {
        match Cidr::parse(&raw) {
            Ok(c) => out.push(c),
            Err(e) => r.err("server", "trusted_proxies", e),
        }
    }
    out
}

/// A per-minute rate (a whole number up to a million).
fn rate(r: &mut Reader<'_>, key: &str, default: u64) -> u32 {
    match r.count("server", key, default) {
        n if n <= 1_000_000 => n as u32,
        _ => {
            r.err("server", key, "must be at most 1000000");
            default as u32
        }
    }
}

/// An http(s) URL with a host and nothing after it but `/`.
fn is_origin(u: &Url) -> bool {
    (u.scheme() == "https" || u.scheme() == "http")
        && u.host().is_some()
        && (u.path() == "/" || u.path().is_empty())
        && u.query().is_none()
        && u.fragment().is_none()
        && u.username().is_empty()
}

/// Whether the URL's host is `localhost` or a loopback address.
pub(super) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::minimal;
    use super::super::Settings;
    use super::Cidr;

    #[test]
    fn cidrs_of_both_families_match_their_addresses_only() {
        let net = |s: &str| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse().unwrap();
        for (cidr, addr, expected) in [
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.9.9.9", true),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::1", "::1", true),
            ("::/0", "2001:db8::1", true),
        ] {
            assert_eq!(net(cidr).contains(ip(addr)), expected, "{cidr} {addr}");
        }
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "::1/129",
            "example.com",
            "10.0.0.0/x",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_edge_limit_is_reported() {
        let text = minimal().replace(
            "[oidc]",
            "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\", \"nope\"]\n\
             login_rate_limit = \"lots\"\nmax_header_bytes = \"big\"\n\
             request_body_timeout = \"0s\"\nmetrics_listen = \"metrics\"\n[oidc]",
        );
        let all = Settings::from_toml_str(&text).unwrap_err().0.join("\n");
        for needle in [
            "server.trusted_proxies: \"10.0.0.1/8\" has host bits set (did you mean 10.0.0.0/8?)",
            "server.trusted_proxies: \"nope\"",
            "server.login_rate_limit",
            "server.max_header_bytes",
            "server.request_body_timeout: must be greater than zero",
            "server.metrics_listen: \"metrics\" is not an address",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let s = Settings::from_toml_str(&minimal()).unwrap();
        assert!(s.server.trusted_proxies.is_empty());
        assert_eq!(
            (s.server.login_rate_limit, s.server.login_rate_burst),
            (60, 20)
        );
        assert_eq!(s.server.max_header_bytes, 32 * 1024);
    }
}
