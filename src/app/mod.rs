//! The boot job, step by step: IMDS → nonce → login → secrets → files → on_change → revoke.

mod error;
mod instance;
mod login;
mod outputs;

pub use error::Error;

use crate::auth::iam;
use crate::config::{AuthMethod, Config};
use crate::imds::Imds;
use crate::log::Log;
use crate::retry::Policy;
use crate::status::OutputStatus;
use crate::secrets;
use crate::vault::Vault;
use std::time::{Duration, Instant};

/// What a successful run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub secrets: usize,
    pub written: usize,
    pub unchanged: usize,
    pub skipped: usize,
    /// Every output of the configuration and what the run did to it (for the status file).
    pub outputs: Vec<OutputStatus>,
    pub on_change_failed: usize,
    pub revoked: bool,
    pub took: Duration,
}

/// Which run this is: the one at boot, or a refresh (the timer's), which skips the secrets
/// marked boot-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Boot,
    Refresh,
}

/// Runs the whole boot job.
pub fn run(config: &Config, mode: Mode, log: &Log) -> Result<Summary, Error> {
    let start = Instant::now();
    let policy = Policy::new(start + config.retry.deadline, config.retry.max_delay);
    log.info(&format!(
        "start{}: vault {}, {} login as role {:?} on auth/{}, {} secret(s), deadline {}",
        if mode == Mode::Refresh {
            " (refresh)"
        } else {
            ""
        },
        config.vault.address,
        method_name(config.auth.method),
        config.auth.role,
        config.auth.mount,
        config.secrets.len(),
        humantime::format_duration(config.retry.deadline)
    ));
    // The login and then every secret at once: that many connections, opened ahead (their TCP
    // and TLS set-up overlaps the IMDS reads and the login).
    crate::http::warm_next_vault_client(config.secrets.len().max(1));
    let vault = Vault::new(&config.vault).map_err(Error::PreparingVaultClient)?;
    let imds = Imds::new(&config.imds, &policy);

    // Off EC2 (iam with credentials from the environment) IMDS is needed only for templates.
    let env_credentials = match config.auth.method {
        // Half-set AWS_* variables are an error, not a silent fall-back to IMDS.
        AuthMethod::Iam => {
            iam::Credentials::from_env_checked().map_err(Error::CheckingEnvironment)?
        }
        AuthMethod::Ec2 => None,
    };
    let (identity, facts, signed) =
        instance::read_if_needed(config, log, &imds, &policy, env_credentials.is_some())?;

    let token = match (config.auth.method, &identity, signed) {
        (AuthMethod::Ec2, Some(identity), Some(pkcs7)) => {
            login::login_ec2(config, log, &vault, &policy, identity, &pkcs7)?
        }
        _ => login::login_iam(config, log, &vault, &imds, &policy, env_credentials)?,
    };

    let step = Instant::now();
    let result = secrets::fetch_all(&vault, &token.client_token, config, &facts, &policy)
        .map_err(Error::ReadingSecret)
        .and_then(|fetched| outputs::write_outputs(config, log, fetched, &facts, step));
    // After the files, as the contract orders it (also when a step failed). Its round trip
    // delays the end of the run, not the files.
    let revoked = login::revoke(config, log, &vault, &token, &policy);

    let mut summary = result?;
    summary.revoked = revoked;
    summary.took = start.elapsed();
    Ok(summary)
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::Ec2 => "ec2",
        AuthMethod::Iam => "iam",
    }
}
