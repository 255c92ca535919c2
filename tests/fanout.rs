//! The bounded fan-out (issue #19 point 10), against the real binary and the Vault simulator:
//! a configuration with more secrets than the cap is read at most 8 at a time, and a run whose
//! threads cannot be started fails with 69 and still revokes its token.

mod common;
#[path = "common/iam.rs"]
mod iam_common;

use common::*;
use iam_common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// vaultboot's cap on secret reads at once (README, "How it works").
const MAX_FETCH_THREADS: u64 = 8;
const SECRETS: usize = 40;

/// `n` KV secrets under secret/data/many/, one raw file each; their values.
fn many_secrets(env: &Env, n: usize) -> (String, Vec<String>) {
    let mut config = String::new();
    let mut values = Vec::new();
    for i in 0..n {
        let value = format!("many-value-{i:02}-{}", std::process::id());
        env.vault.put_kv2(
            "secret",
            &format!("many/{i:02}"),
            serde_json::json!({"v": value}),
        );
        config.push_str(&format!(
            "\n[[secret]]\nname = \"many{i:02}\"\npath = \"secret/data/many/{i:02}\"\n\n  \
             [[secret.file]]\n  path = \"{}/many/{i:02}\"\n  fields = [\"v\"]\n",
            env.path("out").display()
        ));
        values.push(value);
    }
    (config, values)
}

#[test]
fn more_secrets_than_the_cap_are_read_at_most_eight_at_a_time() {
    let env = Env::with_policies(&["secret/data/many/"]);
    let (secrets, values) = many_secrets(&env, SECRETS);
    // Every read takes a while, so that the reads the agent allows do overlap.
    env.vault
        .control()
        .set_latency(Duration::from_millis(100), Duration::ZERO);
    let cfg = env.write_config(&format!("{}{secrets}", env.base_config()));

    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    for (i, value) in values.iter().enumerate() {
        let file = env.path(&format!("out/many/{i:02}"));
        assert_eq!(fs::read_to_string(&file).unwrap(), *value, "{file:?}");
    }
    let reads = env
        .vault
        .control()
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/secret/data/many/"))
        .count();
    assert_eq!(reads, SECRETS);
    // The login and the revoke are alone on the wire: the most at once were secret reads (or
    // the warm-up's connections, at most 8 with the login's).
    let most = env.vault.control().most_in_flight();
    assert!(
        most <= MAX_FETCH_THREADS,
        "{most} requests at once\n{}",
        out.log()
    );
    assert!(most >= 2, "the reads did not overlap at all\n{}", out.log());
    assert_eq!(env.vault.live_tokens(), 0);
}

/// A user id nobody else on this machine has: RLIMIT_NPROC counts every task of the user.
fn lonely_uid() -> u32 {
    2_000_000_000 + std::process::id()
}

#[test]
#[ignore = "needs root: runs the agent as another user at its thread limit"]
fn root_a_thread_that_cannot_be_started_is_an_error_and_the_token_is_still_revoked() {
    assert_root();
    if std::env::var_os("VAULTBOOT_TEST_RUNNER").is_some_and(|r| !r.is_empty()) {
        // qemu-user starts threads of its own, which the limit would refuse.
        eprintln!("skipped under VAULTBOOT_TEST_RUNNER");
        return;
    }
    let env = Env::new();
    let creds = AwsCreds::iam_user();
    setup_vault(&env, &creds);
    let uid = lonely_uid();
    // Config and CA root's and readable; the state directory the agent's user's.
    let home = tempfile::Builder::new()
        .prefix("vaultboot-nproc")
        .tempdir_in("/tmp")
        .unwrap();
    let h = home.path();
    fs::set_permissions(h, fs::Permissions::from_mode(0o755)).unwrap();
    let ca = h.join("ca.pem");
    fs::write(&ca, env.vault.ca_pem()).unwrap();
    fs::create_dir(h.join("state")).unwrap();
    std::os::unix::fs::chown(h.join("state"), Some(uid), Some(uid)).unwrap();
    fs::set_permissions(h.join("state"), fs::Permissions::from_mode(0o700)).unwrap();
    let config = secrets_without_templates(&env)
        .set(
            "imds",
            "endpoint",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .set("vault", "ca_cert", &ca)
        .set("state", "dir", &h.join("state"));
    let cfg = h.join("config.toml");
    fs::write(&cfg, iam_config(config, Some(SERVER_ID)).text()).unwrap();
    for f in [&ca, &cfg] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }

    let mut cmd = vaultboot_command();
    cmd.args(["run", "--config", cfg.to_str().unwrap()])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("VAULTBOOT_SYSLOG_SOCKET", h.join("none.sock"))
        .envs(creds.as_env())
        .current_dir(h)
        .uid(uid)
        .gid(uid);
    // SAFETY: setrlimit is async-signal-safe. The agent's user then has its one task (the
    // agent) and may start no other: every thread it tries to start is refused (EAGAIN).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, 1, 1)
                .map_err(std::io::Error::from)
        });
    }
    let out = cmd.output().unwrap();
    let outcome = Outcome {
        status: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        syslog: Vec::new(),
        elapsed: Duration::ZERO,
    };
    env.assert_no_secrets(&outcome);
    assert_no_aws_secrets(&env, &outcome, &[&creds]);
    let log = outcome.log();
    assert_eq!(outcome.status, 69, "{log}");
    assert!(log.contains("logged in"), "{log}");
    assert!(
        log.contains("cannot start the 2 threads for the secret reads: "),
        "{log}"
    );
    assert!(log.contains("token revoked"), "{log}");
    assert_eq!(env.vault.revoked_tokens(), 1, "{log}");
    assert_eq!(env.vault.live_tokens(), 0, "{log}");
    assert!(!env.path("out").exists(), "{log}");
}
