//! The configuration file: TOML → a checked `Config`, every default in one place.
//!
//! Everything that can be checked without the network is checked here, so that
//! `vaultboot check` at image-build time catches what would otherwise fail at boot.

use crate::accounts;
use crate::template::{facts_in_json, Fact, Template};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/vaultboot/config.toml";
/// A configuration file larger than this is refused: it is not a configuration.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A configuration error: where (file, section, secret, key) and what.
#[derive(Debug)]
pub struct Error {
    pub place: String,
    pub message: String,
}

impl fmt::Display for Error {
    /// One clean line: a control character from the file (toml's messages quote the offending
    /// line; a quoted key may hold a newline) is shown escaped, never written to the log as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.place)?;
        f.write_str(": ")?;
        write_escaped(f, &self.message)
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

impl std::error::Error for Error {}

fn err(place: impl Into<String>, message: impl Into<String>) -> Error {
    Error {
        place: place.into(),
        message: message.into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Ec2,
    Iam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// `/latest/dynamic/instance-identity/rsa2048` (SHA-256): the default.
    Rsa2048,
    /// `/latest/dynamic/instance-identity/pkcs7` (SHA-1): for Vault servers older than 1.12.
    Pkcs7,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Env,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub source: PathBuf,
    pub vault: VaultConfig,
    pub auth: AuthConfig,
    pub imds: ImdsConfig,
    pub state_dir: PathBuf,
    pub retry: RetryConfig,
    pub secrets: Vec<SecretConfig>,
}

#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// `https://host[:port]`, without a trailing slash.
    pub address: String,
    pub ca_cert: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub namespace: Option<String>,
    /// One request; default 10s.
    pub request_timeout: Duration,
    /// An explicit proxy for Vault requests; none by default (environment variables are ignored).
    pub proxy: Option<String>,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// Default "aws".
    pub mount: String,
    pub role: String,
    pub iam_server_id: Option<String>,
    /// Default "us-east-1".
    pub sts_region: String,
    /// Default true.
    pub revoke_token: bool,
}

#[derive(Clone, Debug)]
pub struct ImdsConfig {
    /// Default `http://169.254.169.254`.
    pub endpoint: String,
    /// Default 60s; whole seconds from 1 to 21600.
    pub token_ttl: Duration,
    pub signature: Signature,
}

#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Wall-clock budget for the whole run; default 5m.
    pub deadline: Duration,
    /// Cap of one back-off sleep; default 20s.
    pub max_delay: Duration,
}

#[derive(Clone, Debug)]
pub struct SecretConfig {
    pub name: String,
    pub path: String,
    /// The JSON body of a POST (PKI issue); `None` means a GET. Strings may hold templates.
    pub data: Option<serde_json::Value>,
    pub files: Vec<FileConfig>,
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    /// A trailing `?` in the configuration: the field may be absent from Vault's answer.
    pub optional: bool,
}

#[derive(Clone, Debug)]
pub struct FileConfig {
    pub path: Template,
    /// The path as written, for messages before facts are known.
    pub path_text: String,
    pub fields: Vec<Field>,
    pub format: Format,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub on_change: Option<Vec<String>>,
}

impl Config {
    /// Every fact that some template needs.
    pub fn needed_facts(&self) -> BTreeSet<Fact> {
        let mut out = BTreeSet::new();
        for secret in &self.secrets {
            if let Some(data) = &secret.data {
                let mut found = Vec::new();
                // Validated at load time.
                let _ = facts_in_json(data, &mut found);
                out.extend(found);
            }
            for file in &secret.files {
                out.extend(file.path.facts());
            }
        }
        out
    }
}

// ---- raw TOML shapes ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    address: String,
    ca_cert: Option<PathBuf>,
    tls_server_name: Option<String>,
    namespace: Option<String>,
    request_timeout: Option<String>,
    insecure_http: Option<bool>,
    proxy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: Option<String>,
    mount: Option<String>,
    role: String,
    iam_server_id: Option<String>,
    sts_region: Option<String>,
    revoke_token: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImds {
    endpoint: Option<String>,
    token_ttl: Option<String>,
    signature: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    deadline: Option<String>,
    max_delay: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    name: String,
    path: String,
    data: Option<toml::Table>,
    #[serde(default)]
    file: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    fields: Vec<String>,
    format: Option<String>,
    mode: Option<toml::Value>,
    owner: Option<String>,
    group: Option<String>,
    on_change: Option<Vec<String>>,
}

// ---- loading ---------------------------------------------------------------------------------

/// Reads and checks the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let place = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| err(&place, format!("cannot open: {e}")))?;
    let mut text = String::new();
    use std::io::Read;
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(&place, format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(err(&place, "larger than 1 MiB"));
    }
    parse(&text, path)
}

/// Checks configuration text; `source` is only used in messages.
pub fn parse(text: &str, source: &Path) -> Result<Config, Error> {
    let file = source.display().to_string();
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        // toml's message already carries the line, the column and the offending key.
        err(&file, e.to_string().trim_end().replace('\n', " "))
    })?;

    let section = |name: &str| format!("{file}: [{name}]");
    let vault: RawVault = take_required(&mut table, "vault", &file)?
        .try_into()
        .map_err(|e| err(section("vault"), de_message(e)))?;
    let auth: RawAuth = take_required(&mut table, "auth", &file)?
        .try_into()
        .map_err(|e| err(section("auth"), de_message(e)))?;
    let imds: RawImds = take_optional(&mut table, "imds")
        .map(|v| v.try_into())
        .transpose()
        .map_err(|e| err(section("imds"), de_message(e)))?
        .unwrap_or_default();
    let state: RawState = take_optional(&mut table, "state")
        .map(|v| v.try_into())
        .transpose()
        .map_err(|e| err(section("state"), de_message(e)))?
        .unwrap_or_default();
    let retry: RawRetry = take_optional(&mut table, "retry")
        .map(|v| v.try_into())
        .transpose()
        .map_err(|e| err(section("retry"), de_message(e)))?
        .unwrap_or_default();
    let raw_secrets = match take_optional(&mut table, "secret") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            return Err(err(
                &file,
                "`secret` must be an array of tables: [[secret]]",
            ))
        }
    };
    if let Some(key) = table.keys().next() {
        return Err(err(
            &file,
            format!("unknown key `{key}` (known: vault, auth, imds, state, retry, secret)"),
        ));
    }

    let vault = check_vault(vault, &section("vault"))?;
    let auth = check_auth(auth, &section("auth"))?;
    let imds = check_imds(imds, &section("imds"))?;
    let state_dir = state
        .dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/vaultboot"));
    if !state_dir.is_absolute() {
        return Err(err(section("state"), "dir: must be an absolute path"));
    }
    let retry = RetryConfig {
        deadline: duration(retry.deadline, "5m", &section("retry"), "deadline")?,
        max_delay: duration(retry.max_delay, "20s", &section("retry"), "max_delay")?,
    };

    let mut secrets = Vec::new();
    for (index, raw) in raw_secrets.into_iter().enumerate() {
        secrets.push(check_secret(raw, index, &file)?);
    }
    check_unique(&secrets, &file)?;

    Ok(Config {
        source: source.to_path_buf(),
        vault,
        auth,
        imds,
        state_dir,
        retry,
        secrets,
    })
}

fn take_required(table: &mut toml::Table, key: &str, file: &str) -> Result<toml::Value, Error> {
    table
        .remove(key)
        .ok_or_else(|| err(file, format!("missing required section [{key}]")))
}

fn take_optional(table: &mut toml::Table, key: &str) -> Option<toml::Value> {
    table.remove(key)
}

fn de_message(e: toml::de::Error) -> String {
    e.message().trim_end().replace('\n', " ")
}

fn duration(raw: Option<String>, default: &str, place: &str, key: &str) -> Result<Duration, Error> {
    let text = raw.as_deref().unwrap_or(default);
    let d = humantime::parse_duration(text).map_err(|e| {
        err(
            place,
            format!("{key}: invalid duration {text:?} ({e}); write e.g. \"30s\" or \"5m\""),
        )
    })?;
    if d.is_zero() {
        return Err(err(place, format!("{key}: must be longer than zero")));
    }
    Ok(d)
}

fn check_vault(raw: RawVault, place: &str) -> Result<VaultConfig, Error> {
    let address = raw.address.trim_end_matches('/').to_string();
    let (scheme, rest) = address.split_once("://").ok_or_else(|| {
        err(
            place,
            format!("address: {address:?} is not a URL (https://host:port)"),
        )
    })?;
    match scheme {
        "https" => {}
        "http" if raw.insecure_http == Some(true) => {}
        "http" => {
            return Err(err(
                place,
                "address: http:// sends the Vault token in clear text; use https:// \
                 (or set insecure_http = true for a test server)",
            ))
        }
        other => return Err(err(place, format!("address: unsupported scheme {other:?}"))),
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace)
    {
        return Err(err(
            place,
            "address: must be scheme://host[:port] with no path, query or credentials",
        ));
    }
    if let Some(ca) = &raw.ca_cert {
        check_ca_file(ca).map_err(|m| err(place, format!("ca_cert: {}: {m}", ca.display())))?;
    }
    if let Some(name) = &raw.tls_server_name {
        if name.is_empty() || name.contains(['/', ':', ' ']) {
            return Err(err(
                place,
                format!("tls_server_name: {name:?} is not a host name"),
            ));
        }
    }
    if let Some(ns) = &raw.namespace {
        if ns.is_empty() || ns.contains(char::is_control) {
            return Err(err(place, "namespace: must be a non-empty name"));
        }
    }
    if let Some(proxy) = &raw.proxy {
        if !(proxy.starts_with("http://") || proxy.starts_with("socks5://")) {
            return Err(err(place, "proxy: must be an http:// or socks5:// URL"));
        }
    }
    Ok(VaultConfig {
        address,
        ca_cert: raw.ca_cert,
        tls_server_name: raw.tls_server_name,
        namespace: raw.namespace,
        request_timeout: duration(raw.request_timeout, "10s", place, "request_timeout")?,
        proxy: raw.proxy,
    })
}

/// A CA file must hold at least one PEM certificate.
fn check_ca_file(path: &Path) -> Result<(), String> {
    let text = read_regular_file(path, MAX_CONFIG_BYTES)?;
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
    use std::io::Read;
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
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {} KiB", limit / 1024));
    }
    Ok(bytes)
}

fn check_auth(raw: RawAuth, place: &str) -> Result<AuthConfig, Error> {
    let method = match raw.method.as_deref().unwrap_or("ec2") {
        "ec2" => AuthMethod::Ec2,
        "iam" => AuthMethod::Iam,
        other => {
            return Err(err(
                place,
                format!("method: {other:?} is not \"ec2\" or \"iam\""),
            ))
        }
    };
    let mount = raw.mount.unwrap_or_else(|| "aws".into());
    if !is_vault_path(&mount) {
        return Err(err(
            place,
            format!("mount: {mount:?} is not a Vault mount path"),
        ));
    }
    if raw.role.is_empty() || raw.role.contains(['/', '\n']) {
        return Err(err(place, "role: must be a non-empty role name"));
    }
    if method == AuthMethod::Ec2 {
        for (key, set) in [
            ("iam_server_id", raw.iam_server_id.is_some()),
            ("sts_region", raw.sts_region.is_some()),
        ] {
            if set {
                return Err(err(
                    place,
                    format!("{key}: applies only to method = \"iam\""),
                ));
            }
        }
    }
    if let Some(id) = &raw.iam_server_id {
        // Sent and signed as the X-Vault-AWS-IAM-Server-ID header, compared byte for byte.
        if id.is_empty()
            || id.len() > 255
            || id.trim() != id
            || !id.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            return Err(err(
                place,
                "iam_server_id: must be a header value (printable ASCII, at most 255 \
                 characters, no surrounding spaces) equal to Vault's iam_server_id_header_value",
            ));
        }
    }
    let sts_region = raw.sts_region.unwrap_or_else(|| "us-east-1".into());
    if sts_region.is_empty()
        || sts_region.len() > 32
        || !sts_region.starts_with(|c: char| c.is_ascii_lowercase())
        || sts_region.ends_with('-')
        || !sts_region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(err(
            place,
            format!("sts_region: {sts_region:?} is not a region name"),
        ));
    }
    Ok(AuthConfig {
        method,
        mount,
        role: raw.role,
        iam_server_id: raw.iam_server_id,
        sts_region,
        revoke_token: raw.revoke_token.unwrap_or(true),
    })
}

fn check_imds(raw: RawImds, place: &str) -> Result<ImdsConfig, Error> {
    let endpoint = raw
        .endpoint
        .unwrap_or_else(|| "http://169.254.169.254".into())
        .trim_end_matches('/')
        .to_string();
    let host = endpoint.strip_prefix("http://").ok_or_else(|| {
        err(
            place,
            format!("endpoint: {endpoint:?} must be an http:// URL (IMDS has no TLS)"),
        )
    })?;
    if host.is_empty() || host.contains(['/', '?', '@']) {
        return Err(err(
            place,
            "endpoint: must be http://host[:port] with no path",
        ));
    }
    let token_ttl = duration(raw.token_ttl, "60s", place, "token_ttl")?;
    if token_ttl.subsec_nanos() != 0 || token_ttl.as_secs() > 21600 {
        return Err(err(
            place,
            "token_ttl: must be whole seconds from 1s to 21600s (6h), as IMDSv2 requires",
        ));
    }
    let signature = match raw.signature.as_deref().unwrap_or("rsa2048") {
        "rsa2048" => Signature::Rsa2048,
        "pkcs7" => Signature::Pkcs7,
        other => {
            return Err(err(
                place,
                format!("signature: {other:?} is not \"rsa2048\" or \"pkcs7\""),
            ))
        }
    };
    Ok(ImdsConfig {
        endpoint,
        token_ttl,
        signature,
    })
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

fn check_secret(raw: toml::Value, index: usize, file: &str) -> Result<SecretConfig, Error> {
    // Name the secret in every message, by name when it has one.
    let name_hint = raw
        .get("name")
        .and_then(|n| n.as_str())
        .map(|n| format!("{file}: [[secret]] {n:?}"))
        .unwrap_or_else(|| format!("{file}: [[secret]] #{}", index + 1));
    let raw: RawSecret = raw.try_into().map_err(|e| err(&name_hint, de_message(e)))?;
    let place = format!("{file}: [[secret]] {:?}", raw.name);
    if raw.name.is_empty() || raw.name.contains(char::is_control) {
        return Err(err(&place, "name: must be a non-empty name"));
    }
    if !is_vault_path(&raw.path) {
        return Err(err(
            &place,
            format!(
                "path: {:?} must be a Vault path after /v1/, like \"secret/data/app\"",
                raw.path
            ),
        ));
    }
    let data = match raw.data {
        None => None,
        Some(table) => {
            if let Some(key) = non_finite(&table, "data") {
                return Err(err(
                    &place,
                    format!("{key}: NaN and infinity have no JSON form"),
                ));
            }
            let json = serde_json::to_value(&table)
                .map_err(|e| err(&place, format!("data: cannot be sent as JSON: {e}")))?;
            let mut found = Vec::new();
            facts_in_json(&json, &mut found).map_err(|m| err(&place, format!("data: {m}")))?;
            Some(json)
        }
    };
    if raw.file.is_empty() {
        return Err(err(
            &place,
            "has no [[secret.file]]: nothing would be written",
        ));
    }
    let mut files = Vec::new();
    for (i, f) in raw.file.into_iter().enumerate() {
        let fplace = format!("{place} file #{}", i + 1);
        let f: RawFile = toml::Value::Table(f)
            .try_into()
            .map_err(|e| err(&fplace, de_message(e)))?;
        let fplace = format!("{place} file {:?}", f.path);
        files.push(check_file(f, &fplace)?);
    }
    Ok(SecretConfig {
        name: raw.name,
        path: raw.path,
        data,
        files,
    })
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

fn check_file(raw: RawFile, place: &str) -> Result<FileConfig, Error> {
    let path = Template::parse(&raw.path).map_err(|m| err(place, format!("path: {m}")))?;
    check_output_path(&raw.path).map_err(|m| err(place, format!("path: {m}")))?;
    let format = match raw.format.as_deref().unwrap_or("raw") {
        "raw" => Format::Raw,
        "env" => Format::Env,
        "json" => Format::Json,
        other => {
            return Err(err(
                place,
                format!("format: {other:?} is not \"raw\", \"env\" or \"json\""),
            ))
        }
    };
    if raw.fields.is_empty() {
        return Err(err(place, "fields: name at least one field"));
    }
    let mut fields = Vec::new();
    let mut seen = BTreeSet::new();
    for text in &raw.fields {
        let (name, optional) = match text.strip_suffix('?') {
            Some(n) => (n, true),
            None => (text.as_str(), false),
        };
        if name.is_empty() {
            return Err(err(place, "fields: an empty field name"));
        }
        if !seen.insert(name.to_string()) {
            return Err(err(place, format!("fields: {name:?} is listed twice")));
        }
        if format == Format::Env && !is_env_name(name) {
            return Err(err(
                place,
                format!(
                    "fields: {name:?} cannot be an environment variable name (format = \"env\")"
                ),
            ));
        }
        fields.push(Field {
            name: name.to_string(),
            optional,
        });
    }
    let mode = match raw.mode {
        None => 0o600,
        Some(toml::Value::String(s)) => {
            parse_mode(&s).map_err(|m| err(place, format!("mode: {m}")))?
        }
        Some(_) => {
            return Err(err(
                place,
                "mode: write the mode as an octal string, like \"0640\"",
            ))
        }
    };
    let uid = accounts::user_id(raw.owner.as_deref().unwrap_or("root"))
        .map_err(|m| err(place, format!("owner: {m}")))?;
    let gid = accounts::group_id(raw.group.as_deref().unwrap_or("root"))
        .map_err(|m| err(place, format!("group: {m}")))?;
    if let Some(argv) = &raw.on_change {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(err(place, "on_change: must be a non-empty argv list"));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(err(place, "on_change: an argument holds a NUL byte"));
        }
    }
    Ok(FileConfig {
        path,
        path_text: raw.path,
        fields,
        format,
        mode,
        uid,
        gid,
        on_change: raw.on_change,
    })
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

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!("{text:?} is not an octal mode like \"0640\""));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if mode > 0o777 {
        return Err(format!(
            "{text:?}: setuid, setgid and sticky bits are refused on secret files"
        ));
    }
    Ok(mode)
}

fn check_unique(secrets: &[SecretConfig], file: &str) -> Result<(), Error> {
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for s in secrets {
        if !names.insert(s.name.as_str()) {
            return Err(err(
                format!("{file}: [[secret]] {:?}", s.name),
                "name: another [[secret]] has the same name",
            ));
        }
        for f in &s.files {
            if !paths.insert(f.path_text.as_str()) {
                return Err(err(
                    format!("{file}: [[secret]] {:?} file {:?}", s.name, f.path_text),
                    "path: another [[secret.file]] writes the same path",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[vault]
address = "https://vault.internal:8200"
[auth]
role = "web"
[[secret]]
name = "tls"
path = "pki_int/issue/web"
data = { common_name = "{{ local-hostname }}", ip_sans = "{{ local-ipv4 }}", ttl = "72h" }
  [[secret.file]]
  path = "/etc/nginx/tls/server.crt"
  fields = ["certificate", "ca_chain?"]
  mode = "0644"
  on_change = ["systemctl", "try-reload-or-restart", "nginx"]
  [[secret.file]]
  path = "/etc/nginx/tls/server.key"
  fields = ["private_key"]
[[secret]]
name = "ad-join"
path = "secret/data/ad/join"
  [[secret.file]]
  path = "/run/vaultboot/ad-join.env"
  format = "env"
  fields = ["username", "password"]
"#;

    fn parse_str(text: &str) -> Result<Config, Error> {
        parse(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_are_the_contracts() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.auth.method, AuthMethod::Ec2);
        assert_eq!(c.auth.mount, "aws");
        assert!(c.auth.revoke_token);
        assert_eq!(c.auth.sts_region, "us-east-1");
        assert_eq!(c.imds.endpoint, "http://169.254.169.254");
        assert_eq!(c.imds.token_ttl, Duration::from_secs(60));
        assert_eq!(c.imds.signature, Signature::Rsa2048);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/vaultboot"));
        assert_eq!(c.retry.deadline, Duration::from_secs(300));
        assert_eq!(c.retry.max_delay, Duration::from_secs(20));
        assert_eq!(c.vault.request_timeout, Duration::from_secs(10));
        assert_eq!(c.secrets[0].files[0].mode, 0o644);
        assert_eq!(c.secrets[0].files[1].mode, 0o600);
        assert_eq!(c.secrets[0].files[1].uid, 0);
        assert!(c.secrets[0].files[0].fields[1].optional);
        assert_eq!(c.secrets[1].files[0].format, Format::Env);
        let facts: Vec<_> = c.needed_facts().into_iter().collect();
        assert_eq!(facts, vec![Fact::LocalHostname, Fact::LocalIpv4]);
    }

    fn refused(text: &str, needles: &[&str]) {
        let e = parse_str(text).expect_err("must be refused").to_string();
        for n in needles {
            assert!(e.contains(n), "{e:?} should contain {n:?}");
        }
    }

    #[test]
    fn data_values_have_a_json_form() {
        let with = |v: &str| GOOD.replace("ttl = \"72h\" }", &format!("ttl = {v} }}"));
        let data = |v: &str| {
            parse_str(&with(v)).unwrap().secrets[0]
                .data
                .clone()
                .unwrap()
        };
        assert_eq!(data("1979-05-27")["ttl"], "1979-05-27");
        assert_eq!(data("1.5")["ttl"], 1.5);
        // Found by fuzzing (fuzz/regressions/config/nan-in-data.toml): serde_json turns a
        // non-finite float into null, which would have been sent to Vault in its place.
        for v in ["nan", "-inf", "+inf", "[1.0, { x = inf }]"] {
            refused(&with(v), &["\"tls\"", "data.ttl", "NaN"]);
        }
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        refused(
            &GOOD.replace("role = \"web\"", "role = \"web\"\nrolee = 1"),
            &["[auth]", "rolee"],
        );
        refused(&GOOD.replace("role = \"web\"", ""), &["[auth]", "role"]);
        refused(
            &GOOD.replace("https://vault", "http://vault"),
            &["[vault]", "insecure_http"],
        );
        assert!(parse_str(&GOOD.replace(
            "address = \"https://vault.internal:8200\"",
            "address = \"http://vault.internal:8200\"\ninsecure_http = true"
        ))
        .is_ok());
        refused(
            &GOOD.replace("ttl = \"72h\" }", "ttl = \"72h\", x = \"{{ host }}\" }"),
            &["\"tls\"", "host"],
        );
        refused(
            &GOOD.replace("name = \"ad-join\"", "name = \"tls\""),
            &["\"tls\"", "same name"],
        );
        refused(
            &GOOD.replace("/run/vaultboot/ad-join.env", "/etc/nginx/tls/server.key"),
            &["server.key", "same path"],
        );
        refused(
            &GOOD.replace("mode = \"0644\"", "mode = \"0944\""),
            &["\"tls\"", "server.crt", "mode"],
        );
        refused(
            &GOOD.replace("mode = \"0644\"", "mode = \"4755\""),
            &["setuid"],
        );
        refused(
            &GOOD.replace("mode = \"0644\"", "mode = 644"),
            &["octal string"],
        );
        refused(
            &format!("{GOOD}\n[retry]\ndeadline = \"five minutes\"\n"),
            &["[retry]", "deadline", "five minutes"],
        );
        refused(
            &GOOD.replace("format = \"env\"", "format = \"yaml\""),
            &["\"ad-join\"", "format"],
        );
        refused(
            &GOOD.replace(
                "fields = [\"private_key\"]",
                "fields = [\"private_key\"]\n  owner = \"no-such-user-xyz\"",
            ),
            &["owner", "no-such-user-xyz"],
        );
        refused(
            &GOOD.replace("/etc/nginx/tls/server.key", "etc/server.key"),
            &["absolute"],
        );
        refused(
            &GOOD.replace("/etc/nginx/tls/server.key", "/etc/../server.key"),
            &[".."],
        );
        // Found by fuzzing (fuzz/regressions/config): `.` segments, which Path::components
        // skips, and a `.` that a template fact brings at run time.
        refused(
            &GOOD.replace("/etc/nginx/tls/server.key", "/etc/nginx/./server.key"),
            &["must not contain . or .."],
        );
        assert!(check_output_path("/etc/app/.").is_err());
        assert!(check_output_path("/etc/app/./x").is_err());
        assert!(check_output_path("/etc/app/.x").is_ok());
        refused(&format!("{GOOD}\n[extra]\n"), &["unknown key `extra`"]);
        // Found by fuzzing (fuzz/regressions/config): control characters of the file reach
        // the message (toml quotes the line; a quoted key may hold a newline).
        let e = parse_str(&format!("\"a\\nb\\u001b[31m\" = 1\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `a\\nb\\u{1b}[31m`"), "{e}");
        let e = parse_str("[vault]\naddr\u{2} = 1\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains(char::is_control) && e.contains("\\u{2}"), "{e}");
        refused("[vault\n", &["test.toml", "line 1"]);
        refused(
            &GOOD.replace("role = \"web\"", "role = \"web\"\niam_server_id = \"x\""),
            &["iam_server_id", "iam"],
        );
        refused(
            &GOOD.replace(
                "fields = [\"username\", \"password\"]",
                "fields = [\"user-name\"]",
            ),
            &["user-name", "environment variable"],
        );
    }

    #[test]
    fn iam_method_is_accepted_with_its_options() {
        let iam = |extra: &str| {
            GOOD.replace(
                "role = \"web\"",
                &format!("role = \"web\"\nmethod = \"iam\"\n{extra}"),
            )
        };
        let c = parse_str(&iam("")).unwrap();
        assert_eq!(c.auth.method, AuthMethod::Iam);
        assert_eq!(c.auth.sts_region, "us-east-1");
        assert_eq!(c.auth.iam_server_id, None);
        let c = parse_str(&iam(
            "iam_server_id = \"vault.example.com\"\nsts_region = \"eu-west-1\"",
        ))
        .unwrap();
        assert_eq!(c.auth.iam_server_id.as_deref(), Some("vault.example.com"));
        assert_eq!(c.auth.sts_region, "eu-west-1");
        assert!(parse_str(&iam("sts_region = \"us-gov-west-1\"")).is_ok());

        // ec2 keeps refusing the iam-only keys.
        refused(
            &GOOD.replace(
                "role = \"web\"",
                "role = \"web\"\nsts_region = \"eu-west-1\"",
            ),
            &["[auth]", "sts_region", "iam"],
        );
        // The server id is a header value: no line breaks (header injection), not empty.
        for bad in [
            "\"\"",
            "\"a\\r\\nX-Amz-Foo: 1\"",
            "\" padded \"",
            "\"caf\u{e9}\"",
        ] {
            refused(
                &iam(&format!("iam_server_id = {bad}")),
                &["[auth]", "iam_server_id"],
            );
        }
        for bad in [
            "\"\"",
            "\"EU-WEST-1\"",
            "\"eu-west-1/x\"",
            "\"-\"",
            "\"eu-west-\"",
        ] {
            refused(
                &iam(&format!("sts_region = {bad}")),
                &["[auth]", "sts_region"],
            );
        }
        refused(
            &GOOD.replace("role = \"web\"", "role = \"web\"\nmethod = \"aws\""),
            &["method", "\"ec2\" or \"iam\""],
        );
    }
}
