//! iam helpers for the integration tests (used next to `common/mod.rs`): AWS credentials known
//! to both simulators, an iam configuration, a runner that controls the child's AWS_*
//! environment, and a leak check for AWS secrets and the signatures sent.
#![allow(dead_code)]

use super::{Config, Env, Outcome, INSTANCE};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "123456789012";
pub const SERVER_ID: &str = "vault.example.com";
/// The instance profile's role, and the iam role in Vault.
pub const PROFILE_ROLE: &str = "app-instance";
pub const VAULT_ROLE: &str = "app";
pub const POLICIES: [&str; 4] = [
    "pki_int/issue/web",
    "secret/data/ad/join",
    "secret/data/app/api",
    "kv1/",
];

/// One set of AWS credentials (random per test, so that a leak check means something).
#[derive(Clone)]
pub struct AwsCreds {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub arn: String,
}

fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).unwrap();
    b.iter()
        .map(|x| CHARS[*x as usize % CHARS.len()] as char)
        .collect()
}

impl AwsCreds {
    /// Temporary credentials of the instance profile's role session.
    pub fn instance_profile() -> AwsCreds {
        AwsCreds {
            access_key_id: format!("ASIA{}", random_alnum(16).to_ascii_uppercase()),
            secret_access_key: format!("{}/{}+", random_alnum(20), random_alnum(18)),
            session_token: Some(format!("IQoJb3JpZ2luX2Vj{}", random_alnum(120))),
            arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/{PROFILE_ROLE}/{INSTANCE}"),
        }
    }

    /// Long-term credentials of an IAM user (off EC2: CI, a laptop).
    pub fn iam_user() -> AwsCreds {
        AwsCreds {
            access_key_id: format!("AKIA{}", random_alnum(16).to_ascii_uppercase()),
            secret_access_key: random_alnum(40),
            session_token: None,
            arn: format!("arn:aws:iam::{ACCOUNT}:user/ci/{VAULT_ROLE}"),
        }
    }

    /// The canonical ARN Vault binds a role to.
    pub fn bound_arn(&self) -> String {
        if self.session_token.is_some() {
            format!("arn:aws:iam::{ACCOUNT}:role/{PROFILE_ROLE}")
        } else {
            format!("arn:aws:iam::{ACCOUNT}:user/{VAULT_ROLE}")
        }
    }

    /// The environment a process gets them from (AWS_*).
    pub fn as_env(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
        ];
        if let Some(t) = &self.session_token {
            v.push(("AWS_SESSION_TOKEN", t.clone()));
        }
        v
    }

    pub fn for_login_data(&self) -> vaultboot::fuzzing::iam::Credentials {
        use vaultboot::fuzzing::secret::Secret;
        vaultboot::fuzzing::iam::Credentials {
            access_key_id: Secret::from_string(self.access_key_id.clone()),
            secret_access_key: Secret::from_string(self.secret_access_key.clone()),
            session_token: self.session_token.clone().map(Secret::from_string),
        }
    }
}

/// STS knows `creds`; Vault has the iam role "app" bound to their principal (with the usual
/// policies) and requires the server id header.
pub fn setup_vault(env: &Env, creds: &AwsCreds) {
    env.vault.add_iam_credentials(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.as_deref(),
        &creds.arn,
    );
    env.vault
        .add_iam_role("aws", VAULT_ROLE, &creds.bound_arn(), &POLICIES);
    env.vault.set_iam_server_id("aws", Some(SERVER_ID));
}

/// The instance profile role carries `creds` in IMDS, and Vault knows them.
pub fn setup_instance_profile(env: &Env, creds: &AwsCreds) {
    env.imds.set_role_credentials(
        PROFILE_ROLE,
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.as_deref().unwrap_or(""),
    );
    setup_vault(env, creds);
}

/// `config` logging in with the iam method as the simulator's role, with the server id
/// header when `server_id` is given.
pub fn iam_config(config: Config, server_id: Option<&str>) -> Config {
    let config = config
        .set("auth", "role", VAULT_ROLE)
        .set("auth", "method", "iam");
    match server_id {
        Some(id) => config.set("auth", "iam_server_id", id),
        None => config,
    }
}

/// Secrets without templates, for runs that never reach IMDS.
pub fn secrets_without_templates(env: &Env) -> Config {
    let out = |rel: &str| format!("{}/{rel}", env.path("out").display());
    env.base()
        .add_secret("ad-join", "secret/data/ad/join")
        .add_file(&out("run/ad-join.env"), &["username", "password"])
        .file("run/ad-join.env", "format", "env")
        .add_secret("api", "secret/data/app/api")
        .add_file(&out("app/api.json"), &["api_key"])
        .file("app/api.json", "format", "json")
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs `vaultboot run --config <config>` like `Env::run`, but with exactly `aws_env` as the
/// child's AWS credentials (any AWS_* of the test process is removed from the child; the test
/// process's own environment is never changed), then checks that neither Vault's secrets nor
/// `creds` nor any signature sent leaked into what it printed or logged.
pub fn run(
    env: &Env,
    config: &Path,
    aws_env: &[(&'static str, String)],
    creds: &[&AwsCreds],
) -> Outcome {
    let sock_path = env.path("syslog.sock");
    let _ = fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader_done = done.clone();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) if reader_done.load(Ordering::SeqCst) => return lines,
                Err(_) => {}
            }
        }
    });
    let mut cmd = super::vaultboot_command();
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env("VAULTBOOT_SYSLOG_SOCKET", &sock_path)
        .env_remove("JOURNAL_STREAM");
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        cmd.env_remove(name);
    }
    for (k, v) in aws_env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let elapsed = start.elapsed();
    done.store(true, Ordering::SeqCst);
    let syslog = reader.join().unwrap();
    let outcome = Outcome {
        status: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        syslog,
        elapsed,
    };
    env.assert_no_secrets(&outcome);
    assert_no_aws_secrets(env, &outcome, creds);
    outcome
}

/// The headers of a login body's `iam_request_headers`, decoded.
pub fn decode_headers(login: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    let b64 = login["iam_request_headers"].as_str().expect("a string");
    serde_json::from_slice(&STANDARD.decode(b64).expect("base64")).expect("a JSON map")
}

pub fn encode_headers(headers: &BTreeMap<String, Vec<String>>) -> String {
    STANDARD.encode(serde_json::to_vec(headers).unwrap())
}

/// Every iam login body vaultboot sent to the simulator.
pub fn iam_logins(env: &Env) -> Vec<serde_json::Value> {
    env.vault
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/auth/") && r.path.ends_with("/login"))
        .filter_map(|r| r.json())
        .filter(|b| b.get("iam_request_headers").is_some())
        .collect()
}

/// No secret key, session token, access key id, signature or encoded header block in what
/// vaultboot printed or logged: raw, hex or base64.
pub fn assert_no_aws_secrets(env: &Env, outcome: &Outcome, creds: &[&AwsCreds]) {
    let mut secrets: Vec<String> = Vec::new();
    for c in creds {
        secrets.push(c.secret_access_key.clone());
        secrets.push(c.access_key_id.clone());
        secrets.extend(c.session_token.clone());
    }
    for login in iam_logins(env) {
        secrets.push(login["iam_request_headers"].as_str().unwrap().to_string());
        let headers = decode_headers(&login);
        for v in headers.get("Authorization").into_iter().flatten() {
            if let Some((_, sig)) = v.split_once("Signature=") {
                secrets.push(sig.to_string());
            }
        }
        secrets.extend(
            headers
                .get("X-Amz-Security-Token")
                .into_iter()
                .flatten()
                .cloned(),
        );
    }
    let text = format!(
        "{}\n{}\n{}",
        outcome.stdout,
        outcome.stderr,
        outcome.syslog.join("\n")
    );
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !text.contains(s.as_str()),
            "an AWS secret or signature leaked into the output:\n{text}"
        );
        let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex), "an AWS secret leaked (hex)");
        let b64 = STANDARD.encode(s);
        assert!(
            !text.contains(&b64[..b64.len().min(16)]),
            "an AWS secret leaked (base64)"
        );
    }
}

/// `YYYYMMDDTHHMMSSZ` moved by `secs` (calendar arithmetic: days_from_civil/civil_from_days).
pub fn shift_amz_date(d: &str, secs: i64) -> String {
    let n = |r: std::ops::Range<usize>| d[r].parse::<i64>().expect("an X-Amz-Date");
    let (y, m, day) = (n(0..4), n(4..6), n(6..8));
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let t = days * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15) + secs;

    let (days, s) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}
