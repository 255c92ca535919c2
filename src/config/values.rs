//! The values of the file, one type per kind of value, each checked as it is read.
//!
//! A type's `TryFrom` is its whole rule, from what serde reads (a string, mostly); its message
//! follows the key (the caller writes the place and "mode: " before it), so one type serves
//! every key of its kind.

use super::{AuthMethod, Format, PlaintextAtRest, Seal, Signature};
use crate::template::Template;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use ureq::http::Uri;

/// A duration written like "30s" or "5m"; longer than zero. Each key has its maximum as well
/// (`at_most`), so that no arithmetic on it (a deadline from now, a timeout) can overflow, and
/// a typo of a few digits too many is an error rather than a run that never ends.
pub struct HumanDuration(pub Duration);

/// A key's longest duration, and how the file would write it.
pub type Maximum = (Duration, &'static str);
/// `request_timeout`, `max_delay`.
pub const AN_HOUR: Maximum = (Duration::from_secs(60 * 60), "1h");
/// `retry.deadline`.
pub const A_DAY: Maximum = (Duration::from_secs(24 * 60 * 60), "24h");
/// `renew_before`: longer than any certificate lives, so that the maximum still means "renew
/// on every run".
pub const A_CENTURY: Maximum = (Duration::from_secs(36500 * 24 * 60 * 60), "36500d");

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

/// The STS endpoint the iam login is signed for, as `https://<host>/`: a regional, FIPS or
/// VPC endpoint host.
pub struct StsEndpoint(pub String);

/// `http://host[:port]`, without a trailing slash.
pub struct ImdsEndpoint(pub String);

/// Where vaultboot keeps its own state: an absolute directory.
pub struct StateDir(pub PathBuf);

/// Where the run's status is written (`[status] file`, `textfile`): an absolute path to a file.
pub struct StatusFile(pub PathBuf);

/// Permission bits of a secret file, written as an octal string ("0640").
pub struct FileMode(pub u32);

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

impl HumanDuration {
    /// The duration, if it is at most `max`.
    pub fn at_most(self, (max, written): Maximum) -> Result<Duration, String> {
        if self.0 > max {
            return Err(format!("is longer than {written}, the longest allowed"));
        }
        Ok(self.0)
    }
}

impl TryFrom<String> for TokenTtl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let d = HumanDuration::try_from(text)?.0;
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

impl TryFrom<String> for Seal {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        one_of(
            &text,
            &[
                ("auto", Self::Auto),
                ("host", Self::Host),
                ("tpm2", Self::Tpm2),
                ("host+tpm2", Self::HostTpm2),
                ("none", Self::None),
            ],
        )
    }
}

impl TryFrom<String> for PlaintextAtRest {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        one_of(&text, &[("allow", Self::Allow), ("forbid", Self::Forbid)])
    }
}

/// A credential name systemd accepts (`credential_name_valid`: a valid file name and a valid
/// file-descriptor name): 1 to 255 printable ASCII characters, no `/` or `:`, not `.` or `..`.
/// `{` and `}` are refused too: the name becomes part of an output path, where `{{` would
/// start a template.
pub fn check_credential_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("{name:?} must be 1 to 255 characters long"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() && *c != ' ' || matches!(c, '/' | ':' | '{' | '}'))
    {
        return Err(format!(
            "{name:?} holds {c:?}: systemd takes printable ASCII without / or : (and vaultboot \
             no braces)"
        ));
    }
    Ok(())
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
    /// A name TLS can verify that is, as it is, the host of `https://<name>:<port>`: requests
    /// are sent to that URL and the name resolved to `address`, so a name that a URL reads
    /// otherwise (`x@localhost` is user info and the host localhost) would send them elsewhere.
    fn try_from(name: String) -> Result<Self, String> {
        let tls_name = rustls::pki_types::ServerName::try_from(name.as_str()).is_ok();
        let url_host = url_host(&format!("https://{name}:443"), "https");
        if !tls_name || url_host.as_deref() != Some(name.as_str()) {
            return Err(format!(
                "{name:?} is not a host name (letters, digits, hyphens and dots) or an IPv4 address"
            ));
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
    /// `http://[user:password@]host[:port]`: the proxies the HTTP client is built for. SOCKS
    /// is not built in (its code would cost binary size), so `socks5://` is refused here rather
    /// than at every run. The URL is never quoted: it may hold the proxy's password.
    fn try_from(proxy: String) -> Result<Self, String> {
        let Some(rest) = proxy.strip_prefix("http://") else {
            return Err("must be an http:// URL (SOCKS proxies are not supported)".into());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let host_port = rest
            .rsplit_once('@')
            .map_or(rest, |(_, host_port)| host_port);
        let plain = url_host(&format!("http://{host_port}"), "http").is_some()
            && ureq::Proxy::new(&proxy).is_ok();
        if !plain {
            return Err("must be http://[user:password@]host[:port], without a path".into());
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

impl TryFrom<String> for StsEndpoint {
    type Error = String;
    /// `https://host` with an optional trailing slash, and nothing else: the URL is signed as
    /// it is, and Vault replays it to its own `sts_endpoint` keeping only this host (as the
    /// signed Host) and the path, so a port, user info, path or query could only break the
    /// signature or smuggle something into the replayed request. The value is not quoted:
    /// whatever it holds is refused as a whole.
    fn try_from(text: String) -> Result<Self, String> {
        let rule = "must be https://<STS host>/ (e.g. https://sts-fips.us-east-1.amazonaws.com/): \
                    https only, a lowercase host name, no port, user info, path or query";
        let url = text.strip_suffix('/').unwrap_or(&text);
        let host = url_host(url, "https").ok_or(rule)?;
        let name_ok = host
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(is_host_byte))
            && host.contains(|c: char| c.is_ascii_lowercase());
        if !name_ok || url.len() != "https://".len() + host.len() {
            return Err(rule.into());
        }
        Ok(Self(format!("https://{host}/")))
    }
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// The region an AWS STS host name serves, when the name says it: `sts.amazonaws.com`
/// (us-east-1), `sts.<region>.amazonaws.com[.cn]`, `sts-fips.<region>.amazonaws.com` and VPC
/// endpoints `*.sts.<region>.vpce.amazonaws.com`. `None` for any other name (a proxy, a
/// private DNS name): then only the operator knows.
pub fn sts_host_region(host: &str) -> Option<&str> {
    if host == "sts.amazonaws.com" {
        return Some("us-east-1");
    }
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let rest = rest.strip_suffix(".vpce").unwrap_or(rest);
    let (service, region) = rest.rsplit_once('.')?;
    let service = service.rsplit('.').next()?;
    matches!(service, "sts" | "sts-fips").then_some(region)
}

impl TryFrom<String> for ImdsEndpoint {
    type Error = String;
    /// Plain HTTP has no server authentication: whoever answers chooses the signed document and
    /// the role credentials vaultboot logs in with. So only addresses nobody off the instance
    /// can answer on: EC2's link-local IMDS addresses, and loopback (a local proxy, the tests'
    /// and the demo's simulators). IP literals only: a name would be resolved, by DNS perhaps.
    fn try_from(text: String) -> Result<Self, String> {
        let endpoint = text.trim_end_matches('/');
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "{endpoint:?} must be an http:// URL (IMDS has no TLS)"
            ));
        }
        let host = url_host(endpoint, "http")
            .ok_or_else(|| format!("{endpoint:?} must be http://host[:port] with no path"))?;
        let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        };
        match ip {
            Some(ip) if is_imds_address(ip) => Ok(Self(endpoint.to_string())),
            _ => Err(format!(
                "{endpoint:?} is not IMDS: only http://169.254.169.254, http://[fd00:ec2::254] \
                 or a loopback address (127.0.0.1, [::1]) are accepted, with an optional port"
            )),
        }
    }
}

/// The host of `scheme://host[:port]`, read as the HTTP client reads it, when the URL is just
/// that: no user info, path, query or fragment, and a port (if any) from 1 to 65535.
pub fn url_host(url: &str, scheme: &str) -> Option<String> {
    let authority = url.strip_prefix(scheme)?.strip_prefix("://")?;
    let uri: Uri = url.parse().ok()?;
    let host = uri.host().filter(|h| !h.is_empty())?;
    // The text is the host the parser found, then at most a port: no user info before it, no
    // path, query or fragment after it.
    let port = authority.strip_prefix(host)?;
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            digits.bytes().all(|b| b.is_ascii_digit()) && uri.port_u16().is_some_and(|p| p != 0)
        }
    };
    port_ok.then(|| host.to_string())
}

/// EC2's IMDS addresses (IPv4 link-local, and IPv6 on Nitro), or loopback.
fn is_imds_address(ip: IpAddr) -> bool {
    const IMDS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    const IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    ip == IpAddr::V4(IMDS_V4) || ip == IpAddr::V6(IMDS_V6) || ip.is_loopback()
}

impl TryFrom<PathBuf> for StateDir {
    type Error = String;
    fn try_from(dir: PathBuf) -> Result<Self, String> {
        if !dir.is_absolute() || has_nul_or_parent(&dir) {
            return Err("must be an absolute path, without \"..\" or a NUL byte".into());
        }
        Ok(Self(dir))
    }
}

/// A NUL byte (no system call takes the path) or a `..` part (the path is not what it reads).
fn has_nul_or_parent(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().contains(&0)
        || path.components().any(|c| matches!(c, Component::ParentDir))
}

impl TryFrom<PathBuf> for StatusFile {
    type Error = String;
    fn try_from(path: PathBuf) -> Result<Self, String> {
        let plain = path.is_absolute()
            && path.file_name().is_some()
            && !path.as_os_str().to_string_lossy().ends_with('/')
            && !has_nul_or_parent(&path);
        if !plain {
            return Err("must be an absolute path to a file, without \"..\" or a NUL byte".into());
        }
        Ok(Self(path))
    }
}

impl TryFrom<toml::Value> for FileMode {
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
