//! AWS behind Vault (issue #11, point 1): every login text row of the table in `src/decide.rs`,
//! for both methods, against the real binary and the Vault simulator over TLS. A transient
//! row is retried and the run then succeeds (or, when the deadline ends on it, exits 69 with
//! a last line that names the cause and the fixes); a refusal exits 77 after one attempt,
//! with its hint.

mod common;
#[path = "common/iam.rs"]
mod iam_common;

use common::*;
use iam_common::*;
use std::time::Duration;
use vaultboot_sim::AwsFault;

const LOGIN: &str = "/v1/auth/aws/login";

/// Short retry settings: a test waits no longer than it must.
fn fast(config: Config, deadline: &str) -> String {
    let config = config.set("retry", "deadline", deadline);
    config.set("retry", "max_delay", "300ms").text()
}

/// The statuses Vault answered the login requests recorded since the last clear.
fn login_statuses(env: &Env) -> Vec<u16> {
    env.vault
        .control()
        .requests()
        .iter()
        .filter(|r| r.path == LOGIN)
        .map(|r| r.status)
        .collect()
}

fn last_line(out: &Outcome) -> &str {
    out.stderr.lines().last().unwrap_or("")
}

/// An iam world: the instance profile's credentials known to STS, the iam role "app".
fn iam_env() -> (Env, AwsCreds) {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    (env, creds)
}

fn iam_cfg(env: &Env, deadline: &str) -> std::path::PathBuf {
    env.write_config(&fast(iam_config(env.config(), Some(SERVER_ID)), deadline))
}

#[test]
fn aws_failures_behind_an_ec2_login_are_retried_until_it_succeeds() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    for fault in [
        AwsFault::Ec2Throttled,
        AwsFault::Ec2Unavailable,
        AwsFault::Ec2InternalError,
        AwsFault::Ec2Unreachable,
    ] {
        env.vault.control().clear_requests();
        env.vault.inject_aws_fault(fault, 2);
        let out = env.run(&cfg);
        assert_eq!(out.status, 0, "{fault:?}: {}", out.log());
        assert_eq!(login_statuses(&env), [400, 400, 200], "{fault:?}");
        assert_eq!(env.vault.live_tokens(), 0, "{fault:?}");
    }
}

#[test]
fn ec2_describe_instances_throttling_is_waited_out() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    // One call at once, one more every 2 s: the first run takes the only token, the second
    // finds the bucket empty and retries (back-off, no Retry-After) until it refills.
    env.vault.set_describe_instances_limit(1, 0.5);
    assert_eq!(env.run(&cfg).status, 0);
    env.vault.control().clear_requests();
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let statuses = login_statuses(&env);
    assert!(statuses.len() >= 2, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&200));
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == 400));
    let (calls, throttled, _, _) = env.vault.aws_calls();
    assert_eq!(
        calls - throttled,
        2,
        "one DescribeInstances per successful login"
    );
    assert!(throttled >= 1);
}

#[test]
fn aws_failures_behind_an_iam_login_are_retried_until_it_succeeds() {
    let (env, creds) = iam_env();
    let cfg = iam_cfg(&env, "20s");
    for fault in [
        AwsFault::StsThrottled,
        AwsFault::StsUnavailable,
        AwsFault::InferredInstanceUnverified,
    ] {
        env.vault.control().clear_requests();
        env.vault.inject_aws_fault(fault, 2);
        let out = run(&env, &cfg, &[], &[&creds]);
        assert_eq!(out.status, 0, "{fault:?}: {}", out.log());
        assert_eq!(login_statuses(&env), [400, 400, 200], "{fault:?}");
    }
    // STS's own bucket, empty when the run starts: one token every 4 s. (A run that takes
    // longer than that to reach its login would find a token: not seen, even under load.)
    env.vault.set_get_caller_identity_limit(1, 0.25);
    env.vault.drain_get_caller_identity_bucket();
    env.vault.control().clear_requests();
    let (_, _, calls_before, throttled_before) = env.vault.aws_calls();
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 0, "{}", out.log());
    let (_, _, calls, throttled) = env.vault.aws_calls();
    let (calls, throttled) = (calls - calls_before, throttled - throttled_before);
    assert!(
        throttled >= 1 && calls - throttled == 1,
        "{calls} {throttled}"
    );
    assert!(login_statuses(&env).len() >= 2);
}

#[test]
fn a_deadline_ending_on_aws_behind_vault_exits_69_and_says_what_to_do() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "2s"));
    env.vault.inject_aws_fault(AwsFault::Ec2Throttled, 1000);
    let out = env.run(&cfg);
    assert_eq!(out.status, 69, "{}", out.log());
    assert!(
        login_statuses(&env).len() >= 3,
        "retried until the deadline"
    );
    assert!(
        out.stderr.contains("RequestLimitExceeded"),
        "{}",
        out.stderr
    );
    let last = last_line(&out);
    assert!(last.contains("AWS throttling behind Vault"), "{last}");
    assert!(
        last.contains("max_retries")
            && last.contains("auth/<mount>/config/client")
            && last.contains("spread the scale-out")
            && last.contains("retry.deadline"),
        "{last}"
    );
    assert!(env.out_files().is_empty());

    let (env, creds) = iam_env();
    let cfg = iam_cfg(&env, "2s");
    env.vault.inject_aws_fault(AwsFault::StsUnavailable, 1000);
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 69, "{}", out.log());
    assert!(out.stderr.contains("giving up after"), "{}", out.stderr);
    assert!(
        last_line(&out).contains("AWS failing (or unreachable) behind Vault"),
        "{}",
        out.stderr
    );
}

/// Runs a refused ec2 login: 77, one attempt, the hint.
fn refused_once(env: &Env, cfg: &std::path::Path, hint: &str) {
    env.vault.control().clear_requests();
    let out = env.run(cfg);
    assert_eq!(out.status, 77, "{hint}: {}", out.log());
    assert_eq!(login_statuses(env).len(), 1, "{hint}: not retried");
    assert!(out.stderr.contains("login refused"), "{}", out.stderr);
    assert!(out.stderr.contains(hint), "{hint}: {}", out.stderr);
}

#[test]
fn refusals_behind_an_ec2_login_exit_77_at_once_with_their_hint() {
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    for (fault, hint) in [
        (
            AwsFault::Ec2Unauthorized,
            "Vault's own AWS credentials may not call ec2:DescribeInstances",
        ),
        (
            AwsFault::AssumeRoleDenied,
            "was denied to Vault's own AWS credentials",
        ),
        (AwsFault::NoCredentials, "Vault has no AWS credentials"),
        (
            AwsFault::OtherAccount,
            "vault write auth/<mount>/config/sts/<account-id>",
        ),
        (
            AwsFault::NotRunning,
            "EC2 reports this instance as not running",
        ),
    ] {
        env.vault.inject_aws_fault(fault, 1);
        refused_once(&env, &cfg, hint);
    }
    // A failure behind validateInstance binds no nonce: the same instance logs in afterwards.
    assert_eq!(env.run(&cfg).status, 0);

    // The role's bindings: another AMI, no such role, an iam role.
    let binding = "this instance does not match the Vault role";
    env.vault
        .add_ec2_role("aws", "other-ami", Some("ami-0ffffffffffffffff"), &["kv1/"]);
    env.vault.add_iam_role("aws", "iam-only", "", &["kv1/"]);
    for role in ["other-ami", "nope", "iam-only"] {
        let cfg = env.write_config(&fast(env.config().set("auth", "role", role), "20s"));
        refused_once(&env, &cfg, binding);
    }

    // Reauthentication disabled for this instance.
    let cfg = env.write_config(&fast(env.config(), "20s"));
    env.vault.disable_reauthentication("aws", INSTANCE);
    refused_once(
        &env,
        &cfg,
        "vault delete auth/<mount>/identity-accesslist/<instance-id>",
    );
}

#[test]
fn refusals_behind_an_iam_login_exit_77_at_once_with_their_hint() {
    let (env, creds) = iam_env();
    // The principal is not the role's.
    env.vault.add_iam_role(
        "aws",
        VAULT_ROLE,
        &format!("arn:aws:iam::{ACCOUNT}:role/someone-else"),
        &POLICIES,
    );
    let cfg = iam_cfg(&env, "20s");
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 77, "{}", out.log());
    assert_eq!(login_statuses(&env).len(), 1);
    assert!(
        out.stderr.contains("does not belong to the role")
            && out
                .stderr
                .contains("this instance does not match the Vault role"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_transient_login_failure_is_retried_with_the_normal_back_off() {
    // Not a 429: no Retry-After, and the cap grows. With max_delay 300 ms, 6 retries take at
    // most 0.2+0.3*5 = 1.7 s of sleep; with InvalidInstanceID.NotFound's 2 s pause they would
    // take 12 s.
    let env = Env::new();
    let cfg = env.write_config(&fast(env.config(), "20s"));
    env.vault.inject_aws_fault(AwsFault::Ec2Throttled, 6);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let logins: Vec<_> = env
        .vault
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.path == LOGIN)
        .collect();
    assert_eq!(logins.len(), 7);
    let span = logins[6].at - logins[0].at;
    // Below the 12 s of the wrong pause, even stretched for a slow runner.
    let bound = scaled(Duration::from_secs(6)).min(Duration::from_secs(10));
    assert!(span < bound, "{span:?}");
}
