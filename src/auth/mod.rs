//! Logging in to Vault's aws auth method, and giving the token back at the end.

pub mod ec2;
pub mod iam;

use crate::decide::{self, Judge, Source};
use crate::kind::Kind;
use crate::retry::{Failure, Policy, Verdict};
use crate::secret::{Secret, SecretJson};
use crate::vault::{self, Vault};
use std::fmt;
use std::time::Duration;
use ureq::http::Method;

/// A Vault token from a login. The token itself is only reached through `client_token.expose()`.
pub struct Token {
    pub client_token: Secret,
    pub accessor: String,
    pub ttl: Duration,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Vault said the nonce does not match the one bound to this instance.
    NonceMismatch {
        mount: String,
        instance_id: String,
        /// The Vault namespace the auth method is in, for the command the operator runs.
        namespace: Option<String>,
    },
    /// Vault refused the login.
    Denied(vault::Error),
    /// Vault stayed unavailable until the deadline.
    Unavailable(vault::Error),
    /// The login answer is not what Vault sends.
    Malformed(vault::Error),
    /// The iam request could not be signed with these credentials.
    Signing(iam::SignError),
    Cancelled,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NonceMismatch {
                mount,
                instance_id,
                namespace,
            } => write!(
                f,
                "Vault answered \"client nonce mismatch\": this instance's identity is bound to \
                 another nonce (state lost or restored from elsewhere). The stored nonce was NOT \
                 replaced. To let this instance log in again, an operator runs: \
                 vault delete {}auth/{mount}/identity-accesslist/{instance_id} \
                 (or replaces the instance; README: \"Exit 77 in an Auto Scaling group\")",
                namespace
                    .as_deref()
                    .map(|ns| format!("-namespace={ns} "))
                    .unwrap_or_default()
            ),
            Error::Denied(e) => {
                write!(f, "login refused: {e}")?;
                match decide::login_row(e) {
                    Some(row) => write!(f, "; {}", row.hint),
                    None => Ok(()),
                }
            }
            Error::Unavailable(e) => {
                write!(f, "login: Vault unavailable until the deadline (last: {e})")
            }
            Error::Malformed(e) => write!(f, "login: {e}"),
            Error::Signing(e) => write!(f, "login: signing sts:GetCallerIdentity: {e}"),
            Error::Cancelled => f.write_str("login: cancelled"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Denied(e) | Error::Unavailable(e) | Error::Malformed(e) => Some(e),
            Error::Signing(e) => Some(e),
            Error::NonceMismatch { .. } | Error::Cancelled => None,
        }
    }
}

/// Why the token was not revoked.
#[derive(Debug)]
pub enum RevokeError {
    Vault(vault::Error),
    /// The run was cancelled before Vault answered.
    Cancelled,
}

impl fmt::Display for RevokeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevokeError::Vault(e) => e.fmt(f),
            RevokeError::Cancelled => f.write_str("revoke-self: cancelled"),
        }
    }
}

impl std::error::Error for RevokeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RevokeError::Vault(e) => Some(e),
            RevokeError::Cancelled => None,
        }
    }
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::NonceMismatch { .. } | Error::Denied(_) => Kind::Refused,
            Error::Malformed(_) | Error::Signing(_) => Kind::Malformed,
            Error::Unavailable(_) | Error::Cancelled => Kind::Unavailable,
        }
    }

    /// When the deadline ended on a transient failure that has a known cause (AWS throttling
    /// or failing behind Vault, a standby's redirects): what it was and what to do.
    pub fn advice(&self) -> Option<String> {
        match self {
            Error::Unavailable(last) => decide::advice(last),
            _ => None,
        }
    }
}

/// Reads `auth` out of a login answer.
pub(crate) fn token_from(answer: &SecretJson, url: &str) -> Result<Token, vault::Error> {
    let bad = |detail: &str| vault::Error::Malformed {
        url: url.to_string(),
        detail: detail.to_string(),
    };
    let auth = answer
        .0
        .get("auth")
        .and_then(|a| a.as_object())
        .ok_or_else(|| bad("login answer has no auth object"))?;
    let token = auth
        .get("client_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("login answer has no auth.client_token string"))?;
    if token.is_empty() || token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("auth.client_token is empty or not a token"));
    }
    let accessor = match auth.get("accessor") {
        Some(serde_json::Value::String(a)) if a.len() <= 256 && !a.contains(char::is_control) => {
            a.clone()
        }
        _ => "(none)".to_string(),
    };
    let ttl = auth
        .get("lease_duration")
        .and_then(|d| d.as_u64())
        .map(Duration::from_secs)
        .unwrap_or_default();
    Ok(Token {
        client_token: Secret::from_string(token.to_string()),
        accessor,
        ttl,
    })
}

/// `POST auth/token/revoke-self`, retried briefly: the job is done whatever this says.
pub fn revoke(vault: &Vault, token: &Token, policy: &Policy) -> Result<(), RevokeError> {
    let mut judge = Judge::new(Source::Vault);
    let result = policy.run(
        |left| {
            vault.request(
                Method::POST,
                "auth/token/revoke-self",
                Some(&token.client_token),
                None,
                left,
            )
        },
        |e| match judge.vault(e) {
            v @ (Verdict::Transient { .. } | Verdict::Refused { .. })
                if policy.remaining() > Duration::from_secs(1) =>
            {
                v
            }
            _ => Verdict::Fatal,
        },
    );
    match result {
        Ok(_) => Ok(()),
        Err(f) => Err(f
            .into_error()
            .map_or(RevokeError::Cancelled, RevokeError::Vault)),
    }
}

/// Maps a finished login retry loop onto the auth error.
pub(crate) fn login_failure(f: Failure<vault::Error>) -> Error {
    match f {
        Failure::Cancelled => Error::Cancelled,
        Failure::Exhausted { last, .. } => Error::Unavailable(last),
        Failure::Fatal(e) => match decide::kind(Source::Login, &e.answer()) {
            Kind::Refused => Error::Denied(e),
            Kind::Unavailable => Error::Unavailable(e),
            _ => Error::Malformed(e),
        },
    }
}
