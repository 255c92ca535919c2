//! The checks that look outside the file: the CA file Vault's certificate is verified with, and
//! the owner and group names of secret files (`/etc/passwd`, `/etc/group`). Kept apart from
//! the pure reading so that what depends on the machine is in one place.

use crate::accounts;
use std::path::Path;

/// Far above any real CA bundle; a larger file is refused rather than read whole.
pub const MAX_CA_BYTES: u64 = 1024 * 1024;

/// A CA file must hold at least one PEM certificate.
pub fn ca_file(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("is not an absolute path".into());
    }
    let text = read_regular_file(path, MAX_CA_BYTES)?;
    let count = ureq::tls::parse_pem(&text)
        .filter(|item| matches!(item, Ok(ureq::tls::PemItem::Certificate(_))))
        .count();
    if count == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

/// Reads the CA file as an input vaultboot trusts (see `files::read_input`).
fn read_regular_file(path: &Path, limit: u64) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    crate::files::read_input(path, limit).map_err(|e| e.message)
}

/// The uid and gid of a secret file's owner and group (names or numbers); the message names
/// the key that failed.
pub fn owner_and_group(owner: &str, group: &str) -> Result<(u32, u32), String> {
    let uid = accounts::user_id(owner).map_err(|m| format!("owner: {m}"))?;
    let gid = accounts::group_id(group).map_err(|m| format!("group: {m}"))?;
    Ok((uid, gid))
}
