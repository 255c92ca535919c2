//! The boot job, step by step: IMDS → nonce → login → secrets → files → on_change → revoke.

mod error;
mod instance;
mod login;
mod outputs;
mod report;
mod select;

pub use error::Error;
pub use report::{write_status, Ended};

use crate::auth::iam;
use crate::config::{AuthMethod, Config};
use crate::files;
use crate::imds::Imds;
use crate::log::Log;
use crate::pending;
use crate::retry::Policy;
use crate::secrets;
use crate::status::OutputStatus;
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
    /// Whether the run logged in at all (not when every secret was skipped).
    pub logged_in: bool,
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
    let vault = Vault::new(&config.vault).map_err(Error::PreparingVaultClient)?;
    // One connection per secret, read all at once after the login: their TCP and TLS set-up
    // overlaps the IMDS reads, the nonce and the login. Not when nothing may be fetched: such
    // a run makes no Vault request at all.
    if select::may_fetch(config, mode) {
        vault.warm_up(config.secrets.len().max(1));
    }
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

    let earlier = pending::load(&config.state_dir).map_err(Error::RecordingOnChange)?;
    for repair in &earlier.repairs {
        log.warn(repair);
    }
    let choices = select::choose(config, mode, &facts, &earlier.found);
    let mut to_fetch = Vec::new();
    for (secret, choice) in config.secrets.iter().zip(&choices) {
        match choice {
            select::Choice::Fetch => to_fetch.push(secret),
            select::Choice::Skip(why) => {
                log.info(&format!("secret {:?} skipped: {why}", secret.name))
            }
        }
    }
    let skipped = select::skipped_outputs(config, &choices, &facts);
    // What a killed earlier run staged next to them goes, as it would for a fetched output.
    for output in &skipped {
        files::remove_stale_stages_of(&output.path);
    }
    if to_fetch.is_empty() {
        log.info("nothing to fetch: no Vault request");
        return Ok(Summary {
            skipped: skipped.len(),
            outputs: skipped,
            took: start.elapsed(),
            ..Summary::default()
        });
    }

    let token = match (config.auth.method, &identity, signed) {
        (AuthMethod::Ec2, Some(identity), Some(pkcs7)) => {
            login::login_ec2(config, log, &vault, &policy, identity, &pkcs7)?
        }
        _ => login::login_iam(config, log, &vault, &imds, &policy, env_credentials)?,
    };

    let step = Instant::now();
    let result = secrets::fetch_all(&vault, &token.client_token, &to_fetch, &facts, &policy)
        .map_err(Error::ReadingSecret)
        .and_then(|fetched| {
            let fetched = outputs::Fetched {
                secrets: &to_fetch,
                answers: fetched,
                started: step,
            };
            outputs::write_outputs(config, log, fetched, &facts, earlier)
        });
    // After the files, as the contract orders it (also when a step failed). Its round trip
    // delays the end of the run, not the files.
    let revoked = login::revoke(config, log, &vault, &token, &policy);

    let mut summary = result?;
    summary.logged_in = true;
    summary.revoked = revoked;
    summary.skipped = skipped.len();
    summary.outputs.extend(skipped);
    summary.took = start.elapsed();
    Ok(summary)
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::Ec2 => "ec2",
        AuthMethod::Iam => "iam",
    }
}
