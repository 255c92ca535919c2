//! `[outputs] plaintext_at_rest = "forbid"`: no output may hold a secret in clear on a file
//! system that outlives the boot (it would be in every snapshot, and in every image made from
//! the running instance). What counts is the file system of the output's directory, or of its
//! nearest existing parent when the run would create it, asked of the open descriptor.

use super::{err, Config, Error, FileConfig, PlaintextAtRest};
use nix::sys::statfs::{fstatfs, FsType, TMPFS_MAGIC};
use std::fs::File;
use std::path::{Path, PathBuf};

/// ramfs(7): not in nix's list.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// The first output that would hold a secret in clear on a persistent file system, as an error
/// naming it and where it would land; `Ok` when plaintext at rest is allowed.
pub fn check<A>(config: &Config<A>) -> Result<(), Error> {
    if config.outputs.plaintext_at_rest == PlaintextAtRest::Allow {
        return Ok(());
    }
    let file = config.source.display().to_string();
    for secret in &config.secrets {
        for output in secret.files.iter().filter(|f| !f.is_sealed()) {
            let (dir, verdict) = file_system_of(&directory_of(output));
            if let Err(what) = verdict {
                return Err(err(
                    place(&file, &secret.name, output),
                    format!(
                        "[outputs] plaintext_at_rest = \"forbid\": this output would hold the \
                         secret in clear in {} ({what}); write it to a tmpfs (/run) or as a \
                         sealed [[secret.credential]]",
                        dir.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn place<A>(file: &str, secret: &str, output: &FileConfig<A>) -> String {
    match &output.credential {
        Some(c) => format!("{file}: [[secret]] {secret:?} credential {:?}", c.name),
        None => format!("{file}: [[secret]] {secret:?} file {:?}", output.path_text),
    }
}

/// The output's directory as far as the configuration says it: a templated part and what
/// follows it are not known before the run, so the directory above it is the one judged.
fn directory_of<A>(output: &FileConfig<A>) -> PathBuf {
    let text = output.path_text.as_str();
    let dir = match text.find("{{") {
        None => Path::new(text).parent(),
        // "/etc/app/{{ x }}.pem": "/etc/app"; "/etc/ap{{ x }}/k": "/etc".
        Some(at) if text[..at].ends_with('/') => Some(Path::new(&text[..at])),
        Some(at) => Path::new(&text[..at]).parent(),
    };
    dir.unwrap_or(Path::new("/")).to_path_buf()
}

/// The nearest existing directory at or above `dir`, and whether its file system forgets
/// everything at shutdown (tmpfs, ramfs), else why not.
fn file_system_of(dir: &Path) -> (PathBuf, Result<(), String>) {
    let mut at = dir;
    loop {
        if let Ok(handle) = File::open(at) {
            let verdict = match fstatfs(&handle) {
                Ok(fs) if is_volatile(fs.filesystem_type()) => Ok(()),
                Ok(fs) => Err(format!(
                    "a persistent file system, type 0x{:x}",
                    fs.filesystem_type().0
                )),
                Err(e) => Err(format!("its file system cannot be told: {e}")),
            };
            return (at.to_path_buf(), verdict);
        }
        match at.parent() {
            Some(parent) => at = parent,
            None => return (at.to_path_buf(), Err("no directory of it exists".into())),
        }
    }
}

fn is_volatile(kind: FsType) -> bool {
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
}
