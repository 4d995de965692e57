//! Whether an access token the provider issued for one RFC 8707 resource (a route's
//! audience) says it is for that resource.
//!
//! A provider may answer a refresh with `resource=<uri>` with a token for something
//! else: one that ignores `resource` on refresh and returns the login's audience
//! (Auth0, Okta and Keycloak, by their documentation), a misconfigured one, or a
//! mix-up. Sent on, that token would reach an API it was not meant for, which per-route
//! audiences promise never happens (RFC 9700 section 2.3). So when the access token is
//! a JWT, its `aud` (a string or an array of strings) must contain the resource asked
//! for, exactly; if it does not (another audience, several others, none at all, or an
//! `aud` of another type), the token is not used.
//!
//! Only `aud` is read: the signature is not verified (spa-bff is not the token's
//! audience and holds no keys for it; the token came over the provider's authenticated
//! token endpoint in answer to our own request, so this is a check of what the
//! provider meant, not of who made the token). A token that is not a JWT (opaque, or
//! an encrypted JWT with five parts) cannot be read and is trusted as before: the
//! upstream that receives it must check its audience itself (introspection).

use super::jwt;
use serde_json::Value;

/// What an access token says about its audience, for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceAudience {
    /// Not a JWT: nothing to read; trusted, as the provider's answer to our request.
    Unreadable,
    /// A JWT whose `aud` contains the resource.
    Names,
    /// A JWT whose `aud` does not contain the resource: these are the audiences it
    /// names instead (empty when it has no `aud`, or one that is neither a string nor
    /// an array of strings).
    Other(Vec<String>),
}

/// Reads `access_token`'s `aud` and compares it with `resource` (exact string match).
pub fn resource_audience(access_token: &str, resource: &str) -> ResourceAudience {
    let Some(claims) = jwt::claims(access_token) else {
        return ResourceAudience::Unreadable;
    };
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    if audiences.iter().any(|a| a == resource) {
        ResourceAudience::Names
    } else {
        ResourceAudience::Other(audiences)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE as PADDED, URL_SAFE_NO_PAD};
    use base64::Engine;

    const ORDERS: &str = "https://orders.example";

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"at+jwt"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    fn other(audiences: &[&str]) -> ResourceAudience {
        ResourceAudience::Other(audiences.iter().map(|a| a.to_string()).collect())
    }

    #[test]
    fn a_jwt_must_name_the_resource_in_its_aud_and_anything_else_cannot_be_read() {
        use ResourceAudience::{Names, Unreadable};
        let padded = format!(
            "{}.{}.",
            PADDED.encode(br#"{"alg":"none"}"#),
            PADDED.encode(br#"{"aud":"https://default.example"}"#)
        );
        for (token, expected) in [
            (jwt(r#"{"aud":"https://orders.example"}"#), Names),
            (
                jwt(r#"{"aud":["https://x","https://orders.example"]}"#),
                Names,
            ),
            (
                jwt(r#"{"aud":"https://default.example"}"#),
                other(&["https://default.example"]),
            ),
            (
                jwt(r#"{"aud":["https://default.example","https://idp/userinfo"]}"#),
                other(&["https://default.example", "https://idp/userinfo"]),
            ),
            // Exactly: no prefix, case or trailing-slash games.
            (
                jwt(r#"{"aud":"https://orders.example/"}"#),
                other(&["https://orders.example/"]),
            ),
            (
                jwt(r#"{"aud":"HTTPS://ORDERS.EXAMPLE"}"#),
                other(&["HTTPS://ORDERS.EXAMPLE"]),
            ),
            (
                jwt(r#"{"aud":"https://orders.example.evil"}"#),
                other(&["https://orders.example.evil"]),
            ),
            // No `aud`, or one of another type: it does not name the resource.
            (jwt(r#"{"sub":"u"}"#), other(&[])),
            (jwt(r#"{"aud":null}"#), other(&[])),
            (jwt(r#"{"aud":42}"#), other(&[])),
            (
                jwt(r#"{"aud":{"https://orders.example":true}}"#),
                other(&[]),
            ),
            (jwt(r#"{"aud":[1,"https://orders.example"]}"#), Names),
            (jwt(r#"{"aud":[]}"#), other(&[])),
            (padded, other(&["https://default.example"])),
            // Not a JWT: opaque tokens pass unread.
            ("fake-at-for-ordersexample-abc".into(), Unreadable),
            ("2YotnFZFEjr1zCsicMWpAA".into(), Unreadable),
            ("a.b".into(), Unreadable),
            ("".into(), Unreadable),
            ("..".into(), Unreadable),
            (format!("{}.sig", jwt(r#"{"aud":"https://x"}"#)), Unreadable),
            // JWE (five parts): encrypted, nothing to read.
            ("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d".into(), Unreadable),
            // Payload not base64url, not JSON, or JSON but not an object.
            (jwt("{").replace('.', ".!"), Unreadable),
            (jwt("not json"), Unreadable),
            (jwt(r#"["https://orders.example"]"#), Unreadable),
            (jwt(r#""https://orders.example""#), Unreadable),
        ] {
            assert_eq!(resource_audience(&token, ORDERS), expected, "{token}");
        }
    }
}
