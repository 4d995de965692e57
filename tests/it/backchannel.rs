//! Back-channel logout from the real provider: a user's session at the provider
//! ends (here through RP-initiated logout at the provider), the provider POSTs a
//! logout token to spa-bff, and spa-bff ends that user's session.

use crate::support::app::{spawn_app, stored_record, AppOptions};
use crate::support::{self, Browser};
use serde_json::json;
use std::time::Duration;

#[actix_web::test]
async fn the_provider_ending_its_session_ends_ours() {
    let app = spawn_app(AppOptions {
        registration: json!({
            "backchannel_logout_uri": "{base}/backchannel-logout",
            "backchannel_logout_session_required": true,
        }),
        ..AppOptions::default()
    })
    .await;
    let alice = Browser::new();
    assert_eq!(app.login(&alice, "olivia", "/").await.status, 302);
    let bob = Browser::new();
    assert_eq!(app.login(&bob, "peter", "/").await.status, 302);
    let user = app.user(&alice).await.json();
    assert!(
        user["claims"]["sid"].is_string(),
        "the provider sends sid when the client asks for it: {user} {}",
        app.client.metadata
    );

    // Logout at the provider itself (as another application of the same provider would).
    let record = stored_record(&app, &alice).await;
    let discovery = support::shared_provider().discovery().await;
    let end_session = support::with_query(
        discovery["end_session_endpoint"].as_str().unwrap(),
        &[
            ("id_token_hint", record.tokens.id_token.expose()),
            ("client_id", &app.client.client_id),
        ],
    );
    let done = alice.provider_logout_confirm(&end_session).await;
    assert!(done.status < 400, "{}", done.text());

    support::eventually(Duration::from_secs(10), "back-channel logout", || async {
        (app.user(&alice).await.status == 401).then_some(())
    })
    .await;
    assert_eq!(
        app.user(&bob).await.status,
        200,
        "only that user's session ended"
    );
}
