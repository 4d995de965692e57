//! OpenID Connect relying-party logic: discovery and keys, client authentication,
//! the authorization request (pushed or not), the callback (code exchange and
//! ID-token validation), refresh (and the ID token a refresh brings), client
//! credentials, logout, and DPoP proofs for sender-constrained tokens.
//! HTTP handlers live in `routes`; this module knows nothing of actix requests.

pub mod backchannel;
pub mod callback;
pub mod client_auth;
pub mod client_credentials;
pub mod dpop;
pub mod http;
pub mod login;
pub mod logout;
pub mod par;
pub mod provider;
pub mod refresh;
pub mod refreshed_id_token;

pub use http::OidcHttp;
pub use provider::{Provider, ProviderHandle};
