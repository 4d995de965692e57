//! The SPA's files with index.html fallback, logout's cross-site protection, and
//! the command line.

use crate::support::app::{settings_toml, spawn_app, AppOptions};
use crate::support::{Browser, RegisteredClient};
use std::process::Command;

#[actix_web::test]
async fn static_files_and_index_fallback_for_client_side_routes_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><h1>demo spa</h1>",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.js"), "console.log('hi')").unwrap();
    std::fs::write(dir.path().join(".env"), "SECRET=1").unwrap();
    let app = spawn_app(AppOptions {
        static_dir: Some(dir.path().display().to_string()),
        ..AppOptions::default()
    })
    .await;
    let b = Browser::new();
    let html = [("accept", "text/html,*/*")];

    let root = b.get_with(&app.at("/"), &html).await;
    assert_eq!(root.status, 200);
    assert!(root.text().contains("demo spa"));

    let js = b.get(&app.at("/app.js")).await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().contains("javascript"));

    let route = b.get_with(&app.at("/orders/42"), &html).await;
    assert_eq!(route.status, 200, "client-side route gets index.html");
    assert!(route.text().contains("demo spa"));
    assert_eq!(route.header("cache-control"), Some("no-cache"));

    let api_like = b
        .get_with(&app.at("/orders/42"), &[("accept", "application/json")])
        .await;
    assert_eq!(api_like.status, 404);
    assert_eq!(api_like.json()["error"], "not_found");
    assert_eq!(b.get(&app.at("/missing.js")).await.status, 404);
    for own in ["/user/profile", "/login/x", "/callback/x", "/healthz/x"] {
        let res = b.get_with(&app.at(own), &html).await;
        assert_eq!(res.status, 404, "{own} must not fall back to the SPA");
    }
    let dotfile = b.get_with(&app.at("/.env"), &[("accept", "*/*")]).await;
    assert!(
        matches!(dotfile.status, 400 | 404),
        "hidden files are never served"
    );
    assert!(!dotfile.text().contains("SECRET"));
    let traversal = b.get(&app.at("/..%2f..%2fetc%2fpasswd")).await;
    assert!(!traversal.text().contains("root:"), "path traversal");
}

#[actix_web::test]
async fn logout_cannot_be_triggered_cross_site() {
    let app = spawn_app(AppOptions::default()).await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "mia", "/").await.status, 302);

    let cross_site: [&[(&str, &str)]; 3] = [
        &[],
        &[("origin", "https://evil.example")],
        &[("sec-fetch-site", "cross-site")],
    ];
    for headers in cross_site {
        let res = browser
            .request("POST", &app.at("/logout"), headers, Vec::new())
            .await;
        assert_eq!(res.status, 403, "{headers:?}: {}", res.text());
    }
    for (method, path) in [
        ("POST", "/user"),
        ("DELETE", "/login"),
        ("PUT", "/readyz"),
        ("GET", "/backchannel-logout"),
    ] {
        let res = browser
            .request(
                method,
                &app.at(path),
                &[("accept", "application/json")],
                Vec::new(),
            )
            .await;
        assert_eq!(res.status, 405, "{method} {path}");
        assert_eq!(res.json()["error"], "method_not_allowed", "{method} {path}");
    }
    let get = browser
        .get_with(&app.at("/logout"), &[("accept", "application/json")])
        .await;
    assert_eq!(get.status, 405);
    assert_eq!(
        app.user(&browser).await.status,
        200,
        "session survived all of that"
    );

    // A same-origin form POST logs out with a 303 to the provider.
    let form = browser
        .post_form(
            &app.at("/logout"),
            &[],
            &[("origin", app.public_url.as_str())],
        )
        .await;
    assert_eq!(form.status, 303, "{}", form.text());
    assert!(form.location().unwrap().contains("id_token_hint="));
    assert_eq!(app.user(&browser).await.status, 401);

    // Logging out without a session just goes home.
    let again = browser
        .request("POST", &app.at("/logout"), &[("x-csrf", "1")], Vec::new())
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["logoutUrl"], format!("{}/", app.public_url));
}

fn spa_bff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spa-bff"))
}

#[test]
fn check_config_prints_ok_or_every_problem_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let client = RegisteredClient {
        client_id: "cli".into(),
        client_secret: "cli-secret-value-never-printed".into(),
        metadata: serde_json::Value::Null,
    };
    let opts = AppOptions {
        redis_url: "redis://127.0.0.1:6379".into(),
        issuer: "https://id.example.com".into(),
        ..AppOptions::default_offline()
    };
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        settings_toml(&opts, "http://127.0.0.1:8080", "p:", &client),
    )
    .unwrap();
    let out = spa_bff()
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\npublic_url = \"ftp://x\"\n[oidc]\nclient_secret = \"cli-secret-value-never-printed\"\n[session]\nsame_site = \"none\"\n",
    )
    .unwrap();
    let out = spa_bff()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.public_url",
        "oidc.issuer",
        "oidc.client_id",
        "session.cookie_keys",
        "session.same_site",
    ] {
        assert!(err.contains(needle), "{needle} missing in:\n{err}");
    }
    assert!(
        !err.contains("cli-secret-value"),
        "a secret was printed:\n{err}"
    );

    // Environment variables fill in and override the file.
    let out = spa_bff()
        .args(["check-config", "--config"])
        .arg(&bad)
        .env("SPA_BFF__SERVER__PUBLIC_URL", "https://app.example.com")
        .env("SPA_BFF__OIDC__ISSUER", "https://id.example.com")
        .env("SPA_BFF__OIDC__CLIENT_ID", "x")
        .env("SPA_BFF__SESSION__SAME_SITE", "strict")
        .env(
            "SPA_BFF__SESSION__COOKIE_KEYS",
            format!("[\"{}\"]", crate::support::app::TEST_COOKIE_KEY),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let help = spa_bff().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("check-config") && help.contains("--config"),
        "{help}"
    );
}
