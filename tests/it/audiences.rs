//! Issue 11, per-route audiences (RFC 8707 resource indicators, RFC 9700 section 2.3):
//! a route with `resource` gets an access token for that resource only, obtained with
//! the session's refresh token, and a token for one API never reaches another.
//!
//! Against the real provider (which issues JWT access tokens whose `aud` is the
//! resource asked for) and two demo-api processes that each accept only their own
//! audience, plus the recording upstream behind a route without `resource`; and the
//! fake provider for a refusal (`invalid_target`) a real one would give only by policy,
//! and for a token asked for one resource that names another audience (a provider
//! ignoring `resource` on refresh), which spa-bff must refuse itself.

use crate::support::app::{spawn_app_with, stored_record, AppOptions, TestApp};
use crate::support::demo_api::DemoApi;
use crate::support::fake_op::*;
use crate::support::upstream::Upstream;
use crate::support::{self, jwt_claims, query_pairs, Browser, Provider, ProviderOptions, Resp};
use crate::support::{api, sleep_ms, unique};
use futures_util::future::join_all;
use serde_json::json;

const ORDERS: &str = "https://orders.example";
const REPORTS: &str = "https://reports.example";
/// The session's own audience (`oidc.auth_params.resource`).
const DEFAULT: &str = "https://default.example";

/// The audience demo-api saw on a call through spa-bff (it answers only for its own).
fn audience_seen(res: &Resp) -> String {
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["token"]["audience"]
        .as_str()
        .expect("demo-api names the token's audience")
        .to_string()
}

/// Two APIs that each accept only their own audience, an upstream recording what the
/// route without `resource` sends, a provider whose access tokens live 3 s, and
/// spa-bff refreshing 1 s before expiry.
struct Setup {
    provider: Provider,
    /// Kept running for the test's length (killed on drop).
    _apis: [DemoApi; 2],
    plain: Upstream,
    app: TestApp,
}

async fn setup() -> Setup {
    let provider = Provider::start(ProviderOptions {
        access_token_ttl_secs: 3,
        ..ProviderOptions::default()
    });
    let orders = DemoApi::start(&provider.issuer(), &[("DEMO_API_AUDIENCE", ORDERS)]);
    let reports = DemoApi::start(&provider.issuer(), &[("DEMO_API_AUDIENCE", REPORTS)]);
    let plain = Upstream::start();
    let route = |prefix: &str, upstream: &str, resource: Option<&str>| {
        let resource = resource
            .map(|r| format!("resource = \"{r}\"\n"))
            .unwrap_or_default();
        format!("[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{resource}")
    };
    let app = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            oidc_toml: format!(
                "scopes = [\"openid\", \"profile\", \"api:read\"]\nauth_params = {{ resource = \"{DEFAULT}\" }}\n"
            ),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1s\"\n{}{}{}",
                route("/api", &plain.url, None),
                route("/orders", &orders.base, Some(ORDERS)),
                route("/reports", &reports.base, Some(REPORTS)),
            ),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    Setup {
        provider,
        _apis: [orders, reports],
        plain,
        app,
    }
}

impl Setup {
    /// The audiences of the tokens the route without `resource` forwarded.
    fn plain_audiences(&self) -> Vec<String> {
        self.plain
            .seen()
            .iter()
            .map(|s| jwt_claims(s.bearer().expect("a bearer token"))["aud"].to_string())
            .collect()
    }

    async fn refreshes(&self) -> (u64, u64) {
        let stats = self.provider.stats().await;
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        (n("refresh_success"), n("refresh_error"))
    }
}

#[actix_web::test]
async fn each_route_gets_a_token_for_its_own_audience_and_never_another_even_after_refreshes() {
    let s = setup().await;
    let app = &s.app;
    let browser = Browser::new();
    let authorize = app.start_login(&browser, "/").await;
    let named: Vec<String> = query_pairs(url::Url::parse(&authorize).unwrap().query().unwrap())
        .into_iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        named,
        [DEFAULT, ORDERS, REPORTS],
        "/login names every audience"
    );
    let callback = browser.provider_login(&authorize, &unique("olga")).await;
    assert_eq!(browser.get(&app.local(&callback)).await.status, 302);

    for round in 0..3 {
        assert_eq!(
            audience_seen(&api(&browser, app, "/orders/hello").await),
            ORDERS
        );
        assert_eq!(
            audience_seen(&api(&browser, app, "/reports/hello").await),
            REPORTS
        );
        assert_eq!(
            api(&browser, app, "/api/x").await.status,
            201,
            "round {round}"
        );
        assert_eq!(
            audience_seen(&api(&browser, app, "/orders/hello").await),
            ORDERS
        );
        // Let every token come within the skew of its expiry: the next round refreshes
        // each of them, one at a time with the one refresh token.
        sleep_ms(2300).await;
    }
    assert!(
        s.plain_audiences()
            .iter()
            .all(|aud| *aud == format!("{DEFAULT:?}")),
        "the route without resource only ever got the session's own token: {:?}",
        s.plain_audiences()
    );
    let record = stored_record(app, &browser).await;
    let tokens = &record.tokens;
    assert_eq!(jwt_claims(tokens.access_token.expose())["aud"], DEFAULT);
    for resource in [ORDERS, REPORTS] {
        let token = &tokens.resource_tokens[resource].access_token;
        assert_eq!(jwt_claims(token.expose())["aud"], resource);
    }
    let (ok, failed) = s.refreshes().await;
    assert_eq!(failed, 0, "the refresh token was never used twice");
    // Round 0 fetched the two resource tokens; rounds 1 and 2 refreshed all three.
    assert_eq!(ok, 2 + 2 * 3);
}

#[actix_web::test]
async fn a_storm_on_three_audiences_over_two_instances_uses_the_refresh_token_one_at_a_time() {
    let s = setup().await;
    let app = &s.app;
    let twin = app.start_twin().await;
    let browser = Browser::new();
    assert_eq!(app.login(&browser, &unique("pia"), "/").await.status, 302);
    let cookie = app.session_cookie(&browser).expect("session cookie");
    browser.set_cookie(&twin.url, &app.cookie_name, &cookie);
    assert_eq!(
        audience_seen(&api(&browser, &twin, "/orders/hello").await),
        ORDERS
    );
    assert_eq!(
        audience_seen(&api(&browser, app, "/reports/hello").await),
        REPORTS
    );
    sleep_ms(2300).await;
    s.provider.reset_stats().await;

    let paths = ["/orders/hello", "/reports/hello", "/api/storm"];
    let results = join_all((0..30).map(|i| {
        let (browser, target) = (&browser, if i % 2 == 0 { app } else { &twin });
        async move { (i % 3, api(browser, target, paths[i % 3]).await) }
    }))
    .await;
    for (route, res) in &results {
        match route {
            0 => assert_eq!(audience_seen(res), ORDERS),
            1 => assert_eq!(audience_seen(res), REPORTS),
            _ => assert_eq!(res.status, 201, "{}", res.text()),
        }
    }
    let (ok, failed) = s.refreshes().await;
    assert_eq!(
        (ok, failed),
        (3, 0),
        "one refresh per audience, none with a spent refresh token"
    );
    assert_eq!(
        audience_seen(&api(&browser, &twin, "/orders/hello").await),
        ORDERS
    );
    twin.handle.stop(false).await;
}

/// Another spa-bff on the same Redis, prefix and keys as `app`, with its settings
/// changed by `edit` (a deployment that changed its routes).
async fn redeployed(app: &TestApp, edit: impl Fn(&str) -> String) -> TestApp {
    app.start_variant(edit(&app.settings_toml)).await
}

#[actix_web::test]
async fn a_resource_the_login_did_not_name_is_403_without_asking_the_provider_and_the_session_lives_on(
) {
    let upstream = Upstream::start();
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    let browser = fake_login(&app).await;
    // The deployment gains a route with an audience; this session's login predates it.
    let later = redeployed(&app, |toml| {
        format!(
            "{toml}[[routes]]\nprefix = \"/orders\"\nupstream = \"{}\"\nresource = \"{ORDERS}\"\n",
            upstream.url
        )
    })
    .await;
    let cookie = app.session_cookie(&browser).expect("session cookie");
    browser.set_cookie(&later.url, &app.cookie_name, &cookie);
    let refreshes_before = calls(&fake, "/token refresh_token");

    let res = api(&browser, &later, "/orders/x").await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(res.json()["error"], "invalid_target");
    assert_eq!(calls(&fake, "/token refresh_token"), refreshes_before);
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    assert_eq!(
        later.user(&browser).await.status,
        200,
        "the session is kept"
    );
    assert_eq!(api(&browser, &later, "/api/x").await.status, 201);

    // A new login names the new audience, and the route gets its token.
    let again = fake_login(&later).await;
    assert_eq!(api(&again, &later, "/orders/x").await.status, 201);
    let bearer = upstream.last().bearer().unwrap().to_string();
    assert!(
        bearer.starts_with(&format!("fake-at-for-{}-", resource_tag(ORDERS))),
        "{bearer}"
    );
    later.handle.stop(false).await;
}

#[actix_web::test]
async fn a_resource_the_provider_refuses_is_403_for_that_route_and_the_session_lives_on() {
    let upstream = Upstream::start();
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            oidc_toml: "auth_params = { resource = \"https://default.example\" }\n".into(),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{0}\"\n\
                 [[routes]]\nprefix = \"/orders\"\nupstream = \"{0}\"\nresource = \"{ORDERS}\"\n\
                 [[routes]]\nprefix = \"/reports\"\nupstream = \"{0}\"\nresource = \"{REPORTS}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        |f| f.invalid_targets = vec![REPORTS.into()],
    )
    .await;
    let browser = fake_login(&app).await;
    {
        let f = fake.lock().unwrap();
        assert_eq!(
            f.authorize_resources,
            [vec![DEFAULT.to_string(), ORDERS.into(), REPORTS.into()]]
        );
        assert_eq!(
            f.token_resources,
            [("authorization_code".to_string(), Some(DEFAULT.to_string()))],
            "the code exchange asks for the default audience, as several were named"
        );
    }
    let res = api(&browser, &app, "/reports/x").await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(res.json()["error"], "invalid_target");
    assert!(upstream.seen().is_empty(), "no token, no call");
    assert_eq!(app.user(&browser).await.status, 200, "the session is kept");
    // The refusal is remembered: the route's next request does not ask again.
    let res = api(&browser, &app, "/reports/again").await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(res.json()["error"], "invalid_target");
    let asked_for_reports = fake
        .lock()
        .unwrap()
        .token_resources
        .iter()
        .filter(|(_, r)| r.as_deref() == Some(REPORTS))
        .count();
    assert_eq!(
        asked_for_reports, 1,
        "the refusal was remembered, not asked again"
    );

    // The other routes go on with their own tokens.
    assert_eq!(api(&browser, &app, "/orders/x").await.status, 201);
    let orders_token = upstream.last().bearer().unwrap().to_string();
    assert!(orders_token.starts_with(&format!("fake-at-for-{}-", resource_tag(ORDERS))));
    assert_eq!(api(&browser, &app, "/api/x").await.status, 201);
    let default_token = upstream.last().bearer().unwrap().to_string();
    assert!(
        default_token.starts_with(&format!("fake-at-for-{}-", resource_tag(DEFAULT))),
        "{default_token}"
    );
    let f = fake.lock().unwrap();
    let refreshes: Vec<_> = f.token_resources[1..]
        .iter()
        .map(|(_, r)| r.as_deref())
        .collect();
    assert_eq!(
        refreshes,
        [Some(REPORTS), Some(ORDERS), Some(DEFAULT)],
        "each refresh names its target (the default too, the grant covering several)"
    );
}

#[actix_web::test]
async fn an_upstream_rejecting_a_resource_token_gets_one_retry_with_a_new_token_for_that_resource()
{
    let upstream = Upstream::start();
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            extra_toml: format!(
                "[[routes]]\nprefix = \"/orders\"\nupstream = \"{}\"\nresource = \"{ORDERS}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        |_| {},
    )
    .await;
    let browser = fake_login(&app).await;
    // `/picky` refuses the first token it sees with 401 invalid_token.
    assert_eq!(api(&browser, &app, "/orders/picky").await.status, 201);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "one retry");
    let tag = format!("fake-at-for-{}-", resource_tag(ORDERS));
    assert!(seen.iter().all(|s| s.bearer().unwrap().starts_with(&tag)));
    assert_ne!(seen[0].bearer(), seen[1].bearer());
    let f = fake.lock().unwrap();
    assert!(f
        .token_resources
        .iter()
        .skip(1)
        .all(|(_, r)| r.as_deref() == Some(ORDERS)));
    assert_eq!(f.token_resources.len(), 3, "a fetch and one replacement");
}

#[actix_web::test]
async fn the_test_provider_issues_a_token_per_resource_named_at_login_and_only_those() {
    // What spa-bff relies on, pinned without spa-bff: several resources at /auth; the
    // code exchange must then name one; a refresh with `resource` gets that audience.
    use crate::support::flow::{authorize_request, token_request};
    let op = support::shared_provider();
    let base = format!("http://127.0.0.1:{}", support::free_port());
    let client = op.register_client(&base, "client_secret_basic").await;
    let redirect_uri = format!("{base}/callback");
    let user = unique("quinn");
    // Logs in naming DEFAULT and ORDERS, then redeems the code naming `resource`.
    let login = |resource: Option<&'static str>| {
        let (client, base, redirect_uri, user) = (&client, &base, &redirect_uri, &user);
        async move {
            let named = [("resource", DEFAULT), ("resource", ORDERS)];
            let req = authorize_request(op, client, base, "openid api:read", &named).await;
            let callback = Browser::new().provider_login(&req.url, user).await;
            let code = support::query_param(&callback, "code").unwrap();
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("code_verifier", req.verifier.as_str()),
            ];
            form.extend(resource.map(|r| ("resource", r)));
            token_request(op, client, &form).await
        }
    };
    let (status, body) = login(None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "several resources and none named: {body}"
    );
    let (status, tokens) = login(Some(DEFAULT)).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        jwt_claims(tokens["access_token"].as_str().unwrap())["aud"],
        DEFAULT
    );

    let rt = tokens["refresh_token"].as_str().unwrap();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("resource", ORDERS),
    ];
    let (status, orders) = token_request(op, &client, &refresh).await;
    assert_eq!(status, 200, "{orders}");
    assert_eq!(
        jwt_claims(orders["access_token"].as_str().unwrap())["aud"],
        ORDERS
    );
    assert!(
        orders["id_token"].is_string(),
        "an ID token with every refresh"
    );
    let rt = orders["refresh_token"].as_str().unwrap();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("resource", REPORTS),
    ];
    let (status, refused) = token_request(op, &client, &refresh).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_target")),
        "a resource the login did not name: {refused}"
    );
    // node-oidc-provider rotates before it checks `resource`: the refused refresh
    // spent the refresh token, and using it again revokes the grant. Hence spa-bff
    // never asks for a resource its login did not name.
    let again = [("grant_type", "refresh_token"), ("refresh_token", rt)];
    let (status, reused) = token_request(op, &client, &again).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reused}"
    );
}

#[actix_web::test]
async fn a_resource_token_naming_another_audience_is_never_sent_and_the_rotated_refresh_token_is_kept(
) {
    let (plain, orders_api, reports_api) =
        (Upstream::start(), Upstream::start(), Upstream::start());
    let (fake, _, app) = app_on_fake_op_with(
        AppOptions {
            oidc_toml: format!("auth_params = {{ resource = \"{DEFAULT}\" }}\n"),
            // Every request refreshes its target's token: the session's own refresh
            // below shows which refresh token the store kept.
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1h\"\nmin_token_lifetime = \"1h\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n\
                 [[routes]]\nprefix = \"/orders\"\nupstream = \"{}\"\nresource = \"{ORDERS}\"\n\
                 [[routes]]\nprefix = \"/reports\"\nupstream = \"{}\"\nresource = \"{REPORTS}\"\n",
                plain.url, orders_api.url, reports_api.url
            ),
            ..AppOptions::default()
        },
        |f| {
            // Any refresh token but the latest is refused (and would end the session).
            f.strict_rotation = true;
            // The control: a JWT for the resource asked for (an array, as Auth0's).
            f.resource_jwt_aud.insert(
                ORDERS.into(),
                json!([ORDERS, "https://idp.example/userinfo"]),
            );
            // A provider ignoring `resource`: the login's audience for REPORTS.
            f.resource_jwt_aud.insert(REPORTS.into(), json!(DEFAULT));
        },
    )
    .await;
    let browser = fake_login(&app).await;

    // The control: a JWT naming the route's resource goes to the route's upstream.
    assert_eq!(api(&browser, &app, "/orders/x").await.status, 201);
    let orders_token = fake.lock().unwrap().issued_access_tokens[0].clone();
    assert_eq!(orders_api.last().bearer(), Some(orders_token.as_str()));
    assert_eq!(jwt_claims(&orders_token)["aud"][0], ORDERS);

    // Another audience: 403 invalid_target, and the token goes nowhere.
    let refreshes = calls(&fake, "/token refresh_token");
    let res = api(&browser, &app, "/reports/x").await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(res.json()["error"], "invalid_target");
    assert_eq!(calls(&fake, "/token refresh_token"), refreshes + 1);
    // Remembered for a moment: the route's next request does not spend the refresh
    // token again.
    let res = api(&browser, &app, "/reports/x").await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(calls(&fake, "/token refresh_token"), refreshes + 1);
    let (foreign, rotated) = {
        let f = fake.lock().unwrap();
        let foreign = f.issued_access_tokens.last().unwrap().clone();
        (foreign, f.issued_refresh_tokens.last().unwrap().clone())
    };
    assert_eq!(jwt_claims(&foreign)["aud"], DEFAULT);
    let counted = crate::metrics::scrape(&app).await;
    assert_eq!(
        (counted.refreshes("wrong_audience"), counted.refreshes("ok")),
        (1.0, refreshes as f64),
        "the refused answer is counted as such, not as a successful refresh"
    );
    assert!(
        reports_api.seen().is_empty(),
        "nothing reached the upstream"
    );
    for upstream in [&plain, &orders_api, &reports_api] {
        assert!(upstream.seen().iter().all(|s| s.bearer() != Some(&foreign)));
    }
    let record = stored_record(&app, &browser).await;
    assert_eq!(
        record.tokens.refresh_token.as_ref().map(|t| t.expose()),
        Some(rotated.as_str()),
        "the refresh token the refused answer rotated is the session's"
    );
    assert!(!record.tokens.resource_tokens.contains_key(REPORTS));
    assert_eq!(
        record.tokens.resource_tokens[ORDERS].access_token.expose(),
        orders_token
    );
    let warned = support::logged(&["names another audience", REPORTS, DEFAULT]);
    assert!(!warned.is_empty(), "a WARN names the resource and audience");
    assert!(
        support::logged(&[&foreign]).is_empty(),
        "the token is never logged"
    );

    // The session goes on: its own refresh redeems the rotated refresh token (the
    // fake refuses any other), and the route without `resource` gets its token.
    assert_eq!(api(&browser, &app, "/api/x").await.status, 201);
    assert_eq!(calls(&fake, "/token refresh_token"), refreshes + 2);
    let default_token = plain.last().bearer().unwrap().to_string();
    assert!(
        default_token.starts_with(&format!("fake-at-for-{}-", resource_tag(DEFAULT))),
        "{default_token}"
    );
    assert_eq!(app.user(&browser).await.status, 200, "the session is kept");
    assert!(reports_api.seen().is_empty());
}
