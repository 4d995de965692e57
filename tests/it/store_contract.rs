//! The store contract: what every [`Store`] must do, as one suite of checks run
//! against each way spa-bff reaches Redis. Each check takes a fresh store (its own
//! key prefix) from a factory; `store_contract!(name, factory)` instantiates the
//! whole suite for one factory: a standalone redis-server, a Redis Cluster (3
//! masters with replicas), a Sentinel setup (1 master, 1 replica, 3 sentinels) and
//! a TLS server with an ACL user (`support::redis_topology`). Each factory builds
//! the store from `[session]` settings the way the app does.

use spa_bff::config::{RedisSettings, Settings};
use spa_bff::secret::Sensitive;
use spa_bff::session::{ExpiryPolicy, LoginState, Prompt, SessionRecord, SessionRef, Tokens};
use spa_bff::store::keys::Keys;
use spa_bff::store::{
    EndOutcome, LogoutScope, RedisHandle, RedisStore, SessionEvents, Store, UpdateOutcome,
};
use spa_bff::time::{now_ms, UnixMs};
use std::time::Duration;

use crate::support;
use crate::support::redis_topology::{
    shared_cluster, shared_sentinel, shared_tls_redis, ACL_PASSWORD,
};

/// Idle 30 min, absolute 12 h: nothing expires during a check unless it says so.
pub fn long_lived() -> ExpiryPolicy {
    ExpiryPolicy::new(Duration::from_secs(1800), Duration::from_secs(12 * 3600))
}

/// The Redis settings `session_lines` (TOML of `[session]`) give, read by the
/// configuration reader as the app reads them.
pub fn redis_settings(session_lines: &str) -> RedisSettings {
    let text = format!(
        "[server]\npublic_url = \"https://app.example.com\"\n[oidc]\nissuer = \"https://id.example.com\"\n\
         client_id = \"c\"\nclient_secret = \"s\"\n[session]\ncookie_keys = [\"{}\"]\nredis_timeout = \"2s\"\n{session_lines}\n",
        support::app::TEST_COOKIE_KEY
    );
    Settings::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("test Redis settings: {e}"))
        .session
        .redis
}

/// A store on the Redis `session_lines` describe, under a fresh random key prefix.
pub fn store_with(session_lines: &str, expiry: ExpiryPolicy) -> RedisStore {
    store_under(
        session_lines,
        &format!("contract-{}:", support::random_string(6)),
        expiry,
    )
}

/// A store on the Redis `session_lines` describe, under `prefix`.
pub fn store_under(session_lines: &str, prefix: &str, expiry: ExpiryPolicy) -> RedisStore {
    support::init();
    let redis = RedisHandle::new(&redis_settings(session_lines)).expect("Redis settings");
    RedisStore::new(redis, prefix, expiry)
}

/// A store on the Redis at `url`, under a fresh random key prefix.
pub fn store_at(url: &str, expiry: ExpiryPolicy) -> RedisStore {
    store_with(&format!("redis_url = {url:?}"), expiry)
}

/// The factory for the standalone redis-server the tests share.
pub async fn standalone(expiry: ExpiryPolicy) -> RedisStore {
    store_at(&support::shared_redis().url(), expiry)
}

/// The shared Redis Cluster, through three seed nodes.
pub async fn cluster(expiry: ExpiryPolicy) -> RedisStore {
    store_with(&shared_cluster().session_toml(), expiry)
}

/// The shared Sentinel setup's master, found through the sentinels.
pub async fn sentinel(expiry: ExpiryPolicy) -> RedisStore {
    store_with(&shared_sentinel().session_toml(), expiry)
}

/// The shared TLS server, as its ACL user, trusting the test CA.
pub async fn tls_acl(expiry: ExpiryPolicy) -> RedisStore {
    let tls = shared_tls_redis();
    store_with(&tls.session_toml(ACL_PASSWORD, &tls.ca_file), expiry)
}

/// A store on the Redis `session_lines` describe, with the session cache and its
/// announcements on (as spa-bff runs): every check must hold through the cache too.
pub async fn cached_store_with(session_lines: &str, expiry: ExpiryPolicy) -> RedisStore {
    support::init();
    let handle = RedisHandle::new(&redis_settings(session_lines)).expect("Redis settings");
    let prefix = format!("contract-{}:", support::random_string(6));
    let events = SessionEvents::new(&Keys::new(prefix.clone()), 1000);
    actix_web::rt::spawn(events.clone().run(handle.target(), handle.timeout()));
    // Wait for the subscription, so that copies are in use from the first check on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !events.cache.usable(std::time::Instant::now()) {
        assert!(std::time::Instant::now() < deadline, "no subscription");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    RedisStore::new(handle, prefix, expiry).with_events(events)
}

/// The standalone redis-server, with the session cache.
pub async fn standalone_cached(expiry: ExpiryPolicy) -> RedisStore {
    let url = support::shared_redis().url();
    cached_store_with(&format!("redis_url = {url:?}"), expiry).await
}

/// The shared Redis Cluster, with the session cache (announcements published on one
/// node reach the subscriber on a seed node).
pub async fn cluster_cached(expiry: ExpiryPolicy) -> RedisStore {
    cached_store_with(&shared_cluster().session_toml(), expiry).await
}

/// The shared Sentinel setup, with the session cache (the subscriber follows the
/// master the sentinels name).
pub async fn sentinel_cached(expiry: ExpiryPolicy) -> RedisStore {
    cached_store_with(&shared_sentinel().session_toml(), expiry).await
}

/// Instantiates every check of the contract for one store factory
/// (`async fn(ExpiryPolicy) -> impl Store`).
#[macro_export]
macro_rules! store_contract {
    ($name:ident, $factory:path) => {
        mod $name {
            use $crate::store_contract::checks;
            use $crate::store_contract::long_lived;

            #[actix_web::test]
            async fn a_created_session_loads_back_with_its_record() {
                checks::created_session_loads_back(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn an_unknown_or_foreign_reference_loads_nothing() {
                checks::unknown_or_foreign_reference_loads_nothing(&$factory(long_lived()).await)
                    .await;
            }
            #[actix_web::test]
            async fn an_update_is_a_compare_and_set_on_the_version() {
                checks::update_is_compare_and_set(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn ending_a_session_if_unchanged_is_a_compare_and_delete_on_the_version() {
                checks::end_if_unchanged_is_compare_and_delete(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn ending_a_session_removes_it_and_its_index_entries() {
                checks::end_removes_session_and_indexes(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn back_channel_scopes_end_exactly_their_sessions() {
                checks::logout_scopes_end_exactly_their_sessions(&$factory(long_lived()).await)
                    .await;
            }
            #[actix_web::test]
            async fn the_refresh_lock_is_exclusive_expires_and_is_released_only_by_its_holder() {
                checks::refresh_lock(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn a_pending_login_is_taken_once_and_expires() {
                checks::pending_login(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn a_logout_token_is_used_once_within_its_window() {
                checks::logout_token_replay(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn idle_and_absolute_timeouts_end_a_session() {
                checks::expiry(&$factory).await;
            }
            #[actix_web::test]
            async fn activity_is_recorded_at_most_every_twentieth_of_idle() {
                checks::activity(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn liveness_follows_the_expiry_rules_without_recording_activity() {
                checks::liveness(&$factory).await;
            }
            #[actix_web::test]
            async fn the_login_rate_limit_is_a_shared_token_bucket_per_client() {
                checks::login_rate_limit(&$factory(long_lived()).await).await;
            }
            #[actix_web::test]
            async fn the_store_answers_ping() {
                checks::ping(&$factory(long_lived()).await).await;
            }
        }
    };
}

store_contract!(standalone_redis, crate::store_contract::standalone);
store_contract!(
    standalone_redis_with_session_cache,
    crate::store_contract::standalone_cached
);
store_contract!(
    cluster_with_session_cache,
    crate::store_contract::cluster_cached
);
store_contract!(
    sentinel_with_session_cache,
    crate::store_contract::sentinel_cached
);
store_contract!(redis_cluster, crate::store_contract::cluster);
store_contract!(redis_sentinel, crate::store_contract::sentinel);
store_contract!(tls_and_acl_user, crate::store_contract::tls_acl);

pub mod checks {
    use super::*;

    pub fn record(sub: &str, sid: Option<&str>) -> SessionRecord {
        let mut claims = serde_json::Map::new();
        claims.insert("name".into(), serde_json::json!(format!("{sub}'s name")));
        SessionRecord {
            sub: sub.into(),
            sid: sid.map(String::from),
            claims,
            tokens: Tokens {
                access_token: Sensitive::new(format!("at-{}", support::random_string(8))),
                access_token_expires_at: Some(now_ms() + 60_000),
                refresh_token: Some(Sensitive::new("rt-1")),
                id_token: Sensitive::new("id-token"),
                scope: Some("openid".into()),
                resource_tokens: Default::default(),
            },
            resources: Default::default(),
            dpop_key: None,
        }
    }

    async fn sleep_ms(ms: u64) {
        actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    }

    pub async fn created_session_loads_back(store: &impl Store) {
        let now = now_ms();
        let rec = record("alice", Some("sid-a"));
        let reference = store.create_session(&rec, now).await.unwrap();
        let loaded = store
            .load_session(&reference, now)
            .await
            .unwrap()
            .expect("the session just created");
        assert_eq!(loaded.reference, reference);
        assert_eq!(loaded.record.sub, "alice");
        assert_eq!(loaded.record.sid.as_deref(), Some("sid-a"));
        assert_eq!(loaded.record.claims, rec.claims);
        assert_eq!(loaded.record.tokens.access_token, rec.tokens.access_token);
        assert_eq!(loaded.created_at, now);
        assert_eq!(loaded.last_seen, now);
        assert_eq!(loaded.version, 1);
        // Every login gets a new reference.
        let other = store.create_session(&rec, now).await.unwrap();
        assert_ne!(other, reference);
    }

    pub async fn unknown_or_foreign_reference_loads_nothing(store: &impl Store) {
        let now = now_ms();
        assert!(store
            .load_session(&SessionRef::generate(), now)
            .await
            .unwrap()
            .is_none());
        let reference = store
            .create_session(&record("bob", None), now)
            .await
            .unwrap();
        // Same session id, another secret: the record does not decrypt.
        let mut bytes = base64_decode(&reference.encode());
        bytes[63] ^= 1;
        let forged = SessionRef::decode(&base64_encode(&bytes)).unwrap();
        assert_eq!(forged.storage_id(), reference.storage_id());
        assert!(store.load_session(&forged, now).await.unwrap().is_none());
        // ...and the real session is untouched by the attempt.
        assert!(store.load_session(&reference, now).await.unwrap().is_some());
    }

    pub async fn update_is_compare_and_set(store: &impl Store) {
        let now = now_ms();
        let reference = store
            .create_session(&record("carol", None), now)
            .await
            .unwrap();
        let a = store.load_session(&reference, now).await.unwrap().unwrap();
        let b = store.load_session(&reference, now).await.unwrap().unwrap();
        let mut newer = (*a.record).clone();
        newer.tokens.refresh_token = Some(Sensitive::new("rt-2"));
        assert_eq!(
            store.update_session(&a, &newer).await.unwrap(),
            UpdateOutcome::Updated
        );
        let mut lost = (*b.record).clone();
        lost.tokens.refresh_token = Some(Sensitive::new("rt-lost"));
        assert_eq!(
            store.update_session(&b, &lost).await.unwrap(),
            UpdateOutcome::Conflict
        );
        let stored = store.load_session(&reference, now).await.unwrap().unwrap();
        assert_eq!(stored.version, 2);
        assert_eq!(
            stored.record.tokens.refresh_token,
            Some(Sensitive::new("rt-2"))
        );
        store.end_session(&stored).await.unwrap();
        assert_eq!(
            store.update_session(&stored, &newer).await.unwrap(),
            UpdateOutcome::Gone
        );
    }

    pub async fn end_if_unchanged_is_compare_and_delete(store: &impl Store) {
        let now = now_ms();
        let reference = store
            .create_session(&record("ivy", Some("sid-i")), now)
            .await
            .unwrap();
        let read = store.load_session(&reference, now).await.unwrap().unwrap();
        // Someone saves newer tokens after we read: ending is refused, the session stays.
        let other = store.load_session(&reference, now).await.unwrap().unwrap();
        let mut newer = (*other.record).clone();
        newer.tokens.refresh_token = Some(Sensitive::new("rt-newer"));
        assert_eq!(
            store.update_session(&other, &newer).await.unwrap(),
            UpdateOutcome::Updated
        );
        assert_eq!(
            store.end_session_if_unchanged(&read).await.unwrap(),
            EndOutcome::Changed
        );
        let stored = store.load_session(&reference, now).await.unwrap().unwrap();
        assert_eq!(
            stored.record.tokens.refresh_token,
            Some(Sensitive::new("rt-newer"))
        );
        // As read: ended, with its index entries.
        assert_eq!(
            store.end_session_if_unchanged(&stored).await.unwrap(),
            EndOutcome::Ended
        );
        assert!(store.load_session(&reference, now).await.unwrap().is_none());
        assert_eq!(
            store
                .end_sessions_of(LogoutScope::ProviderSession("sid-i"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store.end_session_if_unchanged(&stored).await.unwrap(),
            EndOutcome::Gone
        );
    }

    pub async fn end_removes_session_and_indexes(store: &impl Store) {
        let now = now_ms();
        let reference = store
            .create_session(&record("dave", Some("sid-d")), now)
            .await
            .unwrap();
        let loaded = store.load_session(&reference, now).await.unwrap().unwrap();
        store.end_session(&loaded).await.unwrap();
        assert!(store.load_session(&reference, now).await.unwrap().is_none());
        assert_eq!(
            store
                .end_sessions_of(LogoutScope::User("dave"))
                .await
                .unwrap(),
            0
        );
        // Deleting by reference is idempotent.
        store.delete_session(&reference).await.unwrap();
        store.delete_session(&reference).await.unwrap();
    }

    pub async fn logout_scopes_end_exactly_their_sessions(store: &impl Store) {
        let now = now_ms();
        let a_x = store
            .create_session(&record("erin", Some("x")), now)
            .await
            .unwrap();
        let a_y = store
            .create_session(&record("erin", Some("y")), now)
            .await
            .unwrap();
        let b_z = store
            .create_session(&record("frank", Some("z")), now)
            .await
            .unwrap();
        let alive =
            |r: SessionRef| async move { store.load_session(&r, now).await.unwrap().is_some() };
        assert_eq!(
            store
                .end_sessions_of(LogoutScope::ProviderSession("x"))
                .await
                .unwrap(),
            1
        );
        assert!(!alive(a_x.clone()).await);
        assert!(alive(a_y.clone()).await);
        assert_eq!(
            store
                .end_sessions_of(LogoutScope::User("erin"))
                .await
                .unwrap(),
            1
        );
        assert!(!alive(a_y).await);
        assert!(alive(b_z.clone()).await);
        assert_eq!(
            store
                .end_sessions_of(LogoutScope::ProviderSession("unknown"))
                .await
                .unwrap(),
            0
        );
        assert!(alive(b_z).await);
    }

    pub async fn refresh_lock(store: &impl Store) {
        let reference = SessionRef::generate();
        let long = Duration::from_secs(30);
        let first = store.try_lock_refresh(&reference, long).await.unwrap();
        assert!(first.is_some());
        assert!(store
            .try_lock_refresh(&reference, long)
            .await
            .unwrap()
            .is_none());
        // Another session's lock is independent.
        assert!(store
            .try_lock_refresh(&SessionRef::generate(), long)
            .await
            .unwrap()
            .is_some());
        store.unlock_refresh(first.unwrap()).await;
        let second = store
            .try_lock_refresh(&reference, Duration::from_millis(200))
            .await;
        let second = second.unwrap().expect("free again after unlock");
        // A lock ends by itself after its TTL (a crashed holder)...
        sleep_ms(400).await;
        let third = store.try_lock_refresh(&reference, long).await.unwrap();
        assert!(third.is_some(), "the lock expired");
        // ...and its late holder cannot release the lock someone else holds now.
        store.unlock_refresh(second).await;
        assert!(store
            .try_lock_refresh(&reference, long)
            .await
            .unwrap()
            .is_none());
        store.unlock_refresh(third.unwrap()).await;
    }

    pub async fn pending_login(store: &impl Store) {
        let state = support::random_string(32);
        let login = LoginState {
            nonce: support::random_string(32),
            pkce_verifier: support::random_string(32),
            return_to: "/orders/7".into(),
            prompt: Prompt::Login {
                since: 1_700_000_000,
            },
            max_age: Some(300),
            dpop_key: Some(spa_bff::oidc::dpop::DpopKey::generate().unwrap().1),
        };
        store
            .save_login(&state, &login, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(store
            .take_login(&support::random_string(32))
            .await
            .unwrap()
            .is_none());
        let taken = store.take_login(&state).await.unwrap().expect("saved");
        assert_eq!(taken, login);
        assert!(
            store.take_login(&state).await.unwrap().is_none(),
            "one-time"
        );

        let short = support::random_string(32);
        store
            .save_login(&short, &login, Duration::from_millis(200))
            .await
            .unwrap();
        sleep_ms(400).await;
        assert!(store.take_login(&short).await.unwrap().is_none(), "expired");
    }

    pub async fn logout_token_replay(store: &impl Store) {
        let window = Duration::from_secs(60);
        assert!(!store.logout_token_used("jti-1").await.unwrap());
        assert!(store.mark_logout_token_used("jti-1", window).await.unwrap());
        assert!(store.logout_token_used("jti-1").await.unwrap());
        assert!(!store.logout_token_used("jti-2").await.unwrap());
        assert!(!store.mark_logout_token_used("jti-1", window).await.unwrap());
        assert!(store.mark_logout_token_used("jti-2", window).await.unwrap());
        let short = Duration::from_millis(200);
        assert!(store.mark_logout_token_used("jti-3", short).await.unwrap());
        sleep_ms(400).await;
        assert!(
            store.mark_logout_token_used("jti-3", short).await.unwrap(),
            "outside its window a jti is new again"
        );
    }

    pub async fn expiry<S, F, Fut>(factory: &F)
    where
        S: Store,
        F: Fn(ExpiryPolicy) -> Fut,
        Fut: std::future::Future<Output = S>,
    {
        let idle = ExpiryPolicy::new(Duration::from_secs(60), Duration::from_secs(600));
        let store = factory(idle).await;
        let t0: UnixMs = now_ms();
        let reference = store
            .create_session(&record("gina", None), t0)
            .await
            .unwrap();
        assert!(store
            .load_session(&reference, t0 + 59_000)
            .await
            .unwrap()
            .is_some());
        // 59 s of activity moved the idle deadline; 60 s of silence after it ends it.
        assert!(store
            .load_session(&reference, t0 + 59_000 + 60_000)
            .await
            .unwrap()
            .is_none());
        // ...and deleted it: it does not come back at an earlier clock.
        assert!(store.load_session(&reference, t0).await.unwrap().is_none());

        // Activity does not extend a session beyond its absolute timeout.
        let reference = store
            .create_session(&record("gina", None), t0)
            .await
            .unwrap();
        let mut now = t0;
        while now < t0 + 540_000 {
            now += 50_000;
            assert!(store.load_session(&reference, now).await.unwrap().is_some());
        }
        assert!(store
            .load_session(&reference, t0 + 600_000)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn activity(store: &impl Store) {
        // Idle 30 min: `seen` is written back at most once a minute.
        let t0 = now_ms();
        let reference = store
            .create_session(&record("hank", None), t0)
            .await
            .unwrap();
        let s = store
            .load_session(&reference, t0 + 59_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.last_seen, t0, "not due yet");
        let s = store
            .load_session(&reference, t0 + 61_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.last_seen, t0 + 61_000);
        let s = store
            .load_session(&reference, t0 + 62_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.last_seen, t0 + 61_000, "stored, and not rewritten");
    }

    pub async fn liveness<S, F, Fut>(factory: &F)
    where
        S: Store,
        F: Fn(ExpiryPolicy) -> Fut,
        Fut: std::future::Future<Output = S>,
    {
        use spa_bff::store::Liveness;
        let store = factory(ExpiryPolicy::new(
            Duration::from_secs(60),
            Duration::from_secs(600),
        ))
        .await;
        let t0 = now_ms();
        let reference = store
            .create_session(&record("iris", None), t0)
            .await
            .unwrap();
        assert_eq!(
            store.session_alive(&reference, t0 + 59_000).await.unwrap(),
            Liveness::Live
        );
        // Asking is not activity: the idle deadline did not move.
        assert_eq!(
            store.session_alive(&reference, t0 + 60_000).await.unwrap(),
            Liveness::Ended
        );
        assert!(store
            .load_session(&reference, t0 + 1_000)
            .await
            .unwrap()
            .is_some());
        // Absolute expiry, and a session that was deleted.
        let s = store
            .load_session(&reference, t0 + 50_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.session_alive(&reference, t0 + 100_000).await.unwrap(),
            Liveness::Live
        );
        assert_eq!(
            store.session_alive(&reference, t0 + 600_000).await.unwrap(),
            Liveness::Ended
        );
        store.end_session(&s).await.unwrap();
        assert_eq!(
            store.session_alive(&reference, t0 + 50_001).await.unwrap(),
            Liveness::Ended
        );
        let stranger = spa_bff::session::SessionRef::generate();
        assert_eq!(
            store.session_alive(&stranger, t0).await.unwrap(),
            Liveness::Ended
        );
    }

    /// `burst` at once, then one token per interval (100 ms here), per client, on
    /// Redis's clock.
    pub async fn login_rate_limit(store: &RedisStore) {
        use spa_bff::edge::rate_limit::Admission;
        let (a, b) = (support::random_string(6), support::random_string(6));
        for _ in 0..3 {
            assert_eq!(
                store.admit_login(&a, 600, 3).await.unwrap(),
                Admission::Allowed
            );
        }
        match store.admit_login(&a, 600, 3).await.unwrap() {
            Admission::Limited { retry_after } => assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100),
                "{retry_after:?}"
            ),
            other => panic!("a fourth request at once: {other:?}"),
        }
        assert_eq!(
            store.admit_login(&b, 600, 3).await.unwrap(),
            Admission::Allowed,
            "another client has its own bucket"
        );
        sleep_ms(150).await;
        assert_eq!(
            store.admit_login(&a, 600, 3).await.unwrap(),
            Admission::Allowed,
            "a token came back"
        );
    }

    pub async fn ping(store: &impl Store) {
        store.ping().await.unwrap();
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    }

    fn base64_encode(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }
}
