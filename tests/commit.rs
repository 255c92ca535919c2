//! The commit and the on_change commands it owes.
//!
//! * When the file system refuses part-way, the error and the summary say which outputs were
//!   replaced and which were not (exit 73). The fault is a real one: an output made immutable
//!   (`chattr +i`, root on a file system that has the attribute), so staging succeeds and its
//!   rename fails with EPERM.
//! * The owed on_change commands are recorded in the state directory before the first rename
//!   and run by the next run that commits, also when every file is already current; what runs
//!   is always the configuration's argv for the recorded output. An unusable record is set
//!   aside and every configured command runs. (Kills between renames and before the commands:
//!   tests/crash.rs.)

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `chattr +i` on a file, undone on drop (a test that fails must not leave an immutable file
/// that its temporary directory cannot remove).
struct Immutable(PathBuf);

impl Immutable {
    /// Panics where the attribute cannot be set (not root, no chattr, a file system without
    /// it): the test could prove nothing there.
    fn set(path: &Path) -> Immutable {
        assert_root();
        match Command::new("chattr").arg("+i").arg(path).output() {
            Ok(out) if out.status.success() => Immutable(path.to_path_buf()),
            Ok(out) => panic!(
                "chattr +i refused on {} (a file system without the immutable attribute? \
                 set TMPDIR to one that has it): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("no chattr (e2fsprogs): {e}"),
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

const RECORD: &str = "pending_on_change.json";

/// A hook script that appends its first argument to `hooks.log`; `fail` makes it exit 1.
fn hook(env: &Env) -> PathBuf {
    let script = env.path("hook.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\n[ \"$2\" != fail ]\n",
            env.path("hooks.log").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    script
}

/// Lines the hooks wrote since the last call.
fn hooks_ran(env: &Env) -> Vec<String> {
    let log = env.path("hooks.log");
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    text.lines().map(str::to_string).collect()
}

/// The full configuration with `on_change = [hook, <label>, extra...]` on the env file and on
/// the JSON file.
fn config_with_hooks(env: &Env, env_hook: &[&str], json_hook: &[&str]) -> PathBuf {
    let script = hook(env);
    let argv = |args: &[&str]| {
        let mut all = vec![script.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };
    // These tests need outputs that change on each run ahead of the KV files in the commit
    // order: the certificate and its key.
    let mut config = env.config().renew_every_run();
    if !env_hook.is_empty() {
        config = config.file("run/ad-join.env", "on_change", argv(env_hook).as_slice());
    }
    if !json_hook.is_empty() {
        config = config.file(".json", "on_change", argv(json_hook).as_slice());
    }
    env.write(&config)
}

fn record(env: &Env) -> PathBuf {
    env.state_dir().join(RECORD)
}

/// The outputs the record names (it must be the format vaultboot writes).
fn recorded(env: &Env) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(record(env)).expect("no record")).unwrap();
    assert_eq!(v["version"], 1);
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn write_record(env: &Env, outputs: &[PathBuf]) {
    let text = serde_json::json!({"version": 1, "created": 1, "outputs": outputs}).to_string();
    fs::write(record(env), text).unwrap();
    fs::set_permissions(record(env), fs::Permissions::from_mode(0o600)).unwrap();
}

fn env_file(env: &Env) -> PathBuf {
    env.path("out/run/ad-join.env")
}

fn json_file(env: &Env) -> PathBuf {
    env.path(&format!("out/app/{INSTANCE}.json"))
}

fn new_kv_values(env: &Env, n: u32) {
    env.vault.put_kv2(
        "secret",
        "ad/join",
        serde_json::json!({"username": format!("svc-{n}"), "password": format!("pw-{n}-{AD_PASSWORD}")}),
    );
    env.vault.put_kv2(
        "secret",
        "app/api",
        serde_json::json!({"api_key": format!("key-{n}-{}", env.api_key)}),
    );
}

/// Outputs in configuration order: crt, key, env, password, json. The password file is made
/// immutable: crt, key and env are replaced, password and json are not.
#[test]
#[ignore = "needs root: chattr +i"]
fn root_a_rename_refused_part_way_says_what_was_replaced_and_exits_73() {
    let env = Env::new();
    let cfg = config_with_hooks(&env, &["env"], &["json"]);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(hooks_ran(&env), ["env", "json"]);
    assert!(!record(&env).exists(), "cleared after the commands");
    let out_dir = env.path("out");
    let crt = out_dir.join("tls/server.crt");
    let key = out_dir.join("tls/server.key");
    let env_file = out_dir.join("run/ad-join.env");
    let password = out_dir.join("run/ad-join.password");
    let json = out_dir.join(format!("app/{INSTANCE}.json"));
    let old_password = fs::read(&password).unwrap();
    let old_json = fs::read(&json).unwrap();
    let old_env = fs::read(&env_file).unwrap();

    let immutable = Immutable::set(&password);
    new_kv_values(&env, 2);
    let out = env.run(&cfg);
    drop(immutable);
    assert_eq!(out.status, 73, "{}", out.log());

    let replaced = format!(
        "{}, {}, {}",
        crt.display(),
        key.display(),
        env_file.display()
    );
    let not_replaced = format!("{}, {}", password.display(), json.display());
    let error = out
        .stderr
        .lines()
        .find(|l| l.contains("cannot rename into place"))
        .unwrap_or_else(|| panic!("no error line: {}", out.stderr));
    assert!(
        error.contains(&format!("{}: cannot rename into place", password.display()))
            && error.contains("Operation not permitted")
            && error.contains(&format!("already replaced: {replaced};"))
            && error.contains(&format!("not replaced (as they were): {not_replaced}")),
        "{error}"
    );
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.contains(&format!(
            "3 file(s) replaced: {replaced}; 2 not replaced: {not_replaced} (exit 73)"
        )),
        "{last}"
    );
    assert!(
        !out.stderr.contains("no file was changed"),
        "{}",
        out.stderr
    );

    // What it said is what is on disk: replaced ones new, the others whole and old.
    assert_ne!(fs::read(&env_file).unwrap(), old_env);
    assert!(fs::read_to_string(&env_file).unwrap().contains("svc-2"));
    assert_eq!(fs::read(&password).unwrap(), old_password);
    assert_eq!(fs::read(&json).unwrap(), old_json);
    let staged: Vec<_> = env
        .out_files()
        .into_iter()
        .filter(|f| f.contains(".vaultboot."))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    assert_eq!(env.vault.live_tokens(), 0, "the token was revoked");

    // The files are not a complete set: no command ran, both stay owed on disk.
    assert!(hooks_ran(&env).is_empty());
    assert!(
        out.stderr.contains("on_change commands not run"),
        "{}",
        out.stderr
    );
    let mut owed = recorded(&env);
    owed.sort();
    let mut want = vec![env_file.display().to_string(), json.display().to_string()];
    want.sort();
    assert_eq!(owed, want);
    let text = fs::read_to_string(record(&env)).unwrap();
    assert!(env.find_leaks(&text).is_empty(), "{text}");

    // Once the file system lets it, the next run completes the set, and runs the env file's
    // command too although that file is now unchanged.
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(fs::read_to_string(&password).unwrap().starts_with("pw-2-"));
    assert!(fs::read_to_string(&json).unwrap().contains("key-2-"));
    assert!(
        out.stderr.contains(&format!(
            "unchanged {} (its on_change is owed by an earlier run)",
            env_file.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(hooks_ran(&env), ["env", "json"]);
    assert!(!record(&env).exists());
}

/// A record left by a run killed after its renames: the next run finds every file current and
/// still runs the recorded outputs' commands, once; then nothing is owed.
#[test]
fn owed_commands_run_when_every_file_is_current_then_are_cleared() {
    let env = Env::new();
    let cfg = config_with_hooks(&env, &["env"], &["json"]);
    assert_eq!(env.run(&cfg).status, 0);
    hooks_ran(&env);
    let before = env.snapshot();
    write_record(&env, &[env_file(&env)]);

    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(
        hooks_ran(&env),
        ["env"],
        "only the recorded output's command"
    );
    // The certificate and key are issued anew on every run; the KV files are current.
    assert!(
        out.stderr.contains("2 file(s) written, 3 unchanged"),
        "{}",
        out.stderr
    );
    assert!(!record(&env).exists());
    // The KV files were not touched (the certificate is issued anew on every run).
    let after = env.snapshot();
    for f in [env_file(&env), json_file(&env)] {
        assert_eq!(before.get(&f), after.get(&f), "{}", f.display());
    }

    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(hooks_ran(&env).is_empty(), "owed once, run once");
}

/// The record names outputs, never commands: after a configuration change the output's current
/// argv runs, and an output that lost its on_change (or is gone) runs nothing, with a warning.
#[test]
fn what_runs_is_the_configurations_argv_for_the_recorded_output() {
    let env = Env::new();
    let cfg = config_with_hooks(&env, &["env-old"], &[]);
    assert_eq!(env.run(&cfg).status, 0);
    hooks_ran(&env);

    let gone = env.path("out/no/longer/configured");
    write_record(&env, &[env_file(&env), json_file(&env), gone.clone()]);
    let cfg = config_with_hooks(&env, &["env-new"], &[]);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(hooks_ran(&env), ["env-new"]);
    for p in [json_file(&env), gone] {
        assert!(
            out.stderr.contains(&format!(
                "on_change owed by an earlier run for {} is not run: the configuration no \
                 longer gives that output an on_change command",
                p.display()
            )),
            "{}",
            out.stderr
        );
    }
    assert!(!record(&env).exists());
}

/// A record that cannot be used (damaged, or writable by someone else) is kept aside and never
/// read; since what was owed is unknown, every configured command runs once.
#[test]
fn an_unusable_record_is_set_aside_and_every_configured_command_runs() {
    let damaged: &[u8] = b"{\"version\": 1, \"outputs\": [\"/etc/x";
    for (kind, content, mode) in [
        ("unreadable", damaged, 0o600),
        ("unreadable", &b""[..], 0o600),
        (
            "untrusted",
            &br#"{"version":1,"created":1,"outputs":[]}"#[..],
            0o666,
        ),
    ] {
        let env = Env::new();
        let cfg = config_with_hooks(&env, &["env"], &["json"]);
        assert_eq!(env.run(&cfg).status, 0);
        hooks_ran(&env);
        fs::write(record(&env), content).unwrap();
        fs::set_permissions(record(&env), fs::Permissions::from_mode(mode)).unwrap();

        let out = env.run(&cfg);
        assert_eq!(out.status, 0, "{kind}: {}", out.log());
        assert!(
            out.stderr
                .contains(&format!("{} was {kind}", record(&env).display()))
                && out
                    .stderr
                    .contains("every configured on_change command runs"),
            "{kind}: {}",
            out.stderr
        );
        assert_eq!(hooks_ran(&env), ["env", "json"], "{kind}");
        assert!(!record(&env).exists(), "{kind}");
        let aside: Vec<_> = fs::read_dir(env.state_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{RECORD}.{kind}-"))
            })
            .map(|e| e.path())
            .collect();
        assert_eq!(aside.len(), 1, "{kind}: {aside:?}");
        assert_eq!(
            fs::read(&aside[0]).unwrap(),
            content,
            "{kind}: kept as it was"
        );
        assert_eq!(fs::metadata(&aside[0]).unwrap().mode() & 0o777, 0o600);

        // Handled once: the next run owes nothing.
        assert_eq!(env.run(&cfg).status, 0);
        assert!(hooks_ran(&env).is_empty(), "{kind}");
    }
}

/// A record owned by another user (mode 0600, so only its owner check can refuse it) that
/// says nothing is owed: never read; kept aside as root's, and every configured command runs.
#[test]
#[ignore = "needs root: a record of another owner"]
fn root_a_record_of_another_user_is_set_aside_and_every_configured_command_runs() {
    assert_root();
    let env = Env::new();
    let cfg = config_with_hooks(&env, &["env"], &["json"]);
    assert_eq!(env.run(&cfg).status, 0);
    hooks_ran(&env);
    fs::write(record(&env), br#"{"version":1,"created":1,"outputs":[]}"#).unwrap();
    fs::set_permissions(record(&env), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(record(&env), Some(65534), Some(65534)).unwrap();

    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "{} was untrusted (not trusted: owned by uid 65534",
            record(&env).display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(hooks_ran(&env), ["env", "json"]);
    let aside: Vec<_> = fs::read_dir(env.state_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{RECORD}.untrusted-"))
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let meta = fs::metadata(&aside[0]).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600), "made root's");
}

/// A failed owed command is a warning (exit 0) and is not owed again: the record promises
/// that the command runs, not that it succeeds.
#[test]
fn a_failed_owed_command_is_a_warning_and_not_retried() {
    let env = Env::new();
    let cfg = config_with_hooks(&env, &["env", "fail"], &[]);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.stderr.contains("1 on_change command(s) failed"),
        "{}",
        out.stderr
    );
    assert_eq!(hooks_ran(&env), ["env"]);
    assert!(!record(&env).exists());
    assert_eq!(env.run(&cfg).status, 0);
    assert!(hooks_ran(&env).is_empty());
}
