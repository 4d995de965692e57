//! OpenID Connect relying-party logic: discovery and keys, client authentication,
//! the authorization request (pushed or not), the callback (code exchange and
//! ID-token validation), refresh (the ID token a refresh brings, the audience of a
//! token asked for one resource), client credentials, logout, and DPoP proofs for
//! sender-constrained tokens.
//! HTTP handlers live in `routes`; this module knows nothing of actix requests.

pub mod backchannel;
pub mod callback;
pub mod client_auth;
pub mod client_credentials;
pub mod dpop;
pub mod http;
mod jwt;
pub mod login;
pub mod logout;
pub mod par;
pub mod provider;
pub mod refresh;
pub mod refreshed_id_token;
pub mod resource_audience;

pub use http::OidcHttp;
pub use provider::{Provider, ProviderHandle};
