//! Issue 10: spa-bff on the Redis deployments teams run — Redis Cluster, Sentinel,
//! TLS with ACL users — tested with real processes (`support::redis_topology`):
//! a master killed with SIGKILL under steady load loses no session and no refresh,
//! requests fail only during the switch and only with 503 JSON, and service comes
//! back without restarting spa-bff. Wrong credentials and untrusted certificates do
//! not stop spa-bff: it is not ready and its log says why, without the password.

use crate::support::app::{spawn_app_with, AppOptions, TestApp, TEST_COOKIE_KEY};
use crate::support::redis_topology::{Cluster, Sentinel, ACL_PASSWORD};
use crate::support::sleep_ms;
use crate::support::upstream::Upstream;
use crate::support::{self, free_port, Browser, Provider, ProviderOptions};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

const CSRF: (&str, &str) = ("x-csrf", "1");
const SESSIONS: usize = 8;

/// One `/api` call of the load, as the client saw it.
struct Sample {
    session: usize,
    /// Since the kill (negative: before).
    at: f64,
    status: u16,
    /// The JSON `error` of a failure (`None`: not JSON).
    error: Option<String>,
    /// A failure to get any answer (timeout, connection refused).
    client_error: Option<String>,
}

/// What a failover cost, as the report and the README give it.
struct Figures {
    requests: usize,
    failed: usize,
    unauthenticated: usize,
    first_failure_s: Option<f64>,
    last_failure_s: Option<f64>,
    refreshes: u64,
    refresh_errors: u64,
}

impl Figures {
    fn summary(&self, label: &str) -> String {
        let secs = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:.1}s"));
        format!(
            "{label} failover: {} requests, {} failed (first {} / last {} after the kill), \
             {} answered 401 (sessions lost), {} refreshes, {} refresh errors",
            self.requests,
            self.failed,
            secs(self.first_failure_s),
            secs(self.last_failure_s),
            self.unauthenticated,
            self.refreshes,
            self.refresh_errors
        )
    }
}

/// Two spa-bff instances on the same Redis deployment (`redis_config`), 8 logged-in
/// sessions calling `/api` in turn on both, access tokens of 3 s refreshed 1 s
/// before expiry; `kill` runs after 3 s of load; the load goes on until 4 s pass
/// without a failure (at least 8 s after the kill, at most `target` + 6 s).
async fn failover_under_load(
    label: &str,
    redis_config: String,
    kill: impl FnOnce(&TestApp),
    target: Duration,
) -> Figures {
    let upstream = Upstream::start();
    let provider = Provider::start(ProviderOptions {
        access_token_ttl_secs: 3,
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(
        AppOptions {
            issuer: provider.issuer(),
            redis_config: Some(redis_config),
            extra_toml: format!(
                "[proxy]\nrefresh_skew = \"1s\"\nrefresh_lock_ttl = \"10s\"\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
                upstream.url
            ),
            ..AppOptions::default()
        },
        &provider,
    )
    .await;
    let twin = app.start_twin().await;
    let mut browsers = Vec::new();
    for i in 0..SESSIONS {
        let browser = Browser::new();
        let res = app.login(&browser, &format!("{label}-user-{i}"), "/").await;
        assert_eq!(res.status, 302, "login {i}: {}", res.text());
        let cookie = app.session_cookie(&browser).expect("session cookie");
        browser.set_cookie(&twin.url, &app.cookie_name, &cookie);
        // The upstream sees the login's token before any refresh replaces it.
        let warm = browser
            .get_with(&app.at(&format!("/api/s{i}/warm")), &[CSRF])
            .await;
        assert_eq!(warm.status, 201, "{}", warm.text());
        browsers.push(Rc::new(browser));
    }
    let apps = Rc::new([app, twin]);
    provider.reset_stats().await;

    let started = Instant::now();
    let kill_at: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
    let stop = Rc::new(Cell::new(false));
    let samples: Rc<RefCell<Vec<Sample>>> = Rc::new(RefCell::new(Vec::new()));
    let mut loops = Vec::new();
    for (i, browser) in browsers.iter().enumerate() {
        let (browser, apps, stop, samples, kill_at) = (
            browser.clone(),
            apps.clone(),
            stop.clone(),
            samples.clone(),
            kill_at.clone(),
        );
        loops.push(actix_web::rt::spawn(async move {
            let mut n = 0usize;
            while !stop.get() {
                n += 1;
                let app = &apps[n % 2];
                let url = app.at(&format!("/api/s{i}/{n}"));
                let headers = [CSRF, ("accept", "application/json")];
                let res = browser.try_request("GET", &url, &headers, Vec::new()).await;
                let at = match kill_at.get() {
                    Some(k) => Instant::now().duration_since(k).as_secs_f64(),
                    None => -started.elapsed().as_secs_f64(),
                };
                samples.borrow_mut().push(match res {
                    Ok(r) => Sample {
                        session: i,
                        at,
                        status: r.status,
                        error: serde_json::from_slice::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["error"].as_str().map(String::from)),
                        client_error: None,
                    },
                    Err(e) => Sample {
                        session: i,
                        at,
                        status: 0,
                        error: None,
                        client_error: Some(e),
                    },
                });
                sleep_ms(50).await;
            }
        }));
    }

    sleep_ms(3000).await;
    kill(&apps[0]);
    let killed = Instant::now();
    kill_at.set(Some(killed));
    loop {
        sleep_ms(250).await;
        let since_kill = killed.elapsed().as_secs_f64();
        let last_failure = samples
            .borrow()
            .iter()
            .filter(|s| s.at >= 0.0 && s.status != 201)
            .map(|s| s.at)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
        let quiet = last_failure.is_none_or(|t| since_kill - t >= 4.0);
        if (since_kill >= 8.0 && quiet) || since_kill >= target.as_secs_f64() + 6.0 {
            break;
        }
    }
    stop.set(true);
    for l in loops {
        l.await.unwrap();
    }

    let stats = provider.stats().await;
    let samples = samples.take();
    let failures: Vec<&Sample> = samples.iter().filter(|s| s.status != 201).collect();
    let figures = Figures {
        requests: samples.len(),
        failed: failures.len(),
        unauthenticated: failures.iter().filter(|s| s.status == 401).count(),
        first_failure_s: failures.iter().map(|s| s.at).reduce(f64::min),
        last_failure_s: failures.iter().map(|s| s.at).reduce(f64::max),
        refreshes: stats["refresh_token"].as_u64().unwrap_or(0),
        refresh_errors: stats["refresh_error"].as_u64().unwrap_or(0),
    };
    let report = figures.summary(label);
    eprintln!("{report}");
    let log = support::artifact_log(&format!("failover-{label}.txt"));
    let _ = std::fs::write(&log, format!("{report}\n"));

    // No session lost: never a 401 (and every session works at the end, below).
    assert_eq!(figures.unauthenticated, 0, "{report}");
    // Failures only as 503 JSON, only during the switch.
    for s in &failures {
        assert!(
            s.client_error.is_none(),
            "session {}: no answer at {:.1}s: {:?}",
            s.session,
            s.at,
            s.client_error
        );
        assert!(
            s.status == 503
                && matches!(
                    s.error.as_deref(),
                    Some("store_unavailable" | "provider_unavailable")
                ),
            "session {}: {} {:?} at {:.1}s",
            s.session,
            s.status,
            s.error,
            s.at
        );
        assert!(s.at >= 0.0, "a failure before the kill: {report}");
    }
    if let Some(last) = figures.last_failure_s {
        assert!(
            last <= target.as_secs_f64(),
            "requests still failed {last:.1}s after the kill: {report}"
        );
    }
    // Exactly one refresh per expiry: none refused (a reused refresh token would
    // be, and would end the grant), and every refresh's token reached the upstream.
    assert_eq!(figures.refresh_errors, 0, "{report}");
    assert!(
        figures.refreshes >= SESSIONS as u64,
        "refreshes happened: {report}"
    );
    let mut tokens: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for seen in upstream.seen() {
        let session = seen.path.split('/').nth(1).unwrap_or_default().to_string();
        if let Some(bearer) = seen.bearer() {
            tokens
                .entry(session)
                .or_default()
                .insert(bearer.to_string());
        }
    }
    let new_tokens: usize = tokens.values().map(|t| t.len() - 1).sum();
    assert_eq!(
        new_tokens as u64, figures.refreshes,
        "each refresh produced one token that was used ({new_tokens} new tokens): {report}"
    );
    // ...and every session still works, on both instances.
    for (i, browser) in browsers.iter().enumerate() {
        for app in apps.iter() {
            let res = browser
                .get_with(&app.at(&format!("/api/s{i}/final")), &[CSRF])
                .await;
            assert_eq!(
                res.status,
                201,
                "session {i} after the failover: {}",
                res.text()
            );
        }
    }
    for app in apps.iter() {
        app.handle.stop(false).await;
    }
    figures
}

#[actix_web::test]
async fn a_sentinel_failover_under_load_loses_no_session_and_refreshes_exactly_once() {
    support::init();
    let setup = Sentinel::start();
    let figures = failover_under_load(
        "sentinel",
        setup.session_toml(),
        |_| setup.master.kill9(),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        setup.current_master_port(),
        Some(setup.replica.port),
        "the replica was promoted: {}",
        figures.summary("sentinel")
    );
}

#[actix_web::test]
async fn a_cluster_failover_under_load_loses_no_session_and_refreshes_exactly_once() {
    support::init();
    let cluster = Cluster::start(Duration::from_secs(2));
    let figures = failover_under_load(
        "cluster",
        cluster.session_toml(),
        |app| {
            // Kill the master that holds the most of this test's sessions.
            let pattern = format!("{}session:*", app.prefix);
            let victim = cluster
                .masters()
                .into_iter()
                .max_by_key(|m| cluster.keys_on(m, &pattern))
                .expect("a master");
            assert!(
                cluster.keys_on(victim, &pattern) > 0,
                "sessions on {}",
                victim.port
            );
            victim.kill9();
        },
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        cluster.masters().len(),
        3,
        "a replica took over: {}",
        figures.summary("cluster")
    );
}

// ---------------------------------------------------------------------------------------
// Credentials and TLS: spa-bff as an operator runs it (the binary), its log captured.

/// A config file for the spa-bff binary on `port` with `session_lines` for Redis.
fn binary_config(dir: &std::path::Path, port: u16, session_lines: &str) -> std::path::PathBuf {
    let path = dir.join(format!("spa-bff-{port}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nshutdown_delay = \"0s\"\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"c\"\nclient_secret = \"not-a-real-secret\"\n\
             [session]\ncookie_keys = [\"{TEST_COOKIE_KEY}\"]\ninsecure_cookies = true\n{session_lines}\n",
            issuer = support::shared_provider().issuer(),
        ),
    )
    .unwrap();
    path
}

/// Runs `spa-bff --config <config>`, waits until `/readyz` reports Redis as
/// unavailable, stops it, and returns that `/readyz` answer and everything it logged.
async fn readiness_and_log(
    config: &std::path::Path,
    port: u16,
) -> (u16, serde_json::Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spa-bff"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spa-bff");
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    });
    let url = format!("http://127.0.0.1:{port}/readyz");
    let (status, body) = support::eventually(Duration::from_secs(20), "/readyz", || async {
        let mut res = support::http_client().get(&url).send().await.ok()?;
        let body: serde_json::Value = res.json().await.ok()?;
        (body["checks"]["redis"] == "unavailable").then(|| (res.status().as_u16(), body))
    })
    .await;
    sleep_ms(300).await; // let the connection failure reach the log
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (status, body, format!("{}\n{stderr}", lines.join().unwrap()))
}

#[actix_web::test]
async fn a_wrong_redis_password_or_an_untrusted_certificate_is_not_ready_and_logged_without_the_password(
) {
    support::init();
    let tls = crate::support::redis_topology::shared_tls_redis();
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-password-never-logged";

    let port = free_port();
    let config = binary_config(dir.path(), port, &tls.session_toml(wrong, &tls.ca_file));
    let (status, body, log) = readiness_and_log(&config, port).await;
    assert_eq!(status, 503, "{body}");
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains(wrong), "{log}");

    let port = free_port();
    let config = binary_config(
        dir.path(),
        port,
        &tls.session_toml(ACL_PASSWORD, &tls.foreign_ca_file),
    );
    let (status, body, log) = readiness_and_log(&config, port).await;
    assert_eq!(status, 503, "{body}");
    assert!(log.contains("TLS failed"), "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(!log.contains(ACL_PASSWORD), "{log}");
}

#[actix_web::test]
async fn check_config_online_reports_the_provider_and_each_redis_deployment() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let run = |session_lines: String| {
        let config = binary_config(dir.path(), free_port(), &session_lines);
        let out = Command::new(env!("CARGO_BIN_EXE_spa-bff"))
            .args(["check-config", "--online", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let issuer = support::shared_provider().issuer();
    let tls = crate::support::redis_topology::shared_tls_redis();
    let (code, out) = run(tls.session_toml(ACL_PASSWORD, &tls.ca_file));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("provider: ok, issuer {issuer} matches")),
        "{out}"
    );
    assert!(out.contains("token yes"), "{out}");
    assert!(
        out.contains("redis: ok, mode standalone, version 7.") && out.contains("tls yes"),
        "{out}"
    );

    let (code, out) = run(tls.session_toml("wrong-password-never-printed", &tls.ca_file));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("redis: Redis: authentication failed"), "{out}");
    assert!(!out.contains("wrong-password-never-printed"), "{out}");

    let cluster = crate::support::redis_topology::shared_cluster();
    let (code, out) = run(cluster.session_toml());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("mode cluster") && out.contains("replicas yes"),
        "{out}"
    );

    let sentinel = crate::support::redis_topology::shared_sentinel();
    let (code, out) = run(sentinel.session_toml());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("mode sentinel") && out.contains("replicas yes"),
        "{out}"
    );

    let (code, out) = run(format!("redis_url = \"redis://127.0.0.1:{}\"", free_port()));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("redis: Redis: connection refused"), "{out}");
}

/// `spa-bff check-config --online` on a configuration naming `issuer` and the shared
/// Redis, with more `[oidc]` lines; its exit code and output. Run off the test's
/// thread, which serves in-process peers (the fake provider).
async fn check_online(issuer: &str, oidc_lines: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spa-bff.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\npublic_url = \"http://127.0.0.1:8080\"\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"c\"\nclient_secret = \"not-a-real-secret\"\n{oidc_lines}\n\
             [session]\ncookie_keys = [\"{TEST_COOKIE_KEY}\"]\ninsecure_cookies = true\nredis_url = \"{}\"\n",
            support::shared_redis().url()
        ),
    )
    .unwrap();
    let out = actix_web::rt::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_spa-bff"))
            .args(["check-config", "--online", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[actix_web::test]
async fn check_config_online_reports_whether_authorization_requests_are_pushed_and_can_be() {
    support::init();
    let shared = support::shared_provider().issuer();
    let (code, out) = check_online(&shared, "").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("par: required by the provider no, endpoint yes, spa-bff pushes no"),
        "{out}"
    );
    let (code, out) = check_online(&shared, "use_par = true").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("spa-bff pushes yes (oidc.use_par)"), "{out}");

    let requiring = Provider::start(ProviderOptions {
        require_par: true,
        ..ProviderOptions::default()
    });
    let (code, out) = check_online(&requiring.issuer(), "").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "par: required by the provider yes, endpoint yes, spa-bff pushes yes (the provider requires it)"
        ),
        "{out}"
    );

    // PAR configured, and a provider that names no PAR endpoint (the fake): an error.
    let (_fake, fake_issuer) = crate::support::fake_op::start_fake_op();
    let (code, out) = check_online(&fake_issuer, "use_par = true").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("par: oidc.use_par = true, but the provider's metadata names no pushed_authorization_request_endpoint"),
        "{out}"
    );
    assert!(out.contains("provider: ok"), "{out}");
}

#[actix_web::test]
async fn check_config_online_says_whether_the_provider_takes_spa_bffs_dpop_proofs() {
    support::init();
    let (code, out) = check_online(&support::shared_provider().issuer(), "dpop = true").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("dpop: ok, the provider accepts ES256 proofs"),
        "{out}"
    );
    let (code, out) = check_online(&support::shared_provider().issuer(), "").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains("dpop:"),
        "nothing to say without oidc.dpop: {out}"
    );
    // The fake provider's metadata says nothing about DPoP.
    let (_fake, fake_issuer) = crate::support::fake_op::start_fake_op();
    let (code, out) = check_online(&fake_issuer, "dpop = true").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("dpop: the provider's metadata does not advertise DPoP"),
        "{out}"
    );
}

#[actix_web::test]
async fn a_token_save_returns_only_once_a_replica_holds_it() {
    use crate::store_contract::{checks, long_lived, store_under};
    use spa_bff::secret::Sensitive;
    use spa_bff::store::keys::Keys;
    use spa_bff::store::{Store, UpdateOutcome};
    support::init();
    let setup = crate::support::redis_topology::shared_sentinel();
    let prefix = format!("wait-{}:", support::random_string(6));
    let store = store_under(&setup.session_toml(), &prefix, long_lived()); // redis_timeout 2s
    let now = spa_bff::time::now_ms();
    let reference = store
        .create_session(&checks::record("wendy", None), now)
        .await
        .unwrap();
    let session = store.load_session(&reference, now).await.unwrap().unwrap();

    // The replica stalls for 400 ms: a save that does not wait for it returns at once.
    let replica_port = setup.replica.port;
    let stall = std::thread::spawn(move || {
        crate::support::redis_topology::query::<()>(
            replica_port,
            Some(crate::support::redis_topology::SENTINEL_DATA_PASSWORD),
            redis::cmd("DEBUG").arg("SLEEP").arg("0.4"),
        )
    });
    sleep_ms(50).await;
    let mut rotated = (*session.record).clone();
    rotated.tokens.refresh_token = Some(Sensitive::new("rotated"));
    let started = Instant::now();
    let outcome = store.update_session(&session, &rotated).await.unwrap();
    let took = started.elapsed();
    assert_eq!(outcome, UpdateOutcome::Updated);
    stall.join().unwrap().unwrap();
    assert!(
        took >= Duration::from_millis(250),
        "the save waited for the stalled replica (WAIT): {took:?}"
    );
    let key = Keys::new(&prefix).session(reference.storage_id());
    let version: u64 = setup
        .replica
        .query(redis::cmd("HGET").arg(&key).arg("ver"))
        .unwrap();
    assert_eq!(version, 2, "the replica holds the rotated tokens");
    eprintln!("token save with a stalled replica returned after {took:?}");
}
