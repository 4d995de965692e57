//! The session record: what the store keeps (encrypted) for one signed-in browser,
//! and the tokens a token-endpoint answer gives it.
//!
//! A session holds one refresh token and, besides the access token its login got (the
//! "default" one), an access token per RFC 8707 resource that a route asked for
//! ([`Target`]): every one of them lives inside the encrypted record, and so does the
//! key they are bound to when the session uses DPoP.

use crate::secret::Sensitive;
use crate::time::UnixMs;
use openidconnect::core::CoreTokenResponse;
use openidconnect::OAuth2TokenResponse;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The user's subject at the provider.
    pub sub: String,
    /// The provider's session id (`sid` claim), when it sends one.
    pub sid: Option<String>,
    /// User claims shown by `/user`: the ID token's, merged with userinfo.
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub tokens: Tokens,
    /// The RFC 8707 resources the login's authorization request named (records written
    /// before per-route audiences existed have none).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// The session's DPoP key (RFC 9449; base64url of its PKCS#8 document), when its
    /// tokens are bound to one (`oidc.dpop` when it logged in): every token request
    /// and proxied call of the session proves possession of it. Encrypted at rest with
    /// the rest of the record; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<Sensitive>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: Sensitive,
    /// When the access token expires (from `expires_in`), if the provider said.
    pub access_token_expires_at: Option<UnixMs>,
    pub refresh_token: Option<Sensitive>,
    pub id_token: Sensitive,
    /// The scope granted, when the provider said (refresh never asks for more).
    pub scope: Option<String>,
    /// Access tokens for single resources (per-route audiences), by resource
    /// indicator, obtained with the refresh token.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_tokens: BTreeMap<String, ResourceToken>,
}

/// An access token for one RFC 8707 resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceToken {
    pub access_token: Sensitive,
    /// When it expires (from `expires_in`), if the provider said.
    pub expires_at: Option<UnixMs>,
}

/// Which of a session's access tokens a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The one the login got (routes without `resource`, or whose resource is the
    /// login's default one).
    Default,
    /// One for this resource only (a route's `resource`, RFC 8707).
    Resource(&'a str),
}

/// The RFC 8707 resources a login's authorization request named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// The one from `oidc.auth_params`: the audience of the session's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The routes' resources (per-route audiences), each once, without the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// A route's resource that the session's login did not name: its grant does not cover
/// it, and asking the provider would only be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotNamedAtLogin;

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.routes.is_empty()
    }

    /// Which token a route with `resource` gets: the session's own one when the route
    /// names no resource or the login's default one.
    pub fn target_for<'a>(&self, resource: Option<&'a str>) -> Target<'a> {
        match resource {
            Some(r) if Some(r) != self.default.as_deref() => Target::Resource(r),
            _ => Target::Default,
        }
    }

    /// The `resource` parameter of a token request for `target` (code exchange or
    /// refresh). The default one is named only when the login named several resources:
    /// the provider then cannot tell which one the session's own token is for (with
    /// one, requests stay as they were before per-route audiences).
    pub fn token_request_resource<'a>(
        &'a self,
        target: Target<'a>,
    ) -> Result<Option<&'a str>, NotNamedAtLogin> {
        match target {
            Target::Default if self.routes.is_empty() => Ok(None),
            Target::Default => Ok(self.default.as_deref()),
            Target::Resource(r) if self.routes.iter().any(|n| n == r) => Ok(Some(r)),
            Target::Resource(_) => Err(NotNamedAtLogin),
        }
    }
}

impl Tokens {
    /// The tokens of a token-endpoint answer (login or refresh), with the expiry
    /// computed from `now`. `id_token` is the one the session keeps.
    pub fn from_response(answer: &CoreTokenResponse, id_token: Sensitive, now: UnixMs) -> Self {
        Tokens {
            access_token: Sensitive::new(answer.access_token().secret().clone()),
            access_token_expires_at: answer
                .expires_in()
                .map(|d| now.saturating_add(d.as_millis() as u64)),
            refresh_token: answer
                .refresh_token()
                .map(|t| Sensitive::new(t.secret().clone())),
            id_token,
            scope: answer
                .scopes()
                .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
            resource_tokens: BTreeMap::new(),
        }
    }

    /// The access token for `target`, if the session has one.
    pub fn access_token_for(&self, target: Target<'_>) -> Option<&Sensitive> {
        match target {
            Target::Default => Some(&self.access_token),
            Target::Resource(r) => self.resource_tokens.get(r).map(|t| &t.access_token),
        }
    }

    /// When the access token for `target` expires (`None`: unknown, or no token).
    pub fn expires_at_for(&self, target: Target<'_>) -> Option<UnixMs> {
        match target {
            Target::Default => self.access_token_expires_at,
            Target::Resource(r) => self.resource_tokens.get(r).and_then(|t| t.expires_at),
        }
    }

    /// These tokens after a refresh for `target` answered `answer`: the answer's access
    /// token replaces `target`'s only (the others stay), its refresh token (rotated)
    /// replaces ours, and what the answer leaves out (refresh token, scope) is kept.
    /// The ID token is left alone (it is checked before it is used).
    pub fn refreshed(&self, answer: Tokens, target: Target<'_>) -> Tokens {
        let refresh_token = answer.refresh_token.or_else(|| self.refresh_token.clone());
        match target {
            Target::Default => Tokens {
                refresh_token,
                scope: answer.scope.or_else(|| self.scope.clone()),
                id_token: self.id_token.clone(),
                resource_tokens: self.resource_tokens.clone(),
                ..answer
            },
            Target::Resource(resource) => {
                let mut tokens = self.clone();
                tokens.refresh_token = refresh_token;
                tokens.resource_tokens.insert(
                    resource.to_string(),
                    ResourceToken {
                        access_token: answer.access_token,
                        expires_at: answer.access_token_expires_at,
                    },
                );
                tokens
            }
        }
    }

    /// These tokens after a refresh whose access token is not used (it names another
    /// audience than the one asked for): only the answer's refresh token (rotated)
    /// replaces ours; every access token stays as it was.
    pub fn with_refresh_token_of(&self, answer: Tokens) -> Tokens {
        Tokens {
            refresh_token: answer.refresh_token.or_else(|| self.refresh_token.clone()),
            ..self.clone()
        }
    }

    /// Whether `self` and `other` hold the same access and refresh tokens (every
    /// resource's included): what decides whose refresh a session holds.
    pub fn same_grant_state(&self, other: &Tokens) -> bool {
        self.access_token == other.access_token
            && self.refresh_token == other.refresh_token
            && self.resource_tokens == other.resource_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(at: &str, rt: &str) -> Tokens {
        Tokens {
            access_token: Sensitive::new(at),
            access_token_expires_at: Some(1_000),
            refresh_token: Some(Sensitive::new(rt)),
            id_token: Sensitive::new("id"),
            scope: Some("openid".into()),
            resource_tokens: BTreeMap::new(),
        }
    }

    fn resources(default: Option<&str>, routes: &[&str]) -> Resources {
        Resources {
            default: default.map(String::from),
            routes: routes.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_resource_refresh_replaces_that_resources_token_and_the_refresh_token_only() {
        let old = tokens("at-1", "rt-1");
        let answer = Tokens {
            access_token_expires_at: Some(9_000),
            scope: None,
            ..tokens("orders-1", "rt-2")
        };
        let orders = Target::Resource("https://orders");
        let new = old.refreshed(answer, orders);
        assert_eq!(
            new.access_token_for(Target::Default),
            Some(&Sensitive::new("at-1"))
        );
        assert_eq!(new.expires_at_for(Target::Default), Some(1_000));
        assert_eq!(
            new.access_token_for(orders),
            Some(&Sensitive::new("orders-1"))
        );
        assert_eq!(new.expires_at_for(orders), Some(9_000));
        assert_eq!(new.refresh_token, Some(Sensitive::new("rt-2")));
        assert_eq!(
            new.access_token_for(Target::Resource("https://reports")),
            None
        );

        // The default refresh keeps the resource tokens; a missing refresh token and
        // scope in the answer keep ours.
        let answer = Tokens {
            refresh_token: None,
            scope: None,
            id_token: Sensitive::new("ignored"),
            ..tokens("at-2", "")
        };
        let newer = new.refreshed(answer, Target::Default);
        assert_eq!(newer.access_token, Sensitive::new("at-2"));
        assert_eq!(newer.refresh_token, Some(Sensitive::new("rt-2")));
        assert_eq!(newer.scope.as_deref(), Some("openid"));
        assert_eq!(newer.id_token, Sensitive::new("id"));
        assert_eq!(
            newer.access_token_for(orders),
            Some(&Sensitive::new("orders-1"))
        );
        assert!(!newer.same_grant_state(&new) && newer.same_grant_state(&newer.clone()));
    }

    #[test]
    fn an_unused_answer_gives_its_rotated_refresh_token_and_nothing_else() {
        let mut old = tokens("at-1", "rt-1");
        old.resource_tokens.insert(
            "https://orders".into(),
            ResourceToken {
                access_token: Sensitive::new("orders-1"),
                expires_at: Some(2_000),
            },
        );
        let answer = Tokens {
            access_token_expires_at: Some(9_000),
            scope: Some("other".into()),
            id_token: Sensitive::new("ignored"),
            ..tokens("for-another-api", "rt-2")
        };
        let new = old.with_refresh_token_of(answer);
        assert_eq!(new.refresh_token, Some(Sensitive::new("rt-2")));
        assert_eq!(new.access_token, old.access_token);
        assert_eq!(new.access_token_expires_at, Some(1_000));
        assert_eq!(new.resource_tokens, old.resource_tokens);
        assert_eq!(new.scope.as_deref(), Some("openid"));
        assert_eq!(new.id_token, Sensitive::new("id"));
        assert!(!new.same_grant_state(&old));
        // A provider that does not rotate: nothing changes.
        let unrotated = Tokens {
            refresh_token: None,
            ..tokens("for-another-api", "")
        };
        assert!(old.with_refresh_token_of(unrotated).same_grant_state(&old));
    }

    #[test]
    fn token_requests_name_the_resource_the_login_named_for_the_target() {
        let routes = resources(Some("https://default"), &["https://orders"]);
        let only_default = resources(Some("https://default"), &[]);
        let no_default = resources(None, &["https://orders"]);
        let orders = Target::Resource("https://orders");
        let other = Target::Resource("https://elsewhere");
        for (named, target, expected) in [
            // As before per-route audiences: the default is left to the grant.
            (&only_default, Target::Default, Ok(None)),
            (&Resources::default(), Target::Default, Ok(None)),
            // Several named: the default one is named again.
            (&routes, Target::Default, Ok(Some("https://default"))),
            (&no_default, Target::Default, Ok(None)),
            (&routes, orders, Ok(Some("https://orders"))),
            (&no_default, orders, Ok(Some("https://orders"))),
            // Never a resource the login did not name.
            (&routes, other, Err(NotNamedAtLogin)),
            (&only_default, orders, Err(NotNamedAtLogin)),
            (&Resources::default(), orders, Err(NotNamedAtLogin)),
        ] {
            assert_eq!(
                named.token_request_resource(target),
                expected,
                "{named:?} {target:?}"
            );
        }
        assert_eq!(routes.target_for(None), Target::Default);
        assert_eq!(routes.target_for(Some("https://default")), Target::Default);
        assert_eq!(routes.target_for(Some("https://orders")), orders);
    }

    #[test]
    fn records_written_before_per_route_audiences_still_read() {
        let old = r#"{"sub":"a","sid":null,"claims":{},"tokens":{"access_token":"at",
            "access_token_expires_at":null,"refresh_token":null,"id_token":"id","scope":null}}"#;
        let record: SessionRecord = serde_json::from_str(old).unwrap();
        assert!(record.resources.is_empty() && record.tokens.resource_tokens.is_empty());
        let written = serde_json::to_string(&record).unwrap();
        assert!(!written.contains("resource"), "{written}");
    }
}
