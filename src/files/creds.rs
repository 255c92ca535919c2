//! Sealed credentials through `systemd-creds`: the plaintext goes to it on its standard input
//! and the sealed form (or, to compare, the plaintext) comes back on its standard output,
//! never through a file, its argv or its environment.

use crate::untrusted;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{pipe2, Pid};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
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
/// most `limit` bytes. Killed after TIMEOUT or on a stop signal. One thread: the input is in a
/// pipe before the child starts, and both outputs are read without blocking while it runs.
fn run(args: &[&str], input: &[u8], limit: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    let stdin = loaded_pipe(input).map_err(|e| format!("cannot pass its input: {e}"))?;
    let mut child = Command::new(SYSTEMD_CREDS)
        .args(args)
        .env_clear()
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {SYSTEMD_CREDS}: {e}"))?;
    let mut out = Capped::new(child.stdout.take().map(OwnedFd::from), limit);
    let mut err = Capped::new(child.stderr.take().map(OwnedFd::from), MAX_STDERR);
    let until = Instant::now() + TIMEOUT;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        let exited = child.try_wait().map_err(|e| format!("cannot wait: {e}"))?;
        // After the exit too: what it wrote last is still in the pipes.
        out.drain();
        err.drain();
        if out.over {
            kill(&mut child);
            return Err(format!("its output is larger than {limit} bytes"));
        }
        if let Some(status) = exited {
            break status;
        }
        if let Some(signal) = crate::stop::requested() {
            kill(&mut child);
            return Err(format!("killed: vaultboot is stopping ({signal})"));
        }
        if Instant::now() >= until {
            kill(&mut child);
            return Err(format!("killed after {}", crate::log::took(TIMEOUT)));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!("{status}{}", last_line(&err.bytes)));
    }
    out.failed.map_or(Ok(out.bytes), Err)
}

/// The read end of a pipe that already holds all of `input` (its write end closed): the child
/// reads it at its pace, and nothing here waits on it. Grown to fit a large input.
fn loaded_pipe(input: &[u8]) -> std::io::Result<OwnedFd> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    if input.len() > PIPE_DEFAULT {
        let size = i32::try_from(input.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        fcntl(&write, FcntlArg::F_SETPIPE_SZ(size))?;
    }
    File::from(write).write_all(input)?;
    Ok(read)
}

/// What a pipe's buffer holds without growing it.
const PIPE_DEFAULT: usize = 64 * 1024;

/// A child's output read as it comes, non-blocking, into a buffer allocated once (so that no
/// outgrown copy of a plaintext is left behind), at most `limit` bytes.
struct Capped {
    pipe: Option<File>,
    bytes: Zeroizing<Vec<u8>>,
    limit: usize,
    over: bool,
    failed: Option<String>,
}

impl Capped {
    fn new(pipe: Option<OwnedFd>, limit: u64) -> Capped {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX - 1);
        let pipe = pipe
            .filter(|p| fcntl(p, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok())
            .map(File::from);
        Capped {
            failed: pipe.is_none().then(|| "cannot read its output".into()),
            pipe,
            bytes: Zeroizing::new(Vec::with_capacity(limit + 1)),
            limit,
            over: false,
        }
    }

    /// Reads what is there now; closes the pipe at its end or past the limit.
    fn drain(&mut self) {
        let Some(pipe) = &mut self.pipe else { return };
        loop {
            let len = self.bytes.len();
            // One byte past the limit tells "over" from "exactly the limit".
            self.bytes.resize(self.limit + 1, 0);
            let read = pipe.read(&mut self.bytes[len..]);
            let n = *read.as_ref().unwrap_or(&0);
            self.bytes.truncate(len + n);
            match read {
                Ok(0) => {}
                Ok(_) if self.bytes.len() > self.limit => self.over = true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => self.failed = Some(format!("cannot read its output: {e}")),
            }
            // At its end, past the limit, or failed: no more reading.
            self.pipe = None;
            return;
        }
    }
}

/// Its last message line, as `: message` (escaped: it is another program's text).
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(": {}", untrusted::escaped(line.trim())),
        None => String::new(),
    }
}

/// SIGKILL to the child's process group (it leads it), then reaps it.
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
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
        // Its own message, not ours: the child's stderr is read too.
        let renamed = decrypt("other", &ciphertext, big.len() as u64).unwrap_err();
        assert!(renamed.contains("does not match"), "{renamed}");
    }
}
