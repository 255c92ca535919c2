//! A failed run, named for the step that failed. The step's own error says what kind of failure
//! it was ([`Kind`]); `main` turns the kind into an exit status.

use crate::auth::{self, iam};
use crate::decide;
use crate::fanout::SpawnError;
use crate::files::{self, CommitError};
use crate::kind::Kind;
use crate::template::Fact;
use crate::{imds, nonce, secrets, state};
use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// Checking the AWS_* variables iam would sign with (half-set is an error).
    CheckingEnvironment(iam::EnvError),
    /// Setting up the Vault client (CA bundle, proxy, address).
    PreparingVaultClient(crate::http::SetupError),
    /// Reading the instance from IMDS: session, identity, signed document, metadata, role
    /// credentials.
    ReadingInstance(imds::Error),
    /// iam on an instance without an instance profile (IMDS answered 404 for this item).
    FindingInstanceProfile(String),
    /// A template names a fact this instance does not have (IMDS answered 404 for its item):
    /// the fact, and the IMDS path.
    FactNotOnInstance(Fact, String),
    /// Taking the state directory's lock (one run at a time).
    LockingState(state::Error),
    /// Another run held the state directory's lock until the deadline.
    WaitingForAnotherRun(std::path::PathBuf),
    LoadingNonce(nonce::Error),
    LoggingIn(auth::Error),
    /// Reading the secrets from Vault (the error names the secret).
    ReadingSecret(secrets::Error),
    /// Turning the secrets' fields into file contents at their paths.
    RenderingFiles(secrets::Error),
    /// Reading or recording the on_change commands owed by an earlier run.
    RecordingOnChange(state::Error),
    /// Reading or recording which certificates Vault issued (`issued`).
    RecordingIssued(state::Error),
    /// Writing the new files beside the old ones.
    StagingFiles(files::Error),
    /// Starting the threads of a parallel step (IMDS reads, staging files).
    StartingThreads(SpawnError),
    /// Renaming the staged files into place (or syncing their directories) part-way.
    CommittingFiles(CommitError),
    /// A stop signal ended the run; `committed`: after the files were in place (their
    /// on_change commands stay owed).
    Stopped {
        signal: &'static str,
        committed: bool,
    },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::CheckingEnvironment(_)
            | Error::PreparingVaultClient(_)
            | Error::FindingInstanceProfile(_)
            | Error::FactNotOnInstance(..) => Kind::Config,
            Error::ReadingInstance(e) => e.kind(),
            Error::LoadingNonce(e)
            | Error::RecordingOnChange(e)
            | Error::RecordingIssued(e)
            | Error::LockingState(e) => e.kind(),
            Error::WaitingForAnotherRun(_) | Error::StartingThreads(_) => Kind::Unavailable,
            Error::LoggingIn(e) => e.kind(),
            Error::ReadingSecret(e) | Error::RenderingFiles(e) => e.kind(),
            Error::StagingFiles(e) => e.kind(),
            Error::CommittingFiles(e) => e.kind(),
            Error::Stopped { .. } => Kind::Stopped,
        }
    }

    /// The error a run reports once a stop signal came: the stop, whatever step it cut short
    /// (those fail as cancelled), except a commit that failed part-way, whose report says which
    /// files were replaced.
    pub(super) fn after_stop(self) -> Error {
        match (self, crate::stop::requested()) {
            (e @ (Error::CommittingFiles(_) | Error::Stopped { .. }), _) | (e, None) => e,
            (_, Some(signal)) => Error::Stopped {
                signal,
                committed: false,
            },
        }
    }

    /// The run's last line when the deadline ended on a failure with a known cause.
    pub fn advice(&self) -> Option<String> {
        match self {
            Error::LoggingIn(e) => e.advice(),
            // (A secret read's errors say nothing about AWS: only a redirect has advice.)
            Error::ReadingSecret(secrets::Error::Unavailable { last, .. }) => {
                decide::redirect_advice(last)
            }
            _ => None,
        }
    }

    /// What the failed run did to the outputs, for the summary line.
    pub fn outputs_changed(&self) -> String {
        if let Error::Stopped {
            committed: true, ..
        } = self
        {
            return "every file was written; the on_change commands not run stay owed".into();
        }
        let Error::CommittingFiles(e) = self else {
            return "no file was changed".into();
        };
        if e.replaced.is_empty() {
            return "no file was changed".into();
        }
        let tail = if e.not_replaced.is_empty() {
            "not every directory could be synced".to_string()
        } else {
            format!(
                "{} not replaced: {}",
                e.not_replaced.len(),
                files::path_list(&e.not_replaced)
            )
        };
        format!(
            "{} file(s) replaced: {}; {tail}",
            e.replaced.len(),
            files::path_list(&e.replaced)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CheckingEnvironment(e) => write!(f, "configuration: environment: {e}"),
            Error::PreparingVaultClient(e) => write!(f, "vault client: {e}"),
            Error::ReadingInstance(e) => e.fmt(f),
            Error::FactNotOnInstance(fact, what) => write!(
                f,
                "template {{{{ {fact} }}}}: this instance has no {fact} (IMDS {what}: not found \
                 (404)){}",
                missing_fact_hint(*fact)
            ),
            Error::FindingInstanceProfile(what) => write!(
                f,
                "iam: no instance profile attached to this instance (IMDS {what}: not found \
                 (404)): attach one whose role Vault's iam role is bound to, or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in vaultboot's environment"
            ),
            Error::LockingState(e) => write!(f, "state: {e}"),
            Error::WaitingForAnotherRun(lock) => write!(
                f,
                "another vaultboot run held {} until the deadline",
                lock.display()
            ),
            Error::LoadingNonce(e) => write!(f, "nonce state: {e}"),
            Error::LoggingIn(e) => e.fmt(f),
            Error::ReadingSecret(e) | Error::RenderingFiles(e) => e.fmt(f),
            Error::RecordingOnChange(e) => write!(f, "pending on_change commands: {e}"),
            Error::RecordingIssued(e) => write!(f, "record of issued certificates: {e}"),
            Error::StagingFiles(e) => write!(f, "writing files: {e}"),
            Error::CommittingFiles(e) => write!(f, "writing files: {e}"),
            Error::Stopped { signal, .. } => write!(f, "stopped by {signal}"),
            Error::StartingThreads(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::CheckingEnvironment(e) => Some(e),
            Error::ReadingInstance(e) => Some(e),
            Error::LockingState(e)
            | Error::LoadingNonce(e)
            | Error::RecordingOnChange(e)
            | Error::RecordingIssued(e)
            | Error::StagingFiles(e) => Some(e),
            Error::LoggingIn(e) => Some(e),
            Error::ReadingSecret(e) | Error::RenderingFiles(e) => Some(e),
            Error::StartingThreads(e) => Some(e),
            Error::CommittingFiles(e) => Some(e),
            Error::PreparingVaultClient(e) => Some(e),
            Error::FindingInstanceProfile(_)
            | Error::FactNotOnInstance(..)
            | Error::WaitingForAnotherRun(_)
            | Error::Stopped { .. } => None,
        }
    }
}

/// Why an instance lacks a fact, and what to use instead.
fn missing_fact_hint(fact: Fact) -> &'static str {
    match fact {
        Fact::LocalIpv4 => {
            ": an IPv6-only instance has no IPv4 address; use {{ ipv6 }}, or {{ private-ip }} \
             (the IPv6 address there)"
        }
        Fact::Ipv6 => ": the instance has no IPv6 address on its primary network interface",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// The chain from the step down to the HTTP exchange that failed.
    #[test]
    fn every_wrapper_gives_its_source() {
        let timeout = crate::http::Error::new(
            "https://vault.example:8200/v1/auth/aws/login",
            crate::http::Class::Broken,
            "no answer in time".into(),
        );
        let e = Error::LoggingIn(auth::Error::Unavailable(crate::vault::Error::Http(timeout)));
        let mut chain = Vec::new();
        let mut next: Option<&dyn std::error::Error> = Some(&e);
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        assert_eq!(chain.len(), 4, "{chain:?}");
        assert_eq!(
            chain[3],
            "https://vault.example:8200/v1/auth/aws/login: no answer in time"
        );
        let missing = Error::CheckingEnvironment(iam::EnvError::IdWithoutSecret);
        assert!(missing.source().is_some());
    }
}
