//! The state directory (`state.dir`) and the small files vaultboot keeps in it (`nonce.json`,
//! `pending_on_change.json`): the directory is ours and private, a file is read only when
//! nobody else could have written it, and written whole (staged, synced, renamed, directory
//! synced).

use crate::files::{self, Last, Missing, TrustedDir};
use crate::untrusted;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(crate) use files::fail;
/// A state file or directory that cannot be used or written (the same as an output's).
pub use files::Error;

/// The state directory: created 0700 when missing; ours, and private; every directory above
/// it checked as an output's (see `files::TrustedDir`). Loose modes are repaired on its
/// descriptor and said in `repairs`; another owner or an untrusted parent is refused.
pub fn prepare_dir(dir: &Path, repairs: &mut Vec<String>) -> Result<TrustedDir, Error> {
    let opened = TrustedDir::open(dir, Last::Ours, Missing::Create(0o700))?;
    let mode = opened
        .stat()
        .map_err(|e| fail(dir, format!("cannot inspect: {e}")))?
        .st_mode
        & 0o7777;
    if mode & 0o077 != 0 {
        opened
            .set_mode(0o700)
            .map_err(|e| fail(dir, format!("cannot make private: {e}")))?;
        repairs.push(format!(
            "{} was mode {mode:04o}; set to 0700",
            dir.display()
        ));
    }
    Ok(opened)
}

/// Why a state file that is there cannot be used.
pub enum Unusable {
    /// Not vaultboot state: not a regular file, not JSON, empty, truncated, too large.
    Unreadable(String),
    /// Someone else may have written it (another owner, writable by others): never used.
    Untrusted(String),
}

impl Unusable {
    /// The suffix kind of the name it is moved aside to.
    pub fn kind(&self) -> &'static str {
        match self {
            Unusable::Unreadable(_) => "unreadable",
            Unusable::Untrusted(_) => "untrusted",
        }
    }
}

impl From<String> for Unusable {
    fn from(why: String) -> Self {
        Unusable::Unreadable(why)
    }
}

impl From<&str> for Unusable {
    fn from(why: &str) -> Self {
        Unusable::Unreadable(why.to_string())
    }
}

/// A state file's bytes, read from a file nobody else could have written.
pub struct Contents {
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
    /// The file was readable by others with this mode; it is 0600 now.
    pub was_mode: Option<u32>,
}

/// `Ok(None)` when there is no such file; `Err` when it is there but unusable. Never follows a
/// symlink, never blocks on a FIFO, reads at most `max_bytes`.
pub fn read(path: &Path, max_bytes: u64) -> Result<Option<Contents>, Unusable> {
    let Some((file, meta)) = open_regular(path)? else {
        return Ok(None);
    };
    let me = nix::unistd::geteuid().as_raw();
    if let Some(why) = untrusted_because(&meta) {
        // Kept as evidence, but ours and private from now on (a nonce file may hold the
        // bound nonce).
        let _ = std::os::unix::fs::fchown(&file, Some(me), Some(nix::unistd::getegid().as_raw()));
        let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
        return Err(Unusable::Untrusted(why));
    }
    let mut was_mode = None;
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot make private: {e}"))?;
        was_mode = Some(meta.mode() & 0o7777);
    }
    let bytes = read_all(file, max_bytes)?;
    Ok(Some(Contents { bytes, was_mode }))
}

/// Like `read`, but changes nothing, not even a mode (for `vaultboot plan`).
pub fn peek(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, Unusable> {
    let Some((file, meta)) = open_regular(path)? else {
        return Ok(None);
    };
    if let Some(why) = untrusted_because(&meta) {
        return Err(Unusable::Untrusted(why));
    }
    Ok(Some(read_all(file, max_bytes)?.to_vec()))
}

/// The regular file at `path` (never through a symlink, never blocking on a FIFO), or `None`
/// when there is nothing there.
fn open_regular(path: &Path) -> Result<Option<(fs::File, fs::Metadata)>, Unusable> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open: {e}").into()),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    Ok(Some((file, meta)))
}

/// Why someone else may have written this file (another owner, writable by others).
fn untrusted_because(meta: &fs::Metadata) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        Some(format!("owned by uid {}, not by us", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "mode {:04o}, writable by others",
            meta.mode() & 0o7777
        ))
    } else {
        None
    }
}

fn read_all(mut file: fs::File, max_bytes: u64) -> Result<zeroize::Zeroizing<Vec<u8>>, Unusable> {
    let bytes = untrusted::read_capped(&mut file, max_bytes).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("empty".into());
    }
    Ok(bytes)
}

/// Write-ahead: `dir/name` holds `bytes` (0600, ours), file and directory synced, or the old
/// file is still there whole.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let opened = TrustedDir::open(dir, Last::Ours, Missing::Refuse)?;
    replace(&opened, name, bytes, 0o600, true)
}

/// `dir/name` replaced by `bytes` (ours, `mode`) with one rename: a reader sees the old file or
/// the new one. `durable`: file and directory synced (state); without, a crash may lose it
/// (the status, which describes this boot only).
pub fn replace(
    dir: &TrustedDir,
    name: &str,
    bytes: &[u8],
    mode: u32,
    durable: bool,
) -> Result<(), Error> {
    let path = dir.path().join(name);
    dir.remove_stale_stages(name.as_ref());
    let temp = format!(".{name}.vaultboot.{}", std::process::id());
    let _ = dir.remove(temp.as_ref());
    let me = nix::unistd::geteuid().as_raw();
    let my_group = nix::unistd::getegid().as_raw();
    dir.write_new(temp.as_ref(), bytes, mode, (me, my_group), durable)
        .map_err(|e| fail(&path, format!("cannot write: {e}")))?;
    dir.rename(temp.as_ref(), name.as_ref()).map_err(|e| {
        let _ = dir.remove(temp.as_ref());
        fail(&path, format!("cannot rename into place: {e}"))
    })?;
    if durable {
        dir.sync()
            .map_err(|e| fail(dir.path(), format!("cannot sync: {e}")))?;
    }
    Ok(())
}

/// Removes `dir/name` (if it is there) and syncs the directory.
pub fn remove(dir: &Path, name: &str) -> Result<(), Error> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fail(&path, format!("cannot remove: {e}"))),
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(dir, format!("cannot sync: {e}")))
}

/// Moves an unusable `dir/name` (whatever it is) aside to `aside_path`, where it stays as
/// evidence and is never read again.
pub fn set_aside(dir: &Path, name: &str, kind: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    let aside = aside_path(dir, name, kind);
    fs::rename(&path, &aside)
        .map_err(|e| fail(&path, format!("{kind} and cannot be set aside: {e}")))?;
    Ok(aside)
}

/// The name an unusable state file is moved aside to: `<name>.<kind>-<seconds>`.
pub fn aside_path(dir: &Path, name: &str, kind: &str) -> PathBuf {
    dir.join(format!("{name}.{kind}-{}", now_secs()))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The lock a run holds on its state directory from start to end (released when dropped).
pub struct RunLock {
    _file: nix::fcntl::Flock<fs::File>,
    /// Repairs made to the state directory's permissions, to be logged.
    pub repairs: Vec<String>,
}

/// Why the lock was not taken.
pub enum LockError {
    /// The state directory or the lock file cannot be used.
    State(Error),
    /// Another run held it until the deadline.
    Held(PathBuf),
    /// A stop signal came while waiting for it.
    Stopped,
}

/// Takes `<dir>/run.lock` (flock, exclusive), waiting while another run holds it, until
/// `deadline`. One run at a time: a refresh that starts while the boot run is waiting to be
/// retried (or two runs on a first boot, each about to create a nonce that Vault binds only
/// once) would otherwise interleave their nonce, staged files and owed commands.
pub fn lock(
    dir: &Path,
    deadline: std::time::Instant,
    waiting: impl FnOnce(),
) -> Result<RunLock, LockError> {
    use nix::fcntl::{Flock, FlockArg};
    let mut repairs = Vec::new();
    let opened = prepare_dir(dir, &mut repairs).map_err(LockError::State)?;
    let path = dir.join("run.lock");
    // Not blocking on open either: a FIFO planted here must not hang every retry.
    let mut file = opened
        .open_lock("run.lock".as_ref())
        .map_err(|e| LockError::State(fail(&path, format!("cannot open: {e}"))))?;
    let mut waiting = Some(waiting);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                return Ok(RunLock {
                    _file: locked,
                    repairs,
                })
            }
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => file = back,
            Err((_, e)) => return Err(LockError::State(fail(&path, format!("cannot lock: {e}")))),
        }
        if std::time::Instant::now() >= deadline {
            return Err(LockError::Held(path));
        }
        if crate::stop::requested().is_some() {
            return Err(LockError::Stopped);
        }
        if let Some(say) = waiting.take() {
            say();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
