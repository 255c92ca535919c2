//! Test harness: the real `vaultboot` binary against the IMDS and Vault simulators on loopback,
//! with real TLS, real files and a syslog socket that records every line.
#![allow(dead_code)]

pub mod config;
pub mod tls_check;

pub use config::{Config, Raw};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vaultboot_sim::{DemoWorld, DemoWorldBuilder, ImdsSim, Signer, VaultSim};

pub const INSTANCE: &str = "i-0123456789abcdef0";
pub const AD_PASSWORD: &str = "p@ss w'o\"rd $HOME `id` \\ end\nsecond line";
pub const LEGACY_TOKEN: &str = "legacy-value-123";

/// The vaultboot binary under test: the one cargo built for this host, or `VAULTBOOT_TEST_BIN`
/// (tests/run-all.sh points it at the arm64 release binary).
pub fn vaultboot_bin() -> PathBuf {
    std::env::var_os("VAULTBOOT_TEST_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vaultboot")))
}

/// The argv prefix that runs the binary under test: `VAULTBOOT_TEST_RUNNER` (whitespace-separated,
/// e.g. `qemu-aarch64-static`: this machine's binfmt_misc cannot be relied on) followed by
/// `vaultboot_bin()`.
pub fn vaultboot_argv() -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = std::env::var("VAULTBOOT_TEST_RUNNER")
        .unwrap_or_default()
        .split_whitespace()
        .map(Into::into)
        .collect();
    argv.push(vaultboot_bin().into_os_string());
    argv
}

/// How many times slower than a native run the agent under test may be:
/// `VAULTBOOT_TEST_TIME_SCALE` (a whole number, default 1; tests/run-all.sh sets it for the
/// arm64 binary under qemu-user). It stretches only the upper bounds on elapsed time, each
/// still below what the bug it catches would take (a deadline ignored, a failure retried).
pub fn time_scale() -> u32 {
    std::env::var("VAULTBOOT_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &u32| n >= 1)
        .unwrap_or(1)
}

/// `d` stretched by `time_scale()` (`Duration::MAX` stays unbounded).
pub fn scaled(d: Duration) -> Duration {
    d.checked_mul(time_scale()).unwrap_or(Duration::MAX)
}

/// A `Command` for the binary under test (see `vaultboot_argv`).
pub fn vaultboot_command() -> Command {
    let argv = vaultboot_argv();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

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
    /// The simulator's demo world (see `vaultboot_sim::DemoWorld`): ec2 role "web" allowed to
    /// issue certificates and read the AD join, API and legacy KV v1 secrets.
    pub fn new() -> Env {
        Env::with_policies(&vaultboot_sim::DEMO_POLICIES)
    }

    /// The demo world with the role limited to `policies`. The AD password is `AD_PASSWORD`
    /// and the legacy token `LEGACY_TOKEN`; the API key is random (long enough for the leak
    /// scanner's MIN_SECRET_LEN).
    pub fn with_policies(policies: &[&str]) -> Env {
        Env::with_world(|world| world.policies(policies))
    }

    /// The demo world as `new` builds it, then changed by `change` (where the simulators
    /// listen, the names and addresses in Vault's certificate, ...).
    pub fn with_world(change: impl FnOnce(DemoWorldBuilder) -> DemoWorldBuilder) -> Env {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let world = DemoWorld::builder()
            .instance_id(INSTANCE)
            .policies(&vaultboot_sim::DEMO_POLICIES)
            .ad_password(AD_PASSWORD)
            .legacy_token(LEGACY_TOKEN);
        let world = change(world).build().unwrap();
        world.write_vault_ca(dir.path()).unwrap();
        Env {
            dir,
            signer: world.signer,
            imds: world.imds,
            vault: world.vault,
            api_key: world.secrets.api_key,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// The sections every test shares, no secret.
    pub fn base(&self) -> Config {
        let q = |p: PathBuf| config::quoted(&p.display().to_string());
        Config::new(&[
            (
                "vault",
                &[
                    ("address", config::quoted(&self.vault.url())),
                    ("ca_cert", q(self.path("vault-ca.pem"))),
                    ("request_timeout", config::quoted("3s")),
                ],
            ),
            ("auth", &[("role", config::quoted("web"))]),
            ("imds", &[("endpoint", config::quoted(&self.imds.url()))]),
            ("state", &[("dir", q(self.state_dir()))]),
            ("status", &[("file", q(self.path("status/status.json")))]),
            (
                "retry",
                &[
                    ("deadline", config::quoted("20s")),
                    ("max_delay", config::quoted("1s")),
                ],
            ),
        ])
    }

    /// The contract's example: a PKI certificate for nginx, AD join credentials as an env
    /// file, and an API key as JSON.
    pub fn config(&self) -> Config {
        self.config_writing_to(&self.path("out"))
    }

    /// The example with its outputs under `out`.
    pub fn config_writing_to(&self, out: &Path) -> Config {
        let out = |rel: &str| format!("{}/{rel}", out.display());
        let data = r#"{ common_name = "{{ local-hostname }}", ip_sans = "{{ local-ipv4 }}", ttl = "72h" }"#;
        self.base()
            .add_secret("tls", "pki_int/issue/web")
            .secret("tls", "data", Raw(data))
            .add_file(&out("tls/server.crt"), &["certificate", "ca_chain?"])
            .file("tls/server.crt", "mode", "0644")
            .add_file(&out("tls/server.key"), &["private_key"])
            .add_secret("ad-join", "secret/data/ad/join")
            .add_file(&out("run/ad-join.env"), &["username", "password"])
            .file("run/ad-join.env", "format", "env")
            .add_file(&out("run/ad-join.password"), &["password"])
            .add_secret("api", "secret/data/app/api")
            .add_file(&out("app/{{ instance-id }}.json"), &["api_key"])
            .file(".json", "format", "json")
            .file(".json", "mode", "0640")
    }

    /// The sections every test shares, as text.
    pub fn base_config(&self) -> String {
        self.base().text()
    }

    /// The example's `[[secret]]` tables, as text.
    pub fn secrets_config(&self) -> String {
        self.config().secrets_text()
    }

    pub fn full_config(&self) -> String {
        self.config().text()
    }

    /// `config` written to the configuration file.
    pub fn write(&self, config: &Config) -> PathBuf {
        self.write_config(&config.text())
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
        self.run_in(&[], args)
    }

    /// `run_args` with the binary started by `wrapper` (an argv prefix, e.g. `unshare -m ...`).
    pub fn run_in(&self, wrapper: &[&str], args: &[&str]) -> Outcome {
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
        let mut command = match wrapper.split_first() {
            None => vaultboot_command(),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).args(vaultboot_argv());
                c
            }
        };
        let out = command
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

    /// Every secret the simulators handed out or saw (see `known_secrets`): none may appear in
    /// what vaultboot printed or logged, raw or encoded (see `leak_forms`).
    pub fn assert_no_secrets(&self, outcome: &Outcome) {
        let text = format!(
            "{}\n{}\n{}",
            outcome.stdout,
            outcome.stderr,
            outcome.syslog.join("\n")
        );
        let leaks = self.find_leaks(&text);
        assert!(
            leaks.is_empty(),
            "a secret leaked into the output: {leaks:?}\n{text}"
        );
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

/// The first line of every root-only test. Those are named `root_*` and marked
/// `#[ignore = "needs root: ..."]`, so that a run as another user does not count them as
/// passed; tests/run-all.sh (CI, as root) runs them with `-- --ignored root_`. Run explicitly
/// as another user, they fail here.
pub fn assert_root() {
    assert!(
        is_root(),
        "needs root: run as root (cargo test -- --ignored root_)"
    );
}

fn nix_euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// Hardening helpers (issue #6): file-tree snapshots, a secret scanner that also looks for
// encoded forms, and runs that can be killed.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Mutex;

/// One file-system entry as a test saw it (never followed through a symlink, a FIFO never
/// opened).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    /// A file's content or a symlink's target.
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub mtime_ns: i64,
}

pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Every entry below `root` (not `root` itself), recursively.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut map = Snapshot::new();
    snapshot_into(root, &mut map);
    map
}

fn snapshot_into(dir: &Path, map: &mut Snapshot) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = m.file_type();
        let (kind, content) = if ft.is_file() {
            ("file", fs::read(&p).unwrap_or_default())
        } else if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&p)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default(),
            )
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else {
            ("other", Vec::new())
        };
        map.insert(
            p.clone(),
            Entry {
                kind,
                content,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                ino: m.ino(),
                // A directory's mtime moves when a staged file comes and goes: its entries
                // are compared instead.
                mtime_ns: if ft.is_dir() {
                    0
                } else {
                    m.mtime() * 1_000_000_000 + m.mtime_nsec()
                },
            },
        );
        if ft.is_dir() {
            snapshot_into(&p, map);
        }
    }
}

/// Panics with a readable list of what differs between two snapshots.
pub fn assert_same_tree(before: &Snapshot, after: &Snapshot, context: &str) {
    let mut problems = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => problems.push(format!("removed: {}", p.display())),
            Some(a) if a != b => {
                let what = if a.kind != b.kind {
                    format!("kind {} -> {}", b.kind, a.kind)
                } else if a.content != b.content {
                    "content".to_string()
                } else if (a.mode, a.uid, a.gid) != (b.mode, b.uid, b.gid) {
                    format!(
                        "mode/owner {:04o} {}:{} -> {:04o} {}:{}",
                        b.mode, b.uid, b.gid, a.mode, a.uid, a.gid
                    )
                } else {
                    "inode or mtime (rewritten)".to_string()
                };
                problems.push(format!("changed ({what}): {}", p.display()));
            }
            Some(_) => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            problems.push(format!("added: {}", p.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "{context}: files changed:\n  {}",
        problems.join("\n  ")
    );
}

/// Secrets a test made up itself (values it put into the simulator, nonces it planted): every
/// scan in this test binary looks for them too.
static EXTRA_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn register_secret(s: &str) {
    EXTRA_SECRETS.lock().unwrap().push(s.to_string());
}

/// Shortest string that counts as a secret worth scanning for (shorter ones match by chance).
pub const MIN_SECRET_LEN: usize = 8;

fn hex_of(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Longest piece looked for as a whole; a longer secret (or line of one) is also looked for in
/// pieces of this many bytes, so that any leak of twice as much of it in a row is found.
const PIECE: usize = 64;

/// The forms under which `secret` must not appear: as is, line by line and piece by piece,
/// hex (both cases), base64 (standard and URL-safe, at every byte alignment, so that it is
/// found inside a longer encoded text too), JSON- and Rust-escaped, percent-encoded, and for a
/// secret that is itself base64 (a nonce), the hex of the bytes it encodes.
pub fn leak_forms(secret: &str) -> std::sync::Arc<Vec<(&'static str, String)>> {
    type Forms = std::sync::Arc<Vec<(&'static str, String)>>;
    static CACHE: Mutex<BTreeMap<String, Forms>> = Mutex::new(BTreeMap::new());
    if let Some(forms) = CACHE.lock().unwrap().get(secret) {
        return forms.clone();
    }
    let forms = std::sync::Arc::new(compute_leak_forms(secret));
    CACHE
        .lock()
        .unwrap()
        .insert(secret.to_string(), forms.clone());
    forms
}

fn compute_leak_forms(secret: &str) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let mut forms: Vec<(&'static str, String)> = Vec::new();
    if secret.len() < MIN_SECRET_LEN {
        return forms;
    }
    let mut pieces: Vec<&[u8]> = vec![secret.as_bytes()];
    if secret.contains('\n') {
        pieces.extend(
            secret
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= MIN_SECRET_LEN)
                .map(str::as_bytes),
        );
    }
    let mut all = Vec::new();
    for p in pieces {
        if p.len() > 2 * PIECE {
            all.extend(p.chunks(PIECE).filter(|c| c.len() >= MIN_SECRET_LEN));
        } else {
            all.push(p);
        }
    }
    for bytes in all {
        let Ok(piece) = std::str::from_utf8(bytes) else {
            continue;
        };
        forms.push(("raw", piece.to_string()));
        let hex = hex_of(bytes);
        forms.push(("HEX", hex.to_ascii_uppercase()));
        forms.push(("hex", hex));
        for skip in 0..3 {
            if bytes.len() < skip + 6 {
                break;
            }
            let rest = &bytes[skip..];
            let aligned = &rest[..rest.len() - rest.len() % 3];
            forms.push((
                "base64",
                base64::engine::general_purpose::STANDARD.encode(aligned),
            ));
            forms.push((
                "base64url",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aligned),
            ));
        }
        let json = serde_json::to_string(piece).unwrap();
        let json = &json[1..json.len() - 1];
        if json != piece {
            forms.push(("json-escaped", json.to_string()));
        }
        let debug = format!("{piece:?}");
        let debug = &debug[1..debug.len() - 1];
        if debug != piece && debug != json {
            forms.push(("debug-escaped", debug.to_string()));
        }
        let pct: String = bytes
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if pct != piece {
            forms.push(("percent-encoded", pct));
        }
    }
    for engine in [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ] {
        if let Ok(raw) = engine.decode(secret) {
            if raw.len() >= 16 {
                forms.push(("hex of the decoded bytes", hex_of(&raw)));
                break;
            }
        }
    }
    forms.retain(|(_, f)| f.len() >= MIN_SECRET_LEN);
    forms
}

/// Which of `secrets` appear in `text`, in which form. Never prints a secret: a finding names
/// the form, the secret's index and length.
pub fn scan_for_secrets(secrets: &[String], text: &str) -> Vec<String> {
    // Prefilter: every form is at least MIN_SECRET_LEN long, so its first MIN_SECRET_LEN bytes
    // must be one of the text's windows of that length.
    let windows: HashSet<&[u8]> = text.as_bytes().windows(MIN_SECRET_LEN).collect();
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in secrets.iter().enumerate() {
        if !seen.insert(s.as_str()) {
            continue;
        }
        for (form, needle) in leak_forms(s).iter() {
            if !windows.contains(&needle.as_bytes()[..MIN_SECRET_LEN]) {
                continue;
            }
            if text.contains(needle.as_str()) {
                found.push(format!("secret #{i} ({} bytes) appears {form}", s.len()));
            }
        }
    }
    found
}

impl Env {
    /// Every secret this test's simulators handed out or saw, plus the ones the harness and the
    /// test put in: Vault tokens and nonces (issued, and as sent in requests), IMDS session
    /// tokens, KV values, PKI private keys, the nonce on disk (also moved-aside and staged
    /// copies), and `register_secret`s.
    pub fn known_secrets(&self) -> Vec<String> {
        let mut secrets = self.vault.issued_secrets();
        secrets.push(AD_PASSWORD.to_string());
        secrets.push(self.api_key.clone());
        secrets.push(LEGACY_TOKEN.into());
        secrets.extend(EXTRA_SECRETS.lock().unwrap().iter().cloned());
        for r in self.vault.control().requests() {
            if let Some(t) = r.header("x-vault-token") {
                secrets.push(t.to_string());
            }
            if let Some(n) = r
                .json()
                .and_then(|v| v["nonce"].as_str().map(str::to_string))
            {
                secrets.push(n);
            }
        }
        for r in self.imds.control().requests() {
            if let Some(t) = r.header("x-aws-ec2-metadata-token") {
                secrets.push(t.to_string());
            }
        }
        if let Ok(entries) = fs::read_dir(self.state_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Regular files only: a FIFO planted there would block the read.
                let regular = fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_file());
                if !name.contains("nonce.json") || !regular {
                    continue;
                }
                let Ok(text) = fs::read_to_string(e.path()) else {
                    continue;
                };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let Some(n) = v["nonce"].as_str() {
                        secrets.push(n.to_string());
                    }
                }
            }
        }
        secrets.retain(|s| s.len() >= MIN_SECRET_LEN);
        secrets
    }

    /// What `scan_for_secrets` finds of `known_secrets` in `text`.
    pub fn find_leaks(&self, text: &str) -> Vec<String> {
        scan_for_secrets(&self.known_secrets(), text)
    }

    /// Snapshot of everything vaultboot may write: outputs and state.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = snapshot(&self.path("out"));
        s.extend(snapshot(&self.state_dir()));
        s
    }

    /// Starts `vaultboot run --config <config>` with stdout and stderr going to `log` (a file,
    /// not a pipe: a killed agent's children may hold a pipe open) and syslog off.
    pub fn spawn(&self, config: &Path, log: &Path) -> std::process::Child {
        self.spawn_args(&["run"], config, log)
    }

    /// `spawn` with other arguments before `--config <config>` (`["run", "--refresh"]`).
    pub fn spawn_args(&self, args: &[&str], config: &Path, log: &Path) -> std::process::Child {
        let file = fs::File::create(log).unwrap();
        vaultboot_command()
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .env("VAULTBOOT_SYSLOG_SOCKET", self.path("no-syslog-here.sock"))
            .env_remove("JOURNAL_STREAM")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap()
    }

    /// Waits for a spawned run and scans what it printed, like `run` does.
    pub fn finish(&self, mut child: std::process::Child, log: &Path) -> Outcome {
        let start = Instant::now();
        let status = child.wait().unwrap();
        let text = fs::read_to_string(log).unwrap_or_default();
        let outcome = Outcome {
            status: status.code().unwrap_or(-1),
            stderr: text,
            stdout: String::new(),
            syslog: Vec::new(),
            elapsed: start.elapsed(),
        };
        self.assert_no_secrets(&outcome);
        outcome
    }
}
