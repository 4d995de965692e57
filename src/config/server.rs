//! `[server]`: where spa-bff listens, the origin the browser sees, the SPA's files.

use super::reader::Reader;
use crate::paths;
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
    /// `server.shutdown_delay` (`SPA_BFF__SERVER__SHUTDOWN_DELAY`): on SIGTERM, how long
    /// `/readyz` answers 503 while requests are still served, before the listener
    /// closes (default 5s; `0s` stops at once).
    pub shutdown_delay: Duration,
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
    Some(ServerSettings {
        listen,
        public_url: public_url?,
        static_dir,
        workers,
        shutdown_delay,
    })
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
