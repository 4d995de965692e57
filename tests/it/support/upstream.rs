//! The upstream API of the proxy tests: a real actix-web server on port 0 that
//! records every request it receives and answers in ways a test can ask for
//! (by path): echo, a stalled answer, `Set-Cookie`, a rejected token, a WebSocket
//! echo, a streamed upload sink and a streamed download source, chosen
//! `Cache-Control`/`Set-Cookie` answers, and long-lived event streams that stay open
//! until the client goes away (counted while open). Under `/dpop`, `/dpop-nonce` and
//! `/dpop-nonce-always` it is a DPoP resource server (RFC 9449 section 7): it accepts a
//! request only with `Authorization: DPoP <JWT access token>` and a valid proof
//! ([`check_dpop`]) whose key is the token's `cnf.jkt`, with a fresh `iat` and a `jti`
//! never seen before; `/dpop-nonce` also wants its current nonce in the proof (else
//! `401 use_dpop_nonce` with a `DPoP-Nonce`), `/dpop-nonce-always` demands a new one
//! every time.
#![allow(dead_code)]

use actix_web::{web, HttpRequest, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the upstream counts about its long-lived connections.
#[derive(Default, Debug)]
pub struct Counters {
    /// `/stream` responses whose body is still being read.
    pub open_streams: AtomicUsize,
    /// WebSocket connections (`/ws`) open now, and closed so far.
    pub open_sockets: AtomicUsize,
    pub closed_sockets: AtomicUsize,
    /// The codes of the close frames WebSocket clients sent, in order.
    pub close_codes: Mutex<Vec<u16>>,
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// `req` as it arrived, with `body`.
    pub fn of(req: &HttpRequest, body: Vec<u8>) -> Seen {
        Seen {
            method: req.method().to_string(),
            path: req.path().to_string(),
            query: req.query_string().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }
}

pub struct Upstream {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub counters: Arc<Counters>,
}

/// What the DPoP paths remember: every `jti` accepted, and the nonces handed out.
#[derive(Default, Debug)]
pub struct DpopState {
    /// `http://127.0.0.1:<port>`: what `htu` must start with (the `Host` a proxy
    /// sends may be its own).
    base: String,
    jtis: Mutex<std::collections::HashSet<String>>,
    nonces: AtomicUsize,
}

/// Checks the DPoP proof of `seen`, a request the upstream received as `url` (no
/// query), against RFC 9449 section 7 and the access token's `cnf.jkt`; `nonce` is the
/// nonce the proof must carry. Returns the proof's `jti` and the key's thumbprint.
pub fn check_dpop(seen: &Seen, url: &str, nonce: Option<&str>) -> Result<(String, String), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    use sha2::{Digest, Sha256};
    let b64 = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| format!("not base64url: {s}"))
    };
    let json = |s: &str| -> Result<serde_json::Value, String> {
        serde_json::from_slice(&b64(s)?).map_err(|_| "not JSON".to_string())
    };
    let authorization = seen.header("authorization").ok_or("no Authorization")?;
    let (scheme, token) = authorization.split_once(' ').ok_or("no scheme")?;
    if !scheme.eq_ignore_ascii_case("dpop") {
        return Err(format!("scheme {scheme}, not DPoP"));
    }
    let proofs: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "dpop")
        .map(|(_, v)| v.as_str())
        .collect();
    let [proof] = proofs[..] else {
        return Err(format!("{} DPoP headers", proofs.len()));
    };
    let parts: Vec<&str> = proof.split('.').collect();
    let [head, body, signature] = parts[..] else {
        return Err("the proof is not a compact JWS".into());
    };
    let header = json(head)?;
    if header["typ"] != "dpop+jwt" || header["alg"] != "ES256" {
        return Err(format!("header {header}"));
    }
    let jwk = &header["jwk"];
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk.get("d").is_some() {
        return Err(format!("jwk {jwk}"));
    }
    let (x, y) = (
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or(""),
    );
    let point = [&[4u8][..], &b64(x)?, &b64(y)?].concat();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(format!("{head}.{body}").as_bytes(), &b64(signature)?)
        .map_err(|_| "the signature does not verify with the header's jwk".to_string())?;
    // RFC 7638, computed here independently of spa-bff.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let jkt = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    let token_parts: Vec<&str> = token.split('.').collect();
    let bound = match token_parts[..] {
        [_, payload, _] => json(payload)?["cnf"]["jkt"].as_str().map(String::from),
        _ => None,
    };
    if bound.as_deref() != Some(jkt.as_str()) {
        return Err(format!(
            "the token is bound to {bound:?}, the proof's key is {jkt}"
        ));
    }
    let claims = json(body)?;
    if claims["htm"] != seen.method.as_str() {
        return Err(format!("htm {} for {}", claims["htm"], seen.method));
    }
    if claims["htu"] != url {
        return Err(format!("htu {} for {url}", claims["htu"]));
    }
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
    if claims["ath"] != ath.as_str() {
        return Err("ath is not the token's hash".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let iat = claims["iat"].as_i64().ok_or("no iat")?;
    if (now - iat).abs() > 60 {
        return Err(format!("iat {iat} is {}s away", now - iat));
    }
    if claims["nonce"].as_str() != nonce {
        return Err(format!("nonce {} where {nonce:?} was due", claims["nonce"]));
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty())
        .ok_or("no jti")?;
    Ok((jti.to_string(), jkt))
}

impl DpopState {
    /// The resource server's answer to `seen` on a DPoP path: `None` to accept it.
    fn refuse(&self, seen: &Seen) -> Option<HttpResponse> {
        let path = seen.path.as_str();
        let current = format!("n-{}", self.nonces.load(Ordering::SeqCst));
        let wanted = if path.starts_with("/dpop-nonce-always") {
            Some("never-good-enough")
        } else if path.starts_with("/dpop-nonce") {
            Some(current.as_str())
        } else {
            None
        };
        let url = format!("{}{}", self.base, seen.path);
        match check_dpop(seen, &url, wanted) {
            Ok((jti, _)) => {
                if !self.jtis.lock().unwrap().insert(jti.clone()) {
                    return Some(refused("invalid_dpop_proof", &format!("jti {jti} reused")));
                }
                None
            }
            Err(why) if why.starts_with("nonce") => {
                // A new nonce for the next try (always, on the path that never accepts).
                if path.starts_with("/dpop-nonce-always") {
                    self.nonces.fetch_add(1, Ordering::SeqCst);
                }
                let nonce = format!("n-{}", self.nonces.load(Ordering::SeqCst));
                let mut res = refused("use_dpop_nonce", &why);
                res.headers_mut().insert(
                    actix_web::http::header::HeaderName::from_static("dpop-nonce"),
                    actix_web::http::header::HeaderValue::from_str(&nonce).unwrap(),
                );
                Some(res)
            }
            Err(why) => Some(refused("invalid_dpop_proof", &why)),
        }
    }
}

/// A DPoP resource server's 401 with `error` (the reason in the body, for the test).
fn refused(error: &str, why: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((
            "www-authenticate",
            format!("DPoP algs=\"ES256\", error=\"{error}\""),
        ))
        .body(why.to_string())
}

impl Upstream {
    /// `GET /hang` sleeps 10 s; `/set-cookie` answers with a cookie; anything else
    /// answers 201 with a body describing the request and a custom header.
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(Counters::default());
        let dpop = Arc::new(DpopState {
            base: format!("http://127.0.0.1:{port}"),
            ..DpopState::default()
        });
        let (recorded, counted) = (seen.clone(), counters.clone());
        let server = HttpServer::new(move || {
            let (recorded, counted, dpop) = (recorded.clone(), counted.clone(), dpop.clone());
            actix_web::App::new().default_service(web::to(
                move |req: HttpRequest, body: web::Payload| {
                    let (recorded, counted, dpop) =
                        (recorded.clone(), counted.clone(), dpop.clone());
                    async move { upstream_handler(req, body, recorded, counted, dpop).await }
                },
            ))
        })
        .max_connections(100_000)
        .backlog(4096)
        // A peer that closes is gone (so `/stream` notices spa-bff letting go).
        .h1_allow_half_closed(false)
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        actix_web::rt::spawn(server);
        Upstream {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            counters,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

async fn upstream_handler(
    req: HttpRequest,
    mut payload: web::Payload,
    recorded: Arc<Mutex<Vec<Seen>>>,
    counters: Arc<Counters>,
    dpop: Arc<DpopState>,
) -> HttpResponse {
    use futures_util::StreamExt;
    match req.path() {
        // An event stream: one event at once, then open until the client goes away.
        "/stream" => {
            counters.open_streams.fetch_add(1, Ordering::SeqCst);
            let guard = Held(counters.clone(), |c: &Counters| &c.open_streams);
            let first = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
                web::Bytes::from_static(b"data: open\n\n"),
            )]);
            let rest = futures_util::stream::pending().map(move |x: Result<web::Bytes, _>| {
                let _ = &guard;
                x
            });
            return HttpResponse::Ok()
                .insert_header(("content-type", "text/event-stream"))
                .streaming(first.chain(rest));
        }
        // Answers with the Cache-Control and Vary given as `cc` and `vary`.
        "/cache" => {
            let q = crate::support::query_pairs(req.query_string());
            let mut res = HttpResponse::Ok();
            for (k, v) in q {
                match k.as_str() {
                    "cc" => res.append_header(("cache-control", v)),
                    "vary" => res.append_header(("vary", v)),
                    _ => &mut res,
                };
            }
            return res.body("per-user data");
        }
        // Answers with one Set-Cookie per `c` parameter.
        "/cookies" => {
            let mut res = HttpResponse::Ok();
            for (k, v) in crate::support::query_pairs(req.query_string()) {
                if k == "c" {
                    res.append_header(("set-cookie", v));
                }
            }
            return res.body("cookies");
        }
        // Counts a streamed upload without keeping it.
        "/sink" => {
            let mut total = 0usize;
            while let Some(chunk) = payload.next().await {
                match chunk {
                    Ok(c) => total += c.len(),
                    Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
                }
            }
            return HttpResponse::Ok().body(total.to_string());
        }
        // A WebSocket echo server (records its handshake).
        "/ws" => {
            recorded.lock().unwrap().push(Seen::of(&req, Vec::new()));
            return ws_echo(&req, payload, counters);
        }
        // Streams `n` bytes without a Content-Length (chunked).
        "/source" => {
            let n: usize = req
                .query_string()
                .trim_start_matches("n=")
                .parse()
                .unwrap_or(0);
            return HttpResponse::Ok().streaming(zeros(n));
        }
        _ => {}
    }
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = payload.next().await {
        body.extend_from_slice(&chunk);
    }
    let seen = Seen::of(&req, body);
    let first_picky_token = {
        let mut all = recorded.lock().unwrap();
        all.push(seen.clone());
        all.iter()
            .find(|s| s.path == "/picky")
            .and_then(|s| s.bearer().map(String::from))
    };
    if seen.path.starts_with("/dpop") {
        if let Some(refusal) = dpop.refuse(&seen) {
            return refusal;
        }
    }
    let invalid_token = || {
        HttpResponse::Unauthorized()
            .insert_header((
                "www-authenticate",
                "Bearer realm=\"api\", error=\"invalid_token\"",
            ))
            .body("rejected")
    };
    match seen.path.as_str() {
        // Rejects the first token it ever saw, accepts any other.
        "/picky" if seen.bearer().map(String::from) == first_picky_token => invalid_token(),
        "/always-reject" => invalid_token(),
        "/hang" => {
            actix_web::rt::time::sleep(Duration::from_secs(10)).await;
            HttpResponse::Ok().finish()
        }
        "/set-cookie" => HttpResponse::Ok()
            .insert_header(("set-cookie", "upstream=1; Path=/"))
            .body("cookie"),
        _ => HttpResponse::Created()
            .insert_header(("x-upstream", "yes"))
            .insert_header(("content-type", "text/plain; charset=utf-8"))
            .body(format!(
                "{} {}?{} {} bytes",
                seen.method,
                seen.path,
                seen.query,
                seen.body.len()
            )),
    }
}

/// Decrements a counter when dropped (a connection's stream went away) and, for
/// sockets, counts the close.
struct Held(Arc<Counters>, fn(&Counters) -> &AtomicUsize);

impl Drop for Held {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::SeqCst);
        if std::ptr::eq((self.1)(&self.0), &self.0.open_sockets) {
            self.0.closed_sockets.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Answers a WebSocket handshake and echoes text and binary messages (pings get
/// pongs, a close gets a close), parsing frames with actix-http's `Parser`.
fn ws_echo(req: &HttpRequest, payload: web::Payload, counters: Arc<Counters>) -> HttpResponse {
    use actix_http::ws::{hash_key, OpCode, Parser};
    use futures_util::StreamExt;
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return HttpResponse::BadRequest().finish();
    };
    let accept = hash_key(key.as_bytes());
    counters.open_sockets.fetch_add(1, Ordering::SeqCst);
    let held = Held(counters, |c: &Counters| &c.open_sockets);
    let frames = futures_util::stream::unfold(
        (payload, web::BytesMut::new(), false, held),
        |(mut payload, mut buf, closed, held)| async move {
            if closed {
                return None;
            }
            loop {
                match Parser::parse(&mut buf, true, 1 << 20) {
                    Ok(Some((_, opcode, data))) => {
                        let data = data.map(|d| d.freeze()).unwrap_or_default();
                        let mut out = web::BytesMut::new();
                        let closing = match opcode {
                            OpCode::Text | OpCode::Binary => {
                                Parser::write_message(&mut out, data, opcode, true, false);
                                false
                            }
                            OpCode::Ping => {
                                Parser::write_message(&mut out, data, OpCode::Pong, true, false);
                                false
                            }
                            OpCode::Close => {
                                if let Ok(Some(reason)) = Parser::try_parse_close_payload(&data) {
                                    held.0.close_codes.lock().unwrap().push(reason.code.into());
                                }
                                Parser::write_close(&mut out, None, false);
                                true
                            }
                            _ => continue,
                        };
                        let item = Ok::<_, std::io::Error>(out.freeze());
                        return Some((item, (payload, buf, closing, held)));
                    }
                    Ok(None) => match payload.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        _ => return None,
                    },
                    Err(_) => return None,
                }
            }
        },
    );
    HttpResponse::SwitchingProtocols()
        .upgrade("websocket")
        .insert_header((
            "sec-websocket-accept",
            actix_web::http::header::HeaderValue::from_bytes(&accept).unwrap(),
        ))
        .streaming(frames)
}

/// `n` zero bytes as a stream of 64 KiB chunks, never all in memory.
pub fn zeros(n: usize) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> {
    static CHUNK: [u8; 65536] = [0; 65536];
    let chunks = n.div_ceil(CHUNK.len());
    futures_util::stream::iter((0..chunks).map(move |i| {
        let len = (n - i * CHUNK.len()).min(CHUNK.len());
        Ok(web::Bytes::from_static(&CHUNK[..len]))
    }))
}
