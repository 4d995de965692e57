//! Issue 11, provider metadata followed without a restart: the discovery document and
//! keys are read again every `oidc.metadata_refresh` and on a key miss; a document
//! naming another issuer is refused and the current metadata kept. Against the fake
//! provider, whose discovery document a test can change.

use crate::support::api;
use crate::support::app::{AppOptions, TestApp};
use crate::support::fake_op::*;
use crate::support::upstream::Upstream;
use crate::support::{self, Browser};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// spa-bff on the fake provider, re-reading its metadata every second and refreshing
/// on every proxied call (so each call shows which token endpoint it uses).
async fn following_every_second(upstream: &Upstream) -> (Arc<Mutex<FakeState>>, TestApp) {
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            oidc_toml: "metadata_refresh = \"1s\"\n".into(),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    (fake, app)
}

#[actix_web::test]
async fn a_moved_token_endpoint_is_followed_within_the_refresh_interval_but_never_another_issuer() {
    let upstream = Upstream::start();
    let (fake, app) = following_every_second(&upstream).await;
    let browser = fake_login(&app).await;
    assert_eq!(api(&browser, &app, "/api/a").await.status, 201);
    assert_eq!(calls(&fake, "/token refresh_token"), 1);

    // A document naming another issuer (with a moved endpoint) is refused: the
    // current metadata stays, and so does readiness.
    {
        let mut f = fake.lock().unwrap();
        f.discovery_issuer = Some("https://evil.example".into());
        f.token_path = "/token2".into();
    }
    let discoveries = calls(&fake, "/.well-known/openid-configuration");
    support::eventually(Duration::from_secs(5), "two re-reads", || async {
        (calls(&fake, "/.well-known/openid-configuration") >= discoveries + 2).then_some(())
    })
    .await;
    assert_eq!(api(&browser, &app, "/api/b").await.status, 201);
    assert_eq!(calls(&fake, "/token refresh_token"), 2);
    assert_eq!(calls(&fake, "/token2 refresh_token"), 0);
    assert_eq!(app.readyz().await.status, 200);

    // The provider's own issuer again, still with the moved endpoint: followed.
    fake.lock().unwrap().discovery_issuer = None;
    support::eventually(
        Duration::from_secs(5),
        "the moved token endpoint used",
        || async {
            assert_eq!(api(&browser, &app, "/api/c").await.status, 201);
            (calls(&fake, "/token2 refresh_token") > 0).then_some(())
        },
    )
    .await;
    let old_endpoint = calls(&fake, "/token refresh_token");
    assert_eq!(api(&browser, &app, "/api/d").await.status, 201);
    assert_eq!(
        calls(&fake, "/token refresh_token"),
        old_endpoint,
        "only the new one"
    );
}

#[actix_web::test]
async fn a_key_miss_reads_the_discovery_document_again_and_follows_a_moved_jwks_uri() {
    // The default interval (10 minutes): only the key miss can make spa-bff look again.
    let (fake, _, app) = app_on_fake_op().await;
    fake_login(&app).await;
    {
        // New keys, published at a new URL; the old URL still serves the old key.
        let mut f = fake.lock().unwrap();
        f.key = rsa_key(OTHER_KEY_PEM, "fake-key-2");
        f.jwks_path = "/jwks2".into();
    }
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let callback = browser.get(&authorize).await;
    let res = browser.get(&app.local(callback.location().unwrap())).await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(app.user(&browser).await.status, 200);
    assert_eq!(calls(&fake, "/jwks2"), 1);
}
