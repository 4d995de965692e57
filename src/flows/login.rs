//! Logging in: [`start`] builds the authorization request (with what the client
//! asked: `prompt`, `max_age`, `login_hint`), pushes it to the provider when PAR is
//! in use (RFC 9126), and keeps its state until the callback; [`finish`] checks that
//! the callback belongs to a login this browser started (one-time state, bound to
//! the browser by its login cookie), redeems the code, and saves a NEW session. A
//! silent login (`prompt=none`) the provider cannot complete without a page ends
//! without a session: back to `returnTo`, which says why ([`Finished::NotSignedIn`]).
//!
//! A login always creates a fresh session reference (no fixation) and ends
//! whatever session the browser had before, revoking that session's refresh token
//! unless it may belong to the new session's grant (see [`end_replaced`]).

use super::Deps;
use crate::config::{user_route_resources, Settings};
use crate::error::{Error, LoginError};
use crate::metrics::SessionEnd;
use crate::oidc::callback::{complete_login, AuthorizationResponse, Completion};
use crate::oidc::dpop::DpopKey;
use crate::oidc::login::{
    authorization_request, safe_return_to, with_silent_outcome, LoginOptions,
};
use crate::oidc::logout::revoke_refresh_token;
use crate::oidc::par;
use crate::oidc::provider::AuthorizationRoute;
use crate::session::{Resources, SessionRecord, SessionRef};
use crate::store::Store;
use crate::time::UnixMs;
use url::Url;

/// A login ready to send the browser to the provider.
pub struct Started {
    /// The provider's authorization URL.
    pub redirect: Url,
    /// The login's `state`, to bind to this browser with a login cookie.
    pub state: String,
}

/// Starts a login that will come back to `return_to` (checked: same origin only).
pub async fn start<S: Store>(
    deps: &Deps<'_, S>,
    return_to: Option<&str>,
    options: &LoginOptions,
    now: UnixMs,
) -> Result<Started, Error> {
    let provider = deps.provider.get()?;
    let oidc = &deps.settings.oidc;
    let resources = login_resources(deps.settings);
    // With DPoP, the session's key is made now: the code is bound to it (`dpop_jkt`).
    let dpop = match oidc.dpop {
        true => Some(DpopKey::generate()?),
        false => None,
    };
    let auth = authorization_request(
        &provider,
        oidc,
        safe_return_to(return_to),
        options,
        &resources.routes,
        dpop.as_ref().map(|(key, stored)| (key, stored.clone())),
        now,
    );
    let redirect = match &provider.authorization {
        AuthorizationRoute::Redirect => auth.url,
        AuthorizationRoute::Pushed(endpoint) => {
            par::push(&provider, deps.http, oidc, endpoint, &auth.url, now).await?
        }
    };
    deps.store
        .save_login(&auth.state, &auth.login, oidc.login_timeout)
        .await?;
    Ok(Started {
        redirect,
        state: auth.state,
    })
}

/// What the browser brought back to `/callback`.
pub struct Callback<'a> {
    /// The authorization response's parameters.
    pub response: &'a AuthorizationResponse,
    /// Its `state`.
    pub state: &'a str,
    /// Whether this browser holds the login cookie of `state` (login CSRF).
    pub started_here: bool,
    /// The session the browser had, which the new one replaces.
    pub replaces: Option<SessionRef>,
}

/// A completed login.
pub enum Finished {
    /// A new session.
    SignedIn {
        session: SessionRef,
        /// Where the browser goes now (checked when the login started).
        return_to: String,
    },
    /// A silent login the provider could not complete without a page: no session
    /// (and the browser's previous one, if any, untouched).
    NotSignedIn {
        /// `returnTo` with `spa_bff_login=<the provider's error>` in its query.
        return_to: String,
    },
}

/// Finishes a login: state, code exchange, ID token, new session.
pub async fn finish<S: Store>(
    deps: &Deps<'_, S>,
    callback: Callback<'_>,
    now: UnixMs,
) -> Result<Finished, Error> {
    // The state must have been started in this browser, and not used before.
    if !callback.started_here {
        return Err(LoginError::InvalidState.into());
    }
    let login = deps
        .store
        .take_login(callback.state)
        .await?
        .ok_or(LoginError::InvalidState)?;
    let return_to = login.return_to.clone();
    let oidc = &deps.settings.oidc;
    let completion = complete_login(
        deps.provider,
        deps.http,
        oidc,
        deps.dpop_nonces,
        callback.response,
        login,
        login_resources(deps.settings),
        now,
    )
    .await?;
    let record = match completion {
        Completion::SignedIn(record) => record,
        Completion::NotSignedIn(error) => {
            tracing::info!(
                error,
                "silent login: the provider has no session to sign in with"
            );
            return Ok(Finished::NotSignedIn {
                return_to: with_silent_outcome(&return_to, error),
            });
        }
    };
    if let Some(old) = &callback.replaces {
        end_replaced(deps, old, &record, now).await?;
    }
    let session = deps.store.create_session(&record, now).await?;
    tracing::info!(session = %&session.storage_id()[..8], "login completed");
    Ok(Finished::SignedIn { session, return_to })
}

/// The RFC 8707 resources a login names: the default one from `oidc.auth_params`,
/// and every user route's `resource` (per-route audiences). The session remembers
/// them: a route's token is asked for only if its login named the resource.
fn login_resources(settings: &Settings) -> Resources {
    let default = settings.oidc.default_resource();
    Resources {
        default: default.map(String::from),
        routes: user_route_resources(&settings.routes, default),
    }
}

/// Ends the session a login replaces, and revokes its refresh token at the provider
/// (in the background) so the replaced grant is worthless: on a shared computer the
/// next user's login must not leave the previous user's tokens alive.
///
/// Not when the replaced session has the same user and the same provider session
/// (`sub` and `sid`, or no `sid` at all) as the new one: the provider then usually
/// issued both under one grant, and providers that revoke per grant
/// (node-oidc-provider, Keycloak's client sessions) would revoke the new tokens too.
async fn end_replaced<S: Store>(
    deps: &Deps<'_, S>,
    old: &SessionRef,
    new: &SessionRecord,
    now: UnixMs,
) -> Result<(), Error> {
    let Some(replaced) = deps.store.load_session(old, now).await? else {
        // Expired, or not readable any more: nothing to revoke, delete what is left.
        return deps.store.delete_session(old).await;
    };
    deps.store.end_session(&replaced).await?;
    deps.metrics.session_ended(SessionEnd::Replaced);
    let same_grant = replaced.record.sub == new.sub && replaced.record.sid == new.sid;
    let token = replaced.record.tokens.refresh_token.clone();
    if let (false, Some(token), Ok(provider)) = (same_grant, token, deps.provider.get()) {
        let http = deps.http.clone();
        let oidc = deps.settings.oidc.clone();
        actix_web::rt::spawn(async move {
            revoke_refresh_token(&provider, &http, &oidc, token.expose()).await
        });
    }
    Ok(())
}
