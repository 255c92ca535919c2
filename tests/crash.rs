//! Crash safety: vaultboot killed with SIGKILL at hundreds of points of a run that rewrites
//! existing files. After every kill, every output is whole (entirely the old content or
//! entirely the new one) with the right mode and owner, and the nonce file is whole and is the
//! one Vault holds; the next run succeeds without "client nonce mismatch" and leaves no staged
//! file behind.
//!
//! Kill points come from three sources, none of them a hook in the agent:
//! * timing: kills at evenly spread delays over a whole run, stretched by simulator latency;
//! * observation: the test watches the file system and kills as soon as the k-th staged file
//!   appears, or the k-th target has been renamed into place (so between two renames), or
//!   every target is (before the on_change commands), or the first command has run (between
//!   two commands), or the nonce file is staged or renamed;
//! * faults: a request the simulator holds until the test lets it go (Fault::Hold) pins the
//!   agent in one step for as long as the test needs, however loaded the machine (login in
//!   flight, a secret read in flight, the revoke, which runs while the files are written and
//!   before the on_change commands).
//!
//! Every output but the certificate and key has an on_change command; after every kill, each
//! command has run at least once (in the killed run or the recovery), and whenever a target
//! was renamed while commands were still owed, the pending record is on disk. A new
//! certificate in place is always the one `issued_certificates.json` records.
//!
//! 243 kills in all; the five tests take about 50 s together on two cores (two run at a time;
//! each kill is followed by a complete run).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use vaultboot_sim::{Control, Fault, Gate};

const BULK: usize = 24;
const BULK_BYTES: usize = 4 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Crt,
    Key,
    EnvFile,
    Password,
    Json,
    Bulk,
}

struct Target {
    path: PathBuf,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    /// The label its on_change command appends to the hook log (shared labels: one command).
    hook: Option<&'static str>,
}

/// Every distinct on_change command of the configuration, by the label it writes.
const HOOKS: [&str; 4] = ["ad", "api", "bulk0", "bulk1"];

/// The KV values of one version of the secrets; PKI changes by itself on every issue.
struct Version {
    n: u32,
    username: String,
    password: String,
    api_key: String,
    blob: String,
}

struct Crash {
    env: Env,
    cfg: PathBuf,
    targets: Vec<Target>,
    version: Version,
    /// Content and inode of every target after the last completed run.
    old: BTreeMap<PathBuf, (Vec<u8>, u64)>,
    nonce_ino: u64,
    /// The log every on_change command appends its label to.
    hook_log: PathBuf,
    /// Kill points seen, by where they landed.
    landed: BTreeMap<&'static str, usize>,
    kills: usize,
    /// The request Vault holds during the next kill (`Fault::Hold`), let go after it.
    held: Option<Gate>,
    /// How long the last recovery run took (a whole run, but for what the killed one did).
    last_recovery: Duration,
}

fn ids() -> (u32, u32) {
    if is_root() {
        (65534, 65534)
    } else {
        let m = fs::metadata("/proc/self").unwrap();
        (m.uid(), m.gid())
    }
}

fn me() -> (u32, u32) {
    let m = fs::metadata("/proc/self").unwrap();
    (m.uid(), m.gid())
}

fn rand_word() -> String {
    let mut b = [0u8; 9];
    getrandom::getrandom(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Crash {
    fn new() -> Crash {
        let env = Env::with_policies(&[
            "pki_int/issue/web",
            "secret/data/ad/join",
            "secret/data/app/",
        ]);
        let out = env.path("out");
        let (other_uid, other_gid) = ids();
        let (my_uid, my_gid) = me();
        let mut targets = vec![
            Target {
                path: out.join("tls/server.crt"),
                kind: Kind::Crt,
                mode: 0o644,
                uid: my_uid,
                gid: my_gid,
                hook: None,
            },
            Target {
                path: out.join("tls/server.key"),
                kind: Kind::Key,
                mode: 0o640,
                uid: other_uid,
                gid: other_gid,
                hook: None,
            },
            Target {
                path: out.join("run/ad-join.env"),
                kind: Kind::EnvFile,
                mode: 0o600,
                uid: my_uid,
                gid: my_gid,
                hook: Some("ad"),
            },
            Target {
                path: out.join("run/ad-join.password"),
                kind: Kind::Password,
                mode: 0o400,
                uid: other_uid,
                gid: other_gid,
                hook: Some("ad"),
            },
            Target {
                path: out.join(format!("app/{INSTANCE}.json")),
                kind: Kind::Json,
                mode: 0o640,
                uid: my_uid,
                gid: my_gid,
                hook: Some("api"),
            },
        ];
        for i in 0..BULK {
            let other = i % 3 == 0;
            targets.push(Target {
                path: out.join(format!("bulk/d{}/f{i:02}", i % 2)),
                kind: Kind::Bulk,
                mode: if i % 2 == 0 { 0o600 } else { 0o640 },
                uid: if other { other_uid } else { my_uid },
                gid: if other { other_gid } else { my_gid },
                hook: Some(["bulk0", "bulk1"][i % 2]),
            });
        }
        let hook = env.path("hook.sh");
        let hook_log = env.path("hooks.log");
        fs::write(
            &hook,
            format!("#!/bin/sh\necho \"$1\" >> '{}'\n", hook_log.display()),
        )
        .unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o700)).unwrap();
        let mut config = env.base_config();
        let file = |t: &Target, fields: &str, extra: &str| {
            let on_change = t
                .hook
                .map(|label| format!("  on_change = [\"{}\", \"{label}\"]\n", hook.display()))
                .unwrap_or_default();
            format!(
                "  [[secret.file]]\n  path = \"{}\"\n  fields = {fields}\n  mode = \"{:04o}\"\n  owner = \"{}\"\n  group = \"{}\"\n{extra}{on_change}",
                t.path.display(),
                t.mode,
                t.uid,
                t.gid
            )
        };
        // renew_before beyond the lifetime: a certificate is issued on every run, so that
        // every run has a PKI issue to be killed in and a key to replace.
        config.push_str(
            "\n[[secret]]\nname = \"tls\"\npath = \"pki_int/issue/web\"\nrenew_before = \"100000h\"\ndata = { common_name = \"{{ local-hostname }}\", ttl = \"72h\" }\n",
        );
        config.push_str(&file(&targets[0], "[\"certificate\", \"ca_chain?\"]", ""));
        config.push_str(&file(&targets[1], "[\"private_key\"]", ""));
        config.push_str("\n[[secret]]\nname = \"ad-join\"\npath = \"secret/data/ad/join\"\n");
        config.push_str(&file(
            &targets[2],
            "[\"username\", \"password\"]",
            "  format = \"env\"\n",
        ));
        config.push_str(&file(&targets[3], "[\"password\"]", ""));
        config.push_str("\n[[secret]]\nname = \"api\"\npath = \"secret/data/app/api\"\n");
        config.push_str(&file(&targets[4], "[\"api_key\"]", "  format = \"json\"\n"));
        config.push_str("\n[[secret]]\nname = \"bulk\"\npath = \"secret/data/app/bulk\"\n");
        for t in &targets[5..] {
            config.push_str(&file(t, "[\"blob\"]", ""));
        }
        let cfg = env.write_config(&config);
        let mut crash = Crash {
            env,
            cfg,
            targets,
            version: Version {
                n: 0,
                username: String::new(),
                password: String::new(),
                api_key: String::new(),
                blob: String::new(),
            },
            old: BTreeMap::new(),
            nonce_ino: 0,
            hook_log,
            landed: BTreeMap::new(),
            kills: 0,
            held: None,
            last_recovery: Duration::ZERO,
        };
        crash.next_version();
        let out = crash.env.run(&crash.cfg);
        assert_eq!(out.status, 0, "first run: {}", out.log());
        crash.after_good_run();
        crash
    }

    /// New KV values: every output changes on the next run.
    fn next_version(&mut self) {
        let n = self.version.n + 1;
        self.version = Version {
            n,
            username: format!("svc-{n}-{}", rand_word()),
            password: format!("pw-{n}-{}", rand_word()),
            api_key: format!("key-{n}-{}", rand_word()),
            blob: format!("blob-{n}-{}-{}", rand_word(), ".".repeat(BULK_BYTES)),
        };
        let v = &self.version;
        self.env.vault.put_kv2(
            "secret",
            "ad/join",
            serde_json::json!({"username": v.username, "password": v.password}),
        );
        self.env.vault.put_kv2(
            "secret",
            "app/api",
            serde_json::json!({"api_key": v.api_key}),
        );
        self.env
            .vault
            .put_kv2("secret", "app/bulk", serde_json::json!({"blob": v.blob}));
    }

    fn expected(&self, kind: Kind) -> Option<Vec<u8>> {
        let v = &self.version;
        Some(
            match kind {
                Kind::EnvFile => {
                    format!("username=\"{}\"\npassword=\"{}\"\n", v.username, v.password)
                }
                Kind::Password => v.password.clone(),
                Kind::Json => format!("{{\"api_key\":\"{}\"}}\n", v.api_key),
                Kind::Bulk => v.blob.clone(),
                Kind::Crt | Kind::Key => return None,
            }
            .into_bytes(),
        )
    }

    fn record_path(&self) -> PathBuf {
        self.env.state_dir().join("pending_on_change.json")
    }

    /// Every label the on_change commands wrote, in order.
    /// What `<state>/issued_certificates.json` says Vault issued for `path`.
    fn recorded_fingerprint(&self, path: &std::path::Path) -> Option<String> {
        let record = fs::read(self.env.state_dir().join("issued_certificates.json")).ok()?;
        let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
        record["certificates"]
            .as_array()?
            .iter()
            .find(|c| c["path"] == path.to_str().unwrap())
            .map(|c| c["sha256"].as_str().unwrap().to_string())
    }

    fn hook_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The distinct commands that ran since the hook log had `from` lines.
    fn hooks_ran_since(&self, from: usize) -> BTreeSet<String> {
        self.hook_lines().into_iter().skip(from).collect()
    }

    fn nonce_path(&self) -> PathBuf {
        self.env.state_dir().join("nonce.json")
    }

    /// The nonce file is whole, and it is the nonce Vault holds for this instance.
    fn check_nonce(&self, context: &str) -> Option<String> {
        let bound = self.env.vault.client_nonce("aws", INSTANCE);
        let on_disk = match fs::read(self.nonce_path()) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "{context}: nonce.json is not whole ({e}): {} bytes",
                        bytes.len()
                    )
                });
                assert_eq!(v["instance_id"], INSTANCE, "{context}");
                let n = v["nonce"].as_str().unwrap().to_string();
                assert!(n.len() >= 43, "{context}: a short nonce");
                let m = fs::metadata(self.nonce_path()).unwrap();
                assert_eq!(m.mode() & 0o777, 0o600, "{context}: nonce mode");
                Some(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{context}: {e}"),
        };
        if let Some(b) = &bound {
            assert_eq!(
                on_disk.as_ref(),
                Some(b),
                "{context}: Vault holds a nonce that is not on disk"
            );
        }
        on_disk
    }

    /// After a completed run: every target is this version's, nothing staged is left.
    fn after_good_run(&mut self) {
        let issued_keys: Vec<String> = self
            .env
            .vault
            .issued_secrets()
            .into_iter()
            .filter(|s| s.contains("PRIVATE KEY"))
            .collect();
        for t in &self.targets {
            let content = fs::read(&t.path).unwrap();
            match (t.kind, self.expected(t.kind)) {
                (_, Some(want)) => assert!(content == want, "{} is not current", t.path.display()),
                // A key just issued (a killed run's held issue may finish after ours), and the
                // certificate's: checked below.
                (Kind::Key, None) => assert!(
                    content
                        != self
                            .old
                            .get(&t.path)
                            .map(|o| o.0.clone())
                            .unwrap_or_default()
                        && issued_keys
                            .iter()
                            .any(|k| k.trim_end().as_bytes() == content.as_slice()),
                    "the key is not a new one"
                ),
                _ => {}
            }
        }
        let crt = fs::read_to_string(&self.targets[0].path).unwrap();
        tls_check::serves(
            &crt,
            &fs::read_to_string(&self.targets[1].path).unwrap(),
            &self.env.vault.pki_ca_pem(),
            "ip-10-0-1-23.ec2.internal",
        );
        let staged = self.staged_files();
        assert!(staged.is_empty(), "staged files left behind: {staged:?}");
        assert!(
            !self.record_path().exists(),
            "the pending on_change record was not cleared"
        );
        self.check_modes("after a completed run");
        self.old = self
            .targets
            .iter()
            .map(|t| {
                let m = fs::metadata(&t.path).unwrap();
                (t.path.clone(), (fs::read(&t.path).unwrap(), m.ino()))
            })
            .collect();
        self.check_nonce("after a completed run").unwrap();
        self.nonce_ino = fs::metadata(self.nonce_path()).unwrap().ino();
    }

    fn check_modes(&self, context: &str) {
        for t in &self.targets {
            let m = fs::symlink_metadata(&t.path)
                .unwrap_or_else(|e| panic!("{context}: {} is gone: {e}", t.path.display()));
            assert!(m.is_file(), "{context}: {}", t.path.display());
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (t.mode, t.uid, t.gid),
                "{context}: mode or owner of {}",
                t.path.display()
            );
        }
    }

    /// Every staged file a kill left has its target's mode and owner from before its first
    /// byte: one with content has exactly the target's (a state file's: 0600, ours). One
    /// killed before its fchmod is still empty and 0600: ours (killed before the fchown), or
    /// already the target's owner (killed between the two).
    fn check_staged(&self, context: &str) {
        for staged in self.staged_files() {
            let m = fs::symlink_metadata(&staged).unwrap();
            let name = staged.file_name().unwrap().to_str().unwrap();
            let target_name = name[1..].split(".vaultboot.").next().unwrap();
            let target = staged.with_file_name(target_name);
            let ours = (
                0o600,
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            );
            let want = match self.targets.iter().find(|t| t.path == target) {
                Some(t) => (t.mode, t.uid, t.gid),
                None => ours,
            };
            let got = (m.mode() & 0o7777, m.uid(), m.gid());
            assert!(m.is_file(), "{context}: {} is not a file", staged.display());
            assert!(
                got == want
                    || (m.len() == 0
                        && got.0 == 0o600
                        && [(ours.1, ours.2), (want.1, want.2)].contains(&(got.1, got.2))),
                "{context}: {} has mode {:04o} uid {} gid {} ({} bytes), its target wants {:04o} {} {}",
                staged.display(),
                got.0,
                got.1,
                got.2,
                m.len(),
                want.0,
                want.1,
                want.2
            );
        }
    }

    /// Staged files anywhere vaultboot writes (outputs and state).
    fn staged_files(&self) -> Vec<PathBuf> {
        let mut all = snapshot(&self.env.path("out"));
        all.extend(snapshot(&self.env.state_dir()));
        all.into_keys()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(".vaultboot."))
            })
            .collect()
    }

    /// Checks the state after a kill, and classifies where the kill landed.
    fn check_after_kill(
        &mut self,
        context: &str,
        keys_before: usize,
        hooks_before: usize,
    ) -> &'static str {
        self.check_modes(context);
        let keys_now: Vec<String> = self
            .env
            .vault
            .issued_secrets()
            .into_iter()
            .filter(|s| s.contains("PRIVATE KEY"))
            .collect();
        let new_keys = &keys_now[keys_before.min(keys_now.len())..];
        let mut fresh = 0;
        let mut crt_new = false;
        let mut key_new = false;
        for t in &self.targets {
            let content = fs::read(&t.path).unwrap();
            let (old, _) = &self.old[&t.path];
            if &content == old {
                continue;
            }
            fresh += 1;
            match t.kind {
                Kind::Key => {
                    key_new = true;
                    assert!(
                        new_keys
                            .iter()
                            .any(|k| k.trim_end().as_bytes() == content.as_slice()),
                        "{context}: {} is neither the old key nor one just issued",
                        t.path.display()
                    );
                }
                Kind::Crt => {
                    crt_new = true;
                    let text = String::from_utf8(content).unwrap();
                    assert_eq!(
                        text.matches("-----BEGIN CERTIFICATE-----").count(),
                        2,
                        "{context}: partial certificate file"
                    );
                    assert!(text.ends_with("-----END CERTIFICATE-----"), "{context}");
                    // Write-ahead: a certificate Vault issued is never in place unrecorded.
                    assert_eq!(
                        self.recorded_fingerprint(&t.path).as_deref(),
                        Some(fingerprint(&text).as_str()),
                        "{context}: the new certificate in place is not the one recorded"
                    );
                }
                kind => assert!(
                    Some(content) == self.expected(kind),
                    "{context}: {} is neither old nor new",
                    t.path.display()
                ),
            }
        }
        if crt_new && key_new {
            tls_check::serves(
                &fs::read_to_string(&self.targets[0].path).unwrap(),
                &fs::read_to_string(&self.targets[1].path).unwrap(),
                &self.env.vault.pki_ca_pem(),
                "ip-10-0-1-23.ec2.internal",
            );
        }
        // A rewriting run never touches the nonce file.
        self.check_nonce(context).expect("nonce.json is gone");
        assert_eq!(
            fs::metadata(self.nonce_path()).unwrap().ino(),
            self.nonce_ino,
            "{context}: the nonce file was rewritten"
        );
        self.check_staged(context);
        let staged = !self.staged_files().is_empty();
        let ran = self.hooks_ran_since(hooks_before);
        // Write-ahead: once a target was renamed, every command not yet run is owed on disk.
        if fresh > 0 && ran.len() < HOOKS.len() {
            let record: serde_json::Value =
                serde_json::from_slice(&fs::read(self.record_path()).unwrap_or_else(|e| {
                    panic!("{context}: a target was renamed, commands are owed, no record: {e}")
                }))
                .unwrap_or_else(|e| panic!("{context}: the record is not whole: {e}"));
            let owed: BTreeSet<&str> = record["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            for t in self.targets.iter().filter(|t| t.hook.is_some()) {
                assert!(
                    owed.contains(t.path.to_str().unwrap()),
                    "{context}: {} is not in the record",
                    t.path.display()
                );
            }
        }
        match fresh {
            0 if staged => "while staging",
            0 => "before staging",
            n if n == self.targets.len() && ran.len() == HOOKS.len() => "after the renames",
            n if n == self.targets.len() && ran.is_empty() => {
                "after the renames, before the commands"
            }
            n if n == self.targets.len() => "between the on_change commands",
            _ => "between two renames",
        }
    }

    /// The run after a kill: succeeds, reuses the nonce, cleans up, writes this version.
    fn recover(&mut self, context: &str) {
        // spawn + finish: scanned for secrets like Env::run, without its syslog listener.
        let log = self.env.path("recovery.log");
        let start = Instant::now();
        let child = self.env.spawn(&self.cfg, &log);
        let out = self.env.finish(child, &log);
        self.last_recovery = start.elapsed();
        assert_eq!(
            out.status,
            0,
            "{context}: the run after the kill: {}",
            out.log()
        );
        assert!(!out.log().contains("nonce mismatch"), "{context}");
        assert!(
            out.stderr.contains("nonce reused"),
            "{context}: {}",
            out.stderr
        );
        assert_eq!(self.env.vault.nonce_mismatches(), 0, "{context}");
        self.after_good_run();
    }

    fn keys_issued(&self) -> usize {
        self.env
            .vault
            .issued_secrets()
            .iter()
            .filter(|s| s.contains("PRIVATE KEY"))
            .count()
    }

    /// One kill: a new version, a run killed at `when`, the checks, the recovery run.
    fn kill_one(&mut self, label: &str, mut when: When<'_>) {
        self.next_version();
        let keys_before = self.keys_issued();
        let hooks_before = self.hook_lines().len();
        let log = self.env.path("killed.log");
        let start = Instant::now();
        let mut child = self.env.spawn(&self.cfg, &log);
        match &mut when {
            When::After(d) => std::thread::sleep(d.saturating_sub(start.elapsed())),
            When::Seen(seen) => {
                while !seen(self)
                    && start.elapsed() < Duration::from_secs(20)
                    && child.try_wait().unwrap().is_none()
                {
                    std::thread::yield_now();
                }
            }
        }
        let _ = child.kill();
        let out = self.env.finish(child, &log);
        if let Some(gate) = self.held.take() {
            let_go(self.env.vault.control(), &gate, Gate::release);
        }
        self.kills += 1;
        let context = format!("kill #{} ({label}, status {})", self.kills, out.status);
        let landed = self.check_after_kill(&context, keys_before, hooks_before);
        let landed = if out.status == 0 {
            "completed before the kill"
        } else {
            landed
        };
        *self.landed.entry(landed).or_default() += 1;
        self.recover(&context);
        // Every target changed in this round, so every command was owed: each ran at least
        // once, in the killed run or in the recovery (which may have found its file current).
        let ran = self.hooks_ran_since(hooks_before);
        for hook in HOOKS {
            assert!(
                ran.contains(hook),
                "{context}: on_change {hook:?} never ran after the kill ({} landed): ran {ran:?}",
                landed
            );
        }
    }

    fn report(&self, name: &str) {
        eprintln!("{name}: {} kills, landed {:?}", self.kills, self.landed);
    }

    fn inodes_changed(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| {
                fs::symlink_metadata(&t.path)
                    .map(|m| m.ino() != self.old[&t.path].1)
                    .unwrap_or(false)
            })
            .count()
    }

    fn staged_count(&self) -> usize {
        ["tls", "run", "app", "bulk/d0", "bulk/d1"]
            .iter()
            .map(|d| {
                fs::read_dir(self.env.path("out").join(d))
                    .map(|rd| {
                        rd.flatten()
                            .filter(|e| e.file_name().to_string_lossy().contains(".vaultboot."))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }

    /// How long an unkilled run takes with the current latency.
    fn measure(&mut self) -> Duration {
        let mut times = Vec::new();
        for _ in 0..3 {
            self.next_version();
            let log = self.env.path("measure.log");
            let start = Instant::now();
            let child = self.env.spawn(&self.cfg, &log);
            let out = self.env.finish(child, &log);
            times.push(start.elapsed());
            assert_eq!(out.status, 0, "{}", out.stderr);
            self.after_good_run();
        }
        // The fastest: kills are spread over the run, not past its end.
        times.into_iter().min().unwrap()
    }
}

/// When to kill: after a delay, or as soon as the test sees something happen.
enum When<'a> {
    After(Duration),
    Seen(Box<dyn FnMut(&Crash) -> bool + 'a>),
}

/// SHA-256 (hex) of the DER of the first certificate in `pem`, as vaultboot records it.
fn fingerprint(pem: &str) -> String {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// After a kill: the request held by `gate` is let go (`Gate::release`: Vault acts on it as it
/// would on a request whose client died; `Gate::reset`: it never reaches Vault), waited for, and
/// a hold the agent never reached is dropped.
fn let_go(control: &Control, gate: &Gate, how: fn(&Gate)) {
    control.clear_faults();
    how(gate);
    assert!(
        gate.wait_done(Duration::from_secs(60)),
        "the held request was never let go"
    );
}

fn set_latency(c: &Crash, d: Duration) {
    c.env.vault.control().set_latency(d, Duration::ZERO);
    c.env.imds.control().set_latency(d, Duration::ZERO);
}

/// 120 kills at evenly spread delays over a whole run (stretched by 8 ms per request).
#[test]
fn killed_at_evenly_spread_times() {
    let mut c = Crash::new();
    set_latency(&c, Duration::from_millis(8));
    // The length of a run follows the machine's load, which changes while the test runs
    // (kills planned on an early, fast run all landed before staging once the machine got
    // busier): the fastest of three runs first, then a running average of the recovery runs,
    // shortened a little (kills after the end are wasted).
    let mut whole = c.measure();
    eprintln!("kills spread over {whole:?} of a rewriting run at first (8 ms per request)");
    const POINTS: u32 = 120;
    for i in 0..POINTS {
        let span = whole * 85 / 100;
        let at = span * (2 * i + 1) / (2 * POINTS);
        set_latency(&c, Duration::from_millis(8));
        c.kill_one(&format!("at {at:?} of {span:?}"), When::After(at));
        set_latency(&c, Duration::ZERO);
        whole = (whole * 3 + c.last_recovery) / 4;
    }
    c.report("evenly spread");
    assert!(
        c.landed.get("before staging").copied().unwrap_or(0) >= 20,
        "{:?}",
        c.landed
    );
    assert!(c.landed.len() >= 3, "{:?}", c.landed);
}

/// Kills while the files are staged and between the renames, located by watching the file
/// system: as soon as k staged files exist, or k targets have been renamed into place.
#[test]
fn killed_while_staging_and_between_renames() {
    let mut c = Crash::new();
    let n = c.targets.len();
    for k in 1..=n {
        c.kill_one(
            &format!("{k} staged"),
            When::Seen(Box::new(move |c: &Crash| c.staged_count() >= k)),
        );
    }
    for k in 1..n {
        c.kill_one(
            &format!("{k} renamed"),
            When::Seen(Box::new(move |c: &Crash| c.inodes_changed() >= k)),
        );
    }
    c.report("staging and renames");
    let between = c.landed.get("between two renames").copied().unwrap_or(0);
    let staging = c.landed.get("while staging").copied().unwrap_or(0);
    assert!(between >= 5, "{:?}", c.landed);
    assert!(staging >= 5, "{:?}", c.landed);
}

/// Kills after the last rename: as soon as every target is renamed (mostly before the first
/// on_change command), and as soon as the first command has run (so between two commands).
/// Every command runs at least once afterwards (checked by `kill_one`).
#[test]
fn killed_between_the_renames_and_the_on_change_commands() {
    let mut c = Crash::new();
    let n = c.targets.len();
    for i in 0..10 {
        // Half of them with the revoke held by Vault (the commands wait for it), so that at
        // least those land before the first command however loaded the machine; the others
        // race the agent to its first command.
        if i % 2 == 0 {
            let gate = Gate::new();
            c.env.vault.control().inject(
                Some("POST"),
                "/v1/auth/token/revoke-self",
                Fault::Hold(gate.clone()),
                1,
            );
            c.held = Some(gate);
        }
        c.kill_one(
            "every target renamed",
            When::Seen(Box::new(move |c: &Crash| c.inodes_changed() >= n)),
        );
    }
    for _ in 0..10 {
        let before = c.hook_lines().len();
        c.kill_one(
            "the first on_change ran",
            When::Seen(Box::new(move |c: &Crash| c.hook_lines().len() > before)),
        );
    }
    c.report("renames and commands");
    let before_commands = c
        .landed
        .get("after the renames, before the commands")
        .copied()
        .unwrap_or(0);
    let between = c
        .landed
        .get("between the on_change commands")
        .copied()
        .unwrap_or(0);
    assert!(before_commands >= 3, "{:?}", c.landed);
    assert!(between >= 5, "{:?}", c.landed);
}

/// Kills pinned in one step by an answer the simulator holds back.
#[test]
fn killed_in_flight() {
    let mut c = Crash::new();
    for (label, method, path) in [
        ("login in flight", "POST", "/v1/auth/aws/login"),
        ("secret read in flight", "GET", "/v1/secret/data/app/bulk"),
        ("PKI issue in flight", "POST", "/v1/pki_int/issue/web"),
        ("revoke in flight", "POST", "/v1/auth/token/revoke-self"),
    ] {
        for _ in 0..3 {
            let gate = Gate::new();
            c.env
                .vault
                .control()
                .inject(Some(method), path, Fault::Hold(gate.clone()), 1);
            c.held = Some(gate.clone());
            let revoking = label == "revoke in flight";
            let n = c.targets.len();
            // Killed while Vault holds the request; the revoke runs while the files are
            // written: killed once they are all in place, while the commands wait for it.
            c.kill_one(
                label,
                When::Seen(Box::new(move |c: &Crash| {
                    gate.is_held() && (!revoking || c.inodes_changed() >= n)
                })),
            );
        }
    }
    c.report("in flight");
    assert_eq!(
        c.landed
            .get("after the renames, before the commands")
            .copied()
            .unwrap_or(0),
        3,
        "the on_change commands wait for the revoke: {:?}",
        c.landed
    );
}

/// A first boot, killed around the moment the nonce is generated, saved and first sent: Vault
/// never holds a nonce that is not whole on disk, and the next run logs in with it.
#[test]
fn killed_around_the_first_nonce() {
    let c = Crash::new();
    let env = &c.env;
    let state = env.state_dir();
    let mut landed: BTreeMap<&str, usize> = BTreeMap::new();
    let first_boot = || {
        for e in fs::read_dir(&state).unwrap().flatten() {
            fs::remove_file(e.path()).unwrap();
        }
        env.vault.delete_access_list_entry("aws", INSTANCE);
    };
    let staged_nonce = || {
        fs::read_dir(&state)
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".nonce.json.vaultboot.")
                })
            })
            .unwrap_or(false)
    };
    let nonce_file = || state.join("nonce.json").exists();
    let kill_and_check = |label: &str, child: Child, landed: &mut BTreeMap<&str, usize>| {
        let log = env.path("nonce-kill.log");
        let out = env.finish(child, &log);
        let context = format!("{label} (status {})", out.status);
        let bound = env.vault.client_nonce("aws", INSTANCE);
        let on_disk = c.check_nonce(&context);
        let where_ = match (&on_disk, &bound, out.status) {
            (_, _, 0) => "completed",
            (None, _, _) => "before the nonce was saved",
            (Some(_), None, _) => "nonce saved, not yet bound",
            (Some(_), Some(_), _) => "nonce saved and bound",
        };
        *landed.entry(where_).or_default() += 1;
        // The next boot: the same nonce, accepted.
        let next = env.path("next-boot.log");
        let out = env.finish(env.spawn(&c.cfg, &next), &next);
        assert_eq!(out.status, 0, "{context}: {}", out.log());
        assert!(!out.log().contains("nonce mismatch"), "{context}");
        let after = c.check_nonce(&context).unwrap();
        if let Some(n) = on_disk {
            assert_eq!(after, n, "{context}: the saved nonce was replaced");
        }
        assert!(
            !fs::read_dir(&state)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".vaultboot.")),
            "{context}: a staged nonce was left behind"
        );
    };
    let log = env.path("nonce-kill.log");
    let hold_login = || {
        let gate = Gate::new();
        let login = Fault::Hold(gate.clone());
        env.vault
            .control()
            .inject(Some("POST"), "/v1/auth/aws/login", login, 1);
        gate
    };
    let mut points = 0;
    // Watching the state directory, the login held: the kill lands before Vault sees it
    // (then the login is dropped unseen), so the renamed nonce is saved and not yet bound.
    for (label, wait_for) in [("nonce staged", 0usize), ("nonce renamed", 1)] {
        for _ in 0..6 {
            first_boot();
            let gate = hold_login();
            let mut child = env.spawn(&c.cfg, &log);
            let start = Instant::now();
            while !(if wait_for == 0 {
                staged_nonce()
            } else {
                nonce_file()
            }) && !gate.is_held()
                && start.elapsed() < Duration::from_secs(60)
                && child.try_wait().unwrap().is_none()
            {
                std::thread::yield_now();
            }
            let _ = child.kill();
            let _ = child.wait();
            let_go(env.vault.control(), &gate, Gate::reset);
            kill_and_check(label, child, &mut landed);
            points += 1;
        }
    }
    // The login in flight: held by the simulator until the agent is killed, then let go:
    // Vault binds the nonce after the agent is gone.
    for _ in 0..6 {
        first_boot();
        let gate = hold_login();
        let mut child = env.spawn(&c.cfg, &log);
        assert!(
            gate.wait_held(Duration::from_secs(60)),
            "the login never came"
        );
        let _ = child.kill();
        let _ = child.wait();
        let_go(env.vault.control(), &gate, Gate::release);
        assert!(
            env.vault.client_nonce("aws", INSTANCE).is_some(),
            "the held login was let go but Vault bound no nonce"
        );
        kill_and_check("login in flight", child, &mut landed);
        points += 1;
    }
    // Evenly spread over the start of a first boot, up to the login.
    set_latency(&c, Duration::from_millis(5));
    for i in 0..16u32 {
        first_boot();
        let at = Duration::from_millis(3) * i;
        let mut child = env.spawn(&c.cfg, &log);
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        kill_and_check(&format!("first boot at {at:?}"), child, &mut landed);
        points += 1;
    }
    set_latency(&c, Duration::ZERO);
    eprintln!("first nonce: {points} kills, landed {landed:?}");
    assert!(
        landed.get("nonce saved and bound").copied().unwrap_or(0) >= 6,
        "{landed:?}"
    );
    assert!(
        landed
            .get("nonce saved, not yet bound")
            .copied()
            .unwrap_or(0)
            >= 3,
        "{landed:?}"
    );
}
