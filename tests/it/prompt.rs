//! Issue 11: silent login and prompt control. `/login` passes `prompt` (`none` or
//! `login`), `max_age` and `login_hint` to the provider and ignores everything
//! else; a silent login without a provider session comes back to `returnTo` with
//! `spa_bff_login=<reason>` and no session; a fresh sign-in that was asked for must
//! show in the ID token's `auth_time`.

use crate::support::app::{redis_dump, spawn_app, AppOptions, TestApp};
use crate::support::fake_op::{app_on_fake_op, Flaw};
use crate::support::{self, query_param, with_query, Browser, Resp};

fn json_accept() -> [(&'static str, &'static str); 1] {
    [("accept", "application/json")]
}

/// `GET /login` with these query pairs; returns where it redirects.
async fn login_url(app: &TestApp, browser: &Browser, pairs: &[(&str, &str)]) -> String {
    let res = browser.get(&with_query(&app.at("/login"), pairs)).await;
    assert_eq!(res.status, 302, "GET /login: {}", res.text());
    res.location().unwrap().to_string()
}

/// Follows the provider's redirects from `authorize` as long as they stay at the
/// provider; returns the redirect out of it (to spa-bff), or the page the provider
/// showed instead.
async fn through_provider(browser: &Browser, authorize: &str) -> Result<String, Resp> {
    let op = url::Url::parse(authorize).unwrap().origin();
    let mut url = authorize.to_string();
    for _ in 0..10 {
        let res = browser.get(&url).await;
        if !res.is_redirect() {
            return Err(res);
        }
        let next = support::browser::resolve(&url, res.location().unwrap());
        if url::Url::parse(&next).unwrap().origin() != op {
            return Ok(next);
        }
        url = next;
    }
    panic!("the provider kept redirecting: {url}");
}

#[actix_web::test]
async fn a_silent_login_with_a_provider_session_signs_in_without_a_page() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let user = format!("silent-{}", support::random_string(4));
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    // The app forgets its session; the provider still has one (and the grant).
    browser.remove_cookie(&app.url, &app.cookie_name);
    assert_eq!(app.user(&browser).await.status, 401);

    let authorize = login_url(&app, &browser, &[("returnTo", "/x"), ("prompt", "none")]).await;
    assert_eq!(query_param(&authorize, "prompt").as_deref(), Some("none"));
    let callback = through_provider(&browser, &authorize)
        .await
        .unwrap_or_else(|page| panic!("the provider showed a page: {}", page.text()));
    assert!(query_param(&callback, "code").is_some(), "{callback}");
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(res.location(), Some("/x"));
    assert_eq!(
        app.user(&browser).await.json()["claims"]["sub"],
        user.as_str()
    );
}

#[actix_web::test]
async fn a_silent_login_without_a_provider_session_returns_to_return_to_with_the_reason() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let authorize = login_url(
        &app,
        &browser,
        &[("returnTo", "/orders?tab=2#list"), ("prompt", "none")],
    )
    .await;
    let callback = through_provider(&browser, &authorize)
        .await
        .unwrap_or_else(|page| panic!("the provider showed a page: {}", page.text()));
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("login_required")
    );
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 302, "no error page: {}", res.text());
    assert_eq!(
        res.location(),
        Some("/orders?tab=2&spa_bff_login=login_required#list")
    );
    assert!(app.session_cookie(&browser).is_none(), "no session");
    assert_eq!(app.user(&browser).await.status, 401);
    let sessions = redis_dump(&support::shared_redis().url(), &app.prefix)
        .await
        .into_iter()
        .filter(|(k, _)| k.ends_with("#data"))
        .count();
    assert_eq!(sessions, 0);
}

#[actix_web::test]
async fn only_a_silent_login_turns_the_silent_errors_into_a_return_and_only_those() {
    let (fake, _issuer, app) = app_on_fake_op().await;
    for (prompt, error, expected_status, expected_location) in [
        (
            Some("none"),
            "login_required",
            302,
            Some("/a?spa_bff_login=login_required"),
        ),
        (
            Some("none"),
            "consent_required",
            302,
            Some("/a?spa_bff_login=consent_required"),
        ),
        (
            Some("none"),
            "interaction_required",
            302,
            Some("/a?spa_bff_login=interaction_required"),
        ),
        (
            Some("none"),
            "account_selection_required",
            302,
            Some("/a?spa_bff_login=account_selection_required"),
        ),
        // Any other error, and these errors when the login was not silent: the page.
        (Some("none"), "access_denied", 403, None),
        (Some("none"), "server_error", 403, None),
        (None, "login_required", 403, None),
        (Some("login"), "login_required", 403, None),
    ] {
        fake.lock().unwrap().authorize_error = Some(error);
        let browser = Browser::new();
        let mut pairs = vec![("returnTo", "/a")];
        pairs.extend(prompt.map(|p| ("prompt", p)));
        let authorize = login_url(&app, &browser, &pairs).await;
        let callback = browser.get(&authorize).await;
        let res = browser
            .get_with(&app.local(callback.location().unwrap()), &json_accept())
            .await;
        assert_eq!(
            res.status,
            expected_status,
            "{prompt:?} {error}: {}",
            res.text()
        );
        assert_eq!(res.location(), expected_location, "{prompt:?} {error}");
        if expected_status != 302 {
            assert_eq!(res.json()["error"], "provider_error");
        }
        assert!(app.session_cookie(&browser).is_none());
    }
}

#[actix_web::test]
async fn prompt_login_with_max_age_asks_for_the_password_again_and_auth_time_is_fresh() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let user = format!("again-{}", support::random_string(4));
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    // Without prompt control, the provider's session signs the user in again at once.
    let quiet = login_url(&app, &browser, &[("returnTo", "/")]).await;
    assert!(
        through_provider(&browser, &quiet).await.is_ok(),
        "no page with a session"
    );
    // auth_time has a resolution of a second: make the new sign-in a later one.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1100)).await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let authorize = login_url(
        &app,
        &browser,
        &[
            ("returnTo", "/again"),
            ("prompt", "login"),
            ("max_age", "0"),
        ],
    )
    .await;
    assert_eq!(query_param(&authorize, "prompt").as_deref(), Some("login"));
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("0"));
    let page = through_provider(&browser, &authorize)
        .await
        .expect_err("the provider asks for the password again");
    let html = page.text();
    assert!(
        page.status == 200 && html.contains("name=\"password\""),
        "the login form: {html}"
    );
    let callback = browser.provider_login(&authorize, &user).await;
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(res.location(), Some("/again"));
    let claims = app.user(&browser).await.json()["claims"].clone();
    let auth_time = claims["auth_time"].as_u64().expect("auth_time");
    assert!(auth_time >= started, "auth_time {auth_time} < {started}");
}

#[actix_web::test]
async fn a_stale_or_missing_auth_time_is_refused_when_a_fresh_sign_in_was_asked_for() {
    let (fake, _issuer, app) = app_on_fake_op().await;
    for (flaw, pairs, expected) in [
        (Flaw::None, vec![("prompt", "login")], 302),
        (Flaw::None, vec![("max_age", "60")], 302),
        (Flaw::StaleAuthTime, vec![], 302),
        (Flaw::StaleAuthTime, vec![("prompt", "login")], 400),
        (Flaw::StaleAuthTime, vec![("max_age", "600")], 400),
        (Flaw::StaleAuthTime, vec![("max_age", "7200")], 302),
        (Flaw::NoAuthTime, vec![], 302),
        (Flaw::NoAuthTime, vec![("prompt", "login")], 400),
        (Flaw::NoAuthTime, vec![("max_age", "7200")], 400),
    ] {
        fake.lock().unwrap().flaw = flaw;
        let browser = Browser::new();
        let mut query = vec![("returnTo", "/fresh")];
        query.extend(pairs.iter().copied());
        let authorize = login_url(&app, &browser, &query).await;
        let callback = browser.get(&authorize).await;
        let res = browser
            .get_with(&app.local(callback.location().unwrap()), &json_accept())
            .await;
        assert_eq!(res.status, expected, "{flaw:?} {pairs:?}: {}", res.text());
        if expected == 400 {
            assert_eq!(
                res.json()["error"],
                "stale_authentication",
                "{flaw:?} {pairs:?}"
            );
            assert!(app.session_cookie(&browser).is_none());
        }
    }
}

#[actix_web::test]
async fn login_passes_prompt_max_age_and_login_hint_on_and_ignores_everything_else() {
    let (fake, _issuer, app) = app_on_fake_op().await;
    let browser = Browser::new();
    let hint = "alice@example.test";
    let authorize = login_url(
        &app,
        &browser,
        &[
            ("returnTo", "/"),
            ("prompt", "login"),
            ("max_age", "300"),
            ("login_hint", hint),
            ("acr_values", "urn:gold"),
            ("scope", "admin"),
            ("redirect_uri", "https://evil.example/callback"),
            ("response_mode", "form_post"),
            ("client_id", "someone-else"),
        ],
    )
    .await;
    browser.get(&authorize).await;
    let sent = fake.lock().unwrap().last_authorize.clone();
    let value = |name: &str| -> Vec<&str> {
        sent.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(value("prompt"), ["login"]);
    assert_eq!(value("max_age"), ["300"]);
    assert_eq!(value("login_hint"), [hint]);
    assert_eq!(value("acr_values"), Vec::<&str>::new());
    assert_eq!(value("response_mode"), Vec::<&str>::new());
    assert_eq!(value("scope"), ["openid profile email offline_access"]);
    assert_eq!(value("client_id"), [app.client.client_id.as_str()]);
    assert_eq!(
        value("redirect_uri"),
        [format!("{}/callback", app.public_url).as_str()]
    );

    // Values outside the rules are dropped, not passed on.
    let authorize = login_url(
        &app,
        &browser,
        &[
            ("prompt", "consent"),
            ("max_age", "-1"),
            ("login_hint", &"x".repeat(129)),
        ],
    )
    .await;
    browser.get(&authorize).await;
    let sent = fake.lock().unwrap().last_authorize.clone();
    for name in ["prompt", "max_age", "login_hint"] {
        assert!(!sent.iter().any(|(k, _)| k == name), "{name} in {sent:?}");
    }
}
