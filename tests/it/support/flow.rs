//! An OAuth code flow driven by hand against the test provider, without spa-bff: for
//! tests of the provider itself and of services that need a real access token.

use serde_json::Value;

use super::{
    free_port, http_client, pkce_pair, query_param, random_string, with_query, Browser, Provider,
    RegisteredClient,
};

/// One authorization request, built by hand.
pub struct AuthRequest {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

pub async fn authorize_request(
    provider: &Provider,
    client: &RegisteredClient,
    redirect_base: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> AuthRequest {
    let discovery = provider.discovery().await;
    let endpoint = discovery["authorization_endpoint"].as_str().unwrap();
    let (verifier, challenge) = pkce_pair();
    let (state, nonce) = (random_string(16), random_string(16));
    let redirect_uri = format!("{redirect_base}/callback");
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", scope),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    AuthRequest {
        url: with_query(endpoint, &params),
        state,
        nonce,
        verifier,
    }
}

/// POSTs `form` to the token endpoint with client_secret_basic.
pub async fn token_request(
    provider: &Provider,
    client: &RegisteredClient,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let endpoint = provider.discovery().await["token_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut res = http_client()
        .post(&endpoint)
        .basic_auth(&client.client_id, &client.client_secret)
        .send_form(&form)
        .await
        .expect("token request");
    let body: Value = res.json().await.expect("token response is JSON");
    (res.status().as_u16(), body)
}

pub async fn exchange_code(
    provider: &Provider,
    client: &RegisteredClient,
    redirect_base: &str,
    callback_url: &str,
    req: &AuthRequest,
) -> Value {
    let code = query_param(callback_url, "code").expect("code in callback");
    let redirect_uri = format!("{redirect_base}/callback");
    let (status, body) = token_request(
        provider,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &req.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "code exchange: {body}");
    body
}

pub async fn refresh(provider: &Provider, client: &RegisteredClient, rt: &str) -> (u16, Value) {
    token_request(
        provider,
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await
}

/// Logs `user` in with a fresh client and browser; returns the token response.
pub async fn login(
    provider: &Provider,
    user: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> (RegisteredClient, Value) {
    let base = format!("http://127.0.0.1:{}", free_port());
    let client = provider.register_client(&base, "client_secret_basic").await;
    let req = authorize_request(provider, &client, &base, scope, extra).await;
    let callback = Browser::new().provider_login(&req.url, user).await;
    let tokens = exchange_code(provider, &client, &base, &callback, &req).await;
    (client, tokens)
}

/// RFC 7662 introspection of `token` with `client`'s credentials: the provider's own
/// word on whether it is still active (`{"active": false}` once revoked, consumed by
/// rotation, or expired).
pub async fn introspect(provider: &Provider, client: &RegisteredClient, token: &str) -> Value {
    let endpoint = provider.discovery().await["introspection_endpoint"]
        .as_str()
        .expect("the test provider introspects")
        .to_owned();
    let mut res = http_client()
        .post(&endpoint)
        .basic_auth(&client.client_id, &client.client_secret)
        .send_form(&[("token", token)])
        .await
        .expect("introspection request");
    let body: Value = res.json().await.expect("introspection answers JSON");
    assert_eq!(res.status().as_u16(), 200, "introspection: {body}");
    body
}

/// Whether the provider still considers `token` active.
pub async fn is_active(provider: &Provider, client: &RegisteredClient, token: &str) -> bool {
    introspect(provider, client, token).await["active"] == Value::Bool(true)
}
