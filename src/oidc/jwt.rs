//! Reading a compact JWS's claims without verifying it: the one place spa-bff does.
//! Used for an ID token whose signature openidconnect has already verified (its
//! claims as a JSON object), and for a resource's access token, which spa-bff is not
//! the audience of and only reads `aud` from (see `resource_audience`).

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

/// Base64url, with or without padding (JWTs have none; tolerated so that a padded one
/// is still read rather than taken for something else).
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims of a compact JWS (three base64url parts, the payload a JSON object),
/// unverified; `None` for anything else (an opaque token, an encrypted JWT).
pub(crate) fn claims(token: &str) -> Option<Map<String, Value>> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return None;
    };
    if header.is_empty() || payload.is_empty() {
        return None;
    }
    // The signature part may be empty (an unsecured JWT); it must still be base64url.
    let _ = BASE64URL.decode(header).ok()?;
    let _ = BASE64URL.decode(signature).ok()?;
    match serde_json::from_slice(&BASE64URL.decode(payload).ok()?).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}
