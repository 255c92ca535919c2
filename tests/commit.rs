//! The commit, when the file system refuses part-way: the error and the summary say which
//! outputs were replaced and which were not (exit 73). The fault is a real one: an output made
//! immutable (`chattr +i`, root on a file system that has the attribute), so staging succeeds
//! and its rename fails with EPERM.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `chattr +i` on a file, undone on drop (a test that fails must not leave an immutable file
/// that its temporary directory cannot remove).
struct Immutable(PathBuf);

impl Immutable {
    /// `None` (with the reason printed) where the attribute cannot be set.
    fn set(path: &Path) -> Option<Immutable> {
        if !is_root() {
            eprintln!("skipped: needs root for chattr +i");
            return None;
        }
        match Command::new("chattr").arg("+i").arg(path).output() {
            Ok(out) if out.status.success() => Some(Immutable(path.to_path_buf())),
            Ok(out) => {
                eprintln!(
                    "skipped: chattr +i refused here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: no chattr: {e}");
                None
            }
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
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
fn a_rename_refused_part_way_says_what_was_replaced_and_exits_73() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let out_dir = env.path("out");
    let crt = out_dir.join("tls/server.crt");
    let key = out_dir.join("tls/server.key");
    let env_file = out_dir.join("run/ad-join.env");
    let password = out_dir.join("run/ad-join.password");
    let json = out_dir.join(format!("app/{INSTANCE}.json"));
    let old_password = fs::read(&password).unwrap();
    let old_json = fs::read(&json).unwrap();
    let old_env = fs::read(&env_file).unwrap();

    let Some(immutable) = Immutable::set(&password) else {
        return;
    };
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

    // Once the file system lets it, the next run completes the set.
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(fs::read_to_string(&password).unwrap().starts_with("pw-2-"));
    assert!(fs::read_to_string(&json).unwrap().contains("key-2-"));
}
