//! Sessions end when they should, and spa-bff degrades to 503 (never 500, never a
//! lost session) while Redis or the provider is away, healing when they return.

use crate::support::app::{spawn_app, spawn_app_with, AppOptions};
use crate::support::sleep_ms;
use crate::support::{
    self, free_port, Browser, Provider, ProviderOptions, RedisServer, RegisteredClient,
};
use std::time::Duration;

#[actix_web::test]
async fn idle_timeout_ends_a_quiet_session_but_activity_keeps_it() {
    let app = spawn_app(AppOptions {
        idle_timeout: "2s",
        absolute_timeout: "1m",
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "ida", "/").await.status, 302);
    sleep_ms(1200).await;
    assert_eq!(app.user(&browser).await.status, 200);
    sleep_ms(1200).await; // 2.4 s after login, 1.2 s after the last request
    assert_eq!(
        app.user(&browser).await.status,
        200,
        "activity moved the idle deadline"
    );
    sleep_ms(2300).await;
    let res = app.user(&browser).await;
    assert_eq!(res.status, 401, "{}", res.text());
}

#[actix_web::test]
async fn absolute_timeout_ends_even_an_active_session() {
    let app = spawn_app(AppOptions {
        idle_timeout: "2s",
        absolute_timeout: "3s",
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "judy", "/").await.status, 302);
    for _ in 0..2 {
        sleep_ms(1200).await;
        assert_eq!(app.user(&browser).await.status, 200);
    }
    sleep_ms(1000).await; // 3.4 s after login, 1 s after the last request
    assert_eq!(app.user(&browser).await.status, 401);
}

#[actix_web::test]
async fn readyz_waits_for_the_provider_and_login_is_503_meanwhile() {
    let op_port = free_port();
    let app = spawn_app(AppOptions {
        issuer: format!("http://127.0.0.1:{op_port}"),
        register: false,
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(browser.get(&app.at("/healthz")).await.status, 200);
    let ready = app.readyz().await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["checks"]["provider"], "discovering");
    assert_eq!(ready.json()["checks"]["redis"], "ok");

    let api = browser
        .get_with(&app.at("/login"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status, 503);
    assert_eq!(api.json()["error"], "provider_unavailable");
    let page = browser
        .get_with(
            &app.at("/login"),
            &[("sec-fetch-mode", "navigate"), ("accept", "text/html")],
        )
        .await;
    assert_eq!(page.status, 503);
    assert!(page.text().contains("Temporarily unavailable"));

    let _provider = Provider::start(ProviderOptions {
        port: Some(op_port),
        ..ProviderOptions::default()
    });
    app.wait_ready().await;
    assert_eq!(browser.get(&app.at("/login")).await.status, 302);
}

#[actix_web::test]
async fn redis_going_away_is_a_503_that_heals_without_losing_the_session() {
    let redis = RedisServer::start();
    let app = spawn_app(AppOptions {
        redis_url: redis.url(),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "ken", "/").await.status, 302);

    // Redis hangs (every client paused): a bounded 503, and the cookie is kept.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let res = app.user(&browser).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.json()["error"], "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by redis_timeout"
    );
    assert!(
        res.set_cookies().is_empty(),
        "the cookie is not cleared on a 503"
    );
    // ...and heals: the same session is back once Redis answers.
    support::eventually(
        Duration::from_secs(10),
        "session back after pause",
        || async { (app.user(&browser).await.status == 200).then_some(()) },
    )
    .await;

    // Redis stops (connection refused): 503 and not ready; back up: ready again. The
    // session cache may answer from its copy until it notices (the subscription's end,
    // or at most `MAX_STALENESS`, 0.5 s, after its last confirmed PING); never a 401.
    redis.stop();
    let res = support::eventually(
        Duration::from_millis(1500),
        "503 once Redis is gone",
        || async {
            let res = app.user(&browser).await;
            assert!(
                matches!(res.status, 200 | 503),
                "{} {}",
                res.status,
                res.text()
            );
            (res.status == 503).then_some(res)
        },
    )
    .await;
    assert_eq!(res.json()["error"], "store_unavailable");
    let ready = app.readyz().await;
    assert_eq!(
        (ready.status, ready.json()["checks"]["redis"].clone()),
        (503, "unavailable".into())
    );
    redis.start_again();
    app.wait_ready().await;
    // This Redis keeps nothing on disk, so the session is gone; a new login works.
    assert_eq!(app.user(&browser).await.status, 401);
    assert_eq!(app.login(&browser, "ken", "/").await.status, 302);
    assert_eq!(app.user(&browser).await.status, 200);
}

#[actix_web::test]
async fn rotated_provider_keys_are_fetched_again_on_an_unknown_kid() {
    let app_port = free_port();
    let client = RegisteredClient {
        client_id: "rotation-test".into(),
        client_secret: "rotation-test-secret-not-real".into(),
        metadata: serde_json::Value::Null,
    };
    let clients = serde_json::json!([{
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "redirect_uris": [format!("http://127.0.0.1:{app_port}/callback")],
        "post_logout_redirect_uris": [format!("http://127.0.0.1:{app_port}/")],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }]);
    let provider = Provider::start(ProviderOptions {
        clients_json: Some(clients.to_string()),
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            client: Some(client),
            port: Some(app_port),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    let first = Browser::new();
    assert_eq!(app.login(&first, "leo", "/").await.status, 302);
    let kid_before = signing_kids(&provider).await;

    // The provider restarts with new signing keys; spa-bff still has the old JWKS.
    provider.stop();
    provider.start_again();
    assert_ne!(signing_kids(&provider).await, kid_before, "keys rotated");
    let second = Browser::new();
    let res = app.login(&second, "leo", "/").await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(app.user(&second).await.status, 200);
}

/// The key ids the provider publishes now.
async fn signing_kids(provider: &Provider) -> Vec<String> {
    let jwks_uri = provider.discovery().await["jwks_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let mut res = support::http_client().get(&jwks_uri).send().await.unwrap();
    let jwks: serde_json::Value = res.json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str().map(String::from))
        .collect()
}

#[actix_web::test]
async fn readyz_is_503_within_the_redis_timeout_while_redis_is_paused() {
    let redis = RedisServer::start();
    let app = spawn_app(AppOptions {
        redis_url: redis.url(),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.readyz().await.status, 200);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();

    // `WRITE`: Redis still answers PING and reads, but holds every write (no login,
    // no refresh lock, no token save could succeed); then `ALL`: it answers nothing.
    for mode in ["WRITE", "ALL"] {
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(3000)
            .arg(mode)
            .query_async(&mut admin)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let ready = app.readyz().await;
        let elapsed = started.elapsed();
        assert_eq!(ready.status, 503, "CLIENT PAUSE {mode}: {}", ready.text());
        assert_eq!(ready.json()["checks"]["redis"], "unavailable");
        eprintln!("readyz under CLIENT PAUSE {mode}: 503 after {elapsed:?} (redis_timeout 1s)");
        assert!(
            elapsed < Duration::from_millis(1900),
            "bounded by redis_timeout: {elapsed:?}"
        );
        // Ready again once Redis answers, without a restart.
        let _: () = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut admin)
            .await
            .unwrap();
        support::eventually(Duration::from_secs(10), "ready after the pause", || async {
            (app.readyz().await.status == 200).then_some(())
        })
        .await;
    }
}

#[actix_web::test]
async fn the_first_request_after_redis_returns_succeeds() {
    let redis = RedisServer::start_persistent();
    let app = spawn_app(AppOptions {
        redis_url: redis.url(),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "nina", "/").await.status, 302);
    assert_eq!(app.user(&browser).await.status, 200);

    // Redis goes away for a while; requests meanwhile are 503 (never 401). The session
    // cache may answer from its copy for a moment, until it notices (at most
    // `MAX_STALENESS`, 0.5 s, after its last confirmed PING).
    redis.stop();
    let stopped = std::time::Instant::now();
    for _ in 0..4 {
        let status = app.user(&browser).await.status;
        assert!(
            status == 503 || (status == 200 && stopped.elapsed() < Duration::from_millis(500)),
            "{status} {:?} after Redis stopped",
            stopped.elapsed()
        );
        sleep_ms(300).await;
    }
    // Back, with its data: the very first request succeeds, without a restart.
    redis.start_again();
    let started = std::time::Instant::now();
    let res = app.user(&browser).await;
    let first = started.elapsed();
    assert_eq!(
        res.status,
        200,
        "first request after Redis returned: {}",
        res.text()
    );
    eprintln!("first request after Redis returned: 200 in {first:?}");

    // Redis restarts while nobody is asking: the connection spa-bff held is dead,
    // and the first request still succeeds (on a new one).
    redis.stop();
    redis.start_again();
    let started = std::time::Instant::now();
    let res = app.user(&browser).await;
    assert_eq!(res.status, 200, "after a quiet restart: {}", res.text());
    eprintln!(
        "first request after a quiet Redis restart: 200 in {:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn shutdown_turns_readyz_503_first_and_closes_the_listener_after_the_delay() {
    let app = spawn_app(AppOptions {
        server_toml: "shutdown_delay = \"1500ms\"\n".into(),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "olga", "/").await.status, 302);
    let started = std::time::Instant::now();
    actix_web::rt::spawn(app.shutdown.clone().begin());
    sleep_ms(100).await;

    // Draining: not ready, but still serving.
    let ready = app.readyz().await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["checks"]["instance"], "shutting_down");
    assert_eq!(browser.get(&app.at("/healthz")).await.status, 200);
    assert_eq!(app.user(&browser).await.status, 200);

    // After the delay the listener is gone.
    let addr = app.url.trim_start_matches("http://").to_string();
    support::eventually(Duration::from_secs(10), "the listener to close", || {
        let addr = addr.clone();
        async move { std::net::TcpStream::connect(&addr).is_err().then_some(()) }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the listener stayed open for the delay: {:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn rotated_tokens_are_saved_once_redis_is_back_so_the_grant_survives() {
    use crate::support::upstream::Upstream;
    let redis = RedisServer::start_persistent();
    let upstream = Upstream::start();
    let provider = Provider::start(ProviderOptions {
        access_token_ttl_secs: 3,
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(
        AppOptions {
            redis_url: redis.url(),
            issuer: provider.issuer(),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1s\"\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "pia", "/").await.status, 302);
    let api = |path: &'static str| {
        let (browser, url) = (&browser, app.at(path));
        async move { browser.get_with(&url, &[("x-csrf", "1")]).await }
    };
    assert_eq!(api("/api/before").await.status, 201);

    // The next refresh: the provider rotates the refresh token at once but its answer
    // arrives 1.5 s later; meanwhile Redis goes away, and comes back 1 s after that.
    sleep_ms(2300).await;
    provider.delay_token_answers("refresh_token", 1500, 1).await;
    let refreshing = api("/api/refreshing");
    let outage = async {
        sleep_ms(300).await;
        redis.stop();
        sleep_ms(2200).await;
        redis.start_again();
    };
    let (during, ()) = futures_util::future::join(refreshing, outage).await;

    // The rotated refresh token was kept: the next expiry refreshes fine again (a
    // lost one would come back to the provider used, and end the grant: 401).
    sleep_ms(2300).await;
    let after = api("/api/after").await;
    assert_eq!(
        after.status,
        201,
        "after the next refresh: {}",
        after.text()
    );
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_success"], 2, "{stats}");
    assert_eq!(stats["refresh_error"], 0, "{stats}");
    // ...and the request that refreshed waited for Redis instead of failing.
    assert_eq!(
        during.status,
        201,
        "the refreshing request: {}",
        during.text()
    );
}
