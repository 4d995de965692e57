//! The test provider (tests/op) and the harness, exercised without spa-bff: these tests pin
//! down the provider behaviour that spa-bff's own tests rely on.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::support::flow::{
    authorize_request, exchange_code, is_active, login, refresh, token_request,
};
use crate::support::{
    self, free_port, http_client, jwt_claims, query_param, shared_provider, with_query, Browser,
    Provider, ProviderOptions, RedisServer,
};

const API: &str = "https://api.example.test";

#[actix_web::test]
async fn code_flow_with_pkce_refresh_rotation_and_reuse_detection() {
    support::init();
    let op = shared_provider();
    let base = format!("http://127.0.0.1:{}", free_port());
    let client = op.register_client(&base, "client_secret_basic").await;
    let req = authorize_request(
        op,
        &client,
        &base,
        "openid profile email offline_access",
        &[],
    )
    .await;

    let browser = Browser::new();
    let callback = browser.provider_login(&req.url, "alice").await;
    assert!(
        callback.starts_with(&format!("{base}/callback?")),
        "{callback}"
    );
    assert_eq!(query_param(&callback, "state"), Some(req.state.clone()));
    assert_eq!(query_param(&callback, "iss"), Some(op.issuer()));
    assert!(query_param(&callback, "code").is_some());

    let tokens = exchange_code(op, &client, &base, &callback, &req).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        access.split('.').count(),
        1,
        "no resource: opaque access token"
    );
    let id = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["nonce"], req.nonce.as_str());
    assert_eq!(id["iss"], op.issuer());
    assert_eq!(id["aud"], client.client_id.as_str());
    assert!(
        id.get("email").is_none(),
        "claims go to userinfo when an opaque AT is issued"
    );
    // offline_access is dropped without prompt=consent; refresh tokens come anyway.
    assert!(!tokens["scope"].as_str().unwrap().contains("offline_access"));
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();

    let mut res = http_client()
        .get(op.discovery().await["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let userinfo: Value = res.json().await.unwrap();
    assert_eq!(
        userinfo,
        json!({"sub": "alice", "name": "Alice", "given_name": "Alice", "family_name": "Tester",
               "email": "alice@example.test", "email_verified": true})
    );

    let (status, refreshed) = refresh(op, &client, &rt1).await;
    assert_eq!(status, 200, "{refreshed}");
    let rt2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "refresh token rotated");
    assert!(refreshed["id_token"].is_string());

    let (status, err) = refresh(op, &client, &rt1).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "{err}"
    );
    let (status, err) = refresh(op, &client, &rt2).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "reuse of a rotated token revokes the grant: {err}"
    );

    // The provider session lives on: a second authorization goes through without any form.
    let req2 = authorize_request(op, &client, &base, "openid", &[]).await;
    let first = browser.get(&req2.url).await;
    assert_eq!(first.status, 303);
    assert!(
        first.location().unwrap().contains("/interaction/"),
        "consent again (grant was revoked)"
    );
    let callback2 = browser.provider_login(&req2.url, "ignored").await;
    assert!(query_param(&callback2, "code").is_some(), "{callback2}");
}

#[actix_web::test]
async fn client_secret_basic_and_post_are_interchangeable_but_not_combinable() {
    support::init();
    let op = shared_provider();
    let base = format!("http://127.0.0.1:{}", free_port());
    let client = op.register_client(&base, "client_secret_post").await;
    assert_eq!(
        client.metadata["token_endpoint_auth_method"],
        "client_secret_post"
    );
    let (client_id, secret) = (client.client_id.as_str(), client.client_secret.as_str());
    let browser = Browser::new();
    let endpoint = op.url("/token");
    let redirect_uri = format!("{base}/callback");

    for basic in [true, false] {
        let req = authorize_request(op, &client, &base, "openid", &[]).await;
        let callback = browser.provider_login(&req.url, "bob").await;
        let code = query_param(&callback, "code").unwrap();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", req.verifier.as_str()),
            ("client_id", client_id),
            ("client_secret", secret),
        ];
        if basic {
            // Both mechanisms at once: refused.
            let mut res = http_client()
                .post(&endpoint)
                .basic_auth(client_id, secret)
                .send_form(&form)
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            assert_eq!(
                (res.status().as_u16(), body["error"].as_str()),
                (400, Some("invalid_request")),
                "{body}"
            );
            // Basic alone, although the client registered client_secret_post: accepted.
            form.truncate(4);
            let (status, body) = token_request(op, &client, &form).await;
            assert_eq!(status, 200, "{body}");
        } else {
            let mut res = http_client()
                .post(&endpoint)
                .send_form(&form)
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            assert_eq!(res.status().as_u16(), 200, "{body}");
        }
    }

    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    let mut res = http_client()
        .post(&endpoint)
        .basic_auth(client_id, "wrong-secret")
        .send_form(&form)
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (res.status().as_u16(), body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}

#[actix_web::test]
async fn pkce_is_required() {
    support::init();
    let op = shared_provider();
    let base = format!("http://127.0.0.1:{}", free_port());
    let client = op.register_client(&base, "client_secret_basic").await;
    let req = authorize_request(op, &client, &base, "openid", &[]).await;
    let url = url::Url::parse(&req.url).unwrap();
    let pairs = url
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect::<Vec<_>>();
    let mut without = url.clone();
    without.query_pairs_mut().clear().extend_pairs(pairs);
    let res = Browser::new().get(without.as_str()).await;
    assert_eq!(res.status, 303);
    let to = res.location().unwrap();
    assert_eq!(
        query_param(to, "error").as_deref(),
        Some("invalid_request"),
        "{to}"
    );
}

#[actix_web::test]
async fn resource_indicator_yields_jwt_access_tokens_for_that_audience() {
    support::init();
    let op = shared_provider();
    let (client, tokens) = login(
        op,
        "carol",
        "openid profile api:read api:write",
        &[("resource", API)],
    )
    .await;
    let at = tokens["access_token"].as_str().unwrap();
    let claims = jwt_claims(at);
    assert_eq!(claims["aud"], API);
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["client_id"], client.client_id.as_str());
    assert_eq!(claims["scope"], "api:read api:write");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    // With an audience-bound AT, the ID token carries the profile claims itself.
    assert_eq!(
        jwt_claims(tokens["id_token"].as_str().unwrap())["name"],
        "Carol"
    );

    // userinfo refuses a JWT AT bound to another resource.
    let res = http_client()
        .get(op.url("/me"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // Refresh keeps the granted resource.
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (status, refreshed) = refresh(op, &client, rt).await;
    assert_eq!(status, 200, "{refreshed}");
    let claims = jwt_claims(refreshed["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], API);
}

#[actix_web::test]
async fn stats_revoke_and_short_token_ttl_on_a_provider_started_later() {
    support::init();
    // The port is chosen before the provider runs (as when spa-bff starts first).
    let port = free_port();
    let op = Provider::start(ProviderOptions {
        access_token_ttl_secs: 2,
        port: Some(port),
        ..ProviderOptions::default()
    });
    assert_eq!(op.issuer(), format!("http://127.0.0.1:{port}"));
    let (client, tokens) = login(&op, "dave", "openid", &[]).await;
    assert_eq!(tokens["expires_in"], 2);

    let (status, refreshed) =
        refresh(&op, &client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(op.revoke_grants("dave").await, 1);
    assert_eq!(op.revoke_grants("nobody").await, 0);
    let (status, err) = refresh(&op, &client, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "{err}"
    );

    let stats = op.stats().await;
    assert_eq!(stats["authorization_code"], 1, "{stats}");
    assert_eq!(stats["refresh_token"], 2, "{stats}");
    assert_eq!(stats["refresh_success"], 1, "{stats}");
    assert_eq!(stats["refresh_error"], 1, "{stats}");
    assert_eq!(stats["token_error"]["refresh_token"], 1, "{stats}");
    assert_eq!(stats["requests"]["/token"], 3, "{stats}");
    op.reset_stats().await;
    let stats = op.stats().await;
    assert_eq!(
        (
            stats["authorization_code"].as_u64(),
            stats["refresh_token"].as_u64()
        ),
        (Some(0), Some(0))
    );

    // stop / start_again: same port, empty state.
    op.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    op.start_again();
    assert_eq!(op.discovery().await["issuer"], op.issuer());
}

#[actix_web::test]
async fn aborting_the_interaction_yields_access_denied() {
    support::init();
    let op = shared_provider();
    let base = format!("http://127.0.0.1:{}", free_port());
    let client = op.register_client(&base, "client_secret_basic").await;
    let req = authorize_request(op, &client, &base, "openid", &[]).await;
    let callback = Browser::new().provider_abort(&req.url).await;
    assert!(
        callback.starts_with(&format!("{base}/callback?")),
        "{callback}"
    );
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&callback, "state"), Some(req.state));
    assert_eq!(query_param(&callback, "iss"), Some(op.issuer()));
}

/// A loopback receiver for back-channel logout tokens.
async fn logout_receiver() -> (
    String,
    Arc<Mutex<Vec<String>>>,
    actix_web::dev::ServerHandle,
) {
    let port = free_port();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/backchannel-logout",
            web::post().to(move |form: web::Form<Vec<(String, String)>>| {
                let sink = sink.clone();
                async move {
                    for (k, v) in form.into_inner() {
                        if k == "logout_token" {
                            sink.lock().unwrap().push(v);
                        }
                    }
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", port))
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (
        format!("http://127.0.0.1:{port}/backchannel-logout"),
        got,
        handle,
    )
}

#[actix_web::test]
async fn rp_initiated_logout_sends_back_channel_logout_to_loopback_and_revokes() {
    support::init();
    let op = shared_provider();
    let (bcl_uri, tokens_seen, server) = logout_receiver().await;
    let base = format!("http://127.0.0.1:{}", free_port());
    let client = op
        .register_client_with(
            &base,
            "client_secret_basic",
            // Without session_required, neither the ID token nor the logout token has `sid`.
            json!({ "backchannel_logout_uri": bcl_uri, "backchannel_logout_session_required": true }),
        )
        .await;
    let req = authorize_request(op, &client, &base, "openid offline_access", &[]).await;
    let browser = Browser::new();
    let callback = browser.provider_login(&req.url, "erin").await;
    let tokens = exchange_code(op, &client, &base, &callback, &req).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let sid = jwt_claims(id_token)["sid"].as_str().unwrap().to_owned();
    assert!(browser.cookie(&op.issuer(), "_session").is_some());

    let end_session = op.discovery().await["end_session_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = with_query(
        &end_session,
        &[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", &format!("{base}/")),
            ("state", "bye"),
        ],
    );
    let done = browser.provider_logout_confirm(&url).await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(done.location(), Some(format!("{base}/?state=bye").as_str()));
    assert!(
        browser.cookie(&op.issuer(), "_session").is_none(),
        "session cookie deleted"
    );

    // The provider POSTs the logout tokens before it answers the confirmation.
    let Some(logout_token) = tokens_seen.lock().unwrap().first().cloned() else {
        let errors = op.stats().await["backchannel_errors"].clone();
        panic!("no logout token received; provider back-channel errors: {errors}");
    };
    let claims = jwt_claims(&logout_token);
    assert_eq!(claims["iss"], op.issuer());
    assert_eq!(claims["aud"], client.client_id.as_str());
    assert_eq!(claims["sub"], "erin");
    assert_eq!(claims["sid"], sid.as_str());
    assert!(claims["events"]
        .get("http://schemas.openid.net/event/backchannel-logout")
        .is_some());

    // Logging out at the provider revoked the grant (no offline_access without prompt=consent):
    // the provider says so itself, before anyone used the token (one refresh below then
    // proves it too: a first use fails only for a revoked token).
    let rt = tokens["refresh_token"].as_str().unwrap();
    assert!(!is_active(op, &client, rt).await, "refresh token revoked");
    let (status, err) = refresh(op, &client, rt).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "{err}"
    );
    server.stop(false).await;
}

#[actix_web::test]
async fn introspection_tells_a_live_refresh_token_from_a_revoked_or_rotated_one() {
    support::init();
    let op = shared_provider();
    let (client, tokens) = login(op, "rita", "openid", &[]).await;
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert!(
        is_active(op, &client, &rt1).await,
        "a fresh refresh token is active"
    );
    let (status, refreshed) = refresh(op, &client, &rt1).await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(
        !is_active(op, &client, &rt1).await,
        "rotated: the used one is inactive"
    );
    let rt2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert!(
        is_active(op, &client, &rt2).await,
        "its successor is active"
    );

    // RFC 7009 revocation over plain http (the provider runs on loopback).
    let endpoint = op.discovery().await["revocation_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = http_client()
        .post(&endpoint)
        .basic_auth(&client.client_id, &client.client_secret)
        .send_form(&[
            ("token", rt2.as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(!is_active(op, &client, &rt2).await, "revoked");
}

#[actix_web::test]
async fn browser_cookie_jar_and_follow() {
    support::init();
    let op = shared_provider();
    let browser = Browser::new();
    let origin = op.issuer();
    browser.set_cookie(&origin, "probe", "1");
    assert_eq!(
        browser
            .cookie(&format!("127.0.0.1:{}", op.port), "probe")
            .as_deref(),
        Some("1")
    );
    browser.remove_cookie(&origin, "probe");
    assert_eq!(browser.cookie(&origin, "probe"), None);

    // /auth with a bad client answers an HTML error page, no redirect.
    let (resp, chain) = browser
        .follow(
            &op.url("/auth?client_id=nope&response_type=code&scope=openid"),
            5,
        )
        .await;
    assert_eq!(chain.len(), 1);
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("invalid_client"), "{}", resp.text());

    // The provider's pages load nothing from the internet (their web-font import is removed).
    let base = format!("http://127.0.0.1:{}", free_port());
    let client = op.register_client(&base, "client_secret_basic").await;
    let req = authorize_request(op, &client, &base, "openid", &[]).await;
    let (login_page, chain) = browser.follow(&req.url, 5).await;
    assert_eq!(login_page.status, 200);
    assert!(chain.last().unwrap().contains("/interaction/"), "{chain:?}");
    for page in [&login_page, &resp] {
        assert!(!page.text().contains("https://"), "{}", page.text());
    }
    assert!(browser.cookie(&origin, "_interaction").is_some());
}

#[actix_web::test]
async fn redis_server_stops_and_starts_again_on_the_same_port() {
    support::init();
    let shared = support::shared_redis();
    assert!(shared.is_up());
    let redis = RedisServer::start();
    assert_ne!(redis.port, shared.port);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port));
    redis.stop();
    assert!(!redis.is_up());
    redis.start_again();
    assert!(redis.is_up());
}
