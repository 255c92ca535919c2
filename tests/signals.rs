//! Stop signals: the real binary, SIGTERM in each phase of a run that rewrites existing files
//! (IMDS, login, a secret read, staging, the commit, an on_change command). After every stop:
//! exit 75, no live token in the Vault simulator, no staged file, and the outputs are a whole
//! set (all as before, or all new), never a mix; commands the stop cut short run on the next
//! run. The phase is pinned by the simulators (an answer held back until the test's signal)
//! or, for staging and the commit, by watching the file system.
//!
//! Also the on_change budget: a command past the run's time is killed with its process group,
//! a command not started for lack of time stays owed, and one that cannot start is a warning.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use vaultboot_sim::{Fault, Gate};

const EX_TEMPFAIL: i32 = 75;
/// Outputs of the bulk secret: enough bytes, each synced, that staging takes a while.
const BULK: usize = 48;
const BULK_BYTES: usize = 256 * 1024;
/// Generous bound for a stopped run to end (the design: at most 5 s waiting for an answer in
/// flight, then at most 2 s for the revoke).
const STOP_BOUND: Duration = Duration::from_secs(20);

struct Stop {
    env: Env,
    cfg: PathBuf,
    outputs: Vec<PathBuf>,
    hook_log: PathBuf,
    /// While this file exists, the on_change command blocks (and starts a grandchild).
    block: PathBuf,
    grandchild: PathBuf,
    version: u32,
}

impl Stop {
    /// A rewriting set-up: AD join, API key and `bulk` outputs, each with an on_change command
    /// (`hook.sh LABEL`); `extra_on_change` replaces the API key's. A first run writes them.
    fn new(bulk: usize, deadline: &str, api_on_change: Option<&str>) -> Stop {
        let env = Env::with_policies(&["secret/data/ad/join", "secret/data/app/"]);
        let out = env.path("out");
        let hook = env.path("hook.sh");
        let hook_log = env.path("hooks.log");
        let block = env.path("block");
        let grandchild = env.path("grandchild.pid");
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$1\" >> '{log}'\nif [ -e '{block}' ]; then\n  sleep 300 &\n  echo $! > '{gc}'\n  wait\nfi\n",
                log = hook_log.display(),
                block = block.display(),
                gc = grandchild.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o700)).unwrap();
        let hook_argv = |label: &str| format!("[\"{}\", \"{label}\"]", hook.display());
        let api_cmd = api_on_change.map_or_else(|| hook_argv("api"), str::to_string);
        // A held answer must not be cut by its own timeout: the stop has to deal with it.
        let base = env.base().set("vault", "request_timeout", "30s");
        let base = base.set("retry", "deadline", deadline);
        let mut config = format!(
            "{base}
[[secret]]
name = \"ad-join\"
path = \"secret/data/ad/join\"
  [[secret.file]]
  path = \"{out}/run/ad-join.env\"
  format = \"env\"
  fields = [\"username\", \"password\"]
  on_change = {ad}

[[secret]]
name = \"api\"
path = \"secret/data/app/api\"
  [[secret.file]]
  path = \"{out}/app/api.json\"
  format = \"json\"
  fields = [\"api_key\"]
  on_change = {api_cmd}
",
            out = out.display(),
            ad = hook_argv("ad"),
        );
        let mut outputs = vec![out.join("run/ad-join.env"), out.join("app/api.json")];
        if bulk > 0 {
            config.push_str("\n[[secret]]\nname = \"bulk\"\npath = \"secret/data/app/bulk\"\n");
        }
        for i in 0..bulk {
            let path = out.join(format!("bulk/d{}/f{i:02}", i % 4));
            config.push_str(&format!(
                "  [[secret.file]]\n  path = \"{}\"\n  fields = [\"blob\"]\n  on_change = {}\n",
                path.display(),
                hook_argv("bulk")
            ));
            outputs.push(path);
        }
        let cfg = env.write_config(&config);
        let mut stop = Stop {
            env,
            cfg,
            outputs,
            hook_log,
            block,
            grandchild,
            version: 0,
        };
        stop.next_version();
        let out = stop.env.run(&stop.cfg);
        assert_eq!(out.status, 0, "first run: {}", out.log());
        stop
    }

    /// New values for every secret: every output changes on the next run.
    fn next_version(&mut self) {
        self.version += 1;
        let n = self.version;
        let vault = &self.env.vault;
        vault.put_kv2(
            "secret",
            "ad/join",
            serde_json::json!({"username": format!("svc-{n}"), "password": format!("pw-{n}-secret")}),
        );
        vault.put_kv2(
            "secret",
            "app/api",
            serde_json::json!({"api_key": format!("key-{n}-0123456789")}),
        );
        let blob = format!("blob-{n}-{}", ".".repeat(BULK_BYTES));
        vault.put_kv2("secret", "app/bulk", serde_json::json!({ "blob": blob }));
    }

    /// The version every output holds, or a panic naming the mix.
    fn outputs_version(&self, context: &str) -> u32 {
        let versions: Vec<(PathBuf, u32)> = self
            .outputs
            .iter()
            .map(|p| {
                let text = fs::read_to_string(p).unwrap_or_default();
                let v = (1..=self.version)
                    .rev()
                    .find(|n| {
                        text.contains(&format!("svc-{n}\""))
                            || text.contains(&format!("key-{n}-"))
                            || text.starts_with(&format!("blob-{n}-"))
                    })
                    .unwrap_or(0);
                (p.clone(), v)
            })
            .collect();
        let first = versions[0].1;
        assert!(
            versions.iter().all(|(_, v)| *v == first),
            "{context}: a torn set of outputs: {versions:?}"
        );
        first
    }

    fn staged_files(&self) -> Vec<PathBuf> {
        let mut all = snapshot(&self.env.path("out"));
        all.extend(snapshot(&self.env.state_dir()));
        all.into_keys()
            .filter(|p| p.to_string_lossy().contains(".vaultboot."))
            .collect()
    }

    fn record(&self) -> PathBuf {
        self.env.state_dir().join("pending_on_change.json")
    }

    fn hook_lines(&self) -> usize {
        fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Starts a run, waits for `ready` (polled), sends SIGTERM; the outcome and how long the
    /// run took to end after the signal.
    fn stop_when(&self, what: &str, mut ready: impl FnMut(&Stop) -> bool) -> (Outcome, Duration) {
        let log = self.env.path("stopped.log");
        let mut child = self.env.spawn(&self.cfg, &log);
        let start = Instant::now();
        while !ready(self) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{what}: the run ended before the moment to stop it: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(start.elapsed() < Duration::from_secs(30), "{what}: never");
            std::thread::sleep(Duration::from_millis(1));
        }
        let signalled = Instant::now();
        sigterm(&child);
        let out = self.env.finish(child, &log);
        (out, signalled.elapsed())
    }

    /// What holds after every stop.
    fn check_stopped(&self, what: &str, out: &Outcome, took: Duration) -> u32 {
        assert_eq!(out.status, EX_TEMPFAIL, "{what}: {}", out.log());
        assert!(out.stderr.contains("SIGTERM"), "{what}: {}", out.stderr);
        assert!(took < STOP_BOUND, "{what}: {took:?} to stop");
        assert_eq!(self.env.vault.live_tokens(), 0, "{what}: a live token");
        let staged = self.staged_files();
        assert!(staged.is_empty(), "{what}: staged files left: {staged:?}");
        self.outputs_version(what)
    }

    /// The next run, unblocked: succeeds, writes the current version, runs what was owed.
    fn recover(&mut self, what: &str) {
        let _ = fs::remove_file(&self.block);
        let hooks = self.hook_lines();
        let out = self.env.run(&self.cfg);
        assert_eq!(out.status, 0, "{what}: the next run: {}", out.log());
        assert_eq!(self.outputs_version(what), self.version, "{what}");
        assert!(
            self.hook_lines() > hooks,
            "{what}: no on_change ran after the stop"
        );
        assert!(!self.record().exists(), "{what}: the record stayed");
        assert_eq!(self.env.vault.live_tokens(), 0, "{what}");
    }
}

fn sigterm(child: &Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
}

/// A process is gone (or a zombie nobody reaped yet).
fn is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn grandchild_is_gone(path: &Path) -> bool {
    let pid: i32 = fs::read_to_string(path).unwrap().trim().parse().unwrap();
    // SIGKILL is delivered at once, but the kernel may take a moment to tear it down.
    let start = Instant::now();
    while !is_gone(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    is_gone(pid)
}

/// The held answer was taken: the request is in flight.
fn fault_taken(control: &vaultboot_sim::Control) -> bool {
    control.pending_faults() == 0
}

#[test]
fn sigterm_while_imds_is_read() {
    let mut s = Stop::new(0, "60s", None);
    s.next_version();
    let imds = s.env.imds.control().clone();
    imds.inject(Some("PUT"), "/latest/api/token", Fault::Hang, 1);
    let logins = s.env.vault.logins();
    let (out, took) = s.stop_when("IMDS", |_| fault_taken(&imds));
    assert_eq!(s.check_stopped("IMDS", &out, took), s.version - 1);
    assert_eq!(s.env.vault.logins(), logins, "logged in after the stop");
    s.env.imds.control().clear_faults();
    s.recover("IMDS");
}

/// The login is in flight when the signal comes, and Vault answers it after: that token is
/// revoked too.
#[test]
fn sigterm_while_the_login_is_in_flight() {
    let mut s = Stop::new(0, "60s", None);
    s.next_version();
    let vault = s.env.vault.control().clone();
    let gate = Gate::new();
    vault.inject(
        Some("POST"),
        "/v1/auth/aws/login",
        Fault::Hold(gate.clone()),
        1,
    );
    // Vault answers the login once the run has taken the signal (it says so): in flight
    // across the stop on any machine.
    let log = s.env.path("stopped.log");
    let opener = gate.clone();
    let answer_after_the_signal = std::thread::spawn(move || {
        let start = Instant::now();
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("SIGTERM received")
            && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        opener.release();
    });
    let logins = s.env.vault.logins();
    let (out, took) = s.stop_when("login", |_| gate.is_held());
    answer_after_the_signal.join().unwrap();
    // Vault answers the login it holds whether the run waited for it or not.
    let start = Instant::now();
    while s.env.vault.logins() == logins && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.env.vault.logins(), logins + 1, "Vault answered the login");
    assert_eq!(s.check_stopped("login", &out, took), s.version - 1);
    s.recover("login");
}

/// A secret read is held and never answered: the token is revoked at once, and the run ends
/// without the answer.
#[test]
fn sigterm_while_a_secret_read_is_in_flight() {
    let mut s = Stop::new(0, "60s", None);
    s.next_version();
    let vault = s.env.vault.control().clone();
    vault.inject(Some("GET"), "/v1/secret/data/app/api", Fault::Hang, 1);
    let (out, took) = s.stop_when("read", |_| fault_taken(&vault));
    let signalled = Instant::now() - took;
    assert_eq!(s.check_stopped("read", &out, took), s.version - 1);
    let revoke = vault
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/auth/token/revoke-self")
        .expect("no revoke");
    assert!(revoke.at > signalled, "the last revoke is the first run's");
    // At once, not after the wait for the answer in flight (5 s).
    assert!(
        revoke.at - signalled < Duration::from_secs(4),
        "revoked {:?} after the signal",
        revoke.at - signalled
    );
    s.env.vault.control().clear_faults();
    s.recover("read");
}

/// Stops as soon as the first staged file appears, and as soon as the first output is renamed:
/// the set stays whole either way (staged files removed, or the commit finished), and the
/// commands a finished commit owes run on the next run.
#[test]
fn sigterm_while_staging_and_during_the_commit() {
    let mut s = Stop::new(BULK, "60s", None);
    let mut landed = std::collections::BTreeMap::<&str, usize>::new();
    for round in 0..6 {
        s.next_version();
        // Commands block: the run cannot end before the signal.
        fs::write(&s.block, "").unwrap();
        let what = if round % 2 == 0 { "staging" } else { "commit" };
        let inodes: Vec<u64> = s
            .outputs
            .iter()
            .map(|p| fs::metadata(p).unwrap().ino())
            .collect();
        let (out, took) = s.stop_when(what, |s| {
            if what == "staging" {
                !s.staged_files().is_empty()
            } else {
                s.outputs
                    .iter()
                    .zip(&inodes)
                    .any(|(p, ino)| fs::metadata(p).is_ok_and(|m| m.ino() != *ino))
            }
        });
        let version = s.check_stopped(what, &out, took);
        let where_ = if version == s.version {
            assert!(
                s.record().exists(),
                "{what}: committed, commands owed, no record"
            );
            "after the commit"
        } else {
            "before the commit"
        };
        *landed.entry(where_).or_default() += 1;
        if what == "commit" {
            assert_eq!(version, s.version, "{what}: the commit was not finished");
        }
        s.recover(what);
    }
    eprintln!("stops landed: {landed:?}");
    assert!(
        landed.get("before the commit").copied().unwrap_or(0) >= 1,
        "{landed:?}"
    );
}

/// The on_change command runs (after the token was revoked) and blocks; the signal kills it
/// with its process group; the command stays owed and runs on the next run.
#[test]
fn sigterm_during_an_on_change_command() {
    let mut s = Stop::new(0, "60s", None);
    s.next_version();
    fs::write(&s.block, "").unwrap();
    let hooks = s.hook_lines();
    let mut live_while_running = None;
    let (out, took) = s.stop_when("on_change", |s| {
        let running = s.grandchild.exists() && s.hook_lines() > hooks;
        if running {
            live_while_running = Some(s.env.vault.live_tokens());
        }
        running
    });
    assert_eq!(
        live_while_running,
        Some(0),
        "the token lived while commands ran"
    );
    assert_eq!(s.check_stopped("on_change", &out, took), s.version);
    assert!(
        grandchild_is_gone(&s.grandchild),
        "the command's process group was not killed"
    );
    assert!(s.record().exists(), "the cut commands are not owed");
    s.recover("on_change");
}

/// Past the run's time (retry.deadline, at least 10 s after the files), a command is killed
/// with its process group; one not started for lack of time stays owed.
#[test]
fn an_on_change_command_past_the_time_is_killed_and_the_next_stays_owed() {
    let mut s = Stop::new(0, "2s", None);
    s.next_version();
    fs::write(&s.block, "").unwrap();
    let out = s.env.run(&s.cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    // Far less than the 60 s a command may take on its own.
    assert!(out.elapsed < Duration::from_secs(40), "{:?}", out.elapsed);
    assert!(out.stderr.contains("killed after"), "{}", out.stderr);
    assert!(out.stderr.contains("not started"), "{}", out.stderr);
    assert!(grandchild_is_gone(&s.grandchild), "its group lives on");
    assert!(s.record().exists(), "the command not started is not owed");
    assert_eq!(s.env.vault.live_tokens(), 0);
    s.recover("after the budget");
}

/// A command that cannot start (argv[0] missing) is a warning; the other commands run and
/// nothing stays owed.
#[test]
fn an_on_change_command_that_cannot_start_is_a_warning() {
    let mut s = Stop::new(0, "60s", Some("[\"/nonexistent/vaultboot-hook\"]"));
    s.next_version();
    let hooks = s.hook_lines();
    let out = s.env.run(&s.cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.stderr.contains("/nonexistent/vaultboot-hook") && out.stderr.contains("cannot start"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("1 on_change command(s) failed"),
        "{}",
        out.stderr
    );
    assert_eq!(s.hook_lines(), hooks + 1, "the other command did not run");
    assert!(
        !s.record().exists(),
        "a command that cannot start stays owed"
    );
    assert_eq!(s.env.vault.live_tokens(), 0);
}
