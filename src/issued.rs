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

use crate::secret::SecretJson;
use crate::state::{self, fail, Error, Unusable};
use serde_json::{Map, Value};
use std::path::Path;

pub const FILE_NAME: &str = "issued_certificates.json";
/// Far more than any configuration needs (an entry is ~100 bytes).
const MAX_BYTES: u64 = 1024 * 1024;
const MAX_PATH_BYTES: usize = 4096;

/// Output path → SHA-256 of the certificate Vault issued for it (lower-case hex, as
/// `certificate::Details::sha256`). A few entries at most: a list, searched. (Strings, the same
/// types as the rest of the run's bookkeeping: a map of paths would cost the static binary
/// kilobytes of code of its own. Output paths are UTF-8: they come from the TOML file.)
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Issued(Vec<(String, String)>);

impl Issued {
    /// The fingerprint of the certificate vaultboot last put at `path`.
    pub fn at(&self, path: &Path) -> Option<&str> {
        let path = path.to_str()?;
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.as_str())
    }

    /// The record after a commit: the certificates it puts in place (`committed`: path and
    /// fingerprint, `None` for content that holds no certificate), and what was recorded for
    /// the other outputs that are still certificate outputs of the configuration (`current`).
    pub fn after_commit<'a>(
        &self,
        current: impl Fn(&Path) -> bool,
        committed: impl IntoIterator<Item = (&'a Path, Option<String>)>,
    ) -> Issued {
        let mut next = self.clone();
        next.0.retain(|(p, _)| current(Path::new(p)));
        for (path, sha256) in committed {
            let Some(text) = path.to_str() else {
                continue;
            };
            let at = next.0.iter().position(|(p, _)| p == text);
            match (sha256.filter(|_| current(path)), at) {
                (Some(sha256), Some(i)) => next.0[i].1 = sha256,
                (Some(sha256), None) => next.0.push((text.to_string(), sha256)),
                (None, Some(i)) => drop(next.0.remove(i)),
                (None, None) => {}
            }
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
    let opened = state::prepare_dir(dir, &mut warnings)?;
    opened.remove_stale_stages(FILE_NAME.as_ref());
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

/// `{"version": 1, "certificates": [{"path": "/…", "sha256": "<64 hex>"}, …]}`, nothing else.
fn parse(bytes: &[u8]) -> Result<Issued, String> {
    let not_ours = |what: &str| format!("not vaultboot state ({what})");
    let json =
        SecretJson::parse(bytes).map_err(|e| not_ours(&crate::untrusted::json_problem(&e)))?;
    let record = json
        .0
        .as_object()
        .ok_or_else(|| not_ours("not an object"))?;
    if record.get("version").and_then(Value::as_u64) != Some(1) || record.len() != 2 {
        return Err(not_ours("another version or shape"));
    }
    let entries = record.get("certificates").and_then(Value::as_array);
    let entries = entries.ok_or_else(|| not_ours("no list of certificates"))?;
    let mut issued = Issued::default();
    for entry in entries {
        let (path, sha256) = entry_of(entry).ok_or_else(|| {
            not_ours("an entry that is not an absolute path and a SHA-256 in lower-case hex")
        })?;
        issued.0.push((path.to_string(), sha256.to_string()));
    }
    Ok(issued)
}

fn entry_of(entry: &Value) -> Option<(&str, &str)> {
    let entry = entry.as_object().filter(|e| e.len() == 2)?;
    let path = entry.get("path")?.as_str()?;
    let sha256 = entry.get("sha256")?.as_str()?;
    let path_ok = path.starts_with('/') && path.len() <= MAX_PATH_BYTES && !path.contains('\0');
    let hash_ok = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (path_ok && hash_ok).then_some((path, sha256))
}

/// Replaces the record with `next` (durably: file and directory synced) unless it already says
/// that. (The state directory's permissions were repaired, and said, when the run took its
/// lock: they are only checked again here.)
pub fn save(dir: &Path, before: &Issued, next: &Issued) -> Result<(), Error> {
    if next == before {
        return Ok(());
    }
    state::prepare_dir(dir, &mut Vec::new())?;
    // Built as a Value by hand: serde_json's `json!` and derives would each add code of
    // their own to the static binary; a Value is already written for every PKI request.
    let text = |s: &String| Value::String(s.clone());
    let entry = |(path, sha256): &(String, String)| {
        let mut entry = Map::new();
        entry.insert("path".into(), text(path));
        entry.insert("sha256".into(), text(sha256));
        Value::Object(entry)
    };
    let mut record = Map::new();
    record.insert("version".into(), Value::Number(1.into()));
    record.insert(
        "certificates".into(),
        Value::Array(next.0.iter().map(entry).collect()),
    );
    let bytes = serde_json::to_vec(&Value::Object(record))
        .map_err(|e| fail(&dir.join(FILE_NAME), e.to_string()))?;
    state::write(dir, FILE_NAME, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

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
        Issued(
            entries
                .iter()
                .map(|(p, c)| (p.to_string(), sha(*c)))
                .collect(),
        )
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
