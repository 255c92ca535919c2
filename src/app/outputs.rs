//! From the fetched secrets to files in place: render, stage (in parallel), record the owed
//! on_change commands, commit all or nothing, run the commands.

use super::{Error, Summary};
use crate::config::{Config, SecretConfig};
use crate::files::{self, Outcome, Output};
use crate::issued::{self, Issued};
use crate::log::{took, Log};
use crate::pending;
use crate::secrets;
use crate::status::{OutputState, OutputStatus};
use crate::template::Facts;
use std::time::Instant;

/// The secrets this run fetched and Vault's answers, in the same order.
pub(super) struct Fetched<'a> {
    pub secrets: &'a [&'a SecretConfig],
    pub answers: Vec<secrets::Fetched>,
    pub started: Instant,
}

/// The state an earlier run left: the on_change commands it owes, the certificates Vault
/// issued.
pub(super) struct State<'a> {
    pub pending: pending::Pending,
    pub issued: &'a Issued,
}

/// Logs what was fetched, writes every file (all or nothing) and runs the on_change commands
/// (those of the files this run changed, and those earlier runs still owe).
pub(super) fn write_outputs(
    config: &Config,
    log: &Log,
    fetched: Fetched<'_>,
    facts: &Facts,
    earlier: State<'_>,
) -> Result<Summary, Error> {
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
    let committed = commit(config, log, (&outputs, facts), &earlier)?;
    let mut summary = Summary {
        secrets: fetched.secrets.len(),
        ..Summary::default()
    };
    for (output, outcome) in &committed.done {
        report(log, &mut summary, output, *outcome, &committed.owed);
    }
    log.info(&format!("files in place ({})", took(step.elapsed())));
    summary.on_change_failed = run_owed(config, log, &committed.owed, committed.recorded);
    Ok(summary)
}

/// What a complete commit did, and the on_change commands it owes.
struct Committed<'a> {
    done: Vec<(&'a Output, Outcome)>,
    owed: Vec<&'a Output>,
    /// The owed commands are recorded on disk: clear the record once they ran.
    recorded: bool,
}

/// Stages every output, records the on_change commands the commit will owe and the
/// certificates it puts in place (before the first rename: a kill from there on leaves them
/// owed on disk, and a certificate not recognised at worst), and commits.
fn commit<'a>(
    config: &Config,
    log: &Log,
    (outputs, facts): (&'a [Output], &Facts),
    state: &State<'_>,
) -> Result<Committed<'a>, Error> {
    let earlier = &state.pending.found;
    let staged = stage(outputs).map_err(Error::StagingFiles)?;
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
        state,
        reason: None,
        holds_certificate: output.holds_certificate,
    }
}

/// Runs every owed on_change command, then clears the record; how many failed. (A failed
/// command is a warning, not owed again: one that always fails would otherwise run at every
/// boot.)
fn run_owed(config: &Config, log: &Log, owed: &[&Output], recorded: bool) -> usize {
    let mut failed = 0;
    for ran in files::run_on_change(owed) {
        match ran.result {
            Ok(()) => log.info(&format!("on_change {:?} ok ({})", ran.argv, took(ran.took))),
            Err(e) => {
                failed += 1;
                log.warn(&format!("on_change {:?} failed: {e}", ran.argv));
            }
        }
    }
    if recorded {
        if let Err(e) = pending::clear(&config.state_dir) {
            log.warn(&format!(
                "cannot clear the pending on_change commands: {e}; they run again on the next run"
            ));
        }
    }
    failed
}

/// Files staged at once on this many threads at most.
const MAX_FILE_THREADS: usize = 8;

/// `files::stage_all` with the outputs spread over threads: their fsyncs overlap instead of
/// queueing. Still all or nothing: a failure to stage any of them removes every staged file
/// (dropping a `Staged` does).
fn stage(outputs: &[files::Output]) -> Result<files::Staged<'_>, files::Error> {
    if outputs.len() < 2 {
        return files::stage_all(outputs);
    }
    let per_thread = outputs.len().div_ceil(MAX_FILE_THREADS);
    std::thread::scope(|scope| {
        let staging: Vec<_> = outputs
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || files::stage_all(chunk)))
            .collect();
        join_all(staging).map(files::Staged::join)
    })
}

/// Every thread's result, or the first error in their order (once all have finished).
fn join_all<T, E>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, E>>>,
) -> Result<Vec<T>, E> {
    let mut done = Vec::new();
    let mut first_error = None;
    for h in handles {
        match h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
            Ok(v) => done.push(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
