//! Issue: log in through a real OpenID provider and keep the session in Redis
//! behind an encrypted cookie. Real spa-bff, real Redis, real node-oidc-provider.

use crate::support::app::{redis_dump, spawn_app, stored_record, AppOptions};
use crate::support::{self, query_param, Browser};
use spa_bff::session::{CookieCodec, SessionRecord, SessionRef};

fn json_accept() -> [(&'static str, &'static str); 1] {
    [("accept", "application/json")]
}

#[actix_web::test]
async fn login_user_logout_round_trip_through_the_real_provider() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();

    // /login sends the browser to the provider with PKCE S256, state, nonce and the exact redirect URI.
    let authorize = app.start_login(&browser, "/dashboard?tab=1").await;
    assert!(
        authorize.starts_with(&support::shared_provider().url("/auth")),
        "{authorize}"
    );
    assert_eq!(
        query_param(&authorize, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&authorize, "code_challenge").is_some_and(|c| c.len() == 43));
    assert!(query_param(&authorize, "state").is_some_and(|s| s.len() >= 43));
    assert!(query_param(&authorize, "nonce").is_some_and(|s| s.len() >= 43));
    assert_eq!(
        query_param(&authorize, "redirect_uri"),
        Some(format!("{}/callback", app.public_url))
    );
    assert_eq!(
        query_param(&authorize, "scope").as_deref(),
        Some("openid profile email offline_access")
    );

    // The provider sends the browser back with a code; spa-bff sets the session cookie.
    let callback = browser.provider_login(&authorize, "alice").await;
    assert!(
        query_param(&callback, "iss").is_some(),
        "provider sends RFC 9207 iss"
    );
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(res.location(), Some("/dashboard?tab=1"));
    let set_cookie = res.set_cookies().join("\n");
    assert!(
        set_cookie.contains(&format!("{}=", app.cookie_name)),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(app.session_cookie(&browser).is_some());

    // /user shows the claims and session facts, never a token.
    let user = app.user(&browser).await;
    assert_eq!(user.status, 200, "{}", user.text());
    assert_eq!(user.header("cache-control"), Some("no-store"));
    let body = user.json();
    assert_eq!(body["claims"]["sub"], "alice");
    assert_eq!(body["claims"]["name"], "Alice");
    assert_eq!(body["claims"]["email"], "alice@example.test");
    assert!(body["claims"].get("nonce").is_none());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = body["session"]["expires_at"].as_u64().unwrap();
    assert!(
        expires_at > now + 25 * 60 && expires_at <= now + 30 * 60 + 5,
        "{body}"
    );
    let record = stored_record(&app, &browser).await;
    let text = user.text();
    for token in tokens_of(&record) {
        assert!(!text.contains(&token), "/user leaked a token");
    }

    // POST /logout (fetch style) ends the session and points at end_session.
    let res = browser
        .request("POST", &app.at("/logout"), &[("x-csrf", "1")], Vec::new())
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let logout_url = res.json()["logoutUrl"].as_str().unwrap().to_string();
    let discovery = support::shared_provider().discovery().await;
    assert!(logout_url.starts_with(discovery["end_session_endpoint"].as_str().unwrap()));
    assert_eq!(
        query_param(&logout_url, "id_token_hint").as_deref(),
        Some(record.tokens.id_token.expose())
    );
    assert_eq!(
        query_param(&logout_url, "client_id"),
        Some(app.client.client_id.clone())
    );
    assert_eq!(
        query_param(&logout_url, "post_logout_redirect_uri"),
        Some(format!("{}/", app.public_url))
    );
    assert!(app.session_cookie(&browser).is_none(), "cookie cleared");
    assert!(redis_dump(&support::shared_redis().url(), &app.prefix)
        .await
        .is_empty());

    // The refresh token was revoked at the provider (RFC 7009), in the background,
    // although the provider's endpoints are plain http (on loopback). Asked of the
    // provider itself: the token was never used again, so rotation cannot be the
    // reason it is inactive.
    let refresh_token = record.tokens.refresh_token.as_ref().unwrap().expose();
    support::eventually(
        std::time::Duration::from_secs(5),
        "refresh token revoked",
        || async {
            let active =
                support::flow::is_active(support::shared_provider(), &app.client, refresh_token)
                    .await;
            (!active).then_some(())
        },
    )
    .await;

    // The provider accepts the logout and sends the browser home.
    let done = browser.provider_logout_confirm(&logout_url).await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(
        done.location(),
        Some(format!("{}/", app.public_url).as_str())
    );

    let after = app.user(&browser).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.json()["error"], "unauthenticated");
}

fn tokens_of(record: &SessionRecord) -> Vec<String> {
    let t = &record.tokens;
    let mut out = vec![
        t.access_token.expose().to_string(),
        t.id_token.expose().to_string(),
    ];
    out.extend(t.refresh_token.as_ref().map(|r| r.expose().to_string()));
    out
}

#[actix_web::test]
async fn redis_never_holds_a_token_or_the_cookie_in_plaintext() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let res = app.login(&browser, "bob", "/").await;
    assert_eq!(res.status, 302);
    let record = stored_record(&app, &browser).await;
    let tokens = tokens_of(&record);
    assert_eq!(tokens.len(), 3, "access, ID and refresh tokens were issued");
    let cookie = app.session_cookie(&browser).unwrap();
    let dump = redis_dump(&support::shared_redis().url(), &app.prefix).await;
    assert!(!dump.is_empty());
    for (key, value) in &dump {
        let value = String::from_utf8_lossy(value);
        for secret in tokens.iter().chain([&cookie]) {
            // Any 20-character window of a secret would be a leak.
            let probe = &secret[secret.len() / 2..secret.len() / 2 + 20];
            assert!(!value.contains(probe), "{key} holds a secret in plaintext");
            assert!(!key.contains(probe), "{key} names a secret");
        }
        assert!(
            !value.contains("eyJ"),
            "{key} holds something that looks like a JWT"
        );
    }
    // The session key expires with the idle timeout (30 min here), plus the 5 minutes
    // an ended session is kept so that a returning browser is counted (metrics).
    let client = redis::Client::open(support::shared_redis().url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = dump
        .iter()
        .find(|(k, _)| k.contains("session:{"))
        .map(|(k, _)| k.split('#').next().unwrap().to_string())
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        pttl > 34 * 60 * 1000 && pttl <= 35 * 60 * 1000,
        "PTTL {pttl}"
    );
    // Only the session and its (hashed) user index remain: the login state was consumed.
    for (key, _) in &dump {
        let rest = key.strip_prefix(&app.prefix).unwrap();
        assert!(
            rest.starts_with("session:{") || rest.starts_with("sub:{"),
            "{key}"
        );
        assert!(!key.contains("bob"), "{key} names the user");
    }
}

#[actix_web::test]
async fn a_replayed_callback_is_rejected() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let login_cookies = browser.last_set_cookies();
    let callback = browser.provider_login(&authorize, "carol").await;
    assert_eq!(browser.get(&app.local(&callback)).await.status, 302);

    // Same browser, same callback: the login cookie is gone.
    let replay = browser
        .get_with(&app.local(&callback), &json_accept())
        .await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.json()["error"], "invalid_state");

    // Even with the login cookie put back, the state was one-time (consumed in Redis).
    let (name, value) = login_cookies[0]
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap();
    browser.set_cookie(&app.url, name, value);
    let replay = browser
        .get_with(&app.local(&callback), &json_accept())
        .await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.json()["error"], "invalid_state");
}

#[actix_web::test]
async fn a_forged_or_foreign_state_is_rejected_with_a_clear_page() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();

    let forged = browser
        .get_with(&app.at("/callback?code=abc&state=forged"), &json_accept())
        .await;
    assert_eq!(forged.status, 400);
    assert_eq!(forged.json()["error"], "invalid_state");

    let page = browser
        .get_with(
            &app.at("/callback?code=abc"),
            &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("Sign-in failed"), "{}", page.text());

    // A login started in another browser (login CSRF): the state exists, the binding does not.
    let attacker = Browser::new();
    let authorize = app.start_login(&attacker, "/").await;
    let callback = attacker.provider_login(&authorize, "mallory").await;
    let victim = Browser::new();
    let res = victim.get_with(&app.local(&callback), &json_accept()).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"], "invalid_state");
    assert!(app.session_cookie(&victim).is_none());
}

#[actix_web::test]
async fn a_provider_error_is_shown_as_a_page_not_a_500() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let callback = browser.provider_abort(&authorize).await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    let res = browser
        .get_with(
            &app.local(&callback),
            &[("accept", "text/html,application/xhtml+xml")],
        )
        .await;
    assert_eq!(res.status, 403);
    let page = res.text();
    assert!(page.contains("access_denied"), "{page}");
    assert!(page.contains("<a href=\"/\">"), "{page}");
    assert!(app.session_cookie(&browser).is_none());
    // The state is consumed: the same response cannot be replayed.
    let again = browser
        .get_with(&app.local(&callback), &json_accept())
        .await;
    assert_eq!(again.status, 400);
}

#[actix_web::test]
async fn return_to_outside_the_origin_falls_back_to_root() {
    let app = spawn_app(AppOptions::default()).await;
    for (return_to, expected) in [
        ("/orders/7?x=1", "/orders/7?x=1"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("HTTPS://evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        // Dot segments that resolve to `//host` (the callback used to answer
        // `Location: //evil.example` for the first one).
        ("/.//evil.example", "/"),
        ("/a/..//evil.example", "/"),
        ("/%2e/%2fevil.example", "/"),
        ("/\t/evil.example", "/"),
    ] {
        let browser = Browser::new();
        let res = app.login(&browser, "dave", return_to).await;
        assert_eq!(res.status, 302, "{return_to}");
        assert_eq!(res.location(), Some(expected), "returnTo={return_to:?}");
    }
}

#[actix_web::test]
async fn tampered_truncated_foreign_and_empty_cookies_mean_no_session() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "erin", "/").await.status, 302);
    let good = app.session_cookie(&browser).unwrap();
    assert_eq!(app.user(&browser).await.status, 200);

    let mut flipped = good.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let foreign = {
        // A cookie encrypted under another key, for a real session reference.
        let mut settings = app.settings().session;
        settings.cookie_keys = vec![spa_bff::config::KeyMaterial::new(vec![9u8; 32])];
        CookieCodec::new(&settings)
            .session_cookie(&SessionRef::generate(), std::time::Duration::from_secs(60))
            .value()
            .to_string()
    };
    for bad in [
        String::from_utf8(flipped).unwrap(),
        good[..good.len() / 2].to_string(),
        good[..good.len() - 1].to_string(),
        foreign,
        String::new(),
        "garbage".into(),
        "%00%ff".into(),
        "A".repeat(4000),
    ] {
        let b = Browser::new();
        b.set_cookie(&app.url, &app.cookie_name, &bad);
        let res = app.user(&b).await;
        assert_eq!(res.status, 401, "cookie {bad:?}: {}", res.text());
        assert_eq!(res.json()["error"], "unauthenticated");
    }
    // The real session was not harmed by any of that.
    assert_eq!(app.user(&browser).await.status, 200);
}

#[actix_web::test]
async fn two_tabs_logging_in_at_once_both_succeed() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let tab_a = app.start_login(&browser, "/a").await;
    let tab_b = app.start_login(&browser, "/b").await;
    // Both logins are pending at spa-bff at once. (The provider itself keeps one
    // interaction per browser, so the provider steps run one after the other.)
    let cb_a = browser.provider_login(&tab_a, "frank").await;
    let cb_b = browser.provider_login(&tab_b, "frank").await;
    let res_b = browser.get(&app.local(&cb_b)).await;
    assert_eq!(
        (res_b.status, res_b.location()),
        (302, Some("/b")),
        "{}",
        res_b.text()
    );
    let res_a = browser.get(&app.local(&cb_a)).await;
    assert_eq!(
        (res_a.status, res_a.location()),
        (302, Some("/a")),
        "{}",
        res_a.text()
    );
    assert_eq!(app.user(&browser).await.status, 200);
    // The later login replaced the earlier session rather than leaving it behind.
    let sessions = redis_dump(&support::shared_redis().url(), &app.prefix)
        .await
        .into_iter()
        .filter(|(k, _)| k.ends_with("#data"))
        .count();
    assert_eq!(sessions, 1);
}

#[actix_web::test]
async fn a_session_survives_a_restart_because_it_lives_in_redis() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "grace", "/").await.status, 302);
    let cookie = app.session_cookie(&browser).unwrap();
    app.handle.stop(true).await;

    let restarted = app.start_twin().await;
    browser.set_cookie(&restarted.url, &restarted.cookie_name, &cookie);
    let res = restarted.user(&browser).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["claims"]["sub"], "grace");
}

#[actix_web::test]
async fn client_secret_post_authentication_works() {
    let app = spawn_app(AppOptions {
        client_auth: "client_secret_post",
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let res = app.login(&browser, "heidi", "/").await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(app.user(&browser).await.json()["claims"]["sub"], "heidi");
}

#[actix_web::test]
async fn secure_mode_sets_a_host_prefixed_secure_httponly_cookie() {
    let app = spawn_app(AppOptions {
        insecure_cookies: false,
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.cookie_name, "__Host-spa-bff");
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let login_cookie = browser.last_set_cookies().join("\n");
    assert!(
        login_cookie.contains("__Host-spa-bff-login-"),
        "{login_cookie}"
    );
    assert!(
        login_cookie.contains("Secure") && login_cookie.contains("SameSite=Lax"),
        "{login_cookie}"
    );
    let callback = browser.provider_login(&authorize, "ivan").await;
    let res = browser.get(&app.local(&callback)).await;
    assert_eq!(res.status, 302, "{}", res.text());
    let session = res
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-spa-bff="))
        .expect("session cookie");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(session.contains(attr), "{attr} missing: {session}");
    }
    assert!(
        !session.to_ascii_lowercase().contains("domain="),
        "{session}"
    );
    assert_eq!(app.user(&browser).await.status, 200);
}

#[actix_web::test]
async fn clicking_login_again_and_again_keeps_the_cookie_header_bounded() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    let mut pending = std::collections::HashSet::new();
    let mut last = String::new();
    for _ in 0..12 {
        last = app.start_login(&browser, "/").await;
        for c in browser.last_set_cookies() {
            let name = c.split('=').next().unwrap().to_string();
            if c.contains("Max-Age=0") {
                pending.remove(&name);
            } else {
                pending.insert(name);
            }
        }
        assert!(
            pending.len() <= 5,
            "{} login cookies pending",
            pending.len()
        );
    }
    let callback = browser.provider_login(&last, "quinn").await;
    assert_eq!(browser.get(&app.local(&callback)).await.status, 302);
}

#[actix_web::test]
async fn a_pending_login_costs_under_a_kilobyte_of_redis_even_with_the_longest_return_to() {
    use spa_bff::oidc::login::MAX_RETURN_TO;
    let app = spawn_app(AppOptions::default()).await;
    let longest = format!("/{}", "a".repeat(MAX_RETURN_TO - 1));
    let redis = redis::Client::open(support::shared_redis().url()).unwrap();
    let mut c = redis.get_multiplexed_async_connection().await.unwrap();
    for return_to in [
        longest.clone(),
        // Longer than the cap, raw or once percent-encoded: stored as `/`.
        format!("/{}", "a".repeat(2040)),
        format!("/{}", "\u{e9}".repeat(1000)),
        format!("/{}", "%25".repeat(680)),
    ] {
        let browser = Browser::new();
        // With everything else /login keeps: prompt=login (its start time) and the
        // largest max_age; the longest login_hint is passed on, not kept.
        let url = support::with_query(
            &app.at("/login"),
            &[
                ("returnTo", return_to.as_str()),
                ("prompt", "login"),
                ("max_age", "4294967295"),
                ("login_hint", &"h".repeat(128)),
            ],
        );
        assert_eq!(browser.get(&url).await.status, 302);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}login:*", app.prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&keys[0])
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut c)
            .await
            .unwrap();
        eprintln!(
            "pending login, returnTo of {} bytes: {bytes} bytes in Redis (key {} bytes)",
            return_to.len(),
            keys[0].len()
        );
        assert!(
            bytes < 900,
            "a pending login costs {bytes} bytes with a returnTo of {} bytes",
            return_to.len()
        );
        let _: () = redis::cmd("DEL")
            .arg(&keys[0])
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // The longest allowed returnTo still brings the user back.
    let browser = Browser::new();
    let res = app.login(&browser, "lena", &longest).await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(res.location(), Some(longest.as_str()));
}

#[actix_web::test]
async fn logging_in_as_someone_else_revokes_the_replaced_sessions_refresh_token() {
    let app = spawn_app(AppOptions::default()).await;
    let op = support::shared_provider();
    let browser = Browser::new();
    let first_user = format!("uri-{}", support::random_string(4));
    assert_eq!(app.login(&browser, &first_user, "/").await.status, 302);
    let replaced = stored_record(&app, &browser).await;
    let replaced_rt = replaced.tokens.refresh_token.clone().unwrap();
    assert!(support::flow::is_active(op, &app.client, replaced_rt.expose()).await);

    // A shared computer: the provider session ends (its cookie is gone), the next
    // person logs in from the same browser.
    browser.remove_cookie(&op.issuer(), "_session");
    let second_user = format!("vic-{}", support::random_string(4));
    assert_eq!(app.login(&browser, &second_user, "/").await.status, 302);
    assert_eq!(
        app.user(&browser).await.json()["claims"]["sub"],
        second_user.as_str()
    );

    // Asked of the provider, for a token nobody used again (rotation is not the reason).
    support::eventually(
        std::time::Duration::from_secs(5),
        "the replaced session's refresh token revoked",
        || async {
            let active = support::flow::is_active(op, &app.client, replaced_rt.expose()).await;
            (!active).then_some(())
        },
    )
    .await;
    let current = stored_record(&app, &browser).await;
    let current_rt = current.tokens.refresh_token.unwrap();
    assert!(
        support::flow::is_active(op, &app.client, current_rt.expose()).await,
        "the new session's refresh token is untouched"
    );
}

#[actix_web::test]
async fn logging_in_again_in_the_same_provider_session_keeps_the_new_session_refreshable() {
    // The provider issues both logins under one grant; revoking the replaced refresh
    // token would revoke the new one too (node-oidc-provider revokes per grant).
    let app = spawn_app(AppOptions::default()).await;
    let op = support::shared_provider();
    let browser = Browser::new();
    let user = format!("wes-{}", support::random_string(4));
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
    let current = stored_record(&app, &browser).await;
    let rt = current.tokens.refresh_token.unwrap();
    assert!(support::flow::is_active(op, &app.client, rt.expose()).await);
}
