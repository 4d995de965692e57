//! Sessions: what the browser holds (an encrypted cookie carrying a session
//! reference), what Redis holds (the session record, encrypted under a secret only
//! the cookie carries), and the rules that end a session (idle and absolute timeouts).
//!
//! This is the "ticket" design: someone who reads Redis (a dump, a replica, a
//! backup) sees only ciphertext under keys that are hashes of session ids, and can
//! neither read a token nor turn a key back into a cookie.

pub mod backend;
pub mod cookie;
pub mod crypto;
pub mod expiry;
pub mod record;
pub mod store;

pub use backend::RedisHandle;
pub use cookie::CookieCodec;
pub use crypto::SessionRef;
pub use expiry::ExpiryPolicy;
pub use record::{SessionRecord, Tokens};
pub use store::{LoadedSession, SessionLock, SessionStore, UpdateOutcome};
