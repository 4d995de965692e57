//! Issue 11: client-credentials routes (`token = "client"`): spa-bff's own access
//! token, from the real provider's client credentials grant, with the route's
//! scopes and resource; no user session needed (the CSRF header still is); one
//! token per route, fetched once for a storm of requests, renewed before it
//! expires; a refusing provider is 503 JSON and one log line; client tokens and
//! users' tokens never meet.

use crate::client_auth::{client_key, key_toml};
use crate::support::app::{spawn_app, spawn_app_with, stored_record, AppOptions, TestApp};
use crate::support::upstream::Upstream;
use crate::support::{self, jwt_claims, Browser, Provider, ProviderOptions, Resp};
use futures_util::future::join_all;
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CSRF: [(&str, &str); 1] = [("x-csrf", "1")];

/// A route table entry for a client route.
fn client_route(prefix: &str, upstream: &str, scopes: &str, resource: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\ntoken = \"client\"\nscopes = [\"{scopes}\"]\nresource = \"{resource}\"\n\n"
    )
}

/// Registration metadata of a client allowed the client credentials grant.
fn may_use_client_credentials() -> serde_json::Value {
    json!({ "grant_types": ["authorization_code", "refresh_token", "client_credentials"] })
}

fn unique_prefix(name: &str) -> String {
    format!("/{name}-{}", rand::random::<u32>())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn call(app: &TestApp, browser: &Browser, path: &str) -> Resp {
    browser.get_with(&app.at(path), &CSRF).await
}

#[actix_web::test]
async fn a_client_route_reaches_its_upstream_with_spa_bffs_own_token_and_no_session() {
    let reports = Upstream::start();
    let users_api = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: may_use_client_credentials(),
        extra_toml: format!(
            "{}[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
            client_route(
                "/reports",
                &reports.url,
                "reports:read",
                "https://reports.test"
            ),
            users_api.url
        ),
        ..AppOptions::default()
    })
    .await;

    // No session at all: the route still works, with the app's own token.
    let anonymous = Browser::new();
    let res = call(&app, &anonymous, "/reports/daily?day=1").await;
    assert_eq!(res.status, 201, "{}", res.text());
    let seen = reports.last();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_str()),
        ("/daily", "day=1")
    );
    let token = seen.bearer().expect("a bearer token").to_string();
    let claims = jwt_claims(&token);
    assert_eq!(claims["aud"], "https://reports.test", "{claims}");
    assert_eq!(claims["scope"], "reports:read", "{claims}");
    assert_eq!(
        claims["client_id"],
        app.client.client_id.as_str(),
        "{claims}"
    );

    // The CSRF header is still required.
    let res = anonymous.get(&app.at("/reports/daily")).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(reports.seen().len(), 1, "refused before the upstream");

    // A signed-in user's calls carry the client token there, never the user's token
    // or cookie; the user's own route gets the user's token, never the client's.
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "mixer", "/").await.status, 302);
    let user_token = stored_record(&app, &browser).await.tokens.access_token;
    assert_eq!(call(&app, &browser, "/reports/weekly").await.status, 201);
    let seen = reports.last();
    assert_eq!(
        seen.bearer(),
        Some(token.as_str()),
        "the cached client token"
    );
    assert_ne!(seen.bearer(), Some(user_token.expose()));
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(call(&app, &browser, "/api/me").await.status, 201);
    assert_eq!(users_api.last().bearer(), Some(user_token.expose()));
    assert!(
        users_api
            .seen()
            .iter()
            .all(|s| s.bearer() != Some(token.as_str())),
        "the client token never reaches a user route"
    );
}

#[actix_web::test]
async fn each_client_route_gets_a_token_for_its_own_audience_only() {
    let (reports, orders) = (Upstream::start(), Upstream::start());
    let app = spawn_app(AppOptions {
        registration: may_use_client_credentials(),
        extra_toml: format!(
            "{}{}",
            client_route(
                "/reports",
                &reports.url,
                "reports:read",
                "https://reports.test"
            ),
            client_route("/orders", &orders.url, "orders:read", "https://orders.test")
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    for _ in 0..2 {
        assert_eq!(call(&app, &browser, "/reports/r").await.status, 201);
        assert_eq!(call(&app, &browser, "/orders/o").await.status, 201);
    }
    for (upstream, aud, scope) in [
        (&reports, "https://reports.test", "reports:read"),
        (&orders, "https://orders.test", "orders:read"),
    ] {
        let seen = upstream.seen();
        assert_eq!(seen.len(), 2);
        for s in seen {
            let claims = jwt_claims(s.bearer().unwrap());
            assert_eq!(
                (claims["aud"].as_str(), claims["scope"].as_str()),
                (Some(aud), Some(scope)),
                "{claims}"
            );
        }
    }
    let op = support::shared_provider();
    assert_eq!(
        op.token_requests_of(&app.client.client_id, "client_credentials")
            .await,
        2,
        "one token per route"
    );
}

#[actix_web::test]
async fn a_storm_of_concurrent_calls_on_a_cold_route_makes_one_token_request() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: may_use_client_credentials(),
        extra_toml: client_route(
            "/reports",
            &upstream.url,
            "reports:read",
            "https://reports.test",
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let started = Instant::now();
    let answers = join_all((0..100).map(|i| {
        let path = format!("/reports/item/{i}");
        let (app, browser) = (&app, &browser);
        async move { call(app, browser, &path).await.status }
    }))
    .await;
    eprintln!(
        "100 concurrent calls on a cold client route: {:?}",
        started.elapsed()
    );
    assert!(answers.iter().all(|s| *s == 201), "{answers:?}");
    let tokens: std::collections::HashSet<String> = upstream
        .seen()
        .iter()
        .map(|s| s.bearer().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 1);
    let op = support::shared_provider();
    assert_eq!(
        op.token_requests_of(&app.client.client_id, "client_credentials")
            .await,
        1
    );
}

/// A provider of its own whose tokens live 6 s, and spa-bff with these `[proxy]` keys
/// and a client route `/reports` to a recording upstream.
async fn on_six_second_tokens(proxy: &str) -> (Provider, Upstream, TestApp) {
    let op = Provider::start(ProviderOptions {
        access_token_ttl_secs: 6,
        ..ProviderOptions::default()
    });
    let upstream = Upstream::start();
    let app = spawn_app_with(
        AppOptions {
            issuer: op.issuer(),
            registration: may_use_client_credentials(),
            extra_toml: format!(
                "[proxy]\n{proxy}\n\n{}",
                client_route(
                    "/reports",
                    &upstream.url,
                    "reports:read",
                    "https://reports.test"
                )
            ),
            ..AppOptions::default()
        },
        &op,
    )
    .await;
    (op, upstream, app)
}

#[actix_web::test]
async fn a_client_token_is_renewed_a_skew_before_it_expires_and_never_sent_later() {
    // Tokens live 6 s; renewed 3 s before they expire.
    let (op, upstream, app) = on_six_second_tokens("refresh_skew = \"3s\"").await;
    let browser = Browser::new();
    let skew = 3;
    let mut sent = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        assert_eq!(call(&app, &browser, "/reports/tick").await.status, 201);
        let token = upstream.last().bearer().unwrap().to_string();
        let exp = jwt_claims(&token)["exp"].as_u64().unwrap();
        assert!(
            exp >= now_secs() + skew - 1,
            "a token was sent within the skew of its expiry ({exp})"
        );
        sent.push(token);
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    let distinct: std::collections::BTreeSet<&String> = sent.iter().collect();
    assert_eq!(
        distinct.len(),
        2,
        "one renewal in 4.5 s: {} calls",
        sent.len()
    );
    assert_ne!(sent.first(), sent.last());
    assert_eq!(
        op.token_requests_of(&app.client.client_id, "client_credentials")
            .await,
        2
    );
}

#[actix_web::test]
async fn a_due_client_token_with_time_left_is_used_while_its_successor_is_fetched_in_the_background(
) {
    // Tokens live 6 s; due 4 s before expiry but not before half their life (3 s), and
    // used while the next one is fetched until 1 s before they expire.
    let (op, upstream, app) =
        on_six_second_tokens("refresh_skew = \"4s\"\nmin_token_lifetime = \"1s\"").await;
    let browser = Browser::new();
    assert_eq!(call(&app, &browser, "/reports/first").await.status, 201);
    let first = upstream.last().bearer().unwrap().to_string();
    actix_web::rt::time::sleep(Duration::from_millis(3300)).await;

    // Due now, with about 2.7 s left. The provider holds its next answer 1.5 s: the
    // calls below are answered before it, with the token they have.
    op.delay_token_answers("client_credentials", 1500, 1).await;
    let paths: Vec<String> = (0..10).map(|i| format!("/reports/{i}")).collect();
    let storm = join_all(paths.iter().map(|p| call(&app, &browser, p))).await;
    for res in &storm {
        assert_eq!(res.status, 201, "{}", res.text());
    }
    let sent: std::collections::BTreeSet<String> = upstream
        .seen()
        .iter()
        .map(|s| s.bearer().unwrap().to_string())
        .collect();
    assert_eq!(
        sent,
        std::collections::BTreeSet::from([first.clone()]),
        "the due token was used; no call waited for its successor"
    );
    let next = support::eventually(Duration::from_secs(5), "the next token", || async {
        assert_eq!(call(&app, &browser, "/reports/after").await.status, 201);
        let token = upstream.last().bearer().unwrap().to_string();
        (token != first).then_some(token)
    })
    .await;
    let exp = jwt_claims(&next)["exp"].as_u64().unwrap();
    assert!(exp > now_secs() + 2, "a fresh token ({exp})");
    assert_eq!(
        op.token_requests_of(&app.client.client_id, "client_credentials")
            .await,
        2,
        "one fetch for the first call, one in the background for the storm"
    );
}

#[actix_web::test]
async fn a_provider_that_refuses_the_grant_gives_503_json_and_one_log_line() {
    let upstream = Upstream::start();
    let prefix = unique_prefix("refused");
    // Registered without the client_credentials grant: the provider refuses it.
    let app = spawn_app(AppOptions {
        extra_toml: client_route(
            &prefix,
            &upstream.url,
            "reports:read",
            "https://reports.test",
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let path = format!("{prefix}/x");
    let storm = join_all((0..20).map(|_| call(&app, &browser, &path))).await;
    let mut answers = storm;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        answers.push(call(&app, &browser, &path).await);
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    for res in &answers {
        assert_eq!(res.status, 503, "{}", res.text());
        assert_eq!(res.json()["error"], "provider_unavailable");
        assert_eq!(res.header("retry-after"), Some("5"));
    }
    assert!(upstream.seen().is_empty());
    // No other test makes the provider refuse the grant: every such line is this test's,
    // whether the flow wrote it (with the route) or an error response did (without).
    let lines = support::logged(&["refused the client credentials grant"]);
    assert_eq!(lines.len(), 1, "{} answers, log: {lines:#?}", answers.len());
    assert!(lines[0].contains(&prefix), "{lines:?}");
    // node-oidc-provider says invalid_request ("grant type not allowed for this client").
    assert!(lines[0].contains("HTTP 400 invalid_request"), "{lines:?}");
    let op = support::shared_provider();
    let asked = op
        .token_requests_of(&app.client.client_id, "client_credentials")
        .await;
    eprintln!(
        "{} refused calls over 2.5 s asked the provider {asked} times",
        answers.len()
    );
    assert!(
        asked <= 4,
        "a refusal is remembered, not asked again per request: {asked}"
    );
}

#[actix_web::test]
async fn an_upstream_rejecting_the_client_token_gets_one_new_token_and_one_retry() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: may_use_client_credentials(),
        extra_toml: client_route(
            "/svc",
            &upstream.url,
            "reports:read",
            "https://reports.test",
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    // `/picky` rejects the first token it sees (revoked early, say).
    let res = call(&app, &browser, "/svc/picky").await;
    assert_eq!(res.status, 201, "{}", res.text());
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].bearer(), seen[1].bearer());
    // An upstream that rejects every token: one retry, then its 401 stands (no loop).
    let res = call(&app, &browser, "/svc/always-reject").await;
    assert_eq!(res.status, 401);
    assert_eq!(upstream.seen().len(), 4);
    let op = support::shared_provider();
    assert_eq!(
        op.token_requests_of(&app.client.client_id, "client_credentials")
            .await,
        3
    );
}

#[actix_web::test]
async fn a_wrong_private_key_on_a_client_route_is_503_and_logged_once_as_client_authentication() {
    let upstream = Upstream::start();
    let prefix = unique_prefix("wrongkey");
    let registered = client_key("client-rsa-TEST-ONLY-key.pem", None);
    let app = spawn_app(AppOptions {
        client_auth: "private_key_jwt",
        oidc_toml: key_toml("client-other-rsa-TEST-ONLY-key.pem", None),
        registration: json!({
            "jwks": registered.public_jwks(),
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        }),
        extra_toml: client_route(
            &prefix,
            &upstream.url,
            "reports:read",
            "https://reports.test",
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let path = format!("{prefix}/x");
    for res in join_all((0..10).map(|_| call(&app, &browser, &path))).await {
        assert_eq!(res.status, 503, "{}", res.text());
        assert_eq!(res.json()["error"], "provider_unavailable");
    }
    // Only this test's client route is refused for its client authentication: every
    // such line is its own, whoever wrote it.
    let lines = support::logged(&["refused spa-bff's client authentication (HTTP"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(&prefix), "{lines:?}");
    assert!(lines[0].contains("invalid_client"), "{lines:?}");
}

#[actix_web::test]
async fn client_routes_with_private_key_jwt_get_their_token() {
    let upstream = Upstream::start();
    let key = client_key("client-ec-TEST-ONLY-key.pem", None);
    let app = spawn_app(AppOptions {
        client_auth: "private_key_jwt",
        oidc_toml: key_toml("client-ec-TEST-ONLY-key.pem", None),
        registration: json!({
            "jwks": key.public_jwks(),
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        }),
        extra_toml: client_route(
            "/reports",
            &upstream.url,
            "reports:read",
            "https://reports.test",
        ),
        ..AppOptions::default()
    })
    .await;
    let res = call(&app, &Browser::new(), "/reports/x").await;
    assert_eq!(res.status, 201, "{}", res.text());
    let claims = jwt_claims(upstream.last().bearer().unwrap());
    assert_eq!(claims["client_id"], app.client.client_id.as_str());
}
