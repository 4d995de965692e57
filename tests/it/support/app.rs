//! Spawning spa-bff itself for a test: a real server on a free port, against the
//! shared (or a dedicated) Redis and provider, isolated by a random key prefix.
#![allow(dead_code)]

use crate::support::{self, Browser, Provider, RegisteredClient, Resp};
use actix_web::dev::ServerHandle;
use spa_bff::app::{App, Shutdown};
use spa_bff::config::{RedisTopology, Settings};
use spa_bff::session::{CookieCodec, SessionRecord, SessionRef};
use spa_bff::store::keys::Keys;
use std::net::TcpListener;
use std::time::Duration;

pub const TEST_COOKIE_KEY: &str = "dGVzdC1vbmx5LWNvb2tpZS1rZXktMDEyMzQ1Njc4OWFi"; // test-only

/// How to configure one spa-bff under test.
#[derive(Clone)]
pub struct AppOptions {
    pub redis_url: String,
    /// `[session]` lines saying where Redis is, instead of `redis_url` (a cluster,
    /// sentinels, credentials, a CA).
    pub redis_config: Option<String>,
    pub issuer: String,
    pub client_auth: &'static str,
    pub idle_timeout: &'static str,
    pub absolute_timeout: &'static str,
    /// `false`: public_url is https and cookies are `__Host-`/`Secure` (we still
    /// talk plain http to the listener, as a TLS-terminating proxy would).
    pub insecure_cookies: bool,
    pub static_dir: Option<String>,
    /// More `[oidc]` keys (e.g. `client_key_file`, `use_par`, `scopes`, `auth_params`).
    pub oidc_toml: String,
    pub extra_toml: String,
    /// More `[server]` keys (the edge limits). The default lifts the login rate limit:
    /// every test browser logs in from 127.0.0.1 (tests of the limit set their own).
    pub server_toml: String,
    /// Register a client at the provider (off for a provider that is not up yet).
    pub register: bool,
    /// Use this client instead of registering one (a provider's static client).
    pub client: Option<RegisteredClient>,
    /// Listen on this port (when the provider must know the redirect URI first).
    pub port: Option<u16>,
    /// Extra client metadata for the registration (e.g. `backchannel_logout_uri`);
    /// `{base}` in a string value is replaced by the app's public URL.
    pub registration: serde_json::Value,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            redis_url: support::shared_redis().url(),
            issuer: support::shared_provider().issuer(),
            register: true,
            ..Self::default_offline()
        }
    }
}

impl AppOptions {
    /// Defaults that start no Redis and no provider (for config-only tests).
    pub fn default_offline() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_config: None,
            issuer: "https://id.example.com".into(),
            client_auth: "client_secret_basic",
            idle_timeout: "30m",
            absolute_timeout: "12h",
            insecure_cookies: true,
            static_dir: None,
            oidc_toml: String::new(),
            extra_toml: String::new(),
            server_toml: "login_rate_limit = 100000\nlogin_rate_burst = 100000\n".into(),
            register: false,
            client: None,
            port: None,
            registration: serde_json::Value::Null,
        }
    }
}

/// A running spa-bff.
pub struct TestApp {
    /// Where tests send requests: `http://127.0.0.1:<port>`.
    pub url: String,
    /// What the app believes its public origin is.
    pub public_url: String,
    pub prefix: String,
    pub settings_toml: String,
    pub client: RegisteredClient,
    pub handle: ServerHandle,
    /// Shuts the app down as SIGTERM does (readiness first, then the listener).
    pub shutdown: Shutdown,
    pub cookie_name: String,
    /// The `/metrics`-only listener's port, when `server.metrics_listen` is set.
    pub metrics_port: Option<u16>,
}

impl TestApp {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The URL of the standalone Redis this app uses (tests that read Redis directly).
    pub fn redis_url(&self) -> String {
        let RedisTopology::Standalone { url } = self.settings().session.redis.topology else {
            panic!("this test reads a standalone Redis only");
        };
        url.expose().to_string()
    }

    pub fn settings(&self) -> Settings {
        Settings::from_toml_str(&self.settings_toml).expect("valid test settings")
    }

    /// Starts another spa-bff with the same settings (same Redis, prefix and keys).
    pub async fn start_twin(&self) -> TestApp {
        self.start_variant(self.settings_toml.clone()).await
    }

    /// Starts another spa-bff on the same Redis, prefix and keys, with the settings
    /// `toml` (this app's, changed: a redeployment).
    pub async fn start_variant(&self, toml: String) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let settings = Settings::from_toml_str(&toml).expect("valid test settings");
        let app = App::build_with_listener(settings, listener).expect("build app");
        let handle = app.handle();
        let shutdown = app.shutdown();
        let metrics_port = app.metrics_port();
        actix_web::rt::spawn(app.run());
        let twin = TestApp {
            metrics_port,
            shutdown,
            url: format!("http://127.0.0.1:{port}"),
            public_url: self.public_url.clone(),
            prefix: self.prefix.clone(),
            settings_toml: toml,
            client: self.client.clone(),
            handle,
            cookie_name: self.cookie_name.clone(),
        };
        twin.wait_ready().await;
        twin
    }

    pub async fn readyz(&self) -> Resp {
        Browser::new().get(&self.at("/readyz")).await
    }

    pub async fn wait_ready(&self) {
        support::eventually(Duration::from_secs(20), "spa-bff /readyz = 200", || async {
            (self.readyz().await.status == 200).then_some(())
        })
        .await;
    }

    /// The whole login as a browser does it; returns the response of /callback.
    pub async fn login(&self, browser: &Browser, user: &str, return_to: &str) -> Resp {
        let start = self.start_login(browser, return_to).await;
        let callback = browser.provider_login(&start, user).await;
        browser.get(&self.local(&callback)).await
    }

    /// GET /login; returns the provider authorize URL it redirects to.
    pub async fn start_login(&self, browser: &Browser, return_to: &str) -> String {
        let url = support::with_query(&self.at("/login"), &[("returnTo", return_to)]);
        let res = browser.get(&url).await;
        assert_eq!(res.status, 302, "GET /login: {}", res.text());
        res.location().expect("Location").to_string()
    }

    /// A URL on the public origin, rewritten to the local listener.
    pub fn local(&self, url: &str) -> String {
        url.replacen(&self.public_url, &self.url, 1)
    }

    /// The session cookie this browser holds, if any.
    pub fn session_cookie(&self, browser: &Browser) -> Option<String> {
        browser.cookie(&self.url, &self.cookie_name)
    }

    pub async fn user(&self, browser: &Browser) -> Resp {
        browser
            .get_with(&self.at("/user"), &[("accept", "application/json")])
            .await
    }
}

/// Builds the settings file of a test app.
pub fn settings_toml(
    opts: &AppOptions,
    public_url: &str,
    prefix: &str,
    client: &RegisteredClient,
) -> String {
    let static_dir = opts
        .static_dir
        .as_ref()
        .map(|d| format!("static_dir = {d:?}\n"))
        .unwrap_or_default();
    let redis = opts
        .redis_config
        .clone()
        .unwrap_or_else(|| format!("redis_url = {:?}", opts.redis_url));
    // private_key_jwt clients have no secret (spa-bff refuses one then).
    let client_secret = match opts.client_auth {
        "private_key_jwt" => String::new(),
        _ => format!("client_secret = \"{}\"\n", client.client_secret),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "{public_url}"
workers = 2
{static_dir}{server}
[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
{client_secret}client_auth = "{client_auth}"
http_timeout = "3s"
{oidc}
[session]
{redis}
key_prefix = "{prefix}"
cookie_keys = ["{TEST_COOKIE_KEY}"]
idle_timeout = "{idle}"
absolute_timeout = "{absolute}"
insecure_cookies = {insecure}
redis_timeout = "1s"
{extra}
"#,
        issuer = opts.issuer,
        client_id = client.client_id,
        client_auth = opts.client_auth,
        idle = opts.idle_timeout,
        absolute = opts.absolute_timeout,
        insecure = opts.insecure_cookies,
        extra = opts.extra_toml,
        oidc = opts.oidc_toml,
        server = opts.server_toml,
    )
}

/// Starts spa-bff on a free port against the shared provider (or `opts.issuer`).
pub async fn spawn_app(opts: AppOptions) -> TestApp {
    spawn_app_with(opts, support::shared_provider()).await
}

pub async fn spawn_app_with(opts: AppOptions, provider: &Provider) -> TestApp {
    support::init();
    let listener = TcpListener::bind(("127.0.0.1", opts.port.unwrap_or(0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let public_url = if opts.insecure_cookies {
        url.clone()
    } else {
        format!("https://127.0.0.1:{port}")
    };
    let client = if let Some(c) = opts.client.clone() {
        c
    } else if opts.register {
        let extra = serde_json::to_string(&opts.registration)
            .unwrap()
            .replace("{base}", &public_url);
        let extra = match serde_json::from_str(&extra).unwrap() {
            serde_json::Value::Null => serde_json::json!({}),
            v => v,
        };
        provider
            .register_client_with(&public_url, opts.client_auth, extra)
            .await
    } else {
        RegisteredClient {
            client_id: "not-registered".into(),
            client_secret: "not-registered".into(),
            metadata: serde_json::Value::Null,
        }
    };
    let prefix = format!("t{}:", support::random_string(6));
    let toml = settings_toml(&opts, &public_url, &prefix, &client);
    let settings = Settings::from_toml_str(&toml).expect("valid test settings");
    let cookie_name = settings.session.cookie_name.clone();
    let app = App::build_with_listener(settings, listener).expect("build app");
    let handle = app.handle();
    let shutdown = app.shutdown();
    let metrics_port = app.metrics_port();
    actix_web::rt::spawn(app.run());
    let app = TestApp {
        metrics_port,
        shutdown,
        url,
        public_url,
        prefix,
        settings_toml: toml,
        client,
        handle,
        cookie_name,
    };
    if opts.register || opts.client.is_some() {
        app.wait_ready().await;
    }
    app
}

/// Every value stored under `prefix` in Redis, as raw bytes (hash fields included).
pub async fn redis_dump(redis_url: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        match kind.as_str() {
            "hash" => {
                let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                for (f, v) in fields {
                    out.push((format!("{key}#{f}"), v));
                }
            }
            "string" => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                out.push((key, v));
            }
            other => out.push((key, other.as_bytes().to_vec())),
        }
    }
    out
}

/// Decrypts this browser's session from Redis the way spa-bff does (test-only use
/// of the library), so tests can name the real tokens.
pub async fn stored_record(app: &TestApp, browser: &Browser) -> SessionRecord {
    let settings = app.settings();
    let codec = CookieCodec::new(&settings.session);
    let value = app.session_cookie(browser).expect("session cookie");
    let req = actix_web::test::TestRequest::default()
        .cookie(actix_web::cookie::Cookie::new(
            app.cookie_name.clone(),
            value,
        ))
        .to_http_request();
    let reference: SessionRef = codec.read_session(&req).expect("cookie decrypts");
    let client = redis::Client::open(app.redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = Keys::new(&app.prefix).session(reference.storage_id());
    let blob: Vec<u8> = redis::cmd("HGET")
        .arg(&key)
        .arg("data")
        .query_async(&mut c)
        .await
        .unwrap();
    let plain = reference
        .open(&blob)
        .expect("record decrypts with the cookie's secret");
    serde_json::from_slice(&plain).unwrap()
}
