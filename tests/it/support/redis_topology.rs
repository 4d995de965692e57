//! Redis deployments for the tests, made of real Debian `redis-server` processes on
//! free 127.0.0.1 ports: a Redis Cluster (3 masters, 3 replicas, `redis-cli
//! --cluster create`), a Sentinel setup (1 master, 1 replica, 3 sentinels run as
//! `redis-server --sentinel`), and a TLS server (CA and certificate made here with
//! the `openssl` CLI) with an ACL user. Like the other children they die with the
//! test process (lifeline pipe), log to `tests/artifacts/logs/`, and keep their
//! files in a temporary directory. Each kind is started once per test binary for
//! the store contract suite ([`shared_cluster`], ...); tests that kill a master
//! start their own.
#![allow(dead_code)]

use super::procs::{free_port, log_path, log_tail, port_open, redis_ping, Running};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it is true, or panics after `timeout` with `what`.
fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A synchronous query to the (non-TLS) server on `port`, with its password if any.
pub fn query<T: redis::FromRedisValue>(
    port: u16,
    password: Option<&str>,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{port}"))?;
    let mut c = client.get_connection_with_timeout(Duration::from_secs(1))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    cmd.query(&mut c)
}

/// `field:value` from an `INFO` answer.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

// ---------------------------------------------------------------------------------------
// One process

/// One `redis-server` process (data node or sentinel) that can be killed with
/// SIGKILL, as a crashing machine would be, and started again.
pub struct RedisNode {
    pub port: u16,
    name: String,
    args: Vec<String>,
    /// Whether the port speaks plain RESP (not TLS).
    plain: bool,
    /// The `requirepass` password, if any.
    password: Option<String>,
    pid_file: PathBuf,
    running: Mutex<Option<Running>>,
}

impl RedisNode {
    /// Starts `redis-server <args>` (which must make it listen on `port`) and waits
    /// until it answers.
    fn start(
        name: &str,
        port: u16,
        args: Vec<String>,
        plain: bool,
        password: Option<&str>,
        dir: &Path,
    ) -> RedisNode {
        let node = RedisNode {
            port,
            name: name.to_string(),
            args,
            plain,
            password: password.map(String::from),
            pid_file: dir.join(format!("{name}-{port}.pid")),
            running: Mutex::new(None),
        };
        node.start_again();
        node
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }

    /// (Re)starts the process with the same arguments; does nothing if it runs.
    pub fn start_again(&self) {
        let mut slot = self.running.lock().unwrap();
        if slot.is_some() {
            return;
        }
        let log = log_path(&format!("redis-{}-{}.log", self.name, self.port));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("redis log");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" & p=$!; echo "$p" > "$PID_FILE"; read _ignored; kill "$p" 2>/dev/null; wait "$p""#)
            .arg("sh")
            .args(&self.args)
            .env("PID_FILE", &self.pid_file)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn sh for redis-server (run scripts/install-deps)");
        let stdin = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = |port| match (self.plain, &self.password) {
            (true, None) => redis_ping(port),
            (true, Some(_)) => self.query::<String>(&redis::cmd("PING")).is_ok(),
            (false, _) => port_open(port),
        };
        while !ready(self.port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} on port {} exited ({status}):\n{}",
                    self.name,
                    self.port,
                    log_tail(&log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} on port {} did not start within 10 s:\n{}",
                self.name,
                self.port,
                log_tail(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        *slot = Some(Running { child, stdin });
    }

    /// SIGKILL: the server dies at once, without saving or saying goodbye.
    pub fn kill9(&self) {
        let pid = fs::read_to_string(&self.pid_file).expect("pid file");
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -9 {} failed", pid.trim());
        if let Some(running) = self.running.lock().unwrap().take() {
            running.stop(); // the wrapper shell exits once its lifeline closes
        }
        wait_for(
            Duration::from_secs(5),
            "a killed server's port to close",
            || !port_open(self.port),
        );
    }

    /// A synchronous query to this (non-TLS) node, authenticated.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        query(self.port, self.password.as_deref(), cmd)
    }

    fn info(&self, section: &str) -> String {
        self.query(redis::cmd("INFO").arg(section))
            .unwrap_or_default()
    }

    /// `ROLE`'s first element: `master`, `slave` or `sentinel` (`None` when down).
    pub fn role(&self) -> Option<String> {
        let role: redis::Value = self.query(&redis::cmd("ROLE")).ok()?;
        match role {
            redis::Value::Array(parts) => redis::from_redis_value(parts.first()?).ok(),
            _ => None,
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().ok().and_then(Option::take) {
            running.stop();
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Redis Cluster

/// The password of every cluster node (`requirepass`, `masterauth`): spa-bff gives it
/// as `redis_password`, so the same credentials reach every node it discovers.
pub const CLUSTER_PASSWORD: &str = "cluster-password-for-tests-only";

/// Three masters with one replica each, `cluster-node-timeout` as given, every node
/// behind [`CLUSTER_PASSWORD`].
pub struct Cluster {
    pub nodes: Vec<RedisNode>,
    dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(node_timeout: Duration) -> Cluster {
        let dir = tempfile::tempdir().expect("cluster dir");
        let nodes: Vec<RedisNode> = (0..6)
            .map(|_| {
                let port = free_port();
                let mut args = strings(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
                args.extend(strings(&[
                    "--cluster-enabled",
                    "yes",
                    // The bus port is port + 10000 unless given: it may be taken.
                    "--cluster-port",
                    &free_port().to_string(),
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    &node_timeout.as_millis().to_string(),
                    "--dir",
                    &dir.path().display().to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--loglevel",
                    "notice",
                    "--requirepass",
                    CLUSTER_PASSWORD,
                    "--masterauth",
                    CLUSTER_PASSWORD,
                ]));
                RedisNode::start(
                    "cluster",
                    port,
                    args,
                    true,
                    Some(CLUSTER_PASSWORD),
                    dir.path(),
                )
            })
            .collect();
        let log = log_path(&format!("redis-cluster-create-{}.log", nodes[0].port));
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(RedisNode::addr))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .env("REDISCLI_AUTH", CLUSTER_PASSWORD)
            .output()
            .expect("redis-cli --cluster create");
        fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat()).unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}",
            log_tail(&log)
        );
        let cluster = Cluster { nodes, dir };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Every running node says `cluster_state:ok` and every replica has its master link.
    pub fn wait_healthy(&self, timeout: Duration) {
        wait_for(timeout, "the cluster to be ok with synced replicas", || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let state: String = n
                    .query(redis::cmd("CLUSTER").arg("INFO"))
                    .unwrap_or_default();
                let replication = n.info("replication");
                info_field(&state, "cluster_state").as_deref() == Some("ok")
                    && match info_field(&replication, "role").as_deref() {
                        Some("slave") => {
                            info_field(&replication, "master_link_status").as_deref() == Some("up")
                        }
                        Some("master") => true,
                        _ => false,
                    }
            })
        });
    }

    /// Seed URLs for spa-bff: the first three nodes (the rest is discovered).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes[..3].iter().map(RedisNode::url).collect()
    }

    /// `[session]` lines pointing spa-bff at this cluster.
    pub fn session_toml(&self) -> String {
        let urls: Vec<String> = self.seed_urls().iter().map(|u| format!("{u:?}")).collect();
        format!(
            "redis_cluster_urls = [{}]\nredis_password = \"{CLUSTER_PASSWORD}\"",
            urls.join(", ")
        )
    }

    /// The running masters.
    pub fn masters(&self) -> Vec<&RedisNode> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && n.role().as_deref() == Some("master"))
            .collect()
    }

    /// Keys matching `pattern` on `node` (each master holds its own slots).
    pub fn keys_on(&self, node: &RedisNode, pattern: &str) -> usize {
        node.query::<Vec<String>>(redis::cmd("KEYS").arg(pattern))
            .map(|k| k.len())
            .unwrap_or(0)
    }
}

/// One cluster for the whole test binary (node timeout 2 s); never failed over.
pub fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(Duration::from_secs(2)))
}

// ---------------------------------------------------------------------------------------
// Sentinel

pub const SENTINEL_MASTER: &str = "mymaster";
/// The data nodes' password (spa-bff: `redis_password`).
pub const SENTINEL_DATA_PASSWORD: &str = "sentinel-data-password-for-tests";
/// The sentinels' own password (spa-bff: in the sentinel URLs).
pub const SENTINEL_PASSWORD: &str = "sentinel-password-for-tests";

/// One master, one replica, three sentinels (quorum 2, `down-after-milliseconds`
/// 1000, `failover-timeout` 3000). The data nodes and the sentinels have passwords
/// of their own.
pub struct Sentinel {
    pub master: RedisNode,
    pub replica: RedisNode,
    pub sentinels: Vec<RedisNode>,
    dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn start() -> Sentinel {
        let dir = tempfile::tempdir().expect("sentinel dir");
        let data = |port: u16| {
            strings(&[
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.path().display().to_string(),
                "--loglevel",
                "notice",
                "--requirepass",
                SENTINEL_DATA_PASSWORD,
                "--masterauth",
                SENTINEL_DATA_PASSWORD,
                // DEBUG SLEEP stalls the replica in a test.
                "--enable-debug-command",
                "local",
            ])
        };
        let master_port = free_port();
        let master = RedisNode::start(
            "sentinel-master",
            master_port,
            data(master_port),
            true,
            Some(SENTINEL_DATA_PASSWORD),
            dir.path(),
        );
        let replica_port = free_port();
        let mut replica_args = data(replica_port);
        replica_args.extend(strings(&[
            "--replicaof",
            "127.0.0.1",
            &master_port.to_string(),
        ]));
        let replica = RedisNode::start(
            "sentinel-replica",
            replica_port,
            replica_args,
            true,
            Some(SENTINEL_DATA_PASSWORD),
            dir.path(),
        );
        wait_for(Duration::from_secs(20), "the replica to sync", || {
            info_field(&replica.info("replication"), "master_link_status").as_deref() == Some("up")
        });
        let sentinels: Vec<RedisNode> = (0..3)
            .map(|_| {
                let port = free_port();
                let conf = dir.path().join(format!("sentinel-{port}.conf"));
                fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\nloglevel notice\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 3000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n\
                         sentinel auth-pass {SENTINEL_MASTER} {SENTINEL_DATA_PASSWORD}\n\
                         requirepass {SENTINEL_PASSWORD}\n\
                         sentinel sentinel-pass {SENTINEL_PASSWORD}\n",
                        dir = dir.path().display()
                    ),
                )
                .unwrap();
                let args = vec![conf.display().to_string(), "--sentinel".into()];
                RedisNode::start(
                    "sentinel",
                    port,
                    args,
                    true,
                    Some(SENTINEL_PASSWORD),
                    dir.path(),
                )
            })
            .collect();
        let setup = Sentinel {
            master,
            replica,
            sentinels,
            dir,
        };
        setup.wait_ready(Duration::from_secs(30));
        setup
    }

    /// Every sentinel knows the replica and the two other sentinels (so a failover
    /// can be agreed on).
    pub fn wait_ready(&self, timeout: Duration) {
        wait_for(
            timeout,
            "the sentinels to know each other and the replica",
            || {
                self.sentinels.iter().all(|s| {
                    let replicas: Vec<HashMap<String, String>> = s
                        .query(redis::cmd("SENTINEL").arg("REPLICAS").arg(SENTINEL_MASTER))
                        .unwrap_or_default();
                    let others: Vec<HashMap<String, String>> = s
                        .query(redis::cmd("SENTINEL").arg("SENTINELS").arg(SENTINEL_MASTER))
                        .unwrap_or_default();
                    replicas.len() == 1 && others.len() == 2
                })
            },
        );
    }

    /// `[session]` lines pointing spa-bff at these sentinels: their password in
    /// their URLs, the data nodes' as `redis_password`.
    pub fn session_toml(&self) -> String {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"redis://:{SENTINEL_PASSWORD}@127.0.0.1:{}\"", s.port))
            .collect();
        format!(
            "redis_sentinel_urls = [{}]\nredis_sentinel_master = \"{SENTINEL_MASTER}\"\n\
             redis_password = \"{SENTINEL_DATA_PASSWORD}\"",
            urls.join(", ")
        )
    }

    /// The port of the master the sentinels name now.
    pub fn current_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let addr: Vec<String> = s
                .query(
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(SENTINEL_MASTER),
                )
                .ok()?;
            addr.get(1)?.parse().ok()
        })
    }
}

/// One Sentinel setup for the whole test binary; never failed over.
pub fn shared_sentinel() -> &'static Sentinel {
    static SENTINEL: OnceLock<Sentinel> = OnceLock::new();
    SENTINEL.get_or_init(Sentinel::start)
}

// ---------------------------------------------------------------------------------------
// TLS with an ACL user

pub const ACL_USER: &str = "spa-bff";
pub const ACL_PASSWORD: &str = "acl-password-for-tests-only";

/// A `redis-server` that speaks TLS only (`--port 0 --tls-port`), with a
/// certificate for 127.0.0.1 from a CA made here, the `default` user disabled and
/// one ACL user ([`ACL_USER`] / [`ACL_PASSWORD`]).
pub struct TlsRedis {
    pub node: RedisNode,
    /// The CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// Another CA, which did not.
    pub foreign_ca_file: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    pub fn start() -> TlsRedis {
        let dir = tempfile::tempdir().expect("tls dir");
        let d = dir.path();
        make_ca(d, "ca", "spa-bff test CA");
        make_ca(d, "foreign-ca", "another CA");
        fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        let port = free_port();
        let file = |name: &str| d.join(name).display().to_string();
        let args = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            file("server.crt"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
            "--user".into(),
            "default".into(),
            "off".into(),
            "--user".into(),
            ACL_USER.into(),
            "on".into(),
            format!(">{ACL_PASSWORD}"),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            file(""),
        ];
        let node = RedisNode::start("tls", port, args, false, None, d);
        TlsRedis {
            node,
            ca_file: d.join("ca.crt"),
            foreign_ca_file: d.join("foreign-ca.crt"),
            dir,
        }
    }

    /// `rediss://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.node.port)
    }

    /// `[session]` lines: this server, the ACL user with `password`, trusting `ca`.
    pub fn session_toml(&self, password: &str, ca: &Path) -> String {
        format!(
            "redis_url = {:?}\nredis_username = \"{ACL_USER}\"\nredis_password = {password:?}\nredis_ca_file = {:?}",
            self.url(),
            ca.display().to_string()
        )
    }
}

fn make_ca(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={subject}"),
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (is it installed?)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One TLS + ACL server for the whole test binary.
pub fn shared_tls_redis() -> &'static TlsRedis {
    static TLS: OnceLock<TlsRedis> = OnceLock::new();
    TLS.get_or_init(TlsRedis::start)
}
