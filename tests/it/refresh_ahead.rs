//! Issue 9: refreshing ahead. A token inside `proxy.refresh_skew` that still has more
//! than `proxy.min_token_lifetime` left is forwarded at once, and one refresh per
//! session replaces it in the background, so no request waits for the provider; a
//! token within `min_token_lifetime` (or missing) is waited for, as before.
//!
//! The fake provider sets each token's lifetime and names every token it issues, so
//! these tests can tell the login's token from a refreshed one; the last test runs two
//! instances against the real provider.

use crate::support::api;
use crate::support::app::{spawn_app_with, AppOptions, TestApp};
use crate::support::fake_op::*;
use crate::support::upstream::Upstream;
use crate::support::{self, Browser, Provider, ProviderOptions};
use futures_util::future::join_all;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// spa-bff on the fake provider with a one-hour skew and this `min_token_lifetime`,
/// `/api` routed to `upstream`; the login's access token lives `expires_in` seconds.
async fn on_fake(
    upstream: &Upstream,
    min_lifetime: &str,
    expires_in: u64,
) -> (Arc<Mutex<FakeState>>, TestApp) {
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"{min_lifetime}\"\n\
                 [[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        |s| s.expires_in = expires_in,
    )
    .await;
    (fake, app)
}

/// The bearer tokens the upstream received, each once.
fn bearers(upstream: &Upstream) -> HashSet<String> {
    upstream
        .seen()
        .iter()
        .map(|s| s.bearer().expect("a bearer token").to_string())
        .collect()
}

/// The access tokens the fake issued by refresh grants.
fn refreshed(fake: &Mutex<FakeState>) -> Vec<String> {
    fake.lock().unwrap().issued_access_tokens.clone()
}

#[actix_web::test]
async fn a_token_inside_the_skew_is_forwarded_at_once_while_one_background_refresh_replaces_it() {
    let upstream = Upstream::start();
    // The login's token lives 10 minutes: inside the 1 h skew, far from the 10 s minimum.
    let (fake, app) = on_fake(&upstream, "10s", 600).await;
    let browser = fake_login(&app).await;
    {
        let mut f = fake.lock().unwrap();
        f.refresh_delay = Duration::from_millis(1500);
        // The refreshed token is not due: one refresh, not one after another.
        f.expires_in = 7200;
    }
    let results = join_all((0..20).map(|i| {
        let (browser, app) = (&browser, &app);
        async move { api(browser, app, &format!("/api/{i}")).await }
    }))
    .await;
    for res in &results {
        assert_eq!(res.status, 201, "{}", res.text());
    }
    // All 20 were answered while the provider was still holding its answer: none of
    // them waited for it, and all carried the login's token.
    let login_tokens = bearers(&upstream);
    assert_eq!(login_tokens.len(), 1, "{login_tokens:?}");
    assert!(refreshed(&fake).len() <= 1);
    assert!(
        !login_tokens.contains(refreshed(&fake).first().map_or("", String::as_str)),
        "a request carried the refreshed token: it waited for the refresh"
    );

    // Once the background refresh has saved, requests carry the new token.
    let new_token = support::eventually(Duration::from_secs(10), "the refreshed token", || async {
        let token = refreshed(&fake).first().cloned()?;
        assert_eq!(api(&browser, &app, "/api/after").await.status, 201);
        (upstream.last().bearer() == Some(token.as_str())).then_some(token)
    })
    .await;
    assert_eq!(
        calls(&fake, "/token refresh_token"),
        1,
        "20 requests inside the skew made one refresh"
    );
    for _ in 0..5 {
        assert_eq!(api(&browser, &app, "/api/more").await.status, 201);
        assert_eq!(upstream.last().bearer(), Some(new_token.as_str()));
    }
    assert_eq!(calls(&fake, "/token refresh_token"), 1);
}

#[actix_web::test]
async fn a_token_within_min_token_lifetime_is_refreshed_before_the_request_is_forwarded() {
    let upstream = Upstream::start();
    // The login's token lives 5 s: within the 10 s minimum, so the request waits.
    let (fake, app) = on_fake(&upstream, "10s", 5).await;
    let browser = fake_login(&app).await;
    fake.lock().unwrap().expires_in = 7200;
    assert_eq!(api(&browser, &app, "/api/a").await.status, 201);
    assert_eq!(calls(&fake, "/token refresh_token"), 1);
    assert_eq!(
        upstream.last().bearer(),
        refreshed(&fake).first().map(String::as_str),
        "the request carried the token its refresh got"
    );
}

#[actix_web::test]
async fn a_failed_background_refresh_keeps_the_current_token_in_use_and_is_tried_again_later() {
    let upstream = Upstream::start();
    let (fake, app) = on_fake(&upstream, "10s", 600).await;
    let browser = fake_login(&app).await;
    fake.lock().unwrap().refresh = RefreshAnswer::Bare(503);
    for i in 0..10 {
        let res = api(&browser, &app, &format!("/api/{i}")).await;
        assert_eq!(
            res.status,
            201,
            "the current token still serves: {}",
            res.text()
        );
    }
    assert_eq!(bearers(&upstream).len(), 1, "all with the login's token");
    support::eventually(Duration::from_secs(5), "the background refresh", || async {
        (calls(&fake, "/token refresh_token") >= 1).then_some(())
    })
    .await;
    for i in 0..10 {
        assert_eq!(api(&browser, &app, &format!("/api/b{i}")).await.status, 201);
    }
    assert_eq!(
        calls(&fake, "/token refresh_token"),
        1,
        "a failure is remembered: not one provider call per request"
    );
    // The provider heals; after the failure memory the next request tries again.
    {
        let mut f = fake.lock().unwrap();
        f.refresh = RefreshAnswer::Tokens;
        f.expires_in = 7200;
    }
    actix_web::rt::time::sleep(spa_bff::flows::refresh::FAILURE_MEMORY).await;
    let token = support::eventually(Duration::from_secs(10), "the refreshed token", || async {
        assert_eq!(api(&browser, &app, "/api/c").await.status, 201);
        let token = refreshed(&fake).first().cloned()?;
        (upstream.last().bearer() == Some(token.as_str())).then_some(token)
    })
    .await;
    assert_eq!(calls(&fake, "/token refresh_token"), 2);
    assert!(!token.is_empty());
}

#[actix_web::test]
async fn a_background_refresh_the_provider_refuses_ends_the_session() {
    let upstream = Upstream::start();
    let (fake, app) = on_fake(&upstream, "10s", 600).await;
    let browser = fake_login(&app).await;
    fake.lock().unwrap().refresh = RefreshAnswer::InvalidGrant;
    // Forwarded with the current token, which is still valid...
    assert_eq!(api(&browser, &app, "/api/a").await.status, 201);
    // ...and once the provider has refused the grant, the session is over.
    support::eventually(Duration::from_secs(10), "the session ended", || async {
        (app.user(&browser).await.status == 401).then_some(())
    })
    .await;
    let res = api(&browser, &app, "/api/b").await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(calls(&fake, "/token refresh_token"), 1);
    assert_eq!(upstream.seen().len(), 1);
}

#[actix_web::test]
async fn two_instances_refreshing_ahead_make_one_token_request_and_both_forward_its_token() {
    // The real provider: 5-minute access tokens; spa-bff refreshes 295 s before expiry,
    // so a token is inside the skew 5 s after it was issued, with minutes left.
    let provider = Provider::start(ProviderOptions::default());
    let upstream = Upstream::start();
    let a = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"295s\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    let b = a.start_twin().await;
    let browser = Browser::new();
    let user = format!("ahead-{}", support::random_string(4));
    assert_eq!(a.login(&browser, &user, "/").await.status, 302);
    let cookie = a.session_cookie(&browser).expect("session cookie");
    browser.set_cookie(&b.url, &a.cookie_name, &cookie);
    assert_eq!(api(&browser, &a, "/api/first").await.status, 201);
    let login_token = upstream.last().bearer().unwrap().to_string();
    actix_web::rt::time::sleep(Duration::from_millis(5300)).await;

    provider.delay_token_answers("refresh_token", 1500, 1).await;
    let results = join_all((0..40).map(|i| {
        let (browser, app) = (&browser, if i % 2 == 0 { &a } else { &b });
        async move { api(browser, app, &format!("/api/{i}")).await }
    }))
    .await;
    for res in &results {
        assert_eq!(res.status, 201, "{}", res.text());
    }
    assert_eq!(
        bearers(&upstream),
        HashSet::from([login_token.clone()]),
        "all 40 were forwarded at once, with the login's token"
    );
    for app in [&a, &b] {
        support::eventually(Duration::from_secs(10), "the new token", || async {
            assert_eq!(api(&browser, app, "/api/after").await.status, 201);
            let token = upstream.last().bearer().unwrap().to_string();
            (token != login_token).then_some(())
        })
        .await;
    }
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_success"], 1, "{stats}");
    assert_eq!(stats["refresh_error"].as_u64().unwrap_or(0), 0, "{stats}");
    // Both instances forward the one new token.
    assert_eq!(api(&browser, &a, "/api/x").await.status, 201);
    let from_a = upstream.last().bearer().unwrap().to_string();
    assert_eq!(api(&browser, &b, "/api/y").await.status, 201);
    assert_eq!(upstream.last().bearer(), Some(from_a.as_str()));
}
