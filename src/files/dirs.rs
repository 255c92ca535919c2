//! The directories outputs and state go into: created only below trusted directories, checked
//! for who else could write there, cleaned of a killed run's staged files, and synced.

use super::{fail, Error, STAGE_MARK};
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Directories synced at once on this many threads at most.
const MAX_SYNC_THREADS: usize = 8;

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

/// [`remove_stale_stages`] for the output at `path`, if its directory is trusted.
pub fn remove_stale_stages_of(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    if check_trusted_dir(dir, true).is_ok() {
        remove_stale_stages(dir, name);
    }
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs every directory (all of them, also after a failure); the first failure.
pub(super) fn sync_dirs(dirs: Vec<PathBuf>) -> Result<(), Error> {
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
