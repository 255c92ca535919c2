//! The boot job, step by step: IMDS → nonce → login → secrets → revoke (while the files are
//! written) → files → on_change; a stop signal ends it at any step (`stop_run`).

mod error;
mod held;
mod instance;
mod login;
mod outputs;
mod plan;
mod report;
mod select;
mod session;

pub use error::Error;
pub use plan::{plan, Action, Plan};
pub use report::{write_status, Ended};

use session::Session;

use crate::config::{AuthMethod, Config};
use crate::files;
use crate::issued;
use crate::log::{Event, Level, Log};
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

impl Mode {
    /// As the status file and the journal's `VAULTBOOT_MODE` field write it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Boot => "boot",
            Mode::Refresh => "refresh",
        }
    }
}

/// The on_change commands get what is left of `retry.deadline`, but at least this long after
/// the files are in place (a run whose retries spent the deadline still reloads its services).
const ON_CHANGE_FLOOR: Duration = Duration::from_secs(10);
/// After a stop signal, how long the run may take to come back by itself before the process
/// ends without it: an answer in flight (a login whose token must be revoked) is waited for
/// this long.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Runs the whole boot job, then `end` with its result while the run lock is still held (so
/// that what `end` records, the status, cannot overwrite that of a run that started later).
/// After a stop signal (see `stop_run`), the result is `Error::Stopped`.
pub fn run<T>(
    config: &Config,
    mode: Mode,
    log: &Log,
    end: impl FnOnce(&Result<Summary, Error>) -> T,
) -> T {
    let start = Instant::now();
    let policy = Policy::starting(start, config.retry.deadline, config.retry.max_delay);
    log_start(config, mode, "", log);
    let lock = match lock(config, &policy, log) {
        Ok(lock) => lock,
        Err(e) => return end(&Err(Error::after_stop(e))),
    };
    let result = run_locked(config, mode, log, &policy, start).map_err(Error::after_stop);
    let ended = end(&result);
    drop(lock);
    ended
}

fn run_locked(
    config: &Config,
    mode: Mode,
    log: &Log,
    policy: &Policy,
    start: Instant,
) -> Result<Summary, Error> {
    let mut session = Session::open(config, mode, log, policy)?;
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

    let token = session.login(config, log, policy)?;
    let token = login::hold(config, &session.vault, token);
    let step = Instant::now();
    let (vault, facts) = (&session.vault, &session.facts);
    let answers = stopped()
        .and_then(|()| {
            secrets::fetch_all(vault, &token.client_token, &to_fetch, facts, policy)
                .map_err(Error::ReadingSecret)
        })
        .inspect_err(|_| {
            login::revoke(config, log, policy);
        })?;
    let fetched = outputs::Received {
        secrets: &to_fetch,
        answers,
        started: step,
    };
    // The last Vault read is done: the token goes now, on a thread of its own while the files
    // are written (its round trip does not delay them), and before any on_change command.
    let (revoked, written) = std::thread::scope(|scope| {
        let revoking = std::thread::Builder::new()
            .name("revoke".into())
            .spawn_scoped(scope, || login::revoke(config, log, policy));
        let state = outputs::State {
            pending: &earlier.found,
            issued: &issued.issued,
        };
        let written = outputs::write_files(config, log, fetched, facts, &state);
        let revoked = match revoking {
            Ok(handle) => handle.join().unwrap_or(false),
            // No thread: revoked here, after the files.
            Err(_) => login::revoke(config, log, policy),
        };
        (revoked, written)
    });
    let mut written = written?;
    for (secret, why) in &chosen.renewing {
        let line = format!("secret {secret:?}: new certificate in place ({why})");
        let fields = [("VAULTBOOT_SECRET", secret.as_str())];
        log.event(Level::Info, Event::NewCertificate, &fields, &line);
    }
    let until = policy.deadline.max(Instant::now() + ON_CHANGE_FLOOR);
    let on_change_failed = outputs::run_owed(config, log, &written, until)?;

    let summary = &mut written.summary;
    summary.on_change_failed = on_change_failed;
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
    Ok(written.summary)
}

/// `Err(Stopped)` once a stop signal came.
fn stopped() -> Result<(), Error> {
    match crate::stop::requested() {
        None => Ok(()),
        Some(signal) => Err(Error::Stopped {
            signal,
            committed: false,
        }),
    }
}

/// What a stop signal does (on the thread that took it) while the run goes on: the held token
/// is revoked at once (within `login::REVOKE_GRACE`), and the run, which sees the stop at its
/// next step, gets `STOP_WAIT` to end by itself (revoking a token that comes later, removing
/// what it staged, finishing a commit under way). When it has not (it waits for an answer in
/// flight), the token is revoked if one came meanwhile and the files section is taken: the
/// guard returned, the caller ends the process, while no file is staged or half-renamed.
/// `None`: the run ended by itself.
pub fn stop_run(signal: &str, log: &Log) -> Option<std::sync::MutexGuard<'static, ()>> {
    log.warn(&format!(
        "{signal} received: stopping (the token is revoked, staged files are removed, \
         on_change commands are killed)"
    ));
    held::revoke(log, login::REVOKE_GRACE);
    if crate::stop::wait_finished(Instant::now() + STOP_WAIT) {
        return None;
    }
    held::revoke(log, login::REVOKE_GRACE);
    Some(crate::stop::files())
}

/// One run at a time on a state directory (see `state::lock`), held until the run ends.
fn lock(config: &Config, policy: &Policy, log: &Log) -> Result<state::RunLock, Error> {
    let waiting = || log.info("waiting for another vaultboot run to finish");
    let lock = state::lock(&config.state_dir, policy.deadline, waiting).map_err(|e| match e {
        state::LockError::State(e) => Error::LockingState(e),
        state::LockError::Held(path) => Error::WaitingForAnotherRun(path),
        state::LockError::Stopped => Error::Stopped {
            signal: crate::stop::requested().unwrap_or("a stop signal"),
            committed: false,
        },
    })?;
    for repair in &lock.repairs {
        log.warn(repair);
    }
    Ok(lock)
}

fn log_start(config: &Config, mode: Mode, what: &str, log: &Log) {
    let line = format!(
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
    );
    // A plan is not a run: only the run's start is the journal's "started" event.
    if what.is_empty() {
        let fields = [("VAULTBOOT_MODE", mode.name())];
        log.event(Level::Info, Event::Started, &fields, &line);
    } else {
        log.info(&line);
    }
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::Ec2 => "ec2",
        AuthMethod::Iam => "iam",
    }
}
