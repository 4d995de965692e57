//! WebSocket upgrades through a route: the session is checked and the token
//! attached at the upgrade (like any proxied request), then bytes are tunnelled
//! both ways unchanged.
//!
//! spa-bff does not parse frames: the browser's masked frames reach the upstream
//! as they are, and the upstream's frames come back as they are, so extensions
//! such as `permessage-deflate` that both ends negotiate keep working. The
//! upstream handshake is made by awc (its own `Sec-WebSocket-Key`, verified by
//! awc); the browser gets the `Sec-WebSocket-Accept` for its own key.
//!
//! Browsers cannot add headers to a WebSocket handshake, so the CSRF header is
//! replaced by the `Origin` check done in `check_request`: a page from another
//! origin cannot open a socket with the user's cookie (cross-site WebSocket
//! hijacking).
//!
//! A tunnel lives no longer than its session: a [`Watch`] asks the store every
//! [`SESSION_CHECK_INTERVAL`] whether the session still exists (logout on any
//! instance, back-channel logout, idle or absolute expiry all end it) and closes both
//! sides when it does not. Tunnel traffic is not session activity (the SPA's HTTP
//! requests are). A tunnel with no byte in either direction for the route's
//! `websocket_idle_timeout` is closed too. Closing drops both TCP connections (frames
//! are not parsed, so no close frame is injected); the browser sees code 1006 and a
//! new handshake without a session gets 401. While the store is unreachable, tunnels
//! are left open and checked again at the next interval.

use crate::error::Error;
use crate::session::SessionRef;
use crate::state::AppState;
use crate::store::{Liveness, Store};
use crate::time::now_ms;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{SendRequestError, WsClientError};
use awc::BoxedSocket;
use futures_util::StreamExt;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often an open tunnel asks whether its session still exists.
pub const SESSION_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How often the watch wakes up (idle limit granularity).
const TICK: Duration = Duration::from_millis(250);

/// What keeps a tunnel honest: its session (if it carries a token) and its idle limit.
pub struct Watch {
    pub state: web::Data<AppState>,
    /// The session whose token the upgrade carried; `None` on `none`/anonymous routes.
    pub session: Option<SessionRef>,
    pub idle_timeout: Duration,
}

/// Why a tunnel was closed by spa-bff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    SessionEnded,
    Idle,
}

/// Headers of the browser's handshake that awc sets itself for the upstream one.
const HANDSHAKE_HEADERS: &[&str] = &["sec-websocket-key", "sec-websocket-version"];
/// Headers of the upstream's 101 answer passed to the browser.
const ANSWER_HEADERS: &[&str] = &["sec-websocket-protocol", "sec-websocket-extensions"];

/// Whether `req` asks to become a WebSocket (`GET`, `Upgrade: websocket`,
/// `Connection: upgrade`).
pub fn is_upgrade(req: &HttpRequest) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.method() == Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

/// Opens the upstream WebSocket with `headers` (already cleaned, token and
/// forwarding headers added) and tunnels the browser's connection to it.
pub async fn tunnel(
    req: &HttpRequest,
    payload: web::Payload,
    url: &str,
    mut headers: HeaderMap,
    timeout: Duration,
    watch: Watch,
) -> Result<HttpResponse, Error> {
    let client = &watch.state.upstream;
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Error::Forbidden("a WebSocket upgrade needs Sec-WebSocket-Key".into()))?
        .clone();
    for name in HANDSHAKE_HEADERS {
        headers.remove(*name);
    }
    let mut upstream = client.ws(url);
    for (name, value) in headers.iter() {
        upstream = upstream.set_header(name.clone(), value.clone());
    }
    let (answer, framed) = match actix_web::rt::time::timeout(timeout, upstream.connect()).await {
        Err(_) | Ok(Err(WsClientError::SendRequest(SendRequestError::Timeout))) => {
            return Err(Error::UpstreamTimeout(
                "no WebSocket handshake answer within the route timeout".into(),
            ))
        }
        // The upstream refused the upgrade (401, 403, 404...): pass its status on.
        Ok(Err(WsClientError::InvalidResponseStatus(status))) => {
            return Ok(HttpResponse::build(status)
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish())
        }
        Ok(Err(e)) => return Err(Error::UpstreamUnavailable(format!("WebSocket: {e}"))),
        Ok(Ok(connected)) => connected,
    };
    let parts = framed.into_parts();
    let socket = Rc::new(RefCell::new(parts.io));
    let early = parts.read_buf.freeze(); // frames the upstream sent right after its 101
    let activity = Rc::new(Cell::new(Instant::now()));
    let (close, closed) = watch::channel(None::<CloseReason>);
    actix_web::rt::spawn(browser_to_upstream(
        payload,
        socket.clone(),
        activity.clone(),
        closed.clone(),
    ));
    actix_web::rt::spawn(watch_tunnel(watch, activity.clone(), close));
    let mut closed_here = closed;
    let downstream = futures_util::stream::iter((!early.is_empty()).then(|| Ok(early)))
        .chain(upstream_to_browser(socket, activity))
        .take_until(async move {
            let _ = closed_here.wait_for(Option::is_some).await;
        });

    let mut res = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    res.upgrade("websocket").insert_header((
        header::SEC_WEBSOCKET_ACCEPT,
        header::HeaderValue::from_bytes(&actix_http::ws::hash_key(key.as_bytes()))
            .map_err(|_| Error::Internal("Sec-WebSocket-Accept".into()))?,
    ));
    for name in ANSWER_HEADERS {
        for value in answer.headers().get_all(*name) {
            res.append_header((*name, value.clone()));
        }
    }
    Ok(res.streaming(downstream))
}

/// Closes the tunnel when its session ends or it has been idle too long; returns
/// once the tunnel is gone either way.
async fn watch_tunnel(
    watch: Watch,
    activity: Rc<Cell<Instant>>,
    close: watch::Sender<Option<CloseReason>>,
) {
    let _open = watch.state.metrics.tunnel_open(); // for as long as the tunnel lives
    let opened = Instant::now();
    let mut next_check = opened + SESSION_CHECK_INTERVAL;
    loop {
        tokio::select! {
            _ = close.closed() => return, // both halves finished on their own
            _ = tokio::time::sleep(TICK) => {}
        }
        let now = Instant::now();
        let reason = if now.duration_since(activity.get()) >= watch.idle_timeout {
            Some(CloseReason::Idle)
        } else if let (Some(session), true) = (&watch.session, now >= next_check) {
            next_check = now + SESSION_CHECK_INTERVAL;
            match watch.state.store.session_alive(session, now_ms()).await {
                Ok(Liveness::Ended) => Some(CloseReason::SessionEnded),
                Ok(Liveness::Live) => None,
                Err(e) => {
                    tracing::warn!("cannot check a WebSocket tunnel's session; kept open: {e}");
                    None
                }
            }
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::info!(
                ?reason,
                open_ms = opened.elapsed().as_millis() as u64,
                "closing a WebSocket tunnel"
            );
            let _ = close.send(Some(reason));
            return;
        }
    }
}

/// The upstream socket's bytes, until it closes.
fn upstream_to_browser(
    socket: Rc<RefCell<BoxedSocket>>,
    activity: Rc<Cell<Instant>>,
) -> impl futures_util::Stream<Item = Result<web::Bytes, io::Error>> {
    let mut buf = vec![0u8; 16 * 1024];
    futures_util::stream::poll_fn(move |cx| {
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut **socket.borrow_mut()).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                activity.set(Instant::now());
                Poll::Ready(Some(Ok(web::Bytes::copy_from_slice(read.filled()))))
            }
        }
    })
}

/// Copies the browser's bytes to the upstream until either side closes or the
/// tunnel is closed by its watch.
async fn browser_to_upstream(
    mut payload: web::Payload,
    socket: Rc<RefCell<BoxedSocket>>,
    activity: Rc<Cell<Instant>>,
    mut closed: watch::Receiver<Option<CloseReason>>,
) {
    loop {
        let chunk = tokio::select! {
            chunk = payload.next() => chunk,
            _ = closed.wait_for(Option::is_some) => break,
        };
        let Some(Ok(chunk)) = chunk else { break };
        activity.set(Instant::now());
        if write_all(&socket, &chunk).await.is_err() {
            return;
        }
    }
    let _ = poll_fn(|cx| Pin::new(&mut **socket.borrow_mut()).poll_shutdown(cx)).await;
}

async fn write_all(socket: &RefCell<BoxedSocket>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut **socket.borrow_mut()).poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    poll_fn(|cx| Pin::new(&mut **socket.borrow_mut()).poll_flush(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn only_get_with_upgrade_websocket_and_connection_upgrade_is_an_upgrade() {
        let upgrade = |method: Method, pairs: &[(&str, &str)]| {
            let mut req = TestRequest::default().method(method);
            for (k, v) in pairs {
                req = req.insert_header((*k, *v));
            }
            is_upgrade(&req.to_http_request())
        };
        let ws = [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        assert!(upgrade(Method::GET, &ws));
        assert!(!upgrade(Method::POST, &ws));
        assert!(!upgrade(Method::GET, &[("upgrade", "websocket")]));
        assert!(!upgrade(
            Method::GET,
            &[("upgrade", "h2c"), ("connection", "upgrade")]
        ));
        assert!(!upgrade(Method::GET, &[]));
    }
}
