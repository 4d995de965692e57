//! Issue 11: `private_key_jwt` client authentication (RFC 7523, OpenID Connect Core
//! section 9) against the real provider, which verifies every client assertion
//! with the public key the client registered: code exchange, refresh, revocation
//! (proven by introspection), RS256/PS256/ES256 with PEM and JWK keys, the public
//! keys served at `oidc.jwks_path` (the provider fetching them), `spa-bff keys`,
//! and a wrong key refused by the provider and reported as client authentication.

use crate::support::app::{settings_toml, spawn_app, stored_record, AppOptions, TestApp};
use crate::support::upstream::Upstream;
use crate::support::{self, Browser, RegisteredClient};
use serde_json::{json, Value};
use spa_bff::config::ClientKey;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

pub fn client_key(name: &str, alg: Option<&str>) -> ClientKey {
    ClientKey::load(&fixture(name), alg).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `[oidc]` lines for spa-bff with `private_key_jwt` and this key file.
pub fn key_toml(name: &str, alg: Option<&str>) -> String {
    let alg = alg
        .map(|a| format!("client_key_alg = \"{a}\"\n"))
        .unwrap_or_default();
    format!("client_key_file = {:?}\n{alg}", fixture(name))
}

/// A spa-bff authenticating with `configured` (a fixture key file) to a client
/// registered with the public key of `registered`, with a `/api` route to `upstream`
/// and a refresh skew that makes the first proxied call refresh.
async fn jwt_app(
    configured: (&str, Option<&str>),
    registered: &ClientKey,
    oidc_extra: &str,
    upstream: &Upstream,
) -> TestApp {
    spawn_app(AppOptions {
        client_auth: "private_key_jwt",
        oidc_toml: format!("{}{oidc_extra}", key_toml(configured.0, configured.1)),
        registration: json!({ "jwks": registered.public_jwks() }),
        extra_toml: format!(
            "[proxy]\nrefresh_skew = \"400s\"\nmin_token_lifetime = \"400s\"\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
            upstream.url
        ),
        ..AppOptions::default()
    })
    .await
}

/// A client of the shared provider that may introspect any token.
async fn introspector() -> RegisteredClient {
    support::shared_provider()
        .register_client("http://127.0.0.1:9", "client_secret_basic")
        .await
}

/// Login, a refresh (the first proxied call), logout with revocation: every
/// token-endpoint call of a session, each authenticated with a fresh assertion.
async fn login_refresh_and_revoke(app: &TestApp, upstream: &Upstream) {
    let op = support::shared_provider();
    assert_eq!(
        app.client.metadata["token_endpoint_auth_method"], "private_key_jwt",
        "{}",
        app.client.metadata
    );
    assert!(
        app.client.client_secret.is_empty(),
        "no shared secret at all"
    );
    let browser = Browser::new();
    let user = format!("pkj-{}", support::random_string(4));
    let res = app.login(&browser, &user, "/home").await;
    assert_eq!(res.status, 302, "code exchange: {}", res.text());
    assert_eq!(res.location(), Some("/home"));
    assert_eq!(
        app.user(&browser).await.json()["claims"]["sub"],
        user.as_str()
    );

    let before = stored_record(app, &browser).await;
    let res = browser
        .get_with(&app.at("/api/orders"), &[("x-csrf", "1")])
        .await;
    assert_eq!(res.status, 201, "refresh: {}", res.text());
    let after = stored_record(app, &browser).await;
    assert_ne!(
        after.tokens.refresh_token, before.tokens.refresh_token,
        "the provider rotated the refresh token: the refresh happened"
    );
    assert_eq!(
        upstream.last().bearer(),
        Some(after.tokens.access_token.expose())
    );

    let res = browser
        .request("POST", &app.at("/logout"), &[("x-csrf", "1")], Vec::new())
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let refresh_token = after.tokens.refresh_token.unwrap();
    let inspector = introspector().await;
    support::eventually(
        Duration::from_secs(5),
        "the refresh token revoked with private_key_jwt",
        || async {
            let active = support::flow::is_active(op, &inspector, refresh_token.expose()).await;
            (!active).then_some(())
        },
    )
    .await;
}

#[test]
fn the_fixture_keys_load_in_every_form_and_each_key_has_one_kid() {
    let rsa = client_key("client-rsa-TEST-ONLY-key.pem", None);
    assert_eq!(rsa.alg().name(), "RS256");
    for same in [
        client_key("client-rsa-TEST-ONLY-key-pkcs1.pem", None),
        client_key("client-rsa-TEST-ONLY-key.jwk", None),
        client_key("client-rsa-TEST-ONLY-key.jwk", Some("PS256")),
    ] {
        assert_eq!(same.kid(), rsa.kid());
        assert_eq!(same.public_jwk()["n"], rsa.public_jwk()["n"]);
    }
    let ec = client_key("client-ec-TEST-ONLY-key.pem", None);
    assert_eq!(ec.alg().name(), "ES256");
    assert_eq!(
        client_key("client-ec-TEST-ONLY-key.jwk", None).kid(),
        ec.kid()
    );
    assert_ne!(
        client_key("client-other-rsa-TEST-ONLY-key.pem", None).kid(),
        rsa.kid()
    );
    // The public JWK never carries a private member.
    for jwk in [rsa.public_jwk(), ec.public_jwk()] {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{jwk}");
        }
    }
    for (name, alg, expected) in [
        (
            "client-rsa1024-TEST-ONLY-key.pem",
            None,
            "smaller than 2048 bits",
        ),
        ("client-p384-TEST-ONLY-key.pem", None, "curve P-384"),
        (
            "client-ec-TEST-ONLY-key.pem",
            Some("RS256"),
            "RS256 needs an RSA key",
        ),
        (
            "client-rsa-TEST-ONLY-key.pem",
            Some("ES256"),
            "ES256 needs an EC P-256 key",
        ),
        ("no-such-TEST-ONLY-key.pem", None, "does not exist"),
    ] {
        let err = ClientKey::load(&fixture(name), alg).unwrap_err();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[actix_web::test]
async fn private_key_jwt_with_an_rs256_pem_key_logs_in_refreshes_and_revokes() {
    let upstream = Upstream::start();
    let key = client_key("client-rsa-TEST-ONLY-key.pem", None);
    let app = jwt_app(("client-rsa-TEST-ONLY-key.pem", None), &key, "", &upstream).await;
    login_refresh_and_revoke(&app, &upstream).await;
}

#[actix_web::test]
async fn private_key_jwt_with_an_es256_jwk_logs_in_refreshes_and_revokes() {
    let upstream = Upstream::start();
    let key = client_key("client-ec-TEST-ONLY-key.jwk", None);
    let app = jwt_app(("client-ec-TEST-ONLY-key.jwk", None), &key, "", &upstream).await;
    login_refresh_and_revoke(&app, &upstream).await;
}

#[actix_web::test]
async fn private_key_jwt_with_ps256_and_the_token_endpoint_as_audience_logs_in() {
    let upstream = Upstream::start();
    let key = client_key("client-rsa-TEST-ONLY-key.jwk", Some("PS256"));
    let app = jwt_app(
        ("client-rsa-TEST-ONLY-key.jwk", Some("PS256")),
        &key,
        "client_assertion_audience = \"token_endpoint\"\n",
        &upstream,
    )
    .await;
    login_refresh_and_revoke(&app, &upstream).await;
}

#[actix_web::test]
async fn a_wrong_private_key_is_refused_by_the_provider_and_reported_as_client_authentication() {
    let upstream = Upstream::start();
    let registered = client_key("client-rsa-TEST-ONLY-key.pem", None);
    let app = jwt_app(
        ("client-other-rsa-TEST-ONLY-key.pem", None),
        &registered,
        "",
        &upstream,
    )
    .await;
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let callback = browser.provider_login(&authorize, "mallory").await;
    let res = browser
        .get_with(&app.local(&callback), &[("accept", "text/html")])
        .await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(
        res.text().contains("client authentication"),
        "a clear page: {}",
        res.text()
    );
    assert!(app.session_cookie(&browser).is_none(), "no session");
    let lines = support::logged(&[
        "login failed: the provider refused spa-bff's client authentication",
        "invalid_client",
    ]);
    assert!(!lines.is_empty(), "the log names client authentication");
}

#[actix_web::test]
async fn the_public_key_is_served_at_jwks_path_and_the_provider_fetches_it_from_there() {
    let upstream = Upstream::start();
    let key = client_key("client-ec-TEST-ONLY-key.pem", None);
    let path = "/.well-known/spa-bff/jwks.json";
    let app = spawn_app(AppOptions {
        client_auth: "private_key_jwt",
        oidc_toml: format!(
            "{}jwks_path = \"{path}\"\n",
            key_toml("client-ec-TEST-ONLY-key.pem", None)
        ),
        // No keys registered: the provider must fetch them from spa-bff.
        registration: json!({ "jwks_uri": format!("{{base}}{path}") }),
        extra_toml: format!(
            "[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
            upstream.url
        ),
        ..AppOptions::default()
    })
    .await;
    let served = Browser::new().get(&app.at(path)).await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.json(), key.public_jwks());
    assert!(!served.text().contains("\"d\""), "{}", served.text());

    let browser = Browser::new();
    let res = app.login(&browser, "jwks-uri-user", "/").await;
    assert_eq!(res.status, 302, "{}", res.text());
    assert_eq!(
        app.user(&browser).await.json()["claims"]["sub"],
        "jwks-uri-user"
    );
}

fn spa_bff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spa-bff"))
}

#[test]
fn spa_bff_keys_prints_the_public_jwks_to_register() {
    let dir = tempfile::tempdir().unwrap();
    let key = client_key("client-ec-TEST-ONLY-key.jwk", None);
    let client = RegisteredClient {
        client_id: "cli".into(),
        client_secret: String::new(),
        metadata: Value::Null,
    };
    let opts = AppOptions {
        client_auth: "private_key_jwt",
        oidc_toml: key_toml("client-ec-TEST-ONLY-key.jwk", None),
        ..AppOptions::default_offline()
    };
    let config = dir.path().join("spa-bff.toml");
    std::fs::write(
        &config,
        settings_toml(&opts, "http://127.0.0.1:8080", "p:", &client),
    )
    .unwrap();
    let out = spa_bff()
        .arg("keys")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed, key.public_jwks());
    let jwk = &printed["keys"][0];
    assert_eq!(jwk["kid"], key.kid());
    assert_eq!(
        (
            jwk["kty"].as_str(),
            jwk["alg"].as_str(),
            jwk["use"].as_str()
        ),
        (Some("EC"), Some("ES256"), Some("sig"))
    );
    let private = std::fs::read_to_string(fixture("client-ec-TEST-ONLY-key.jwk")).unwrap();
    let d: Value = serde_json::from_str(&private).unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(d["d"].as_str().unwrap()),
        "the private key was printed"
    );

    // A secret-based configuration has no key to print.
    let secret_opts = AppOptions::default_offline();
    let secret_client = RegisteredClient {
        client_secret: "s".into(),
        ..client
    };
    std::fs::write(
        &config,
        settings_toml(&secret_opts, "http://127.0.0.1:8080", "p:", &secret_client),
    )
    .unwrap();
    let out = spa_bff()
        .arg("keys")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("private_key_jwt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_reports_every_client_key_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spa-bff.toml");
    let base = |oidc: &str| {
        format!(
            "[server]\npublic_url = \"http://127.0.0.1:8080\"\n[oidc]\nissuer = \"https://id.example.com\"\nclient_id = \"c\"\n{oidc}[session]\ninsecure_cookies = true\ncookie_keys = [\"{}\"]\n",
            crate::support::app::TEST_COOKIE_KEY
        )
    };
    for (oidc, expected) in [
        (
            format!(
                "client_auth = \"private_key_jwt\"\nclient_secret = \"never-printed-secret\"\n{}",
                key_toml("client-rsa1024-TEST-ONLY-key.pem", None)
            ),
            vec![
                "oidc.client_secret: is not used with client_auth = private_key_jwt",
                "oidc.client_key_file:",
                "smaller than 2048 bits",
            ],
        ),
        (
            format!(
                "client_auth = \"private_key_jwt\"\n{}jwks_path = \"/login/keys\"\n",
                key_toml("client-p384-TEST-ONLY-key.pem", None)
            ),
            vec![
                "curve P-384",
                "oidc.jwks_path: \"/login/keys\" collides with spa-bff's own path /login",
            ],
        ),
        (
            "client_auth = \"private_key_jwt\"\n".to_string(),
            vec!["oidc.client_key_file: is required (or set SPA_BFF__OIDC__CLIENT_KEY_FILE)"],
        ),
        (
            format!(
                "client_secret = \"never-printed-secret\"\n{}",
                key_toml("client-ec-TEST-ONLY-key.pem", Some("ES256"))
            ),
            vec![
                "oidc.client_key_file: is only used with client_auth = private_key_jwt",
                "oidc.client_key_alg: is only used with client_auth = private_key_jwt",
            ],
        ),
    ] {
        std::fs::write(&config, base(&oidc)).unwrap();
        let out = spa_bff()
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{oidc}\n{err}");
        for needle in expected {
            assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
        }
        assert!(!err.contains("never-printed-secret"), "{err}");
    }
}
