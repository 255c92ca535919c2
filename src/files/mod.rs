//! Writing outputs all or nothing: parent checks, staging, renames, directory syncs, on_change.
//!
//! Every output is first staged next to its target (`O_CREAT|O_EXCL|O_NOFOLLOW`, owner and mode
//! set before any byte is written, fsync). Only when every output is staged are they renamed into
//! place, then their directories are synced. Unchanged files are not touched at all.

use crate::kind::Kind;
use crate::secret::Secret;
use crate::untrusted;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub mod creds;
mod dirs;
mod on_change;

pub use creds::Sealed;

use dirs::sync_dirs;
pub use dirs::{Last, Missing, TrustedDir};
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

pub(crate) fn fail(path: &Path, message: impl Into<String>) -> Error {
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
    /// A `[[secret.credential]]`: its name (sealed or plain), for the status.
    pub credential: Option<String>,
    /// Sealed through `systemd-creds encrypt`: what lands on disk is not `content`.
    pub sealed: Option<Sealed>,
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

impl std::error::Error for CommitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

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

/// One staged output: the checked directory it goes into and its staged file's name there.
struct Stage {
    dir: TrustedDir,
    temp: OsString,
}

/// Outputs staged and ready to be renamed into place. Dropping it removes the staged files.
pub struct Staged<'a> {
    items: Vec<(&'a Output, Option<Stage>)>,
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        for (_, stage) in &mut self.items {
            if let Some(s) = stage.take() {
                let _ = s.dir.remove(&s.temp);
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
            .filter(|(_, stage)| stage.is_some())
            .map(|(output, _)| *output)
    }

    /// Renames every staged file into place, in order (each within the directory descriptor
    /// it was staged in), then syncs those directories (in parallel: each sync waits for the
    /// disk). The first failed rename stops the renames; the directories of what was already
    /// renamed are still synced, and the error says which outputs were replaced and which not.
    pub fn commit(mut self) -> Result<Vec<(&'a Output, Outcome)>, CommitError> {
        let mut results = Vec::new();
        let mut renamed = Vec::new();
        let mut failed = None;
        for i in 0..self.items.len() {
            let (output, stage) = &mut self.items[i];
            match stage.take() {
                None => results.push((*output, Outcome::Unchanged)),
                Some(s) => match s.dir.rename(&s.temp, file_name(&output.path)) {
                    Ok(()) => {
                        renamed.push(s.dir);
                        results.push((*output, Outcome::Written));
                    }
                    Err(e) => {
                        let _ = s.dir.remove(&s.temp);
                        failed = Some((
                            i,
                            fail(&output.path, format!("cannot rename into place: {e}")),
                        ));
                        break;
                    }
                },
            }
        }
        let synced = sync_dirs(distinct(&renamed));
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

/// The directories, each once (several outputs may share one).
fn distinct(dirs: &[TrustedDir]) -> Vec<&TrustedDir> {
    let mut seen = BTreeSet::new();
    dirs.iter()
        .filter(|d| {
            d.stat()
                .map(|st| seen.insert((st.st_dev, st.st_ino)))
                .unwrap_or(true)
        })
        .collect()
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
    if fs::symlink_metadata(parent_of(path)).is_err() {
        return Ok(Change::Create);
    }
    let dir = TrustedDir::open(parent_of(path), Last::Strict, Missing::Refuse)?;
    match target_state(&dir, output)? {
        Target::Current => Ok(Change::Unchanged),
        Target::Differs => Ok(Change::Replace),
        Target::Absent => Ok(Change::Create),
    }
}

/// Removes what a killed earlier run staged next to the output at `path`, if its directory
/// passes the checks (for an output this run does not write).
pub fn remove_stale_stages_of(path: &Path) {
    if let Ok(dir) = TrustedDir::open(parent_of(path), Last::Strict, Missing::Refuse) {
        dir.remove_stale_stages(file_name(path));
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
        let stage = stage(output)?;
        staged.items.push((output, stage));
    }
    Ok(staged)
}

/// The checked directory an output goes into, created (0700) if missing.
pub fn output_dir(path: &Path) -> Result<TrustedDir, Error> {
    TrustedDir::open(parent_of(path), Last::Strict, Missing::Create(0o700))
}

/// Stages one output; `None` when the target already holds exactly this content, owner and mode.
fn stage(output: &Output) -> Result<Option<Stage>, Error> {
    let path = &output.path;
    let dir = output_dir(path)?;
    if let Some(credential) = &output.credential {
        private_store(&dir, path, credential)?;
    }
    let name = file_name(path);
    dir.remove_stale_stages(name);
    match target_state(&dir, output)? {
        Target::Current => return Ok(None),
        Target::Differs | Target::Absent => {}
    }
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!("{STAGE_MARK}{}", random_suffix()));
    let sealed_bytes;
    let bytes = match &output.sealed {
        None => output.content.expose(),
        Some(sealed) => {
            sealed_bytes = creds::encrypt(sealed, output.content.expose())
                .map_err(|m| fail(path, format!("credential {:?}: {m}", sealed.name)))?;
            sealed_bytes.as_slice()
        }
    };
    dir.write_new(&temp, bytes, output.mode, (output.uid, output.gid), true)
        .map_err(|e| {
            fail(
                path,
                format!("cannot stage {}: {e}", dir.path().join(&temp).display()),
            )
        })?;
    Ok(Some(Stage { dir, temp }))
}

/// A credential store is root's and 0700 (as systemd's own tmpfiles make it): nobody else may
/// even list which credentials a machine has, or their sizes.
fn private_store(dir: &TrustedDir, path: &Path, credential: &str) -> Result<(), Error> {
    let st = dir
        .stat()
        .map_err(|e| fail(path, format!("cannot inspect its directory: {e}")))?;
    if st.st_mode & 0o077 != 0 {
        return Err(fail(
            path,
            format!(
                "credential {credential:?}: its directory {} is mode {:04o}, not 0700: refused",
                dir.path().display(),
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// What is at an output's place now.
enum Target {
    Absent,
    /// A regular file holding exactly this content, owner and mode.
    Current,
    /// Something a rename may replace: another file, or a symlink (rename replaces the link,
    /// never its target).
    Differs,
}

fn target_state(dir: &TrustedDir, output: &Output) -> Result<Target, Error> {
    let path = &output.path;
    let st = match dir.entry(file_name(path)) {
        Ok(None) => return Ok(Target::Absent),
        Ok(Some(st)) => st,
        Err(e) => return Err(fail(path, format!("cannot inspect: {e}"))),
    };
    match nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT {
        nix::sys::stat::SFlag::S_IFDIR => Err(fail(path, "is a directory; refusing to replace it")),
        nix::sys::stat::SFlag::S_IFREG => Ok(if is_current(dir, output)? {
            Target::Current
        } else {
            Target::Differs
        }),
        nix::sys::stat::SFlag::S_IFLNK => Ok(Target::Differs),
        _ => Err(fail(
            path,
            "is not a regular file (FIFO, socket or device); refusing to replace it",
        )),
    }
}

/// Opens a file to read what is there, in its checked directory: a symlink is not followed,
/// and a FIFO without a writer cannot block.
pub fn open_to_read(path: &Path) -> Result<fs::File, Error> {
    let dir = TrustedDir::open(parent_of(path), Last::Strict, Missing::Refuse)?;
    dir.open_to_read(file_name(path))
        .map_err(|e| fail(path, format!("cannot open: {e}")))
}

/// An input vaultboot trusts (its configuration, the CA that verifies Vault): its directory
/// checked as an output's, the file itself a regular file of root's (or ours) that nobody else
/// can write, at most `limit` bytes, read from the descriptor that was checked. Whoever could
/// write it could send the token and every secret to a Vault of their choosing.
pub fn read_input(path: &Path, limit: u64) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let absolute = std::path::absolute(path).map_err(|e| fail(path, format!("{e}")))?;
    let file = open_to_read(&absolute)?;
    let meta = file
        .metadata()
        .map_err(|e| fail(path, format!("cannot inspect: {e}")))?;
    if !meta.is_file() {
        return Err(fail(path, "is not a regular file"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(fail(
            path,
            format!("is owned by uid {}, not root: refused", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(fail(
            path,
            format!(
                "is writable by others (mode {:04o}): refused",
                meta.mode() & 0o7777
            ),
        ));
    }
    untrusted::read_capped(file, limit).map_err(|e| fail(path, e.to_string()))
}

/// The target already holds this content with this owner and mode.
fn is_current(dir: &TrustedDir, output: &Output) -> Result<bool, Error> {
    let path = &output.path;
    let mut file = match dir.open_to_read(file_name(path)) {
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
    {
        return Ok(false);
    }
    if let Some(sealed) = &output.sealed {
        return Ok(unseals_to(file, sealed, output));
    }
    if meta.len() != output.content.len() as u64 {
        return Ok(false);
    }
    // (It may have grown since the metadata was read: then it is not current.)
    match untrusted::read_capped(&mut file, output.content.len() as u64) {
        Ok(existing) => Ok(constant_time_eq(&existing, output.content.expose())),
        Err(untrusted::ReadError::TooLarge { .. }) => Ok(false),
        Err(e) => Err(fail(path, e.to_string())),
    }
}

/// The sealed credential in `file` decrypts to exactly `output`'s content. Each sealing differs
/// byte-wise (a fresh IV), so the one in place is decrypted to compare: nothing about the
/// plaintext is kept anywhere. One that cannot be read or decrypted (another host key, a
/// damaged file) is not current: it is replaced.
fn unseals_to(file: fs::File, sealed: &Sealed, output: &Output) -> bool {
    let limit = creds::max_sealed_len(output.content.len());
    let Ok(ciphertext) = untrusted::read_capped(file, limit) else {
        return false;
    };
    // One byte more than the content: a longer plaintext is told from an equal one.
    match creds::decrypt(&sealed.name, &ciphertext, output.content.len() as u64 + 1) {
        Ok(plain) => constant_time_eq(&plain, output.content.expose()),
        Err(_) => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// An output's name in its directory (configured paths always have one).
fn file_name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(OsStr::new("."))
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
