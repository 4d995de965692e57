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
//! `websocket_idle_timeout` is closed too. Closing says why to both ends: a close frame
//! to the browser (1008 when the session ended, 1001 when the tunnel was idle) and a
//! masked one to the upstream, then both TCP connections are closed. Frames are not
//! parsed, but their boundaries are followed ([`Frames`]): a close frame is only
//! written between two frames, and a direction caught in the middle of one is just
//! closed (the browser then sees 1006). A new handshake without a session gets 401.
//! While the store is unreachable, tunnels are left open and checked again at the next
//! interval.

use crate::error::Error;
use crate::session::SessionRef;
use crate::state::AppState;
use crate::store::{Liveness, Store};
use crate::time::now_ms;
use actix_http::ws::{CloseCode, Parser};
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

impl CloseReason {
    /// The close frame that says so (RFC 6455 section 5.5.1): 1008 (policy violation)
    /// for an ended session, 1001 (going away) for an idle tunnel; `masked` for the
    /// upstream, since frames from a client are masked.
    fn frame(self, masked: bool) -> web::Bytes {
        let (code, description) = match self {
            CloseReason::SessionEnded => (CloseCode::Policy, "session ended"),
            CloseReason::Idle => (CloseCode::Away, "idle"),
        };
        let mut out = web::BytesMut::new();
        let reason = actix_http::ws::CloseReason {
            code,
            description: Some(description.into()),
        };
        Parser::write_close(&mut out, Some(reason), masked);
        out.freeze()
    }
}

/// Where a one-way stream of WebSocket frames stands: between two frames, or inside
/// one. Fed every byte that passes, it reads only the frame headers (RFC 6455 section
/// 5.2: two bytes, an extended length of 2 or 8, a mask key of 4 when masked) and
/// counts the payload bytes off.
#[derive(Debug, Default)]
struct Frames {
    /// The header of the frame begun, while it is incomplete (at most 14 bytes).
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
}

impl Frames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.head[self.head_len] = data[0];
            self.head_len += 1;
            data = &data[1..];
            if let Some(payload) = payload_length(&self.head[..self.head_len]) {
                self.remaining = payload;
                self.head_len = 0;
            }
        }
    }

    /// Whether the next byte would begin a new frame.
    fn between_frames(&self) -> bool {
        self.head_len == 0 && self.remaining == 0
    }
}

/// The payload length a frame header announces, once `head` holds all of it.
fn payload_length(head: &[u8]) -> Option<u64> {
    let [_, second, rest @ ..] = head else {
        return None;
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let (extended, length) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    if rest.len() < extended + mask {
        return None;
    }
    Some(length.unwrap_or_else(|| {
        rest[..extended]
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b))
    }))
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
    let frames = Rc::new(RefCell::new(Frames::default()));
    frames.borrow_mut().feed(&early);
    let (mut closed_here, why) = (closed.clone(), closed);
    let downstream = futures_util::stream::iter((!early.is_empty()).then(|| Ok(early)))
        .chain(upstream_to_browser(socket, activity, frames.clone()))
        .take_until(async move {
            let _ = closed_here.wait_for(Option::is_some).await;
        })
        // Closed by the watch: say why, if the browser is between two frames.
        .chain(
            futures_util::stream::once(async move {
                let reason = *why.borrow();
                reason
                    .filter(|_| frames.borrow().between_frames())
                    .map(|r| Ok(r.frame(false)))
            })
            .filter_map(std::future::ready),
        );

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
    frames: Rc<RefCell<Frames>>,
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
                frames.borrow_mut().feed(read.filled());
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
    let mut frames = Frames::default();
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
        frames.feed(&chunk);
    }
    // Closed by the watch: say why, if the upstream is between two frames.
    let reason = *closed.borrow();
    if let Some(reason) = reason.filter(|_| frames.between_frames()) {
        let _ = write_all(&socket, &reason.frame(true)).await;
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

    /// Frames of every header shape (7-bit, 16-bit and 64-bit lengths, masked or not,
    /// empty), fed in pieces of many sizes: `between_frames` holds exactly at the end
    /// of each frame, whatever the piece boundaries.
    #[test]
    fn frame_boundaries_are_followed_across_any_split() {
        let mut stream = web::BytesMut::new();
        let mut ends = vec![0];
        for (len, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (126, true),
            (200, false),
            (65_535, true),
            (65_536, false),
            (70_000, true),
            (1, false),
        ] {
            let payload = web::Bytes::from(vec![0x7e; len]);
            Parser::write_message(
                &mut stream,
                payload,
                actix_http::ws::OpCode::Binary,
                true,
                masked,
            );
            ends.push(stream.len());
        }
        Parser::write_close(&mut stream, None, true);
        ends.push(stream.len());
        let stream = stream.freeze();
        for piece in [1, 2, 3, 7, 13, 64, 1000, 4096, stream.len()] {
            let mut frames = Frames::default();
            let mut at = 0;
            while at < stream.len() {
                let next = (at + piece).min(stream.len());
                frames.feed(&stream[at..next]);
                at = next;
                assert_eq!(
                    frames.between_frames(),
                    ends.contains(&at),
                    "piece {piece}, offset {at}"
                );
            }
        }
    }

    #[test]
    fn a_close_frame_says_why_and_is_masked_for_the_upstream_only() {
        for (reason, code) in [
            (CloseReason::SessionEnded, CloseCode::Policy),
            (CloseReason::Idle, CloseCode::Away),
        ] {
            for masked in [false, true] {
                let mut frame = web::BytesMut::from(&reason.frame(masked)[..]);
                let (_, opcode, payload) = Parser::parse(&mut frame, masked, 125).unwrap().unwrap();
                assert_eq!(opcode, actix_http::ws::OpCode::Close);
                let said = Parser::try_parse_close_payload(&payload.unwrap())
                    .unwrap()
                    .unwrap();
                assert_eq!(said.code, code);
                assert!(frame.is_empty());
                // A server reading unmasked frames refuses a masked one, and vice versa.
                let mut again = web::BytesMut::from(&reason.frame(masked)[..]);
                assert!(Parser::parse(&mut again, !masked, 125).is_err());
            }
        }
    }

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
