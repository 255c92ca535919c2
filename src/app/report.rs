//! The status of a finished run, for monitoring (see `status`).

use super::{Error, Mode, Summary};
use crate::config::Config;
use crate::log::Log;
use crate::status::{self, Status};
use std::time::{Duration, SystemTime};

/// How a run ended, as main saw it.
pub struct Ended<'a> {
    pub mode: Mode,
    pub started: SystemTime,
    pub took: Duration,
    pub result: &'a Result<Summary, Error>,
    pub exit_status: u8,
}

/// Writes the status (and the textfile) of a run; a failure to write is a warning, never a
/// change of the run's exit status.
pub fn write_status(config: &Config, ended: &Ended<'_>, log: &Log) {
    // The run that holds the lock reports; one that gave up waiting for it does not overwrite
    // that run's status with its own.
    if let Err(Error::WaitingForAnotherRun(_)) = ended.result {
        return;
    }
    let previous = status::previous(&config.status.file);
    let finished_at = status::unix_seconds(ended.started + ended.took);
    let (outputs, error) = match ended.result {
        Ok(summary) => (summary.outputs.clone(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // On success the certificates this run knows; after a failure those the last status named
    // that are outputs of this configuration, as they are on disk now (a certificate that
    // expires while runs fail is the alert). A path the status file alone names is never
    // opened: whoever wrote that file does not choose what root reads.
    let certificates = match ended.result {
        Ok(_) => status::certificates_on_disk(
            outputs
                .iter()
                .filter(|o| o.holds_certificate)
                .map(|o| o.path.as_path()),
        ),
        Err(_) => status::certificates_on_disk(
            previous
                .iter()
                .flat_map(|p| p.certificates.iter().map(|c| c.path.as_path()))
                .filter(|path| is_configured_output(config, path)),
        ),
    };
    let status = Status {
        started_at: status::unix_seconds(ended.started),
        finished_at,
        duration_ms: ended.took.as_millis() as u64,
        mode: ended.mode.name().into(),
        outcome: if ended.result.is_ok() {
            "success"
        } else {
            "failure"
        }
        .into(),
        exit_status: ended.exit_status,
        error,
        last_success_at: match ended.result {
            Ok(_) => Some(finished_at),
            Err(_) => previous.and_then(|p| p.last_success_at),
        },
        outputs,
        certificates,
    };
    let textfile = config.status.textfile.as_deref();
    if let Err(e) = status::write(&status, &config.status.file, textfile) {
        log.warn(&format!("status not written: {e}"));
    }
}

fn is_configured_output(config: &Config, path: &std::path::Path) -> bool {
    let Some(text) = path.to_str() else {
        return false;
    };
    config
        .secrets
        .iter()
        .flat_map(|s| &s.files)
        .any(|f| f.path.could_render_to(text))
}
