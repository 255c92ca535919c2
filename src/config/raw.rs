//! The shapes of the TOML file, as serde reads them: unknown keys, wrong types and missing keys
//! are serde's errors; each value is read through its type in `values`.

use super::values::Maximum;
use super::values::{
    Argv, FileMode, HumanDuration, IamServerId, ImdsEndpoint, MountPath, Namespace, ProxyUrl,
    RoleName, SecretPath, ServerName, StateDir, StatusFile, StsEndpoint, StsRegion, TokenTtl,
};
use super::{err, AuthMethod, Error, Format, PlaintextAtRest, Seal, Signature};
use serde::{Deserialize, Deserializer};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

/// A value read by serde as `S` (a wrong type is serde's error), then checked by `T`'s
/// `TryFrom<S>`. A failed check is kept, not raised: serde's own errors for the whole table
/// come first, then the checks in a fixed order, each named with its key and its place (which
/// serde does not know).
pub struct Checked<T, S = String>(Result<T, String>, PhantomData<fn() -> S>);

impl<'de, T, S> Deserialize<'de> for Checked<T, S>
where
    S: Deserialize<'de>,
    T: TryFrom<S, Error = String>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        S::deserialize(d).map(|source| Checked(T::try_from(source), PhantomData))
    }
}

impl<T, S> Checked<T, S> {
    /// The value, or its check's message as "`place`: `key`: message".
    pub fn at(self, place: &str, key: &str) -> Result<T, Error> {
        self.0.map_err(|m| err(place, format!("{key}: {m}")))
    }
}

/// An optional duration, checked and at most `max`; `None` when the file omits it.
pub fn duration(
    value: Option<Checked<HumanDuration>>,
    max: Maximum,
    place: &str,
    key: &str,
) -> Result<Option<Duration>, Error> {
    let value = optional(value, place, key)?;
    value
        .map(|d| {
            d.at_most(max)
                .map_err(|m| err(place, format!("{key}: {m}")))
        })
        .transpose()
}

/// An optional key's value, checked; `None` when the file omits it.
pub fn optional<T, S>(
    value: Option<Checked<T, S>>,
    place: &str,
    key: &str,
) -> Result<Option<T>, Error> {
    value.map(|v| v.at(place, key)).transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// Plain text: whether `http://` is allowed depends on `insecure_http`.
    pub address: String,
    pub ca_cert: Option<PathBuf>,
    pub tls_server_name: Option<Checked<ServerName>>,
    pub namespace: Option<Checked<Namespace>>,
    pub request_timeout: Option<Checked<HumanDuration>>,
    pub insecure_http: Option<bool>,
    pub proxy: Option<Checked<ProxyUrl>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub method: Option<Checked<AuthMethod>>,
    pub mount: Option<Checked<MountPath>>,
    pub role: Checked<RoleName>,
    pub iam_server_id: Option<Checked<IamServerId>>,
    pub sts_region: Option<Checked<StsRegion>>,
    pub sts_endpoint: Option<Checked<StsEndpoint>>,
    pub revoke_token: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawImds {
    pub endpoint: Option<Checked<ImdsEndpoint>>,
    pub token_ttl: Option<Checked<TokenTtl>>,
    pub signature: Option<Checked<Signature>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub dir: Option<Checked<StateDir, PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub deadline: Option<Checked<HumanDuration>>,
    pub max_delay: Option<Checked<HumanDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    pub file: Option<Checked<StatusFile, PathBuf>>,
    pub textfile: Option<Checked<StatusFile, PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// Plain text: it names the secret in every message, checked or not.
    pub name: String,
    pub path: Checked<SecretPath>,
    pub data: Option<toml::Table>,
    pub renew_before: Option<Checked<HumanDuration>>,
    pub boot_only: Option<bool>,
    /// Tables, each read on its own so that its errors name it (`file #2`).
    #[serde(default)]
    pub file: Vec<toml::Table>,
    /// As `file`: each named in its errors (`credential #2`).
    #[serde(default)]
    pub credential: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// Plain text: it names the credential in every message, checked or not.
    pub name: String,
    pub fields: Vec<String>,
    pub format: Option<Checked<Format>>,
    pub seal: Option<Checked<Seal>>,
    pub on_change: Option<Checked<Argv, Vec<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOutputs {
    pub plaintext_at_rest: Option<Checked<PlaintextAtRest>>,
    pub credstore_parent: Option<Checked<StateDir, PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Plain text: it names the file in every message, checked or not.
    pub path: String,
    /// Plain text: which names are allowed depends on `format`.
    pub fields: Vec<String>,
    pub format: Option<Checked<Format>>,
    /// Any TOML value: a number gets its own message ("write the mode as an octal string").
    pub mode: Option<Checked<FileMode, toml::Value>>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub on_change: Option<Checked<Argv, Vec<String>>>,
}
