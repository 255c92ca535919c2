//! The boot job, step by step: IMDS → nonce → login → secrets → files → on_change → revoke.

mod error;
mod instance;
mod login;
mod outputs;
mod plan;
mod report;
mod select;
mod session;

pub use error::Error;
pub use plan::{plan, Action, Entry, Plan};
pub use report::{write_status, Ended};

use session::Session;

use crate::config::{AuthMethod, Config};
use crate::files;
use crate::issued;
use crate::log::Log;
use crate::pending;
use crate::retry::Policy;
use crate::secrets;
use crate::state;
use crate::status::OutputStatus;
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
    log_start(config, mode, "", log);
    let _lock = lock(config, &policy, log)?;
    let mut session = Session::open(config, mode, log, &policy)?;
    let earlier = pending::load(&config.state_dir).map_err(Error::RecordingOnChange)?;
    let issued = issued::load(&config.state_dir).map_err(Error::RecordingIssued)?;
    for warning in earlier.repairs.iter().chain(&issued.warnings) {
        log.warn(warning);
    }
    let chosen = session.choose(config, mode, (&earlier.found, &issued.issued), log);
    let (to_fetch, skipped) = (chosen.to_fetch, chosen.skipped);
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

    let token = session.login(config, log, &policy)?;
    let step = Instant::now();
    let (vault, facts) = (&session.vault, &session.facts);
    let result = secrets::fetch_all(vault, &token.client_token, &to_fetch, facts, &policy)
        .map_err(Error::ReadingSecret)
        .and_then(|answers| {
            let fetched = outputs::Fetched {
                secrets: &to_fetch,
                answers,
                started: step,
            };
            let state = outputs::State {
                pending: earlier,
                issued: &issued.issued,
            };
            outputs::write_outputs(config, log, fetched, facts, state)
        });
    // After the files, as the contract orders it (also when a step failed). Its round trip
    // delays the end of the run, not the files.
    let revoked = login::revoke(config, log, vault, &token, &policy);

    let mut summary = result?;
    summary.logged_in = true;
    summary.revoked = revoked;
    summary.skipped = skipped.len();
    for output in &mut summary.outputs {
        if let Some((_, why)) = chosen.renewing.iter().find(|(s, _)| *s == output.secret) {
            output.reason = Some(why.clone());
        }
    }
    summary.outputs.extend(skipped);
    summary.took = start.elapsed();
    Ok(summary)
}

/// One run at a time on a state directory (see `state::lock`), held until the run ends.
fn lock(config: &Config, policy: &Policy, log: &Log) -> Result<state::RunLock, Error> {
    let waiting = || log.info("waiting for another vaultboot run to finish");
    let lock = state::lock(&config.state_dir, policy.deadline, waiting).map_err(|e| match e {
        state::LockError::State(e) => Error::LockingState(e),
        state::LockError::Held(path) => Error::WaitingForAnotherRun(path),
    })?;
    for repair in &lock.repairs {
        log.warn(repair);
    }
    Ok(lock)
}

fn log_start(config: &Config, mode: Mode, what: &str, log: &Log) {
    log.info(&format!(
        "start{what}{}: vault {}, {} login as role {:?} on auth/{}, {} secret(s), deadline {}",
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
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::Ec2 => "ec2",
        AuthMethod::Iam => "iam",
    }
}
