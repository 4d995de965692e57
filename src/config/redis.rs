//! `[session]`'s Redis keys: which Redis deployment holds the sessions (one server,
//! a Redis Cluster, or a master found through Sentinel), with which credentials,
//! which TLS trust root and which timeout.
//!
//! Exactly one of `redis_url`, `redis_cluster_urls` and `redis_sentinel_urls` says
//! where Redis is (`redis_url` keeps its default when neither other is set). The
//! same `redis_username` / `redis_password` and `redis_ca_file` apply to a single
//! server, to every cluster node and to the master found through Sentinel; Sentinel
//! URLs may carry the sentinels' own credentials. Messages name a URL by its
//! position, never by its text (it may hold a password).

use super::reader::Reader;
use crate::secret::Sensitive;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

const SECTION: &str = "session";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Where the Redis deployment is.
#[derive(Debug, Clone)]
pub enum RedisTopology {
    /// One server (`redis_url`): `redis://`, `rediss://` or `unix://`.
    Standalone { url: Sensitive },
    /// Redis Cluster seed nodes (`redis_cluster_urls`); the rest of the cluster is
    /// discovered from them.
    Cluster { seeds: Vec<Sensitive> },
    /// Sentinels (`redis_sentinel_urls`) and the name of the master they watch
    /// (`redis_sentinel_master`).
    Sentinel {
        sentinels: Vec<Sensitive>,
        master: String,
    },
}

impl RedisTopology {
    /// `standalone`, `cluster` or `sentinel`, as reports and logs name it.
    pub fn mode(&self) -> &'static str {
        match self {
            RedisTopology::Standalone { .. } => "standalone",
            RedisTopology::Cluster { .. } => "cluster",
            RedisTopology::Sentinel { .. } => "sentinel",
        }
    }

    /// Whether connections to the data nodes use TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        let first = match self {
            RedisTopology::Standalone { url } => url,
            RedisTopology::Cluster { seeds } => &seeds[0],
            RedisTopology::Sentinel { sentinels, .. } => &sentinels[0],
        };
        first.expose().starts_with("rediss://")
    }
}

/// A CA certificate file for Redis TLS, read at start-up.
#[derive(Debug, Clone)]
pub struct RedisCa {
    pub path: PathBuf,
    /// The file's PEM text (one or more certificates).
    pub pem: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `session.redis_url` (`SPA_BFF__SESSION__REDIS_URL`), `session.redis_cluster_urls`
    /// (`SPA_BFF__SESSION__REDIS_CLUSTER_URLS`), or `session.redis_sentinel_urls`
    /// (`SPA_BFF__SESSION__REDIS_SENTINEL_URLS`) with `session.redis_sentinel_master`
    /// (`SPA_BFF__SESSION__REDIS_SENTINEL_MASTER`). URLs may hold passwords: sensitive.
    pub topology: RedisTopology,
    /// `session.redis_username` (`SPA_BFF__SESSION__REDIS_USERNAME`): the ACL user of the
    /// data nodes (not of the sentinels).
    pub username: Option<String>,
    /// `session.redis_password` (`SPA_BFF__SESSION__REDIS_PASSWORD`): its password;
    /// never printed.
    pub password: Option<Sensitive>,
    /// `session.redis_ca_file` (`SPA_BFF__SESSION__REDIS_CA_FILE`): PEM trust root for
    /// `rediss://` connections (sentinels and data nodes); default: the system's roots.
    pub ca: Option<RedisCa>,
    /// `session.redis_timeout` (`SPA_BFF__SESSION__REDIS_TIMEOUT`): bound on every Redis
    /// operation, connecting included (default 1s).
    pub timeout: Duration,
}

impl RedisSettings {
    /// One server at `url` without extra credentials or CA (tests, defaults).
    pub fn standalone(url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            topology: RedisTopology::Standalone {
                url: Sensitive::new(url),
            },
            username: None,
            password: None,
            ca: None,
            timeout,
        }
    }
}

/// What one Redis URL says, as far as the rules below care.
struct UrlFacts {
    tls: bool,
    unix: bool,
    /// `(username, password)` as written; empty when absent.
    credentials: (String, String),
    has_db: bool,
}

impl UrlFacts {
    fn has_credentials(&self) -> bool {
        !self.credentials.0.is_empty() || !self.credentials.1.is_empty()
    }
}

/// Reads the Redis keys of `[session]`. Problems are recorded; the settings returned
/// then hold stand-ins.
pub(super) fn read(r: &mut Reader<'_>) -> RedisSettings {
    let url = r.string(SECTION, "redis_url");
    let cluster = r.list(SECTION, "redis_cluster_urls");
    let sentinels = r.list(SECTION, "redis_sentinel_urls");
    let master = r.string(SECTION, "redis_sentinel_master");
    let username = r.string(SECTION, "redis_username");
    let password = r.string(SECTION, "redis_password");
    let ca_file = r.string(SECTION, "redis_ca_file");
    let timeout = r.duration(SECTION, "redis_timeout", "1s");

    let set: Vec<&str> = [
        ("redis_url", url.is_some()),
        ("redis_cluster_urls", cluster.is_some()),
        ("redis_sentinel_urls", sentinels.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    if set.len() > 1 {
        r.err(
            SECTION,
            set[1],
            format!(
                "conflicts with session.{}: set only one of redis_url, redis_cluster_urls and redis_sentinel_urls",
                set[0]
            ),
        );
    }
    if master.is_some() && sentinels.is_none() {
        r.err(
            SECTION,
            "redis_sentinel_master",
            "is only used with redis_sentinel_urls",
        );
    }

    let extra_credentials = username.is_some() || password.is_some();
    let (topology, facts) = if let Some(urls) = sentinels {
        let facts = read_urls(r, "redis_sentinel_urls", &urls, false);
        same_credentials(r, "redis_sentinel_urls", &facts);
        let master = match master {
            Some(m) if !m.trim().is_empty() => m,
            Some(_) => {
                r.err(SECTION, "redis_sentinel_master", "must not be empty");
                String::new()
            }
            None => {
                r.err(
                    SECTION,
                    "redis_sentinel_master",
                    "is required with redis_sentinel_urls (the master name the sentinels watch)",
                );
                String::new()
            }
        };
        let topology = RedisTopology::Sentinel {
            sentinels: urls.into_iter().map(Sensitive::new).collect(),
            master,
        };
        (topology, facts)
    } else if let Some(urls) = cluster {
        let facts = read_urls(r, "redis_cluster_urls", &urls, false);
        same_credentials(r, "redis_cluster_urls", &facts);
        if extra_credentials && facts.iter().any(UrlFacts::has_credentials) {
            r.err(SECTION, "redis_cluster_urls", "hold credentials and redis_username/redis_password are set too: give them in one place");
        }
        let seeds = urls.into_iter().map(Sensitive::new).collect();
        (RedisTopology::Cluster { seeds }, facts)
    } else {
        let url = url.unwrap_or_else(|| DEFAULT_URL.into());
        let facts = read_urls(r, "redis_url", std::slice::from_ref(&url), true);
        if extra_credentials && facts.iter().any(UrlFacts::has_credentials) {
            r.err(
                SECTION,
                "redis_url",
                "holds credentials and redis_username/redis_password are set too: give them in one place",
            );
        }
        let url = Sensitive::new(url);
        (RedisTopology::Standalone { url }, facts)
    };

    if username.is_some() && password.is_none() {
        r.err(
            SECTION,
            "redis_username",
            "needs redis_password (Redis authenticates a user by its password)",
        );
    }
    if password.as_deref().is_some_and(str::is_empty) {
        r.err(SECTION, "redis_password", "must not be empty");
    }
    let tls = facts.iter().any(|f| f.tls);
    let ca = ca_file.and_then(|path| read_ca(r, path, tls));
    RedisSettings {
        topology,
        username,
        password: password.map(Sensitive::new),
        ca,
        timeout,
    }
}

/// Checks each URL of `key`; every URL of a list must use the same scheme.
fn read_urls(r: &mut Reader<'_>, key: &str, urls: &[String], single: bool) -> Vec<UrlFacts> {
    if urls.is_empty() {
        r.err(SECTION, key, "needs at least one URL");
    }
    let name = |i: usize| match single {
        true => String::new(),
        false => format!("URL #{}: ", i + 1),
    };
    let mut facts = Vec::new();
    for (i, raw) in urls.iter().enumerate() {
        match url_facts(raw) {
            Err(problem) => r.err(SECTION, key, format!("{}{problem}", name(i))),
            Ok(f) if !single && f.unix => r.err(
                SECTION,
                key,
                format!("{}must be redis:// or rediss://host:port", name(i)),
            ),
            Ok(f) if !single && f.has_db => r.err(
                SECTION,
                key,
                format!(
                    "{}must not name a database (Redis Cluster and Sentinel use database 0)",
                    name(i)
                ),
            ),
            Ok(f) => facts.push(f),
        }
    }
    if facts.iter().any(|f| f.tls) && facts.iter().any(|f| !f.tls) {
        r.err(
            SECTION,
            key,
            "mixes redis:// and rediss://: use one scheme for all",
        );
    }
    facts
}

/// The cluster client and the sentinel client take one set of credentials for all.
fn same_credentials(r: &mut Reader<'_>, key: &str, facts: &[UrlFacts]) {
    if facts
        .windows(2)
        .any(|w| w[0].credentials != w[1].credentials)
    {
        r.err(
            SECTION,
            key,
            "URLs carry different credentials: give all of them the same (or none)",
        );
    }
}

/// What `raw` says, or why it is not a Redis URL. Never quotes `raw`.
fn url_facts(raw: &str) -> Result<UrlFacts, &'static str> {
    use redis::IntoConnectionInfo;
    const NOT_A_URL: &str = "is not a Redis URL (expected redis://, rediss:// or unix://)";
    let parsed = Url::parse(raw).map_err(|_| NOT_A_URL)?;
    let unix = matches!(parsed.scheme(), "unix" | "redis+unix");
    let tls = parsed.scheme() == "rediss";
    if !unix && !tls && parsed.scheme() != "redis" {
        return Err(NOT_A_URL);
    }
    if !unix && parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    raw.into_connection_info().map_err(|_| NOT_A_URL)?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let has_db = match unix {
        true => parsed.query_pairs().any(|(k, _)| k == "db"),
        false => !matches!(parsed.path(), "" | "/" | "/0"),
    };
    Ok(UrlFacts {
        tls,
        unix,
        credentials: (
            decode(parsed.username()),
            decode(parsed.password().unwrap_or("")),
        ),
        has_db,
    })
}

/// `redis_ca_file`: readable, holding PEM certificates, and only with `rediss://`.
fn read_ca(r: &mut Reader<'_>, path: String, tls: bool) -> Option<RedisCa> {
    if !tls {
        r.err(
            SECTION,
            "redis_ca_file",
            "is only used with rediss:// URLs (TLS); these Redis URLs are plain redis://",
        );
        return None;
    }
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) => {
            r.err(
                SECTION,
                "redis_ca_file",
                format!("cannot read {path:?}: {}", e.kind()),
            );
            return None;
        }
    };
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
    match certs {
        Ok(certs) if !certs.is_empty() => Some(RedisCa {
            path: PathBuf::from(path),
            pem,
        }),
        _ => {
            r.err(
                SECTION,
                "redis_ca_file",
                format!("{path:?} holds no PEM certificate"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::minimal;
    use super::super::Settings;
    use super::*;

    fn read_session(extra: &str) -> Result<RedisSettings, Vec<String>> {
        let text = minimal().replace("[session]", &format!("[session]\n{extra}"));
        Settings::from_toml_str(&text)
            .map(|s| s.session.redis)
            .map_err(|e| e.0)
    }

    fn problems(extra: &str) -> String {
        read_session(extra).expect_err(extra).join("\n")
    }

    #[test]
    fn one_server_by_default_with_a_one_second_timeout() {
        let s = read_session("").unwrap();
        match s.topology {
            RedisTopology::Standalone { url } => assert_eq!(url.expose(), DEFAULT_URL),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert!(s.username.is_none() && s.password.is_none() && s.ca.is_none());
    }

    #[test]
    fn cluster_and_sentinel_are_read_with_their_mode() {
        let cluster = read_session(
            "redis_cluster_urls = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]\nredis_username = \"bff\"\nredis_password = \"pw\"",
        )
        .unwrap();
        assert_eq!(cluster.topology.mode(), "cluster");
        assert_eq!(cluster.username.as_deref(), Some("bff"));
        let sentinel = read_session(
            "redis_sentinel_urls = \"rediss://:sentinel-pw@10.0.0.5:26379 rediss://:sentinel-pw@10.0.0.6:26379\"\nredis_sentinel_master = \"mymaster\"\nredis_password = \"pw\"",
        )
        .unwrap();
        assert_eq!(sentinel.topology.mode(), "sentinel");
        assert!(sentinel.topology.tls());
        match sentinel.topology {
            RedisTopology::Sentinel { sentinels, master } => {
                assert_eq!((sentinels.len(), master.as_str()), (2, "mymaster"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conflicting_and_incomplete_redis_settings_are_named() {
        for (extra, expected) in [
            (
                "redis_url = \"redis://a\"\nredis_cluster_urls = [\"redis://b:1\"]",
                "session.redis_cluster_urls: conflicts with session.redis_url",
            ),
            (
                "redis_cluster_urls = [\"redis://b:1\"]\nredis_sentinel_urls = [\"redis://c:1\"]\nredis_sentinel_master = \"m\"",
                "session.redis_sentinel_urls: conflicts with session.redis_cluster_urls",
            ),
            (
                "redis_sentinel_urls = [\"redis://c:1\"]",
                "session.redis_sentinel_master: is required",
            ),
            (
                "redis_sentinel_master = \"m\"",
                "session.redis_sentinel_master: is only used with redis_sentinel_urls",
            ),
            ("redis_cluster_urls = []", "session.redis_cluster_urls: needs at least one URL"),
            (
                "redis_cluster_urls = [\"redis://a:1\", \"rediss://b:1\"]",
                "session.redis_cluster_urls: mixes redis:// and rediss://",
            ),
            (
                "redis_cluster_urls = [\"redis://a:1\", \"unix:///tmp/r.sock\"]",
                "session.redis_cluster_urls: URL #2: must be redis:// or rediss://",
            ),
            (
                "redis_cluster_urls = [\"redis://a:1/2\"]",
                "session.redis_cluster_urls: URL #1: must not name a database",
            ),
            (
                "redis_cluster_urls = [\"redis://:x@a:1\", \"redis://:y@b:1\"]",
                "session.redis_cluster_urls: URLs carry different credentials",
            ),
            (
                "redis_url = \"redis://:in-url@a\"\nredis_password = \"too\"",
                "session.redis_url: holds credentials and redis_username/redis_password are set too",
            ),
            (
                "redis_cluster_urls = [\"redis://u:in-url@a:1\"]\nredis_password = \"too\"",
                "session.redis_cluster_urls: hold credentials and redis_username/redis_password",
            ),
            ("redis_username = \"bff\"", "session.redis_username: needs redis_password"),
            ("redis_url = \"http://a\"", "session.redis_url: is not a Redis URL"),
            (
                "redis_ca_file = \"/nonexistent\"",
                "session.redis_ca_file: is only used with rediss:// URLs",
            ),
            (
                "redis_url = \"rediss://a\"\nredis_ca_file = \"/nonexistent/ca.pem\"",
                "session.redis_ca_file: cannot read \"/nonexistent/ca.pem\"",
            ),
        ] {
            let all = problems(extra);
            assert!(all.contains(expected), "{extra}:\n{all}");
        }
    }

    #[test]
    fn sentinel_credentials_in_urls_do_not_conflict_with_the_masters() {
        // The URLs authenticate to the sentinels; redis_password to the master.
        read_session(
            "redis_sentinel_urls = [\"redis://:s@c:1\"]\nredis_sentinel_master = \"m\"\nredis_password = \"pw\"",
        )
        .unwrap();
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let all = problems(&format!(
            "redis_url = \"rediss://a\"\nredis_ca_file = {:?}",
            empty.display().to_string()
        ));
        assert!(all.contains("holds no PEM certificate"), "{all}");
    }

    #[test]
    fn redis_passwords_never_appear_in_messages_or_debug_output() {
        let secret = "redis-pw-never-printed";
        for extra in [
            format!("redis_cluster_urls = [\"redis://:{secret}@a:1\", \"redis://:x{secret}@b:1\"]"),
            format!("redis_url = \"redis://:{secret}@a\"\nredis_password = \"{secret}\""),
            format!(
                "redis_sentinel_urls = [\"http://:{secret}@c:1\"]\nredis_sentinel_master = \"m\""
            ),
            format!("redis_cluster_urls = [\"redis://:{secret}@a:1/3\"]"),
        ] {
            let all = problems(&extra);
            assert!(!all.contains(secret), "{all}");
        }
        let ok = read_session(&format!(
            "redis_cluster_urls = [\"redis://a:1\"]\nredis_password = \"{secret}\""
        ))
        .unwrap();
        assert!(!format!("{ok:?}").contains(secret));
    }
}
