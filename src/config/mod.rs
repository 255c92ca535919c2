//! The configuration file: TOML → a checked `Config`.
//!
//! Everything that can be checked without the network is checked here, so that
//! `vaultboot check` at image-build time catches what would otherwise fail at boot.
//!
//! The way through: the text is parsed as TOML (syntax errors, with line and column); each
//! section is read by serde into its shape in `raw` (unknown keys, wrong types, missing keys),
//! its values through their types in `values` (each type's rule); `sections` and `secrets`
//! then fill in `defaults`, report the first failed check with its place, and apply the few
//! rules that tie keys together. `parse` reads nothing but the text it is given (the fuzz
//! targets drive it); `checks` then looks outside the file (the CA file, the account
//! database), and `load` does both, so that `check` and every run see the same verdict before
//! anything uses the configuration.

mod at_rest;
mod checks;
mod defaults;
mod raw;
mod secrets;
mod sections;
#[cfg(test)]
mod tests;
mod values;

use crate::template::{facts_in_json, Fact, Template};
use crate::untrusted;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use checks::{on_this_machine, MAX_CA_BYTES};
pub use defaults::CONFIG_PATH as DEFAULT_PATH;
pub use values::check_output_path;

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
        let (place, message) = (&self.place, &self.message);
        write!(
            f,
            "{}: {}",
            untrusted::escaped(place),
            untrusted::escaped(message)
        )
    }
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
    /// `/latest/dynamic/instance-identity/rsa2048` (SHA-256).
    Rsa2048,
    /// `/latest/dynamic/instance-identity/pkcs7` (SHA-1): for Vault servers older than 1.12.
    Pkcs7,
}

/// How a credential is written: sealed by `systemd-creds encrypt --with-key=…`, or plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    Auto,
    Host,
    Tpm2,
    HostTpm2,
    /// Plain, into the plain credential store (root-only, like a file).
    None,
}

impl Seal {
    /// The `--with-key=` value of `systemd-creds encrypt`; `None` for a plain credential.
    pub fn with_key(self) -> Option<&'static str> {
        match self {
            Seal::Auto => Some("auto"),
            Seal::Host => Some("host"),
            Seal::Tpm2 => Some("tpm2"),
            Seal::HostTpm2 => Some("host+tpm2"),
            Seal::None => None,
        }
    }
}

/// A `[[secret.credential]]`: an output that systemd hands to services by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    pub seal: Seal,
}

/// Whether a secret may be written in clear to a persistent file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaintextAtRest {
    Allow,
    Forbid,
}

#[derive(Clone, Debug)]
pub struct OutputsConfig {
    pub plaintext_at_rest: PlaintextAtRest,
    /// The directory holding `credstore.encrypted/` and `credstore/`.
    pub credstore_parent: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Env,
    Json,
}

/// A file's owner and group as the configuration names them (a name or a number), before
/// they are looked up (`checks::on_this_machine`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub owner: String,
    pub group: String,
}

/// A file's owner and group, looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// The checked configuration. What the file leaves out is filled in from `defaults`. `A` is
/// what its files' owners are: `Names` as parsed, `Ids` once checked on this machine.
#[derive(Clone, Debug)]
pub struct Config<A = Ids> {
    pub source: PathBuf,
    pub vault: VaultConfig,
    pub auth: AuthConfig,
    pub imds: ImdsConfig,
    pub state_dir: PathBuf,
    pub retry: RetryConfig,
    pub status: StatusConfig,
    pub outputs: OutputsConfig,
    pub secrets: Vec<SecretConfig<A>>,
}

#[derive(Clone, Debug)]
pub struct StatusConfig {
    /// The JSON status of the last run.
    pub file: PathBuf,
    /// The same as node_exporter textfile-collector metrics, when set.
    pub textfile: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// `https://host[:port]`, without a trailing slash.
    pub address: String,
    pub ca_cert: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub namespace: Option<String>,
    /// One request.
    pub request_timeout: Duration,
    /// An explicit proxy for Vault requests; none by default (environment variables are ignored).
    pub proxy: Option<String>,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub method: AuthMethod,
    pub mount: String,
    pub role: String,
    pub iam_server_id: Option<String>,
    /// The region the iam login is signed for.
    pub sts_region: String,
    /// `https://<host>/`: the STS endpoint the iam login is signed for; `None`: the one
    /// `sts_region` names (`iam::sts_url`).
    pub sts_endpoint: Option<String>,
    pub revoke_token: bool,
}

#[derive(Clone, Debug)]
pub struct ImdsConfig {
    pub endpoint: String,
    /// Whole seconds from 1 to 21600.
    pub token_ttl: Duration,
    pub signature: Signature,
}

#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Wall-clock budget for the whole run.
    pub deadline: Duration,
    /// Cap of one back-off sleep.
    pub max_delay: Duration,
}

#[derive(Clone, Debug)]
pub struct SecretConfig<A = Ids> {
    pub name: String,
    pub path: String,
    /// The JSON body of a POST (PKI issue); `None` means a GET. Strings may hold templates.
    pub data: Option<serde_json::Value>,
    /// A PKI issue (`<mount>/issue/<role>` with `data`): the certificate in place is kept while
    /// it has more than this left (`None`: a third of its lifetime).
    pub renew_before: Option<Duration>,
    /// Fetched by the boot run only; a refresh (`run --refresh`) leaves it alone.
    pub boot_only: bool,
    pub files: Vec<FileConfig<A>>,
}

impl<A> SecretConfig<A> {
    /// `<mount>/issue/<role>` with a request body: each read issues a new certificate.
    pub fn is_pki_issue(&self) -> bool {
        let mut parts = self.path.rsplit('/');
        let (role, verb) = (parts.next(), parts.next());
        self.data.is_some()
            && verb == Some("issue")
            && role.is_some_and(|r| !r.is_empty())
            && parts.next().is_some()
    }
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    /// A trailing `?` in the configuration: the field may be absent from Vault's answer.
    pub optional: bool,
}

#[derive(Clone, Debug)]
pub struct FileConfig<A = Ids> {
    pub path: Template,
    /// The path as written, for messages before facts are known.
    pub path_text: String,
    pub fields: Vec<Field>,
    pub format: Format,
    pub mode: u32,
    pub owner: A,
    pub on_change: Option<Vec<String>>,
    /// Set for a `[[secret.credential]]`: its path is then in the credential store.
    pub credential: Option<Credential>,
}

impl<A> FileConfig<A> {
    /// Written through `systemd-creds encrypt`: what is on disk is not the secret.
    pub fn is_sealed(&self) -> bool {
        self.credential
            .as_ref()
            .is_some_and(|c| c.seal.with_key().is_some())
    }
}

impl<A> Config<A> {
    /// What the configuration allows that a production instance should not: said on every
    /// run (and by `check`), so that a test setting left in an image does not go unnoticed.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.vault.address.starts_with("http://") {
            out.push(format!(
                "{}: [vault] insecure_http = true: the Vault token, the login and every secret \
                 travel in clear text to {} (for test servers only)",
                untrusted::escaped(&self.source.display().to_string()),
                self.vault.address
            ));
        }
        out
    }

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

// ---- loading ---------------------------------------------------------------------------------

/// Reads and checks the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let place = path.display().to_string();
    // Whoever can write the configuration chooses where the token goes: it is read only when
    // root (or we) alone could have written it and every directory above it.
    let bytes =
        crate::files::read_input(path, MAX_CONFIG_BYTES).map_err(|e| err(&place, e.message))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| err(&place, "cannot read: stream did not contain valid UTF-8"))?;
    checks::on_this_machine(parse(text, path)?)
}

/// Checks configuration text, reading nothing else; `source` is only used in messages. The
/// owners stay names and the CA file unread: `load` checks them.
pub fn parse(text: &str, source: &Path) -> Result<Config<Names>, Error> {
    let file = source.display().to_string();
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        // toml's message already carries the line, the column and the offending key.
        err(&file, e.to_string().trim_end().replace('\n', " "))
    })?;
    let raw = RawSections::take(&mut table, &file)?;
    let place = |name: &str| format!("{file}: [{name}]");
    let vault = sections::vault(raw.vault, &place("vault"))?;
    let auth = sections::auth(raw.auth, &place("auth"))?;
    let imds = sections::imds(raw.imds, &place("imds"))?;
    let state_dir = sections::state_dir(raw.state, &place("state"))?;
    let retry = sections::retry(raw.retry, &place("retry"))?;
    let status = sections::status(raw.status, &place("status"))?;
    let outputs = sections::outputs(raw.outputs, &place("outputs"))?;
    let mut secrets = Vec::new();
    for (index, item) in raw.secrets.into_iter().enumerate() {
        secrets.push(secrets::secret(item, index, &file, &outputs)?);
    }
    secrets::check_unique(&secrets, &file)?;
    Ok(Config {
        source: source.to_path_buf(),
        vault,
        auth,
        imds,
        state_dir,
        retry,
        status,
        outputs,
        secrets,
    })
}

/// The top-level tables, each read on its own so that its errors name it. The top level is
/// taken apart by hand rather than derived: its unknown-key message lists the sections.
struct RawSections {
    vault: raw::RawVault,
    auth: raw::RawAuth,
    imds: raw::RawImds,
    state: raw::RawState,
    retry: raw::RawRetry,
    status: raw::RawStatus,
    outputs: raw::RawOutputs,
    /// `[[secret]]` tables, read one by one (`secrets::secret`) to name each in its errors.
    secrets: Vec<toml::Value>,
}

impl RawSections {
    fn take(table: &mut toml::Table, file: &str) -> Result<Self, Error> {
        let sections = Self {
            vault: section(table, "vault", file)?
                .ok_or_else(|| err(file, "missing required section [vault]"))?,
            auth: section(table, "auth", file)?
                .ok_or_else(|| err(file, "missing required section [auth]"))?,
            imds: section(table, "imds", file)?.unwrap_or_default(),
            state: section(table, "state", file)?.unwrap_or_default(),
            retry: section(table, "retry", file)?.unwrap_or_default(),
            status: section(table, "status", file)?.unwrap_or_default(),
            outputs: section(table, "outputs", file)?.unwrap_or_default(),
            secrets: match table.remove("secret") {
                None => Vec::new(),
                Some(toml::Value::Array(items)) => items,
                Some(_) => {
                    return Err(err(file, "`secret` must be an array of tables: [[secret]]"))
                }
            },
        };
        if let Some(key) = table.keys().next() {
            return Err(err(
                file,
                format!(
                    "unknown key `{key}` (known: vault, auth, imds, state, retry, status, outputs, secret)"
                ),
            ));
        }
        Ok(sections)
    }
}

/// The section `name` read into its shape, if the file has it.
fn section<T: serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    name: &str,
    file: &str,
) -> Result<Option<T>, Error> {
    table
        .remove(name)
        .map(|v| v.try_into())
        .transpose()
        .map_err(|e| err(format!("{file}: [{name}]"), de_message(e)))
}

/// serde's message on one line, without toml's position (a section read from a parsed table
/// has none).
fn de_message(e: toml::de::Error) -> String {
    e.message().trim_end().replace('\n', " ")
}
