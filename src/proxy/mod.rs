//! The `/api` reverse proxy: only configured `[[routes]]` prefixes reach an
//! upstream, with the user's access token attached and kept fresh (or, on
//! `token = "client"` routes, spa-bff's own client-credentials token).
//!
//! A proxied request goes through named phases, each its own function:
//!
//! 1. [`check_request`]: the CSRF header, the route's method allow-list, an
//!    unambiguous path ([`path`]), a declared body within the route's `max_body`;
//! 2. [`authenticate`]: cookie -> session, as the route's [`TokenRequirement`] says
//!    (`client` and `none` routes never read a session);
//! 3. [`Refresher::ensure_fresh`](crate::flows::refresh::Refresher::ensure_fresh):
//!    refresh the user's access token near its expiry, once; on a route with
//!    `resource`, the token for that resource only (per-route audiences,
//!    [`token_target`]); on a `client` route instead
//!    [`ClientTokenSource::token`](crate::flows::client_token::ClientTokenSource::token):
//!    the route's own token, cached and fetched once for all waiting requests;
//! 4. [`prepare_upstream`]: URL, header hygiene ([`headers`]), `Authorization:
//!    Bearer`, or for a token bound to a key (`oidc.dpop`, [`crate::oidc::dpop`])
//!    `Authorization: DPoP` and a fresh proof of that key, `X-Forwarded-*` (the client
//!    as [`crate::edge::client`] believes it);
//! 5. [`send_upstream`]: stream the request body (never buffered beyond the retry
//!    buffer; every pause bounded by `server.request_body_timeout`, the size by the
//!    route's `max_body`, see [`crate::edge::body`]) with the route's timeout until the
//!    response head arrives; an upstream's DPoP nonce challenge is answered once
//!    ([`Call::send`]);
//! 6. [`respond`]: filter the response headers (own cookies never set; answers to
//!    token-bearing requests made `private`) and stream the body back.
//!
//! WebSocket upgrades leave after phase 3 for [`websocket::tunnel`], watched for as
//! long as they stay open.
//!
//! Every failure is JSON (API callers never get an HTML page or a redirect):
//! 400 for an ambiguous path, 403 without the CSRF header, 401 without a session on
//! a `required` route, 403 `invalid_target` when no token for the route's `resource`
//! can be had (or the provider's names another audience), 408 when the request body stalls, 413 when it is too large,
//! 502 when the upstream cannot be reached, 504 when it is slower than the route's
//! timeout, 503 when Redis or the provider is away (or refuses a `client` route's
//! token).

pub mod headers;
pub mod idle;
pub mod path;
pub mod websocket;

use crate::config::{RouteSettings, TokenRequirement};
use crate::csrf;
use crate::edge::body::{FaultSlot, GuardedBody};
use crate::edge::client::ClientAddr;
use crate::error::Error;
use crate::oidc::dpop::{self, DpopKey};
use crate::secret::Sensitive;
use crate::session::Target;
use crate::state::{AppState, SessionLookup};
use crate::store::LoadedSession;
use crate::telemetry::{RequestId, REQUEST_ID};
use crate::time::now_ms;
use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use awc::error::SendRequestError;
use futures_util::StreamExt;
use std::sync::Arc;

/// The body stream of an upstream response.
trait UpstreamBody:
    futures_util::Stream<Item = Result<web::Bytes, awc::error::PayloadError>> + Unpin + 'static
{
}

impl<S> UpstreamBody for S where
    S: futures_util::Stream<Item = Result<web::Bytes, awc::error::PayloadError>> + Unpin + 'static
{
}

/// Registers one scope per route; they must come before the SPA's catch-all.
pub fn configure(cfg: &mut web::ServiceConfig, routes: &[RouteSettings]) {
    for route in routes {
        let route = Arc::new(route.clone());
        let prefix = route.prefix.clone();
        cfg.service(web::scope(&prefix).default_service(web::to(
            move |req: HttpRequest, body: web::Payload, state: web::Data<AppState>| {
                let route = route.clone();
                async move { forward(req, body, state, route).await }
            },
        )));
    }
}

/// A failed proxied request: the error, and whether the session cookie is dead.
struct Rejection {
    error: Error,
    clear_cookie: bool,
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        Rejection {
            error,
            clear_cookie: false,
        }
    }
}

/// The handler of every route.
async fn forward(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    route: Arc<RouteSettings>,
) -> HttpResponse {
    match proxy(&req, body, &state, &route).await {
        Ok(res) => res,
        Err(Rejection {
            error,
            clear_cookie,
        }) => {
            if matches!(
                error,
                Error::UpstreamUnavailable(_) | Error::UpstreamTimeout(_)
            ) {
                tracing::warn!(route = %route.prefix, error.code = error.code(), "upstream failed");
            }
            // `error_response` (not `from_error`): always JSON, even for navigations.
            let mut res = error.error_response();
            if clear_cookie {
                state.forget_session(&mut res);
            }
            res
        }
    }
}

async fn proxy(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    route: &RouteSettings,
) -> Result<HttpResponse, Rejection> {
    let rest = check_request(req, state, route)?;
    let call = Call {
        req,
        state,
        route,
        rest,
    };
    let session = authenticate(req, state, route).await?;
    let (session, session_ended) = match session {
        None => (None, false),
        Some(s) => {
            let target = token_target(&s, route);
            match live(state.refresher().ensure_fresh(s, target).await, route)? {
                Some(fresh) => (Some(fresh), false),
                None => (None, true),
            }
        }
    };
    let client_token = match route.token {
        TokenRequirement::Client => Some(Box::pin(state.client_tokens().token(route)).await?),
        _ => None,
    };
    let token = session
        .as_ref()
        .and_then(|s| {
            let target = token_target(s, route);
            s.record.tokens.access_token_for(target).map(|t| t.expose())
        })
        .or(client_token.as_ref().map(Sensitive::expose));
    let carried_token = token.is_some();
    let bound = bound_key(state, route, session.as_ref())?;
    let key = bound.as_deref();
    if websocket::is_upgrade(req) {
        let url = upstream_url(route, &call.rest, req.query_string());
        let nonce = key.and_then(|_| state.dpop_nonces.upstream(&origin(route)));
        let headers = upstream_headers(
            req,
            state,
            token.map(|t| Credential::new(t, key)),
            &url,
            nonce.as_deref(),
        )?;
        let watch = websocket::Watch {
            state: state.clone(),
            session: session.as_ref().map(|s| s.reference.clone()),
            idle_timeout: route.websocket_idle_timeout,
        };
        let tunnel = websocket::tunnel(req, payload, &url, headers, route.timeout, watch);
        let res = Box::pin(tunnel).await?;
        return Ok(res);
    }
    let body = OutgoingBody::read(req, payload, state, route).await?;
    let replay = body.replay();
    let mut response = call
        .send(token.map(|t| Credential::new(t, key)), body)
        .await?;
    let mut retry_ended = false;
    if let (Some(rejected), Some(body), true) = (&client_token, &replay, rejects_token(&response)) {
        if let Some(renewed) =
            Box::pin(state.client_tokens().replace_rejected(route, rejected)).await?
        {
            tracing::info!(route = %route.prefix, "upstream rejected the client token; retrying once with a new one");
            response = call
                .send(
                    Some(Credential::new(renewed.expose(), key)),
                    body.replay_owned(),
                )
                .await?;
        }
    }
    if let (Some(session), Some(body)) = (session, replay) {
        if rejects_token(&response) {
            match Box::pin(call.renew_rejected(session)).await? {
                Renewal::Renewed(renewed) => {
                    tracing::info!(route = %route.prefix, "upstream rejected the access token; retrying once with a new one");
                    let target = token_target(&renewed, route);
                    let token = renewed.record.tokens.access_token_for(target);
                    response = call
                        .send(token.map(|t| Credential::new(t.expose(), key)), body)
                        .await?;
                }
                Renewal::NothingNewer => {} // the upstream's 401 stands
                Renewal::SessionEnded => retry_ended = true, // likewise; the cookie goes
            }
        }
    }
    let mut res = respond(response, route, carried_token, state);
    if session_ended || retry_ended {
        state.forget_session(&mut res);
    }
    Ok(res)
}

/// One proxied request, once checked: what phases 4 and 5 need to (re)send it.
struct Call<'a> {
    req: &'a HttpRequest,
    state: &'a AppState,
    route: &'a RouteSettings,
    /// The path to append to the upstream URL.
    rest: String,
}

impl Call<'_> {
    /// Phases 4 and 5: prepare and send, with `credential`'s token. A DPoP-bound one
    /// goes with a fresh proof, and an upstream that demands a new nonce for it
    /// (`401`, `use_dpop_nonce`) gets the request once more with that nonce when the
    /// body can be sent again (never a second time: its next `401` is passed on).
    async fn send(
        &self,
        credential: Option<Credential<'_>>,
        body: OutgoingBody,
    ) -> Result<awc::ClientResponse<impl UpstreamBody>, Error> {
        let Some(Credential::Dpop { .. }) = credential else {
            return self.send_once(credential, None, body).await;
        };
        let nonces = &self.state.dpop_nonces;
        let origin = origin(self.route);
        let replay = body.replay();
        let sent = nonces.upstream(&origin);
        let response = self.send_once(credential, sent.as_deref(), body).await?;
        nonces.remember_upstream(&origin, response.headers());
        let demanded = response.status() == actix_web::http::StatusCode::UNAUTHORIZED
            && dpop::resource_demands_nonce(response.headers());
        match (demanded, replay, nonces.upstream(&origin)) {
            (true, Some(body), Some(nonce)) if Some(&nonce) != sent.as_ref() => {
                tracing::debug!(route = %self.route.prefix, "the upstream demands a DPoP nonce; retrying once with it");
                let response = self.send_once(credential, Some(&nonce), body).await?;
                nonces.remember_upstream(&origin, response.headers());
                Ok(response)
            }
            _ => Ok(response),
        }
    }

    /// Prepares and sends once, with `nonce` in a DPoP proof.
    async fn send_once(
        &self,
        credential: Option<Credential<'_>>,
        nonce: Option<&str>,
        body: OutgoingBody,
    ) -> Result<awc::ClientResponse<impl UpstreamBody>, Error> {
        let upstream = prepare_upstream(
            self.req, self.state, self.route, &self.rest, credential, nonce,
        )?;
        let _timer = self.state.metrics.upstream_timer(&self.route.prefix);
        send_upstream(upstream, body).await
    }

    /// Phase 5b: the upstream rejected a token we thought valid (revoked early,
    /// or clocks differ): get a new one, shared with concurrent callers.
    async fn renew_rejected(&self, session: LoadedSession) -> Result<Renewal, Rejection> {
        let target = token_target(&session, self.route);
        let rejected = session.record.tokens.access_token_for(target).cloned();
        Ok(
            match live(
                self.state
                    .refresher()
                    .replace_rejected(session, target)
                    .await,
                self.route,
            )? {
                Some(renewed)
                    if renewed.record.tokens.access_token_for(target) != rejected.as_ref() =>
                {
                    Renewal::Renewed(Box::new(renewed))
                }
                Some(_) => Renewal::NothingNewer,
                None => Renewal::SessionEnded,
            },
        )
    }
}

/// What replacing a rejected token gave.
enum Renewal {
    /// A new access token: retry once with it.
    Renewed(Box<LoadedSession>),
    /// No refresh token to get another one with.
    NothingNewer,
    /// The session ended (only on `optional` routes; `required` ones answer 401).
    SessionEnded,
}

/// How a request's access token goes upstream.
#[derive(Clone, Copy)]
enum Credential<'a> {
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// `Authorization: DPoP <token>` and a fresh proof of `key`, the key the token is
    /// bound to (RFC 9449 section 7).
    Dpop { token: &'a str, key: &'a DpopKey },
}

impl<'a> Credential<'a> {
    fn new(token: &'a str, key: Option<&'a DpopKey>) -> Self {
        match key {
            Some(key) => Credential::Dpop { token, key },
            None => Credential::Bearer(token),
        }
    }
}

/// The DPoP key the request's token is bound to: the session's (when it logged in
/// with `oidc.dpop`), or a `client` route's. `None` for Bearer tokens: without DPoP
/// nothing is read, parsed or signed.
fn bound_key(
    state: &AppState,
    route: &RouteSettings,
    session: Option<&LoadedSession>,
) -> Result<Option<Arc<DpopKey>>, Error> {
    if route.token == TokenRequirement::Client {
        return state.client_tokens().dpop_key(route);
    }
    match session.and_then(|s| s.record.dpop_key.as_ref()) {
        Some(stored) => Ok(Some(Arc::new(DpopKey::from_stored(stored)?))),
        None => Ok(None),
    }
}

/// The upstream's origin, under which its DPoP nonce is remembered.
fn origin(route: &RouteSettings) -> String {
    route.upstream.origin().ascii_serialization()
}

/// Which of the session's access tokens `route` gets: the one for its `resource`
/// (RFC 8707), or the session's own one. A token for one resource never goes to a
/// route with another (or none).
fn token_target<'r>(session: &LoadedSession, route: &'r RouteSettings) -> Target<'r> {
    session
        .record
        .resources
        .target_for(route.resource.as_deref())
}

/// Maps a refresh outcome: `Ok(None)` when the session ended but the route is
/// `optional` (forward without a token, clear the cookie); 401 when it ended on a
/// `required` route.
fn live(
    outcome: Result<LoadedSession, Error>,
    route: &RouteSettings,
) -> Result<Option<LoadedSession>, Rejection> {
    match outcome {
        Ok(session) => Ok(Some(session)),
        Err(Error::Unauthenticated) if route.token == TokenRequirement::Optional => Ok(None),
        Err(error @ Error::Unauthenticated) => Err(Rejection {
            error,
            clear_cookie: true,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Whether the upstream answered 401 with `WWW-Authenticate: Bearer ...
/// error="invalid_token"` (RFC 6750 section 3.1), or `DPoP ... error="invalid_token"`
/// (RFC 9449 section 7.1).
fn rejects_token<S>(response: &awc::ClientResponse<S>) -> bool {
    response.status() == actix_web::http::StatusCode::UNAUTHORIZED
        && response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .filter_map(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .any(|v| {
                (v.starts_with("bearer") || v.starts_with("dpop"))
                    && v.contains("error=\"invalid_token\"")
            })
}

/// Bodies up to this size are buffered so that a request can be retried once
/// after the upstream rejected the token; larger ones stream (and are not retried).
pub const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// The request body as it will be sent upstream, with the framing it came with.
enum OutgoingBody {
    /// No body at all (no Content-Length, not chunked).
    None,
    /// A small body read into memory (replayable).
    Buffered(web::Bytes),
    /// A large or chunked body, streamed once (bounded in time and size; `fault`
    /// tells why it broke off, if it did).
    Streamed {
        body: GuardedBody<web::Payload>,
        length: Option<u64>,
        fault: FaultSlot,
    },
}

/// The request's `Content-Length`, if it has a valid one.
fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

impl OutgoingBody {
    async fn read(
        req: &HttpRequest,
        payload: web::Payload,
        state: &AppState,
        route: &RouteSettings,
    ) -> Result<Self, Error> {
        let length = content_length(req);
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        let idle = state.settings.server.request_body_timeout;
        let mut body = GuardedBody::new(payload, idle, route.max_body);
        let fault = body.fault();
        match length {
            None if !chunked => Ok(OutgoingBody::None),
            Some(len) if !chunked && len <= RETRY_BUFFER_LIMIT => {
                let mut buf = web::BytesMut::with_capacity(len as usize);
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| match fault.get() {
                        Some(fault) => fault.into(),
                        None => {
                            Error::UpstreamUnavailable(format!("reading the request body: {e}"))
                        }
                    })?;
                    buf.extend_from_slice(&chunk);
                }
                Ok(OutgoingBody::Buffered(buf.freeze()))
            }
            length => Ok(OutgoingBody::Streamed {
                body,
                length,
                fault,
            }),
        }
    }

    /// Another copy of a replay copy (never a stream).
    fn replay_owned(&self) -> Self {
        self.replay().unwrap_or(OutgoingBody::None)
    }

    /// A copy to send again, when the body is not a one-shot stream.
    fn replay(&self) -> Option<Self> {
        match self {
            OutgoingBody::None => Some(OutgoingBody::None),
            OutgoingBody::Buffered(b) => Some(OutgoingBody::Buffered(b.clone())),
            OutgoingBody::Streamed { .. } => None,
        }
    }
}

/// Phase 1: CSRF header, method allow-list, an unambiguous path, a declared body
/// within `max_body`. Returns the path after the prefix (or the whole path when the
/// route keeps the prefix).
fn check_request(
    req: &HttpRequest,
    state: &AppState,
    route: &RouteSettings,
) -> Result<String, Error> {
    let settings = &state.settings;
    if websocket::is_upgrade(req) {
        // Browsers cannot add headers to a WebSocket handshake but always send Origin.
        if !csrf::origin_is_ours(req.headers(), settings) {
            return Err(Error::Forbidden(
                "WebSocket upgrades must come from this application's origin".into(),
            ));
        }
    } else if !csrf::has_csrf_header(req.headers(), settings) {
        return Err(Error::Forbidden(
            format!(
                "API requests must carry the CSRF header {}",
                csrf::expected_header(settings)
            )
            .into(),
        ));
    }
    if let Some(methods) = &route.methods {
        if !methods.iter().any(|m| m == req.method().as_str()) {
            return Err(Error::MethodNotAllowed(
                "this method is not allowed on this route",
            ));
        }
    }
    let rest = path::upstream_path(route, req.uri().path())?;
    if content_length(req).is_some_and(|len| len > route.max_body) {
        return Err(Error::BodyTooLarge {
            limit: route.max_body,
        });
    }
    Ok(rest)
}

/// The upstream URL: base + path (+ `?query`).
pub fn upstream_url(route: &RouteSettings, path: &str, query: &str) -> String {
    let base = route.upstream.as_str().trim_end_matches('/');
    let path = if path.is_empty() && route.upstream.path() == "/" {
        "/"
    } else {
        path
    };
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    }
}

/// Phase 2: the session, as the route requires it. `Ok(None)`: forward without
/// a token (`optional` without a session, or `none`).
async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    route: &RouteSettings,
) -> Result<Option<LoadedSession>, Rejection> {
    if matches!(
        route.token,
        TokenRequirement::None | TokenRequirement::Client
    ) {
        return Ok(None);
    }
    let required = route.token == TokenRequirement::Required;
    match state.session(req).await? {
        SessionLookup::Active(s) => Ok(Some(*s)),
        SessionLookup::NoCookie if required => Err(Error::Unauthenticated.into()),
        SessionLookup::Stale if required => Err(Rejection {
            error: Error::Unauthenticated,
            clear_cookie: true,
        }),
        SessionLookup::NoCookie | SessionLookup::Stale => Ok(None),
    }
}

/// Phase 4: the upstream request, headers cleaned and the token attached (with a
/// DPoP proof carrying `nonce`, for a DPoP-bound token).
fn prepare_upstream(
    req: &HttpRequest,
    state: &AppState,
    route: &RouteSettings,
    path: &str,
    credential: Option<Credential<'_>>,
    nonce: Option<&str>,
) -> Result<awc::ClientRequest, Error> {
    let url = upstream_url(route, path, req.query_string());
    let mut upstream = state
        .upstream
        .request(req.method().clone(), url.as_str())
        .no_decompress()
        .timeout(route.timeout);
    *upstream.headers_mut() = upstream_headers(req, state, credential, &url, nonce)?;
    Ok(upstream)
}

/// The browser's headers cleaned ([`headers`]), plus `X-Forwarded-*` and the token
/// (and for a DPoP-bound one, a proof for this request to `url`).
fn upstream_headers(
    req: &HttpRequest,
    state: &AppState,
    credential: Option<Credential<'_>>,
    url: &str,
    nonce: Option<&str>,
) -> Result<actix_web::http::header::HeaderMap, Error> {
    let mut out =
        headers::upstream_request_headers(req.headers(), &state.settings.proxy.csrf_header);
    let forwarded_for = req
        .extensions()
        .get::<ClientAddr>()
        .and_then(ClientAddr::forwarded_for_header);
    state.forwarding.add_to(&mut out, forwarded_for);
    // The upstream logs the same request id as spa-bff.
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|RequestId(id)| HeaderValue::from_str(id).ok());
    if let Some(id) = request_id {
        out.insert(REQUEST_ID, id);
    }
    let invalid = || Error::Internal("access token is not a valid header value".into());
    match credential {
        None => {}
        Some(Credential::Bearer(token)) => {
            let value = authorization("Bearer", token).ok_or_else(invalid)?;
            out.insert(header::AUTHORIZATION, value);
        }
        Some(Credential::Dpop { token, key }) => {
            let value = authorization("DPoP", token).ok_or_else(invalid)?;
            out.insert(header::AUTHORIZATION, value);
            let proof = key.proof(req.method().as_str(), url, Some(token), nonce, now_ms())?;
            let proof = HeaderValue::from_str(&proof).map_err(|_| invalid())?;
            out.insert(header::HeaderName::from_static("dpop"), proof);
        }
    }
    Ok(out)
}

/// `Authorization: <scheme> <token>`, marked sensitive; `None` when the token holds
/// bytes a header cannot.
fn authorization(scheme: &str, token: &str) -> Option<HeaderValue> {
    let mut value = String::with_capacity(scheme.len() + 1 + token.len());
    value.push_str(scheme);
    value.push(' ');
    value.push_str(token);
    let mut value = HeaderValue::from_maybe_shared(web::Bytes::from(value)).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Phase 5: sends the request, streaming the body with the framing it came with.
async fn send_upstream(
    upstream: awc::ClientRequest,
    body: OutgoingBody,
) -> Result<awc::ClientResponse<impl UpstreamBody>, Error> {
    let mut fault = None;
    let sent = match body {
        OutgoingBody::None => upstream.send(),
        OutgoingBody::Buffered(bytes) => upstream.send_body(bytes),
        OutgoingBody::Streamed {
            body,
            length,
            fault: slot,
        } => {
            fault = Some(slot);
            match length {
                Some(len) => upstream.send_body(SizedStream::new(len, body)),
                None => upstream.send_stream(body),
            }
        }
    };
    sent.await.map_err(|e| {
        // The client's body broke off (stalled, too large): that, not the upstream, is why.
        if let Some(fault) = fault.and_then(|f| f.get()) {
            return fault.into();
        }
        match e {
            SendRequestError::Timeout => {
                Error::UpstreamTimeout("no response within the route timeout".into())
            }
            other => Error::UpstreamUnavailable(other.to_string()),
        }
    })
}

/// Phase 6: status and filtered headers as the upstream sent them; body streamed.
/// An answer to a request that carried the user's token is kept out of shared caches
/// unless the route allows them.
fn respond(
    upstream: awc::ClientResponse<impl UpstreamBody>,
    route: &RouteSettings,
    carried_token: bool,
    state: &AppState,
) -> HttpResponse {
    let status = upstream.status();
    let policy = headers::ResponsePolicy {
        allow_set_cookie: route.allow_set_cookie,
        session_cookie: &state.settings.session.cookie_name,
    };
    let mut out = headers::downstream_response_headers(upstream.headers(), policy);
    if carried_token && !route.allow_shared_cache {
        headers::make_private(&mut out);
    }
    let length = upstream
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = idle::IdleTimeout::new(upstream, route.timeout);
    let mut res = match length {
        Some(len) => HttpResponse::build(status).body(SizedStream::new(len, body)),
        None => HttpResponse::build(status).streaming(body),
    };
    // The builder added no header of its own: the filtered ones are the response's.
    *res.headers_mut() = out;
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn route(prefix: &str, upstream: &str, strip: bool) -> RouteSettings {
        RouteSettings {
            prefix: prefix.into(),
            upstream: upstream.parse().unwrap(),
            token: TokenRequirement::Required,
            scopes: Vec::new(),
            resource: None,
            audience: None,
            strip_prefix: strip,
            timeout: Duration::from_secs(1),
            methods: None,
            allow_set_cookie: false,
            max_body: 1 << 20,
            allow_shared_cache: false,
            allow_plain_http: false,
            websocket_idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_rest_of_the_path_and_the_query_are_appended_to_the_upstream() {
        let r = route("/api", "http://up:9000/v1", true);
        let url = |p: &str, q: &str| upstream_url(&r, &path::upstream_path(&r, p).unwrap(), q);
        assert_eq!(
            url("/api/orders/7", "a=1&b=%20"),
            "http://up:9000/v1/orders/7?a=1&b=%20"
        );
        assert_eq!(url("/api", ""), "http://up:9000/v1");
        assert_eq!(url("/api/", ""), "http://up:9000/v1/");
        let root = route("/api", "http://up:9000", true);
        assert_eq!(upstream_url(&root, "", ""), "http://up:9000/");
        let keep = route("/api", "http://up:9000/", false);
        assert_eq!(
            upstream_url(&keep, &path::upstream_path(&keep, "/api/x").unwrap(), ""),
            "http://up:9000/api/x"
        );
    }
}

#[cfg(test)]
mod future_size {
    use super::*;

    fn future_size<F, A, B, C, D, R>(_: &F) -> usize
    where
        F: Fn(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every proxied request's future is moved into a box (actix-web) and copied
    /// around: rare paths (refresh, client tokens, tunnels, 401 retries, Redis reads)
    /// are boxed where they run so that it stays small (it was 12.5 KB, and copying
    /// it was the largest single cost of a proxied request under callgrind).
    #[test]
    fn a_proxied_request_future_stays_small() {
        let size = future_size(&forward);
        assert!(size <= 6 * 1024, "forward's future is {size} bytes");
    }
}
