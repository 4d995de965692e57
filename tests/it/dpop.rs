//! Issue 11: DPoP (RFC 9449). With `oidc.dpop = true` every session's tokens are bound
//! to a key of its own that spa-bff holds: the code exchange, refreshes, userinfo and
//! every proxied call prove possession of it, and client-credentials routes do the same
//! with a key per route. Against node-oidc-provider (clients registered with
//! `dpop_bound_access_tokens: true`, so that it refuses a token request without a
//! proof and binds the tokens: `cnf.jkt`), and the recording upstream acting as a DPoP
//! resource server (it checks each proof's signature, key, `htm`, `htu`, `ath`, `iat`,
//! `jti` and nonce against the token's `cnf.jkt`). Nonce challenges from the provider
//! and from upstreams are answered once; the fake provider misbehaves where the real
//! one will not (Bearer tokens despite a proof, a nonce demanded again and again).

use crate::support::app::{
    redis_dump, spawn_app, spawn_app_with, stored_record, AppOptions, TestApp,
};
use crate::support::fake_op::{app_on_fake_op_with, calls, fake_callback, Flaw};
use crate::support::unique;
use crate::support::upstream::{check_dpop, Upstream};
use crate::support::{self, jwt_claims, Browser, Provider, ProviderOptions, Resp};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use spa_bff::oidc::dpop::DpopKey;
use spa_bff::store::Store;
use std::time::Duration;

const CSRF: (&str, &str) = ("x-csrf", "1");
/// The audience of the sessions' JWT access tokens (`oidc.auth_params.resource`).
const API: &str = "https://api.dpop.test";

fn route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!("\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// `[oidc]` lines: DPoP on, JWT access tokens for [`API`] (they carry `cnf.jkt`).
fn dpop_oidc() -> String {
    format!(
        "dpop = true\nscopes = [\"openid\", \"profile\", \"api:read\"]\nauth_params = {{ resource = \"{API}\" }}\n"
    )
}

/// A client the provider gives DPoP-bound tokens only, with a proof on every request.
fn dpop_bound() -> serde_json::Value {
    json!({ "dpop_bound_access_tokens": true })
}

async fn api(browser: &Browser, app: &TestApp, method: &str, path: &str, body: &str) -> Resp {
    browser
        .request(
            method,
            &app.at(path),
            &[CSRF, ("content-type", "text/plain")],
            body.as_bytes().to_vec(),
        )
        .await
}

async fn logged_in(app: &TestApp, user: &str) -> Browser {
    let browser = Browser::new();
    let res = app.login(&browser, user, "/").await;
    assert_eq!(res.status, 302, "login: {}", res.text());
    browser
}

/// The thumbprint of the session's DPoP key, from its decrypted record.
async fn session_jkt(app: &TestApp, browser: &Browser) -> String {
    let record = stored_record(app, browser).await;
    let stored = record.dpop_key.expect("the session has a DPoP key");
    DpopKey::from_stored(&stored).unwrap().thumbprint()
}

/// The `jwk` thumbprint of the proof a request carried, computed here (RFC 7638).
fn proof_jkt(seen: &support::upstream::Seen) -> String {
    use sha2::{Digest, Sha256};
    let proof = seen.header("dpop").expect("a DPoP proof");
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(proof.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let jwk = &header["jwk"];
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn token_of(seen: &support::upstream::Seen) -> String {
    let authorization = seen.header("authorization").expect("Authorization");
    authorization
        .strip_prefix("DPoP ")
        .unwrap_or_else(|| panic!("not the DPoP scheme: {authorization}"))
        .to_string()
}

#[actix_web::test]
async fn every_proxied_call_proves_the_sessions_key_bound_to_its_token_also_after_a_refresh() {
    // Access tokens live 3 s; spa-bff refreshes 1 s before expiry.
    let provider = Provider::start(ProviderOptions {
        access_token_ttl_secs: 3,
        ..ProviderOptions::default()
    });
    let upstream = Upstream::start();
    let app = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            registration: dpop_bound(),
            oidc_toml: dpop_oidc(),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1s\"\n{}",
                route("/api", &format!("{}/dpop", upstream.url), "")
            ),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    let browser = logged_in(&app, &unique("dora")).await;
    let jkt = session_jkt(&app, &browser).await;
    let first = stored_record(&app, &browser).await.tokens.access_token;
    assert_eq!(
        jwt_claims(first.expose())["cnf"]["jkt"],
        jkt.as_str(),
        "the provider bound the login's access token to the session's key"
    );

    for (method, body) in [("GET", ""), ("POST", "hello"), ("DELETE", "")] {
        let res = api(&browser, &app, method, "/api/orders/7?x=1", body).await;
        assert_eq!(res.status, 201, "{method}: {}", res.text());
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(token_of(s), first.expose());
        assert_eq!(proof_jkt(s), jkt);
    }

    // The token expires within the skew: the refresh carries a proof (the provider
    // refuses a refresh of this client without one), and the new token is bound to
    // the same key.
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    let res = api(&browser, &app, "GET", "/api/orders/8", "").await;
    assert_eq!(res.status, 201, "{}", res.text());
    let stats = provider.stats().await;
    assert_eq!(stats["refresh_success"], 1, "{stats}");
    assert_eq!(stats["refresh_error"], 0, "{stats}");
    let refreshed = token_of(&upstream.last());
    assert_ne!(refreshed, first.expose(), "a new access token");
    assert_eq!(jwt_claims(&refreshed)["cnf"]["jkt"], jkt.as_str());
    assert_eq!(proof_jkt(&upstream.last()), jkt);
}

/// RFC 9449 section 10: the authorization request names the session's key
/// (`dpop_jkt`), so the real provider binds the code to it and redeems it only with a
/// proof of that key; the session keeps that key, and its tokens are bound to it.
#[actix_web::test]
async fn the_authorization_code_is_bound_to_the_sessions_key_with_dpop_jkt() {
    let app = spawn_app(AppOptions {
        registration: dpop_bound(),
        oidc_toml: dpop_oidc(),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let jkt = support::query_param(&authorize, "dpop_jkt").expect("dpop_jkt in the request");
    let callback = browser.provider_login(&authorize, &unique("jo")).await;
    assert_eq!(browser.get(&app.local(&callback)).await.status, 302);
    assert_eq!(
        session_jkt(&app, &browser).await,
        jkt,
        "the session keeps that key"
    );
    let token = stored_record(&app, &browser).await.tokens.access_token;
    assert_eq!(jwt_claims(token.expose())["cnf"]["jkt"], jkt.as_str());

    // The provider holds the code to that key: the same login, its pending state given
    // another key before the callback, fails at the code exchange.
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let state = support::query_param(&authorize, "state").unwrap();
    let store = crate::store_contract::store_under(
        &format!("redis_url = {:?}", app.redis_url()),
        &app.prefix,
        spa_bff::session::ExpiryPolicy::new(Duration::from_secs(60), Duration::from_secs(600)),
    );
    let mut login = store
        .take_login(&state)
        .await
        .unwrap()
        .expect("pending login");
    login.dpop_key = Some(DpopKey::generate().unwrap().1);
    store
        .save_login(&state, &login, Duration::from_secs(60))
        .await
        .unwrap();
    let callback = browser.provider_login(&authorize, &unique("jo")).await;
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(app.session_cookie(&browser), None);
}

#[actix_web::test]
async fn userinfo_gets_a_proof_and_two_sessions_prove_two_different_keys() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: dpop_bound(),
        // No resource: opaque access tokens, which the provider's userinfo accepts
        // (with a proof, since they are bound).
        oidc_toml: "dpop = true\n".into(),
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let (ann, ben) = (unique("ann"), unique("ben"));
    let first = logged_in(&app, &ann).await;
    let second = logged_in(&app, &ben).await;
    // `name` comes from userinfo only (the provider's ID token carries `sub`).
    let user = app.user(&first).await.json();
    assert_eq!(user["claims"]["sub"], ann.as_str());
    assert!(
        user["claims"]["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&ann)),
        "userinfo answered the DPoP-bound token: {user}"
    );

    let (jkt1, jkt2) = (
        session_jkt(&app, &first).await,
        session_jkt(&app, &second).await,
    );
    assert_ne!(jkt1, jkt2, "each session has a key of its own");
    for (browser, jkt) in [(&first, &jkt1), (&second, &jkt2)] {
        let res = api(browser, &app, "GET", "/api/me", "").await;
        assert_eq!(res.status, 201, "{}", res.text());
        let seen = upstream.last();
        assert!(seen.header("authorization").unwrap().starts_with("DPoP "));
        assert_eq!(&proof_jkt(&seen), jkt);
    }
}

#[actix_web::test]
async fn a_client_route_gets_a_token_bound_to_its_own_key_and_proves_it_on_every_call() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: json!({
            "dpop_bound_access_tokens": true,
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        }),
        oidc_toml: "dpop = true\n".into(),
        extra_toml: route(
            "/reports",
            &format!("{}/dpop", upstream.url),
            "token = \"client\"\nscopes = [\"reports:read\"]\nresource = \"https://reports.dpop.test\"\n",
        ),
        ..AppOptions::default()
    })
    .await;
    let anonymous = Browser::new();
    for _ in 0..3 {
        let res = anonymous.get_with(&app.at("/reports/daily"), &[CSRF]).await;
        assert_eq!(res.status, 201, "{}", res.text());
    }
    let seen = upstream.seen();
    let token = token_of(&seen[0]);
    assert_eq!(
        jwt_claims(&token)["cnf"]["jkt"],
        proof_jkt(&seen[0]).as_str(),
        "bound to the route's key"
    );
    for s in &seen {
        assert_eq!(token_of(s), token, "the cached token");
        assert_eq!(proof_jkt(s), proof_jkt(&seen[0]), "the route's one key");
    }
    let proofs: std::collections::HashSet<_> =
        seen.iter().map(|s| s.header("dpop").unwrap()).collect();
    assert_eq!(proofs.len(), 3, "a fresh proof per call");
    assert_eq!(
        support::shared_provider()
            .token_requests_of(&app.client.client_id, "client_credentials")
            .await,
        1
    );
}

#[actix_web::test]
async fn a_provider_nonce_challenge_is_answered_with_one_retry_and_the_nonce_kept_for_later_requests(
) {
    const ORDERS: &str = "https://orders.dpop.test";
    let provider = support::shared_provider();
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: dpop_bound(),
        oidc_toml: dpop_oidc(),
        extra_toml: route(
            "/orders",
            &format!("{}/dpop", upstream.url),
            &format!("resource = \"{ORDERS}\"\n"),
        ),
        ..AppOptions::default()
    })
    .await;
    let client = app.client.client_id.clone();
    provider.require_dpop_nonce(&client).await;

    // The code exchange: refused for want of a nonce, then sent once more with it.
    let browser = logged_in(&app, &unique("nina")).await;
    assert_eq!(
        provider
            .token_requests_of(&client, "authorization_code")
            .await,
        2
    );
    // The route's own audience comes from a refresh with its resource: its proof
    // already carries the nonce the provider gave before.
    let res = api(&browser, &app, "GET", "/orders/1", "").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(
        provider.token_requests_of(&client, "refresh_token").await,
        1
    );
    assert_eq!(
        jwt_claims(&token_of(&upstream.last()))["aud"],
        ORDERS,
        "the route's token, bound to the session's key (the upstream checked)"
    );
}

#[actix_web::test]
async fn an_upstream_nonce_challenge_is_answered_once_and_never_in_a_loop() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: dpop_bound(),
        oidc_toml: dpop_oidc(),
        extra_toml: format!(
            "{}{}",
            route("/api", &format!("{}/dpop-nonce", upstream.url), ""),
            route("/loop", &format!("{}/dpop-nonce-always", upstream.url), "")
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("omar")).await;
    let count = |path: &str| {
        upstream
            .seen()
            .iter()
            .filter(|s| s.path.starts_with(path))
            .count()
    };

    // Refused for want of the upstream's nonce, then sent once more with it (a body too).
    let res = api(&browser, &app, "POST", "/api/a", "payload").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(count("/dpop-nonce/"), 2);
    assert_eq!(upstream.last().body, b"payload");
    // The nonce is kept: the next call is accepted at once.
    let res = api(&browser, &app, "GET", "/api/b", "").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(count("/dpop-nonce/"), 3);

    // An upstream that demands a new nonce every time gets one retry; its 401 is
    // passed on.
    let res = api(&browser, &app, "GET", "/loop/x", "").await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(res
        .header("www-authenticate")
        .is_some_and(|v| v.contains("use_dpop_nonce")));
    assert_eq!(count("/dpop-nonce-always/"), 2);
    assert_eq!(app.user(&browser).await.status, 200, "the session is kept");
}

#[actix_web::test]
async fn a_websocket_upgrade_carries_a_proof_of_the_sessions_key() {
    use futures_util::{SinkExt, StreamExt};
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        registration: dpop_bound(),
        oidc_toml: dpop_oidc(),
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("wes")).await;
    let cookie = format!(
        "{}={}",
        app.cookie_name,
        app.session_cookie(&browser).unwrap()
    );
    let (res, mut socket) = awc::Client::new()
        .ws(app.at("/api/ws?room=1"))
        .origin(app.public_url.as_str())
        .set_header("cookie", cookie.as_str())
        .connect()
        .await
        .expect("WebSocket through spa-bff");
    assert_eq!(res.status().as_u16(), 101);
    socket
        .send(awc::ws::Message::Text("hi".into()))
        .await
        .unwrap();
    assert!(matches!(
        socket.next().await,
        Some(Ok(awc::ws::Frame::Text(_)))
    ));
    let handshake = upstream.last();
    assert_eq!(handshake.path, "/ws");
    let url = format!("{}/ws", upstream.url);
    let (_, jkt) = check_dpop(&handshake, &url, None).expect("a valid proof for GET /ws");
    assert_eq!(jkt, session_jkt(&app, &browser).await);
}

#[actix_web::test]
async fn the_sessions_dpop_key_never_reaches_redis_in_plaintext() {
    let app = spawn_app(AppOptions {
        registration: dpop_bound(),
        oidc_toml: "dpop = true\n".into(),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("kim")).await;
    let stored = stored_record(&app, &browser)
        .await
        .dpop_key
        .expect("a DPoP key");
    let der = URL_SAFE_NO_PAD.decode(stored.expose()).unwrap();
    // The private scalar: the 32-byte OCTET STRING of the PKCS#8 ECPrivateKey.
    let at = der
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .expect("the private key in the PKCS#8 document")
        + 2;
    let scalar = &der[at..at + 32];
    let encoded = stored.expose();
    let probe = &encoded[encoded.len() / 2..encoded.len() / 2 + 20];
    let dump = redis_dump(&support::shared_redis().url(), &app.prefix).await;
    assert!(dump.iter().any(|(k, _)| k.ends_with("#data")));
    for (key, value) in &dump {
        assert!(
            !String::from_utf8_lossy(value).contains(probe),
            "{key} holds the key's PKCS#8 document"
        );
        assert!(
            !value.windows(32).any(|w| w == scalar),
            "{key} holds the private key"
        );
        for b64 in [
            URL_SAFE_NO_PAD.encode(scalar),
            base64::engine::general_purpose::STANDARD.encode(scalar),
        ] {
            assert!(!String::from_utf8_lossy(value).contains(&b64[..20]));
        }
    }
}

#[actix_web::test]
async fn a_provider_that_answers_a_proof_with_bearer_tokens_fails_the_login_with_the_reason() {
    let (_fake, issuer, app) = app_on_fake_op_with(
        AppOptions {
            oidc_toml: "dpop = true\n".into(),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    let browser = Browser::new();
    let res = fake_callback(&app, &browser, "/").await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"], "invalid_token_response");
    assert!(app.session_cookie(&browser).is_none());
    let lines = support::logged(&["does not bind tokens for this client"]);
    assert!(!lines.is_empty(), "the log says why ({issuer})");
}

#[actix_web::test]
async fn a_provider_demanding_a_new_nonce_every_time_gets_one_retry_not_a_loop() {
    let (fake, _issuer, app) = app_on_fake_op_with(
        AppOptions {
            oidc_toml: "dpop = true\n".into(),
            ..AppOptions::default()
        },
        |s| s.flaw = Flaw::DpopNonceEveryTime,
    )
    .await;
    let browser = Browser::new();
    let res = fake_callback(&app, &browser, "/").await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"], "code_rejected");
    assert_eq!(calls(&fake, "/token authorization_code"), 2);
    assert!(app.session_cookie(&browser).is_none());
}
