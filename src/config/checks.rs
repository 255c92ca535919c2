//! The checks that look outside the file: the CA file Vault's certificate is verified with, and
//! the owner and group names of secret files (`/etc/passwd`, `/etc/group`). Kept apart from
//! the pure reading so that what depends on the machine is in one place.

use crate::accounts;
use std::path::Path;

/// Far above any real CA bundle; a larger file is refused rather than read whole.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// A CA file must hold at least one PEM certificate.
pub fn ca_file(path: &Path) -> Result<(), String> {
    let text = read_regular_file(path, MAX_CA_BYTES)?;
    let count = ureq::tls::parse_pem(&text)
        .filter(|item| matches!(item, Ok(ureq::tls::PemItem::Certificate(_))))
        .count();
    if count == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

/// Reads a regular file of at most `limit` bytes. A FIFO, a device (`/dev/zero`, `/dev/stdin`)
/// or a directory is refused before it is read (it is opened non-blocking, so that a FIFO
/// without a writer cannot stall `vaultboot check` or a boot), and a larger file is refused
/// rather than read whole.
fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let bytes = crate::untrusted::read_capped(file, limit).map_err(|e| match e {
        crate::untrusted::ReadError::Io(e) => e.to_string(),
        too_large => too_large.to_string(),
    })?;
    Ok(bytes.to_vec())
}

/// The uid and gid of a secret file's owner and group (names or numbers); the message names
/// the key that failed.
pub fn owner_and_group(owner: &str, group: &str) -> Result<(u32, u32), String> {
    let uid = accounts::user_id(owner).map_err(|m| format!("owner: {m}"))?;
    let gid = accounts::group_id(group).map_err(|m| format!("group: {m}"))?;
    Ok((uid, gid))
}
