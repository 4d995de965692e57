//! Pooled outgoing connections are not reused once a server may have closed them.
//!
//! Servers close idle keep-alive connections on their own schedule (Node.js after
//! 5 s). A request written on a pooled connection at the moment the server closes it
//! fails with "connection reset": a 502 for a proxied call, a 503 for a refresh (seen
//! under `bench/run refresh-workload`: 5 of 750 refreshes against node-oidc-provider
//! with awc's default keep-alive of 15 s). spa-bff drops connections idle for
//! `net::POOL_IDLE` (4 s) instead of reusing them.
//!
//! The server here closes that race deterministically: a request that arrives on a
//! connection idle for 4.5 s or more gets no answer: the server closes the
//! connection, as if its idle close had crossed the request. A client that
//! reuses such a connection fails; one that opened a new connection is answered.

use crate::support::app::{spawn_app, AppOptions};
use crate::support::{self, api, Browser};
use spa_bff::oidc::http::{OidcHttp, Outgoing};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After this long idle, a request on a kept-alive connection meets a reset.
const SERVER_IDLE_CLOSE: Duration = Duration::from_millis(4500);
/// The client's pause between two calls: longer than the server's idle close.
const PAUSE: Duration = Duration::from_millis(4800);

/// An HTTP/1.1 server answering `200 {}` with keep-alive, and closing instead of
/// answering a request that arrives on a connection idle for [`SERVER_IDLE_CLOSE`].
struct IdleClosingServer {
    url: String,
    connections: Arc<AtomicUsize>,
    unanswered: Arc<AtomicUsize>,
}

impl IdleClosingServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let unanswered = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), unanswered.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                std::thread::spawn(move || serve(stream, &r));
            }
        });
        Self {
            url,
            connections,
            unanswered,
        }
    }

    /// Requests closed without an answer (they came on a connection idle too long).
    fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::SeqCst)
    }

    /// Both calls answered, the second on a connection of its own.
    fn assert_no_idle_connection_was_reused(&self) {
        assert_eq!(
            self.unanswered(),
            0,
            "a connection idle for {PAUSE:?} was reused"
        );
        assert_eq!(self.connections.load(Ordering::SeqCst), 2);
    }
}

fn serve(stream: TcpStream, unanswered: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut last_answer: Option<Instant> = None;
    loop {
        // The request head, then its body (Content-Length only: what the clients send).
        let mut length = 0usize;
        let mut line = String::new();
        let mut head_lines = 0;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head_lines += 1;
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        assert!(head_lines > 0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if last_answer.is_some_and(|at| at.elapsed() >= SERVER_IDLE_CLOSE) {
            // Closed without an answer, as an idle close crossing the request would.
            unanswered.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
        last_answer = Some(Instant::now());
    }
}

async fn pause() {
    actix_web::rt::time::sleep(PAUSE).await;
}

#[actix_web::test]
async fn a_proxied_call_after_a_pause_does_not_reuse_a_connection_the_upstream_may_have_closed() {
    let server = IdleClosingServer::start();
    let app = spawn_app(AppOptions {
        extra_toml: format!(
            "\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
            server.url
        ),
        ..AppOptions::default()
    })
    .await;
    let browser = Browser::new();
    let user = format!("kai-{}", support::random_string(4));
    assert_eq!(app.login(&browser, &user, "/").await.status, 302);
    let call = || api(&browser, &app, "/api/orders");

    let first = call().await;
    assert_eq!(first.status, 200, "{}", first.text());
    pause().await;
    let second = call().await;
    assert_eq!(
        second.status,
        200,
        "the call after a {PAUSE:?} pause: {} (requests closed unanswered: {})",
        second.text(),
        server.unanswered()
    );
    server.assert_no_idle_connection_was_reused();
}

#[actix_web::test]
async fn a_provider_call_after_a_pause_does_not_reuse_a_connection_the_provider_may_have_closed() {
    // The client every provider call goes through (token endpoint, userinfo, JWKS, ...).
    let server = IdleClosingServer::start();
    let http = OidcHttp::new(Duration::from_secs(5));
    let url = format!("{}/token", server.url);

    let first = http
        .send(Outgoing::get_json(&url))
        .await
        .expect("first call");
    assert_eq!(first.status, 200);
    pause().await;
    let second = http.send(Outgoing::get_json(&url)).await;
    assert!(
        second.as_ref().is_ok_and(|a| a.status == 200),
        "the call after a {PAUSE:?} pause failed: {:?} (requests closed unanswered: {})",
        second.err(),
        server.unanswered()
    );
    server.assert_no_idle_connection_was_reused();
}
