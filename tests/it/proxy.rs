//! Issue 3: the `/api` reverse proxy. Real spa-bff, real Redis, real
//! node-oidc-provider, and a real upstream HTTP server started here that records
//! every request it receives.

use crate::support::app::{spawn_app, spawn_app_with, AppOptions, TestApp};
use crate::support::upstream::{zeros, Seen, Upstream};
use crate::support::{self, free_port, rss_mib, Browser, Provider, ProviderOptions, Resp};
use crate::support::{sleep_ms, unique};
use actix_web::{web, HttpResponse, HttpServer};
use futures_util::future::join_all;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers

fn route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!("\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

const CSRF: (&str, &str) = ("x-csrf", "1");

async fn api(browser: &Browser, app: &TestApp, method: &str, path: &str) -> Resp {
    browser
        .request(
            method,
            &app.at(path),
            &[CSRF, ("accept", "application/json")],
            Vec::new(),
        )
        .await
}

async fn logged_in(app: &TestApp, user: &str) -> Browser {
    let browser = Browser::new();
    let res = app.login(&browser, user, "/").await;
    assert_eq!(res.status, 302, "login: {}", res.text());
    browser
}

async fn refreshes(provider: &Provider) -> u64 {
    provider.stats().await["refresh_token"]
        .as_u64()
        .unwrap_or(0)
}

/// A provider whose access tokens live 3 s, and an app refreshing 1 s before expiry.
async fn short_lived_tokens(upstream: &Upstream) -> (Provider, TestApp) {
    short_lived_tokens_with(upstream, ProviderOptions::default()).await
}

/// Like [`short_lived_tokens`], with other provider options (the TTL is still 3 s).
async fn short_lived_tokens_with(
    upstream: &Upstream,
    options: ProviderOptions,
) -> (Provider, TestApp) {
    let provider = Provider::start(ProviderOptions {
        access_token_ttl_secs: 3,
        ..options
    });
    let app = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1s\"\n{}",
                route("/api", &upstream.url, "")
            ),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    (provider, app)
}

// ---------------------------------------------------------------------------------------
// Forwarding

#[actix_web::test]
async fn api_calls_reach_the_upstream_with_the_bearer_token_and_without_browser_credentials() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &format!("{}/v1", upstream.url), ""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("paul")).await;

    for (method, body) in [
        ("GET", &b""[..]),
        ("POST", &b"{\"item\":\"book\"}"[..]),
        ("PUT", &b"replace me"[..]),
        ("DELETE", &b"gone"[..]),
    ] {
        let res = browser
            .request(
                method,
                &app.at("/api/orders/7?x=1&y=a%20b"),
                &[
                    CSRF,
                    ("authorization", "Bearer forged-by-the-client"),
                    ("content-type", "application/json"),
                    ("x-custom", "kept"),
                ],
                body.to_vec(),
            )
            .await;
        assert_eq!(res.status, 201, "{method}: {}", res.text());
        assert_eq!(
            res.text(),
            format!("{method} /v1/orders/7?x=1&y=a%20b {} bytes", body.len())
        );
        assert_eq!(res.header("x-upstream"), Some("yes"));
        assert_eq!(
            res.header("content-type"),
            Some("text/plain; charset=utf-8")
        );

        let seen = upstream.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.path, "/v1/orders/7");
        assert_eq!(seen.query, "x=1&y=a%20b");
        assert_eq!(seen.body, body);
        let token = seen.bearer().expect("a bearer token");
        assert!(
            token.len() > 20 && token != "forged-by-the-client",
            "{token}"
        );
        assert_eq!(seen.header("authorization").map(|_| ()), Some(()));
        assert_eq!(
            seen.headers
                .iter()
                .filter(|(k, _)| k == "authorization")
                .count(),
            1
        );
        assert_eq!(
            seen.header("cookie"),
            None,
            "the browser's cookies stay here"
        );
        assert_eq!(seen.header("x-csrf"), None);
        assert_eq!(seen.header("x-custom"), Some("kept"));
        assert_eq!(seen.header("x-request-id"), res.header("x-request-id"));
        assert!(seen.header("x-request-id").is_some());
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        let public_host = app.public_url.trim_start_matches("http://");
        assert_eq!(seen.header("x-forwarded-host"), Some(public_host));
        assert_eq!(
            seen.header("host"),
            Some(upstream.url.trim_start_matches("http://"))
        );
    }
    // The token is never shown to the browser.
    let token = upstream.last().bearer().unwrap().to_string();
    assert!(!app.user(&browser).await.text().contains(&token));
}

#[actix_web::test]
async fn missing_csrf_header_is_403_and_no_session_is_401_json() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("quinn")).await;

    for accept in ["application/json", "text/html"] {
        let res = browser
            .request("GET", &app.at("/api/x"), &[("accept", accept)], Vec::new())
            .await;
        assert_eq!(res.status, 403, "{}", res.text());
        assert_eq!(res.json()["error"], "forbidden");
    }
    let wrong = browser
        .request("GET", &app.at("/api/x"), &[("x-csrf", "0")], Vec::new())
        .await;
    assert_eq!(wrong.status, 403);

    let stranger = Browser::new();
    let res = api(&stranger, &app, "GET", "/api/x").await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"], "unauthenticated");
    assert_eq!(
        res.header("location"),
        None,
        "never a redirect to the provider"
    );

    // A cookie that leads nowhere is 401 and cleared.
    stranger.set_cookie(&app.url, &app.cookie_name, "garbage");
    let res = api(&stranger, &app, "GET", "/api/x").await;
    assert_eq!(res.status, 401);
    let cleared = res
        .set_cookies()
        .iter()
        .any(|c| c.starts_with(&format!("{}=", app.cookie_name)) && c.contains("Max-Age=0"));
    assert!(cleared, "{:?}", res.set_cookies());
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");

    // Only configured prefixes are proxied.
    assert_eq!(api(&browser, &app, "GET", "/apix").await.status, 404);
    assert_eq!(api(&browser, &app, "GET", "/other/x").await.status, 404);
    let dots = api(&browser, &app, "GET", "/api/../user").await;
    assert_eq!(dots.status, 400, "{}", dots.text());
    assert_eq!(dots.json()["error"], "bad_path");
    assert!(upstream.seen().is_empty());
}

#[actix_web::test]
async fn optional_and_none_routes_and_the_method_allow_list() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: [
            route("/opt", &upstream.url, "token = \"optional\""),
            route(
                "/public",
                &upstream.url,
                "token = \"none\"\nstrip_prefix = false",
            ),
            route("/ro", &upstream.url, "methods = [\"GET\"]"),
            route("/cookies", &upstream.url, "allow_set_cookie = true"),
        ]
        .concat(),
        ..AppOptions::default()
    })
    .await;

    let stranger = Browser::new();
    assert_eq!(api(&stranger, &app, "GET", "/opt/a").await.status, 201);
    assert_eq!(upstream.last().header("authorization"), None);
    assert_eq!(upstream.last().path, "/a");

    let browser = logged_in(&app, &unique("rita")).await;
    assert_eq!(api(&browser, &app, "GET", "/opt/a").await.status, 201);
    assert!(upstream.last().bearer().is_some());

    assert_eq!(api(&browser, &app, "GET", "/public/b").await.status, 201);
    assert_eq!(upstream.last().header("authorization"), None);
    assert_eq!(upstream.last().path, "/public/b", "strip_prefix = false");

    assert_eq!(api(&browser, &app, "GET", "/ro/c").await.status, 201);
    let res = api(&browser, &app, "POST", "/ro/c").await;
    assert_eq!(res.status, 405);
    assert_eq!(res.json()["error"], "method_not_allowed");

    // Set-Cookie from an upstream is dropped unless the route allows it.
    let dropped = api(&browser, &app, "GET", "/opt/set-cookie").await;
    assert_eq!(dropped.status, 200);
    assert!(
        dropped.set_cookies().is_empty(),
        "{:?}",
        dropped.set_cookies()
    );
    let kept = api(&browser, &app, "GET", "/cookies/set-cookie").await;
    assert_eq!(kept.set_cookies(), vec!["upstream=1; Path=/".to_string()]);
}

#[actix_web::test]
async fn unreachable_upstream_is_502_and_a_slow_one_is_504() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: [
            route("/down", &format!("http://127.0.0.1:{}", free_port()), ""),
            route("/slow", &upstream.url, "timeout = \"500ms\""),
        ]
        .concat(),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("sam")).await;

    let res = api(&browser, &app, "GET", "/down/x").await;
    assert_eq!(res.status, 502, "{}", res.text());
    assert_eq!(res.json()["error"], "bad_gateway");

    let started = Instant::now();
    let res = api(&browser, &app, "GET", "/slow/hang").await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(res.json()["error"], "gateway_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The session survives both.
    assert_eq!(api(&browser, &app, "GET", "/slow/ok").await.status, 201);
}

#[actix_web::test]
async fn an_upstream_that_stalls_mid_body_is_cut_off_after_the_route_timeout() {
    // An upstream that sends its head and a first chunk, then nothing, forever.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        actix_web::App::new().default_service(web::to(|| async {
            let first = futures_util::stream::iter(vec![Ok::<_, actix_web::Error>(
                web::Bytes::from_static(b"first chunk"),
            )]);
            HttpResponse::Ok().streaming(futures_util::StreamExt::chain(
                first,
                futures_util::stream::pending(),
            ))
        }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    let app = spawn_app(AppOptions {
        extra_toml: route(
            "/stall",
            &format!("http://127.0.0.1:{port}"),
            "token = \"none\"\ntimeout = \"1s\"",
        ),
        ..AppOptions::default()
    })
    .await;

    let started = Instant::now();
    let res = support::http_client()
        .get(app.at("/stall/x"))
        .insert_header(CSRF)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut res = res.timeout(Duration::from_secs(30));
    let body = res.body().limit(1 << 20).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "the stalled body was held open for {elapsed:?}"
    );
    assert!(
        body.map_or(true, |b| b.len() < 100),
        "the body ended early instead of completing"
    );
}

// ---------------------------------------------------------------------------------------
// Transparent refresh

#[actix_web::test]
async fn an_expiring_access_token_is_refreshed_once_and_the_new_one_forwarded() {
    let upstream = Upstream::start();
    let (provider, app) = short_lived_tokens(&upstream).await;
    let browser = logged_in(&app, &unique("tess")).await;

    assert_eq!(api(&browser, &app, "GET", "/api/a").await.status, 201);
    let first = upstream.last().bearer().unwrap().to_string();
    assert_eq!(refreshes(&provider).await, 0);

    sleep_ms(2300).await; // within the 1 s skew of the 3 s lifetime
    let res = api(&browser, &app, "GET", "/api/b").await;
    assert_eq!(res.status, 201, "{}", res.text());
    let second = upstream.last().bearer().unwrap().to_string();
    assert_ne!(first, second, "the upstream got the new token");
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_token"], 1, "{stats}");
    assert_eq!(stats["refresh_success"], 1, "{stats}");

    // The rotated refresh token was saved: the next expiry refreshes fine again.
    sleep_ms(2300).await;
    assert_eq!(api(&browser, &app, "GET", "/api/c").await.status, 201);
    assert_ne!(upstream.last().bearer().unwrap(), second);
    assert_eq!(provider.stats().await["refresh_success"], 2);
    assert_eq!(app.user(&browser).await.status, 200);
}

#[actix_web::test]
async fn a_storm_of_100_calls_after_expiry_causes_exactly_one_refresh() {
    let upstream = Upstream::start();
    let (provider, app) = short_lived_tokens(&upstream).await;
    let browser = logged_in(&app, &unique("uma")).await;
    assert_eq!(api(&browser, &app, "GET", "/api/warm").await.status, 201);
    sleep_ms(2300).await;

    let started = Instant::now();
    let results = join_all((0..100).map(|i| {
        let browser = &browser;
        let app = &app;
        async move { api(browser, app, "GET", &format!("/api/storm/{i}")).await }
    }))
    .await;
    let elapsed = started.elapsed();
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_token"], 1, "{stats}");
    let tokens: std::collections::HashSet<String> = upstream
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/storm/"))
        .map(|s| s.bearer().unwrap().to_string())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "every storm call carried the one new token"
    );
    eprintln!("storm: 100 calls, one refresh, {elapsed:?}");
}

#[actix_web::test]
async fn two_instances_sharing_redis_refresh_exactly_once() {
    let upstream = Upstream::start();
    let (provider, app) = short_lived_tokens(&upstream).await;
    let twin = app.start_twin().await;
    let browser = logged_in(&app, &unique("vera")).await;
    let cookie = app.session_cookie(&browser).expect("session cookie");
    browser.set_cookie(&twin.url, &app.cookie_name, &cookie);

    // Logged in on one, the session works on the other.
    assert_eq!(api(&browser, &twin, "GET", "/api/hello").await.status, 201);
    sleep_ms(2300).await;

    let started = Instant::now();
    let results = join_all((0..100).map(|i| {
        let browser = &browser;
        let target = if i % 2 == 0 { &app } else { &twin };
        async move { api(browser, target, "GET", &format!("/api/storm/{i}")).await }
    }))
    .await;
    let elapsed = started.elapsed();
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_token"], 1, "{stats}");
    eprintln!("twin storm: 100 calls over 2 instances, one refresh, {elapsed:?}");
    twin.handle.stop(false).await;
}

#[actix_web::test]
async fn a_revoked_grant_ends_the_session_with_401() {
    let upstream = Upstream::start();
    // A skew longer than the token lifetime: every call refreshes.
    let app = spawn_app(AppOptions {
        extra_toml: format!(
            "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n{}",
            route("/api", &upstream.url, "")
        ),
        ..AppOptions::default()
    })
    .await;
    let user = unique("walt");
    let browser = logged_in(&app, &user).await;
    assert_eq!(api(&browser, &app, "GET", "/api/a").await.status, 201);

    assert!(support::shared_provider().revoke_grants(&user).await >= 1);
    let res = api(&browser, &app, "GET", "/api/b").await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(res.json()["error"], "unauthenticated");
    assert_eq!(
        upstream.seen().len(),
        1,
        "the second call never reached the upstream"
    );
    assert_eq!(app.user(&browser).await.status, 401, "the session is gone");
    let left = crate::support::app::redis_dump(&support::shared_redis().url(), &app.prefix).await;
    let keys: Vec<&String> = left.iter().map(|(k, _)| k).collect();
    assert!(
        keys.is_empty(),
        "session, indexes and lock all gone: {keys:?}"
    );
}

#[actix_web::test]
async fn provider_down_during_refresh_is_503_and_the_session_is_kept() {
    let upstream = Upstream::start();
    let (provider, app) = short_lived_tokens(&upstream).await;
    let browser = logged_in(&app, &unique("xena")).await;
    provider.stop();
    sleep_ms(2300).await;

    let res = api(&browser, &app, "GET", "/api/a").await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.json()["error"], "provider_unavailable");
    assert!(upstream.seen().is_empty());
    assert_eq!(app.user(&browser).await.status, 200, "the session is kept");
}

#[actix_web::test]
async fn a_provider_outage_is_503_and_the_session_works_again_once_it_is_back() {
    let upstream = Upstream::start();
    let state = tempfile::tempdir().unwrap();
    // The provider keeps its grants across the restart, as a real one (with a database) does.
    let (provider, app) = short_lived_tokens_with(
        &upstream,
        ProviderOptions {
            state_file: Some(state.path().join("provider-state.json")),
            ..ProviderOptions::default()
        },
    )
    .await;
    let browser = logged_in(&app, &unique("yara")).await;
    assert_eq!(api(&browser, &app, "GET", "/api/a").await.status, 201);
    let first = upstream.last().bearer().unwrap().to_string();

    provider.stop();
    sleep_ms(2300).await; // the access token is now within the refresh skew
    let res = api(&browser, &app, "GET", "/api/b").await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.json()["error"], "provider_unavailable");
    assert_eq!(app.user(&browser).await.status, 200, "the session is kept");

    provider.start_again();
    // The session's failed refresh answers 503 at once for a moment (no provider call).
    actix_web::rt::time::sleep(spa_bff::flows::refresh::FAILURE_MEMORY).await;
    let res = api(&browser, &app, "GET", "/api/c").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_ne!(
        upstream.last().bearer().unwrap(),
        first,
        "a refreshed token"
    );
    assert_eq!(provider.stats().await["refresh_success"], 1);
    assert_eq!(app.user(&browser).await.status, 200);
}

#[actix_web::test]
async fn a_crashed_lock_holder_delays_the_refresh_at_most_its_lock_ttl() {
    let upstream = Upstream::start();
    let (provider, app) = short_lived_tokens(&upstream).await;
    let browser = logged_in(&app, &unique("yuri")).await;
    sleep_ms(2300).await;

    // Another instance took the session's refresh lock and died: it expires in 1.5 s.
    let redis = redis::Client::open(support::shared_redis().url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}session:*", app.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("SET")
        .arg(format!("{}:lock", keys[0]))
        .arg("held-by-a-crashed-instance")
        .arg("PX")
        .arg(1500)
        .query_async(&mut conn)
        .await
        .unwrap();

    let started = Instant::now();
    let res = api(&browser, &app, "GET", "/api/after-crash").await;
    let waited = started.elapsed();
    assert_eq!(res.status, 201, "{}", res.text());
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(provider.stats().await["refresh_token"], 1);
}

#[actix_web::test]
async fn head_requests_keep_the_upstream_content_length_without_a_body() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("zoe")).await;
    let head = api(&browser, &app, "HEAD", "/api/h").await;
    assert_eq!(head.status, 201);
    assert!(head.body.is_empty());
    let would_be = "HEAD /h? 0 bytes".len().to_string();
    assert_eq!(head.header("content-length"), Some(would_be.as_str()));
}

#[actix_web::test]
async fn uploads_and_downloads_of_100_mb_stream_through_with_flat_memory() {
    use futures_util::StreamExt;
    const SIZE: usize = 100 * 1024 * 1024;
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route(
            "/api",
            &upstream.url,
            "timeout = \"20s\"\nmax_body = \"200MiB\"",
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("abby")).await;
    let cookie = format!(
        "{}={}",
        app.cookie_name,
        app.session_cookie(&browser).expect("session cookie")
    );
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(60))
        .finish();
    // Warm up connections and allocator pools before the baseline.
    assert_eq!(api(&browser, &app, "GET", "/api/warm").await.status, 201);
    let baseline = rss_mib();
    let peak = Arc::new(Mutex::new(baseline));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let now = rss_mib();
                let mut p = peak.lock().unwrap();
                *p = p.max(now);
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let started = Instant::now();
    let mut res = client
        .post(app.at("/api/sink"))
        .insert_header(("cookie", cookie.as_str()))
        .insert_header(CSRF)
        .send_body(actix_web::body::SizedStream::new(SIZE as u64, zeros(SIZE)))
        .await
        .expect("upload");
    assert_eq!(res.status().as_u16(), 200);
    let counted = res.body().await.unwrap();
    assert_eq!(counted, SIZE.to_string().as_bytes());
    let upload = started.elapsed();

    let started = Instant::now();
    let mut res = client
        .get(app.at(&format!("/api/source?n={SIZE}")))
        .insert_header(("cookie", cookie.as_str()))
        .insert_header(CSRF)
        .send()
        .await
        .expect("download");
    assert_eq!(res.status().as_u16(), 200);
    let mut received = 0usize;
    while let Some(chunk) = res.next().await {
        received += chunk.expect("download chunk").len();
    }
    assert_eq!(received, SIZE);
    let download = started.elapsed();

    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = *peak.lock().unwrap() - baseline;
    eprintln!("100 MiB upload {upload:?}, download {download:?}, peak RSS growth {growth:.1} MiB");
    // Buffering either body would add at least 100 MiB; other tests run in this
    // process at the same time, hence some headroom over the ~30 MiB target.
    assert!(growth < 40.0, "RSS grew by {growth:.1} MiB");
}

#[actix_web::test]
async fn an_upstream_401_invalid_token_is_refreshed_and_retried_once() {
    let upstream = Upstream::start();
    let provider = Provider::start(ProviderOptions::default());
    let app = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            extra_toml: route("/api", &upstream.url, ""),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    let browser = logged_in(&app, &unique("bert")).await;
    let post = |path: &'static str, body: Vec<u8>| {
        let browser = &browser;
        let url = app.at(path);
        async move { browser.request("POST", &url, &[CSRF], body).await }
    };

    // The first token is rejected: one refresh, one retry with the body sent again.
    let res = post("/api/picky", b"hello".to_vec()).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let picky: Vec<Seen> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.path == "/picky")
        .collect();
    assert_eq!(picky.len(), 2);
    assert_ne!(picky[0].bearer(), picky[1].bearer());
    assert_eq!(picky[1].body, b"hello");
    assert_eq!(refreshes(&provider).await, 1);
    // The new token is kept.
    assert_eq!(post("/api/picky", b"again".to_vec()).await.status, 201);
    assert_eq!(refreshes(&provider).await, 1);

    // Still rejected after the retry: the upstream's 401 is passed on, no loop.
    let res = post("/api/always-reject", b"x".to_vec()).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.text(), "rejected");
    assert!(res.header("www-authenticate").is_some());
    assert_eq!(refreshes(&provider).await, 2);
    let tries = upstream
        .seen()
        .iter()
        .filter(|s| s.path == "/always-reject")
        .count();
    assert_eq!(tries, 2);

    // A body too large to buffer is streamed once: no retry.
    let big = vec![b'a'; spa_bff::proxy::RETRY_BUFFER_LIMIT as usize + 1];
    let res = post("/api/always-reject", big).await;
    assert_eq!(res.status, 401);
    assert_eq!(refreshes(&provider).await, 2);
    assert_eq!(app.user(&browser).await.status, 200, "the session is kept");
}

#[actix_web::test]
async fn websocket_upgrades_are_tunnelled_with_the_token_from_the_own_origin_only() {
    use awc::ws::{Frame, Message};
    use futures_util::{SinkExt, StreamExt};
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("cleo")).await;
    let cookie = format!(
        "{}={}",
        app.cookie_name,
        app.session_cookie(&browser).expect("session cookie")
    );
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();

    let (res, mut socket) = client
        .ws(app.at("/api/ws?room=1"))
        .origin(app.public_url.as_str())
        .set_header("cookie", cookie.as_str())
        .connect()
        .await
        .expect("WebSocket through spa-bff");
    assert_eq!(res.status().as_u16(), 101);
    socket.send(Message::Text("hello".into())).await.unwrap();
    match socket.next().await {
        Some(Ok(Frame::Text(text))) => assert_eq!(&text[..], b"hello"),
        other => panic!("expected the echo, got {other:?}"),
    }
    socket
        .send(Message::Binary(web::Bytes::from_static(&[0, 1, 2, 255])))
        .await
        .unwrap();
    match socket.next().await {
        Some(Ok(Frame::Binary(bytes))) => assert_eq!(&bytes[..], &[0, 1, 2, 255]),
        other => panic!("expected the echo, got {other:?}"),
    }
    socket.send(Message::Close(None)).await.unwrap();
    assert!(matches!(socket.next().await, Some(Ok(Frame::Close(_)))));

    let seen = upstream.last();
    assert_eq!((seen.path.as_str(), seen.query.as_str()), ("/ws", "room=1"));
    assert!(
        seen.bearer().is_some(),
        "the token is attached to the upgrade"
    );
    assert_eq!(seen.header("cookie"), None);
    let handshakes = upstream.seen().len();

    // Another origin cannot open a socket with the user's cookie.
    let refused = client
        .ws(app.at("/api/ws"))
        .origin("https://evil.example")
        .set_header("cookie", cookie.as_str())
        .connect()
        .await;
    assert!(
        matches!(&refused, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 403),
        "{:?}",
        refused.as_ref().err()
    );
    // Without a session: 401.
    let anonymous = client
        .ws(app.at("/api/ws"))
        .origin(app.public_url.as_str())
        .connect()
        .await;
    assert!(
        matches!(&anonymous, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 401),
        "{:?}",
        anonymous.as_ref().err()
    );
    assert_eq!(
        upstream.seen().len(),
        handshakes,
        "neither reached the upstream"
    );
}

#[actix_web::test]
async fn route_prefixes_are_never_answered_by_the_spa_fallback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><p>spa</p>").unwrap();
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        static_dir: Some(dir.path().display().to_string()),
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let page = [("accept", "text/html"), ("sec-fetch-mode", "navigate")];
    // A client-side route gets index.html ...
    let spa = browser.get_with(&app.at("/orders/7"), &page).await;
    assert_eq!(spa.status, 200);
    assert!(spa.text().contains("spa"));
    // ... a route prefix never does: it is the proxy's (JSON even for navigations).
    for path in ["/api", "/api/orders/7"] {
        let res = browser.get_with(&app.at(path), &page).await;
        assert_eq!(res.status, 403, "{path}: {}", res.text());
        assert_eq!(res.json()["error"], "forbidden");
    }
}

#[actix_web::test]
async fn an_optional_route_goes_on_without_a_token_when_the_grant_is_revoked() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: format!(
            "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n{}",
            route("/opt", &upstream.url, "token = \"optional\"")
        ),
        ..AppOptions::default()
    })
    .await;
    let user = unique("dora");
    let browser = logged_in(&app, &user).await;
    assert_eq!(api(&browser, &app, "GET", "/opt/a").await.status, 201);
    assert!(upstream.last().bearer().is_some());

    assert!(support::shared_provider().revoke_grants(&user).await >= 1);
    let res = api(&browser, &app, "GET", "/opt/b").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(upstream.last().header("authorization"), None);
    assert!(
        res.set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{}=", app.cookie_name)) && c.contains("Max-Age=0")),
        "the dead session's cookie is cleared: {:?}",
        res.set_cookies()
    );
    assert_eq!(app.user(&browser).await.status, 401);
}
