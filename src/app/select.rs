//! Which secrets a run fetches: every one, except a boot-only secret on a refresh, and a PKI
//! issue whose certificate in place can stay (`renewal`, which asks `issued` whether Vault
//! issued it). A run that fetches nothing makes no Vault request at all.

use super::Mode;
use crate::config::{Config, FileConfig, Format, SecretConfig};
use crate::issued::Issued;
use crate::pending::Found;
use crate::renewal::{self, Names, Recorded, Renewal, Target};
use crate::secrets;
use crate::status::{OutputState, OutputStatus};
use crate::template::Facts;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What the run does with one `[[secret]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Fetch,
    /// A PKI issue whose certificate in place cannot stay, and why (for the log and the
    /// status).
    Renew(String),
    /// Left alone, and why (for the log and the status).
    Skip(String),
    /// A PKI issue whose certificate in place stays, and until when: left alone like a skip,
    /// reported as the journal's "certificate kept" event.
    Keep(String),
}

/// One choice per `[[secret]]`, in configuration order. A secret whose output owes an
/// on_change from an earlier run is fetched: its command then runs the usual way.
pub fn choose(
    config: &Config,
    mode: Mode,
    facts: &Facts,
    owed: &Found,
    issued: &Issued,
) -> Vec<Choice> {
    let now = SystemTime::now();
    config
        .secrets
        .iter()
        .map(|secret| {
            if owes_on_change(secret, facts, owed) {
                return Choice::Fetch;
            }
            if secret.boot_only && mode == Mode::Refresh {
                return Choice::Skip("boot-only, and this is a refresh".into());
            }
            if !secret.is_pki_issue() {
                return Choice::Fetch;
            }
            certificate_in_place(secret, facts, issued, now).unwrap_or(Choice::Fetch)
        })
        .collect()
}

/// The certificate outputs of the PKI issues of the configuration: what `issued` records.
pub fn certificate_outputs(config: &Config, facts: &Facts) -> BTreeSet<PathBuf> {
    let mut paths = BTreeSet::new();
    for secret in config.secrets.iter().filter(|s| s.is_pki_issue()) {
        for file in secret
            .files
            .iter()
            .filter(|f| secrets::holds_certificate(f))
        {
            if let Ok(path) = secrets::output_path(secret, file, facts) {
                paths.insert(path);
            }
        }
    }
    paths
}

/// Whether any secret may need fetching, known before IMDS is read (a template's facts are
/// not known yet): decides whether the Vault connections are opened ahead.
pub fn may_fetch(config: &Config, mode: Mode) -> bool {
    config.secrets.iter().any(|secret| {
        let boot_only = secret.boot_only && mode == Mode::Refresh;
        let in_place = secret.is_pki_issue()
            && cert_and_key(secret).is_some_and(|(cert, key)| {
                [cert, key]
                    .iter()
                    .all(|f| f.path.facts().next().is_none() && Path::new(&f.path_text).exists())
            });
        !boot_only && !in_place
    })
}

/// The outputs of the skipped secrets, for the summary and the status.
pub fn skipped_outputs(config: &Config, choices: &[Choice], facts: &Facts) -> Vec<OutputStatus> {
    let mut out = Vec::new();
    for (secret, choice) in config.secrets.iter().zip(choices) {
        let (Choice::Skip(reason) | Choice::Keep(reason)) = choice else {
            continue;
        };
        for file in &secret.files {
            let path = secrets::output_path(secret, file, facts)
                .unwrap_or_else(|_| PathBuf::from(&file.path_text));
            out.push(OutputStatus {
                path,
                secret: secret.name.clone(),
                credential: file.credential.as_ref().map(|c| c.name.clone()),
                state: OutputState::Skipped,
                reason: Some(reason.clone()),
                holds_certificate: secrets::holds_certificate(file),
            });
        }
    }
    out
}

/// Skip when the certificate in place can stay, Renew when it cannot; `None` when there is
/// nothing to decide on (no certificate and key files, or names that cannot be known).
fn certificate_in_place(
    secret: &SecretConfig,
    facts: &Facts,
    issued: &Issued,
    now: SystemTime,
) -> Option<Choice> {
    let (cert_file, key_file) = cert_and_key(secret)?;
    let target = |file: &FileConfig| -> Option<Target> {
        Some(Target {
            path: secrets::output_path(secret, file, facts).ok()?,
            mode: file.mode,
            uid: file.owner.uid,
            gid: file.owner.gid,
            sealed: file
                .is_sealed()
                .then(|| file.credential.as_ref().map(|c| c.name.clone()))
                .flatten(),
        })
    };
    let (cert, key) = (target(cert_file)?, target(key_file)?);
    let body = secrets::request_body(secret, facts).ok()??;
    let wanted = Names::from_request(&body.0)?;
    let recorded = Recorded {
        by: &secret.path,
        sha256: issued.at(&cert.path),
    };
    Some(
        match renewal::decide(&cert, &key, &wanted, secret.renew_before, recorded, now) {
            Renewal::Keep {
                not_after,
                renew_at,
            } => Choice::Keep(format!(
                "certificate valid until {}, renewed from {}",
                humantime::format_rfc3339_seconds(not_after),
                humantime::format_rfc3339_seconds(renew_at)
            )),
            Renewal::Renew(why) => Choice::Renew(why),
        },
    )
}

/// The raw outputs holding the certificate and the private key (possibly the same file). The
/// key may be a sealed credential (decrypted to decide); the certificate is read as it is.
fn cert_and_key(secret: &SecretConfig) -> Option<(&FileConfig, &FileConfig)> {
    // The certificate first in its file: what is read back is the file's first PEM block.
    let raw = |f: &&FileConfig| f.format == Format::Raw;
    let cert = secret
        .files
        .iter()
        .filter(|f| raw(f) && !f.is_sealed())
        .find(|f| secrets::holds_certificate(f))?;
    let key = secret
        .files
        .iter()
        .filter(raw)
        .find(|f| f.fields.iter().any(|x| x.name == "private_key"))?;
    Some((cert, key))
}

fn owes_on_change(secret: &SecretConfig, facts: &Facts, owed: &Found) -> bool {
    match owed {
        Found::Nothing => false,
        Found::Unusable { .. } => true,
        Found::Owed(paths) => secret.files.iter().any(|file| {
            secrets::output_path(secret, file, facts).is_ok_and(|p| paths.contains(&p))
        }),
    }
}
