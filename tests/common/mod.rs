//! Test harness: the real `vaultboot` binary against the IMDS and Vault simulators on loopback,
//! with real TLS, real files and a syslog socket that records every line.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vaultboot_sim::{Identity, ImdsSim, Signer, VaultOptions, VaultSim};

pub const INSTANCE: &str = "i-0123456789abcdef0";
pub const AD_PASSWORD: &str = "p@ss w'o\"rd $HOME `id` \\ end\nsecond line";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub signer: Signer,
    pub imds: ImdsSim,
    pub vault: VaultSim,
    pub api_key: String,
}

pub struct Outcome {
    pub status: i32,
    pub stderr: String,
    pub stdout: String,
    pub syslog: Vec<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn log(&self) -> String {
        format!("{}\n{}", self.stderr, self.syslog.join("\n"))
    }
}

impl Env {
    /// Simulators with the demo data: ec2 role "web" allowed to issue certificates and read
    /// the AD join and API secrets.
    pub fn new() -> Env {
        Env::with_policies(&[
            "pki_int/issue/web",
            "secret/data/ad/join",
            "secret/data/app/api",
            "kv1/",
        ])
    }

    pub fn with_policies(policies: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let signer = Signer::new();
        let imds = ImdsSim::start(Identity::sample(INSTANCE), &signer).unwrap();
        let vault = VaultSim::start(VaultOptions::new(&signer)).unwrap();
        vault.add_ec2_role(
            "aws",
            "web",
            Some(&Identity::sample(INSTANCE).image_id),
            policies,
        );
        vault.put_kv2(
            "secret",
            "ad/join",
            serde_json::json!({"username": "svc-join", "password": AD_PASSWORD}),
        );
        let api_key = format!("key-{}", std::process::id());
        vault.put_kv2("secret", "app/api", serde_json::json!({"api_key": api_key}));
        vault.put_kv1(
            "kv1/legacy",
            serde_json::json!({"token": "legacy-value-123"}),
        );
        vault.enable_pki("pki_int", "web");
        fs::write(dir.path().join("vault-ca.pem"), vault.ca_pem()).unwrap();
        Env {
            dir,
            signer,
            imds,
            vault,
            api_key,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// The sections every test shares; `extra` is appended (more [[secret]]s, [retry] …).
    pub fn base_config(&self) -> String {
        format!(
            r#"[vault]
address = "{vault}"
ca_cert = "{ca}"
request_timeout = "3s"

[auth]
role = "web"

[imds]
endpoint = "{imds}"

[state]
dir = "{state}"

[retry]
deadline = "20s"
max_delay = "1s"
"#,
            vault = self.vault.url(),
            ca = self.path("vault-ca.pem").display(),
            imds = self.imds.url(),
            state = self.state_dir().display(),
        )
    }

    /// The contract's example: a PKI certificate for nginx, AD join credentials as an env
    /// file, and an API key as JSON.
    pub fn secrets_config(&self) -> String {
        format!(
            r#"
[[secret]]
name = "tls"
path = "pki_int/issue/web"
data = {{ common_name = "{{{{ local-hostname }}}}", ip_sans = "{{{{ local-ipv4 }}}}", ttl = "72h" }}

  [[secret.file]]
  path = "{out}/tls/server.crt"
  fields = ["certificate", "ca_chain?"]
  mode = "0644"

  [[secret.file]]
  path = "{out}/tls/server.key"
  fields = ["private_key"]

[[secret]]
name = "ad-join"
path = "secret/data/ad/join"

  [[secret.file]]
  path = "{out}/run/ad-join.env"
  format = "env"
  fields = ["username", "password"]

  [[secret.file]]
  path = "{out}/run/ad-join.password"
  fields = ["password"]

[[secret]]
name = "api"
path = "secret/data/app/api"

  [[secret.file]]
  path = "{out}/app/{{{{ instance-id }}}}.json"
  format = "json"
  fields = ["api_key"]
  mode = "0640"
"#,
            out = self.path("out").display()
        )
    }

    pub fn full_config(&self) -> String {
        format!("{}{}", self.base_config(), self.secrets_config())
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let p = self.path("config.toml");
        fs::write(&p, text).unwrap();
        p
    }

    /// Runs `vaultboot run --config <config>` and collects everything it said.
    pub fn run(&self, config: &Path) -> Outcome {
        self.run_args(&["run", "--config", config.to_str().unwrap()])
    }

    pub fn run_args(&self, args: &[&str]) -> Outcome {
        let sock_path = self.path("syslog.sock");
        let _ = fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // Read while vaultboot runs: a datagram socket's queue is short.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader_done = done.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) if reader_done.load(std::sync::atomic::Ordering::SeqCst) => {
                        return lines
                    }
                    Err(_) => {}
                }
            }
        });
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_vaultboot"))
            .args(args)
            .env("VAULTBOOT_SYSLOG_SOCKET", &sock_path)
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        let elapsed = start.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let syslog = reader.join().unwrap();
        let outcome = Outcome {
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            syslog,
            elapsed,
        };
        self.assert_no_secrets(&outcome);
        outcome
    }

    /// Every secret the simulator handed out, the AD password, and the nonce on disk: none may
    /// appear in what vaultboot printed or logged, raw or encoded.
    pub fn assert_no_secrets(&self, outcome: &Outcome) {
        let mut secrets = self.vault.issued_secrets();
        secrets.push(AD_PASSWORD.to_string());
        secrets.push(self.api_key.clone());
        secrets.push("legacy-value-123".into());
        if let Ok(state) = fs::read_to_string(self.state_dir().join("nonce.json")) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&state) {
                if let Some(n) = v["nonce"].as_str() {
                    secrets.push(n.to_string());
                }
            }
        }
        let text = format!(
            "{}\n{}\n{}",
            outcome.stdout,
            outcome.stderr,
            outcome.syslog.join("\n")
        );
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            for line in s.lines().filter(|l| l.len() >= 8) {
                assert!(
                    !text.contains(line),
                    "a secret leaked into the output:\n{text}"
                );
            }
            let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !text.contains(&hex),
                "a secret leaked (hex) into the output"
            );
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(s);
            assert!(
                !text.contains(&b64[..b64.len().min(16)]),
                "a secret leaked (base64)"
            );
        }
    }

    /// Names of every file below `out/`, recursively, with staged files included.
    pub fn out_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        collect(&self.path("out"), &self.path("out"), &mut found);
        found.sort();
        found
    }
}

fn collect(root: &Path, dir: &Path, into: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, into);
        } else {
            into.push(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

pub fn is_root() -> bool {
    nix_euid() == 0
}

fn nix_euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}
