//! Issue 11, refreshed ID tokens (OpenID Connect Core 12.2): an ID token that comes
//! back with a refresh is checked like the login's (no nonce required, the same `sub`)
//! and then used: `/user`'s claims and logout's `id_token_hint` come from it. One
//! about another user ends the session; an invalid one is dropped while the new access
//! and refresh tokens are kept.

use crate::support::api;
use crate::support::app::{spawn_app, stored_record, AppOptions, TestApp};
use crate::support::fake_op::*;
use crate::support::upstream::Upstream;
use crate::support::{self, jwt_claims, query_param, Browser};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CSRF: (&str, &str) = ("x-csrf", "1");

/// A skew longer than any token lives: every proxied call refreshes.
fn always_refresh(upstream: &Upstream) -> String {
    format!(
        "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
        upstream.url
    )
}

#[actix_web::test]
async fn the_real_providers_refreshed_id_token_becomes_the_logout_hint_and_the_source_of_user_claims(
) {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: always_refresh(&upstream),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let user = format!("rita-{}", support::random_string(4));
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    let at_login = stored_record(&app, &browser).await;
    let login_claims = app.user(&browser).await.json()["claims"].clone();
    let name = format!("R{}", &user[1..]); // the test provider's name for a login
    assert_eq!(login_claims["name"], name.as_str(), "from userinfo");

    // `iat` counts seconds: let the refreshed token's differ.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api(&browser, &app, "/api/x").await.status, 201);
    let refreshed = stored_record(&app, &browser).await;
    let new_id_token = refreshed.tokens.id_token.expose();
    assert!(
        new_id_token != at_login.tokens.id_token.expose(),
        "a new ID token"
    );
    let new_claims = jwt_claims(new_id_token);
    assert_eq!(new_claims["sub"], user.as_str());
    assert!(new_claims["iat"].as_i64() > login_claims["iat"].as_i64());

    let claims = app.user(&browser).await.json()["claims"].clone();
    assert_eq!(
        claims["iat"], new_claims["iat"],
        "/user shows the new token's claims"
    );
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(
        claims["name"],
        name.as_str(),
        "and keeps what userinfo said at login"
    );
    assert!(claims.get("nonce").is_none());

    let res = browser
        .request("POST", &app.at("/logout"), &[CSRF], Vec::new())
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let logout_url = res.json()["logoutUrl"].as_str().unwrap().to_string();
    assert_eq!(
        query_param(&logout_url, "id_token_hint").as_deref(),
        Some(new_id_token)
    );
    // The provider takes the refreshed token as the hint and sends the browser home.
    let done = browser.provider_logout_confirm(&logout_url).await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(
        done.location(),
        Some(format!("{}/", app.public_url).as_str())
    );
}

/// spa-bff on the fake provider, every call refreshing, logged in; the fake's refresh
/// answers carry no ID token yet.
async fn logged_in_on_fake(upstream: &Upstream) -> (Arc<Mutex<FakeState>>, TestApp, Browser) {
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: always_refresh(upstream),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    let browser = fake_login(&app).await;
    (fake, app, browser)
}

async fn user_name(app: &TestApp, browser: &Browser) -> String {
    let res = app.user(browser).await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["claims"]["name"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn a_valid_refreshed_id_token_is_used_and_an_invalid_one_dropped_with_the_new_tokens_kept() {
    for flaw in [
        Flaw::BadSignatureSameKid,
        Flaw::IssuedInTheFuture,
        Flaw::WrongAudience,
        Flaw::WrongIssuerClaim,
        Flaw::Expired,
        Flaw::AlgNone,
        Flaw::TamperedPayload,
        Flaw::ForeignAzp,
        Flaw::UnknownKid,
    ] {
        let upstream = Upstream::start();
        let (fake, app, browser) = logged_in_on_fake(&upstream).await;
        assert_eq!(user_name(&app, &browser).await, "Fake User");

        // A valid refreshed ID token: its claims are the session's now.
        {
            let mut f = fake.lock().unwrap();
            f.name = "Fake User, renamed".into();
            f.refresh_id_token = Some(Flaw::None);
        }
        assert_eq!(api(&browser, &app, "/api/a").await.status, 201);
        assert_eq!(user_name(&app, &browser).await, "Fake User, renamed");
        let valid = stored_record(&app, &browser).await.tokens;
        assert_eq!(
            jwt_claims(valid.id_token.expose())["name"],
            "Fake User, renamed"
        );

        // Then a flawed one: nothing in it is believed, the new tokens are used.
        {
            let mut f = fake.lock().unwrap();
            f.name = "Mallory".into();
            f.refresh_id_token = Some(flaw);
        }
        let res = api(&browser, &app, "/api/b").await;
        assert_eq!(res.status, 201, "{flaw:?}: {}", res.text());
        let kept = stored_record(&app, &browser).await.tokens;
        let issued = fake.lock().unwrap().issued_refresh_tokens.clone();
        assert_eq!(
            kept.refresh_token.as_ref().map(|t| t.expose()),
            issued.last().map(String::as_str),
            "{flaw:?}: the rotated refresh token is kept"
        );
        assert_ne!(kept.access_token, valid.access_token, "{flaw:?}");
        assert_eq!(
            upstream.last().bearer(),
            Some(kept.access_token.expose()),
            "{flaw:?}: the call went out with the new access token"
        );
        assert_eq!(
            kept.id_token, valid.id_token,
            "{flaw:?}: the bad ID token dropped"
        );
        assert_eq!(
            user_name(&app, &browser).await,
            "Fake User, renamed",
            "{flaw:?}"
        );
    }
}

#[actix_web::test]
async fn a_refreshed_id_token_about_another_user_ends_the_session_and_revokes_its_new_refresh_token(
) {
    let upstream = Upstream::start();
    let (fake, app, browser) = logged_in_on_fake(&upstream).await;
    fake.lock().unwrap().refresh_id_token = Some(Flaw::OtherSubject);

    let res = api(&browser, &app, "/api/a").await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(res.json()["error"], "unauthenticated");
    assert!(
        upstream.seen().is_empty(),
        "another user's token is never used"
    );
    assert!(
        app.session_cookie(&browser).is_none(),
        "the cookie is cleared"
    );
    assert_eq!(app.user(&browser).await.status, 401);
    let issued = fake.lock().unwrap().issued_refresh_tokens.clone();
    let new_refresh_token = issued.last().expect("the refresh happened").clone();
    support::eventually(
        Duration::from_secs(5),
        "the new refresh token revoked",
        || async {
            fake.lock()
                .unwrap()
                .revoked
                .contains(&new_refresh_token)
                .then_some(())
        },
    )
    .await;
}
