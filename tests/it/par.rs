//! Issue 11: pushed authorization requests (RFC 9126). With `oidc.use_par`, or when
//! the provider's discovery says `require_pushed_authorization_requests`, `/login`
//! pushes the request with client authentication and the browser's redirect carries
//! only `client_id` and `request_uri`.

use crate::client_auth::{client_key, key_toml};
use crate::support::app::{spawn_app, spawn_app_with, AppOptions};
use crate::support::fake_op::start_fake_op;
use crate::support::{self, Browser, Provider, ProviderOptions};
use serde_json::json;
use std::time::Duration;

/// The names of the authorization URL's query parameters, sorted.
fn parameter_names(url: &str) -> Vec<String> {
    let mut names: Vec<String> = url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    names.sort();
    names
}

#[actix_web::test]
async fn with_use_par_the_browser_redirect_carries_only_client_id_and_request_uri() {
    let app = spawn_app(AppOptions {
        oidc_toml: "use_par = true\n".into(),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/pushed?x=1").await;
    assert!(
        authorize.starts_with(&support::shared_provider().url("/auth?")),
        "{authorize}"
    );
    assert_eq!(
        parameter_names(&authorize),
        ["client_id", "request_uri"],
        "{authorize}"
    );
    assert_eq!(
        support::query_param(&authorize, "client_id"),
        Some(app.client.client_id.clone())
    );
    assert!(
        support::query_param(&authorize, "request_uri")
            .is_some_and(|u| u.starts_with("urn:ietf:params:oauth:request_uri:")),
        "{authorize}"
    );
    let callback = browser.provider_login(&authorize, "par-user").await;
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(res.location(), Some("/pushed?x=1"));
    assert_eq!(app.user(&browser).await.json()["claims"]["sub"], "par-user");
}

#[actix_web::test]
async fn a_provider_that_requires_par_gets_pushed_requests_with_private_key_jwt_even_without_use_par(
) {
    let op = Provider::start(ProviderOptions {
        require_par: true,
        ..ProviderOptions::default()
    });
    assert_eq!(
        op.discovery().await["require_pushed_authorization_requests"],
        true
    );
    let key = client_key("client-ec-TEST-ONLY-key.pem", None);
    let app = spawn_app_with(
        AppOptions {
            issuer: op.issuer(),
            client_auth: "private_key_jwt",
            oidc_toml: key_toml("client-ec-TEST-ONLY-key.pem", None),
            registration: json!({ "jwks": key.public_jwks() }),
            ..AppOptions::default()
        },
        &op,
    )
    .await;
    assert!(!app.settings().oidc.use_par);

    // The provider refuses a request in the redirect: what /login sent without PAR.
    let plain =
        support::flow::authorize_request(&op, &app.client, &app.public_url, "openid", &[]).await;
    let refused = Browser::new().get(&plain.url).await;
    let refused_at = refused
        .location()
        .map(String::from)
        .unwrap_or_else(|| refused.text());
    assert!(
        refused.status == 400 || refused_at.contains("error="),
        "the provider accepted a request that was not pushed: {} {refused_at}",
        refused.status
    );

    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    assert_eq!(
        parameter_names(&authorize),
        ["client_id", "request_uri"],
        "{authorize}"
    );
    let callback = browser.provider_login(&authorize, "par-required").await;
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(
        app.user(&browser).await.json()["claims"]["sub"],
        "par-required"
    );
}

#[actix_web::test]
async fn use_par_with_a_provider_without_a_par_endpoint_is_a_clear_readiness_error() {
    // The fake provider's discovery names no pushed_authorization_request_endpoint.
    let (_fake, issuer) = start_fake_op();
    let app = spawn_app_with(
        AppOptions {
            issuer: issuer.clone(),
            register: false,
            oidc_toml: "use_par = true\n".into(),
            ..AppOptions::default()
        },
        support::shared_provider(),
    )
    .await;
    let lines = support::eventually(
        Duration::from_secs(10),
        "the discovery failure logged",
        || async {
            let lines = support::logged(&[
                &issuer,
                "oidc.use_par = true, but the provider's metadata names no pushed_authorization_request_endpoint",
            ]);
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await;
    assert!(lines[0].contains("provider discovery failed"), "{lines:?}");
    let ready = app.readyz().await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["checks"]["provider"], "discovering");
    let login = Browser::new()
        .get_with(&app.at("/login"), &[("accept", "application/json")])
        .await;
    assert_eq!(login.status, 503, "{}", login.text());
}
