//! The on_change commands a commit owes, written ahead to `<state.dir>/pending_on_change.json`.
//!
//! The record is written (file and directory synced) before the first rename and removed
//! (directory synced) once the commands have run. A run killed between two renames, or between
//! the renames and the commands, leaves it behind, and the next run that commits runs those
//! commands, also when it finds every file already current.
//!
//! It names outputs, never commands: what runs is always the argv the current configuration
//! gives that output, so no command line is ever taken from disk (neither a stale one nor a
//! planted one), and nothing secret is in the file (output paths are logged anyway).

use crate::files::{Last, Missing, Output, Staged, TrustedDir};
use crate::state::{self, fail, Error, Unusable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "pending_on_change.json";
const MAX_BYTES: u64 = 1024 * 1024;
const MAX_PATH_BYTES: usize = 4096;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u32,
    created: u64,
    /// Outputs whose on_change commands are owed.
    outputs: Vec<String>,
}

/// What an earlier run left.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No record: nothing is owed.
    Nothing,
    /// The outputs whose on_change commands an earlier run owes.
    Owed(BTreeSet<PathBuf>),
    /// A record that cannot be used (`kind` is "unreadable" or "untrusted"): what was owed is
    /// unknown.
    Unusable { kind: &'static str, why: String },
}

pub struct Pending {
    pub found: Found,
    /// Repairs made to the state's permissions, to be logged.
    pub repairs: Vec<String>,
}

/// Reads what an earlier run owes. Creates nothing: without a record, a missing state
/// directory stays missing.
pub fn load(dir: &Path) -> Result<Pending, Error> {
    let path = dir.join(FILE_NAME);
    let mut repairs = Vec::new();
    if let Err(e) = fs::symlink_metadata(&path) {
        if e.kind() == std::io::ErrorKind::NotFound {
            // A copy staged by a run killed before its rename, in a directory nobody else can
            // write to: never used, removed.
            if let Ok(opened) = TrustedDir::open(dir, Last::Ours, Missing::Refuse) {
                opened.remove_stale_stages(FILE_NAME.as_ref());
            }
            return Ok(Pending {
                found: Found::Nothing,
                repairs,
            });
        }
    }
    let opened = state::prepare_dir(dir, &mut repairs)?;
    opened.remove_stale_stages(FILE_NAME.as_ref());
    let found = match state::read(&path, MAX_BYTES) {
        Ok(None) => Found::Nothing,
        Ok(Some(contents)) => {
            if let Some(mode) = contents.was_mode {
                repairs.push(format!(
                    "{} was mode {mode:04o}; set to 0600",
                    path.display()
                ));
            }
            match parse(&contents.bytes) {
                Ok(owed) => Found::Owed(owed),
                Err(why) => Found::Unusable {
                    kind: "unreadable",
                    why,
                },
            }
        }
        Err(unusable) => Found::Unusable {
            kind: unusable.kind(),
            why: match unusable {
                Unusable::Unreadable(why) => why,
                Unusable::Untrusted(why) => format!("not trusted: {why}"),
            },
        },
    };
    Ok(Pending { found, repairs })
}

/// What an earlier run owes, read without repairing or moving anything (for `vaultboot
/// plan`, which writes nothing but the nonce state).
pub fn peek(dir: &Path) -> Found {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Nothing,
        Err(e) => Err(e.to_string()),
        Ok(file) => crate::untrusted::read_capped(file, MAX_BYTES).map_err(|e| e.to_string()),
    };
    match bytes.and_then(|b| parse(&b)) {
        Ok(owed) => Found::Owed(owed),
        Err(why) => Found::Unusable {
            kind: "unreadable",
            why,
        },
    }
}

fn parse(bytes: &[u8]) -> Result<BTreeSet<PathBuf>, String> {
    let record: Record = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not vaultboot state ({})",
            crate::untrusted::json_problem(&e)
        )
    })?;
    if record.version != 1 {
        return Err(format!("not vaultboot state (version {})", record.version));
    }
    let plain = |p: &String| {
        p.starts_with('/') && p.len() <= MAX_PATH_BYTES && !p.contains('\0') && p != "/"
    };
    if !record.outputs.iter().all(plain) {
        return Err("not vaultboot state (an output that is not an absolute path)".into());
    }
    // Inserted one by one: collecting into a set would add a sort to the binary.
    let mut owed = BTreeSet::new();
    owed.extend(record.outputs.into_iter().map(PathBuf::from));
    Ok(owed)
}

/// Records, durably, that the on_change commands of `outputs` are owed. Returns repairs made to
/// the state directory's permissions.
pub fn save(dir: &Path, outputs: &BTreeSet<PathBuf>) -> Result<Vec<String>, Error> {
    let mut repairs = Vec::new();
    state::prepare_dir(dir, &mut repairs)?;
    let record = Record {
        version: 1,
        created: state::now_secs(),
        outputs: outputs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    };
    let path = dir.join(FILE_NAME);
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| fail(&path, e.to_string()))?;
    state::write(dir, FILE_NAME, &bytes)?;
    Ok(repairs)
}

/// Removes the record (synced): nothing is owed any more.
pub fn clear(dir: &Path) -> Result<(), Error> {
    state::remove(dir, FILE_NAME)
}

/// Keeps an unusable record as evidence under `<name>.<kind>-<time>`. A regular file is linked
/// there and stays in place until `save` or `clear` replaces it, so a kill in between loses
/// nothing (the next run finds it unusable again); anything else is moved.
pub fn set_aside(dir: &Path, kind: &str) -> Result<PathBuf, Error> {
    let path = dir.join(FILE_NAME);
    let aside = state::aside_path(dir, FILE_NAME, kind);
    let is_file = fs::symlink_metadata(&path)
        .map(|m| m.is_file())
        .unwrap_or(false);
    let kept = match is_file.then(|| fs::hard_link(&path, &aside)) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // Not a file, or not linkable (protected_hardlinks for a non-root run): moved.
        _ => fs::rename(&path, &aside),
    };
    kept.map_err(|e| fail(&path, format!("{kind} and cannot be set aside: {e}")))?;
    Ok(aside)
}

/// The outputs whose on_change commands this run owes, in configuration order: those it
/// replaces, and those an earlier run owed that still have an on_change; when the record was
/// unusable, every output with an on_change. Second: recorded outputs that no longer have one
/// (their commands are not run: only the configuration says what runs).
pub fn owed<'a>(
    outputs: &'a [Output],
    staged: &Staged<'a>,
    found: &Found,
) -> (Vec<&'a Output>, Vec<PathBuf>) {
    let mut replacing = BTreeSet::new();
    replacing.extend(staged.to_replace().map(|o| o.path.clone()));
    let with_command = outputs.iter().filter(|o| o.on_change.is_some());
    let owed = with_command
        .filter(|o| {
            replacing.contains(&o.path)
                || match found {
                    Found::Nothing => false,
                    Found::Owed(earlier) => earlier.contains(&o.path),
                    Found::Unusable { .. } => true,
                }
        })
        .collect();
    let dropped = match found {
        Found::Owed(earlier) => {
            let mut configured = BTreeSet::new();
            configured.extend(
                outputs
                    .iter()
                    .filter(|o| o.on_change.is_some())
                    .map(|o| o.path.clone()),
            );
            earlier
                .iter()
                .filter(|p| !configured.contains(*p))
                .cloned()
                .collect()
        }
        _ => Vec::new(),
    };
    (owed, dropped)
}

/// What `record` did.
pub struct Recorded {
    /// A record is on disk: `clear` it once the commands have run.
    pub on_disk: bool,
    /// Warnings for the log.
    pub warnings: Vec<String>,
}

/// Brings the record in line with `owed`, durably, before the first rename.
pub fn record(dir: &Path, found: &Found, owed: &[&Output]) -> Result<Recorded, Error> {
    let mut paths = BTreeSet::new();
    paths.extend(owed.iter().map(|o| o.path.clone()));
    let mut warnings = Vec::new();
    if let Found::Unusable { kind, why } = found {
        let aside = set_aside(dir, kind)?;
        warnings.push(format!(
            "{} was {kind} ({why}): set aside as {}, never used; what an earlier run owed is \
             unknown, so every configured on_change command runs after this commit",
            dir.join(FILE_NAME).display(),
            aside.display()
        ));
    }
    let unchanged = matches!(found, Found::Owed(earlier) if *earlier == paths);
    if paths.is_empty() {
        if *found != Found::Nothing {
            clear(dir)?;
        }
    } else if !unchanged {
        warnings.extend(save(dir, &paths)?);
    }
    Ok(Recorded {
        on_disk: !paths.is_empty(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn state_dir() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let dir = d.path().join("state");
        (d, dir)
    }

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn saved_loaded_and_cleared() {
        let (_t, dir) = state_dir();
        assert_eq!(load(&dir).unwrap().found, Found::Nothing);
        assert!(!dir.exists(), "loading creates nothing");
        let owed = set(&["/etc/a.crt", "/etc/b.key"]);
        save(&dir, &owed).unwrap();
        let meta = fs::metadata(dir.join(FILE_NAME)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&dir).unwrap().mode() & 0o777,
            0o700,
            "the state directory is created private"
        );
        assert_eq!(load(&dir).unwrap().found, Found::Owed(owed));
        clear(&dir).unwrap();
        assert_eq!(load(&dir).unwrap().found, Found::Nothing);
        clear(&dir).unwrap();
    }

    #[test]
    fn a_damaged_record_is_unusable_and_set_aside_whole() {
        let (_t, dir) = state_dir();
        save(&dir, &set(&["/etc/a"])).unwrap();
        for (what, bytes) in [
            ("not JSON", &b"{\"version\": 1, \"outp"[..]),
            ("empty", b""),
            (
                "relative path",
                br#"{"version":1,"created":1,"outputs":["etc/a"]}"#,
            ),
            (
                "unknown version",
                br#"{"version":2,"created":1,"outputs":[]}"#,
            ),
            (
                "argv",
                br#"{"version":1,"created":1,"outputs":[],"argv":["sh"]}"#,
            ),
        ] {
            fs::write(dir.join(FILE_NAME), bytes).unwrap();
            let found = load(&dir).unwrap().found;
            assert!(
                matches!(
                    found,
                    Found::Unusable {
                        kind: "unreadable",
                        ..
                    }
                ),
                "{what}: {found:?}"
            );
            let aside = set_aside(&dir, "unreadable").unwrap();
            assert_eq!(fs::read(&aside).unwrap(), bytes, "{what}");
            // Still in place until replaced: a kill now loses nothing.
            assert!(dir.join(FILE_NAME).exists(), "{what}");
            save(&dir, &set(&["/etc/b"])).unwrap();
            assert_eq!(load(&dir).unwrap().found, Found::Owed(set(&["/etc/b"])));
            fs::remove_file(aside).unwrap();
        }
    }

    #[test]
    fn a_record_others_could_write_is_never_used() {
        let (_t, dir) = state_dir();
        save(&dir, &set(&["/etc/a"])).unwrap();
        fs::set_permissions(dir.join(FILE_NAME), fs::Permissions::from_mode(0o666)).unwrap();
        let found = load(&dir).unwrap().found;
        assert!(
            matches!(&found, Found::Unusable { kind: "untrusted", why } if why.contains("writable by others")),
            "{found:?}"
        );
    }

    #[test]
    fn a_record_readable_by_others_is_repaired_and_used() {
        let (_t, dir) = state_dir();
        save(&dir, &set(&["/etc/a"])).unwrap();
        fs::set_permissions(dir.join(FILE_NAME), fs::Permissions::from_mode(0o644)).unwrap();
        let pending = load(&dir).unwrap();
        assert_eq!(pending.found, Found::Owed(set(&["/etc/a"])));
        assert_eq!(pending.repairs.len(), 1, "{:?}", pending.repairs);
        assert_eq!(
            fs::metadata(dir.join(FILE_NAME)).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    #[ignore = "needs root: chown to another user (tests/run-all.sh runs it as root)"]
    fn root_a_state_dir_of_another_user_is_refused_when_a_record_is_there_or_needed() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "run as root: cargo test -- --ignored root_"
        );
        let (_t, dir) = state_dir();
        save(&dir, &set(&["/etc/a"])).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let e = load(&dir)
            .err()
            .expect("a record in a directory of another user was read");
        assert!(e.message.contains("owned by uid 65534"), "{e}");
        let e = save(&dir, &set(&["/etc/b"])).expect_err("written");
        assert!(e.message.contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn a_directory_in_its_place_is_moved_aside() {
        let (_t, dir) = state_dir();
        fs::create_dir_all(dir.join(FILE_NAME)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let found = load(&dir).unwrap().found;
        assert!(
            matches!(
                found,
                Found::Unusable {
                    kind: "unreadable",
                    ..
                }
            ),
            "{found:?}"
        );
        let aside = set_aside(&dir, "unreadable").unwrap();
        assert!(aside.is_dir());
        save(&dir, &set(&["/etc/a"])).unwrap();
        assert_eq!(load(&dir).unwrap().found, Found::Owed(set(&["/etc/a"])));
    }

    #[test]
    fn a_staged_record_left_by_a_killed_run_is_removed() {
        let (_t, dir) = state_dir();
        fs::create_dir(&dir).unwrap();
        let stale = dir.join(format!(".{FILE_NAME}.vaultboot.123"));
        fs::write(&stale, "{}").unwrap();
        assert_eq!(load(&dir).unwrap().found, Found::Nothing);
        assert!(!stale.exists());
    }
}
