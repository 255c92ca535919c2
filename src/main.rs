//! `vaultboot`: argv → command; hardening; logging; the boot job; error → exit status.

use std::process::ExitCode;
use std::sync::Arc;
use vaultboot::{Command, Config, Kind, Log, Mode};

// sysexits(3), as the contract's table says.
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;
const EX_CANTCREAT: u8 = 73;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    // Before anything else, and long before any secret is read.
    let hardening_problems = vaultboot::harden();

    let command = match vaultboot::parse_command_line(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaultboot: {e}\n\n{}", vaultboot::USAGE);
            return ExitCode::from(EX_USAGE);
        }
    };
    match command {
        Command::Help => {
            println!("{}", vaultboot::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("vaultboot {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check {
            config,
            print_outputs,
        } => check(&config, print_outputs),
        Command::Run { config, refresh } => run(&config, refresh, &hardening_problems),
        Command::Plan { config, refresh } => plan(&config, refresh, &hardening_problems),
    }
}

/// `check`: the configuration is valid (exit 0, warnings on stderr) or not (78). With
/// `print_outputs`, stdout has the output paths alone, for scripts.
fn check(path: &std::path::Path, print_outputs: bool) -> ExitCode {
    let c = match vaultboot::load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaultboot: error: configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    for warning in c.warnings() {
        eprintln!("vaultboot: warning: {warning}");
    }
    for w in vaultboot::check_warnings(&c) {
        eprintln!("vaultboot: warning: {}: {w}", path.display());
    }
    if print_outputs {
        return match vaultboot::output_globs(&c) {
            Ok(paths) => {
                paths.iter().for_each(|p| println!("{p}"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vaultboot: error: configuration: {}: {e}", path.display());
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    let files: usize = c.secrets.iter().map(|s| s.files.len()).sum();
    println!(
        "vaultboot: {} is valid: vault {}, role {:?}, {} secret(s), {} file(s)",
        path.display(),
        c.vault.address,
        c.auth.role,
        c.secrets.len(),
        files
    );
    ExitCode::SUCCESS
}

/// The log (stop signals handled from here on), and the configuration or the exit status of
/// a configuration that cannot be used.
fn open(
    path: &std::path::Path,
    hardening_problems: &[String],
) -> (Arc<Log>, Result<Config, ExitCode>) {
    let log = Arc::new(Log::open());
    for p in hardening_problems {
        log.warn(p);
    }
    // Before any thread starts (they inherit the blocked signals).
    listen_for_stop(&log);
    let config = vaultboot::load_config(path).map_err(|e| {
        log.error(&format!("configuration: {e}"));
        log.error(&format!("failed: configuration error (exit {EX_CONFIG})"));
        ExitCode::from(EX_CONFIG)
    });
    for warning in config.iter().flat_map(Config::warnings) {
        log.warn(&warning);
    }
    (log, config)
}

/// SIGTERM and SIGINT stop the run (see `vaultboot::stop_run`); when it cannot come back by
/// itself in time, the process ends here with EX_TEMPFAIL.
fn listen_for_stop(log: &Arc<Log>) {
    let on_stop_log = Arc::clone(log);
    let listening = vaultboot::listen_for_stop(move |signal| {
        if let Some(_files) = vaultboot::stop_run(signal, &on_stop_log) {
            on_stop_log.error(&format!(
                "stopped by {signal} while an answer was still awaited: ended without it \
                 (exit {EX_TEMPFAIL})"
            ));
            std::process::exit(EX_TEMPFAIL.into());
        }
    });
    if let Err(e) = listening {
        log.warn(&format!("stop signals: {e}; SIGTERM ends the run at once"));
    }
}

fn run(path: &std::path::Path, refresh: bool, hardening_problems: &[String]) -> ExitCode {
    let start = std::time::Instant::now();
    let (log, config) = open(path, hardening_problems);
    let config = match config {
        Ok(c) => c,
        Err(status) => return status,
    };
    let mode = if refresh { Mode::Refresh } else { Mode::Boot };
    let started = std::time::SystemTime::now();
    let status = vaultboot::run(&config, mode, &log, |result| {
        let status = match result {
            Ok(summary) => {
                log.info(&done_line(summary));
                0
            }
            Err(e) => failed(
                &log,
                e,
                &format!(
                    "{} after {}: {}",
                    ended(e),
                    took(start),
                    e.outputs_changed()
                ),
            ),
        };
        let ended = vaultboot::Ended {
            mode,
            started,
            took: start.elapsed(),
            result,
            exit_status: status,
        };
        vaultboot::write_status(&config, &ended, &log);
        status
    });
    vaultboot::run_finished();
    ExitCode::from(status)
}

fn plan(path: &std::path::Path, refresh: bool, hardening_problems: &[String]) -> ExitCode {
    let start = std::time::Instant::now();
    let (log, config) = open(path, hardening_problems);
    let config = match config {
        Ok(c) => c,
        Err(status) => return status,
    };
    let mode = if refresh { Mode::Refresh } else { Mode::Boot };
    let status = match vaultboot::plan(&config, mode, &log) {
        Ok(plan) => {
            print!("{}", plan_text(&plan));
            0
        }
        Err(e) => {
            let what = format!(
                "plan {} after {}; nothing was written",
                ended(&e),
                took(start)
            );
            failed(&log, &e, &what)
        }
    };
    vaultboot::run_finished();
    ExitCode::from(status)
}

/// How a failed run ended, for its summary line.
fn ended(e: &vaultboot::RunError) -> &'static str {
    match e.kind() {
        Kind::Stopped => "stopped",
        _ => "failed",
    }
}

/// Logs a failed run's error, its summary line with the exit status, and the advice when the
/// cause is known; the exit status.
fn failed(log: &Log, e: &vaultboot::RunError, summary: &str) -> u8 {
    let status = exit_status(e.kind());
    log.error(&e.to_string());
    log.error(&format!("{summary} (exit {status})"));
    if let Some(advice) = e.advice() {
        log.error(&advice);
    }
    status
}

fn took(start: std::time::Instant) -> String {
    vaultboot::took(start.elapsed())
}

/// What `plan` prints on stdout: one line per output, then the commands.
fn plan_text(plan: &vaultboot::Plan) -> String {
    use vaultboot::Action;
    let mut out = String::new();
    for e in &plan.entries {
        let action = match e.action {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Unchanged => "unchanged",
            Action::Skip => "skip",
        };
        let note = e
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{action:<9} {} (secret {:?}{note})\n",
            e.path.display(),
            e.secret
        ));
    }
    for (argv, path) in &plan.on_change {
        out.push_str(&format!(
            "on_change {argv:?} would run (for {})\n",
            path.display()
        ));
    }
    let count = |a: Action| plan.entries.iter().filter(|e| e.action == a).count();
    out.push_str(&format!(
        "plan: {} to create, {} to replace, {} unchanged, {} skipped; {} on_change command(s); \
         {}; nothing was written\n",
        count(Action::Create),
        count(Action::Replace),
        count(Action::Unchanged),
        count(Action::Skip),
        plan.on_change.len(),
        match (plan.logged_in, plan.revoked) {
            (false, _) => "no Vault request",
            (true, true) => "token revoked",
            (true, false) => "token not revoked",
        }
    ));
    out
}

/// The run's last line when it succeeded.
fn done_line(s: &vaultboot::Summary) -> String {
    if !s.logged_in {
        return format!(
            "done: nothing to fetch ({} file(s) skipped), no Vault request, in {}",
            s.skipped,
            vaultboot::took(s.took)
        );
    }
    let mut line = format!(
        "done: {} secret(s), {} file(s) written, {} unchanged, ",
        s.secrets, s.written, s.unchanged
    );
    if s.skipped > 0 {
        line.push_str(&format!("{} skipped, ", s.skipped));
    }
    line.push_str(&format!(
        "token {}, in {}",
        if s.revoked { "revoked" } else { "not revoked" },
        vaultboot::took(s.took)
    ));
    if s.on_change_failed > 0 {
        line.push_str(&format!(
            "; {} on_change command(s) failed",
            s.on_change_failed
        ));
    }
    line
}

/// The exit status of each kind of failure (sysexits(3), as docs/command-line.md's table says).
fn exit_status(kind: Kind) -> u8 {
    match kind {
        Kind::Malformed => EX_DATAERR,
        Kind::Unavailable => EX_UNAVAILABLE,
        Kind::CannotWrite => EX_CANTCREAT,
        Kind::Refused => EX_NOPERM,
        Kind::Config => EX_CONFIG,
        Kind::Stopped => EX_TEMPFAIL,
    }
}
