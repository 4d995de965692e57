//! demo-api (src/bin/demo-api.rs), the demo's resource server, run as its own process
//! against the real provider: it accepts the provider's JWT access tokens for its audience
//! with the endpoint's scope, and refuses everything else the RFC 6750 way.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::demo_api::DemoApi;
use crate::support::flow::login;
use crate::support::{self, jwt_claims, shared_provider, Provider, ProviderOptions};

const AUDIENCE: &str = "urn:spa-bff:demo-api";

/// The token response of a code flow for `user` with `scope` and optional `resource`.
async fn tokens(op: &Provider, user: &str, scope: &str, resource: Option<&str>) -> Value {
    let extra: Vec<(&str, &str)> = resource.map(|r| ("resource", r)).into_iter().collect();
    login(op, user, scope, &extra).await.1
}

async fn access_token(op: &Provider, user: &str, scope: &str, resource: Option<&str>) -> String {
    tokens(op, user, scope, resource).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn assert_invalid_token(got: (u16, String, Value), what: &str) {
    let (status, challenge, body) = got;
    assert_eq!(status, 401, "{what}: {body}");
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
        "{what}: {challenge}"
    );
    assert_eq!(body["error"], "invalid_token", "{what}: {body}");
}

#[actix_web::test]
async fn valid_token_with_the_scope_is_accepted_under_both_paths() {
    support::init();
    let op = shared_provider();
    let api = DemoApi::start(&op.issuer(), &[]);
    let at = access_token(op, "frank", "openid api:read api:write", Some(AUDIENCE)).await;
    assert_eq!(jwt_claims(&at)["aud"], AUDIENCE);

    for path in ["/hello", "/api/hello"] {
        let (status, challenge, body) = api.call("GET", path, Some(&at)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(challenge, "");
        assert_eq!(body["token"]["valid"], true);
        assert_eq!(body["token"]["sub"], "frank");
        assert_eq!(body["token"]["audience"], AUDIENCE);
        assert_eq!(body["token"]["issuer"], op.issuer());
        assert_eq!(body["token"]["scopes"], json!(["api:read", "api:write"]));
        let expires_in = body["token"]["expires_in"].as_u64().unwrap();
        assert!((290..=300).contains(&expires_in), "{body}");
        assert!(body["message"].as_str().unwrap().contains("frank"));
        assert!(!body.to_string().contains(&at), "the token is never echoed");
    }
    for path in ["/echo", "/api/echo"] {
        let (status, _, body) = api.call("POST", path, Some(&at)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["echo"], json!({"order": 42}));
    }
    let (status, _, _) = api.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn missing_scope_is_403_insufficient_scope() {
    support::init();
    let op = shared_provider();
    let api = DemoApi::start(&op.issuer(), &[]);
    let at = access_token(op, "grace", "openid api:read", Some(AUDIENCE)).await;
    assert_eq!(jwt_claims(&at)["scope"], "api:read");

    let (status, _, _) = api.call("GET", "/api/hello", Some(&at)).await;
    assert_eq!(status, 200);
    let (status, challenge, body) = api.call("POST", "/api/echo", Some(&at)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        challenge,
        r#"Bearer realm="demo-api", error="insufficient_scope", scope="api:write""#
    );
    assert_eq!(body["error"], "insufficient_scope");
}

#[actix_web::test]
async fn no_token_and_garbage_are_401() {
    support::init();
    let op = shared_provider();
    let api = DemoApi::start(&op.issuer(), &[]);

    let (status, challenge, body) = api.call("GET", "/api/hello", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        challenge, r#"Bearer realm="demo-api""#,
        "RFC 6750 3.1: no error code without credentials"
    );
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        assert_invalid_token(api.call("GET", "/api/hello", Some(garbage)).await, garbage);
    }
}

#[actix_web::test]
async fn wrong_audience_id_token_forged_and_tampered_tokens_are_401() {
    support::init();
    let op = shared_provider();
    let api = DemoApi::start(&op.issuer(), &[]);

    let other = access_token(
        op,
        "heidi",
        "openid api:read",
        Some("https://other.example.test"),
    )
    .await;
    let (_, challenge, _) = api.call("GET", "/api/hello", Some(&other)).await;
    assert!(challenge.contains("wrong audience"), "{challenge}");
    assert_invalid_token(
        api.call("GET", "/api/hello", Some(&other)).await,
        "other audience",
    );

    let tokens = tokens(op, "heidi", "openid api:read", Some(AUDIENCE)).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_invalid_token(
        api.call("GET", "/api/hello", Some(id_token)).await,
        "an ID token",
    );

    // A valid token with its payload swapped for one claiming more: the signature fails.
    let at = tokens["access_token"].as_str().unwrap();
    let parts: Vec<&str> = at.split('.').collect();
    let mut claims = jwt_claims(at);
    claims["sub"] = json!("mallory");
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let (_, challenge, _) = api.call("GET", "/api/hello", Some(&tampered)).await;
    assert!(challenge.contains("bad signature"), "{challenge}");

    // The same claims "signed" with alg none, or HS256 keyed with nothing secret.
    for alg in ["none", "HS256"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#));
        let forged = format!("{header}.{payload}.");
        assert_invalid_token(api.call("GET", "/api/hello", Some(&forged)).await, alg);
    }
}

#[actix_web::test]
async fn expired_tokens_and_tokens_of_another_issuer_are_401() {
    support::init();
    let short = Provider::start(ProviderOptions {
        access_token_ttl_secs: 1,
        ..ProviderOptions::default()
    });
    let api = DemoApi::start(&short.issuer(), &[("DEMO_API_LEEWAY_SECS", "0")]);
    let at = access_token(&short, "ivan", "openid api:read", Some(AUDIENCE)).await;
    let (status, _, body) = api.call("GET", "/api/hello", Some(&at)).await;
    assert_eq!(status, 200, "fresh: {body}");
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (_, challenge, _) = api.call("GET", "/api/hello", Some(&at)).await;
    assert!(challenge.contains("expired"), "{challenge}");
    assert_invalid_token(api.call("GET", "/api/hello", Some(&at)).await, "expired");

    // A token of the shared provider: another issuer, signed by a key this API never saw.
    let foreign = access_token(shared_provider(), "ivan", "openid api:read", Some(AUDIENCE)).await;
    assert_invalid_token(
        api.call("GET", "/api/hello", Some(&foreign)).await,
        "another issuer",
    );
}
