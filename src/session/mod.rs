//! Sessions: what the browser holds (an encrypted cookie carrying a session
//! reference), what the store keeps (the session record, encrypted under a secret
//! only the cookie carries), and the rules that end a session (idle and absolute
//! timeouts). Persistence is the [`store`](crate::store)'s business.
//!
//! This is the "ticket" design: someone who reads Redis (a dump, a replica, a
//! backup) sees only ciphertext under keys that are hashes of session ids, and can
//! neither read a token nor turn a key back into a cookie.

pub mod cookie;
pub mod crypto;
pub mod expiry;
pub mod login_state;
pub mod record;

pub use cookie::{CookieCodec, SessionCookie};
pub use crypto::SessionRef;
pub use expiry::ExpiryPolicy;
pub use login_state::{LoginState, Prompt};
pub use record::{NotNamedAtLogin, ResourceToken, Resources, SessionRecord, Target, Tokens};
