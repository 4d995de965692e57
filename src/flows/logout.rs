//! Logging out: only this application may ask ([`caller`]); then [`end`] deletes
//! the session and its index entries, revokes the refresh token at the provider
//! (in the background: logout never waits for it), and says where the browser goes
//! next (the provider's `end_session_endpoint`, or home).

use super::Deps;
use crate::csrf;
use crate::error::Error;
use crate::metrics::SessionEnd;
use crate::oidc::logout::{logout_url, revoke_refresh_token};
use crate::store::{LoadedSession, Store};
use actix_web::http::header::{self, HeaderMap};

/// Who asked to log out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A `fetch` with the CSRF header: answer JSON.
    Fetch,
    /// A form POST from our own origin: answer with a redirect.
    Form,
}

/// Logout must not be triggerable by another site: a `fetch` carries the CSRF
/// header; a form POST must come from our own origin (`Origin`, or, from browsers
/// that send none, `Sec-Fetch-Site: same-origin`).
pub fn caller<S>(deps: &Deps<'_, S>, headers: &HeaderMap) -> Result<Caller, Error> {
    let settings = deps.settings;
    if csrf::has_csrf_header(headers, settings) {
        return Ok(Caller::Fetch);
    }
    let same_origin = if headers.contains_key(header::ORIGIN) {
        csrf::origin_is_ours(headers, settings)
    } else {
        headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin")
    };
    if same_origin {
        Ok(Caller::Form)
    } else {
        Err(Error::Forbidden(
            format!(
                "logout must come from this application (send {}, or POST a form from this origin)",
                csrf::expected_header(settings)
            )
            .into(),
        ))
    }
}

/// Ends `session` (if any) here and at the provider; returns the URL the browser
/// goes to next.
pub async fn end<S: Store>(
    deps: &Deps<'_, S>,
    session: Option<LoadedSession>,
) -> Result<String, Error> {
    if let Some(s) = &session {
        deps.store.end_session(s).await?;
        deps.metrics.session_ended(SessionEnd::Logout);
        tracing::info!(session = %&s.reference.storage_id()[..8], "logged out");
    }
    let provider = deps.provider.get().ok();
    let tokens = session.as_ref().map(|s| &s.record.tokens);
    let url = logout_url(
        provider.as_deref(),
        deps.settings,
        tokens.map(|t| t.id_token.expose()),
    );
    if let (Some(p), Some(rt)) = (provider, tokens.and_then(|t| t.refresh_token.clone())) {
        let http = deps.http.clone();
        let oidc = deps.settings.oidc.clone();
        actix_web::rt::spawn(
            async move { revoke_refresh_token(&p, &http, &oidc, rt.expose()).await },
        );
    }
    Ok(url)
}
