//! Which certificates Vault issued to this instance: `<state.dir>/issued_certificates.json`
//! gives, for each certificate output of a PKI issue, the SHA-256 of the certificate vaultboot
//! last put there. A certificate in place is kept only when it is that one: the output's owner
//! (a service user that must read its key) could otherwise put a pair of its own there, valid
//! for a century, and stop rotation for good.
//!
//! A certificate is public, so a plain hash of it is no secret. The record is written ahead,
//! with the commit's other state, before the first rename: a run killed in between leaves a
//! Vault certificate that is not recognised, which costs one more issue and nothing else, and
//! a certificate vaultboot did not write is never recognised. Each write keeps only the
//! certificate outputs of the current configuration, so the record does not grow.

use crate::files;
use crate::state::{self, fail, Error, Unusable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "issued_certificates.json";
/// Far more than any configuration needs (an entry is ~100 bytes).
const MAX_BYTES: u64 = 1024 * 1024;
const MAX_PATH_BYTES: usize = 4096;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u32,
    certificates: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    path: String,
    /// SHA-256 of the certificate's DER, lower-case hex (`certificate::Facts::sha256`).
    sha256: String,
}

/// Output path → SHA-256 of the certificate Vault issued for it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Issued(BTreeMap<PathBuf, String>);

impl Issued {
    /// The fingerprint of the certificate vaultboot last put at `path`.
    pub fn at(&self, path: &Path) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }

    /// The record after a commit: the certificates it puts in place (`committed`: path and
    /// fingerprint, `None` for content that holds no certificate), and what was recorded for
    /// the other outputs that are still certificate outputs of the configuration (`current`).
    pub fn after_commit<'a>(
        &self,
        current: impl Fn(&Path) -> bool,
        committed: impl IntoIterator<Item = (&'a Path, Option<String>)>,
    ) -> Issued {
        let mut next = Issued::default();
        for (path, sha256) in &self.0 {
            if current(path) {
                next.0.insert(path.clone(), sha256.clone());
            }
        }
        for (path, sha256) in committed {
            match sha256 {
                Some(sha256) if current(path) => next.0.insert(path.to_path_buf(), sha256),
                _ => next.0.remove(path),
            };
        }
        next
    }
}

/// What a run found.
pub struct Loaded {
    pub issued: Issued,
    /// Repairs and set-asides, for the log.
    pub warnings: Vec<String>,
}

/// Reads the record. One that is not vaultboot's, or that someone else could have written, is
/// set aside and never read: every certificate is then issued again, once. Creates nothing.
pub fn load(dir: &Path) -> Result<Loaded, Error> {
    let path = dir.join(FILE_NAME);
    let mut warnings = Vec::new();
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(Loaded {
            issued: Issued::default(),
            warnings,
        });
    }
    state::prepare_dir(dir, &mut warnings)?;
    files::remove_stale_stages(dir, FILE_NAME);
    let unusable = match state::read(&path, MAX_BYTES) {
        Ok(None) => return Ok(Loaded::empty(warnings)),
        Ok(Some(contents)) => {
            if let Some(mode) = contents.was_mode {
                warnings.push(format!(
                    "{} was mode {mode:04o}; set to 0600",
                    path.display()
                ));
            }
            match parse(&contents.bytes) {
                Ok(issued) => return Ok(Loaded { issued, warnings }),
                Err(why) => Unusable::Unreadable(why),
            }
        }
        Err(unusable) => unusable,
    };
    let (kind, why) = match unusable {
        Unusable::Unreadable(why) => ("unreadable", why),
        Unusable::Untrusted(why) => ("untrusted", format!("not trusted: {why}")),
    };
    let aside = state::set_aside(dir, FILE_NAME, kind)?;
    warnings.push(format!(
        "{} was {kind} ({why}): set aside as {}, never used; every certificate in place is \
         issued again",
        path.display(),
        aside.display()
    ));
    Ok(Loaded::empty(warnings))
}

impl Loaded {
    fn empty(warnings: Vec<String>) -> Loaded {
        Loaded {
            issued: Issued::default(),
            warnings,
        }
    }
}

/// The record as `load` would trust it, changing nothing (for `vaultboot plan`): empty when
/// it is missing or unusable.
pub fn peek(dir: &Path) -> Issued {
    match state::peek(&dir.join(FILE_NAME), MAX_BYTES) {
        Ok(Some(bytes)) => parse(&bytes).unwrap_or_default(),
        _ => Issued::default(),
    }
}

fn parse(bytes: &[u8]) -> Result<Issued, String> {
    let record: Record = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not vaultboot state ({})",
            crate::untrusted::json_problem(&e)
        )
    })?;
    if record.version != 1 {
        return Err(format!("not vaultboot state (version {})", record.version));
    }
    let mut issued = Issued::default();
    for entry in record.certificates {
        let path_ok = entry.path.starts_with('/')
            && entry.path.len() <= MAX_PATH_BYTES
            && !entry.path.contains('\0');
        let hash_ok = entry.sha256.len() == 64
            && entry
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !path_ok || !hash_ok {
            return Err("not vaultboot state (a path or a SHA-256 of another form)".into());
        }
        issued.0.insert(PathBuf::from(entry.path), entry.sha256);
    }
    Ok(issued)
}

/// Replaces the record with `next` (durably: file and directory synced) unless it already says
/// that. Returns repairs made to the state directory's permissions.
pub fn save(dir: &Path, before: &Issued, next: &Issued) -> Result<Vec<String>, Error> {
    let mut repairs = Vec::new();
    if next == before {
        return Ok(repairs);
    }
    state::prepare_dir(dir, &mut repairs)?;
    let record = Record {
        version: 1,
        certificates: next
            .0
            .iter()
            .map(|(path, sha256)| Entry {
                path: path.to_string_lossy().into_owned(),
                sha256: sha256.clone(),
            })
            .collect(),
    };
    let path = dir.join(FILE_NAME);
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| fail(&path, e.to_string()))?;
    state::write(dir, FILE_NAME, &bytes)?;
    Ok(repairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn state_dir() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let dir = d.path().join("state");
        (d, dir)
    }

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn issued(entries: &[(&str, char)]) -> Issued {
        let mut issued = Issued::default();
        for (path, c) in entries {
            issued.0.insert(PathBuf::from(path), sha(*c));
        }
        issued
    }

    fn aside(dir: &Path, kind: &str) -> Vec<PathBuf> {
        let prefix = format!("{FILE_NAME}.{kind}-");
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn saved_loaded_and_left_alone_when_unchanged() {
        let (_t, dir) = state_dir();
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.issued, Issued::default());
        assert!(!dir.exists(), "loading creates nothing");
        let one = issued(&[("/etc/tls/a.crt", 'a'), ("/etc/tls/b.crt", 'b')]);
        save(&dir, &Issued::default(), &one).unwrap();
        let path = dir.join(FILE_NAME);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(load(&dir).unwrap().issued, one);
        assert_eq!(peek(&dir), one);
        assert_eq!(one.at(Path::new("/etc/tls/b.crt")), Some(sha('b').as_str()));
        // Nothing changed: not rewritten (no fsync on a run that keeps its certificates).
        save(&dir, &one, &one.clone()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), meta.ino());
    }

    #[test]
    fn a_commit_records_its_certificates_and_forgets_outputs_no_longer_configured() {
        let before = issued(&[("/a.crt", 'a'), ("/b.crt", 'b'), ("/gone.crt", 'c')]);
        let current = |p: &Path| {
            ["/a.crt", "/b.crt", "/new.crt"]
                .iter()
                .any(|c| p == Path::new(c))
        };
        let next = before.after_commit(
            current,
            [
                (Path::new("/a.crt"), Some(sha('d'))),
                (Path::new("/new.crt"), Some(sha('e'))),
            ],
        );
        // a replaced, b kept, gone forgotten, new added.
        assert_eq!(
            next,
            issued(&[("/a.crt", 'd'), ("/b.crt", 'b'), ("/new.crt", 'e')])
        );
        // Content that holds no certificate: nothing recorded for that output.
        let next = next.after_commit(current, [(Path::new("/b.crt"), None)]);
        assert_eq!(next, issued(&[("/a.crt", 'd'), ("/new.crt", 'e')]));
    }

    #[test]
    fn a_record_that_is_not_vaultboots_is_set_aside_and_never_used() {
        let (_t, dir) = state_dir();
        save(&dir, &Issued::default(), &issued(&[("/a.crt", 'a')])).unwrap();
        let entry = |path: &str, sha256: &str| {
            format!(r#"{{"version":1,"certificates":[{{"path":"{path}","sha256":"{sha256}"}}]}}"#)
        };
        for (what, text) in [
            ("not JSON", "{\"version\": 1, \"certi".to_string()),
            ("empty", String::new()),
            ("relative path", entry("etc/a.crt", &sha('a'))),
            ("short hash", entry("/a.crt", "abc")),
            ("upper-case hash", entry("/a.crt", &sha('A'))),
            (
                "unknown key",
                r#"{"version":1,"certificates":[],"keep":true}"#.into(),
            ),
            ("other version", r#"{"version":2,"certificates":[]}"#.into()),
        ] {
            fs::write(dir.join(FILE_NAME), &text).unwrap();
            assert_eq!(peek(&dir), Issued::default(), "{what}");
            let loaded = load(&dir).unwrap();
            assert_eq!(loaded.issued, Issued::default(), "{what}");
            assert!(
                loaded.warnings.iter().any(|w| w.contains("was unreadable")
                    && w.contains("every certificate in place is issued again")),
                "{what}: {:?}",
                loaded.warnings
            );
            let kept = aside(&dir, "unreadable");
            assert_eq!(kept.len(), 1, "{what}");
            assert_eq!(fs::read_to_string(&kept[0]).unwrap(), text, "{what}");
            assert!(!dir.join(FILE_NAME).exists(), "{what}");
            fs::remove_file(&kept[0]).unwrap();
        }
    }

    #[test]
    fn a_record_others_could_write_is_never_used() {
        let (_t, dir) = state_dir();
        // A forged certificate's hash, planted by whoever could write the file.
        save(&dir, &Issued::default(), &issued(&[("/a.crt", 'f')])).unwrap();
        fs::set_permissions(dir.join(FILE_NAME), fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(peek(&dir), Issued::default(), "plan trusts it");
        assert_eq!(
            fs::metadata(dir.join(FILE_NAME)).unwrap().mode() & 0o7777,
            0o666,
            "plan changed it"
        );
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.issued, Issued::default());
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("was untrusted") && w.contains("writable by others")),
            "{:?}",
            loaded.warnings
        );
        let kept = aside(&dir, "untrusted");
        assert_eq!(kept.len(), 1);
        assert_eq!(fs::metadata(&kept[0]).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_record_readable_by_others_is_repaired_and_used() {
        let (_t, dir) = state_dir();
        let one = issued(&[("/a.crt", 'a')]);
        save(&dir, &Issued::default(), &one).unwrap();
        fs::set_permissions(dir.join(FILE_NAME), fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.issued, one);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert_eq!(
            fs::metadata(dir.join(FILE_NAME)).unwrap().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    #[ignore = "needs root: chown to another user (tests/run-all.sh runs it as root)"]
    fn root_a_record_of_another_user_is_never_used() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "run as root: cargo test -- --ignored root_"
        );
        let (_t, dir) = state_dir();
        save(&dir, &Issued::default(), &issued(&[("/a.crt", 'f')])).unwrap();
        std::os::unix::fs::chown(dir.join(FILE_NAME), Some(65534), Some(65534)).unwrap();
        assert_eq!(peek(&dir), Issued::default(), "plan trusts it");
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.issued, Issued::default());
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("was untrusted") && w.contains("owned by uid 65534")),
            "{:?}",
            loaded.warnings
        );
        let kept = aside(&dir, "untrusted");
        let meta = fs::metadata(&kept[0]).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
    }
}
