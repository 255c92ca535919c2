//! Fetching every `[[secret]]` concurrently once logged in, and turning Vault's fields into file
//! contents (`raw`, `env` or `json`).

use crate::config::{FileConfig, Format, SecretConfig};
use crate::decide::{Judge, Source};
use crate::fanout::{Fanout, SpawnError};
use crate::files::Output;
use crate::kind::Kind;
use crate::retry::{Failure, Policy};
use crate::secret::{Secret, SecretJson};
use crate::template::{render_json, Fact, Facts};
use crate::vault::{self, secret_fields, Vault};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use ureq::http::Method;

mod encode;

pub use encode::encode;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Vault refused or failed this secret.
    Read {
        secret: String,
        source: vault::Error,
    },
    /// Vault stayed unavailable for this secret until the deadline.
    Unavailable {
        secret: String,
        last: vault::Error,
    },
    /// The answer lacks a field a file needs.
    MissingField {
        secret: String,
        field: String,
    },
    /// A field is not text, a number, a boolean or a list of those.
    WrongType {
        secret: String,
        field: String,
        found: &'static str,
    },
    /// A value cannot be written in this format.
    Unencodable {
        secret: String,
        field: String,
        why: &'static str,
    },
    /// The answer has no `data` object.
    NoData {
        secret: String,
    },
    /// A template names a fact that was not fetched (a bug: facts are fetched from the config).
    Template {
        secret: String,
        fact: Fact,
    },
    /// Two outputs resolve to the same path once templates are filled.
    DuplicatePath {
        secret: String,
        path: PathBuf,
    },
    /// An output path is not acceptable once templates are filled.
    BadPath {
        secret: String,
        why: String,
    },
    /// The threads to read the secrets could not be started.
    Threads(SpawnError),
    Cancelled,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { secret, source } => write!(f, "secret {secret:?}: {source}"),
            Error::Unavailable { secret, last } => {
                write!(
                    f,
                    "secret {secret:?}: Vault unavailable until the deadline (last: {last})"
                )
            }
            Error::MissingField { secret, field } => {
                // Debug-quoted like every name here: a field name is the configuration's text
                // and may hold a newline (found by fuzzing).
                let marked = format!("{field}?");
                write!(f, "secret {secret:?}: field {field:?} is missing from Vault's answer (mark it {marked:?} if it may be absent)")
            }
            Error::WrongType {
                secret,
                field,
                found,
            } => write!(f, "secret {secret:?}: field {field:?} is {found}, not text"),
            Error::Unencodable { secret, field, why } => {
                write!(f, "secret {secret:?}: field {field:?} {why}")
            }
            Error::NoData { secret } => write!(f, "secret {secret:?}: Vault's answer has no data"),
            Error::Template { secret, fact } => {
                write!(
                    f,
                    "secret {secret:?}: template {{{{ {fact} }}}} has no value"
                )
            }
            Error::DuplicatePath { secret, path } => write!(
                f,
                "secret {secret:?}: {path:?} is written by another [[secret.file]] too"
            ),
            Error::BadPath { secret, why } => write!(f, "secret {secret:?}: path {why}"),
            Error::Threads(e) => e.fmt(f),
            Error::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { source: e, .. } | Error::Unavailable { last: e, .. } => Some(e),
            Error::Threads(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Read { source, .. } => source.kind(),
            Error::Unavailable { .. } | Error::Threads(_) | Error::Cancelled => Kind::Unavailable,
            Error::DuplicatePath { .. } | Error::BadPath { .. } | Error::Template { .. } => {
                Kind::Config
            }
            Error::MissingField { .. }
            | Error::WrongType { .. }
            | Error::Unencodable { .. }
            | Error::NoData { .. } => Kind::Malformed,
        }
    }
}

/// One secret as Vault answered it.
pub struct Fetched {
    pub name: String,
    pub answer: SecretJson,
    pub took: Duration,
}

/// Secret reads at once, at most: a config may list any number of secrets, and each read
/// holds a thread, a connection and Vault's attention. As many as the Vault client keeps idle
/// connections, so a boot's reads still overlap.
pub const MAX_FETCH_THREADS: usize = 8;

const FETCH: Fanout = Fanout::new("secret reads", "vault-read", MAX_FETCH_THREADS);

/// Reads these secrets in parallel (at most `MAX_FETCH_THREADS` at once); the first failure
/// cancels the others.
pub fn fetch_all(
    vault: &Vault,
    token: &Secret,
    secrets: &[&SecretConfig],
    facts: &Facts,
    policy: &Policy,
) -> Result<Vec<Fetched>, Error> {
    let results = FETCH
        .map(secrets, |secret| {
            let result = fetch_one(vault, token, secret, facts, policy);
            if result.is_err() {
                policy.cancel_all();
            }
            result
        })
        .map_err(Error::Threads)?;
    let mut fetched = Vec::new();
    let mut first_error = None;
    for r in results {
        match r {
            Ok(f) => fetched.push(f),
            Err(Error::Cancelled) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None if fetched.len() == secrets.len() => Ok(fetched),
        None => Err(Error::Cancelled),
    }
}

fn fetch_one(
    vault: &Vault,
    token: &Secret,
    secret: &SecretConfig,
    facts: &Facts,
    policy: &Policy,
) -> Result<Fetched, Error> {
    let name = secret.name.clone();
    let body = request_body(secret, facts)?
        .map(|rendered| crate::secret::to_json(&rendered.0).unwrap_or_default());
    let start = Instant::now();
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let mut judge = Judge::new(Source::Vault);
    let result = policy.run(
        |left| {
            vault.request(
                method.clone(),
                &secret.path,
                Some(token),
                body.as_deref().map(|b| b.as_slice()),
                left,
            )
        },
        |e| judge.vault(e),
    );
    match result {
        Ok(answer) => Ok(Fetched {
            name,
            answer,
            took: start.elapsed(),
        }),
        Err(Failure::Fatal(source)) => Err(Error::Read {
            secret: name,
            source,
        }),
        Err(Failure::Exhausted { last, .. }) => Err(Error::Unavailable { secret: name, last }),
        Err(Failure::Cancelled) => Err(Error::Cancelled),
    }
}

/// The request body of a secret read with `data` (a PKI issue), templates filled in.
pub fn request_body(secret: &SecretConfig, facts: &Facts) -> Result<Option<SecretJson>, Error> {
    let Some(data) = &secret.data else {
        return Ok(None);
    };
    let rendered = render_json(data, facts).map_err(|fact| Error::Template {
        secret: secret.name.clone(),
        fact,
    })?;
    Ok(Some(SecretJson(rendered)))
}

/// Where a file of `secret` goes, templates filled in and the result checked.
pub fn output_path(
    secret: &SecretConfig,
    file: &FileConfig,
    facts: &Facts,
) -> Result<PathBuf, Error> {
    let path = file.path.render(facts).map_err(|fact| Error::Template {
        secret: secret.name.clone(),
        fact,
    })?;
    crate::config::check_output_path(&path).map_err(|why| Error::BadPath {
        secret: secret.name.clone(),
        why,
    })?;
    Ok(PathBuf::from(path))
}

/// The file's first content is the PEM certificate of a PKI answer (or of a KV secret holding
/// one): raw, with `certificate` its first field, and not sealed (a sealed credential cannot
/// be read back as a certificate).
pub fn holds_certificate(file: &FileConfig) -> bool {
    file.format == Format::Raw
        && !file.is_sealed()
        && file.fields.first().is_some_and(|f| f.name == "certificate")
}

/// How a sealed credential is written; `None` for a file or a plain credential.
fn sealed(file: &FileConfig) -> Option<crate::files::Sealed> {
    let c = file.credential.as_ref()?;
    Some(crate::files::Sealed {
        name: c.name.clone(),
        with_key: c.seal.with_key()?,
    })
}

/// The files to write, with their contents, in configuration order.
pub fn render_outputs(
    secrets: &[&SecretConfig],
    fetched: &[Fetched],
    facts: &Facts,
) -> Result<Vec<Output>, Error> {
    let mut outputs: Vec<Output> = Vec::new();
    for (secret, answer) in secrets.iter().zip(fetched) {
        let fields = secret_fields(&answer.answer.0).ok_or_else(|| Error::NoData {
            secret: secret.name.clone(),
        })?;
        for file in &secret.files {
            let path = output_path(secret, file, facts)?;
            if outputs.iter().any(|o| o.path == path) {
                return Err(Error::DuplicatePath {
                    secret: secret.name.clone(),
                    path,
                });
            }
            outputs.push(Output {
                content: encode(&secret.name, file, fields)?,
                path,
                secret: secret.name.clone(),
                holds_certificate: holds_certificate(file),
                mode: file.mode,
                uid: file.owner.uid,
                gid: file.owner.gid,
                on_change: file.on_change.clone(),
                credential: file.credential.as_ref().map(|c| c.name.clone()),
                sealed: sealed(file),
            });
        }
    }
    Ok(outputs)
}
