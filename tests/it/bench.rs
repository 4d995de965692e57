//! A first benchmark, not a timed test (`#[ignore]`; run it with `bench/run`):
//! authenticated `GET /api/...` through spa-bff against a fast local upstream,
//! next to the same upstream called directly. Everything runs on this machine
//! (load generator included), so compare the two rows, not absolute numbers
//! across machines.

use crate::support::app::{spawn_app, AppOptions};
use crate::support::Browser;
use actix_web::{web, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Concurrent connections of the load generator.
fn concurrency() -> usize {
    env_or("BENCH_CONCURRENCY", 32)
}

/// Seconds of load per target (after one second of warm-up).
fn seconds() -> u64 {
    env_or("BENCH_SECONDS", 5)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An upstream that answers every request with a small JSON body.
fn start_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        actix_web::App::new().default_service(web::to(|| async {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(r#"{"orders":[1,2,3]}"#)
        }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    format!("http://127.0.0.1:{port}")
}

struct Report {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Report {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    fn row(&self, what: &str) -> String {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        format!(
            "| {what} | {:.0} | {} | {} | {} | {} |",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.90)),
            ms(self.percentile(0.99)),
            self.errors
        )
    }
}

/// `concurrency` loops sending `GET url` with `headers` for `seconds`.
async fn load(url: &str, headers: &[(&str, &str)]) -> Report {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(concurrency() * 2))
        .timeout(Duration::from_secs(10))
        .finish();
    let run = |window: Duration| {
        let client = client.clone();
        async move {
            let end = Instant::now() + window;
            let loops = (0..concurrency()).map(|_| {
                let client = client.clone();
                async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    while Instant::now() < end {
                        let started = Instant::now();
                        let mut req = client.get(url);
                        for h in headers {
                            req = req.insert_header(*h);
                        }
                        let ok = match req.send().await {
                            Ok(mut res) => res.body().await.is_ok() && res.status().is_success(),
                            Err(_) => false,
                        };
                        if ok {
                            latencies.push(started.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    (latencies, errors)
                }
            });
            let started = Instant::now();
            let results = futures_util::future::join_all(loops).await;
            let elapsed = started.elapsed();
            let mut latencies: Vec<Duration> =
                results.iter().flat_map(|(l, _)| l.clone()).collect();
            latencies.sort();
            Report {
                requests: latencies.len(),
                errors: results.iter().map(|(_, e)| e).sum(),
                elapsed,
                latencies,
            }
        }
    };
    run(Duration::from_secs(1)).await; // warm-up: connections, pools, caches
    run(Duration::from_secs(seconds())).await
}

#[actix_web::test]
#[ignore = "benchmark: run with bench/run (release build)"]
async fn bench_authenticated_api_get_through_spa_bff_vs_direct() {
    let upstream = start_upstream();
    let app = spawn_app(AppOptions {
        extra_toml: format!("\n[[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\n"),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, "bench", "/").await.status, 302);
    let cookie = format!(
        "{}={}",
        app.cookie_name,
        app.session_cookie(&browser).expect("session cookie")
    );

    let direct = load(&format!("{upstream}/orders"), &[]).await;
    let proxied = load(
        &app.at("/api/orders"),
        &[("cookie", cookie.as_str()), ("x-csrf", "1")],
    )
    .await;
    assert_eq!(proxied.errors, 0, "every proxied request succeeded");
    println!(
        "\n{} connections, {} s, {} cores, spa-bff workers = 2, upstream workers = 1\n",
        concurrency(),
        seconds(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| target | req/s | p50 ms | p90 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|");
    println!("{}", direct.row("upstream directly"));
    println!(
        "{}",
        proxied.row("through spa-bff (cookie → Redis session → Bearer)")
    );
}
