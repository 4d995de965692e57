//! A small fake OpenID provider for what a real, certified provider will not do
//! (see `tests/it/fake_op.rs` for the tests): it answers discovery, JWKS, the
//! authorization and token endpoints, and gets one thing wrong at a time ([`Flaw`]).
#![allow(dead_code)]

use crate::support::app::{spawn_app_with, AppOptions, TestApp};
use crate::support::{self, Browser, RegisteredClient, Resp};
use actix_web::{web, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use openidconnect::core::{
    CoreGenderClaim, CoreHmacKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    AccessToken, AdditionalClaims, IdToken, IdTokenClaims, JsonWebKeyId, PrivateSigningKey,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// The provider session id, which openidconnect's core claims do not model.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
struct SidClaim {
    sid: Option<String>,
}
impl AdditionalClaims for SidClaim {}
type FakeIdToken =
    IdToken<SidClaim, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

pub const KEY_PEM: &str = include_str!("../fixtures/fake-op-TEST-ONLY-key.pem");
pub const OTHER_KEY_PEM: &str = include_str!("../fixtures/fake-op-TEST-ONLY-other-key.pem");
pub const KID: &str = "fake-key-1";
pub const CLIENT_ID: &str = "fake-client";
pub const CLIENT_SECRET: &str = "fake-client-secret-for-tests-only";

/// What the fake provider gets wrong this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    None,
    WrongAudience,
    UntrustedExtraAudience,
    WrongIssuerClaim,
    Expired,
    IssuedInTheFuture,
    WrongNonce,
    AlgNone,
    Hs256NotAllowed,
    TamperedPayload,
    BadSignatureSameKid,
    UnknownKid,
    AtHashMismatch,
    NotBearer,
    NoIdToken,
    MixUpIssParameter,
    MissingIssParameter,
    InvalidGrant,
    TokenEndpointDown,
    /// `azp` present and naming another client (with our client the only audience).
    ForeignAzp,
    /// Not a flaw but a quirk widely used providers have (Auth0 with `profile` and
    /// `email`): `updated_at` as an ISO-8601 string, `email_verified` as `"true"`.
    StringTypedClaims,
    /// `auth_time` an hour ago, whatever `prompt=login` or `max_age` asked (a
    /// provider that ignores them, or a replayed sign-in).
    StaleAuthTime,
    /// No `auth_time` at all.
    NoAuthTime,
    /// A valid ID token about another user (`sub`), for refresh answers.
    OtherSubject,
    /// The token endpoint demands a new DPoP nonce of every code exchange (`400
    /// use_dpop_nonce` with a fresh `DPoP-Nonce`), whatever the proof carries.
    DpopNonceEveryTime,
}

/// How the fake answers a `refresh_token` grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshAnswer {
    /// New tokens, the refresh token rotated.
    Tokens,
    /// `400 {"error": "invalid_grant"}`.
    InvalidGrant,
    /// This status with a plain-text body and no OAuth error (as some providers
    /// answer a dead refresh token).
    Bare(u16),
    /// A 200 head and the start of a JSON body, then nothing.
    StallMidBody,
}

/// An endpoint the fake can make stall mid-body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Discovery,
    Userinfo,
}

pub struct FakeState {
    pub flaw: Flaw,
    /// When set, the authorization endpoint answers with this OAuth `error` (as a
    /// provider answers `prompt=none` without a session) instead of a code.
    pub authorize_error: Option<&'static str>,
    /// The query of the last authorization request.
    pub last_authorize: Vec<(String, String)>,
    pub refresh: RefreshAnswer,
    /// Waited before answering a refresh.
    pub refresh_delay: std::time::Duration,
    /// Waited before answering the JWKS.
    pub jwks_delay: std::time::Duration,
    /// `expires_in` of the access tokens it issues.
    pub expires_in: u64,
    /// How many more calls of each endpoint stall mid-body.
    pub stalls: HashMap<Endpoint, usize>,
    /// Requests seen, by path and grant type (`/token refresh_token`).
    pub calls: HashMap<String, usize>,
    /// Refresh tokens issued by refresh grants, oldest first.
    pub issued_refresh_tokens: Vec<String>,
    /// Tokens revoked at its RFC 7009 endpoint.
    pub revoked: Vec<String>,
    pub issuer: String,
    /// code -> nonce
    pub codes: HashMap<String, String>,
    /// The provider session id put in every ID token.
    pub sid: String,
    pub key: CoreRsaPrivateSigningKey,
    /// The `name` claim of the ID tokens it issues.
    pub name: String,
    /// Refresh answers carry an ID token with this flaw (`Flaw::None`: a valid one);
    /// `None`: no ID token, as many providers answer.
    pub refresh_id_token: Option<Flaw>,
    /// Refreshes asking for one of these resources are refused with `invalid_target`
    /// (before any rotation).
    pub invalid_targets: Vec<String>,
    /// The `resource` parameter of each token request, by grant type, in order.
    pub token_resources: Vec<(String, Option<String>)>,
    /// Refreshes asking for one of these resources answer with a JWT access token
    /// (RFC 9068 shape, signed by the fake's key) whose `aud` claim is this value,
    /// whatever was asked: the resource itself (a provider that honours `resource`), or
    /// another audience (one that ignores `resource` on refresh, a misconfiguration,
    /// a mix-up). Other refreshes get opaque `fake-at-...` tokens.
    pub resource_jwt_aud: HashMap<String, Value>,
    /// Access tokens issued by refresh grants, oldest first.
    pub issued_access_tokens: Vec<String>,
    /// Accept only the latest refresh token issued (by the code exchange or a
    /// refresh); any other gets `400 invalid_grant`, as a rotating provider's reuse
    /// detection answers. Off: any refresh token is accepted.
    pub strict_rotation: bool,
    /// The latest refresh token issued (what `strict_rotation` accepts).
    pub live_refresh_token: Option<String>,
    /// The `resource` parameters of each authorization request, in order.
    pub authorize_resources: Vec<Vec<String>>,
    /// Where the discovery document puts the token endpoint and the JWKS (both
    /// `/token` and `/token2`, `/jwks` and `/jwks2` answer; a JWKS path other than
    /// this one serves the first key only, as a provider's old URL would).
    pub token_path: String,
    pub jwks_path: String,
    /// The `issuer` the discovery document names, when not the real one.
    pub discovery_issuer: Option<String>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn rsa_key(pem: &str, kid: &str) -> CoreRsaPrivateSigningKey {
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new(kid.into()))).unwrap()
}

/// Counts a call, and whether this call of `endpoint` stalls.
fn count(state: &web::Data<Mutex<FakeState>>, call: &str, endpoint: Option<Endpoint>) -> bool {
    let mut s = state.lock().unwrap();
    *s.calls.entry(call.to_string()).or_default() += 1;
    match endpoint.and_then(|e| s.stalls.get_mut(&e)) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// A 200 JSON head and the first bytes of a body, then a stall (until the client
/// gives up: the stream never ends by itself).
fn stalled_json(start: &'static str) -> HttpResponse {
    let first = futures_util::stream::once(async move {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(start.as_bytes()))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(first.chain(futures_util::stream::pending()))
}

async fn discovery(state: web::Data<Mutex<FakeState>>) -> HttpResponse {
    if count(
        &state,
        "/.well-known/openid-configuration",
        Some(Endpoint::Discovery),
    ) {
        return stalled_json("{\"issuer\": ");
    }
    let (issuer, named, token_path, jwks_path) = {
        let s = state.lock().unwrap();
        let named = s.discovery_issuer.clone().unwrap_or(s.issuer.clone());
        (
            s.issuer.clone(),
            named,
            s.token_path.clone(),
            s.jwks_path.clone(),
        )
    };
    HttpResponse::Ok().json(json!({
        "issuer": named,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}{token_path}"),
        "jwks_uri": format!("{issuer}{jwks_path}"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(req: HttpRequest, state: web::Data<Mutex<FakeState>>) -> HttpResponse {
    count(&state, req.path(), None);
    let delay = state.lock().unwrap().jwks_delay;
    actix_web::rt::time::sleep(delay).await;
    let key = {
        let s = state.lock().unwrap();
        if req.path() == s.jwks_path {
            s.key.as_verification_key()
        } else {
            rsa_key(KEY_PEM, KID).as_verification_key()
        }
    };
    HttpResponse::Ok().json(json!({ "keys": [key] }))
}

async fn authorize(req: HttpRequest, state: web::Data<Mutex<FakeState>>) -> HttpResponse {
    let q: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let code = support::random_string(16);
    let mut s = state.lock().unwrap();
    s.last_authorize = support::query_pairs(req.query_string());
    let resources = url::form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.into_owned())
        .collect();
    s.authorize_resources.push(resources);
    s.codes.insert(code.clone(), q["nonce"].clone());
    let mut pairs = match s.authorize_error {
        Some(error) => vec![("error", error), ("state", q["state"].as_str())],
        None => vec![("code", code.as_str()), ("state", q["state"].as_str())],
    };
    let evil = "https://evil.example".to_string();
    match s.flaw {
        Flaw::MixUpIssParameter => pairs.push(("iss", &evil)),
        Flaw::MissingIssParameter => {}
        _ => pairs.push(("iss", &s.issuer)),
    }
    let location = support::with_query(&q["redirect_uri"], &pairs);
    HttpResponse::Found()
        .insert_header(("Location", location))
        .finish()
}

async fn userinfo(state: web::Data<Mutex<FakeState>>) -> HttpResponse {
    if count(&state, "/userinfo", Some(Endpoint::Userinfo)) {
        return stalled_json("{\"sub\": ");
    }
    HttpResponse::Ok().json(json!({ "sub": "fake-user", "email": "fake@example.test" }))
}

/// RFC 7009: records the token (any client authentication is accepted).
async fn revoke(
    form: web::Form<HashMap<String, String>>,
    state: web::Data<Mutex<FakeState>>,
) -> HttpResponse {
    if let Some(token) = form.get("token") {
        state.lock().unwrap().revoked.push(token.clone());
    }
    HttpResponse::Ok().finish()
}

/// The refresh grant: new tokens, or the configured misbehaviour.
async fn refresh(
    path: &str,
    form: &HashMap<String, String>,
    state: &web::Data<Mutex<FakeState>>,
) -> HttpResponse {
    count(state, &format!("{path} refresh_token"), None);
    let resource = form.get("resource").cloned();
    {
        let mut s = state.lock().unwrap();
        s.token_resources
            .push(("refresh_token".into(), resource.clone()));
        if s.strict_rotation && form.get("refresh_token") != s.live_refresh_token.as_ref() {
            return HttpResponse::BadRequest().json(json!({ "error": "invalid_grant" }));
        }
        if resource
            .as_ref()
            .is_some_and(|r| s.invalid_targets.contains(r))
        {
            return HttpResponse::BadRequest().json(json!({ "error": "invalid_target" }));
        }
    }
    let (answer, delay) = {
        let s = state.lock().unwrap();
        (s.refresh, s.refresh_delay)
    };
    actix_web::rt::time::sleep(delay).await;
    match answer {
        RefreshAnswer::InvalidGrant => {
            HttpResponse::BadRequest().json(json!({ "error": "invalid_grant" }))
        }
        RefreshAnswer::Bare(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .content_type("text/plain")
                .body(if status == 400 { "" } else { "Unauthorized" })
        }
        RefreshAnswer::StallMidBody => stalled_json("{\"access_token\": \"fake-at-"),
        RefreshAnswer::Tokens => {
            if !form.contains_key("refresh_token") {
                return HttpResponse::BadRequest().json(json!({ "error": "invalid_request" }));
            }
            let mut s = state.lock().unwrap();
            let refresh_token = format!("fake-rt-{}", support::random_string(16));
            s.issued_refresh_tokens.push(refresh_token.clone());
            s.live_refresh_token = Some(refresh_token.clone());
            let jwt_aud = resource.as_ref().and_then(|r| s.resource_jwt_aud.get(r));
            let access_token = match (&resource, jwt_aud) {
                (_, Some(aud)) => access_token_jwt(&s, aud.clone()),
                (Some(r), None) => format!(
                    "fake-at-for-{}-{}",
                    resource_tag(r),
                    support::random_string(16)
                ),
                (None, None) => format!("fake-at-{}", support::random_string(16)),
            };
            s.issued_access_tokens.push(access_token.clone());
            let mut body = json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": s.expires_in,
                "refresh_token": refresh_token,
            });
            if let Some(flaw) = s.refresh_id_token {
                body["id_token"] = Value::String(id_token(&s, flaw, None, &access_token));
            }
            HttpResponse::Ok().json(body)
        }
    }
}

async fn token(
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
    state: web::Data<Mutex<FakeState>>,
) -> HttpResponse {
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        return refresh(req.path(), &form, &state).await;
    }
    count(&state, &format!("{} authorization_code", req.path()), None);
    let mut s = state.lock().unwrap();
    let resource = form.get("resource").cloned();
    s.token_resources
        .push(("authorization_code".into(), resource));
    match s.flaw {
        Flaw::TokenEndpointDown => return HttpResponse::BadGateway().body("upstream down"),
        Flaw::InvalidGrant => {
            return HttpResponse::BadRequest().json(json!({ "error": "invalid_grant" }))
        }
        Flaw::DpopNonceEveryTime => {
            return HttpResponse::BadRequest()
                .insert_header(("DPoP-Nonce", support::random_string(12)))
                .json(json!({ "error": "use_dpop_nonce" }))
        }
        _ => {}
    }
    let Some(nonce) = form.get("code").and_then(|c| s.codes.remove(c)) else {
        return HttpResponse::BadRequest().json(json!({ "error": "invalid_grant" }));
    };
    let access_token = format!("fake-at-{}", support::random_string(16));
    let id_token = id_token(&s, s.flaw, Some(&nonce), &access_token);
    let refresh_token = format!("fake-rt-{}", support::random_string(16));
    s.live_refresh_token = Some(refresh_token.clone());
    let mut body = json!({
        "access_token": access_token,
        "token_type": if s.flaw == Flaw::NotBearer { "mac" } else { "Bearer" },
        "expires_in": s.expires_in,
        "refresh_token": refresh_token,
        "scope": "openid profile",
    });
    if s.flaw != Flaw::NoIdToken {
        body["id_token"] = Value::String(id_token);
    }
    HttpResponse::Ok().json(body)
}

/// A JWT access token (RFC 9068) with this `aud`, signed by the fake's key.
fn access_token_jwt(s: &FakeState, aud: Value) -> String {
    let t = now();
    let claims = json!({
        "iss": s.issuer,
        "sub": "fake-user",
        "aud": aud,
        "client_id": CLIENT_ID,
        "exp": t + s.expires_in as i64,
        "iat": t,
        "jti": support::random_string(12),
        "scope": "openid",
    });
    sign_jwt(&claims, KEY_PEM, KID, "at+jwt")
}

/// A short, URL-safe tag naming a resource in the fake's access tokens.
pub fn resource_tag(resource: &str) -> String {
    resource
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// The ID token with `flaw` (a refreshed one has no nonce).
fn id_token(s: &FakeState, flaw: Flaw, nonce: Option<&str>, access_token: &str) -> String {
    let t = now();
    let mut claims = json!({
        "iss": s.issuer,
        "sub": "fake-user",
        "aud": [CLIENT_ID],
        "exp": t + 300,
        "iat": t,
        "name": s.name,
        "sid": s.sid,
        "auth_time": t,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    match flaw {
        Flaw::StaleAuthTime => claims["auth_time"] = json!(t - 3600),
        Flaw::NoAuthTime => {
            claims.as_object_mut().unwrap().remove("auth_time");
        }
        Flaw::WrongAudience => claims["aud"] = json!(["someone-else"]),
        Flaw::UntrustedExtraAudience => {
            claims["aud"] = json!([CLIENT_ID, "another-api"]);
            claims["azp"] = json!(CLIENT_ID);
        }
        Flaw::WrongIssuerClaim => claims["iss"] = json!("https://evil.example"),
        Flaw::Expired => {
            claims["exp"] = json!(t - 600);
            claims["iat"] = json!(t - 900);
        }
        Flaw::IssuedInTheFuture => {
            claims["iat"] = json!(t + 3600);
            claims["exp"] = json!(t + 7200);
        }
        Flaw::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
        Flaw::ForeignAzp => claims["azp"] = json!("another-client"),
        Flaw::OtherSubject => claims["sub"] = json!("someone-else"),
        Flaw::StringTypedClaims => {
            claims["updated_at"] = json!("2024-01-01T00:00:00.000Z");
            claims["email"] = json!("fake@example.test");
            claims["email_verified"] = json!("true");
            // openidconnect's own claim types would write them back as a number and a
            // boolean: sign the JSON as it is.
            let digest = Sha256::digest(access_token.as_bytes());
            claims["at_hash"] = json!(URL_SAFE_NO_PAD.encode(&digest[..16]));
            return sign_jwt(&claims, KEY_PEM, KID, "JWT");
        }
        _ => {}
    }
    let claims: IdTokenClaims<SidClaim, CoreGenderClaim> =
        serde_json::from_value(claims.clone()).unwrap();
    let at = AccessToken::new(access_token.to_string());
    let rs256 = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;
    let sign = |key: &CoreRsaPrivateSigningKey, at: &AccessToken| {
        FakeIdToken::new(claims.clone(), key, rs256.clone(), Some(at), None)
            .unwrap()
            .to_string()
    };
    match flaw {
        Flaw::AlgNone => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
            format!("{header}.{payload}.")
        }
        Flaw::Hs256NotAllowed => FakeIdToken::new(
            claims.clone(),
            &CoreHmacKey::new(CLIENT_SECRET.as_bytes()),
            CoreJwsSigningAlgorithm::HmacSha256,
            Some(&at),
            None,
        )
        .unwrap()
        .to_string(),
        Flaw::TamperedPayload => {
            let signed = sign(&s.key, &at);
            let parts: Vec<&str> = signed.split('.').collect();
            let mut payload: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            payload["sub"] = json!("admin");
            let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
            format!("{}.{payload}.{}", parts[0], parts[2])
        }
        Flaw::BadSignatureSameKid => sign(&rsa_key(OTHER_KEY_PEM, KID), &at),
        Flaw::UnknownKid => sign(&rsa_key(OTHER_KEY_PEM, "never-published"), &at),
        Flaw::AtHashMismatch => sign(&s.key, &AccessToken::new("another-token".into())),
        _ => sign(&s.key, &at),
    }
}

/// A compact JWS over `claims`, signed RS256 by `pem` under `kid`.
pub fn sign_jwt(claims: &Value, pem: &str, kid: &str, typ: &str) -> String {
    let header = json!({ "alg": "RS256", "kid": kid, "typ": typ });
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let input = format!("{}.{}", b64(&header), b64(claims));
    let signature = rsa_key(pem, kid)
        .sign(
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            input.as_bytes(),
        )
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Starts the fake provider on a free port; returns its state and issuer.
pub fn start_fake_op() -> (Arc<Mutex<FakeState>>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let state = web::Data::new(Mutex::new(FakeState {
        flaw: Flaw::None,
        authorize_error: None,
        last_authorize: Vec::new(),
        refresh: RefreshAnswer::Tokens,
        refresh_delay: std::time::Duration::ZERO,
        jwks_delay: std::time::Duration::ZERO,
        expires_in: 300,
        stalls: HashMap::new(),
        calls: HashMap::new(),
        issued_refresh_tokens: Vec::new(),
        revoked: Vec::new(),
        issuer: issuer.clone(),
        codes: HashMap::new(),
        sid: format!("fake-sid-{}", support::random_string(8)),
        key: rsa_key(KEY_PEM, KID),
        name: "Fake User".into(),
        refresh_id_token: None,
        invalid_targets: Vec::new(),
        token_resources: Vec::new(),
        resource_jwt_aud: HashMap::new(),
        issued_access_tokens: Vec::new(),
        strict_rotation: false,
        live_refresh_token: None,
        authorize_resources: Vec::new(),
        token_path: "/token".into(),
        jwks_path: "/jwks".into(),
        discovery_issuer: None,
    }));
    let shared = state.clone();
    let server = HttpServer::new(move || {
        actix_web::App::new()
            .app_data(shared.clone())
            .route(
                "/.well-known/openid-configuration",
                web::get().to(discovery),
            )
            .route("/jwks", web::get().to(jwks))
            .route("/jwks2", web::get().to(jwks))
            .route("/auth", web::get().to(authorize))
            .route("/token", web::post().to(token))
            .route("/token2", web::post().to(token))
            .route("/userinfo", web::get().to(userinfo))
            .route("/revoke", web::post().to(revoke))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    (state.into_inner(), issuer)
}

/// POSTs `token` to spa-bff's back-channel logout endpoint, as a provider does.
pub async fn send_logout_token(b: &Browser, app: &TestApp, token: &str) -> Resp {
    b.post_form(
        &app.at("/backchannel-logout"),
        &[("logout_token", token)],
        &[],
    )
    .await
}

/// Spawns spa-bff against a fresh fake provider.
pub async fn app_on_fake_op() -> (Arc<Mutex<FakeState>>, String, TestApp) {
    app_on_fake_op_with(AppOptions::default(), |_| {}).await
}

/// Like [`app_on_fake_op`], with these options (issuer and client are the fake's) and
/// the fake prepared by `setup` before spa-bff starts.
pub async fn app_on_fake_op_with(
    opts: AppOptions,
    setup: impl FnOnce(&mut FakeState),
) -> (Arc<Mutex<FakeState>>, String, TestApp) {
    let (fake, issuer) = start_fake_op();
    setup(&mut fake.lock().unwrap());
    let app = spawn_app_with(
        AppOptions {
            issuer: issuer.clone(),
            client: Some(RegisteredClient {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                metadata: Value::Null,
            }),
            ..opts
        },
        support::shared_provider(),
    )
    .await;
    (fake, issuer, app)
}

/// How many requests the fake saw for `call` (`/jwks`, `/token refresh_token`, ...).
pub fn calls(fake: &Mutex<FakeState>, call: &str) -> usize {
    fake.lock().unwrap().calls.get(call).copied().unwrap_or(0)
}

/// Starts a login at spa-bff for `return_to`, lets the fake provider answer at once
/// (its `/auth` redirects straight back), and returns spa-bff's answer at `/callback`
/// to a fetch (`Accept: application/json`, so errors come as JSON).
pub async fn fake_callback(app: &TestApp, browser: &Browser, return_to: &str) -> Resp {
    let authorize = app.start_login(browser, return_to).await;
    let callback = browser.get(&authorize).await;
    browser
        .get_with(
            &app.local(callback.location().expect("fake /auth redirects")),
            &[("accept", "application/json")],
        )
        .await
}

/// Logs a browser in through the fake provider.
pub async fn fake_login(app: &TestApp) -> Browser {
    let browser = Browser::new();
    let res = fake_callback(app, &browser, "/").await;
    assert_eq!(res.status, 302, "login through the fake: {}", res.text());
    browser
}
