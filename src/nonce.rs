//! The ec2 login nonce, persisted in `<state.dir>/nonce.json` and bound to the instance id.
//!
//! Vault binds the first client nonce it sees to the instance id; every later login must present
//! the same one. So the nonce is written durably BEFORE the first login that uses it, reused on
//! every reboot, and never reused on another instance (an image baked with state left in it).

use crate::secret::Secret;
use crate::state::{self, fail, Unusable};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

pub use crate::state::Error;

const FILE_NAME: &str = "nonce.json";
/// Random bytes in a nonce; 32 bytes give a 43-character base64url nonce (Vault allows 128).
const NONCE_BYTES: usize = 32;
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// Where this run's nonce came from (logged; the value never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The stored nonce of this instance.
    Reused,
    /// No state: a first boot.
    Generated,
    /// The state belonged to another instance (baked into the image): not used.
    ReplacedForeign { stored_instance: String },
    /// The state file was unreadable; it was moved aside.
    ReplacedUnreadable { moved_to: PathBuf, why: String },
}

pub struct Nonce {
    pub value: Secret,
    pub origin: Origin,
    /// Repairs made to the state's permissions, to be logged.
    pub repairs: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    instance_id: String,
    nonce: String,
    created: u64,
}

impl Drop for Stored {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.nonce);
    }
}

/// Loads this instance's nonce, or generates one and persists it before returning it.
pub fn load_or_create(dir: &Path, instance_id: &str) -> Result<Nonce, Error> {
    let mut repairs = Vec::new();
    let opened = state::prepare_dir(dir, &mut repairs)?;
    // A copy staged by a run killed before its rename: never used, always removed.
    opened.remove_stale_stages(FILE_NAME.as_ref());
    let path = dir.join(FILE_NAME);

    let origin = match read_stored(&path, &mut repairs) {
        Ok(None) => Origin::Generated,
        Ok(Some(mut stored)) if stored.instance_id == instance_id => {
            let value = Secret::from_string(std::mem::take(&mut stored.nonce));
            return Ok(Nonce {
                value,
                origin: Origin::Reused,
                repairs,
            });
        }
        Ok(Some(stored)) => Origin::ReplacedForeign {
            stored_instance: stored.instance_id.clone(),
        },
        Err(unusable) => {
            let kind = unusable.kind();
            let why = match unusable {
                Unusable::Unreadable(why) => why,
                Unusable::Untrusted(why) => {
                    format!("not trusted: {why}, so its nonce may be someone else's; never used")
                }
            };
            let moved_to = state::aside_path(dir, FILE_NAME, kind);
            fs::rename(&path, &moved_to).map_err(|e| {
                fail(
                    &path,
                    format!("{kind} ({why}) and cannot be moved aside: {e}"),
                )
            })?;
            Origin::ReplacedUnreadable { moved_to, why }
        }
    };

    let value = generate();
    persist(dir, &path, instance_id, &value)?;
    Ok(Nonce {
        value,
        origin,
        repairs,
    })
}

fn generate() -> Secret {
    let mut raw = zeroize::Zeroizing::new([0u8; NONCE_BYTES]);
    getrandom::getrandom(&mut *raw).expect("the OS random generator is unavailable");
    Secret::from_string(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*raw))
}

/// `Ok(None)` when there is no state yet; `Err` when the file is there but unusable.
fn read_stored(path: &Path, repairs: &mut Vec<String>) -> Result<Option<Stored>, Unusable> {
    let Some(contents) = state::read(path, MAX_STATE_BYTES)? else {
        return Ok(None);
    };
    if let Some(mode) = contents.was_mode {
        repairs.push(format!(
            "{} was mode {mode:04o}, readable by others; set to 0600 (if that was not you, \
             rotate the nonce: see README)",
            path.display(),
        ));
    }
    let stored: Stored = serde_json::from_slice(&contents.bytes).map_err(|e| {
        format!(
            "not vaultboot state ({})",
            crate::untrusted::json_problem(&e)
        )
    })?;
    let valid = stored.version == 1
        && stored.instance_id.starts_with("i-")
        && (32..=128).contains(&stored.nonce.len())
        && stored.nonce.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err("not vaultboot state (bad version, instance id or nonce)".into());
    }
    Ok(Some(stored))
}

/// Write-ahead: the nonce is on disk (file and directory synced) before anyone sends it.
fn persist(dir: &Path, path: &Path, instance_id: &str, nonce: &Secret) -> Result<(), Error> {
    let stored = Stored {
        version: 1,
        instance_id: instance_id.to_string(),
        nonce: nonce.expose_str().unwrap_or_default().to_string(),
        created: state::now_secs(),
    };
    let bytes = crate::secret::to_json_pretty(&stored).map_err(|e| fail(path, e.to_string()))?;
    drop(stored);
    state::write(dir, FILE_NAME, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn state() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let dir = d.path().join("state");
        (d, dir)
    }

    #[test]
    fn generated_once_then_reused() {
        let (_t, dir) = state();
        let first = load_or_create(&dir, "i-1").unwrap();
        assert_eq!(first.origin, Origin::Generated);
        assert_eq!(first.value.len(), 43);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(dir.join(FILE_NAME)).unwrap().mode() & 0o777,
            0o600
        );
        let second = load_or_create(&dir, "i-1").unwrap();
        assert_eq!(second.origin, Origin::Reused);
        assert_eq!(first.value, second.value);
    }

    #[test]
    fn another_instances_state_is_never_used() {
        let (_t, dir) = state();
        let baked = load_or_create(&dir, "i-baked").unwrap();
        let mine = load_or_create(&dir, "i-mine").unwrap();
        assert_eq!(
            mine.origin,
            Origin::ReplacedForeign {
                stored_instance: "i-baked".into()
            }
        );
        assert_ne!(baked.value, mine.value);
        assert_eq!(load_or_create(&dir, "i-mine").unwrap().value, mine.value);
    }

    #[test]
    fn unreadable_state_is_moved_aside_and_said() {
        let (_t, dir) = state();
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.join(FILE_NAME), "{not json").unwrap();
        let n = load_or_create(&dir, "i-1").unwrap();
        assert!(matches!(n.origin, Origin::ReplacedUnreadable { .. }));
        assert_eq!(load_or_create(&dir, "i-1").unwrap().origin, Origin::Reused);
    }

    #[test]
    fn loose_modes_are_repaired_and_reported() {
        let (_t, dir) = state();
        load_or_create(&dir, "i-1").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join(FILE_NAME), fs::Permissions::from_mode(0o644)).unwrap();
        let n = load_or_create(&dir, "i-1").unwrap();
        assert_eq!(n.repairs.len(), 2);
        assert_eq!(
            fs::metadata(dir.join(FILE_NAME)).unwrap().mode() & 0o777,
            0o600
        );
    }
}
