//! The commands around the boot job: the log, the configuration, the messages and summary
//! lines, the status a run records. The exit status of each kind of failure is the caller's
//! (`main`): it is passed in as `ExitStatuses`, so that the numbers live in one place.

mod text;

use crate::app::{self, Ended, Mode};
use crate::config::{self, Config};
use crate::kind::Kind;
use crate::log::{took, Event, Level, Log};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The exit status of each kind of failure.
pub type ExitStatuses = fn(Kind) -> u8;

/// `check`: the configuration is valid (0, warnings on stderr) or not (the `Config` status).
/// With `print_outputs`, stdout has the output paths alone, for scripts.
pub fn check(path: &Path, print_outputs: bool, statuses: ExitStatuses) -> u8 {
    let c = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaultboot: error: configuration: {e}");
            return statuses(Kind::Config);
        }
    };
    for warning in c.warnings() {
        eprintln!("vaultboot: warning: {warning}");
    }
    for w in crate::check::warnings(&c) {
        eprintln!("vaultboot: warning: {}: {w}", path.display());
    }
    if !print_outputs {
        println!("{}", text::valid(path, &c));
        return 0;
    }
    match crate::check::output_globs(&c) {
        Ok(paths) => {
            paths.iter().for_each(|p| println!("{p}"));
            0
        }
        Err(e) => {
            eprintln!("vaultboot: error: configuration: {}: {e}", path.display());
            statuses(Kind::Config)
        }
    }
}

/// `run`: the boot job, its summary line, and the status file, written while the run lock is
/// still held.
pub fn run(path: &Path, mode: Mode, problems: &[String], statuses: ExitStatuses) -> u8 {
    let start = Instant::now();
    let (log, config) = open(path, problems, statuses);
    let config = match config {
        Ok(c) => c,
        Err(status) => return status,
    };
    let started = SystemTime::now();
    let status = app::run(&config, mode, &log, |result| {
        let status = match result {
            Ok(summary) => {
                let fields = [
                    ("VAULTBOOT_MODE", mode.name()),
                    ("VAULTBOOT_EXIT_STATUS", "0"),
                ];
                log.event(Level::Info, Event::Done, &fields, &text::done_line(summary));
                0
            }
            Err(e) => {
                let what = format!(
                    "{} after {}: {}",
                    ended(e),
                    took(start.elapsed()),
                    e.outputs_changed()
                );
                failed(&log, e, &what, statuses)
            }
        };
        let ended = Ended {
            mode,
            started,
            took: start.elapsed(),
            result,
            exit_status: status,
        };
        app::write_status(&config, &ended, &log);
        status
    });
    crate::stop::finished();
    status
}

/// `plan`: what `run` would do, on stdout.
pub fn plan(path: &Path, mode: Mode, problems: &[String], statuses: ExitStatuses) -> u8 {
    let start = Instant::now();
    let (log, config) = open(path, problems, statuses);
    let config = match config {
        Ok(c) => c,
        Err(status) => return status,
    };
    let status = match app::plan(&config, mode, &log) {
        Ok(plan) => {
            print!("{}", text::plan(&plan));
            0
        }
        Err(e) => {
            let what = format!(
                "plan {} after {}; nothing was written",
                ended(&e),
                took(start.elapsed())
            );
            failed(&log, &e, &what, statuses)
        }
    };
    crate::stop::finished();
    status
}

/// The log (stop signals handled from here on), and the configuration or the exit status of
/// a configuration that cannot be used.
fn open(
    path: &Path,
    problems: &[String],
    statuses: ExitStatuses,
) -> (Arc<Log>, Result<Config, u8>) {
    let log = Arc::new(Log::open());
    for p in problems {
        log.warn(p);
    }
    // Before any thread starts (they inherit the blocked signals).
    listen_for_stop(&log, statuses(Kind::Stopped));
    let config = config::load(path).map_err(|e| {
        let status = statuses(Kind::Config);
        log.error(&format!("configuration: {e}"));
        let line = format!("failed: configuration error (exit {status})");
        log_failure(&log, Kind::Config, status, &line);
        status
    });
    for warning in config.iter().flat_map(Config::warnings) {
        log.warn(&warning);
    }
    (log, config)
}

/// SIGTERM and SIGINT stop the run (see `app::stop_run`); when it cannot come back by itself
/// in time, the process ends here with `stopped` (the status of `Kind::Stopped`).
fn listen_for_stop(log: &Arc<Log>, stopped: u8) {
    let on_stop_log = Arc::clone(log);
    let listening = crate::stop::listen(move |signal| {
        if let Some(_files) = app::stop_run(signal, &on_stop_log) {
            let line = format!(
                "stopped by {signal} while an answer was still awaited: ended without it \
                 (exit {stopped})"
            );
            log_failure(&on_stop_log, Kind::Stopped, stopped, &line);
            std::process::exit(stopped.into());
        }
    });
    if let Err(e) = listening {
        log.warn(&format!("stop signals: {e}; SIGTERM ends the run at once"));
    }
}

/// How a failed run ended, for its summary line.
fn ended(e: &app::Error) -> &'static str {
    match e.kind() {
        Kind::Stopped => "stopped",
        _ => "failed",
    }
}

/// Logs a failed run's error, its summary line with the exit status, and the advice when the
/// cause is known; the exit status.
fn failed(log: &Log, e: &app::Error, summary: &str, statuses: ExitStatuses) -> u8 {
    let status = statuses(e.kind());
    log.error(&e.to_string());
    log_failure(log, e.kind(), status, &format!("{summary} (exit {status})"));
    if let Some(advice) = e.advice() {
        log.error(&advice);
    }
    status
}

/// The line that ends a failed run: the journal's "failed" event of its kind, with the status.
fn log_failure(log: &Log, kind: Kind, status: u8, line: &str) {
    let status = status.to_string();
    let fields = [("VAULTBOOT_EXIT_STATUS", status.as_str())];
    log.event(Level::Error, Event::Failed(kind), &fields, line);
}
