//! From the fetched secrets to files in place: render, stage (in parallel), record the owed
//! on_change commands, commit all or nothing, run the commands.

use super::{Error, Summary};
use crate::config::{Config, SecretConfig};
use crate::fanout::Fanout;
use crate::files::{self, Outcome, Output};
use crate::issued::{self, Issued};
use crate::log::{took, Log};
use crate::pending;
use crate::secrets;
use crate::status::{OutputState, OutputStatus};
use crate::template::Facts;
use std::time::Instant;

/// The secrets this run fetched and Vault's answers, in the same order.
pub(super) struct Received<'a> {
    pub secrets: &'a [&'a SecretConfig],
    pub answers: Vec<secrets::Fetched>,
    pub started: Instant,
}

/// The state an earlier run left: the on_change commands it owes, the certificates Vault
/// issued.
pub(super) struct State<'a> {
    pub pending: &'a pending::Found,
    pub issued: &'a Issued,
}

/// What a complete commit did, and the on_change commands it owes (each argv once).
pub(super) struct Written {
    pub summary: Summary,
    pub commands: Vec<Vec<String>>,
    /// The owed commands are recorded on disk: clear the record once they all ran.
    pub recorded: bool,
}

/// Logs what was fetched and writes every file (all or nothing); the commands it then owes:
/// those of the files this run changed, and those `earlier` runs still owe.
pub(super) fn write_files(
    config: &Config,
    log: &Log,
    fetched: Received<'_>,
    facts: &Facts,
    state: &State<'_>,
) -> Result<Written, Error> {
    for f in &fetched.answers {
        log.info(&format!("secret {:?} fetched ({})", f.name, took(f.took)));
    }
    log.info(&format!(
        "{} secret(s) fetched ({})",
        fetched.answers.len(),
        took(fetched.started.elapsed())
    ));
    let outputs = secrets::render_outputs(fetched.secrets, &fetched.answers, facts)
        .map_err(Error::RenderingFiles)?;
    drop(fetched.answers);

    let step = Instant::now();
    let committed = commit(config, log, (&outputs, facts), state)?;
    let mut summary = Summary {
        secrets: fetched.secrets.len(),
        ..Summary::default()
    };
    for (output, outcome) in &committed.done {
        report(log, &mut summary, output, *outcome, &committed.owed);
    }
    log.info(&format!("files in place ({})", took(step.elapsed())));
    Ok(Written {
        summary,
        commands: files::commands_of(&committed.owed),
        recorded: committed.recorded,
    })
}

/// What a complete commit did, and the outputs whose on_change commands it owes.
struct Committed<'a> {
    done: Vec<(&'a Output, Outcome)>,
    owed: Vec<&'a Output>,
    recorded: bool,
}

/// Stages every output, records the on_change commands the commit will owe and the
/// certificates it puts in place (before the first rename: a kill from there on leaves them
/// owed on disk, and a certificate not recognised at worst), and commits. A stop signal ends
/// it before the records at the latest: once the renames begin, they all happen.
fn commit<'a>(
    config: &Config,
    log: &Log,
    (outputs, facts): (&'a [Output], &Facts),
    state: &State<'_>,
) -> Result<Committed<'a>, Error> {
    let earlier = state.pending;
    // A process ending on a stop waits for this section (it holds no network wait).
    let _files = crate::stop::files();
    let staged = stage(outputs)?;
    if let Some(signal) = crate::stop::requested() {
        // Dropping `staged` removes the staged files.
        return Err(Error::Stopped {
            signal,
            committed: false,
        });
    }
    let (owed, dropped) = pending::owed(outputs, &staged, earlier);
    for path in dropped {
        log.warn(&format!(
            "on_change owed by an earlier run for {} is not run: the configuration no longer \
             gives that output an on_change command",
            path.display()
        ));
    }
    let recorded =
        pending::record(&config.state_dir, earlier, &owed).map_err(Error::RecordingOnChange)?;
    for warning in &recorded.warnings {
        log.warn(warning);
    }
    record_issued(config, (outputs, facts), state.issued)?;
    match staged.commit() {
        Ok(done) => Ok(Committed {
            done,
            owed,
            recorded: recorded.on_disk,
        }),
        Err(e) => {
            if recorded.on_disk {
                log.warn(&format!(
                    "on_change commands not run: the files are not a complete set; they stay \
                     owed in {} and run after the next commit that completes",
                    config.state_dir.join(pending::FILE_NAME).display()
                ));
            }
            Err(Error::CommittingFiles(e))
        }
    }
}

/// Records the certificates of this commit as the ones Vault issued (durably, unless the
/// record already says so), and keeps only certificate outputs of the configuration.
fn record_issued(
    config: &Config,
    (outputs, facts): (&[Output], &Facts),
    before: &Issued,
) -> Result<(), Error> {
    let current = super::select::certificate_outputs(config, facts);
    let committed = outputs
        .iter()
        .filter(|o| current.contains(&o.path))
        .map(|o| {
            let facts = crate::certificate::first_in_pem(o.content.expose());
            (o.path.as_path(), facts.ok().map(|f| f.sha256))
        });
    let next = before.after_commit(|p| current.contains(p), committed);
    issued::save(&config.state_dir, before, &next).map_err(Error::RecordingIssued)
}

fn report(log: &Log, summary: &mut Summary, output: &Output, outcome: Outcome, owed: &[&Output]) {
    match outcome {
        Outcome::Written => {
            summary.written += 1;
            summary
                .outputs
                .push(output_status(output, OutputState::Written));
            log.info(&format!(
                "wrote {} (mode {:04o}, uid {}, gid {})",
                output.path.display(),
                output.mode,
                output.uid,
                output.gid
            ));
        }
        Outcome::Unchanged => {
            summary.unchanged += 1;
            summary
                .outputs
                .push(output_status(output, OutputState::Unchanged));
            if owed.iter().any(|o| std::ptr::eq(*o, output)) {
                log.info(&format!(
                    "unchanged {} (its on_change is owed by an earlier run)",
                    output.path.display()
                ));
            } else {
                log.info(&format!("unchanged {}", output.path.display()));
            }
        }
    }
}

fn output_status(output: &Output, state: OutputState) -> OutputStatus {
    OutputStatus {
        path: output.path.clone(),
        secret: output.secret.clone(),
        credential: output.credential.clone(),
        state,
        reason: None,
        holds_certificate: output.holds_certificate,
    }
}

/// Runs the owed on_change commands until `until` (see `files::run_on_change`), then clears
/// the record if they all ran; how many failed. (A failed command is a warning, not owed
/// again: one that always fails would otherwise run at every boot.) Commands a stop signal or
/// the end of the time left unrun stay owed, with the record: the next run runs them all.
pub(super) fn run_owed(
    config: &Config,
    log: &Log,
    written: &Written,
    until: Instant,
) -> Result<usize, Error> {
    let done = files::run_on_change(&written.commands, until);
    let mut failed = 0;
    for ran in &done.ran {
        match &ran.result {
            Ok(()) => log.info(&format!("on_change {:?} ok ({})", ran.argv, took(ran.took))),
            Err(e) => {
                failed += 1;
                log.warn(&format!("on_change {:?} failed: {e}", ran.argv));
            }
        }
    }
    let record = config.state_dir.join(pending::FILE_NAME);
    if let Some(signal) = done.stopped {
        log.warn(&format!(
            "on_change commands cut short by {signal}: they stay owed in {} and run after \
             the next commit",
            record.display()
        ));
        return Err(Error::Stopped {
            signal,
            committed: true,
        });
    }
    if !done.not_started.is_empty() {
        log.warn(&format!(
            "on_change {:?} not started: the run's time was up; owed in {} to the next run",
            done.not_started,
            record.display()
        ));
    } else if written.recorded {
        if let Err(e) = pending::clear(&config.state_dir) {
            log.warn(&format!(
                "cannot clear the pending on_change commands: {e}; they run again on the next run"
            ));
        }
    }
    Ok(failed)
}

/// Files staged at once on this many threads at most.
const MAX_FILE_THREADS: usize = 8;

const STAGE: Fanout = Fanout::new("files to stage", "stage", MAX_FILE_THREADS);

/// `files::stage_all` with the outputs spread over threads: their fsyncs overlap instead of
/// queueing. Still all or nothing: a failure to stage any of them removes every staged file
/// (dropping a `Staged` does), once every thread is done.
fn stage(outputs: &[files::Output]) -> Result<files::Staged<'_>, Error> {
    let staged = STAGE
        .map(outputs, |output| {
            files::stage_all(std::slice::from_ref(output))
        })
        .map_err(Error::StartingThreads)?;
    let staged: Result<Vec<_>, _> = staged.into_iter().collect();
    staged.map(files::Staged::join).map_err(Error::StagingFiles)
}
