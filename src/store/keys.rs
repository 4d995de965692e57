//! Every Redis key spa-bff uses, formatted here and nowhere else.
//!
//! | key | type | holds | lives |
//! |---|---|---|---|
//! | `<prefix>session:{<id hash>}` | hash | `data` (sealed record), `created`, `seen`, `ver` | the time left under the idle and absolute timeouts |
//! | `<prefix>session:{<id hash>}:lock` | string | the refresh lock holder's random token | `proxy.refresh_lock_ttl` |
//! | `<prefix>login:{<state hash>}` | string | a pending login, sealed under its state | `oidc.login_timeout`, taken once |
//! | `<prefix>sub:{<hash>}` | set | storage ids of one user's sessions | `session.absolute_timeout` |
//! | `<prefix>sid:{<hash>}` | set | storage ids of one provider session's sessions | `session.absolute_timeout` |
//! | `<prefix>logout-jti:{<hash>}` | string | a back-channel logout token's `jti` was used | twice the logout token's maximum age |
//! | `<prefix>readyz` | none | never exists: `/readyz` deletes it (a write command, so it proves writes are served) | - |
//! | `<prefix>session-events` | pub/sub channel | storage ids of sessions that changed or ended (cache invalidation, refresh waiters) | - |
//!
//! Nothing in a key can be turned back into a cookie, a user name or a token: ids,
//! states and claims appear only as domain-separated SHA-256 digests. The part in
//! braces is a Redis Cluster hash tag, so a session and its lock share one slot;
//! no command spans two different tags.

use crate::session::crypto::digest_hex;

const INDEX_DOMAIN: &[u8] = b"spa-bff/session-index/v1";
/// The login-state digest domain; also the HKDF info of its encryption.
pub const LOGIN_DOMAIN: &[u8] = b"spa-bff/login-state/v1";

/// Key formatting under one configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The hash of the session whose storage id is `id`.
    pub fn session(&self, id: &str) -> String {
        format!("{}session:{{{id}}}", self.prefix)
    }

    /// The refresh lock of that session (same hash tag, so same Cluster slot).
    pub fn refresh_lock(&self, id: &str) -> String {
        format!("{}:lock", self.session(id))
    }

    /// A pending login, by its `state`.
    pub fn login(&self, state: &str) -> String {
        format!(
            "{}login:{{{}}}",
            self.prefix,
            digest_hex(LOGIN_DOMAIN, state.as_bytes())
        )
    }

    /// The shared login rate-limit bucket of a client (`client` as
    /// [`crate::edge::rate_limit::bucket_name`] names it).
    pub fn login_rate(&self, client: &str) -> String {
        format!("{}login-rate:{client}", self.prefix)
    }

    /// The set of sessions of user `sub`.
    pub fn user_sessions(&self, sub: &str) -> String {
        self.indexed("sub", sub)
    }

    /// The set of sessions of provider session `sid`.
    pub fn provider_sessions(&self, sid: &str) -> String {
        self.indexed("sid", sid)
    }

    /// The marker of a used back-channel logout token `jti`.
    pub fn logout_token(&self, jti: &str) -> String {
        self.indexed("logout-jti", jti)
    }

    /// The key `/readyz` deletes (a write that changes nothing) to prove that Redis
    /// serves writes.
    /// The pub/sub channel on which instances announce that a session changed or
    /// ended (messages are storage ids; see `store::events`).
    pub fn session_events(&self) -> String {
        format!("{}session-events", self.prefix)
    }

    pub fn readiness(&self) -> String {
        format!("{}readyz", self.prefix)
    }

    fn indexed(&self, kind: &str, value: &str) -> String {
        let digest = digest_hex(INDEX_DOMAIN, value.as_bytes());
        format!("{}{kind}:{{{digest}}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's hash tag: the part between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = key[open..].find('}').unwrap() + open;
        &key[open + 1..close]
    }

    #[test]
    fn keys_carry_the_prefix_and_never_the_raw_values() {
        let k = Keys::new("app:");
        for key in [
            k.session("abc"),
            k.refresh_lock("abc"),
            k.login("the-state"),
            k.user_sessions("alice"),
            k.provider_sessions("sid-1"),
            k.logout_token("jti-1"),
            k.readiness(),
        ] {
            assert!(key.starts_with("app:"), "{key}");
            for raw in ["the-state", "alice", "sid-1", "jti-1"] {
                assert!(!key.contains(raw), "{key} holds {raw}");
            }
        }
        assert_eq!(k.session("abc"), "app:session:{abc}");
    }

    #[test]
    fn a_session_and_its_lock_share_one_cluster_slot() {
        let k = Keys::new("p:");
        assert_eq!(
            hash_tag(&k.session("abc")),
            hash_tag(&k.refresh_lock("abc"))
        );
        assert_ne!(
            hash_tag(&k.user_sessions("alice")),
            hash_tag(&k.user_sessions("bob"))
        );
    }
}
