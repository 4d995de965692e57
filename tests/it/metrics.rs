//! Issue 10: `GET /metrics`. Real spa-bff, real Redis, the real provider (or the small
//! fake one where it must misbehave), a real upstream; every assertion reads the
//! Prometheus text spa-bff serves, parsed here.

use crate::support::app::{spawn_app, AppOptions, TestApp};
use crate::support::fake_op::*;
use crate::support::upstream::Upstream;
use crate::support::{self, Browser, RedisServer};
use crate::support::{api, sleep_ms};
use futures_util::future::join_all;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const CSRF: (&str, &str) = ("x-csrf", "1");

/// One scrape: `name{label="value",...}` (labels sorted) -> value.
pub(crate) struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let key = match series.split_once('{') {
                None => series.to_string(),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("closing brace");
                    let mut pairs: Vec<&str> = labels.split(',').collect();
                    pairs.sort();
                    format!("{name}{{{}}}", pairs.join(","))
                }
            };
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(samples.insert(key, value).is_none(), "twice: {line}");
        }
        Scrape { text, samples }
    }

    /// The value of `name` with exactly these labels; 0 when the series is absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .get(&Self::key(name, labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.contains_key(&Self::key(name, labels))
    }

    fn key(name: &str, labels: &[(&str, &str)]) -> String {
        if labels.is_empty() {
            return name.to_string();
        }
        let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        pairs.sort();
        format!("{name}{{{}}}", pairs.join(","))
    }

    /// Every value the label `label` takes in any series.
    fn label_values(&self, label: &str) -> Vec<String> {
        let needle = format!("{label}=\"");
        let mut values: Vec<String> = self
            .samples
            .keys()
            .flat_map(|k| {
                k.match_indices(&needle)
                    .map(|(i, _)| &k[i + needle.len()..])
            })
            .map(|rest| rest[..rest.find('"').unwrap()].to_string())
            .collect();
        values.sort();
        values.dedup();
        values
    }

    pub(crate) fn refreshes(&self, outcome: &str) -> f64 {
        self.get("spa_bff_refreshes_total", &[("outcome", outcome)])
    }

    fn ended(&self, reason: &str) -> f64 {
        self.get("spa_bff_sessions_ended_total", &[("reason", reason)])
    }

    fn requests(&self, route: &str, class: &str) -> f64 {
        self.get(
            "spa_bff_http_requests_total",
            &[("route", route), ("status_class", class)],
        )
    }
}

async fn scrape_url(url: &str) -> Scrape {
    let res = Browser::new().get(url).await;
    assert_eq!(res.status, 200, "GET {url}: {}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        res.header("content-type")
    );
    Scrape::parse(res.text())
}

pub(crate) async fn scrape(app: &TestApp) -> Scrape {
    scrape_url(&app.at("/metrics")).await
}

fn route_to(upstream: &Upstream) -> String {
    format!(
        "[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
        upstream.url
    )
}

#[actix_web::test]
async fn requests_are_counted_by_endpoint_route_prefix_or_static_never_by_raw_path() {
    let upstream = Upstream::start();
    let spa = tempfile::tempdir().unwrap();
    std::fs::write(spa.path().join("index.html"), "<!doctype html><p>spa</p>").unwrap();
    let app = spawn_app(AppOptions {
        static_dir: Some(spa.path().to_string_lossy().into_owned()),
        extra_toml: route_to(&upstream),
        ..AppOptions::default()
    })
    .await;
    let before = scrape(&app).await;
    assert_eq!(before.requests("/api", "2xx"), 0.0);
    assert!(before.has(
        "spa_bff_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("profile", "debug")]
    ));

    let browser = Browser::new();
    assert_eq!(app.login(&browser, "mia", "/").await.status, 302);
    assert_eq!(app.user(&browser).await.status, 200);
    for path in [
        "/api/some/random/123",
        "/api/some/random/456?q=secret-looking",
        "/api/orders/7",
    ] {
        assert_eq!(api(&browser, &app, path).await.status, 201, "{path}");
    }
    let page = [("accept", "text/html")];
    assert_eq!(
        browser.get_with(&app.at("/orders/42"), &page).await.status,
        200
    );
    assert_eq!(browser.get(&app.at("/wp-login.php")).await.status, 404);
    assert_eq!(browser.get(&app.at("/random-scan-789")).await.status, 404);

    let after = scrape(&app).await;
    assert_eq!(after.requests("/api", "2xx"), 3.0);
    assert_eq!(after.requests("/user", "2xx"), 1.0);
    assert_eq!(after.requests("/login", "3xx"), 1.0);
    assert_eq!(after.requests("/callback", "3xx"), 1.0);
    assert_eq!(after.requests("static", "2xx"), 1.0);
    assert_eq!(after.requests("other", "4xx"), 2.0);
    assert_eq!(
        after.requests("/metrics", "2xx"),
        1.0,
        "the first scrape, counted once it was answered"
    );
    assert_eq!(
        after.get(
            "spa_bff_upstream_request_duration_seconds_count",
            &[("route", "/api")]
        ),
        3.0,
        "upstream latency is its own histogram"
    );
    assert_eq!(
        after.get(
            "spa_bff_http_request_duration_seconds_count",
            &[("route", "/api")]
        ),
        3.0
    );
    assert_eq!(
        after.get("spa_bff_in_flight_requests", &[]),
        1.0,
        "the scrape itself is in flight"
    );
    assert!(after.get("spa_bff_redis_command_duration_seconds_count", &[]) >= 3.0);
    assert_eq!(after.get("spa_bff_logins_total", &[("outcome", "ok")]), 1.0);
    assert_eq!(after.get("spa_bff_sessions_created_total", &[]), 1.0);
    // Labels come from a fixed set: never a raw path, a query or a user.
    let mut routes = after.label_values("route");
    routes.sort();
    assert_eq!(
        routes,
        [
            "/api",
            "/callback",
            "/login",
            "/metrics",
            "/readyz",
            "/user",
            "other",
            "static"
        ]
    );
    for leak in [
        "random",
        "secret-looking",
        "orders",
        "wp-login",
        "scan",
        "mia",
    ] {
        assert!(!after.text.contains(leak), "{leak} in the metrics");
    }

    // A forged callback is a failed login, by its error code; logout ends the session.
    let forged = support::with_query(&app.at("/callback"), &[("state", "forged"), ("code", "x")]);
    assert_eq!(browser.get(&forged).await.status, 400);
    let res = browser
        .request("POST", &app.at("/logout"), &[CSRF], Vec::new())
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let last = scrape(&app).await;
    assert_eq!(
        last.get("spa_bff_logins_total", &[("outcome", "invalid_state")]),
        1.0
    );
    assert_eq!(last.ended("logout"), 1.0);
    assert_eq!(last.requests("/callback", "4xx"), 1.0);
}

#[actix_web::test]
async fn refreshes_are_counted_ok_invalid_grant_provider_error_and_lock_wait() {
    let upstream = Upstream::start();
    // Access tokens live 3 s and are refreshed within 2 s of their expiry.
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: format!("[proxy]\nrefresh_skew = \"2s\"\n{}", route_to(&upstream)),
            ..AppOptions::default()
        },
        |s| s.expires_in = 3,
    )
    .await;
    let (storm, refused, failing) = (
        fake_login(&app).await,
        fake_login(&app).await,
        fake_login(&app).await,
    );
    sleep_ms(1200).await; // every token is due now

    // Five calls at once while the provider takes 400 ms: one refresh, four waits.
    fake.lock().unwrap().refresh_delay = Duration::from_millis(400);
    let results = join_all((0..5).map(|i| {
        let (storm, app) = (&storm, &app);
        async move { api(storm, app, &format!("/api/storm/{i}")).await.status }
    }))
    .await;
    assert_eq!(results, [201; 5]);
    assert_eq!(calls(&fake, "/token refresh_token"), 1);
    let m = scrape(&app).await;
    assert_eq!((m.refreshes("ok"), m.refreshes("lock_wait")), (1.0, 4.0));

    fake.lock().unwrap().refresh_delay = Duration::ZERO;
    fake.lock().unwrap().refresh = RefreshAnswer::InvalidGrant;
    assert_eq!(api(&refused, &app, "/api/a").await.status, 401);
    fake.lock().unwrap().refresh = RefreshAnswer::Bare(502);
    assert_eq!(api(&failing, &app, "/api/b").await.status, 503);
    assert_eq!(
        app.user(&failing).await.status,
        200,
        "a provider error keeps the session"
    );

    let m = scrape(&app).await;
    assert_eq!(m.refreshes("ok"), 1.0);
    assert_eq!(m.refreshes("lock_wait"), 4.0);
    assert_eq!(m.refreshes("invalid_grant"), 1.0);
    assert_eq!(m.refreshes("provider_error"), 1.0);
    assert_eq!(m.ended("refresh_refused"), 1.0);
    assert_eq!(m.get("spa_bff_sessions_created_total", &[]), 3.0);
    assert_eq!(m.requests("/api", "4xx"), 1.0);
    assert_eq!(m.requests("/api", "5xx"), 1.0);
}

#[actix_web::test]
async fn sessions_ended_are_counted_by_back_channel_idle_absolute_and_replacement() {
    // Idle 2 s, absolute 4 s.
    let (fake, issuer, app) = app_on_fake_op_with(
        AppOptions {
            idle_timeout: "2s",
            absolute_timeout: "4s",
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;

    // Back-channel: the provider ends its session, and with it ours.
    let browser = fake_login(&app).await;
    let sid = fake.lock().unwrap().sid.clone();
    let claims = json!({
        "iss": issuer, "aud": CLIENT_ID, "iat": now(), "jti": support::random_string(8),
        "sid": sid, "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let token = sign_jwt(&claims, KEY_PEM, KID, "logout+jwt");
    assert_eq!(send_logout_token(&browser, &app, &token).await.status, 200);
    assert_eq!(app.user(&browser).await.status, 401);

    // Replacement: logging in again in a browser that has a session ends that one.
    let replaced = fake_login(&app).await;
    let authorize = app.start_login(&replaced, "/").await;
    let callback = replaced.get(&authorize).await;
    let res = replaced.get(&app.local(callback.location().unwrap())).await;
    assert_eq!(res.status, 302);

    // Absolute: active every second, then its cookie is sent after 4 s (a browser
    // whose clock is behind keeps it past its Max-Age).
    let absolute = fake_login(&app).await;
    // Idle: quiet for longer than 2 s, then the browser comes back.
    let idle = fake_login(&app).await;
    let cookie = format!(
        "{}={}",
        app.cookie_name,
        app.session_cookie(&absolute).unwrap()
    );
    for _ in 0..3 {
        sleep_ms(1000).await;
        assert_eq!(app.user(&absolute).await.status, 200);
    }
    assert_eq!(app.user(&idle).await.status, 401, "idle for 3 s");
    sleep_ms(1200).await;
    let late = || async {
        support::http_client()
            .get(app.at("/user"))
            .insert_header(("cookie", cookie.as_str()))
            .insert_header(("accept", "application/json"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(late().await, 401, "past the absolute timeout");

    let m = scrape(&app).await;
    assert_eq!(m.ended("back_channel"), 1.0);
    assert_eq!(m.ended("replaced"), 1.0);
    assert_eq!(m.ended("idle"), 1.0);
    assert_eq!(m.ended("absolute"), 1.0);
    assert_eq!(m.ended("logout"), 0.0);
    assert_eq!(m.get("spa_bff_sessions_created_total", &[]), 5.0);
    assert_eq!(m.get("spa_bff_logins_total", &[("outcome", "ok")]), 5.0);
    // The same cookie again finds nothing left to end: each ending is counted once.
    assert_eq!(late().await, 401);
    assert_eq!(scrape(&app).await.ended("absolute"), 1.0);
}

#[actix_web::test]
async fn open_websocket_tunnels_are_a_gauge() {
    use awc::ws::{Frame, Message};
    use futures_util::{SinkExt, StreamExt};
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route_to(&upstream),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "tess", "/").await.status, 302);
    let cookie = format!(
        "{}={}",
        app.cookie_name,
        app.session_cookie(&browser).unwrap()
    );
    assert_eq!(scrape(&app).await.get("spa_bff_open_tunnels", &[]), 0.0);
    let (res, mut socket) = support::http_client()
        .ws(app.at("/api/ws"))
        .origin(app.public_url.as_str())
        .set_header("cookie", cookie.as_str())
        .connect()
        .await
        .expect("WebSocket through spa-bff");
    assert_eq!(res.status().as_u16(), 101);
    socket.send(Message::Text("hi".into())).await.unwrap();
    assert!(matches!(socket.next().await, Some(Ok(Frame::Text(_)))));
    let open = scrape(&app).await;
    assert_eq!(open.get("spa_bff_open_tunnels", &[]), 1.0);
    assert_eq!(open.requests("/api", "1xx"), 1.0, "the upgrade: 101");

    drop(socket);
    support::eventually(
        Duration::from_secs(5),
        "the tunnel counted as closed",
        || {
            let app = &app;
            async move { (scrape(app).await.get("spa_bff_open_tunnels", &[]) == 0.0).then_some(()) }
        },
    )
    .await;
}

#[actix_web::test]
async fn redis_errors_are_counted_by_kind_and_metrics_are_served_while_redis_is_away() {
    let redis = RedisServer::start();
    let app = spawn_app(AppOptions {
        redis_url: redis.url(),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "rex", "/").await.status, 302);
    let healthy = scrape(&app).await;
    assert_eq!(
        healthy.get("spa_bff_redis_errors_total", &[("kind", "error")]),
        0.0
    );
    assert_eq!(
        healthy.get("spa_bff_redis_errors_total", &[("kind", "timeout")]),
        0.0
    );

    // A hung Redis: operations time out.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(app.user(&browser).await.status, 503);
    let paused = scrape(&app).await;
    assert!(
        paused.get("spa_bff_redis_errors_total", &[("kind", "timeout")]) >= 1.0,
        "{}",
        paused.text
    );
    assert_eq!(
        paused.get("spa_bff_redis_errors_total", &[("kind", "error")]),
        0.0,
        "a command Redis did not answer in time is a timeout, not an error"
    );
    sleep_ms(1000).await;

    // A stopped Redis: operations fail; /metrics does not need Redis.
    redis.stop();
    assert_eq!(app.user(&browser).await.status, 503);
    let down = scrape(&app).await;
    assert!(down.get("spa_bff_redis_errors_total", &[("kind", "error")]) >= 1.0);
    assert!(down.requests("/user", "5xx") >= 2.0);
    assert!(down.get("spa_bff_redis_command_duration_seconds_count", &[]) > 0.0);
}

#[actix_web::test]
async fn with_metrics_listen_metrics_are_served_only_on_that_listener() {
    let app = spawn_app(AppOptions {
        server_toml: format!(
            "{}metrics_listen = \"127.0.0.1:0\"\n",
            AppOptions::default().server_toml
        ),
        ..AppOptions::default()
    })
    .await;
    let port = app.metrics_port.expect("a metrics listener");
    let metrics = format!("http://127.0.0.1:{port}");
    let browser = Browser::new();

    let main = browser
        .get_with(&app.at("/metrics"), &[("accept", "text/html")])
        .await;
    assert_eq!(main.status, 404, "not on the main listener");
    assert_eq!(
        browser.get(&format!("{metrics}/user")).await.status,
        404,
        "nothing else on the metrics listener"
    );
    let m = scrape_url(&format!("{metrics}/metrics")).await;
    assert_eq!(
        m.requests("/metrics", "4xx"),
        1.0,
        "the main listener's requests are counted"
    );
    assert_eq!(m.requests("/metrics", "2xx"), 0.0, "scrapes are not");
    assert!(m.has(
        "spa_bff_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("profile", "debug")]
    ));
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

#[actix_web::test]
async fn the_binary_serves_metrics_on_metrics_listen_from_the_environment_and_closes_both_on_sigterm(
) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spa-bff.toml");
    let client = support::RegisteredClient {
        client_id: "metrics".into(),
        client_secret: "metrics-secret".into(),
        metadata: serde_json::Value::Null,
    };
    let opts = AppOptions::default_offline();
    let toml = crate::support::app::settings_toml(&opts, "http://127.0.0.1:8080", "m:", &client);
    std::fs::write(&config, toml).unwrap();
    let (port, metrics_port) = (support::free_port(), support::free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_spa-bff"))
        .arg("--config")
        .arg(&config)
        .env("SPA_BFF__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SPA_BFF__SERVER__METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("SPA_BFF__SERVER__SHUTDOWN_DELAY", "0s")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn spa-bff");
    support::eventually(Duration::from_secs(20), "spa-bff listening", || async {
        (listening(port) && listening(metrics_port)).then_some(())
    })
    .await;

    let browser = Browser::new();
    let main = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(browser.get(&main).await.status, 404);
    let m = scrape_url(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert_eq!(m.requests("/metrics", "4xx"), 1.0);
    assert!(m.has(
        "spa_bff_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("profile", "debug")]
    ));

    // SIGTERM (with no drain delay): the process exits and both listeners close.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = support::eventually(Duration::from_secs(15), "spa-bff exits", || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "{status:?}");
    assert!(!listening(port) && !listening(metrics_port));
}
