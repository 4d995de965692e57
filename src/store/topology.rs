//! How spa-bff reaches each kind of Redis deployment, with the `redis` crate's own
//! support for each: one server (`Client`), Redis Cluster (`ClusterClient`: follows
//! MOVED/ASK, waits out CLUSTERDOWN, re-reads the slot map when masters change) and
//! Sentinel (`SentinelClient`: asks the sentinels for the master, then checks with
//! `ROLE` that it is one). Credentials and the CA of `[session]` apply to the data
//! nodes in every mode; TLS is rustls over the process's crypto provider.
//!
//! Everything above this module sees one [`Connection`] type, so the store has a
//! single code path whatever the topology. Reads and writes always go to masters
//! (replicas are never read: a stale read would break "refresh exactly once").

use crate::config::{RedisSettings, RedisTopology};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, TlsMode,
    Value,
};
use std::time::Duration;

/// A connection to the deployment: one multiplexed connection to a server (a
/// standalone one or the master Sentinel named), or a cluster connection that routes
/// each command to its slot's master.
#[derive(Clone)]
pub enum Connection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A fresh connection and what was learnt while making it.
#[derive(Clone)]
pub struct Connected {
    pub connection: Connection,
    /// Whether the data has replicas that can acknowledge writes (`WAIT`).
    pub replicas: bool,
}

/// What `check-config --online` and the start-up log report about Redis.
#[derive(Debug, Clone)]
pub struct RedisReport {
    /// `standalone`, `cluster` or `sentinel`.
    pub mode: &'static str,
    /// `redis_version` of the server answering (a master).
    pub version: String,
    /// Whether the masters have replicas (then rotated tokens wait for one).
    pub replicas: bool,
    /// Whether the connections use TLS.
    pub tls: bool,
}

/// The configured deployment, ready to connect (shared by every worker).
pub struct Target {
    kind: TargetKind,
    /// `session.redis_timeout`: connect and response timeout of each node connection.
    timeout: Duration,
    tls: bool,
}

enum TargetKind {
    Standalone(Client),
    /// The cluster client, and one plain client per seed node (pub/sub: a message
    /// published on any node of a cluster reaches the subscribers of every node).
    Cluster(ClusterClient, Vec<Client>),
    Sentinel(SentinelTarget),
}

/// What it takes to build a `SentinelClient` (it is not `Clone`, and each discovery
/// gets a new one so that the sentinels are asked in a fresh random order: one hung
/// sentinel does not block every discovery).
struct SentinelTarget {
    sentinels: Vec<ConnectionAddr>,
    /// The sentinels' own credentials, from their URLs.
    sentinel_auth: (Option<String>, Option<String>),
    master: String,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    certificates: Option<TlsCertificates>,
}

impl Target {
    /// Builds the clients (nothing connects yet). Fails only on settings the
    /// configuration reader would have refused.
    pub fn new(settings: &RedisSettings) -> RedisResult<Target> {
        let certificates = settings.ca.as_ref().map(|ca| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.pem.clone()),
        });
        let username = settings.username.clone();
        let password = settings.password.as_ref().map(|p| p.expose().to_string());
        let kind = match &settings.topology {
            RedisTopology::Standalone { url } => {
                let mut info = url.expose().into_connection_info()?;
                if password.is_some() {
                    info.redis.username = username;
                    info.redis.password = password;
                }
                TargetKind::Standalone(match certificates {
                    Some(certs) => Client::build_with_tls(info, certs)?,
                    None => Client::open(info)?,
                })
            }
            RedisTopology::Cluster { seeds } => {
                let seeds = seeds
                    .iter()
                    .map(|s| s.expose().into_connection_info())
                    .collect::<RedisResult<Vec<ConnectionInfo>>>()?;
                let seed_clients = seeds
                    .iter()
                    .cloned()
                    .map(|mut info| {
                        if password.is_some() {
                            info.redis.username = username.clone();
                            info.redis.password = password.clone();
                        }
                        match &certificates {
                            Some(certs) => Client::build_with_tls(info, certs.clone()),
                            None => Client::open(info),
                        }
                    })
                    .collect::<RedisResult<Vec<Client>>>()?;
                let mut builder = ClusterClientBuilder::new(seeds)
                    .connection_timeout(settings.timeout)
                    .response_timeout(settings.timeout)
                    // Keep retrying (MOVED, CLUSTERDOWN, a failed-over master) with
                    // short waits; the caller's timeout bounds the whole command.
                    .retries(64)
                    .min_retry_wait(20)
                    .max_retry_wait(250)
                    .retry_wait_formula(20, 2);
                if let (Some(u), true) = (username, password.is_some()) {
                    builder = builder.username(u);
                }
                if let Some(p) = password {
                    builder = builder.password(p);
                }
                if let Some(certs) = certificates {
                    builder = builder.certs(certs);
                }
                TargetKind::Cluster(builder.build()?, seed_clients)
            }
            RedisTopology::Sentinel { sentinels, master } => {
                let infos = sentinels
                    .iter()
                    .map(|s| s.expose().into_connection_info())
                    .collect::<RedisResult<Vec<ConnectionInfo>>>()?;
                let first = &infos[0].redis;
                TargetKind::Sentinel(SentinelTarget {
                    sentinel_auth: (first.username.clone(), first.password.clone()),
                    sentinels: infos.into_iter().map(|i| i.addr).collect(),
                    master: master.clone(),
                    tls: settings.topology.tls(),
                    username,
                    password,
                    certificates,
                })
            }
        };
        Ok(Target {
            kind,
            timeout: settings.timeout,
            tls: settings.topology.tls(),
        })
    }

    pub fn mode(&self) -> &'static str {
        match self.kind {
            TargetKind::Standalone(_) => "standalone",
            TargetKind::Cluster(..) => "cluster",
            TargetKind::Sentinel(_) => "sentinel",
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, TargetKind::Cluster(..))
    }

    /// Connects (for Sentinel: discovers the master first) and finds out whether
    /// the data is replicated.
    pub async fn connect(&self) -> RedisResult<Connected> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let connection = match &self.kind {
            TargetKind::Standalone(client) => Connection::Node(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ),
            TargetKind::Sentinel(sentinel) => {
                let master = sentinel.discover_master().await?;
                Connection::Node(
                    master
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            TargetKind::Cluster(client, _) => {
                Connection::Cluster(client.get_async_connection().await?)
            }
        };
        let replicas = has_replicas(&mut connection.clone()).await?;
        Ok(Connected {
            connection,
            replicas,
        })
    }

    /// A pub/sub connection (RESP2) to a node that sees every message published in
    /// the deployment: the server, the master the sentinels name, or the first
    /// cluster seed that answers. Bounded by the timeout, like every connect.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let connect = |client: Client| async move {
            match tokio::time::timeout(self.timeout, client.get_async_pubsub()).await {
                Ok(result) => result,
                Err(_) => Err(RedisError::from((ErrorKind::IoError, "connect timed out"))),
            }
        };
        match &self.kind {
            TargetKind::Standalone(client) => connect(client.clone()).await,
            TargetKind::Sentinel(sentinel) => connect(sentinel.discover_master().await?).await,
            TargetKind::Cluster(_, seeds) => {
                let mut last = RedisError::from((ErrorKind::IoError, "no cluster seed"));
                for seed in seeds {
                    match connect(seed.clone()).await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// Mode, version and replication as seen through `connection`.
    pub async fn report(&self, connection: &Connection) -> RedisResult<RedisReport> {
        let mut c = connection.clone();
        let info: String = one_node(&mut c, redis::cmd("INFO").arg("server")).await?;
        let version = info_field(&info, "redis_version").unwrap_or("unknown");
        Ok(RedisReport {
            mode: self.mode(),
            version: version.to_string(),
            replicas: has_replicas(&mut c).await?,
            tls: self.tls,
        })
    }
}

impl SentinelTarget {
    /// The master's client, as the sentinels name it and `ROLE` confirms.
    async fn discover_master(&self) -> RedisResult<Client> {
        let mut sentinels = self.sentinels.clone();
        use rand::seq::SliceRandom;
        sentinels.shuffle(&mut rand::thread_rng());
        let mut builder =
            SentinelClientBuilder::new(sentinels, self.master.clone(), SentinelServerType::Master)?;
        if let Some(u) = &self.sentinel_auth.0 {
            builder = builder.set_client_to_sentinel_username(u.clone());
        }
        if let Some(p) = &self.sentinel_auth.1 {
            builder = builder.set_client_to_sentinel_password(p.clone());
        }
        if self.tls {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        }
        if let Some(certs) = &self.certificates {
            builder = builder
                .set_client_to_sentinel_certificates(certs.clone())
                .set_client_to_redis_certificates(certs.clone());
        }
        if let Some(p) = &self.password {
            if let Some(u) = &self.username {
                builder = builder.set_client_to_redis_username(u.clone());
            }
            builder = builder.set_client_to_redis_password(p.clone());
        }
        builder.build()?.async_get_client().await
    }
}

/// Runs `cmd` on one node: any node of a cluster (the answer is about the server),
/// the one server otherwise.
async fn one_node<T: redis::FromRedisValue>(c: &mut Connection, cmd: &Cmd) -> RedisResult<T> {
    match c {
        Connection::Node(n) => cmd.query_async(n).await,
        Connection::Cluster(cl) => {
            let value = cl
                .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                .await?;
            redis::from_owned_redis_value(value)
        }
    }
}

/// Whether writes can be acknowledged by a replica: a server with connected
/// replicas, or a cluster whose slot map lists replicas.
async fn has_replicas(c: &mut Connection) -> RedisResult<bool> {
    match c {
        Connection::Node(n) => {
            let info: String = redis::cmd("INFO").arg("replication").query_async(n).await?;
            Ok(info_field(&info, "connected_slaves")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > 0))
        }
        Connection::Cluster(_) => {
            // `CLUSTER NODES`: one line per node, flags third. (`CLUSTER SLOTS` leaves
            // out replicas that have not received data yet.)
            let nodes: String = one_node(c, redis::cmd("CLUSTER").arg("NODES")).await?;
            Ok(nodes.lines().any(|line| {
                let flags = line.split(' ').nth(2).unwrap_or_default();
                flags.split(',').any(|f| f == "slave" || f == "replica") && !flags.contains("fail")
            }))
        }
    }
}

/// `field:value` from an `INFO` answer.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// What went wrong, in words safe for a log line (never a password or a key).
pub fn describe(e: &RedisError) -> String {
    if let Some(tls) = tls_failure(e) {
        return format!("TLS failed: {tls}");
    }
    let code = e.code().unwrap_or("");
    if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
    {
        return "authentication failed (check redis_username / redis_password)".into();
    }
    if e.is_connection_refusal() {
        return "connection refused".into();
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connection_dropped() {
        return "connection lost".into();
    }
    match e.kind() {
        ErrorKind::ClusterDown => "the cluster is down (failover in progress?)".into(),
        ErrorKind::MasterDown => "the master is down (failover in progress?)".into(),
        ErrorKind::ReadOnly => "the server is a replica now (failover)".into(),
        ErrorKind::MasterNameNotFoundBySentinel => {
            "the sentinels name no reachable master (failover in progress?)".into()
        }
        ErrorKind::IoError => format!("I/O error: {}", e.category()),
        other => format!("{other:?}"),
    }
}

/// The rustls error behind `e`, if the TLS handshake failed.
fn tls_failure(e: &RedisError) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(tls.to_string());
            }
        }
        source = err.source();
    }
    None
}
