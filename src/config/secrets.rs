//! `[[secret]]` and its `[[secret.file]]` and `[[secret.credential]]` tables, from their raw shapes to their checked form.
//! Every message names the secret (by name, else by position) and the file (by path, else by
//! position).

use super::raw::{duration, optional, RawCredential, RawFile, RawSecret};
use super::values::{check_credential_name, is_env_name, OutputPath, A_CENTURY};
use super::{defaults, err, Error};
use super::{Credential, Field, FileConfig, Format, Names, OutputsConfig, SecretConfig};
use crate::template::facts_in_json;
use std::collections::BTreeSet;

/// The `index`-th (from 0) `[[secret]]` table of `file`.
pub fn secret(
    raw: toml::Value,
    index: usize,
    file: &str,
    outputs: &OutputsConfig,
) -> Result<SecretConfig<Names>, Error> {
    let name_hint = raw
        .get("name")
        .and_then(|n| n.as_str())
        .map(|n| format!("{file}: [[secret]] {n:?}"))
        .unwrap_or_else(|| format!("{file}: [[secret]] #{}", index + 1));
    let raw: RawSecret = raw
        .try_into()
        .map_err(|e| err(&name_hint, super::de_message(e)))?;
    let place = format!("{file}: [[secret]] {:?}", raw.name);
    if raw.name.is_empty() || raw.name.contains(char::is_control) {
        return Err(err(&place, "name: must be a non-empty name"));
    }
    let path = raw.path.at(&place, "path")?.0;
    let data = raw
        .data
        .map(|table| json_body(&table))
        .transpose()
        .map_err(|m| err(&place, m))?;
    if raw.file.is_empty() && raw.credential.is_empty() {
        return Err(err(
            &place,
            "has no [[secret.file]] or [[secret.credential]]: nothing would be written",
        ));
    }
    let mut files = Vec::new();
    for (i, table) in raw.file.into_iter().enumerate() {
        let raw: RawFile = toml::Value::Table(table)
            .try_into()
            .map_err(|e| err(format!("{place} file #{}", i + 1), super::de_message(e)))?;
        let file_place = format!("{place} file {:?}", raw.path);
        files.push(file_config(raw, &file_place)?);
    }
    for (i, table) in raw.credential.into_iter().enumerate() {
        let raw: RawCredential = toml::Value::Table(table).try_into().map_err(|e| {
            err(
                format!("{place} credential #{}", i + 1),
                super::de_message(e),
            )
        })?;
        let cred_place = format!("{place} credential {:?}", raw.name);
        files.push(credential_config(raw, &cred_place, outputs)?);
    }
    let renew_before = duration(raw.renew_before, A_CENTURY, &place, "renew_before")?;
    let secret = SecretConfig {
        name: raw.name,
        path,
        data,
        renew_before,
        boot_only: raw.boot_only.unwrap_or(defaults::BOOT_ONLY),
        files,
    };
    if secret.renew_before.is_some() && !secret.is_pki_issue() {
        return Err(err(
            &place,
            "renew_before: only a PKI issue has a certificate to renew (path \"<mount>/issue/<role>\" with data)",
        ));
    }
    Ok(secret)
}

/// `data`, the body of a POST, as JSON; its strings may hold templates. The messages name the
/// key themselves ("data.ttl: ..."): a nested key is more than the one key a value type knows.
fn json_body(table: &toml::Table) -> Result<serde_json::Value, String> {
    if let Some(key) = non_finite(table, "data") {
        return Err(format!("{key}: NaN and infinity have no JSON form"));
    }
    let json =
        serde_json::to_value(table).map_err(|e| format!("data: cannot be sent as JSON: {e}"))?;
    let mut found = Vec::new();
    facts_in_json(&json, &mut found).map_err(|m| format!("data: {m}"))?;
    Ok(json)
}

/// The first float of `table` that is NaN or infinite, by its dotted key: serde_json would
/// turn it into `null`.
fn non_finite(table: &toml::Table, at: &str) -> Option<String> {
    fn walk(v: &toml::Value, at: String) -> Option<String> {
        match v {
            toml::Value::Float(f) if !f.is_finite() => Some(at),
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, format!("{at}[{i}]"))),
            toml::Value::Table(t) => t
                .iter()
                .find_map(|(k, item)| walk(item, format!("{at}.{k}"))),
            _ => None,
        }
    }
    table.iter().find_map(|(k, v)| walk(v, format!("{at}.{k}")))
}

fn file_config(raw: RawFile, place: &str) -> Result<FileConfig<Names>, Error> {
    let path = OutputPath::try_from(raw.path.as_str())
        .map_err(|m| err(place, format!("path: {m}")))?
        .0;
    let format = optional(raw.format, place, "format")?.unwrap_or(defaults::FORMAT);
    let fields = fields(&raw.fields, format).map_err(|m| err(place, format!("fields: {m}")))?;
    let mode = optional(raw.mode, place, "mode")?.map_or(defaults::MODE, |m| m.0);
    // Looked up on this machine by `checks::on_this_machine`.
    let owner = Names {
        owner: raw.owner.unwrap_or_else(|| defaults::OWNER.into()),
        group: raw.group.unwrap_or_else(|| defaults::GROUP.into()),
    };
    let on_change = optional(raw.on_change, place, "on_change")?;
    Ok(FileConfig {
        path,
        path_text: raw.path,
        fields,
        format,
        mode,
        owner,
        on_change: on_change.map(|argv| argv.0),
        credential: None,
    })
}

/// A credential as an output like a file: its path in the credential store its seal picks,
/// root's, 0400 (what systemd's own credential directories hold).
fn credential_config(
    raw: RawCredential,
    place: &str,
    outputs: &OutputsConfig,
) -> Result<FileConfig<Names>, Error> {
    check_credential_name(&raw.name).map_err(|m| err(place, format!("name: {m}")))?;
    let seal = optional(raw.seal, place, "seal")?.unwrap_or(defaults::SEAL);
    let store = if seal.with_key().is_some() {
        CREDSTORE_ENCRYPTED
    } else {
        CREDSTORE
    };
    let path_text = outputs
        .credstore_parent
        .join(store)
        .join(&raw.name)
        .display()
        .to_string();
    let path = OutputPath::try_from(path_text.as_str())
        .map_err(|m| err(place, format!("name: {m}")))?
        .0;
    let format = optional(raw.format, place, "format")?.unwrap_or(defaults::FORMAT);
    let fields = fields(&raw.fields, format).map_err(|m| err(place, format!("fields: {m}")))?;
    let on_change = optional(raw.on_change, place, "on_change")?;
    Ok(FileConfig {
        path,
        path_text,
        fields,
        format,
        mode: CREDENTIAL_MODE,
        owner: Names {
            owner: "0".into(),
            group: "0".into(),
        },
        on_change: on_change.map(|argv| argv.0),
        credential: Some(Credential {
            name: raw.name,
            seal,
        }),
    })
}

/// The credential stores under `[outputs] credstore_parent`, as systemd names them.
pub const CREDSTORE_ENCRYPTED: &str = "credstore.encrypted";
pub const CREDSTORE: &str = "credstore";
/// Credentials are root's alone: systemd reads them as root and hands each service its copy.
const CREDENTIAL_MODE: u32 = 0o400;

/// The fields written to a file, each at most once; a trailing `?` marks one that Vault's
/// answer may lack. Checked here rather than by a value type: which names are allowed depends
/// on `format`.
fn fields(texts: &[String], format: Format) -> Result<Vec<Field>, String> {
    if texts.is_empty() {
        return Err("name at least one field".into());
    }
    let mut fields = Vec::new();
    let mut seen = BTreeSet::new();
    for text in texts {
        let (name, optional) = match text.strip_suffix('?') {
            Some(n) => (n, true),
            None => (text.as_str(), false),
        };
        if name.is_empty() {
            return Err("an empty field name".into());
        }
        if !seen.insert(name) {
            return Err(format!("{name:?} is listed twice"));
        }
        if format == Format::Env && !is_env_name(name) {
            return Err(format!(
                "{name:?} cannot be an environment variable name (format = \"env\")"
            ));
        }
        fields.push(Field {
            name: name.to_string(),
            optional,
        });
    }
    Ok(fields)
}

/// Secret names, credential names and output paths are unique across the file.
pub fn check_unique<A>(secrets: &[SecretConfig<A>], file: &str) -> Result<(), Error> {
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let mut credentials = BTreeSet::new();
    for s in secrets {
        if !names.insert(s.name.as_str()) {
            return Err(err(
                format!("{file}: [[secret]] {:?}", s.name),
                "name: another [[secret]] has the same name",
            ));
        }
        for f in &s.files {
            if let Some(c) = &f.credential {
                if !credentials.insert(c.name.as_str()) {
                    return Err(err(
                        format!("{file}: [[secret]] {:?} credential {:?}", s.name, c.name),
                        "name: another [[secret.credential]] has the same name",
                    ));
                }
            }
            if !paths.insert(f.path_text.as_str()) {
                return Err(err(
                    format!("{file}: [[secret]] {:?} file {:?}", s.name, f.path_text),
                    "path: another [[secret.file]] or [[secret.credential]] writes the same path",
                ));
            }
        }
    }
    Ok(())
}
