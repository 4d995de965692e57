//! Issue 8, the HTTP edge: what an attacker's input or a flaky network can do to a
//! proxied request, tried against real spa-bff, Redis, provider and upstream (and a
//! raw TCP client where awc would clean the request up first).

use crate::support::app::{spawn_app, AppOptions, TestApp};
use crate::support::raw::{self, blocking, head, RawResponse};
use crate::support::unique;
use crate::support::upstream::Upstream;
use crate::support::{self, Browser, RedisServer, Resp};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!("\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

const CSRF: (&str, &str) = ("x-csrf", "1");

async fn api(browser: &Browser, app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut all = vec![CSRF, ("accept", "application/json")];
    all.extend_from_slice(headers);
    browser
        .request("GET", &app.at(path), &all, Vec::new())
        .await
}

async fn logged_in(app: &TestApp, user: &str) -> Browser {
    let browser = Browser::new();
    let res = app.login(&browser, user, "/").await;
    assert_eq!(res.status, 302, "login: {}", res.text());
    browser
}

/// `Cookie: name=value` for this browser's session, for raw requests.
fn cookie_header(app: &TestApp, browser: &Browser) -> String {
    format!(
        "Cookie: {}={}",
        app.cookie_name,
        app.session_cookie(browser).expect("session cookie")
    )
}

// ---------------------------------------------------------------------------------------
// Item 2: ambiguous proxied paths

#[actix_web::test]
async fn ambiguous_paths_are_refused_with_400_and_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &format!("{}/v1", upstream.url), ""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("amy")).await;
    let cookie = cookie_header(&app, &browser);

    for path in [
        "/api/..;/admin",
        "/api/x/..;/..;/admin",
        "/api/x;jsessionid=1",
        "/api/%2e%2e/admin",
        "/api/.%2e/admin",
        "/api/a%2f..%2f..%2fadmin",
        "/api/..%5cadmin",
        "/api/a\\..\\..\\admin",
        "/api/%252e%252e/admin",
        "/api/a%00b",
        "/api/%c0%ae%c0%ae/admin",
        "/api//admin",
        "/api/..",
    ] {
        let req = head(
            "GET",
            path,
            &[
                cookie.clone(),
                "X-CSRF: 1".into(),
                "Accept: application/json".into(),
            ],
        );
        let res = raw::exchange(&app.url, req).await;
        if res.status == 400 && res.header("content-type") != Some("application/json") {
            // actix-http itself refuses what is not a URI at all (a raw backslash).
            continue;
        }
        assert_eq!(res.status, 400, "{path}: {}", res.text());
        assert_eq!(res.json()["error"], "bad_path", "{path}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    // Ordinary paths, encoded characters in names and query strings keep working.
    for (path, seen_path, seen_query) in [
        ("/api/files/caf%C3%A9", "/v1/files/caf%C3%A9", ""),
        (
            "/api/files/a%20b.txt?q=%2F..%2F&x=;",
            "/v1/files/a%20b.txt",
            "q=%2F..%2F&x=;",
        ),
        ("/api/a..b/.well-known/", "/v1/a..b/.well-known/", ""),
    ] {
        let res = api(&browser, &app, path, &[]).await;
        assert_eq!(res.status, 201, "{path}: {}", res.text());
        let seen = upstream.last();
        assert_eq!(
            (seen.path.as_str(), seen.query.as_str()),
            (seen_path, seen_query)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Item 3: override headers and X-Forwarded-For

#[actix_web::test]
async fn method_and_url_override_headers_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, "methods = [\"GET\"]"),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("ben")).await;
    let overrides = [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-original-url", "/admin/users"),
        ("x-rewrite-url", "/admin/users"),
        ("x-forwarded-prefix", "/admin"),
        ("x-real-ip", "127.0.0.1"),
    ];
    let res = api(&browser, &app, "/api/orders", &overrides).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let seen = upstream.last();
    assert_eq!(seen.method, "GET");
    for (name, _) in overrides {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
}

#[actix_web::test]
async fn x_forwarded_for_keeps_only_hops_reported_by_trusted_proxies() {
    let upstream = Upstream::start();
    let spoofed = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.9.9.9")];

    // Nobody trusted: the peer is the client, the client's chain is dropped.
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, "token = \"none\""),
        ..AppOptions::default()
    })
    .await;
    let res = api(&Browser::new(), &app, "/api/a", &spoofed).await;
    assert_eq!(res.status, 201);
    assert_eq!(upstream.last().header("x-forwarded-for"), Some("127.0.0.1"));

    // Behind trusted proxies (127.0.0.1 here, and a 10/8 hop): the client is the
    // rightmost hop that is not trusted; the spoofed hop left of it is dropped.
    let app = spawn_app(AppOptions {
        server_toml: "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n".into(),
        extra_toml: route("/api", &upstream.url, "token = \"none\""),
        ..AppOptions::default()
    })
    .await;
    let res = api(&Browser::new(), &app, "/api/b", &spoofed).await;
    assert_eq!(res.status, 201);
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("198.51.100.7, 10.9.9.9, 127.0.0.1")
    );
}

// ---------------------------------------------------------------------------------------
// Item 4: shared caches

#[actix_web::test]
async fn answers_to_token_bearing_requests_are_kept_out_of_shared_caches() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: [
            route("/api", &upstream.url, ""),
            route("/shared", &upstream.url, "allow_shared_cache = true"),
            route("/public", &upstream.url, "token = \"none\""),
            route("/opt", &upstream.url, "token = \"optional\""),
        ]
        .concat(),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("cara")).await;
    let cacheable = "/cache?cc=public,%20max-age=600,%20s-maxage=600";

    let res = api(&browser, &app, &format!("/api{cacheable}"), &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("cache-control"), Some("private, max-age=600"));
    assert_eq!(res.header("vary"), Some("Cookie"));
    let res = api(&browser, &app, "/api/cache?cc=no-store", &[]).await;
    assert_eq!(res.header("cache-control"), Some("private, no-store"));
    let res = api(&browser, &app, "/api/cache", &[]).await;
    assert_eq!(res.header("cache-control"), Some("private"));
    let res = api(&browser, &app, &format!("/opt{cacheable}"), &[]).await;
    assert_eq!(res.header("cache-control"), Some("private, max-age=600"));

    // The route opted out; no token was sent: the upstream's word stands.
    let public = "public, max-age=600, s-maxage=600";
    let res = api(&browser, &app, &format!("/shared{cacheable}"), &[]).await;
    assert_eq!(res.header("cache-control"), Some(public));
    let res = api(&browser, &app, &format!("/public{cacheable}"), &[]).await;
    assert_eq!(res.header("cache-control"), Some(public));
    let res = api(&Browser::new(), &app, &format!("/opt{cacheable}"), &[]).await;
    assert_eq!(res.header("cache-control"), Some(public));
}

// ---------------------------------------------------------------------------------------
// Item 15: an upstream never sets spa-bff's own cookies

#[actix_web::test]
async fn an_upstream_cannot_set_or_clear_spa_bffs_own_cookies_even_when_allowed() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, "allow_set_cookie = true"),
        ..AppOptions::default()
    })
    .await;
    let attacker = logged_in(&app, &unique("mallory")).await;
    let planted = app.session_cookie(&attacker).unwrap();
    let victim = logged_in(&app, &unique("victor")).await;
    let name = &app.cookie_name;
    let query = support::form_encode(&[
        ("c", &format!("{name}={planted}; Path=/api")),
        ("c", &format!("{}={planted}; Path=/", name.to_uppercase())),
        ("c", &format!("{name}=; Max-Age=0; Path=/")),
        ("c", &format!("{name}-login-0123456789abcdef=x; Path=/")),
        ("c", "theme=dark; Path=/"),
    ]);
    let res = api(&victim, &app, &format!("/api/cookies?{query}"), &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.set_cookies(), vec!["theme=dark; Path=/".to_string()]);
    // The victim is still the victim.
    let me = app.user(&victim).await.json();
    assert!(
        me["claims"]["sub"].as_str().unwrap().starts_with("victor"),
        "{me}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 10: slow and oversized requests

#[actix_web::test]
async fn a_request_body_that_stalls_is_answered_408() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        server_toml: "request_body_timeout = \"1s\"\n".into(),
        extra_toml: route("/api", &upstream.url, "token = \"none\""),
        ..AppOptions::default()
    })
    .await;
    // A small body (buffered for a retry) and a large one (streamed to the upstream):
    // both promise more than they send, then stop.
    for (promised, sent) in [(1000usize, 10usize), (1 << 20, 100_000)] {
        let base = app.url.clone();
        let started = Instant::now();
        let res: RawResponse = blocking(move || {
            let mut s = raw::connect(&base, Duration::from_secs(20));
            let mut req = head(
                "POST",
                "/api/sink",
                &[
                    "X-CSRF: 1".into(),
                    "Accept: application/json".into(),
                    format!("Content-Length: {promised}"),
                ],
            );
            req.extend(std::iter::repeat_n(b'a', sent));
            s.write_all(&req).unwrap();
            raw::read_response(&mut BufReader::new(s), false)
        })
        .await;
        let waited = started.elapsed();
        assert_eq!(res.status, 408, "{promised}: {} {}", res.status, res.text());
        assert_eq!(res.json()["error"], "request_timeout");
        eprintln!("stalled body of {promised} bytes: 408 after {waited:?}");
    }
    // The back-channel endpoint, too.
    let base = app.url.clone();
    let res = blocking(move || {
        let mut s = raw::connect(&base, Duration::from_secs(20));
        let mut req = head(
            "POST",
            "/backchannel-logout",
            &[
                "Content-Type: application/x-www-form-urlencoded".into(),
                "Content-Length: 500".into(),
            ],
        );
        req.extend_from_slice(b"logout_token=ey");
        s.write_all(&req).unwrap();
        raw::read_response(&mut BufReader::new(s), false)
    })
    .await;
    assert_eq!(res.status, 408, "{}", res.text());
}

#[actix_web::test]
async fn oversized_bodies_and_heads_are_refused_413_and_431() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route(
            "/api",
            &upstream.url,
            "token = \"none\"\nmax_body = \"64KiB\"",
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let post = |body: Vec<u8>| {
        let browser = &browser;
        let url = app.at("/api/sink");
        async move {
            browser
                .try_request("POST", &url, &[CSRF, ("accept", "application/json")], body)
                .await
        }
    };
    // Content-Length over the limit: refused before anything goes upstream.
    let res = post(vec![b'a'; 64 * 1024 + 1]).await.unwrap();
    assert_eq!(res.status, 413, "{}", res.text());
    assert_eq!(res.json()["error"], "payload_too_large");
    assert_eq!(post(vec![b'a'; 64 * 1024]).await.unwrap().status, 200);
    assert_eq!(upstream.seen().len(), 0, "/sink does not record");

    // A chunked body is counted as it streams.
    let res = raw::exchange(&app.url, {
        let mut req = head(
            "POST",
            "/api/sink",
            &[
                "X-CSRF: 1".into(),
                "Accept: application/json".into(),
                "Transfer-Encoding: chunked".into(),
            ],
        );
        for _ in 0..5 {
            req.extend_from_slice(format!("{:x}\r\n", 32 * 1024).as_bytes());
            req.extend(std::iter::repeat_n(b'a', 32 * 1024));
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        req
    })
    .await;
    assert_eq!(res.status, 413, "{}", res.text());

    // The back-channel endpoint reads 16 KiB at most.
    let big = "a".repeat(20 * 1024);
    let res = browser
        .post_form(
            &app.at("/backchannel-logout"),
            &[("logout_token", &big)],
            &[],
        )
        .await;
    assert_eq!(res.status, 413, "{}", res.text());

    // Heads over server.max_header_bytes (32 KiB): 431, JSON or a page.
    let huge = "x".repeat(40 * 1024);
    let res = api(&browser, &app, "/api/a", &[("x-padding", &huge)]).await;
    assert_eq!(res.status, 431, "{}", res.text());
    assert_eq!(res.json()["error"], "headers_too_large");
    let page = browser
        .get_with(
            &app.at("/user"),
            &[("sec-fetch-mode", "navigate"), ("x-padding", &huge)],
        )
        .await;
    assert_eq!(page.status, 431);
    assert!(page.text().contains("<h1>"), "{}", page.text());
    // Beyond what actix-http parses at all (128 KiB): its own 431.
    let res = raw::exchange(
        &app.url,
        head(
            "GET",
            "/healthz",
            &[format!("X-Padding: {}", "x".repeat(130 * 1024))],
        ),
    )
    .await;
    assert_eq!(res.status, 431);
}

/// An upstream that reads a request by its Content-Length and answers with the count,
/// and never sends `100 Continue` (many servers do not, or only when asked twice).
fn upstream_without_100_continue() -> String {
    use std::io::{BufRead, Read};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let answer = length.to_string();
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    url
}

#[actix_web::test]
async fn expect_100_continue_uploads_reach_the_upstream() {
    let recording = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: [
            route("/api", &recording.url, "token = \"none\""),
            route(
                "/plain",
                &upstream_without_100_continue(),
                "token = \"none\"\ntimeout = \"5s\"",
            ),
        ]
        .concat(),
        ..AppOptions::default()
    })
    .await;
    for path in ["/api/sink", "/plain/upload"] {
        let base = app.url.clone();
        let size = 3 << 20;
        let (interim, last) = blocking(move || {
            let mut s = raw::connect(&base, Duration::from_secs(20));
            let req = head(
                "POST",
                path,
                &[
                    "X-CSRF: 1".into(),
                    format!("Content-Length: {size}"),
                    "Expect: 100-continue".into(),
                ],
            );
            s.write_all(&req).unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            // curl waits for the interim answer before it sends the body.
            let interim = raw::read_response(&mut reader, true);
            s.write_all(&vec![b'a'; size]).unwrap();
            (interim, raw::read_response(&mut reader, false))
        })
        .await;
        assert_eq!(interim.status, 100, "{path}");
        assert_eq!(last.status, 200, "{path}: {}", last.text());
        assert_eq!(last.text(), size.to_string(), "{path}");
    }
}

// ---------------------------------------------------------------------------------------
// Item 9: rate limit on /login and /callback

#[actix_web::test]
async fn login_and_callback_are_rate_limited_per_client_ip() {
    let app =
        spawn_app(AppOptions {
            server_toml:
                "login_rate_limit = 6\nlogin_rate_burst = 3\ntrusted_proxies = [\"127.0.0.1\"]\n"
                    .into(),
            ..AppOptions::default()
        })
        .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip), ("accept", "application/json")];
    let browser = Browser::new();
    for _ in 0..3 {
        let res = browser
            .get_with(&app.at("/login"), &from("198.51.100.1"))
            .await;
        assert_eq!(res.status, 302, "{}", res.text());
    }
    let limited = browser
        .get_with(&app.at("/login"), &from("198.51.100.1"))
        .await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // /callback draws from the same bucket; a navigation gets a page.
    let page = browser
        .get_with(
            &app.at("/callback?state=x&code=y"),
            &[
                ("x-forwarded-for", "198.51.100.1"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
        .await;
    assert_eq!(page.status, 429);
    assert!(page.text().contains("Too many requests"), "{}", page.text());
    assert!(page.header("retry-after").is_some());
    // Another client is not affected.
    let other = browser
        .get_with(&app.at("/login"), &from("198.51.100.2"))
        .await;
    assert_eq!(other.status, 302);
}

#[actix_web::test]
async fn instances_sharing_redis_share_the_rate_limit_and_keep_one_when_redis_is_away() {
    let redis = RedisServer::start();
    let app = spawn_app(AppOptions {
        redis_url: redis.url(),
        server_toml: "login_rate_limit = 6\nlogin_rate_burst = 3\n".into(),
        ..AppOptions::default()
    })
    .await;
    let twin = app.start_twin().await;
    let browser = Browser::new();
    let json = [("accept", "application/json")];
    // Three tokens in all: spending them on one instance leaves none on the other.
    for _ in 0..3 {
        let res = browser.get_with(&app.at("/login"), &json).await;
        assert_eq!(res.status, 302, "{}", res.text());
    }
    let elsewhere = browser.get_with(&twin.at("/login"), &json).await;
    assert_eq!(elsewhere.status, 429, "{}", elsewhere.text());
    let retry: u64 = elsewhere.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // The bucket is one key of this app's prefix, on Redis's clock.
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}login-rate:*", app.prefix))
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, [format!("{}login-rate:127.0.0.1", app.prefix)]);

    // Redis away: each instance limits on its own (its own three tokens), never not at all.
    drop(redis);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(browser.get_with(&twin.at("/login"), &json).await.status);
    }
    assert_eq!(statuses, [503, 503, 503, 429, 429], "Redis away");
    twin.handle.stop(false).await;
}

#[actix_web::test]
async fn a_spoofed_x_forwarded_for_does_not_escape_the_rate_limit() {
    let app = spawn_app(AppOptions {
        server_toml: "login_rate_limit = 6\nlogin_rate_burst = 3\n".into(),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let ip = format!("203.0.113.{i}");
        let res = browser
            .get_with(&app.at("/login"), &[("x-forwarded-for", ip.as_str())])
            .await;
        statuses.push(res.status);
    }
    assert_eq!(statuses, [302, 302, 302, 429, 429, 429]);
}
