//! The in-process session cache (`session.cache_sessions`, on by default): a known
//! session is served without a Redis round trip, and a change made on another
//! instance (logout, back-channel logout, a refreshed token, a timeout) takes effect
//! on this one within a second. Two instances share a private Redis whose command
//! counters show whether a request read it.

use crate::support::api;
use crate::support::app::{spawn_app_with, AppOptions, TestApp};
use crate::support::fake_op::{
    app_on_fake_op_with, now, send_logout_token, sign_jwt, CLIENT_ID, KEY_PEM, KID,
};
use crate::support::upstream::Upstream;
use crate::support::{self, Browser, Provider, ProviderOptions, RedisServer};
use serde_json::json;
use std::time::{Duration, Instant};

const CSRF: (&str, &str) = ("x-csrf", "1");

fn route(upstream: &Upstream) -> String {
    format!(
        "\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
        upstream.url
    )
}

/// How many times Redis ran `HMGET` (a session read) so far.
fn session_reads(redis: &RedisServer) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `check` answers `Some` within `limit` of `since`; returns how long it took.
async fn within<F, Fut>(limit: Duration, since: Instant, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{what}: not within {limit:?} ({:?})",
            since.elapsed()
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two instances on a private Redis (so its counters are this test's), the browser
/// logged in through the first with its cookie valid on both.
async fn pair(
    provider: &Provider,
    upstream: &Upstream,
) -> (RedisServer, TestApp, TestApp, Browser) {
    let redis = RedisServer::start();
    let a = spawn_app_with(
        AppOptions {
            redis_url: redis.url(),
            issuer: provider.issuer(),
            extra_toml: format!("[proxy]\nrefresh_skew = \"1s\"\n{}", route(upstream)),
            ..AppOptions::default()
        },
        provider,
    )
    .await;
    let b = a.start_twin().await;
    let browser = Browser::new();
    assert_eq!(
        a.login(
            &browser,
            &format!("cache-{}", support::random_string(4)),
            "/"
        )
        .await
        .status,
        302
    );
    let cookie = a.session_cookie(&browser).expect("session cookie");
    browser.set_cookie(&b.url, &a.cookie_name, &cookie);
    (redis, a, b, browser)
}

/// Calls /api through `app` until its session is cached (the subscription has been
/// confirmed and a read put it in), then proves a call reads Redis no more.
async fn warm(redis: &RedisServer, app: &TestApp, browser: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = session_reads(redis);
        for _ in 0..5 {
            assert_eq!(api(browser, app, "/api/warm").await.status, 201);
        }
        if session_reads(redis) == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the session was never served from the cache"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_known_session_is_served_without_reading_redis() {
    let upstream = Upstream::start();
    let (redis, a, _b, browser) = pair(support::shared_provider(), &upstream).await;
    warm(&redis, &a, &browser).await;
    let before = session_reads(&redis);
    for i in 0..50 {
        let res = api(&browser, &a, &format!("/api/cached/{i}")).await;
        assert_eq!(res.status, 201, "{}", res.text());
    }
    assert_eq!(session_reads(&redis), before, "50 calls, no session read");
    // The cache is per process and keyed by the whole reference: a browser with no
    // cookie, or another one, still gets 401.
    assert_eq!(api(&Browser::new(), &a, "/api/x").await.status, 401);
}

#[actix_web::test]
async fn a_logout_on_one_instance_ends_the_session_on_the_other_within_a_second() {
    let upstream = Upstream::start();
    let (redis, a, b, browser) = pair(support::shared_provider(), &upstream).await;
    warm(&redis, &a, &browser).await;
    let res = browser
        .request("POST", &b.at("/logout"), &[CSRF], Vec::new())
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    // The browser forgot its cookie at B's answer; a copy of it (as a stolen cookie
    // would be) must stop working at A too.
    let cookie = a.session_cookie(&browser);
    let thief = Browser::new();
    thief.set_cookie(&a.url, &a.cookie_name, &cookie.unwrap_or_default());
    let logged_out = Instant::now();
    let took = within(
        Duration::from_secs(1),
        logged_out,
        "logout seen on A",
        || async { api(&thief, &a, "/api/after-logout").await.status == 401 },
    )
    .await;
    eprintln!("logout on B took effect on A after {took:?}");
}

#[actix_web::test]
async fn a_back_channel_logout_on_one_instance_ends_the_session_on_the_other_within_a_second() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let (fake, issuer, a) = app_on_fake_op_with(
        AppOptions {
            redis_url: redis.url(),
            extra_toml: route(&upstream),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    let b = a.start_twin().await;
    let browser = Browser::new();
    let res = a.login(&browser, "fake-user", "/").await;
    assert_eq!(res.status, 302, "{}", res.text());
    warm(&redis, &a, &browser).await;
    let sid = fake.lock().unwrap().sid.clone();
    let token = sign_jwt(
        &json!({
            "iss": issuer, "aud": CLIENT_ID, "iat": now(), "jti": support::random_string(8),
            "sid": sid, "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        }),
        KEY_PEM,
        KID,
        "logout+jwt",
    );
    let res = send_logout_token(&Browser::new(), &b, &token).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let took = within(
        Duration::from_secs(1),
        Instant::now(),
        "back-channel logout seen on A",
        || async { api(&browser, &a, "/api/after").await.status == 401 },
    )
    .await;
    eprintln!("back-channel logout on B took effect on A after {took:?}");
}

#[actix_web::test]
async fn a_token_refreshed_on_one_instance_is_the_one_the_other_sends_within_a_second() {
    let upstream = Upstream::start();
    let provider = Provider::start(ProviderOptions::default());
    let (redis, a, b, browser) = pair(&provider, &upstream).await;
    warm(&redis, &a, &browser).await;
    let first = upstream.last().bearer().unwrap().to_string();
    // The upstream rejects B's (still valid) token: B refreshes and retries. A's copy
    // holds a token that is not due, so A would keep sending it but for the
    // announcement of B's save.
    assert_eq!(api(&browser, &b, "/api/picky").await.status, 201);
    let refreshed = upstream.last().bearer().unwrap().to_string();
    assert_ne!(refreshed, first, "B refreshed");
    let took = within(
        Duration::from_secs(1),
        Instant::now(),
        "A sends the new token",
        || async {
            assert_eq!(api(&browser, &a, "/api/on-a").await.status, 201);
            upstream.last().bearer() == Some(refreshed.as_str())
        },
    )
    .await;
    eprintln!("the token B refreshed was sent by A after {took:?}");
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_token"], 1, "one refresh, by B only: {stats}");
}

#[actix_web::test]
async fn idle_and_absolute_timeouts_end_a_cached_session_on_time() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let provider = support::shared_provider();
    for (idle, absolute, pause_ms) in [("4s", "1h", 4300), ("3s", "3s", 0)] {
        let app = spawn_app_with(
            AppOptions {
                redis_url: redis.url(),
                idle_timeout: idle,
                absolute_timeout: absolute,
                extra_toml: route(&upstream),
                ..AppOptions::default()
            },
            provider,
        )
        .await;
        let browser = Browser::new();
        let before_login = Instant::now();
        assert_eq!(app.login(&browser, "timely", "/").await.status, 302);
        let logged_in = Instant::now();
        warm(&redis, &app, &browser).await;
        if pause_ms > 0 {
            // Idle: no request for longer than the idle timeout.
            actix_web::rt::time::sleep(Duration::from_millis(pause_ms)).await;
            assert_eq!(api(&browser, &app, "/api/after-idle").await.status, 401);
        } else {
            // Absolute: active all along, ended at 3 s after the login all the same.
            let mut last = 201;
            while logged_in.elapsed() < Duration::from_millis(3300) {
                last = api(&browser, &app, "/api/active").await.status;
                if last == 401 {
                    break;
                }
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(last, 401, "still served after the absolute timeout");
            assert!(
                before_login.elapsed() >= Duration::from_secs(3),
                "ended early"
            );
        }
    }
}
