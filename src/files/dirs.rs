//! The directories outputs, state and status go into, opened by walking their path from `/`
//! one component at a time, each directory checked on the descriptor that is then used: a
//! symlink or directory swapped after the check changes nothing, because nothing is looked up
//! by path again. Missing directories are created (0700, ours) only below checked ones.

use super::{fail, Error, STAGE_MARK};
use crate::fanout::Fanout;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one walk at most (as the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Directories synced at once on this many threads at most.
const MAX_SYNC_THREADS: usize = 8;

/// A directory reached by a checked walk, open: every operation is relative to its descriptor.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    /// The path as configured, for messages.
    path: PathBuf,
}

/// How the last directory of a walk is judged (every one above it: root's or ours, writable by
/// nobody else, or sticky, since others cannot rename or remove what is ours there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// Outputs, status, inputs: root's or ours, writable by nobody else, sticky or not.
    Strict,
    /// The state directory: ours (not root's unless we are root); a loose mode is left to the
    /// caller to repair on the descriptor.
    Ours,
}

/// What a walk does about a directory that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Refuse,
    /// Created with this mode (the umask applies), ours.
    Create(u32),
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl TrustedDir {
    /// Walks to the absolute `path`, checking every directory on it and on every symlink's
    /// target; the last one by `last`.
    pub fn open(path: &Path, last: Last, missing: Missing) -> Result<TrustedDir, Error> {
        if !path.is_absolute() {
            return Err(fail(path, "is not an absolute path"));
        }
        let root = nix::fcntl::open("/", DIR_FLAGS, Mode::empty())
            .map_err(|e| fail(path, format!("cannot open /: {e}")))?;
        let mut walk = Walk {
            path,
            stack: vec![(root, PathBuf::from("/"))],
            pending: names(path),
            links: 0,
        };
        walk.check_top(last)?;
        while let Some(name) = walk.pending.pop_front() {
            walk.step(name, last, missing)?;
        }
        let (fd, _) = walk.stack.pop().expect("the walk starts at /");
        Ok(TrustedDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stat(&self) -> std::io::Result<FileStat> {
        Ok(fstat(&self.fd)?)
    }

    /// Sets the directory's own mode (on the descriptor).
    pub fn set_mode(&self, mode: u32) -> std::io::Result<()> {
        Ok(fchmod(&self.fd, Mode::from_bits_truncate(mode))?)
    }

    /// What `name` is, without following a symlink; `None` when it is not there.
    pub fn entry(&self, name: &OsStr) -> std::io::Result<Option<FileStat>> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens `name` to read: a symlink is not followed and a FIFO cannot block.
    pub fn open_to_read(&self, name: &OsStr) -> std::io::Result<File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        Ok(File::from(openat(&self.fd, name, flags, Mode::empty())?))
    }

    /// Opens (creating 0600 if missing) `name` to write without truncating it, never through a
    /// symlink, never blocking on a FIFO: for a lock file.
    pub fn open_lock(&self, name: &OsStr) -> std::io::Result<File> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let file = File::from(openat(
            &self.fd,
            name,
            flags,
            Mode::from_bits_truncate(0o600),
        )?);
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// Creates `name` (which must not exist), sets owner and mode before any byte, writes and
    /// (with `sync`) syncs it. Removed again if any step fails.
    pub fn write_new(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        (uid, gid): (u32, u32),
        sync: bool,
    ) -> std::io::Result<()> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut file = File::from(openat(
            &self.fd,
            name,
            flags,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )?);
        let result = (|| {
            let meta = file.metadata()?;
            if std::os::unix::fs::MetadataExt::uid(&meta) != uid
                || std::os::unix::fs::MetadataExt::gid(&meta) != gid
            {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            }
            // After fchown (which may clear mode bits), and before any byte of the secret.
            fchmod(&file, Mode::from_bits_truncate(mode))?;
            file.write_all(bytes)?;
            if sync {
                file.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            drop(file);
            let _ = self.remove(name);
        }
        result
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        Ok(nix::fcntl::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes the file `name` (not a directory).
    pub fn remove(&self, name: &OsStr) -> std::io::Result<()> {
        Ok(nix::unistd::unlinkat(
            &self.fd,
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?)
    }

    pub fn sync(&self) -> std::io::Result<()> {
        Ok(nix::unistd::fsync(&self.fd)?)
    }

    /// Removes staged files that a killed earlier run left next to `name`. The directory is
    /// checked (nobody but root can create entries in it), so whatever bears our staging name
    /// is ours, whoever owns it now: a staged output is fchowned to its owner before a kill may
    /// have come.
    pub fn remove_stale_stages(&self, name: &OsStr) {
        let mut prefix = b".".to_vec();
        prefix.extend_from_slice(name.as_bytes());
        prefix.extend_from_slice(STAGE_MARK.as_bytes());
        for entry in self.names() {
            if entry.as_bytes().starts_with(&prefix) {
                let _ = self.remove(&entry);
            }
        }
    }

    /// The names in the directory (read on a duplicate of its descriptor).
    fn names(&self) -> Vec<OsString> {
        let Ok(fd) = self.fd.try_clone() else {
            return Vec::new();
        };
        let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
            return Vec::new();
        };
        dir.iter()
            .flatten()
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n != "." && n != "..")
            .collect()
    }
}

impl AsFd for TrustedDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One walk in progress: the directories opened so far (with the path each was reached by)
/// and the names still to walk.
struct Walk<'a> {
    path: &'a Path,
    stack: Vec<(OwnedFd, PathBuf)>,
    pending: VecDeque<OsString>,
    links: usize,
}

impl Walk<'_> {
    fn check_top(&self, last: Last) -> Result<(), Error> {
        let (fd, shown) = &self.stack[0];
        let is_last = self.pending.is_empty();
        check(self.path, fd, shown, is_last.then_some(last))
    }

    fn step(&mut self, name: OsString, last: Last, missing: Missing) -> Result<(), Error> {
        if name == ".." {
            if self.stack.len() > 1 {
                self.stack.pop();
            }
            return Ok(());
        }
        let (cur, shown_cur) = self.stack.last().expect("never empty");
        let shown = shown_cur.join(&name);
        match openat(cur, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => {
                let is_last = self.pending.is_empty();
                check(self.path, &fd, &shown, is_last.then_some(last))?;
                self.stack.push((fd, shown));
                Ok(())
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => self.follow(&name, &shown, last),
            Err(Errno::ENOENT) => match missing {
                Missing::Create(mode) => self.create(name, &shown, mode, last),
                Missing::Refuse => Err(fail(
                    self.path,
                    format!("{} does not exist", shown.display()),
                )),
            },
            Err(e) => Err(fail(
                self.path,
                format!("cannot open {}: {e}", shown.display()),
            )),
        }
    }

    /// `name` is not a directory: a symlink (root's or ours) is followed by walking its target
    /// the same way; anything else is refused.
    fn follow(&mut self, name: &OsStr, shown: &Path, last: Last) -> Result<(), Error> {
        let (cur, _) = self.stack.last().expect("never empty");
        let st = fstatat(cur, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
            fail(
                self.path,
                format!("cannot inspect {}: {e}", shown.display()),
            )
        })?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
            return Err(fail(
                self.path,
                format!("{} is not a directory", shown.display()),
            ));
        }
        if last == Last::Ours && self.pending.is_empty() {
            return Err(fail(
                self.path,
                format!(
                    "{} is not a directory (a symlink is refused here)",
                    shown.display()
                ),
            ));
        }
        if !trusted_owner(st.st_uid) {
            return Err(fail(
                self.path,
                format!(
                    "{} is a symlink owned by uid {}: refused",
                    shown.display(),
                    st.st_uid
                ),
            ));
        }
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            return Err(fail(self.path, "too many symlinks on the way"));
        }
        let target = readlinkat(cur, name)
            .map_err(|e| fail(self.path, format!("cannot read {}: {e}", shown.display())))?;
        let target = PathBuf::from(target);
        if target.is_absolute() {
            self.stack.truncate(1);
        }
        for n in names(&target).into_iter().rev() {
            self.pending.push_front(n);
        }
        Ok(())
    }

    /// Creates the missing `name` below the directory just checked and walks into it: it is
    /// checked like any other (someone racing us in a sticky directory is caught there), then
    /// given `mode` on its descriptor (mkdir's mode is cut by our umask 077).
    fn create(&mut self, name: OsString, shown: &Path, mode: u32, last: Last) -> Result<(), Error> {
        let (cur, _) = self.stack.last().expect("never empty");
        match mkdirat(cur, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(fail(
                    self.path,
                    format!("cannot create directory {}: {e}", shown.display()),
                ))
            }
        }
        let _ = nix::unistd::fsync(cur);
        let fd = openat(cur, name.as_os_str(), DIR_FLAGS, Mode::empty())
            .map_err(|e| fail(self.path, format!("cannot open {}: {e}", shown.display())))?;
        let is_last = self.pending.is_empty();
        check(self.path, &fd, shown, is_last.then_some(last))?;
        let _ = fchmod(&fd, Mode::from_bits_truncate(mode));
        self.stack.push((fd, shown.to_path_buf()));
        Ok(())
    }
}

/// The names a path walks through, `..` kept (handled on the stack of open directories).
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// One directory of a walk, judged on its open descriptor. `last`: how, when it is the end.
fn check(path: &Path, fd: &OwnedFd, shown: &Path, last: Option<Last>) -> Result<(), Error> {
    let st =
        fstat(fd).map_err(|e| fail(path, format!("cannot inspect {}: {e}", shown.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    let owner_ok = match last {
        Some(Last::Ours) => st.st_uid == me,
        _ => trusted_owner(st.st_uid),
    };
    if !owner_ok {
        let whose = if last == Some(Last::Ours) {
            format!("not by us (uid {me})")
        } else {
            "not root".to_string()
        };
        return Err(fail(
            path,
            format!(
                "{} is owned by uid {}, {whose}: refused",
                shown.display(),
                st.st_uid
            ),
        ));
    }
    let mode = st.st_mode & 0o7777;
    let others_write = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    // Above the last directory a sticky one (such as /tmp) is tolerated: others cannot rename
    // or remove what is root's there, and what is theirs is refused one step further.
    if others_write && !(last.is_none() && sticky) {
        return Err(fail(
            path,
            format!(
                "{} is writable by others (mode {mode:04o}): refused",
                shown.display()
            ),
        ));
    }
    Ok(())
}

/// Directory syncs run in parallel: each waits for the disk.
const SYNCS: Fanout = Fanout::new("directory syncs", "sync", MAX_SYNC_THREADS);

/// Syncs every directory (all of them, also after a failure); the first failure. Without
/// threads to do it at once (the thread limit), one after the other: the renames are done,
/// and their durability is not given up for want of a thread.
pub(super) fn sync_dirs(dirs: Vec<&TrustedDir>) -> Result<(), Error> {
    let sync = |dir: &&TrustedDir| {
        dir.sync()
            .map_err(|e| fail(dir.path(), format!("cannot sync directory: {e}")))
    };
    let synced = SYNCS
        .map(&dirs, sync)
        .unwrap_or_else(|_| dirs.iter().map(sync).collect());
    synced.into_iter().collect()
}
