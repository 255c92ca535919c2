mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

#[test]
fn serve_demo_data_and_login_lines() {
    let dir = std::env::temp_dir().join(format!("vaultboot-sim-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dump = dir.join("issued.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultboot-sim"))
        .args([
            "serve",
            "--until-stdin-eof",
            "--instance-id",
            "i-0bin0000000000000",
            "--dir",
        ])
        .arg(&dir)
        .arg("--dump-issued")
        .arg(&dump)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut l1, mut l2) = (String::new(), String::new());
    out.read_line(&mut l1).unwrap();
    out.read_line(&mut l2).unwrap();
    let imds_url = l1.trim().strip_prefix("imds ").unwrap().to_string();
    let vault_url = l2.trim().strip_prefix("vault ").unwrap().to_string();
    assert!(imds_url.starts_with("http://127.0.0.1:"));
    assert!(vault_url.starts_with("https://localhost:"));
    let ca = std::fs::read_to_string(dir.join("vault-ca.pem")).unwrap();
    assert!(std::fs::read_to_string(dir.join("pki-ca.pem"))
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    let ia = imds_agent();
    let t = req(
        &ia,
        "PUT",
        &format!("{imds_url}/latest/api/token"),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        None,
    )
    .unwrap()
    .body;
    let pkcs7 = req(
        &ia,
        "GET",
        &format!("{imds_url}/latest/dynamic/instance-identity/rsa2048"),
        &[("X-aws-ec2-metadata-token", &t)],
        None,
    )
    .unwrap()
    .body
    .replace('\n', "");
    let va = vault_agent(&ca);
    let nonce = "bin-test-nonce-0123456789abcdef";
    let login = |n: &str| {
        let b = json!({"role": "web", "pkcs7": pkcs7, "nonce": n}).to_string();
        req(
            &va,
            "POST",
            &format!("{vault_url}/v1/auth/aws/login"),
            &[("X-Vault-Request", "true")],
            Some(&b),
        )
        .unwrap()
    };
    let r = login(nonce);
    assert_eq!(r.status, 200, "{}", r.body);
    let tok = r.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(login(nonce).status, 200);
    assert_eq!(login("other").status, 400);
    let get = |p: &str| {
        req(
            &va,
            "GET",
            &format!("{vault_url}/v1/{p}"),
            &[("X-Vault-Request", "true"), ("X-Vault-Token", &tok)],
            None,
        )
        .unwrap()
    };
    let ad = get("secret/data/ad/join").json();
    assert_eq!(ad["data"]["data"]["username"], "svc-join");
    let pw = ad["data"]["data"]["password"].as_str().unwrap();
    for c in [' ', '"', '$', '\\'] {
        assert!(pw.contains(c), "{c:?} in demo password");
    }
    assert!(get("secret/data/app/api").json()["data"]["data"]["api_key"].is_string());
    assert_eq!(get("kv1/legacy").status, 200);
    let b = json!({"common_name": "ip-10-0-1-23.ec2.internal"}).to_string();
    let r = req(
        &va,
        "POST",
        &format!("{vault_url}/v1/pki_int/issue/web"),
        &[("X-Vault-Request", "true"), ("X-Vault-Token", &tok)],
        Some(&b),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let key = r.json()["data"]["private_key"]
        .as_str()
        .unwrap()
        .to_string();
    let api_key = get("secret/data/app/api").json()["data"]["data"]["api_key"].clone();
    let dumped = wait_for_dump(&dump, &key);
    assert_eq!(dumped["ad_password"], pw);
    assert_eq!(dumped["api_key"], api_key);
    assert_eq!(dumped["private_keys"].as_array().unwrap().len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dump).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the dump holds secrets");

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("login ")).collect();
    assert_eq!(
        lines,
        vec![
            "login instance=i-0bin0000000000000 nonce=bound",
            "login instance=i-0bin0000000000000 nonce=reused",
            "login instance=i-0bin0000000000000 nonce=mismatch",
        ]
    );
    assert!(!err.contains(nonce));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dump once it lists `key` among the issued private keys (bounded: the simulator polls
/// every 50 ms; 30 s is for a loaded machine).
fn wait_for_dump(path: &std::path::Path, key: &str) -> serde_json::Value {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["private_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k.as_str().map(str::trim_end) == Some(key))
            {
                return v;
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "the dump never listed the issued key"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
