//! Issue 8: a refresh must never lose a session or hold a worker. Against the small
//! fake provider (for answers a certified provider will not give: a bare 4xx, a
//! body that stalls, a slow `invalid_grant`) and the real provider with a Redis that
//! stops accepting writes at the right moment.

use crate::support::api;
use crate::support::app::{spawn_app_with, stored_record, AppOptions, TestApp};
use crate::support::fake_op::*;
use crate::support::upstream::Upstream;
use crate::support::{self, Browser, Provider, ProviderOptions, RedisServer};
use futures_util::future::join_all;
use spa_bff::secret::Sensitive;
use spa_bff::session::{CookieCodec, SessionRef};
use spa_bff::store::keys::Keys;
use std::time::{Duration, Instant};

const CSRF: (&str, &str) = ("x-csrf", "1");

/// spa-bff on the fake provider, refreshing on every call (a skew longer than the
/// tokens live), with `/api` routed to `upstream`.
async fn always_refreshing(
    upstream: &Upstream,
    setup: impl FnOnce(&mut FakeState),
) -> (std::sync::Arc<std::sync::Mutex<FakeState>>, TestApp) {
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        setup,
    )
    .await;
    (fake, app)
}

/// The session reference behind this browser's cookie.
fn reference_of(app: &TestApp, browser: &Browser) -> SessionRef {
    let codec = CookieCodec::new(&app.settings().session);
    let req = actix_web::test::TestRequest::default()
        .cookie(actix_web::cookie::Cookie::new(
            app.cookie_name.clone(),
            app.session_cookie(browser).expect("session cookie"),
        ))
        .to_http_request();
    codec.read_session(&req).expect("cookie decrypts")
}

#[actix_web::test]
async fn a_bare_4xx_answer_to_a_refresh_ends_the_session_instead_of_503_forever() {
    for status in [400, 401] {
        let upstream = Upstream::start();
        let (fake, app) = always_refreshing(&upstream, |_| {}).await;
        let browser = fake_login(&app).await;
        fake.lock().unwrap().refresh = RefreshAnswer::Bare(status);
        let res = api(&browser, &app, "/api/a").await;
        assert_eq!(res.status, 401, "bare {status}: {}", res.text());
        assert_eq!(res.json()["error"], "unauthenticated");
        assert!(upstream.seen().is_empty());
        assert_eq!(
            app.user(&browser).await.status,
            401,
            "bare {status}: session ended"
        );
        assert_eq!(calls(&fake, "/token refresh_token"), 1);
    }
}

#[actix_web::test]
async fn a_token_endpoint_stalling_mid_body_is_a_503_within_the_deadline_and_one_call_for_all_waiters(
) {
    let upstream = Upstream::start();
    let (fake, app) = always_refreshing(&upstream, |_| {}).await;
    let browser = fake_login(&app).await;
    fake.lock().unwrap().refresh = RefreshAnswer::StallMidBody;
    let deadline = app.settings().oidc.http_timeout; // 3 s in tests
    let started = Instant::now();
    let results = join_all((0..6).map(|i| {
        let (browser, app) = (&browser, &app);
        async move { api(browser, app, &format!("/api/{i}")).await }
    }))
    .await;
    let elapsed = started.elapsed();
    for res in &results {
        assert_eq!(res.status, 503, "{}", res.text());
        assert_eq!(res.json()["error"], "provider_unavailable");
    }
    // A correctness bound (one deadline, then the remembered failure), not a speed target.
    assert!(elapsed < deadline + Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(
        calls(&fake, "/token refresh_token"),
        1,
        "queued requests of the session did not each call the provider"
    );
    assert_eq!(app.user(&browser).await.status, 200, "the session is kept");
    // Once the provider answers again, the session goes on.
    fake.lock().unwrap().refresh = RefreshAnswer::Tokens;
    actix_web::rt::time::sleep(spa_bff::flows::refresh::FAILURE_MEMORY).await;
    assert_eq!(api(&browser, &app, "/api/again").await.status, 201);
}

#[actix_web::test]
async fn a_refused_refresh_keeps_the_session_when_newer_tokens_were_saved_meanwhile() {
    let upstream = Upstream::start();
    let (fake, app) = always_refreshing(&upstream, |_| {}).await;
    let browser = fake_login(&app).await;
    {
        let mut f = fake.lock().unwrap();
        f.refresh = RefreshAnswer::InvalidGrant;
        f.refresh_delay = Duration::from_millis(1000);
    }
    let (res, ()) = tokio::join!(api(&browser, &app, "/api/a"), async {
        // While the provider thinks, another refresh (one whose lock expired, say)
        // saves newer tokens.
        support::eventually(Duration::from_secs(5), "the refresh started", || async {
            (calls(&fake, "/token refresh_token") == 1).then_some(())
        })
        .await;
        save_tokens(&app, &browser, "at-saved-meanwhile", "rt-saved-meanwhile").await;
    });
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(upstream.last().bearer(), Some("at-saved-meanwhile"));
    assert_eq!(app.user(&browser).await.status, 200, "the session lives on");
    let record = stored_record(&app, &browser).await;
    assert_eq!(
        record.tokens.refresh_token.as_ref().map(Sensitive::expose),
        Some("rt-saved-meanwhile")
    );
}

/// Writes new tokens (valid for an hour) into this browser's session, as another
/// instance's refresh would: new record, version bumped.
async fn save_tokens(app: &TestApp, browser: &Browser, access: &str, refresh: &str) {
    let mut record = stored_record(app, browser).await;
    record.tokens.access_token = Sensitive::new(access);
    record.tokens.refresh_token = Some(Sensitive::new(refresh));
    record.tokens.access_token_expires_at = Some(spa_bff::time::now_ms() + 3_600_000);
    let reference = reference_of(app, browser);
    let blob = reference.seal(&serde_json::to_vec(&record).unwrap());
    let key = Keys::new(&app.prefix).session(reference.storage_id());
    let redis = redis::Client::open(app.redis_url()).unwrap();
    let mut c = redis.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&key)
        .arg("data")
        .arg(blob)
        .ignore()
        .cmd("HINCRBY")
        .arg(&key)
        .arg("ver")
        .arg(1)
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
}

#[actix_web::test]
async fn an_answer_for_a_session_that_ended_meanwhile_is_revoked() {
    let upstream = Upstream::start();
    let (fake, app) = always_refreshing(&upstream, |_| {}).await;
    let browser = fake_login(&app).await;
    fake.lock().unwrap().refresh_delay = Duration::from_millis(1000);
    let (res, ()) = tokio::join!(api(&browser, &app, "/api/a"), async {
        support::eventually(Duration::from_secs(5), "the refresh started", || async {
            (calls(&fake, "/token refresh_token") == 1).then_some(())
        })
        .await;
        // The user logs out in another tab while the provider answers.
        let out = browser
            .request("POST", &app.at("/logout"), &[CSRF], Vec::new())
            .await;
        assert_eq!(out.status, 200, "{}", out.text());
    });
    assert_eq!(res.status, 401, "{}", res.text());
    let issued = fake.lock().unwrap().issued_refresh_tokens.clone();
    assert_eq!(issued.len(), 1);
    support::eventually(
        Duration::from_secs(5),
        "the refresh token nobody will use is revoked",
        || async {
            let revoked = fake.lock().unwrap().revoked.clone();
            revoked.contains(&issued[0]).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// The real provider (rotation with reuse detection) and a Redis that stops taking writes.

/// A provider whose access tokens live 3 s, and spa-bff (on `redis`) refreshing 1 s
/// before expiry, with `/api` routed to `upstream`.
async fn short_lived_on(redis: &RedisServer, upstream: &Upstream) -> (Provider, TestApp) {
    let provider = Provider::start(ProviderOptions {
        access_token_ttl_secs: 3,
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            redis_url: redis.url(),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1s\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    (provider, app)
}

async fn redis_admin(redis: &RedisServer, args: &[&str]) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(&mut c).await.unwrap();
}

async fn refresh_successes(provider: &Provider) -> u64 {
    provider.stats().await["refresh_success"]
        .as_u64()
        .unwrap_or(0)
}

#[actix_web::test]
async fn refreshed_tokens_survive_a_redis_that_refuses_the_save_and_the_session_goes_on_with_them()
{
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let (provider, app) = short_lived_on(&redis, &upstream).await;
    let user = format!("sam-{}", support::random_string(4));
    let browser = Browser::new();
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    assert_eq!(api(&browser, &app, "/api/a").await.status, 201);
    let first = upstream.last().bearer().unwrap().to_string();
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;

    // The provider rotates the refresh token, and while its answer is on the way,
    // Redis runs out of memory: every write is refused (reads still work).
    provider.delay_token_answers("refresh_token", 1500, 1).await;
    let (res, ()) = tokio::join!(api(&browser, &app, "/api/b"), async {
        support::eventually(Duration::from_secs(5), "the provider refreshed", || async {
            (refresh_successes(&provider).await == 1).then_some(())
        })
        .await;
        redis_admin(&redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
        redis_admin(&redis, &["CONFIG", "SET", "maxmemory", "1"]).await;
    });
    assert_eq!(
        res.status,
        201,
        "served with the new tokens: {}",
        res.text()
    );
    let second = upstream.last().bearer().unwrap().to_string();
    assert_ne!(second, first);

    // Redis still refuses writes: the session goes on with the kept tokens.
    assert_eq!(api(&browser, &app, "/api/c").await.status, 201);
    assert_eq!(upstream.last().bearer(), Some(second.as_str()));
    assert_eq!(refresh_successes(&provider).await, 1);

    // Redis takes writes again: the kept tokens are saved, exactly those the provider
    // issued last.
    redis_admin(&redis, &["CONFIG", "SET", "maxmemory", "0"]).await;
    let usable = provider.usable_refresh_tokens(&user).await;
    assert_eq!(usable.len(), 1, "{usable:?}");
    support::eventually(Duration::from_secs(10), "the kept tokens saved", || async {
        let stored = stored_record(&app, &browser).await;
        (stored.tokens.refresh_token.as_ref().map(Sensitive::expose) == Some(usable[0].as_str()))
            .then_some(())
    })
    .await;

    // The next expiry refreshes with them: no reuse, the grant is alive.
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    let res = api(&browser, &app, "/api/d").await;
    assert_eq!(res.status, 201, "{}", res.text());
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_success"], 2, "{stats}");
    assert_eq!(stats["refresh_error"], 0, "{stats}");
    assert_eq!(provider.usable_refresh_tokens(&user).await.len(), 1);
}

#[actix_web::test]
async fn a_conflicting_save_keeps_the_new_tokens_when_the_store_still_holds_the_spent_ones() {
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let (provider, app) = short_lived_on(&redis, &upstream).await;
    let user = format!("cleo-{}", support::random_string(4));
    let browser = Browser::new();
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    assert_eq!(api(&browser, &app, "/api/a").await.status, 201);
    let first = upstream.last().bearer().unwrap().to_string();
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;

    // While the provider's answer is on the way, something rewrites the session
    // (its version moves) without touching the tokens.
    provider.delay_token_answers("refresh_token", 1000, 1).await;
    let reference = reference_of(&app, &browser);
    let key = Keys::new(&app.prefix).session(reference.storage_id());
    let (res, ()) = tokio::join!(api(&browser, &app, "/api/b"), async {
        support::eventually(Duration::from_secs(5), "the provider refreshed", || async {
            (refresh_successes(&provider).await == 1).then_some(())
        })
        .await;
        redis_admin(&redis, &["HINCRBY", &key, "ver", "1"]).await;
    });
    assert_eq!(res.status, 201, "{}", res.text());
    assert_ne!(
        upstream.last().bearer().unwrap(),
        first,
        "the new token was used"
    );
    let usable = provider.usable_refresh_tokens(&user).await;
    let stored = stored_record(&app, &browser).await;
    assert_eq!(
        stored.tokens.refresh_token.as_ref().map(Sensitive::expose),
        usable.first().map(String::as_str),
        "the store holds the refresh token the provider issued last"
    );
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(api(&browser, &app, "/api/c").await.status, 201);
    let stats = provider.stats().await;
    assert_eq!(
        (
            stats["refresh_success"].as_u64(),
            stats["refresh_error"].as_u64()
        ),
        (Some(2), Some(0)),
        "{stats}"
    );
}
