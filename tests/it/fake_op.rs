//! A small fake OpenID provider for what a real, certified provider will not do:
//! ID tokens with a wrong audience or issuer, expired or from the future, signed
//! with `alg: none`, by an unknown key, or tampered with; token responses that are
//! not Bearer or lack an ID token; a mix-up `iss` on the redirect; a token endpoint
//! that fails. spa-bff must refuse every one of them with a clear 4xx/503 and no
//! session, and accept the unflawed control case.

use crate::support::app::{redis_dump, AppOptions};
use crate::support::fake_op::*;
use crate::support::{self, Browser};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

#[actix_web::test]
async fn every_flawed_provider_answer_is_refused_and_creates_no_session() {
    let (fake, _issuer, app) = app_on_fake_op().await;

    let expectations = [
        (Flaw::None, 302, ""),
        (Flaw::WrongAudience, 400, "invalid_id_token"),
        (Flaw::UntrustedExtraAudience, 400, "invalid_id_token"),
        (Flaw::WrongIssuerClaim, 400, "invalid_id_token"),
        (Flaw::Expired, 400, "invalid_id_token"),
        (Flaw::IssuedInTheFuture, 400, "invalid_id_token"),
        (Flaw::WrongNonce, 400, "invalid_id_token"),
        (Flaw::AlgNone, 400, "invalid_id_token"),
        (Flaw::Hs256NotAllowed, 400, "invalid_id_token"),
        (Flaw::TamperedPayload, 400, "invalid_id_token"),
        (Flaw::BadSignatureSameKid, 400, "invalid_id_token"),
        (Flaw::UnknownKid, 400, "invalid_id_token"),
        (Flaw::AtHashMismatch, 400, "invalid_id_token"),
        (Flaw::ForeignAzp, 400, "invalid_id_token"),
        (Flaw::NotBearer, 400, "invalid_token_response"),
        (Flaw::NoIdToken, 400, "invalid_token_response"),
        (Flaw::MixUpIssParameter, 400, "issuer_mismatch"),
        (Flaw::MissingIssParameter, 400, "issuer_mismatch"),
        (Flaw::InvalidGrant, 400, "code_rejected"),
        (Flaw::TokenEndpointDown, 503, "provider_unavailable"),
        (Flaw::None, 302, ""),
    ];
    for (flaw, status, code) in expectations {
        fake.lock().unwrap().flaw = flaw;
        let browser = Browser::new();
        let authorize = app.start_login(&browser, "/after").await;
        let callback = browser.get(&authorize).await;
        assert_eq!(callback.status, 302, "{flaw:?}: fake /auth");
        let res = browser
            .get_with(
                &app.local(callback.location().unwrap()),
                &[("accept", "application/json")],
            )
            .await;
        assert_eq!(res.status, status, "{flaw:?}: {}", res.text());
        if status == 302 {
            assert_eq!(res.location(), Some("/after"));
            assert_eq!(
                app.user(&browser).await.json()["claims"]["name"],
                "Fake User"
            );
            continue;
        }
        assert_eq!(res.json()["error"], code, "{flaw:?}");
        assert!(
            app.session_cookie(&browser).is_none(),
            "{flaw:?} set a session"
        );
        let sessions = redis_dump(&support::shared_redis().url(), &app.prefix)
            .await
            .into_iter()
            .filter(|(k, _)| k.ends_with("#data"))
            .count();
        assert_eq!(
            sessions, 1,
            "{flaw:?}: only the control login made a session"
        );
    }
}

#[actix_web::test]
async fn an_id_token_with_string_timestamps_and_booleans_as_auth0_sends_them_logs_in() {
    let (fake, _issuer, app) = app_on_fake_op().await;
    fake.lock().unwrap().flaw = Flaw::StringTypedClaims;
    let browser = Browser::new();
    let res = fake_callback(&app, &browser, "/after").await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(res.location(), Some("/after"));
    let claims = app.user(&browser).await.json()["claims"].clone();
    assert_eq!(claims["updated_at"], "2024-01-01T00:00:00.000Z", "{claims}");
    assert_eq!(claims["email_verified"], "true", "{claims}");
    assert_eq!(claims["email"], "fake@example.test", "{claims}");
}

#[actix_web::test]
async fn forged_back_channel_logout_tokens_are_refused_and_a_valid_one_ends_the_session() {
    let (fake, issuer, app) = app_on_fake_op().await;
    let browser = Browser::new();
    assert_eq!(fake_callback(&app, &browser, "/").await.status, 302);
    let sid = fake.lock().unwrap().sid.clone();
    assert_eq!(
        app.user(&browser).await.json()["claims"]["sid"],
        sid.as_str()
    );

    let t = now();
    let valid = json!({
        "iss": issuer, "aud": CLIENT_ID, "iat": t, "jti": support::random_string(8),
        "sid": sid, "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let with = |k: &str, v: Value| {
        let mut c = valid.clone();
        c[k] = v;
        c.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        c
    };
    let forged = [
        (
            "wrong audience",
            sign_jwt(
                &with("aud", json!("another-client")),
                KEY_PEM,
                KID,
                "logout+jwt",
            ),
        ),
        (
            "wrong issuer",
            sign_jwt(
                &with("iss", json!("https://evil.example")),
                KEY_PEM,
                KID,
                "logout+jwt",
            ),
        ),
        (
            "no events",
            sign_jwt(&with("events", Value::Null), KEY_PEM, KID, "logout+jwt"),
        ),
        (
            "wrong event",
            sign_jwt(
                &with("events", json!({"urn:other": {}})),
                KEY_PEM,
                KID,
                "logout+jwt",
            ),
        ),
        (
            "with a nonce",
            sign_jwt(&with("nonce", json!("n")), KEY_PEM, KID, "logout+jwt"),
        ),
        (
            "no sid nor sub",
            sign_jwt(&with("sid", Value::Null), KEY_PEM, KID, "logout+jwt"),
        ),
        (
            "no jti",
            sign_jwt(&with("jti", Value::Null), KEY_PEM, KID, "logout+jwt"),
        ),
        (
            "issued long ago",
            sign_jwt(&with("iat", json!(t - 3600)), KEY_PEM, KID, "logout+jwt"),
        ),
        (
            "expired",
            sign_jwt(&with("exp", json!(t - 600)), KEY_PEM, KID, "logout+jwt"),
        ),
        (
            "bad signature",
            sign_jwt(&valid, OTHER_KEY_PEM, KID, "logout+jwt"),
        ),
        (
            "unknown key",
            sign_jwt(&valid, OTHER_KEY_PEM, "unknown-kid", "logout+jwt"),
        ),
        ("alg none", {
            let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
            format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&valid))
        }),
        ("garbage", "not-a-jwt".to_string()),
    ];
    let b = Browser::new();
    for (what, token) in &forged {
        let res = send_logout_token(&b, &app, token).await;
        assert_eq!(res.status, 400, "{what}: {}", res.text());
        assert_eq!(res.json()["error"], "invalid_request", "{what}");
        assert_eq!(
            app.user(&browser).await.status,
            200,
            "{what} ended the session"
        );
    }
    let missing = b.post_form(&app.at("/backchannel-logout"), &[], &[]).await;
    assert_eq!(missing.status, 400);

    // A valid token about a provider session spa-bff never saw ends nothing.
    let mut unknown = with("sid", json!("never-seen-sid"));
    unknown["jti"] = json!(support::random_string(8));
    let res = send_logout_token(&b, &app, &sign_jwt(&unknown, KEY_PEM, KID, "logout+jwt")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        app.user(&browser).await.status,
        200,
        "another sid ended the session"
    );

    let token = sign_jwt(&valid, KEY_PEM, KID, "logout+jwt");
    let res = send_logout_token(&b, &app, &token).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(app.user(&browser).await.status, 401, "the session ended");
    let replay = send_logout_token(&b, &app, &token).await;
    assert_eq!(replay.status, 400, "a jti is accepted once");
}

#[actix_web::test]
async fn a_userinfo_endpoint_stalling_mid_body_does_not_hold_the_login() {
    let (_fake, _issuer, app) = app_on_fake_op_with(AppOptions::default(), |f| {
        f.stalls.insert(Endpoint::Userinfo, 1);
    })
    .await;
    let started = std::time::Instant::now();
    let browser = fake_login(&app).await;
    let deadline = app.settings().oidc.http_timeout;
    // A correctness bound (one provider deadline), not a speed target.
    assert!(
        started.elapsed() < deadline + std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let claims = app.user(&browser).await.json()["claims"].clone();
    assert_eq!(
        claims["name"], "Fake User",
        "ID token claims only: {claims}"
    );
    assert!(claims.get("email").is_none(), "{claims}");
}

#[actix_web::test]
async fn a_discovery_document_stalling_mid_body_is_given_up_and_tried_again() {
    // spawn_app_with waits (20 s at most) for /readyz: discovery must not hang on
    // the first, stalled answer.
    let (fake, _issuer, app) = app_on_fake_op_with(AppOptions::default(), |f| {
        f.stalls.insert(Endpoint::Discovery, 1);
    })
    .await;
    assert_eq!(app.readyz().await.status, 200);
    assert!(calls(&fake, "/.well-known/openid-configuration") >= 2);
    fake_login(&app).await;
}

#[actix_web::test]
async fn concurrent_logins_after_a_key_rotation_share_one_jwks_fetch() {
    let (fake, _issuer, app) = app_on_fake_op().await;
    let (a, b) = (Browser::new(), Browser::new());
    let mut callbacks = Vec::new();
    for browser in [&a, &b] {
        let authorize = app.start_login(browser, "/").await;
        let callback = browser.get(&authorize).await;
        callbacks.push(app.local(callback.location().unwrap()));
    }
    let jwks_before = calls(&fake, "/jwks");
    {
        // The provider rotates its key; its JWKS answers slowly, so the second
        // callback asks for the keys while the first one's fetch is under way.
        let mut f = fake.lock().unwrap();
        f.key = rsa_key(OTHER_KEY_PEM, "fake-key-2");
        f.jwks_delay = std::time::Duration::from_millis(700);
    }
    let (ra, rb) = tokio::join!(a.get(&callbacks[0]), b.get(&callbacks[1]));
    assert_eq!(ra.status, 302, "first: {}", ra.text());
    assert_eq!(rb.status, 302, "second: {}", rb.text());
    assert_eq!(calls(&fake, "/jwks") - jwks_before, 1, "one fetch for both");
    assert_eq!(app.user(&b).await.status, 200);
}

#[actix_web::test]
async fn a_back_channel_logout_whose_deletion_failed_succeeds_when_the_provider_retries() {
    let redis = crate::support::RedisServer::start();
    let (fake, issuer, app) = app_on_fake_op_with(
        AppOptions {
            redis_url: redis.url(),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    let browser = fake_login(&app).await;
    let sid = fake.lock().unwrap().sid.clone();
    let claims = json!({
        "iss": issuer, "aud": CLIENT_ID, "iat": now(), "jti": support::random_string(8),
        "sid": sid, "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let token = sign_jwt(&claims, KEY_PEM, KID, "logout+jwt");

    // Redis takes no writes for longer than redis_timeout (1 s): the deletion fails.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let b = Browser::new();
    let res = send_logout_token(&b, &app, &token).await;
    assert_eq!(res.status, 503, "{}", res.text());
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2200)).await;

    // The provider retries the same logout token: it is not a replay.
    let retry = send_logout_token(&b, &app, &token).await;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(app.user(&browser).await.status, 401, "the session ended");
    let replay = send_logout_token(&b, &app, &token).await;
    assert_eq!(replay.status, 400, "once it succeeded, the jti is used");
}
