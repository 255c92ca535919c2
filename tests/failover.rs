//! A Vault cluster's failover (issue #11, points 6 and 7), against the real binary and the
//! Vault simulator over TLS. What a real 3-node cluster answers while it elects a new active
//! node — 307 to the dead node from every standby, a 500 "local node not active but active
//! cluster node not found" at the switch, 503 from a sealed node, 412 from a performance
//! standby that has not caught up, 429 from a rate-limit quota with and without Retry-After —
//! is retried on every Vault request (ec2 and iam login, secret read, PKI issue, revoke),
//! always against the configured address; a redirect is never followed. When the deadline ends
//! on redirects, the run exits 69 naming the host Vault redirected to. A token is not left
//! behind when the revoke itself meets the failover.

mod common;
#[path = "common/iam.rs"]
mod iam_common;

use common::*;
use iam_common::*;
use std::net::TcpListener;
use std::time::{Duration, Instant};
use vaultboot_sim::Fault;

const LOGIN: &str = "/v1/auth/aws/login";
const KV: &str = "/v1/secret/data/app/api";
const PKI: &str = "/v1/pki_int/issue/web";
const REVOKE: &str = "/v1/auth/token/revoke-self";

/// Short retry settings: a test waits no longer than it must.
fn fast(config: Config, deadline: &str) -> String {
    let config = config.set("retry", "deadline", deadline);
    config.set("retry", "max_delay", "300ms").text()
}

/// A listener that nobody should ever connect to: where the redirects point.
struct DeadNode(TcpListener);

impl DeadNode {
    fn new() -> DeadNode {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        DeadNode(l)
    }
    fn host(&self) -> String {
        format!("localhost:{}", self.0.local_addr().unwrap().port())
    }
    fn untouched(&self) -> bool {
        matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// What an electing (or sealed, or lagging, or rate-limited) cluster answers.
fn election_answers(dead: &DeadNode, path: &str) -> Vec<(&'static str, Fault)> {
    vec![
        (
            "307 to the dead active node",
            Fault::Redirect {
                code: 307,
                location: format!("https://{}{path}", dead.host()),
            },
        ),
        (
            "500 no active node",
            Fault::status(
                500,
                "local node not active but active cluster node not found",
            ),
        ),
        ("503 sealed", Fault::status(503, "Vault is sealed")),
        (
            "412 performance standby behind",
            Fault::status(412, "required index state not present"),
        ),
        (
            "429 with Retry-After",
            Fault::Status {
                code: 429,
                retry_after: Some("1".into()),
                body: r#"{"errors":["request path \"x\": rate limit quota exceeded"]}"#.into(),
            },
        ),
        (
            "429 without Retry-After",
            Fault::status(429, "rate limit quota exceeded"),
        ),
    ]
}

fn requests_to(env: &Env, method: &str, path: &str) -> usize {
    env.vault
        .control()
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

/// Each election answer, twice in a row on `method path`: the run succeeds, that request was
/// made three times (to the configured address), nothing reached the dead node, and the
/// token was revoked.
fn survives_each_answer(env: &Env, method: &str, path: &str, mut run: impl FnMut() -> Outcome) {
    let dead = DeadNode::new();
    for (what, fault) in election_answers(&dead, path) {
        env.vault.control().clear_requests();
        env.vault.control().inject(Some(method), path, fault, 2);
        let out = run();
        assert_eq!(out.status, 0, "{method} {path}, {what}: {}", out.log());
        assert_eq!(
            requests_to(env, method, path),
            3,
            "{method} {path}, {what}: retried until it got through"
        );
        assert_eq!(env.vault.live_tokens(), 0, "{method} {path}, {what}");
        assert!(
            out.stderr.contains("token revoked"),
            "{what}: {}",
            out.stderr
        );
    }
    assert!(dead.untouched(), "a redirect was followed");
}

#[test]
fn an_election_on_the_ec2_login_is_waited_out() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    survives_each_answer(&env, "POST", LOGIN, || env.run(&cfg));
}

#[test]
fn an_election_on_the_iam_login_is_waited_out() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    let cfg = env.write_config(&fast(iam_config(env.config(), Some(SERVER_ID)), "20s"));
    survives_each_answer(&env, "POST", LOGIN, || run(&env, &cfg, &[], &[&creds]));
}

#[test]
fn an_election_on_a_secret_read_is_waited_out() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    survives_each_answer(&env, "GET", KV, || env.run(&cfg));
}

#[test]
fn an_election_on_a_pki_issue_is_waited_out() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config().renew_every_run(), "20s"));
    survives_each_answer(&env, "POST", PKI, || env.run(&cfg));
}

#[test]
fn an_election_on_the_revoke_is_waited_out() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    survives_each_answer(&env, "POST", REVOKE, || env.run(&cfg));
    assert_eq!(env.vault.revoked_tokens(), 6);
}

#[test]
fn vault_redirecting_until_the_deadline_exits_69_naming_the_host() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "2s"));
    let dead = DeadNode::new();
    for path in [LOGIN, KV] {
        env.vault.control().clear_faults();
        env.vault.control().clear_requests();
        let method = if path == LOGIN { "POST" } else { "GET" };
        env.vault.control().inject(
            Some(method),
            path,
            Fault::Redirect {
                code: 307,
                location: format!("https://{}{path}", dead.host()),
            },
            10_000,
        );
        let out = env.run(&cfg);
        assert_eq!(out.status, 69, "{path}: {}", out.log());
        assert!(requests_to(&env, method, path) >= 3, "{path}: retried");
        let last = out.stderr.lines().last().unwrap_or("");
        assert!(
            last.contains(&format!("Vault kept redirecting to \"{}\"", dead.host())),
            "{path}: {last}"
        );
        assert!(
            out.stderr.contains("redirects are not followed"),
            "{}",
            out.stderr
        );
        assert!(env.out_files().is_empty());
        assert_eq!(env.vault.live_tokens(), 0, "{path}: the token was revoked");
    }
    assert!(dead.untouched(), "a redirect was followed");
}

/// Point 7: the login succeeded, a later step failed (403 on a secret), and the revoke meets
/// the failover (307 three times): it is retried, and the token does not outlive the run.
#[test]
fn a_token_is_not_left_behind_by_a_failover() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    let dead = DeadNode::new();
    env.vault
        .control()
        .inject(Some("GET"), KV, Fault::status(403, "permission denied"), 1);
    env.vault.control().inject(
        Some("POST"),
        REVOKE,
        Fault::Redirect {
            code: 307,
            location: format!("https://{}{REVOKE}", dead.host()),
        },
        3,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    assert_eq!(requests_to(&env, "POST", REVOKE), 4);
    assert_eq!(env.vault.revoked_tokens(), 1);
    assert_eq!(env.vault.live_tokens(), 0);
    assert!(out.stderr.contains("token revoked"), "{}", out.stderr);
    assert!(dead.untouched());
}

/// When the revoke keeps failing, it gives up after a few seconds (not the rest of the
/// deadline) with a warning that says how long the token stays valid and how to revoke it.
#[test]
fn a_revoke_that_keeps_failing_gives_up_in_seconds_with_a_warning() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "60s"));
    env.vault
        .set_role_token_ttl("aws", "web", Duration::from_secs(600));
    env.vault.control().inject(
        Some("POST"),
        REVOKE,
        Fault::Redirect {
            code: 307,
            location: "https://vault-0.internal:8200/v1/auth/token/revoke-self".into(),
        },
        10_000,
    );
    let started = Instant::now();
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "every file was written: {}", out.log());
    assert!(
        started.elapsed() < scaled(Duration::from_secs(20)).min(Duration::from_secs(50)),
        "{:?}",
        started.elapsed()
    );
    let revokes: Vec<_> = env
        .vault
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.path == REVOKE)
        .collect();
    assert!(revokes.len() >= 3, "retried: {}", revokes.len());
    let span = revokes.last().unwrap().at - revokes[0].at;
    // Well short of the 60 s deadline, even stretched for a slow runner.
    let bound = scaled(Duration::from_secs(6)).min(Duration::from_secs(30));
    assert!(span < bound, "bounded: {span:?}");
    assert!(
        out.stderr.contains("token not revoked")
            && out.stderr.contains("expires in 10m")
            && out.stderr.contains("vault token revoke -accessor"),
        "{}",
        out.stderr
    );
    assert_eq!(env.vault.live_tokens(), 1);
}

/// A failure that spent the whole deadline still gives the token back: the revoke gets a short
/// grace of its own.
#[test]
fn a_spent_deadline_still_revokes_the_token() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "2s"));
    env.vault.control().inject(
        Some("GET"),
        KV,
        Fault::status(503, "Vault is sealed"),
        10_000,
    );
    env.vault.control().inject(
        Some("POST"),
        REVOKE,
        Fault::Redirect {
            code: 307,
            location: "https://vault-0.internal:8200/v1/auth/token/revoke-self".into(),
        },
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 69, "{}", out.log());
    assert_eq!(requests_to(&env, "POST", REVOKE), 2);
    assert_eq!(env.vault.live_tokens(), 0, "{}", out.stderr);
    assert!(
        out.elapsed < scaled(Duration::from_secs(6)).min(Duration::from_secs(12)),
        "{:?}: the deadline plus a short grace",
        out.elapsed
    );
}
