//! Issue 8: a refresh must never lose a session or hold a worker. Against the small
//! fake provider (for answers a certified provider will not give: a bare 4xx, a
//! body that stalls, a slow `invalid_grant`) and the real provider with a Redis that
//! stops accepting writes at the right moment.

use crate::support::app::{stored_record, AppOptions, TestApp};
use crate::support::fake_op::*;
use crate::support::upstream::Upstream;
use crate::support::{self, Browser, Resp};
use futures_util::future::join_all;
use spa_bff::secret::Sensitive;
use spa_bff::session::{CookieCodec, SessionRef};
use spa_bff::store::keys::Keys;
use std::time::{Duration, Instant};

const CSRF: (&str, &str) = ("x-csrf", "1");

async fn api(browser: &Browser, app: &TestApp, path: &str) -> Resp {
    browser
        .request(
            "GET",
            &app.at(path),
            &[CSRF, ("accept", "application/json")],
            Vec::new(),
        )
        .await
}

/// spa-bff on the fake provider, refreshing on every call (a skew longer than the
/// tokens live), with `/api` routed to `upstream`.
async fn always_refreshing(
    upstream: &Upstream,
    setup: impl FnOnce(&mut FakeState),
) -> (std::sync::Arc<std::sync::Mutex<FakeState>>, TestApp) {
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1h\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
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
    let key = Keys::new(&app.prefix).session(&reference.storage_id());
    let redis = redis::Client::open(app.settings().session.redis_url.expose()).unwrap();
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
