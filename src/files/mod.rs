//! Writing outputs all or nothing: parent checks, staging, renames, directory syncs, on_change.
//!
//! Every output is first staged next to its target (`O_CREAT|O_EXCL|O_NOFOLLOW`, owner and mode
//! set before any byte is written, fsync). Only when every output is staged are they renamed into
//! place, then their directories are synced. Unchanged files are not touched at all.

use crate::kind::Kind;
use crate::secret::Secret;
use crate::untrusted;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod dirs;
mod on_change;

use dirs::sync_dirs;
pub use dirs::{
    check_trusted_dir, ensure_dir, remove_stale_stages, remove_stale_stages_of, sync_dir,
};
pub use on_change::{commands_of, run_on_change};

/// Marker in staged file names: `.<target name>.vaultboot.<random>`.
const STAGE_MARK: &str = ".vaultboot.";

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

impl Error {
    pub fn kind(&self) -> Kind {
        Kind::CannotWrite
    }
}

fn fail(path: &Path, message: impl Into<String>) -> Error {
    Error {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// One file to write.
pub struct Output {
    pub path: PathBuf,
    /// The `[[secret]]` it comes from, for messages and the status.
    pub secret: String,
    /// A PEM certificate is its first content (raw format, `certificate` first): the status
    /// reports its expiry.
    pub holds_certificate: bool,
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

impl CommitError {
    pub fn kind(&self) -> Kind {
        Kind::CannotWrite
    }
}

/// Paths for a message: `a, b, c`, or `none`.
pub fn path_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    let names: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

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

/// What committing an output would do to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Replace,
    Unchanged,
}

/// What committing `output` would do, touching nothing (for `vaultboot plan`). A target a
/// commit would refuse (a directory, a device, an untrusted directory) is the same error.
pub fn preview(output: &Output) -> Result<Change, Error> {
    let path = &output.path;
    let dir = parent_of(path);
    if fs::symlink_metadata(dir).is_ok() {
        check_trusted_dir(dir, true)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => {
            Err(fail(path, "is a directory; refusing to replace it"))
        }
        Ok(meta) if meta.file_type().is_file() => Ok(if is_current(path, output)? {
            Change::Unchanged
        } else {
            Change::Replace
        }),
        Ok(meta) if meta.file_type().is_symlink() => Ok(Change::Replace),
        Ok(_) => Err(fail(
            path,
            "is not a regular file (FIFO, socket or device); refusing to replace it",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Change::Create),
        Err(e) => Err(fail(path, format!("cannot inspect: {e}"))),
    }
}

/// Checks and stages every output; on any failure nothing is left behind and no target touched.
pub fn stage_all(outputs: &[Output]) -> Result<Staged<'_>, Error> {
    let mut staged = Staged { items: Vec::new() };
    for output in outputs {
        // A stopping run stages nothing more; what it staged goes with `staged`.
        if let Some(signal) = crate::stop::requested() {
            return Err(fail(
                &output.path,
                format!("not staged: vaultboot is stopping ({signal})"),
            ));
        }
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
        true,
    )
    .map_err(|e| fail(path, format!("cannot stage {}: {e}", temp.display())))?;
    Ok(Some(temp))
}

/// Creates `path` (which must not exist), sets owner and mode, writes and syncs it.
/// The file is removed again if any step fails.
pub fn write_new(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    sync: bool,
) -> std::io::Result<()> {
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
        if sync {
            file.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    result
}

/// Opens an output (or a file beside it) to read what is there: a symlink is not followed,
/// and a FIFO without a writer cannot block.
pub fn open_to_read(path: &Path) -> std::io::Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
}

/// The target already holds this content with this owner and mode.
fn is_current(path: &Path, output: &Output) -> Result<bool, Error> {
    let mut file = match open_to_read(path) {
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
    // (It may have grown since the metadata was read: then it is not current.)
    match untrusted::read_capped(&mut file, output.content.len() as u64) {
        Ok(existing) => Ok(constant_time_eq(&existing, output.content.expose())),
        Err(untrusted::ReadError::TooLarge { .. }) => Ok(false),
        Err(e) => Err(fail(path, e.to_string())),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
