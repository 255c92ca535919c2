//! Sealed credentials through `systemd-creds`: the plaintext goes to it on its standard input
//! and the sealed form (or, to compare, the plaintext) comes back on its standard output,
//! never through a file, its argv or its environment.

use crate::untrusted;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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
    let stdin = child.stdin.take().map(OwnedFd::from);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (stdout, stderr) = (stdout.map(pipe_file), stderr.map(pipe_file));
    let done = AtomicBool::new(false);
    let pid = child.id();
    let (output, errors, status, fed) = std::thread::scope(|scope| {
        // One helper feeds stdin without blocking and watches the time, while this thread
        // reads: neither pipe can stall the other. A reader over its limit drops its end, and
        // the child's next write ends it (EPIPE).
        let helper = scope.spawn(|| feed_and_watch(stdin, input, pid, &done));
        let output = stdout.map(|s| untrusted::read_capped(s, limit));
        let errors = stderr.and_then(|s| untrusted::read_capped(s, MAX_STDERR).ok());
        let status = child.wait();
        done.store(true, Ordering::SeqCst);
        let fed = helper.join().unwrap_or(Err("its helper failed".into()));
        (output, errors, status, fed)
    });
    // Over the limit first: the child then dies of the pipe closed on it, which says less.
    if let Some(Err(untrusted::ReadError::TooLarge { limit })) = output {
        return Err(format!("its output is larger than {limit} bytes"));
    }
    fed?;
    let status = status.map_err(|e| format!("cannot wait: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{status}{}",
            last_line(errors.as_deref().map(Vec::as_slice))
        ));
    }
    match output {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(e)) => Err(format!("cannot read its output: {e}")),
        None => Err("no output".into()),
    }
}

/// A pipe read as a file: the one reading code for every file vaultboot reads.
fn pipe_file(pipe: impl Into<OwnedFd>) -> File {
    File::from(pipe.into())
}

/// Writes `input` to the child's stdin (non-blocking), closes it, and kills the child's group
/// when TIMEOUT passes or a stop is requested before `done`. Fails unless all of `input` went
/// in and the child was not killed.
fn feed_and_watch(
    stdin: Option<OwnedFd>,
    mut input: &[u8],
    pid: u32,
    done: &AtomicBool,
) -> Result<(), String> {
    let until = Instant::now() + TIMEOUT;
    let mut pipe = stdin.map(File::from);
    if let Some(p) = &pipe {
        if let Err(e) = fcntl(p, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)) {
            kill_group(pid);
            return Err(format!("cannot feed its input: {e}"));
        }
    }
    let mut failed = None;
    let mut pause = Duration::from_millis(1);
    while !done.load(Ordering::SeqCst) {
        if let Some(p) = &mut pipe {
            match p.write(input) {
                Ok(n) => input = &input[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => failed = Some(format!("cannot feed its input: {e}")),
            }
            if input.is_empty() || failed.is_some() {
                // Closed: end of input for the child.
                pipe = None;
                continue;
            }
        }
        if let Some(signal) = crate::stop::requested() {
            kill_group(pid);
            return Err(format!("killed: vaultboot is stopping ({signal})"));
        }
        if Instant::now() >= until {
            kill_group(pid);
            return Err(format!("killed after {}", crate::log::took(TIMEOUT)));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    failed.map_or(Ok(()), Err)
}

/// Its last message line, as `: message` (escaped: it is another program's text).
fn last_line(stderr: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(stderr.unwrap_or_default());
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(": {}", untrusted::escaped(line.trim())),
        None => String::new(),
    }
}

/// SIGKILL to the child's process group (it leads it); `wait` then reaps it.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far more than a pipe holds (64 KiB) each way: fed and read at once, nothing stalls,
    /// and every byte goes through.
    #[test]
    #[ignore = "needs root: systemd-creds seals with the host key"]
    fn root_a_secret_larger_than_a_pipe_goes_through_whole() {
        assert!(nix::unistd::geteuid().is_root(), "needs root");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = Sealed {
            name: "big".into(),
            with_key: "host",
        };
        let ciphertext = encrypt(&sealed, &big).unwrap();
        let back = decrypt("big", &ciphertext, big.len() as u64 + 1).unwrap();
        assert!(
            back.as_slice() == big.as_slice(),
            "{} bytes back",
            back.len()
        );
        let capped = decrypt("big", &ciphertext, 1000).unwrap_err();
        assert!(capped.contains("larger than 1000 bytes"), "{capped}");
        let renamed = decrypt("other", &ciphertext, big.len() as u64).unwrap_err();
        assert!(renamed.contains("exit status: 1"), "{renamed}");
    }
}
