//! Secrets delivered as systemd credentials (`[[secret.credential]]`), through the real
//! `/usr/bin/systemd-creds` of this machine: what is written decrypts (with systemd-creds) to
//! the secret; an unchanged credential is recognised by decrypting the one in place and is not
//! rewritten; credentials commit all or nothing with the files of the run; the plaintext never
//! appears in systemd-creds' argv or environment; `plaintext_at_rest = "forbid"` refuses clear
//! outputs on a persistent file system.
//!
//! Sealing with the host key needs root (`/var/lib/systemd/credential.secret`): those tests are
//! `root_*` and ignored by default (tests/run-all.sh runs them as root). The credential stores
//! live under each test's directory (`[outputs] credstore_parent`).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The API key secret as a sealed credential named `name` (and nothing else), the stores
/// under the test's `creds/`.
fn api_credential(env: &Env, name: &str, extra: &str) -> String {
    format!(
        "{}\n[outputs]\ncredstore_parent = {:?}\n\n[[secret]]\nname = \"api\"\n\
         path = \"secret/data/app/api\"\n\n  [[secret.credential]]\n  name = {name:?}\n  \
         fields = [\"api_key\"]\n{extra}",
        env.base_config(),
        env.path("creds").display().to_string(),
    )
}

fn sealed_path(env: &Env, name: &str) -> PathBuf {
    env.path("creds/credstore.encrypted").join(name)
}

/// `systemd-creds decrypt` of the credential file at `path`, as a service's start would.
fn decrypt(path: &Path, name: &str) -> String {
    let out = Command::new("/usr/bin/systemd-creds")
        .arg("decrypt")
        .arg(format!("--name={name}"))
        .arg(path)
        .arg("-")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "decrypt {}", path.display());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs root: systemd-creds seals with the host key"]
fn root_a_sealed_credential_decrypts_to_the_secret() {
    assert_root();
    let env = Env::new();
    let config = env.write_config(&api_credential(&env, "app-api.key", ""));
    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    let path = sealed_path(&env, "app-api.key");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o400);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let on_disk = fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&on_disk);
    assert!(
        !text.contains(&env.api_key),
        "the key is on disk in clear: {text}"
    );
    assert_eq!(decrypt(&path, "app-api.key"), env.api_key);
    let dir = fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(dir.mode() & 0o7777, 0o700);
}

/// A first run seals the API key as the credential `api.key`; then Vault's key becomes
/// `new_key`. The configuration, the credential's path and its bytes as first sealed.
fn sealed_then_rotated(env: &Env, new_key: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let config = env.write_config(&api_credential(env, "api.key", ""));
    assert_eq!(env.run(&config).status, 0);
    let path = sealed_path(env, "api.key");
    let before = fs::read(&path).unwrap();
    register_secret(new_key);
    env.vault.put_kv2(
        "secret",
        "app/api",
        serde_json::json!({ "api_key": new_key }),
    );
    (config, path, before)
}

/// The names in the store that holds the credential at `path`.
fn store_entries(path: &Path) -> Vec<String> {
    fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A hook that appends its argument to `hooks.log`.
fn hook(env: &Env) -> String {
    use std::os::unix::fs::PermissionsExt;
    let script = env.path("hook.sh");
    let log = env.path("hooks.log");
    fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", log.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    format!(
        "  on_change = [{:?}, \"reload\"]\n",
        script.display().to_string()
    )
}

/// How many times the hook ran since the last call.
fn hook_runs(env: &Env) -> usize {
    let log = env.path("hooks.log");
    let n = fs::read_to_string(&log).unwrap_or_default().lines().count();
    let _ = fs::remove_file(&log);
    n
}

/// The status file's entry for the credential `name`: its state.
fn status_of(env: &Env, name: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(env.path("status/status.json")).unwrap()).unwrap();
    let entry = status["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["credential"] == name)
        .unwrap_or_else(|| panic!("no credential {name} in {status}"));
    entry["state"].as_str().unwrap().to_string()
}

#[test]
#[ignore = "needs root: systemd-creds seals with the host key"]
fn root_an_unchanged_credential_is_kept_and_a_changed_one_replaced() {
    assert_root();
    let env = Env::new();
    let config = env.write_config(&api_credential(&env, "api.key", &hook(&env)));
    let path = sealed_path(&env, "api.key");
    assert_eq!(env.run(&config).status, 0);
    assert_eq!(
        (hook_runs(&env), status_of(&env, "api.key")),
        (1, "written".into())
    );
    let first = fs::read(&path).unwrap();

    // Every sealing differs byte-wise: the same bytes mean the file was left alone.
    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(
        fs::read(&path).unwrap(),
        first,
        "rewritten though unchanged"
    );
    assert_eq!(
        (hook_runs(&env), status_of(&env, "api.key")),
        (0, "unchanged".into())
    );

    // As long as the old one: only the comparison of the decrypted content tells them apart.
    let new_key: String = env.api_key.chars().rev().collect();
    assert_ne!(new_key, env.api_key);
    register_secret(&new_key);
    env.vault.put_kv2(
        "secret",
        "app/api",
        serde_json::json!({ "api_key": new_key }),
    );
    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_ne!(
        fs::read(&path).unwrap(),
        first,
        "not replaced though changed"
    );
    assert_eq!(decrypt(&path, "api.key"), new_key);
    assert_eq!(
        (hook_runs(&env), status_of(&env, "api.key")),
        (1, "written".into())
    );
}

#[test]
#[ignore = "needs root: systemd-creds seals with the host key"]
fn root_a_file_that_cannot_be_written_keeps_the_credential_as_it_was() {
    assert_root();
    let env = Env::new();
    let (_, path, before) = sealed_then_rotated(&env, "rotated-api-key-fedcba9876543210");
    // The same run now also writes a file below a regular file: it cannot be staged.
    fs::write(env.path("blocker"), "not a directory").unwrap();
    let text = format!(
        "{}\n  [[secret.file]]\n  path = {:?}\n  fields = [\"api_key\"]\n",
        api_credential(&env, "api.key", ""),
        env.path("blocker/api.key").display().to_string()
    );
    let out = env.run(&env.write_config(&text));
    assert_eq!(out.status, 73, "{}", out.log());
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the credential was replaced"
    );
    assert_eq!(
        store_entries(&path),
        ["api.key"],
        "something left beside it"
    );
}

#[test]
fn a_credential_name_systemd_would_refuse_is_a_configuration_error() {
    let env = Env::new();
    let long = "n".repeat(256);
    for bad in ["a/b", "a:b", "..", ".", "", "tab\there", "é", long.as_str()] {
        let config = env.write_config(&api_credential(&env, bad, ""));
        let out = env.run_args(&["check", "--config", config.to_str().unwrap()]);
        assert_eq!(out.status, 78, "{bad:?}: {}", out.log());
        let quoted = format!("credential {bad:?}");
        assert!(out.stderr.contains(&quoted), "{bad:?}: {}", out.stderr);
    }
    // Unique across the file, whichever secret writes it.
    let text = format!(
        "{}\n[[secret]]\nname = \"api2\"\npath = \"secret/data/app/api\"\n  \
         [[secret.credential]]\n  name = \"api.key\"\n  seal = \"none\"\n  fields = [\"api_key\"]\n",
        api_credential(&env, "api.key", "")
    );
    let out = env.run_args(&[
        "check",
        "--config",
        env.write_config(&text).to_str().unwrap(),
    ]);
    assert_eq!(out.status, 78, "{}", out.log());
    assert!(out
        .stderr
        .contains("another [[secret.credential]] has the same name"));
}

/// The configuration with `plaintext_at_rest = "forbid"`, the API key as a sealed
/// credential in the test's directory and as a file at `file`.
fn forbidding(env: &Env, file: &Path) -> PathBuf {
    let text = api_credential(env, "api.key", "")
        .replace("[outputs]\n", "[outputs]\nplaintext_at_rest = \"forbid\"\n");
    let text = format!(
        "{text}\n  [[secret.file]]\n  path = {:?}\n  fields = [\"api_key\"]\n",
        file.display().to_string()
    );
    env.write_config(&text)
}

#[test]
fn forbidding_plaintext_at_rest_refuses_a_file_on_a_persistent_file_system() {
    let env = Env::new();
    // The test's directory is on the disk (ext4 here); /dev/shm is a tmpfs, as /run is on a
    // real instance (this container's /run is not).
    let persistent = env.path("out/app/api.key");
    let on_tmpfs = PathBuf::from(format!(
        "/dev/shm/vaultboot-test-{}/api.key",
        std::process::id()
    ));
    assert_eq!(file_system(Path::new("/dev/shm")), "tmpfs");
    assert_ne!(file_system(env.dir.path()), "tmpfs");

    let config = forbidding(&env, &persistent);
    for cmd in ["check", "run"] {
        let out = env.run_args(&[cmd, "--config", config.to_str().unwrap()]);
        assert_eq!(out.status, 78, "{cmd}: {}", out.log());
        let log = out.log();
        assert!(
            log.contains(&format!("file {:?}", persistent.display().to_string())),
            "{log}"
        );
        assert!(
            log.contains(&env.path("out").display().to_string()),
            "{log}"
        );
        assert!(log.contains("plaintext_at_rest"), "{log}");
    }
    assert_eq!(env.vault.logins(), 0, "the run went on");

    // The sealed credential in the same (persistent) directory tree is allowed.
    let out = env.run_args(&[
        "check",
        "--config",
        forbidding(&env, &on_tmpfs).to_str().unwrap(),
    ]);
    assert_eq!(out.status, 0, "{}", out.log());
}

fn file_system(path: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An executable script at `env`'s `name` with `body`.
fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = env.path(name);
    fs::write(&path, body).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A copy of this machine's systemd-creds, for the stand-ins to exec (the real path is
/// covered by the stand-in).
fn real_systemd_creds(env: &Env) -> PathBuf {
    let real = env.path("systemd-creds.real");
    fs::copy("/usr/bin/systemd-creds", &real).unwrap();
    real
}

/// `unshare` arguments that run `vaultboot run --config CONFIG` with `stand_in` bind-mounted
/// over /usr/bin/systemd-creds in a mount namespace of the run's own. `unshare` and `sh` exec
/// in turn, so the process started is vaultboot itself.
fn with_stand_in(stand_in: &Path, config: &Path) -> Vec<String> {
    let mut argv = vec![
        "-m".to_string(),
        "sh".into(),
        "-c".into(),
        format!(
            "mount --bind '{}' /usr/bin/systemd-creds && exec \"$@\"",
            stand_in.display()
        ),
        "sh".into(),
    ];
    argv.extend(
        vaultboot_argv()
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    argv.extend(["run", "--config", config.to_str().unwrap()].map(String::from));
    argv
}

/// A stand-in for /usr/bin/systemd-creds that records its argv and environment from /proc
/// while it runs, then execs the real one: the plaintext must be in neither.
#[test]
#[ignore = "needs root: a mount namespace, and systemd-creds seals with the host key"]
fn root_the_plaintext_is_never_in_systemd_creds_argv_or_environment() {
    assert_root();
    let env = Env::new();
    let real = real_systemd_creds(&env);
    let seen = env.path("seen");
    let wrapper = script(
        &env,
        "systemd-creds.wrapper",
        &format!(
            "#!/bin/sh\n{{ echo ARGV; tr '\\0' '\\n' < /proc/$$/cmdline; echo ENV; \
             tr '\\0' '\\n' < /proc/$$/environ; }} >> '{}'\nexec '{}' \"$@\"\n",
            seen.display(),
            real.display()
        ),
    );
    let config = env.write_config(&api_credential(&env, "api.key", ""));
    let argv = with_stand_in(&wrapper, &config);
    // Twice: encrypt (first run), then decrypt to compare on a second run.
    for _ in 0..2 {
        let out = Command::new("unshare").args(&argv).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let seen = fs::read_to_string(&seen).expect("the stand-in never ran");
    assert!(
        seen.contains("encrypt") && seen.contains("decrypt"),
        "{seen}"
    );
    assert!(seen.contains("--name=api.key"), "{seen}");
    let leaks = scan_for_secrets(std::slice::from_ref(&env.api_key), &seen);
    assert!(
        leaks.is_empty(),
        "the key in argv or environment: {leaks:?}\n{seen}"
    );
    assert_eq!(
        decrypt(&sealed_path(&env, "api.key"), "api.key"),
        env.api_key
    );
}

/// A stop (SIGTERM, as `systemctl stop` or a shutdown sends) while systemd-creds seals the new
/// value: systemd-creds and what it started are killed at once, the run exits 75 with its
/// token revoked, and the credential in place stays whole, with the old value and nothing
/// staged beside it.
#[test]
#[ignore = "needs root: a mount namespace, and systemd-creds seals with the host key"]
fn root_a_stop_while_systemd_creds_runs_kills_it_and_keeps_the_old_credential() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};
    assert_root();
    let env = Env::new();
    let new_key = "rotated-api-key-0123456789abcdef";
    let (config, path, before) = sealed_then_rotated(&env, new_key);
    // The comparison's decrypt goes to the real one; the encrypt of the new value holds, with
    // a child of its own (its process group must go too), both pids in `held`.
    let real = real_systemd_creds(&env);
    let held = env.path("held");
    let stand_in = script(
        &env,
        "systemd-creds.holding",
        &format!(
            "#!/bin/sh\ncase \"$1\" in encrypt) ;; *) exec '{real}' \"$@\" ;; esac\n\
             sleep 600 &\necho \"$$ $!\" > '{held}.tmp' && mv '{held}.tmp' '{held}'\nwait\n",
            real = real.display(),
            held = held.display()
        ),
    );
    let log = env.path("stopped.log");
    let file = fs::File::create(&log).unwrap();
    let mut child = Command::new("unshare")
        .args(with_stand_in(&stand_in, &config))
        .env("VAULTBOOT_SYSLOG_SOCKET", env.path("no-syslog-here.sock"))
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let waiting = Instant::now();
    while !held.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "vaultboot ended before systemd-creds was asked to seal: {}",
            fs::read_to_string(&log).unwrap()
        );
        assert!(waiting.elapsed() < Duration::from_secs(120), "never sealed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<i32> = fs::read_to_string(&held)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    // Bounded so that a hang fails instead of blocking: the stand-in sleeps 600 s.
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stopping.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("vaultboot still running 120 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(75), "{text}");
    assert!(text.contains("no file was changed (exit 75)"), "{text}");
    // Killed on the stop, not by the 30 s time-out of one systemd-creds call.
    assert!(stopping.elapsed() < Duration::from_secs(25), "{text}");
    for pid in pids {
        assert!(
            gone(pid),
            "process {pid} of systemd-creds' group survived the stop"
        );
    }
    assert_eq!(fs::read(&path).unwrap(), before, "the credential changed");
    assert_eq!(decrypt(&path, "api.key"), env.api_key);
    assert_eq!(
        store_entries(&path),
        ["api.key"],
        "something left beside it"
    );
    assert_eq!(env.vault.live_tokens(), 0, "the token was not revoked");
    assert!(scan_for_secrets(&[new_key.to_string()], &text).is_empty());
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_plain_credential_is_written_like_a_file_in_a_private_store_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let config = env.write_config(&api_credential(&env, "api.key", "  seal = \"none\"\n"));
    let store = env.path("creds/credstore");
    fs::create_dir_all(&store).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run(&config);
    assert_eq!(out.status, 73, "{}", out.log());
    assert!(
        out.log().contains("credential \"api.key\""),
        "{}",
        out.log()
    );
    assert!(out.log().contains("not 0700"), "{}", out.log());
    assert_eq!(
        fs::read_dir(&store).unwrap().count(),
        0,
        "something was written"
    );

    fs::set_permissions(&store, fs::Permissions::from_mode(0o700)).unwrap();
    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    let path = store.join("api.key");
    assert_eq!(fs::read_to_string(&path).unwrap(), env.api_key);
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o400);
    assert_eq!(status_of(&env, "api.key"), "written");
    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(status_of(&env, "api.key"), "unchanged");
}

/// A PKI certificate in a file with its private key as a sealed credential: the key is
/// decrypted to decide, so a fresh certificate is kept (no issue, nothing rewritten, no
/// on_change), as with a key file; a key sealed for another certificate gets a new one.
#[test]
#[ignore = "needs root: systemd-creds seals with the host key"]
fn root_a_fresh_certificate_whose_key_is_sealed_is_kept() {
    assert_root();
    let env = Env::new();
    let cert = env.path("out/tls/server.crt");
    fs::create_dir_all(cert.parent().unwrap()).unwrap();
    let text = format!(
        "{}\n[outputs]\ncredstore_parent = {:?}\n\n[[secret]]\nname = \"tls\"\n\
         path = \"pki_int/issue/web\"\n\
         data = {{ common_name = \"{{{{ local-hostname }}}}\", ttl = \"72h\" }}\n\n  \
         [[secret.file]]\n  path = {:?}\n  fields = [\"certificate\"]\n  mode = \"0644\"\n\n  \
         [[secret.credential]]\n  name = \"web-tls.key\"\n  fields = [\"private_key\"]\n{}",
        env.base_config(),
        env.path("creds").display().to_string(),
        cert.display().to_string(),
        hook(&env),
    );
    let config = env.write_config(&text);
    let issues = || {
        env.vault
            .control()
            .requests()
            .iter()
            .filter(|r| r.path_only() == "/v1/pki_int/issue/web")
            .count()
    };
    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!((issues(), hook_runs(&env)), (1, 1), "{}", out.log());
    let key = sealed_path(&env, "web-tls.key");
    let sealed = fs::read(&key).unwrap();

    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(
        issues(),
        1,
        "a fresh certificate was issued again:\n{}",
        out.log()
    );
    assert!(
        out.log().contains("skipped: certificate valid until"),
        "{}",
        out.log()
    );
    assert_eq!(
        fs::read(&key).unwrap(),
        sealed,
        "the credential was rewritten"
    );
    assert_eq!(hook_runs(&env), 0, "on_change ran for a kept certificate");

    // Another certificate's key, sealed under the same name: not this certificate's pair.
    let (_, other) = vaultboot_sim::TestCa::new("another CA").issue_server_cert(&["x"], &[]);
    let mut seal = Command::new("/usr/bin/systemd-creds")
        .args(["encrypt", "--name=web-tls.key", "--with-key=host", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    seal.stdin
        .take()
        .unwrap()
        .write_all(other.as_bytes())
        .unwrap();
    let resealed = seal.wait_with_output().unwrap();
    assert!(resealed.status.success());
    fs::write(&key, &resealed.stdout).unwrap();
    let out = env.run(&config);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(
        issues(),
        2,
        "a key not the certificate's kept:\n{}",
        out.log()
    );
    assert!(
        out.log().contains("is not the certificate's"),
        "{}",
        out.log()
    );
}
