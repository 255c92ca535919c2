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
