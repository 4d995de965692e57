//! Child processes for the tests: a private redis-server and the OpenID provider in
//! `tests/op/op.mjs`. Both listen on 127.0.0.1 only and die with the test process: each
//! child holds the read end of a pipe whose write end we keep, and exits on its EOF.
//! Their output goes to `tests/artifacts/logs/`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http_client;

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut given = GIVEN.lock().unwrap();
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub(super) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).is_ok()
}

pub(super) fn wait_port_closed(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while port_open(port) {
        assert!(
            Instant::now() < deadline,
            "{what} still listens on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tests/artifacts/logs/<name>`; the first call of a test run deletes logs older than an hour.
pub(super) fn log_path(name: &str) -> PathBuf {
    static CLEANED: Once = Once::new();
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/artifacts/logs"));
    fs::create_dir_all(&dir).expect("create tests/artifacts/logs");
    CLEANED.call_once(|| {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    });
    dir.join(name)
}

pub(super) fn log_tail(path: &PathBuf) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A running child plus the pipe that keeps it alive.
pub(super) struct Running {
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
}

impl Running {
    /// Closes the lifeline pipe, waits up to 5 s for a clean exit, then kills.
    pub(super) fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Redis

/// A private `redis-server` on 127.0.0.1, with no persistence unless asked.
pub struct RedisServer {
    pub port: u16,
    running: Mutex<Option<Running>>,
    /// Where a persistent server keeps its append-only file.
    data: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a redis-server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    /// Starts a redis-server on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> RedisServer {
        let server = RedisServer {
            port,
            running: Mutex::new(None),
            data: None,
        };
        server.start_again();
        server
    }

    /// Like [`RedisServer::start`], but every write goes to an append-only file
    /// (fsync always), so [`RedisServer::stop`] and `start_again` keep the data.
    pub fn start_persistent() -> RedisServer {
        let server = RedisServer {
            port: free_port(),
            running: Mutex::new(None),
            data: Some(tempfile::tempdir().expect("temp dir for redis data")),
        };
        server.start_again();
        server
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server answers PING right now.
    pub fn is_up(&self) -> bool {
        redis_ping(self.port)
    }

    /// Stops the server (its data is lost unless persistent) and waits until the port
    /// is closed.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().unwrap().take() {
            running.stop();
        }
        wait_port_closed(self.port, "redis-server");
    }

    /// (Re)starts the server on the same port (empty unless persistent) and waits until
    /// it answers PING. Does nothing if it is running.
    pub fn start_again(&self) {
        let mut slot = self.running.lock().unwrap();
        if slot.is_some() {
            return;
        }
        let log = log_path(&format!("redis-{}.log", self.port));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create redis log");
        let persistence: Vec<String> = match &self.data {
            None => ["--save", "", "--appendonly", "no"]
                .map(String::from)
                .to_vec(),
            Some(dir) => vec![
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
                "--dir".into(),
                dir.path().display().to_string(),
            ],
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" & p=$!; read _ignored; kill "$p"; wait "$p""#)
            .arg("sh")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(&persistence)
            .args(["--loglevel", "warning"])
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect(
                "spawn sh for redis-server (is redis-server installed? run scripts/install-deps)",
            );
        let stdin = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_ping(self.port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    log_tail(&log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s:\n{}",
                self.port,
                log_tail(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        *slot = Some(Running { child, stdin });
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().ok().and_then(Option::take) {
            running.stop();
        }
    }
}

pub(super) fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// One redis-server for the whole test binary; tests isolate themselves by key prefix.
pub fn shared_redis() -> &'static RedisServer {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    REDIS.get_or_init(RedisServer::start)
}

// ---------------------------------------------------------------------------------------
// OpenID provider

/// How to start the provider in `tests/op/op.mjs`.
#[derive(Clone, Debug)]
pub struct ProviderOptions {
    /// `ACCESS_TOKEN_TTL`: lifetime of access tokens (opaque and JWT), seconds.
    pub access_token_ttl_secs: u64,
    /// Port to listen on; `None` picks a free one. Pass a port from [`free_port`] to start
    /// the provider after something that must already know its issuer URL.
    pub port: Option<u16>,
    /// `CLIENTS`: a JSON array of static client metadata.
    pub clients_json: Option<String>,
    /// `STATE_FILE`: keep grants, clients and keys across `stop()`/`start_again()`.
    pub state_file: Option<PathBuf>,
    /// `REQUIRE_PAR=1`: every client must push its authorization requests (RFC 9126),
    /// and discovery says `require_pushed_authorization_requests: true`.
    pub require_par: bool,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            access_token_ttl_secs: 300,
            port: None,
            clients_json: None,
            state_file: None,
            require_par: false,
        }
    }
}

/// A confidential client registered at the provider.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: String,
    /// The whole registration response.
    pub metadata: Value,
}

/// The OpenID provider (node-oidc-provider) from `tests/op`, issuer `http://127.0.0.1:<port>`.
pub struct Provider {
    pub port: u16,
    options: ProviderOptions,
    running: Mutex<Option<Running>>,
}

impl Provider {
    /// Spawns `node tests/op/op.mjs` and waits (up to 30 s) for its `listening` line.
    pub fn start(options: ProviderOptions) -> Provider {
        let provider = Provider {
            port: options.port.unwrap_or_else(free_port),
            options,
            running: Mutex::new(None),
        };
        provider.start_again();
        provider
    }

    /// `http://127.0.0.1:<port>`
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `<issuer><path>`
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// Stops the provider (all its state is lost) and waits until the port is closed.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().unwrap().take() {
            running.stop();
        }
        wait_port_closed(self.port, "the OpenID provider");
    }

    /// (Re)starts the provider on the same port with the same options. Does nothing if it
    /// is running. Clients, grants and signing keys of a previous run are gone.
    pub fn start_again(&self) {
        let mut slot = self.running.lock().unwrap();
        if slot.is_some() {
            return;
        }
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/op"));
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "{}/node_modules is missing: run `npm ci --prefix tests/op` (or scripts/install-deps)",
            dir.display()
        );
        let log = log_path(&format!("op-{}.log", self.port));
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("op.mjs"))
            .current_dir(&dir)
            .env("PORT", self.port.to_string())
            .env("ISSUER", self.issuer())
            .env(
                "ACCESS_TOKEN_TTL",
                self.options.access_token_ttl_secs.to_string(),
            )
            .env("BACKCHANNEL_ALLOW_LOOPBACK", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create provider log"));
        if let Some(clients) = &self.options.clients_json {
            cmd.env("CLIENTS", clients);
        }
        if let Some(state) = &self.options.state_file {
            cmd.env("STATE_FILE", state);
        }
        if self.options.require_par {
            cmd.env("REQUIRE_PAR", "1");
        }
        let mut child = cmd
            .spawn()
            .expect("spawn `node` (is Node.js installed and on PATH?)");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();

        // Read stdout until `listening <port>`, then keep draining it so node never blocks.
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        std::thread::spawn(move || {
            let mut seen = String::new();
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if line.starts_with("listening ") {
                    let _ = tx.send(Ok(()));
                    // Keep reading (and dropping) output until node exits.
                    lines.for_each(drop);
                    return;
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            let _ = tx.send(Err(seen));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(stdout)) => {
                let _ = child.kill();
                panic!(
                    "the OpenID provider exited before listening on port {}.\nstdout:\n{stdout}\nstderr ({}):\n{}",
                    self.port,
                    log.display(),
                    log_tail(&log)
                );
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the OpenID provider did not print `listening` within 30 s; stderr:\n{}",
                    log_tail(&log)
                );
            }
        }
        *slot = Some(Running { child, stdin });
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub async fn discovery(&self) -> Value {
        self.get_json("/.well-known/openid-configuration").await
    }

    /// Registers a confidential client (dynamic registration) whose redirect URI is
    /// `<redirect_base>/callback` and post-logout redirect URI `<redirect_base>/`.
    /// `auth_method`: `client_secret_basic`, `client_secret_post` or `private_key_jwt`
    /// (then pass the public `jwks` or a `jwks_uri` in `extra`; there is no secret).
    pub async fn register_client(
        &self,
        redirect_base: &str,
        auth_method: &str,
    ) -> RegisteredClient {
        self.register_client_with(redirect_base, auth_method, json!({}))
            .await
    }

    /// Like [`Provider::register_client`], with `extra` metadata merged over the defaults
    /// (e.g. `{"backchannel_logout_uri": "..."}`).
    pub async fn register_client_with(
        &self,
        redirect_base: &str,
        auth_method: &str,
        extra: Value,
    ) -> RegisteredClient {
        let base = redirect_base.trim_end_matches('/');
        let mut metadata = json!({
            "redirect_uris": [format!("{base}/callback")],
            "post_logout_redirect_uris": [format!("{base}/")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
        });
        if let (Some(m), Value::Object(extra)) = (metadata.as_object_mut(), extra) {
            m.extend(extra);
        }
        let (status, body) = self.send("POST", "/reg", Some(metadata)).await;
        assert_eq!(status, 201, "client registration failed: {body}");
        RegisteredClient {
            client_id: body["client_id"].as_str().expect("client_id").to_owned(),
            client_secret: body["client_secret"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            metadata: body,
        }
    }

    /// Counters from `GET /__test/stats`: `authorization_code` and `refresh_token` (token
    /// requests, successful or not), `token_requests`/`token_success`/`token_error` (maps by
    /// grant type), `refresh_success`, `refresh_error`, `backchannel_success`,
    /// `backchannel_error`, `backchannel_errors` (messages), `requests` (map by path),
    /// `durations_ms` (map by path: total time spent answering, for the benchmark).
    /// `by_client` (client id -> token requests by grant type).
    pub async fn stats(&self) -> Value {
        self.get_json("/__test/stats").await
    }

    /// How many token requests of `grant_type` `client_id` made (successful or not),
    /// as the provider counted them (unaffected by other tests' clients).
    pub async fn token_requests_of(&self, client_id: &str, grant_type: &str) -> u64 {
        self.stats().await["by_client"][client_id][grant_type]
            .as_u64()
            .unwrap_or(0)
    }

    /// Zeroes all counters.
    pub async fn reset_stats(&self) {
        let (status, body) = self.send("POST", "/__test/reset-stats", None).await;
        assert_eq!(status, 200, "reset-stats: {body}");
    }

    /// Destroys every grant of account `sub` with its tokens: its next refresh gets
    /// `invalid_grant`. Returns how many grants were destroyed.
    pub async fn revoke_grants(&self, sub: &str) -> u64 {
        let path = format!("/__test/revoke?{}", super::form_encode(&[("sub", sub)]));
        let (status, body) = self.send("POST", &path, None).await;
        assert_eq!(status, 200, "revoke: {body}");
        body["revoked_grants"].as_u64().unwrap_or(0)
    }

    /// Holds the provider's next `count` answers to `grant_type` token requests for
    /// `ms` after processing them (the tokens are already rotated when the hold starts).
    pub async fn delay_token_answers(&self, grant_type: &str, ms: u64, count: u32) {
        let path = format!(
            "/__test/delay-token?{}",
            super::form_encode(&[
                ("grant_type", grant_type),
                ("ms", &ms.to_string()),
                ("count", &count.to_string()),
            ])
        );
        let (status, body) = self.send("POST", &path, None).await;
        assert_eq!(status, 200, "delay-token: {body}");
    }

    /// From now on the provider demands its DPoP nonce in the proofs of `client_id`'s
    /// token requests (`400 use_dpop_nonce` with a `DPoP-Nonce` without it).
    pub async fn require_dpop_nonce(&self, client_id: &str) {
        let path = format!(
            "/__test/dpop-require-nonce?{}",
            super::form_encode(&[("client_id", client_id)])
        );
        let (status, body) = self.send("POST", &path, None).await;
        assert_eq!(status, 200, "dpop-require-nonce: {body}");
    }

    /// The refresh tokens of account `sub` the provider would still accept (not
    /// revoked, not consumed by rotation, not expired), from its own store.
    pub async fn usable_refresh_tokens(&self, sub: &str) -> Vec<String> {
        let path = format!(
            "/__test/refresh-tokens?{}",
            super::form_encode(&[("sub", sub)])
        );
        let body = self.get_json(&path).await;
        body["active"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.send("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = self.url(path);
        let req = http_client().request(method.parse().unwrap(), &url);
        let res = match body {
            Some(body) => req.send_json(&body).await,
            None => req.send().await,
        };
        let mut res = res.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let bytes = res
            .body()
            .limit(1 << 20)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (res.status().as_u16(), json)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().ok().and_then(Option::take) {
            running.stop();
        }
    }
}

/// One provider for the whole test binary (access tokens live 300 s). Tests register their
/// own clients and use their own user names.
pub fn shared_provider() -> &'static Provider {
    static PROVIDER: OnceLock<Provider> = OnceLock::new();
    PROVIDER.get_or_init(|| Provider::start(ProviderOptions::default()))
}
