//! The values of the file, one type per kind of value, each checked as it is read.
//!
//! A type's `TryFrom` is its whole rule, from what serde reads (a string, mostly); its message
//! follows the key (the caller writes the place and "mode: " before it), so one type serves
//! every key of its kind.

use super::{AuthMethod, Format, Signature};
use crate::template::Template;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// A duration written like "30s" or "5m"; longer than zero.
pub struct HumanDuration(pub Duration);

/// The IMDSv2 token's lifetime: whole seconds from 1 to 21600, as IMDS requires.
pub struct TokenTtl(pub Duration);

/// The path of an auth method's mount, like "aws" or "team/aws".
pub struct MountPath(pub String);

/// A Vault API path after /v1/, like "secret/data/app".
pub struct SecretPath(pub String);

/// The Vault role to log in as.
pub struct RoleName(pub String);

/// The host name TLS expects in Vault's certificate.
pub struct ServerName(pub String);

/// A Vault Enterprise namespace, sent as X-Vault-Namespace.
pub struct Namespace(pub String);

/// An `http://` or `socks5://` proxy for Vault requests.
pub struct ProxyUrl(pub String);

/// Sent and signed as the X-Vault-AWS-IAM-Server-ID header, compared byte for byte.
pub struct IamServerId(pub String);

/// An AWS region name, like "eu-west-1".
pub struct StsRegion(pub String);

/// `http://host[:port]`, without a trailing slash.
pub struct ImdsEndpoint(pub String);

/// Where vaultboot keeps its own state: an absolute directory.
pub struct StateDir(pub PathBuf);

/// Where the run's status is written (`[status] file`, `textfile`): an absolute path to a file.
pub struct StatusFile(pub PathBuf);

/// Permission bits of a secret file, written as an octal string ("0640").
pub struct Mode(pub u32);

/// The command run when a file changed.
pub struct Argv(pub Vec<String>);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let d = humantime::parse_duration(&text).map_err(|e| {
            format!("invalid duration {text:?} ({e}); write e.g. \"30s\" or \"5m\"")
        })?;
        if d.is_zero() {
            return Err("must be longer than zero".into());
        }
        Ok(Self(d))
    }
}

impl TryFrom<String> for TokenTtl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let HumanDuration(d) = HumanDuration::try_from(text)?;
        if d.subsec_nanos() != 0 || d.as_secs() > 21600 {
            return Err("must be whole seconds from 1s to 21600s (6h), as IMDSv2 requires".into());
        }
        Ok(Self(d))
    }
}

impl TryFrom<String> for AuthMethod {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        one_of(&text, &[("ec2", Self::Ec2), ("iam", Self::Iam)])
    }
}

impl TryFrom<String> for Signature {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        one_of(&text, &[("rsa2048", Self::Rsa2048), ("pkcs7", Self::Pkcs7)])
    }
}

impl TryFrom<String> for Format {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        one_of(
            &text,
            &[("raw", Self::Raw), ("env", Self::Env), ("json", Self::Json)],
        )
    }
}

/// The choice named `text`; else a message that lists the names ("is not "a", "b" or "c"").
fn one_of<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == text) {
        return Ok(*choice);
    }
    let names: Vec<String> = choices
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    let (last, others) = names.split_last().expect("at least one choice");
    Err(format!("{text:?} is not {} or {last}", others.join(", ")))
}

fn is_vault_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.ends_with('/')
        && !p.contains("//")
        && p.split('/').all(|seg| seg != "." && seg != "..")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+@".contains(c))
}

impl TryFrom<String> for MountPath {
    type Error = String;
    fn try_from(mount: String) -> Result<Self, String> {
        if !is_vault_path(&mount) {
            return Err(format!("{mount:?} is not a Vault mount path"));
        }
        Ok(Self(mount))
    }
}

impl TryFrom<String> for SecretPath {
    type Error = String;
    fn try_from(path: String) -> Result<Self, String> {
        if !is_vault_path(&path) {
            return Err(format!(
                "{path:?} must be a Vault path after /v1/, like \"secret/data/app\""
            ));
        }
        Ok(Self(path))
    }
}

impl TryFrom<String> for RoleName {
    type Error = String;
    fn try_from(role: String) -> Result<Self, String> {
        if role.is_empty() || role.contains(['/', '\n']) {
            return Err("must be a non-empty role name".into());
        }
        Ok(Self(role))
    }
}

impl TryFrom<String> for ServerName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        if name.is_empty() || name.contains(['/', ':', ' ']) {
            return Err(format!("{name:?} is not a host name"));
        }
        Ok(Self(name))
    }
}

impl TryFrom<String> for Namespace {
    type Error = String;
    fn try_from(ns: String) -> Result<Self, String> {
        if ns.is_empty() || ns.contains(char::is_control) {
            return Err("must be a non-empty name".into());
        }
        Ok(Self(ns))
    }
}

impl TryFrom<String> for ProxyUrl {
    type Error = String;
    fn try_from(proxy: String) -> Result<Self, String> {
        if !(proxy.starts_with("http://") || proxy.starts_with("socks5://")) {
            return Err("must be an http:// or socks5:// URL".into());
        }
        Ok(Self(proxy))
    }
}

impl TryFrom<String> for IamServerId {
    type Error = String;
    fn try_from(id: String) -> Result<Self, String> {
        if id.is_empty()
            || id.len() > 255
            || id.trim() != id
            || !id.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            return Err("must be a header value (printable ASCII, at most 255 \
                 characters, no surrounding spaces) equal to Vault's iam_server_id_header_value"
                .into());
        }
        Ok(Self(id))
    }
}

impl TryFrom<String> for StsRegion {
    type Error = String;
    fn try_from(region: String) -> Result<Self, String> {
        if region.is_empty()
            || region.len() > 32
            || !region.starts_with(|c: char| c.is_ascii_lowercase())
            || region.ends_with('-')
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("{region:?} is not a region name"));
        }
        Ok(Self(region))
    }
}

impl TryFrom<String> for ImdsEndpoint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let endpoint = text.trim_end_matches('/');
        let host = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| format!("{endpoint:?} must be an http:// URL (IMDS has no TLS)"))?;
        if host.is_empty() || host.contains(['/', '?', '@']) {
            return Err("must be http://host[:port] with no path".into());
        }
        Ok(Self(endpoint.to_string()))
    }
}

impl TryFrom<PathBuf> for StateDir {
    type Error = String;
    fn try_from(dir: PathBuf) -> Result<Self, String> {
        if !dir.is_absolute() {
            return Err("must be an absolute path".into());
        }
        Ok(Self(dir))
    }
}

impl TryFrom<PathBuf> for StatusFile {
    type Error = String;
    fn try_from(path: PathBuf) -> Result<Self, String> {
        let plain = path.is_absolute()
            && path.file_name().is_some()
            && !path.as_os_str().to_string_lossy().ends_with('/')
            && path
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        if !plain {
            return Err("must be an absolute path to a file, without \"..\"".into());
        }
        Ok(Self(path))
    }
}

impl TryFrom<toml::Value> for Mode {
    type Error = String;
    fn try_from(value: toml::Value) -> Result<Self, String> {
        let toml::Value::String(text) = value else {
            return Err("write the mode as an octal string, like \"0640\"".into());
        };
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        if digits.is_empty()
            || digits.len() > 4
            || !digits.chars().all(|c| ('0'..='7').contains(&c))
        {
            return Err(format!("{text:?} is not an octal mode like \"0640\""));
        }
        let mode = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
        if mode > 0o777 {
            return Err(format!(
                "{text:?}: setuid, setgid and sticky bits are refused on secret files"
            ));
        }
        Ok(Self(mode))
    }
}

impl TryFrom<Vec<String>> for Argv {
    type Error = String;
    fn try_from(argv: Vec<String>) -> Result<Self, String> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err("must be a non-empty argv list".into());
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("an argument holds a NUL byte".into());
        }
        Ok(Self(argv))
    }
}

/// Where a secret file is written: a template whose every rendering must pass
/// `check_output_path` again at run time.
pub struct OutputPath(pub Template);

impl TryFrom<&str> for OutputPath {
    type Error = String;
    fn try_from(text: &str) -> Result<Self, String> {
        let template = Template::parse(text)?;
        check_output_path(text)?;
        Ok(Self(template))
    }
}

/// Output paths are absolute and plain: no `.` or `..`, a file name at the end.
pub fn check_output_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path:?} must be absolute"));
    }
    if path.ends_with('/') || path.contains('\0') {
        return Err(format!("{path:?} must name a file"));
    }
    // `Path::components` drops `.` segments silently ("/etc/./x" is "/etc/x" to it), so the
    // text is checked segment by segment: a `.` from a template fact (an odd local-hostname)
    // would otherwise make "/etc/app/{{ local-hostname }}" name the directory "/etc/app".
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("{path:?} must not contain . or .."));
    }
    for c in p.components() {
        match c {
            Component::RootDir | Component::Normal(_) => {}
            _ => return Err(format!("{path:?} must not contain . or ..")),
        }
    }
    if p.parent().is_none_or(|d| d == Path::new("/")) {
        return Err(format!("{path:?}: files directly in / are refused"));
    }
    Ok(())
}

/// A name `sh` and systemd's `EnvironmentFile=` take as a variable name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
