//! Writing outputs all or nothing: parent checks, staging, renames, directory syncs, on_change.
//!
//! Every output is first staged next to its target (`O_CREAT|O_EXCL|O_NOFOLLOW`, owner and mode
//! set before any byte is written, fsync). Only when every output is staged are they renamed into
//! place, then their directories are synced. Unchanged files are not touched at all.

use crate::secret::Secret;
use nix::sys::stat::Mode;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Marker in staged file names: `.<target name>.vaultboot.<random>`.
const STAGE_MARK: &str = ".vaultboot.";
/// PATH given to on_change commands: their environment is otherwise empty.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// An on_change command running longer than this is killed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Error {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for Error {}

fn fail(path: &Path, message: impl Into<String>) -> Error {
    Error {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// One file to write.
pub struct Output {
    pub path: PathBuf,
    pub content: Secret,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub on_change: Option<Vec<String>>,
}

/// What happened to one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// A commit that failed part-way: which outputs were replaced and which were not.
#[derive(Debug)]
pub struct CommitError {
    /// The rename or directory sync that failed.
    pub error: Error,
    /// Renamed into place before the failure.
    pub replaced: Vec<PathBuf>,
    /// Still as they were (old content, or absent): the one that failed and every one after.
    pub not_replaced: Vec<PathBuf>,
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; ", self.error)?;
        if self.not_replaced.is_empty() {
            write!(
                f,
                "every output was replaced ({}), but the replacements in that directory may \
                 not survive a crash",
                path_list(&self.replaced)
            )
        } else {
            write!(
                f,
                "already replaced: {}; not replaced (as they were): {}",
                path_list(&self.replaced),
                path_list(&self.not_replaced)
            )
        }
    }
}

impl std::error::Error for CommitError {}

/// Paths for a message: `a, b, c`, or `none`.
pub fn path_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    let names: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// Directories synced at once on this many threads at most.
const MAX_SYNC_THREADS: usize = 8;

/// Outputs staged and ready to be renamed into place. Dropping it removes the staged files.
pub struct Staged<'a> {
    items: Vec<(&'a Output, Option<PathBuf>)>,
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        for (_, temp) in &mut self.items {
            if let Some(t) = temp.take() {
                let _ = fs::remove_file(t);
            }
        }
    }
}

impl<'a> Staged<'a> {
    /// One set from sets staged apart (on several threads), in their order.
    pub fn join(parts: Vec<Staged<'a>>) -> Staged<'a> {
        let mut all = Staged { items: Vec::new() };
        for mut part in parts {
            all.items.append(&mut part.items);
        }
        all
    }

    /// The outputs the commit will replace (content, owner or mode differ), in order.
    pub fn to_replace(&self) -> impl Iterator<Item = &'a Output> + '_ {
        self.items
            .iter()
            .filter(|(_, temp)| temp.is_some())
            .map(|(output, _)| *output)
    }

    /// Renames every staged file into place, in order, then syncs their directories (in
    /// parallel: each sync waits for the disk). The first failed rename stops the renames;
    /// the directories of what was already renamed are still synced, and the error says which
    /// outputs were replaced and which not.
    pub fn commit(mut self) -> Result<Vec<(&'a Output, Outcome)>, CommitError> {
        let mut dirs = BTreeSet::new();
        let mut results = Vec::new();
        let mut failed = None;
        for i in 0..self.items.len() {
            let (output, temp) = &mut self.items[i];
            match temp.take() {
                None => results.push((*output, Outcome::Unchanged)),
                Some(t) => match fs::rename(&t, &output.path) {
                    Ok(()) => {
                        dirs.insert(parent_of(&output.path).to_path_buf());
                        results.push((*output, Outcome::Written));
                    }
                    Err(e) => {
                        let _ = fs::remove_file(&t);
                        failed = Some((
                            i,
                            fail(&output.path, format!("cannot rename into place: {e}")),
                        ));
                        break;
                    }
                },
            }
        }
        let synced = sync_dirs(dirs.into_iter().collect());
        let replaced = || {
            results
                .iter()
                .filter(|(_, o)| *o == Outcome::Written)
                .map(|(o, _)| o.path.clone())
                .collect()
        };
        match (failed, synced) {
            (None, Ok(())) => Ok(results),
            (None, Err(error)) => Err(CommitError {
                error,
                replaced: replaced(),
                not_replaced: Vec::new(),
            }),
            (Some((i, error)), _) => Err(CommitError {
                error,
                replaced: replaced(),
                // The failed one and those after it that differ: their staged files go when
                // `self` is dropped.
                not_replaced: std::iter::once(self.items[i].0)
                    .chain(
                        self.items[i + 1..]
                            .iter()
                            .filter(|(_, t)| t.is_some())
                            .map(|(o, _)| *o),
                    )
                    .map(|o| o.path.clone())
                    .collect(),
            }),
        }
    }
}

/// Syncs every directory (all of them, also after a failure); the first failure.
fn sync_dirs(dirs: Vec<PathBuf>) -> Result<(), Error> {
    let sync = |dirs: &[PathBuf]| -> Result<(), Error> {
        let mut first = Ok(());
        for dir in dirs {
            if let Err(e) = sync_dir(dir) {
                if first.is_ok() {
                    first = Err(fail(dir, format!("cannot sync directory: {e}")));
                }
            }
        }
        first
    };
    if dirs.len() < 2 {
        return sync(&dirs);
    }
    let per_thread = dirs.len().div_ceil(MAX_SYNC_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || sync(chunk)))
            .collect();
        let mut first = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

/// Checks and stages every output; on any failure nothing is left behind and no target touched.
pub fn stage_all(outputs: &[Output]) -> Result<Staged<'_>, Error> {
    let mut staged = Staged { items: Vec::new() };
    for output in outputs {
        let temp = stage(output)?;
        staged.items.push((output, temp));
    }
    Ok(staged)
}

/// Stages one output; `None` when the target already holds exactly this content, owner and mode.
fn stage(output: &Output) -> Result<Option<PathBuf>, Error> {
    let path = &output.path;
    let dir = parent_of(path);
    ensure_dir(dir)?;
    check_trusted_dir(dir, true)?;
    let name = path
        .file_name()
        .ok_or_else(|| fail(path, "has no file name"))?
        .to_string_lossy()
        .into_owned();
    remove_stale_stages(dir, &name);

    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => {
            return Err(fail(path, "is a directory; refusing to replace it"))
        }
        Ok(meta) if meta.file_type().is_file() => {
            if is_current(path, output)? {
                return Ok(None);
            }
        }
        // A symlink is replaced by the new file (rename replaces the link, never its target).
        Ok(meta) if meta.file_type().is_symlink() => {}
        Ok(_) => {
            return Err(fail(
                path,
                "is not a regular file (FIFO, socket or device); refusing to replace it",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(path, format!("cannot inspect: {e}"))),
    }

    let temp = dir.join(format!(".{name}{STAGE_MARK}{}", random_suffix()));
    write_new(
        &temp,
        output.content.expose(),
        output.mode,
        output.uid,
        output.gid,
    )
    .map_err(|e| fail(path, format!("cannot stage {}: {e}", temp.display())))?;
    Ok(Some(temp))
}

/// Creates `path` (which must not exist), sets owner and mode, writes and syncs it.
/// The file is removed again if any step fails.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    // create_new + O_NOFOLLOW: a file or link planted at this name is never written through.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    let result = (|| {
        let meta = file.metadata()?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        // After fchown (which may clear mode bits), and before any byte of the secret.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if result.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    result
}

/// The target already holds this content with this owner and mode.
fn is_current(path: &Path, output: &Output) -> Result<bool, Error> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(_) => return Ok(false),
    };
    let meta = file
        .metadata()
        .map_err(|e| fail(path, format!("cannot inspect: {e}")))?;
    if !meta.is_file()
        || meta.mode() & 0o7777 != output.mode
        || meta.uid() != output.uid
        || meta.gid() != output.gid
        || meta.len() != output.content.len() as u64
    {
        return Ok(false);
    }
    let mut existing = zeroize::Zeroizing::new(Vec::with_capacity(output.content.len() + 1));
    (&mut file)
        .take(output.content.len() as u64 + 1)
        .read_to_end(&mut existing)
        .map_err(|e| fail(path, format!("cannot read: {e}")))?;
    Ok(constant_time_eq(&existing, output.content.expose()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates missing directories (0700, owned by us) down to `dir`, but only below a trusted
/// directory (see `check_trusted_dir`): nothing is created where someone else could have
/// prepared the way (a directory of theirs, a symlink of theirs).
pub fn ensure_dir(dir: &Path) -> Result<(), Error> {
    if fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while fs::symlink_metadata(cur).is_err() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    if fs::symlink_metadata(cur).is_ok() {
        check_trusted_dir(cur, false).map_err(|e| Error {
            path: dir.to_path_buf(),
            message: format!("not created: {}", e.message),
        })?;
    }
    for d in missing.iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(d, format!("cannot create directory: {e}"))),
        }
        if let Some(p) = d.parent() {
            let _ = sync_dir(p);
        }
    }
    Ok(())
}

/// A directory is trusted when it and every directory above it are owned by root (or by the
/// user running vaultboot) and nobody else can write to them; above the immediate parent a
/// sticky directory such as /tmp is tolerated, because others cannot rename what is ours there.
pub fn check_trusted_dir(dir: &Path, immediate: bool) -> Result<(), Error> {
    let me = nix::unistd::geteuid().as_raw();
    // Every symlink on the way must be ours too, or someone could point it elsewhere.
    let mut walked = PathBuf::new();
    for component in dir.components() {
        walked.push(component);
        let meta = fs::symlink_metadata(&walked)
            .map_err(|e| fail(dir, format!("cannot inspect {}: {e}", walked.display())))?;
        if meta.file_type().is_symlink() && meta.uid() != 0 && meta.uid() != me {
            return Err(fail(
                dir,
                format!(
                    "{} is a symlink owned by uid {}: refused",
                    walked.display(),
                    meta.uid()
                ),
            ));
        }
    }
    let real = fs::canonicalize(dir).map_err(|e| fail(dir, format!("cannot resolve: {e}")))?;
    let mut first = immediate;
    for ancestor in real.ancestors() {
        let meta = fs::metadata(ancestor)
            .map_err(|e| fail(dir, format!("cannot inspect {}: {e}", ancestor.display())))?;
        if !meta.is_dir() {
            return Err(fail(
                dir,
                format!("{} is not a directory", ancestor.display()),
            ));
        }
        let mode = meta.mode();
        let owner_ok = meta.uid() == 0 || meta.uid() == me;
        let others_write = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        if !owner_ok {
            return Err(fail(
                dir,
                format!(
                    "{} is owned by uid {}, not root: outputs there are refused",
                    ancestor.display(),
                    meta.uid()
                ),
            ));
        }
        if others_write && (first || !sticky) {
            return Err(fail(
                dir,
                format!(
                    "{} is writable by others (mode {:04o}): outputs there are refused",
                    ancestor.display(),
                    mode & 0o7777
                ),
            ));
        }
        first = false;
    }
    Ok(())
}

/// Removes staged files that a killed earlier run left next to `name`. Only called on a
/// directory already found trusted (nobody but root can create entries in it), so whatever
/// bears our staging name is ours, whoever owns it now: a staged output is fchowned to the
/// output's owner before the kill may have come.
pub fn remove_stale_stages(dir: &Path, name: &str) {
    let prefix = format!(".{name}{STAGE_MARK}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if !n.starts_with(&prefix) {
            continue;
        }
        if let Ok(meta) = entry.path().symlink_metadata() {
            if !meta.is_dir() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Result of one on_change command.
pub struct Ran {
    pub argv: Vec<String>,
    pub result: Result<(), String>,
    pub took: Duration,
}

/// Runs each distinct on_change argv of the written outputs once, in order: no shell, an empty
/// environment but PATH, stdin from /dev/null.
pub fn run_on_change(written: &[&Output]) -> Vec<Ran> {
    let mut seen = BTreeSet::new();
    let mut ran = Vec::new();
    for output in written {
        let Some(argv) = &output.on_change else {
            continue;
        };
        if !seen.insert(argv.clone()) {
            continue;
        }
        let start = Instant::now();
        let result = run_child(argv);
        ran.push(Ran {
            argv: argv.clone(),
            result,
            took: start.elapsed(),
        });
    }
    ran
}

fn run_child(argv: &[String]) -> Result<(), String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", CHILD_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .current_dir("/")
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let start = Instant::now();
    // Polled from 1 ms up to every 20 ms: a quick reload is not charged a whole 20 ms.
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if start.elapsed() > CHILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {}s", CHILD_TIMEOUT.as_secs()));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
    }
}

/// Sets the process umask so that nothing we create is readable by others.
pub fn restrict_umask() {
    nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(path: PathBuf, content: &str) -> Output {
        let me = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        Output {
            path,
            content: Secret::from_string(content.into()),
            mode: 0o640,
            uid: me,
            gid,
            on_change: None,
        }
    }

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn writes_then_leaves_unchanged_files_alone() {
        let d = private_dir();
        let outs = vec![
            output(d.path().join("a"), "one"),
            output(d.path().join("sub/b"), "two"),
        ];
        let done = stage_all(&outs).unwrap().commit().unwrap();
        assert!(done.iter().all(|(_, o)| *o == Outcome::Written));
        let meta = fs::metadata(d.path().join("a")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(fs::read_to_string(d.path().join("sub/b")).unwrap(), "two");
        assert_eq!(
            fs::metadata(d.path().join("sub")).unwrap().mode() & 0o777,
            0o700
        );

        let done = stage_all(&outs).unwrap().commit().unwrap();
        assert!(done.iter().all(|(_, o)| *o == Outcome::Unchanged));
        let again = fs::metadata(d.path().join("a")).unwrap();
        assert_eq!(
            (meta.ino(), meta.mtime_nsec()),
            (again.ino(), again.mtime_nsec())
        );
    }

    #[test]
    fn a_failure_leaves_old_files_whole_and_no_stage_behind() {
        let d = private_dir();
        fs::write(d.path().join("a"), "old").unwrap();
        fs::create_dir(d.path().join("b")).unwrap();
        let outs = vec![
            output(d.path().join("a"), "new"),
            output(d.path().join("b"), "x"),
        ];
        let e = stage_all(&outs).err().unwrap();
        assert!(e.message.contains("directory"), "{e}");
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "old");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_symlink_is_replaced_not_followed() {
        let d = private_dir();
        let victim = d.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("out")).unwrap();
        let outs = vec![output(d.path().join("out"), "secret")];
        stage_all(&outs).unwrap().commit().unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(fs::symlink_metadata(d.path().join("out"))
            .unwrap()
            .is_file());
    }

    #[test]
    fn world_writable_parent_is_refused() {
        let d = private_dir();
        let open = d.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let outs = vec![output(open.join("x"), "s")];
        let e = stage_all(&outs).err().unwrap();
        assert!(e.message.contains("writable by others"), "{e}");
        assert!(!open.join("x").exists());
    }

    /// A real fault between staging and renaming: the target became a non-empty directory
    /// (rename(2) then fails with EISDIR). What was renamed before stays, the rest is old, the
    /// error says which is which, and no staged file is left.
    #[test]
    fn a_rename_that_fails_part_way_says_what_was_replaced() {
        let d = private_dir();
        for name in ["a", "b", "c", "same"] {
            fs::write(d.path().join(name), "old").unwrap();
            fs::set_permissions(d.path().join(name), fs::Permissions::from_mode(0o640)).unwrap();
        }
        let outs = vec![
            output(d.path().join("a"), "new"),
            output(d.path().join("b"), "new"),
            output(d.path().join("same"), "old"),
            output(d.path().join("c"), "new"),
        ];
        let staged = stage_all(&outs).unwrap();
        let replacing: Vec<_> = staged.to_replace().map(|o| o.path.clone()).collect();
        assert_eq!(replacing.len(), 3, "{replacing:?}");
        fs::remove_file(d.path().join("b")).unwrap();
        fs::create_dir(d.path().join("b")).unwrap();
        fs::write(d.path().join("b/inside"), "x").unwrap();

        let e = staged.commit().err().unwrap();
        assert_eq!(e.replaced, vec![d.path().join("a")]);
        assert_eq!(e.not_replaced, vec![d.path().join("b"), d.path().join("c")]);
        assert_eq!(e.error.path, d.path().join("b"));
        let text = e.to_string();
        assert!(text.contains("cannot rename into place"), "{text}");
        assert!(
            text.contains(&format!(
                "already replaced: {}",
                d.path().join("a").display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "not replaced (as they were): {}, {}",
                d.path().join("b").display(),
                d.path().join("c").display()
            )),
            "{text}"
        );
        assert_eq!(fs::read_to_string(d.path().join("a")).unwrap(), "new");
        assert_eq!(fs::read_to_string(d.path().join("c")).unwrap(), "old");
        let staged_left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(STAGE_MARK))
            .collect();
        assert!(staged_left.is_empty(), "{staged_left:?}");
    }

    #[test]
    fn stale_stages_are_cleaned() {
        let d = private_dir();
        let stale = d.path().join(".a.vaultboot.deadbeef");
        fs::write(&stale, "half").unwrap();
        let outs = vec![output(d.path().join("a"), "new")];
        stage_all(&outs).unwrap().commit().unwrap();
        assert!(!stale.exists());
    }
}
