//! Sealed credentials through `systemd-creds`: the plaintext goes to it on its standard input
//! and the sealed form (or, to compare, the plaintext) comes back on its standard output,
//! never through a file, its argv or its environment.

use crate::untrusted;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// By absolute path: PATH is not trusted with the secrets.
pub const SYSTEMD_CREDS: &str = "/usr/bin/systemd-creds";
/// One call running longer than this is killed (a TPM2 can be slow, not this slow).
const TIMEOUT: Duration = Duration::from_secs(30);
/// What `systemd-creds encrypt` adds to a credential (header, IV, tag, base64): far below.
const SEAL_OVERHEAD: u64 = 64 * 1024;
/// Its messages, kept for ours.
const MAX_STDERR: u64 = 4096;

/// A credential written through `systemd-creds encrypt --name=NAME --with-key=KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub name: String,
    pub with_key: &'static str,
}

/// The most a sealed form of `plaintext_len` bytes can take (base64 of it and the overhead).
pub fn max_sealed_len(plaintext_len: usize) -> u64 {
    (plaintext_len as u64).div_ceil(3) * 4 + SEAL_OVERHEAD
}

/// `plaintext` sealed for the credential `sealed.name`.
pub fn encrypt(sealed: &Sealed, plaintext: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let name = format!("--name={}", sealed.name);
    let key = format!("--with-key={}", sealed.with_key);
    let limit = max_sealed_len(plaintext.len());
    run(&["encrypt", &name, &key, "-", "-"], plaintext, limit)
        .map_err(|m| format!("systemd-creds encrypt --with-key={}: {m}", sealed.with_key))
}

/// The plaintext of the sealed credential `ciphertext` named `name`, if at most `limit` bytes.
pub fn decrypt(name: &str, ciphertext: &[u8], limit: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    let name = format!("--name={name}");
    run(&["decrypt", &name, "-", "-"], ciphertext, limit)
        .map_err(|m| format!("systemd-creds decrypt: {m}"))
}

/// Runs systemd-creds with `args`, `input` on its stdin, an empty environment; its stdout, at
/// most `limit` bytes. Killed after TIMEOUT or on a stop signal.
fn run(args: &[&str], input: &[u8], limit: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut child = Command::new(SYSTEMD_CREDS)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {SYSTEMD_CREDS}: {e}"))?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    std::thread::scope(|scope| {
        // Each pipe on its own thread: a large input and output cannot block each other. A
        // reader over its limit drops its end, and the child's next write ends it (EPIPE).
        let writer = scope.spawn(move || stdin.map(|mut s| s.write_all(input)));
        let reader = scope.spawn(move || stdout.map(|s| untrusted::read_capped(s, limit)));
        let errors = scope.spawn(move || stderr.map(|s| untrusted::read_capped(s, MAX_STDERR)));
        let status = wait(&mut child, Instant::now() + TIMEOUT);
        let _ = writer.join();
        let output = reader.join().ok().flatten();
        let errors = errors.join().ok().flatten().and_then(Result::ok);
        let status = status?;
        if !status.success() {
            return Err(format!(
                "{status}{}",
                last_line(errors.as_deref().map(Vec::as_slice))
            ));
        }
        match output {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(untrusted::ReadError::TooLarge { limit })) => {
                Err(format!("its output is larger than {limit} bytes"))
            }
            Some(Err(e)) => Err(format!("cannot read its output: {e}")),
            None => Err("no output".into()),
        }
    })
}

/// Its last message line, as `: message` (escaped: it is another program's text).
fn last_line(stderr: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(stderr.unwrap_or_default());
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(": {}", untrusted::escaped(line.trim())),
        None => String::new(),
    }
}

/// The child's exit status; killed with its group at `until` or on a stop signal.
fn wait(child: &mut Child, until: Instant) -> Result<ExitStatus, String> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
        if let Some(signal) = crate::stop::requested() {
            kill_group(child);
            return Err(format!("killed: vaultboot is stopping ({signal})"));
        }
        if Instant::now() >= until {
            kill_group(child);
            return Err(format!("killed after {}", crate::log::took(TIMEOUT)));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
