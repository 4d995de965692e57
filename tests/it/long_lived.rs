//! Issue 8, long-lived connections: event streams and WebSocket tunnels must neither
//! starve ordinary calls (items 7) nor outlive the session they were opened with
//! (item 8). Real spa-bff, Redis, provider (or the fake one, for back-channel logout
//! tokens) and the recording upstream; the measured figures are printed.

use crate::support::app::{spawn_app, AppOptions, TestApp};
use crate::support::fake_op::{
    app_on_fake_op_with, now, send_logout_token, sign_jwt, CLIENT_ID, KEY_PEM, KID,
};
use crate::support::unique;
use crate::support::upstream::Upstream;
use crate::support::{self, Browser};
use awc::ws::{Frame, Message};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!("\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

const CSRF: (&str, &str) = ("x-csrf", "1");

async fn logged_in(app: &TestApp, user: &str) -> Browser {
    let browser = Browser::new();
    let res = app.login(&browser, user, "/").await;
    assert_eq!(res.status, 302, "login: {}", res.text());
    browser
}

fn session_cookie(app: &TestApp, browser: &Browser) -> String {
    format!(
        "{}={}",
        app.cookie_name,
        app.session_cookie(browser).expect("session cookie")
    )
}

/// A new browser holding `browser`'s session cookie: after a pause of several seconds
/// the old one's pooled connection may be closing (keep-alive) just as it is reused.
fn same_session(app: &TestApp, browser: &Browser) -> Browser {
    let fresh = Browser::new();
    let value = app.session_cookie(browser).expect("session cookie");
    fresh.set_cookie(&app.url, &app.cookie_name, &value);
    fresh
}

/// An awc client without a connection limit or timeouts (the tests bound their waits).
fn unlimited_client() -> awc::Client {
    support::init();
    awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .disable_timeout()
        .finish()
}

type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// Opens a WebSocket through spa-bff with this cookie and checks one echo.
async fn open_tunnel(client: &awc::Client, app: &TestApp, path: &str, cookie: &str) -> Socket {
    let (res, mut socket) = client
        .ws(app.at(path))
        .origin(app.public_url.as_str())
        .set_header("cookie", cookie)
        .connect()
        .await
        .expect("WebSocket through spa-bff");
    assert_eq!(res.status().as_u16(), 101);
    socket.send(Message::Text("hello".into())).await.unwrap();
    match socket.next().await {
        Some(Ok(Frame::Text(t))) => assert_eq!(&t[..], b"hello"),
        other => panic!("expected the echo, got {other:?}"),
    }
    socket
}

/// Close codes spa-bff sends when it closes a tunnel (RFC 6455 section 7.4.1).
const SESSION_ENDED: u16 = 1008;
const IDLE: u16 = 1001;

/// Waits (at most `limit`) until the tunnel is closed from spa-bff's side with a close
/// frame carrying `code`; how long it took.
async fn closed_within(socket: &mut Socket, limit: Duration, code: u16) -> Duration {
    let started = Instant::now();
    let closed = actix_web::rt::time::timeout(limit, async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Close(reason))) => return reason.map(|r| u16::from(r.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let Ok(said) = closed else {
        panic!("the tunnel was still open after {limit:?}");
    };
    assert_eq!(
        said,
        Some(code),
        "the close frame's code (None: no close frame)"
    );
    started.elapsed()
}

/// The upstream got a close frame with `code` from spa-bff, and its side closed.
async fn upstream_closed_with(upstream: &Upstream, code: u16) {
    support::eventually(
        Duration::from_secs(3),
        "the upstream side closed",
        || async { (upstream.counters.closed_sockets.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    assert_eq!(*upstream.counters.close_codes.lock().unwrap(), [code]);
}

// ---------------------------------------------------------------------------------------
// Item 8: tunnels end with their session

#[actix_web::test]
async fn a_tunnel_closes_within_seconds_of_a_logout_on_any_instance() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let twin = app.start_twin().await;
    let browser = logged_in(&app, &unique("tom")).await;
    let cookie = session_cookie(&app, &browser);
    let mut socket = open_tunnel(&unlimited_client(), &app, "/api/ws", &cookie).await;
    assert_eq!(upstream.counters.open_sockets.load(Ordering::SeqCst), 1);

    // Log out on the other instance.
    let res = browser
        .request(
            "POST",
            &twin.at("/logout"),
            &[CSRF, ("cookie", &cookie)],
            Vec::new(),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let took = closed_within(&mut socket, Duration::from_secs(8), SESSION_ENDED).await;
    eprintln!("tunnel closed {took:?} after /logout on another instance");
    upstream_closed_with(&upstream, SESSION_ENDED).await;
    twin.handle.stop(false).await;
}

#[actix_web::test]
async fn a_back_channel_logout_closes_the_users_tunnels() {
    let upstream = Upstream::start();
    let (fake, issuer, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: route("/api", &upstream.url, ""),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let callback = browser.get(&authorize).await;
    let done = browser.get(&app.local(callback.location().unwrap())).await;
    assert_eq!(done.status, 302, "{}", done.text());
    let cookie = session_cookie(&app, &browser);
    let mut socket = open_tunnel(&unlimited_client(), &app, "/api/ws", &cookie).await;

    let sid = fake.lock().unwrap().sid.clone();
    let token = sign_jwt(
        &serde_json::json!({
            "iss": issuer, "aud": CLIENT_ID, "iat": now(), "jti": support::random_string(8),
            "sid": sid, "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        }),
        KEY_PEM,
        KID,
        "logout+jwt",
    );
    let res = send_logout_token(&Browser::new(), &app, &token).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let took = closed_within(&mut socket, Duration::from_secs(8), SESSION_ENDED).await;
    eprintln!("tunnel closed {took:?} after a back-channel logout");
    upstream_closed_with(&upstream, SESSION_ENDED).await;
}

#[actix_web::test]
async fn a_tunnel_closes_when_its_session_reaches_the_idle_timeout() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        idle_timeout: "3s",
        absolute_timeout: "1m",
        extra_toml: route("/api", &upstream.url, ""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("ida")).await;
    let cookie = session_cookie(&app, &browser);
    let mut socket = open_tunnel(&unlimited_client(), &app, "/api/ws", &cookie).await;
    let opened = Instant::now(); // the upgrade was the session's last activity

    // Messages through the tunnel keep the tunnel busy, not the session alive.
    let closed = loop {
        socket.send(Message::Text("still here".into())).await.ok();
        match actix_web::rt::time::timeout(Duration::from_millis(500), socket.next()).await {
            Ok(Some(Ok(Frame::Close(reason)))) => {
                let code = reason.map(|r| u16::from(r.code));
                assert_eq!(code, Some(SESSION_ENDED), "the close frame's code");
                break opened.elapsed();
            }
            Ok(None) | Ok(Some(Err(_))) => panic!("closed without a close frame"),
            _ => {}
        }
        assert!(
            opened.elapsed() < Duration::from_secs(12),
            "the tunnel outlived its session"
        );
    };
    assert!(
        closed >= Duration::from_secs(2),
        "closed too early: {closed:?}"
    );
    eprintln!(
        "tunnel closed {:?} after the session's idle expiry",
        closed.saturating_sub(Duration::from_secs(3))
    );
    assert_eq!(app.user(&same_session(&app, &browser)).await.status, 401);
}

#[actix_web::test]
async fn a_quiet_tunnel_is_closed_on_both_sides_after_its_idle_limit() {
    let upstream = Upstream::start();
    let app = spawn_app(AppOptions {
        extra_toml: route("/api", &upstream.url, "websocket_idle_timeout = \"1s\""),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("quin")).await;
    let cookie = session_cookie(&app, &browser);
    let mut socket = open_tunnel(&unlimited_client(), &app, "/api/ws", &cookie).await;

    // Traffic every 300 ms keeps it open past the limit...
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_millis(2500) {
        socket.send(Message::Ping("p".into())).await.unwrap();
        match socket.next().await {
            Some(Ok(Frame::Pong(_))) => {}
            other => panic!("a busy tunnel must stay open, got {other:?}"),
        }
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    }
    // ...silence closes it, towards the browser and the upstream.
    let took = closed_within(&mut socket, Duration::from_secs(5), IDLE).await;
    eprintln!("quiet tunnel closed {took:?} into its 1 s idle limit");
    upstream_closed_with(&upstream, IDLE).await;
    // The session itself is untouched.
    assert_eq!(app.user(&same_session(&app, &browser)).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Item 7: upstream connection pool

/// Raises this process's soft file-descriptor limit to its hard limit: the test holds
/// about four descriptors per stream (client, spa-bff both ways, upstream).
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 16);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

const STREAMS: usize = 800;
const TUNNELS: usize = 200;

#[actix_web::test]
async fn a_thousand_long_lived_streams_and_tunnels_do_not_starve_ordinary_calls() {
    let fds = raise_fd_limit();
    assert!(
        fds >= 6000,
        "this test needs about 5000 file descriptors; ulimit -n is {fds}"
    );
    let upstream = Upstream::start();
    // Default proxy.max_upstream_connections; two workers, as in every test app.
    let app = spawn_app(AppOptions {
        extra_toml: [
            route("/api", &upstream.url, "timeout = \"10s\""),
            route("/live", &upstream.url, "timeout = \"5m\""),
        ]
        .concat(),
        ..AppOptions::default()
    })
    .await;
    let browser = logged_in(&app, &unique("lena")).await;
    let cookie = session_cookie(&app, &browser);
    let client = unlimited_client();

    let started = Instant::now();
    let opening = async {
        let streams = join_all((0..STREAMS).map(|_| async {
            let mut res = client
                .get(app.at("/live/stream"))
                .insert_header(("cookie", cookie.as_str()))
                .insert_header(CSRF)
                .send()
                .await
                .expect("event stream");
            assert_eq!(res.status().as_u16(), 200);
            let first = res.next().await.expect("a first event").expect("readable");
            assert_eq!(&first[..], b"data: open\n\n");
            res
        }));
        let tunnels =
            join_all((0..TUNNELS).map(|_| open_tunnel(&client, &app, "/live/ws", &cookie)));
        futures_util::future::join(streams, tunnels).await
    };
    let Ok((streams, tunnels)) =
        actix_web::rt::time::timeout(Duration::from_secs(60), opening).await
    else {
        panic!(
            "after 60 s only {} event streams and {} tunnels of {STREAMS} + {TUNNELS} were open",
            upstream.counters.open_streams.load(Ordering::SeqCst),
            upstream.counters.open_sockets.load(Ordering::SeqCst),
        );
    };
    let opened_in = started.elapsed();
    let held = (
        upstream.counters.open_streams.load(Ordering::SeqCst),
        upstream.counters.open_sockets.load(Ordering::SeqCst),
    );
    assert_eq!(held, (STREAMS, TUNNELS));

    // Meanwhile, ordinary calls answer, each well before the route's 10 s timeout.
    let mut latencies = Vec::new();
    for i in 0..100 {
        let call = Instant::now();
        let res = actix_web::rt::time::timeout(
            Duration::from_secs(5),
            client
                .get(app.at(&format!("/api/orders/{i}")))
                .insert_header(("cookie", cookie.as_str()))
                .insert_header(CSRF)
                .send(),
        )
        .await
        .expect("an ordinary call stalled behind the long-lived ones")
        .expect("ordinary call");
        assert_eq!(res.status().as_u16(), 201);
        latencies.push(call.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "{} event streams + {} tunnels held (opened in {opened_in:?}); 100 ordinary calls meanwhile: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        held.0,
        held.1,
        ms(latencies[49]),
        ms(latencies[89]),
        ms(latencies[99]),
    );
    // Still all open at the end.
    assert_eq!(
        upstream.counters.open_streams.load(Ordering::SeqCst),
        STREAMS
    );
    drop(streams);
    drop(tunnels);
    support::eventually(
        Duration::from_secs(20),
        "streams released upstream",
        || async { (upstream.counters.open_streams.load(Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;
}
