//! Hostile local state: the nonce file and state directory in every bad shape, and output
//! paths that someone else could redirect. Each case has one defined outcome, documented in
//! docs/hardening.md. "Another user" is uid 65534: the tests that chown to it need root, are
//! named `root_*` and ignored unless asked for (`-- --ignored root_`, as tests/run-all.sh does).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const OTHER: u32 = 65534;

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

fn nonce_file(env: &Env) -> PathBuf {
    env.state_dir().join("nonce.json")
}

fn stored_nonce(env: &Env) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(nonce_file(env)).unwrap()).unwrap();
    v["nonce"].as_str().unwrap().to_string()
}

/// Every nonce that reached Vault in a login.
fn sent_nonces(env: &Env) -> Arc<Mutex<Vec<String>>> {
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = sent.clone();
    env.vault.set_login_hook(Box::new(move |body| {
        if let Some(n) = body["nonce"].as_str() {
            s.lock().unwrap().push(n.to_string());
        }
    }));
    sent
}

/// Files in the state directory other than nonce.json.
fn set_aside(env: &Env, kind: &str) -> Vec<PathBuf> {
    fs::read_dir(env.state_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("nonce.json.{kind}-"))
        })
        .collect()
}

fn good_run(env: &Env) -> PathBuf {
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    cfg
}

// ------------------------------------------------------------------------------------------
// nonce.json

#[test]
fn a_nonce_file_that_is_not_json_or_empty_is_set_aside_and_a_new_nonce_tried() {
    for (what, content) in [
        ("not JSON", &b"{\"version\": 1, \"nonce\": \"abc"[..]),
        ("empty", b""),
        ("binary", b"\x00\xff\x00\xfe"),
        (
            "an unknown shape",
            br#"{"version":1,"instance_id":"i-0123456789abcdef0","nonce":"short","created":1}"#,
        ),
    ] {
        // First boot (Vault holds no nonce yet): the run goes on with a new nonce.
        let env = Env::new();
        fs::create_dir_all(env.state_dir()).unwrap();
        set_mode(&env.state_dir(), 0o700);
        fs::write(nonce_file(&env), content).unwrap();
        set_mode(&nonce_file(&env), 0o600);
        let cfg = env.write_config(&env.full_config());
        let out = env.run(&cfg);
        assert_eq!(out.status, 0, "{what}: {}", out.log());
        assert!(
            out.stderr.contains("was unreadable"),
            "{what}: {}",
            out.stderr
        );
        let aside = set_aside(&env, "unreadable");
        assert_eq!(aside.len(), 1, "{what}");
        assert_eq!(
            fs::read(&aside[0]).unwrap(),
            content,
            "{what}: kept as it was"
        );
        assert_eq!(mode(&aside[0]), 0o600);
        assert_eq!(mode(&nonce_file(&env)), 0o600);
        assert_eq!(
            env.vault.client_nonce("aws", INSTANCE),
            Some(stored_nonce(&env))
        );
    }
}

#[test]
fn a_damaged_nonce_file_after_vault_bound_the_nonce_is_refused_with_the_operator_hint() {
    let env = Env::new();
    let cfg = good_run(&env);
    let bound = stored_nonce(&env);
    let before = snapshot(&env.path("out"));
    fs::write(nonce_file(&env), "").unwrap();
    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "vault delete auth/aws/identity-accesslist/{INSTANCE}"
        )),
        "{}",
        out.stderr
    );
    assert_same_tree(&before, &snapshot(&env.path("out")), "outputs");
    // The new nonce stays (never silently replaced again), and Vault still holds the old one.
    let new = stored_nonce(&env);
    assert_ne!(new, bound);
    assert_eq!(env.vault.client_nonce("aws", INSTANCE), Some(bound));
    assert_eq!(env.run(&cfg).status, 77);
    assert_eq!(stored_nonce(&env), new);
}

#[test]
fn another_instances_nonce_is_never_sent() {
    let env = Env::new();
    let foreign = "F".repeat(43);
    register_secret(&foreign);
    fs::create_dir_all(env.state_dir()).unwrap();
    set_mode(&env.state_dir(), 0o700);
    fs::write(
        nonce_file(&env),
        serde_json::json!({"version": 1, "instance_id": "i-0bbbbbbbbbbbbbbbb", "nonce": foreign, "created": 1})
            .to_string(),
    )
    .unwrap();
    set_mode(&nonce_file(&env), 0o600);
    let sent = sent_nonces(&env);
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(out
        .stderr
        .contains("belonged to instance i-0bbbbbbbbbbbbbbbb"));
    assert!(!sent.lock().unwrap().contains(&foreign));
    assert_eq!(*sent.lock().unwrap(), vec![stored_nonce(&env)]);
}

#[test]
fn a_world_readable_nonce_file_or_state_dir_is_repaired_and_said() {
    let env = Env::new();
    let cfg = good_run(&env);
    let nonce = stored_nonce(&env);
    set_mode(&nonce_file(&env), 0o644);
    set_mode(&env.state_dir(), 0o755);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.stderr
            .contains("was mode 0644, readable by others; set to 0600")
            && out.stderr.contains("rotate the nonce"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("was mode 0755; set to 0700"),
        "{}",
        out.stderr
    );
    assert_eq!(mode(&nonce_file(&env)), 0o600);
    assert_eq!(mode(&env.state_dir()), 0o700);
    assert_eq!(stored_nonce(&env), nonce, "the nonce itself is kept");
    // Repaired once: the next run says nothing.
    let out = env.run(&cfg);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}

#[test]
#[ignore = "needs root: files of another owner"]
fn root_a_nonce_file_someone_else_could_have_written_is_never_used() {
    assert_root();
    for (what, setup) in [
        ("owned by another user", (OTHER, 0o600)),
        ("writable by others", (0, 0o666)),
        ("writable by the group", (0, 0o620)),
    ] {
        // A nonce an attacker chose, planted before the first boot: never sent.
        let env = Env::new();
        let planted = format!("{}x", "P".repeat(42));
        register_secret(&planted);
        fs::create_dir_all(env.state_dir()).unwrap();
        set_mode(&env.state_dir(), 0o700);
        fs::write(
            nonce_file(&env),
            serde_json::json!({"version": 1, "instance_id": INSTANCE, "nonce": planted, "created": 1})
                .to_string(),
        )
        .unwrap();
        chown(&nonce_file(&env), setup.0);
        set_mode(&nonce_file(&env), setup.1);
        let sent = sent_nonces(&env);
        let cfg = env.write_config(&env.full_config());
        let out = env.run(&cfg);
        assert_eq!(out.status, 0, "{what}: {}", out.log());
        assert!(out.stderr.contains("not trusted"), "{what}: {}", out.stderr);
        assert!(
            !sent.lock().unwrap().contains(&planted),
            "{what}: planted nonce sent"
        );
        let aside = set_aside(&env, "untrusted");
        assert_eq!(aside.len(), 1, "{what}");
        // Kept as evidence, but made private.
        let m = fs::metadata(&aside[0]).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "{what}");
        assert_eq!(mode(&nonce_file(&env)), 0o600);
    }
    // On an instance whose nonce is bound: refused with the operator's hint (a nonce that may
    // be known to someone else must be rotated by an operator anyway).
    let env = Env::new();
    let cfg = good_run(&env);
    chown(&nonce_file(&env), OTHER);
    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(out.stderr.contains("identity-accesslist"), "{}", out.stderr);
}

#[test]
fn a_nonce_path_that_is_a_symlink_directory_or_fifo_is_set_aside() {
    for what in ["symlink", "directory", "fifo"] {
        let env = Env::new();
        fs::create_dir_all(env.state_dir()).unwrap();
        set_mode(&env.state_dir(), 0o700);
        // A symlink to a valid-looking nonce file elsewhere: never followed, never read.
        let elsewhere = env.path("elsewhere.json");
        let lure = "L".repeat(43);
        register_secret(&lure);
        fs::write(
            &elsewhere,
            serde_json::json!({"version": 1, "instance_id": INSTANCE, "nonce": lure, "created": 1})
                .to_string(),
        )
        .unwrap();
        match what {
            "symlink" => std::os::unix::fs::symlink(&elsewhere, nonce_file(&env)).unwrap(),
            "directory" => fs::create_dir(nonce_file(&env)).unwrap(),
            _ => nix::unistd::mkfifo(&nonce_file(&env), nix::sys::stat::Mode::S_IRWXU).unwrap(),
        }
        let sent = sent_nonces(&env);
        let cfg = env.write_config(&env.full_config());
        let out = env.run(&cfg);
        assert_eq!(out.status, 0, "{what}: {}", out.log());
        assert!(out.elapsed < Duration::from_secs(10), "{what}: hung");
        assert!(
            out.stderr.contains("was unreadable"),
            "{what}: {}",
            out.stderr
        );
        assert!(!sent.lock().unwrap().contains(&lure), "{what}");
        assert!(fs::symlink_metadata(nonce_file(&env)).unwrap().is_file());
        assert_eq!(set_aside(&env, "unreadable").len(), 1, "{what}");
        assert_eq!(
            fs::read_to_string(&elsewhere).unwrap().len(),
            serde_json::json!({"version": 1, "instance_id": INSTANCE, "nonce": lure, "created": 1})
                .to_string()
                .len(),
            "{what}: the symlink's target was written"
        );
    }
}

#[test]
fn a_staged_nonce_left_by_a_killed_run_is_removed() {
    let env = Env::new();
    let cfg = good_run(&env);
    let stale = env.state_dir().join(".nonce.json.vaultboot.12345");
    fs::write(&stale, "{\"half\": ").unwrap();
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(!stale.exists());
}

// ------------------------------------------------------------------------------------------
// The state directory

#[test]
#[ignore = "needs root: files of another owner"]
fn root_a_state_dir_owned_by_another_user_is_refused_before_login() {
    assert_root();
    let env = Env::new();
    let cfg = good_run(&env);
    chown(&env.state_dir(), OTHER);
    let before_chowned = env.snapshot();
    let out = env.run(&cfg);
    assert_eq!(out.status, 73, "{}", out.log());
    assert!(
        out.stderr.contains("is owned by uid 65534, not by us"),
        "{}",
        out.stderr
    );
    assert_eq!(env.vault.logins(), 1, "no login after the refusal");
    assert_same_tree(&before_chowned, &env.snapshot(), "refused run");
}

#[test]
fn a_state_dir_that_is_a_symlink_or_a_file_or_under_an_open_dir_is_refused() {
    // A symlink (even root's) to a directory: refused, nothing written through it.
    let env = Env::new();
    let real = env.path("real-state");
    fs::create_dir(&real).unwrap();
    set_mode(&real, 0o700);
    std::os::unix::fs::symlink(&real, env.state_dir()).unwrap();
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 73, "{}", out.log());
    assert!(
        out.stderr.contains("a symlink is refused"),
        "{}",
        out.stderr
    );
    assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
    assert_eq!(env.vault.logins(), 0);
    assert!(env.out_files().is_empty());

    // A file.
    let env = Env::new();
    fs::write(env.state_dir(), "x").unwrap();
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 73, "{}", out.log());
    assert_eq!(env.vault.logins(), 0);

    // Inside a directory anyone may write to (not sticky): refused, nothing created there.
    let env = Env::new();
    let open = env.path("open");
    fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let cfg = env.write(&env.config().set("state", "dir", &open.join("state")));
    let out = env.run(&cfg);
    assert_eq!(out.status, 73, "{}", out.log());
    assert!(out.stderr.contains("writable by others"), "{}", out.stderr);
    assert!(
        !open.join("state").exists(),
        "the state dir was created there"
    );
    assert_eq!(env.vault.logins(), 0);
}

// ------------------------------------------------------------------------------------------
// Output paths

#[test]
fn an_output_whose_parent_is_a_root_symlink_to_a_private_dir_is_written() {
    let env = Env::new();
    let real = env.path("real-tls");
    fs::create_dir(&real).unwrap();
    set_mode(&real, 0o700);
    fs::create_dir(env.path("out")).unwrap();
    set_mode(&env.path("out"), 0o700);
    std::os::unix::fs::symlink(&real, env.path("out/tls")).unwrap();
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(real.join("server.key").is_file());
    assert!(fs::symlink_metadata(env.path("out/tls"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
#[ignore = "needs root: files of another owner"]
fn root_an_output_parent_symlink_someone_else_controls_is_refused() {
    assert_root();
    for what in [
        "symlink owned by another user",
        "symlink into a directory of another user",
        "symlink into a world-writable directory",
    ] {
        let env = Env::new();
        let cfg = good_run(&env);
        let before = env.snapshot();
        let target = env.path("target");
        fs::create_dir(&target).unwrap();
        set_mode(&target, 0o755);
        let tls = env.path("out/tls");
        fs::rename(&tls, env.path("tls-was")).unwrap();
        std::os::unix::fs::symlink(&target, &tls).unwrap();
        match what {
            "symlink owned by another user" => chown(&tls, OTHER),
            "symlink into a directory of another user" => chown(&target, OTHER),
            _ => set_mode(&target, 0o777),
        }
        let out = env.run(&cfg);
        assert_eq!(out.status, 73, "{what}: {}", out.log());
        assert_eq!(
            env.vault.live_tokens(),
            0,
            "{what}: the token is revoked after the refusal"
        );
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            0,
            "{what}: something was written through the symlink"
        );
        // Nothing else changed either (the other outputs are all-or-nothing with it).
        let mut after = env.snapshot();
        after.retain(|p, _| !p.starts_with(&tls));
        let mut want = before.clone();
        want.retain(|p, _| !p.starts_with(&tls));
        assert_same_tree(&want, &after, what);
    }
}

#[test]
#[ignore = "needs root: files of another owner"]
fn root_an_output_parent_writable_by_a_non_root_user_is_refused() {
    assert_root();
    for what in [
        "owned by another user",
        "group-writable",
        "an ancestor owned by another user",
    ] {
        let env = Env::new();
        let cfg = good_run(&env);
        let before = env.snapshot();
        match what {
            "owned by another user" => chown(&env.path("out/run"), OTHER),
            "group-writable" => set_mode(&env.path("out/run"), 0o770),
            _ => chown(&env.path("out"), OTHER),
        }
        let out = env.run(&cfg);
        assert_eq!(out.status, 73, "{what}: {}", out.log());
        assert_eq!(
            env.vault.live_tokens(),
            0,
            "{what}: the token is revoked after the refusal"
        );
        assert!(
            out.stderr.contains("uid 65534") || out.stderr.contains("writable by others"),
            "{what}: {}",
            out.stderr
        );
        let mut after = env.snapshot();
        // Only the change the test itself made.
        for (p, b) in &before {
            let a = &after[p];
            assert_eq!(
                (&a.content, a.ino, a.mtime_ns),
                (&b.content, b.ino, b.mtime_ns),
                "{what}: {} changed",
                p.display()
            );
        }
        after.retain(|p, _| !before.contains_key(p));
        assert!(after.is_empty(), "{what}: added {:?}", after.keys());
    }
}

#[test]
#[ignore = "needs root: files of another owner"]
fn root_no_directory_is_created_under_a_directory_someone_else_controls() {
    assert_root();
    let env = Env::new();
    let theirs = env.path("theirs");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, OTHER);
    set_mode(&theirs, 0o755);
    let deep = theirs.join("deep/er/ad-join.env");
    let cfg = env.write(&env.config().file("run/ad-join.env", "path", &deep));
    let out = env.run(&cfg);
    assert_eq!(out.status, 73, "{}", out.log());
    assert_eq!(
        env.vault.live_tokens(),
        0,
        "the token is revoked after the refusal"
    );
    assert!(
        out.stderr
            .contains(&format!("{} is owned by uid 65534", theirs.display())),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read_dir(&theirs).unwrap().count(),
        0,
        "a directory was created in someone else's directory"
    );
    assert!(env.out_files().is_empty(), "{:?}", env.out_files());
}

#[test]
fn an_existing_output_that_is_a_directory_or_fifo_is_refused_and_nothing_is_written() {
    for what in ["directory", "fifo"] {
        let env = Env::new();
        let cfg = good_run(&env);
        let key = env.path("out/tls/server.key");
        fs::remove_file(&key).unwrap();
        match what {
            "directory" => fs::create_dir(&key).unwrap(),
            _ => nix::unistd::mkfifo(&key, nix::sys::stat::Mode::S_IRWXU).unwrap(),
        }
        let before = env.snapshot();
        let out = env.run(&cfg);
        assert_eq!(out.status, 73, "{what}: {}", out.log());
        assert_eq!(
            env.vault.live_tokens(),
            0,
            "{what}: the token is revoked after the refusal"
        );
        assert!(out.elapsed < Duration::from_secs(10), "{what}: hung on it");
        assert!(
            out.stderr.contains("refusing to replace it"),
            "{what}: {}",
            out.stderr
        );
        // The certificate before it in the same secret is not replaced either.
        assert_same_tree(&before, &env.snapshot(), what);
    }
}

#[test]
#[ignore = "needs root: files of another owner"]
fn root_an_existing_output_of_another_owner_is_replaced_with_the_right_one() {
    assert_root();
    let env = Env::new();
    let cfg = good_run(&env);
    let password = env.path("out/run/ad-join.password");
    chown(&password, OTHER);
    set_mode(&password, 0o666);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let m = fs::metadata(&password).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    assert_eq!(fs::read_to_string(&password).unwrap(), AD_PASSWORD);
}

#[test]
#[ignore = "needs root: files of another owner"]
fn root_stale_staged_outputs_of_any_owner_are_removed() {
    assert_root();
    let env = Env::new();
    let cfg = good_run(&env);
    // A run killed after fchown left staged files owned by the output's owner.
    let stale = env.path("out/run/.ad-join.password.vaultboot.0123456789abcdef");
    fs::write(&stale, "half").unwrap();
    chown(&stale, OTHER);
    let stale_link = env.path("out/tls/.server.key.vaultboot.fedcba9876543210");
    std::os::unix::fs::symlink("/etc/passwd", &stale_link).unwrap();
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(!stale.exists(), "a stale stage owned by uid 65534 was left");
    assert!(fs::symlink_metadata(&stale_link).is_err());
    assert!(Path::new("/etc/passwd").exists());
}

// ------------------------------------------------------------------------------------------
// The path as written: every directory on it, not only where it ends up

/// One secret, one output at `path`: the smallest run that writes a file.
fn one_output_config(env: &Env, path: &Path) -> PathBuf {
    env.write_config(&format!(
        "{}\n[[secret]]\nname = \"api\"\npath = \"secret/data/app/api\"\n\n  [[secret.file]]\n  path = \"{}\"\n  fields = [\"api_key\"]\n",
        env.base_config(),
        path.display()
    ))
}

/// `x/www` is another user's; `www/tls` is root's symlink to a root-only directory. The user
/// can swap that link at will, so the directory of theirs is refused however the link points.
fn theirs_behind_roots_symlink(env: &Env) -> (PathBuf, PathBuf, PathBuf) {
    let www = env.path("x/www");
    fs::create_dir_all(&www).unwrap();
    set_mode(&env.path("x"), 0o755);
    let root_only = env.path("root-only");
    fs::create_dir(&root_only).unwrap();
    set_mode(&root_only, 0o700);
    std::os::unix::fs::symlink(&root_only, www.join("tls")).unwrap();
    chown(&www, OTHER);
    set_mode(&www, 0o755);
    (www, root_only, env.path("x/www/tls/server.key"))
}

#[test]
#[ignore = "needs root: a directory of another owner"]
fn root_a_directory_of_another_user_on_the_path_as_written_is_refused_behind_roots_symlink() {
    assert_root();
    let env = Env::new();
    let (www, root_only, output) = theirs_behind_roots_symlink(&env);
    let cfg = one_output_config(&env, &output);
    let out = env.run(&cfg);
    assert_eq!(out.status, 73, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "{} is owned by uid 65534, not root",
            www.display()
        )),
        "the line names the directory and its owner: {}",
        out.stderr
    );
    assert_eq!(fs::read_dir(&root_only).unwrap().count(), 0);
    assert_eq!(env.vault.live_tokens(), 0, "the token was revoked");
}

/// The attack of the security review: while vaultboot runs, the owner of `x/www` swaps root's
/// link `www/tls` with one of theirs (`renameat2(RENAME_EXCHANGE)`, as fast as it can). Over 200
/// runs nothing is written anywhere: not in their directory, not in root's.
#[test]
#[ignore = "needs root: a directory of another owner"]
fn root_a_link_swapped_during_200_runs_never_gets_a_byte_written_through_it() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    assert_root();
    let env = Env::new();
    let (www, root_only, output) = theirs_behind_roots_symlink(&env);
    let theirs = env.path("x/theirs");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, OTHER);
    std::os::unix::fs::symlink(&theirs, www.join("tls.swap")).unwrap();
    let cfg = one_output_config(&env, &output);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, www) = (stop.clone(), swaps.clone(), www.clone());
        std::thread::spawn(move || {
            let dir = fs::File::open(&www).unwrap();
            while !stop.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    &dir,
                    "tls",
                    &dir,
                    "tls.swap",
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..200 {
        *statuses.entry(env.run(&cfg).status).or_insert(0) += 1;
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(swaps.load(Ordering::Relaxed) > 1000, "the link was swapped");
    assert_eq!(statuses, [(73, 200)].into(), "every run refused");
    assert_eq!(
        fs::read_dir(&theirs).unwrap().count(),
        0,
        "written in theirs"
    );
    assert_eq!(
        fs::read_dir(&root_only).unwrap().count(),
        0,
        "written in root's"
    );
    assert_eq!(env.vault.live_tokens(), 0);
}

// ------------------------------------------------------------------------------------------
// Inputs: the configuration and the CA that verifies Vault are checked like outputs

#[test]
fn a_config_or_ca_file_others_could_write_is_refused_before_any_request() {
    for what in [
        "config 0666",
        "config 0620",
        "config dir 0777",
        "ca 0666",
        "ca relative",
    ] {
        let env = Env::new();
        let mut config = env.config();
        let ca = env.path("vault-ca.pem");
        if what == "ca relative" {
            config = config.set("vault", "ca_cert", "vault-ca.pem");
        }
        let text = config.text();
        let cfg = if what == "config dir 0777" {
            let open = env.path("open");
            fs::create_dir(&open).unwrap();
            set_mode(&open, 0o777);
            let p = open.join("config.toml");
            fs::write(&p, &text).unwrap();
            p
        } else {
            env.write_config(&text)
        };
        match what {
            "config 0666" => set_mode(&cfg, 0o666),
            "config 0620" => set_mode(&cfg, 0o620),
            "ca 0666" => set_mode(&ca, 0o666),
            _ => {}
        }
        // `check` and `run` alike, from another directory than the files'.
        for args in [["check", "--config"], ["run", "--config"]] {
            let out = env.run_args(&[args[0], args[1], cfg.to_str().unwrap()]);
            assert_eq!(out.status, 78, "{what} ({}): {}", args[0], out.log());
            let named = match what {
                "ca relative" => "vault-ca.pem: is not an absolute path".to_string(),
                "config dir 0777" => {
                    format!("{} is writable by others", env.path("open").display())
                }
                w if w.starts_with("ca") => format!("{}: is writable by others", ca.display()),
                _ => format!("{}: is writable by others", cfg.display()),
            };
            assert!(out.stderr.contains(&named), "{what}: {}", out.stderr);
        }
        assert_eq!(env.vault.logins(), 0, "{what}");
        assert_eq!(env.imds.tokens_issued(), 0, "{what}: no IMDS request");
        assert!(env.out_files().is_empty(), "{what}");
    }
}

#[test]
#[ignore = "needs root: files of another owner"]
fn root_a_config_or_ca_file_of_another_user_is_refused() {
    assert_root();
    for what in ["config", "ca"] {
        let env = Env::new();
        let cfg = env.write_config(&env.full_config());
        let file = if what == "config" {
            cfg.clone()
        } else {
            env.path("vault-ca.pem")
        };
        chown(&file, OTHER);
        set_mode(&file, 0o644);
        let out = env.run(&cfg);
        assert_eq!(out.status, 78, "{what}: {}", out.log());
        assert!(
            out.stderr.contains(&format!(
                "{}: is owned by uid 65534, not root",
                file.display()
            )),
            "{what}: {}",
            out.stderr
        );
        assert_eq!(env.vault.logins(), 0, "{what}");
    }
}

// ------------------------------------------------------------------------------------------
// The status file and the run lock cannot stall or steer a run

/// `run`, killed (and the test failed) if it has not ended within `limit`: a hang is the bug.
fn run_within(env: &Env, cfg: &Path, limit: Duration) -> Outcome {
    let log = env.path("bounded-run.log");
    let mut child = env.spawn(cfg, &log);
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the run hung: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    env.finish(child, &log)
}

#[test]
fn a_fifo_or_a_foreign_path_in_the_previous_status_cannot_stall_or_steer_a_run() {
    // A failing run (403 on every secret) reports the certificates the previous status named:
    // here a FIFO outside the configuration, and a configured output that is now a FIFO.
    let env = Env::with_policies(&[]);
    let cfg = env.write_config(&env.full_config());
    let status = env.path("status/status.json");
    fs::create_dir_all(status.parent().unwrap()).unwrap();
    set_mode(status.parent().unwrap(), 0o755);
    let stray = env.path("stray-fifo");
    let configured = env.path("out/tls/server.crt");
    fs::create_dir_all(configured.parent().unwrap()).unwrap();
    set_mode(&env.path("out"), 0o700);
    for fifo in [&stray, &configured] {
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    let previous = serde_json::json!({
        "last_success_at": 1,
        "certificates": [{"path": stray}, {"path": configured}, {"path": "/etc/shadow"}],
    });
    fs::write(&status, previous.to_string()).unwrap();
    let out = run_within(&env, &cfg, Duration::from_secs(60));
    assert_eq!(out.status, 77, "{}", out.log());
    let written: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(written["certificates"], serde_json::json!([]), "{written}");
    assert_eq!(written["last_success_at"], 1, "taken over: {written}");

    // The previous status itself a FIFO, then a symlink to a file of another's choosing.
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    fs::create_dir_all(status_of(&env).parent().unwrap()).unwrap();
    set_mode(status_of(&env).parent().unwrap(), 0o755);
    nix::unistd::mkfifo(&status_of(&env), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let out = run_within(&env, &cfg, Duration::from_secs(60));
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(fs::symlink_metadata(status_of(&env)).unwrap().is_file());
    let decoy = env.path("decoy.json");
    fs::write(&decoy, r#"{"last_success_at": 7, "certificates": []}"#).unwrap();
    fs::remove_file(status_of(&env)).unwrap();
    std::os::unix::fs::symlink(&decoy, status_of(&env)).unwrap();
    let out = run_within(&env, &cfg, Duration::from_secs(60));
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(
        fs::read_to_string(&decoy).unwrap(),
        r#"{"last_success_at": 7, "certificates": []}"#,
        "written through the symlink"
    );
}

fn status_of(env: &Env) -> PathBuf {
    env.path("status/status.json")
}

#[test]
fn a_fifo_planted_as_the_run_lock_fails_the_run_at_once() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    fs::create_dir_all(env.state_dir()).unwrap();
    set_mode(&env.state_dir(), 0o700);
    nix::unistd::mkfifo(
        &env.state_dir().join("run.lock"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    let out = run_within(&env, &cfg, Duration::from_secs(60));
    assert_eq!(out.status, 73, "{}", out.log());
    assert!(
        out.stderr.contains("run.lock: cannot open"),
        "{}",
        out.stderr
    );
    assert_eq!(env.vault.logins(), 0);
}
