//! OpenID Connect Back-Channel Logout: the provider tells spa-bff, server to
//! server, that one of its sessions (or users) logged out. A verified logout token
//! is used once: every session of that provider session, or of that user, ends,
//! and only then is its `jti` recorded (for twice the token's maximum age). Were it
//! recorded first, a deletion that failed (Redis away: 503) would turn the
//! provider's retry into a "replay" and the sessions would live on.

use super::Deps;
use crate::error::Error;
use crate::metrics::SessionEnd;
use crate::oidc::backchannel::{verify_logout_token, MAX_AGE_SECS};
use crate::store::{LogoutScope, Store};
use std::time::Duration;

/// Verifies `logout_token` and ends the sessions it names; returns how many.
pub async fn logout<S: Store>(
    deps: &Deps<'_, S>,
    logout_token: &str,
    now_secs: u64,
) -> Result<usize, Error> {
    let client_id = &deps.settings.oidc.client_id;
    let claims =
        verify_logout_token(deps.provider, deps.http, client_id, logout_token, now_secs).await?;
    if deps.store.logout_token_used(&claims.jti).await? {
        return Err(Error::InvalidLogoutToken("jti already used".into()));
    }
    let scope = match (claims.sid.as_deref(), claims.sub.as_deref()) {
        (Some(sid), _) => LogoutScope::ProviderSession(sid),
        (None, Some(sub)) => LogoutScope::User(sub),
        (None, None) => return Ok(0), // verify_logout_token requires one of them
    };
    let ended = deps.store.end_sessions_of(scope).await?;
    deps.metrics.sessions_ended(SessionEnd::BackChannel, ended);
    // A concurrent delivery of the same token may have recorded it meanwhile: the
    // sessions are ended either way.
    let window = Duration::from_secs(2 * MAX_AGE_SECS);
    deps.store
        .mark_logout_token_used(&claims.jti, window)
        .await?;
    tracing::info!(sessions = ended, "back-channel logout");
    Ok(ended)
}
