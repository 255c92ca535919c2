//! The checks that look outside the file: the CA file Vault's certificate is verified with, and
//! the owner and group names of secret files (`/etc/passwd`, `/etc/group`). Kept apart from
//! the pure reading so that what depends on the machine is in one place.

use super::{err, Config, Error, FileConfig, Ids, Names, SecretConfig};
use crate::accounts;
use std::path::Path;

/// Far above any real CA bundle; a larger file is refused rather than read whole.
pub const MAX_CA_BYTES: u64 = 1024 * 1024;

/// A parsed configuration checked on this machine: no output puts a secret in clear on a
/// persistent file system where that is forbidden, its CA file holds a certificate and every
/// owner and group is an account here. The errors name the place as `parse` would.
pub fn on_this_machine(parsed: Config<Names>) -> Result<Config, Error> {
    let file = parsed.source.display().to_string();
    super::at_rest::check(&parsed)?;
    if let Some(ca) = &parsed.vault.ca_cert {
        ca_file(ca).map_err(|m| {
            let message = format!("ca_cert: {}: {m}", ca.display());
            err(format!("{file}: [vault]"), message)
        })?;
    }
    let secrets = parsed.secrets.into_iter();
    let secrets = secrets.map(|s| secret_owners(s, &file));
    Ok(Config {
        secrets: secrets.collect::<Result<_, _>>()?,
        source: parsed.source,
        vault: parsed.vault,
        auth: parsed.auth,
        imds: parsed.imds,
        state_dir: parsed.state_dir,
        retry: parsed.retry,
        status: parsed.status,
        outputs: parsed.outputs,
    })
}

/// A secret with each of its files' owner and group looked up.
fn secret_owners(s: SecretConfig<Names>, file: &str) -> Result<SecretConfig, Error> {
    let place = format!("{file}: [[secret]] {:?}", s.name);
    let mut files = Vec::new();
    for f in s.files {
        let owner = owner_and_group(&f.owner.owner, &f.owner.group)
            .map_err(|m| err(format!("{place} file {:?}", f.path_text), m))?;
        files.push(FileConfig {
            owner,
            path: f.path,
            path_text: f.path_text,
            fields: f.fields,
            format: f.format,
            mode: f.mode,
            on_change: f.on_change,
            credential: f.credential,
        });
    }
    Ok(SecretConfig {
        files,
        name: s.name,
        path: s.path,
        data: s.data,
        renew_before: s.renew_before,
        boot_only: s.boot_only,
    })
}

/// A CA file must hold at least one PEM certificate.
fn ca_file(path: &Path) -> Result<(), String> {
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
fn owner_and_group(owner: &str, group: &str) -> Result<Ids, String> {
    let uid = accounts::user_id(owner).map_err(|m| format!("owner: {m}"))?;
    let gid = accounts::group_id(group).map_err(|m| format!("group: {m}"))?;
    Ok(Ids { uid, gid })
}
