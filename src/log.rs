//! One line per step, with its duration, to syslog (facility daemon, ident vaultboot) and stderr.
//!
//! Callers pass only names, paths, counts and durations: nothing secret reaches this module.
//! Every line is one line, whatever a caller passes: the logger escapes control characters
//! itself (a value from IMDS, Vault or a file may hold a newline and a forged `<3>` priority),
//! so no call site can forget to.

use crate::untrusted;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

pub struct Log {
    syslog: Option<Mutex<SyslogLogger>>,
    syslog_failed: AtomicBool,
    /// stderr is the journal: each line starts with its syslog priority (`<4>`), which
    /// journald reads as the line's priority (so `journalctl -p warning` finds the warnings).
    priority_prefix: bool,
}

const SYSLOG_SEND_TIMEOUT: Duration = Duration::from_millis(250);

impl Log {
    /// Connects to syslog at /dev/log when it is there (or at `$VAULTBOOT_SYSLOG_SOCKET`, which
    /// tests use), unless stderr already goes to the journal, where a second copy would only
    /// double every line.
    pub fn open() -> Log {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "vaultboot".into(),
            pid: std::process::id(),
        };
        let custom = std::env::var_os("VAULTBOOT_SYSLOG_SOCKET");
        let journal = stderr_is_journal();
        let logger = match custom {
            Some(path) => syslog::unix_custom(formatter, path).ok(),
            None if journal => None,
            None if std::path::Path::new("/dev/log").exists() => {
                syslog::unix_custom(formatter, "/dev/log").ok()
            }
            None => None,
        };
        if let Some(syslog::Logger {
            backend: syslog::LoggerBackend::Unix(sock),
            ..
        }) = &logger
        {
            // A stuck syslog daemon must not stall the boot: a line that cannot be handed over
            // quickly is dropped (stderr still has it) and syslog is given up for this run.
            let _ = sock.set_write_timeout(Some(SYSLOG_SEND_TIMEOUT));
        }
        Log {
            syslog: logger.map(Mutex::new),
            syslog_failed: AtomicBool::new(false),
            priority_prefix: journal,
        }
    }

    pub fn info(&self, line: &str) {
        self.line(Level::Info, line);
    }

    pub fn warn(&self, line: &str) {
        self.line(Level::Warning, line);
    }

    pub fn error(&self, line: &str) {
        self.line(Level::Error, line);
    }

    pub fn line(&self, level: Level, line: &str) {
        let line = untrusted::escaped(line);
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}",
            stderr_line(self.priority_prefix, level, &line)
        );
        if let Some(sys) = &self.syslog {
            if self.syslog_failed.load(Ordering::Relaxed) {
                return;
            }
            let mut sys = sys.lock().unwrap_or_else(|p| p.into_inner());
            let sent = match level {
                Level::Info => sys.info(&line),
                Level::Warning => sys.warning(&line),
                Level::Error => sys.err(&line),
            };
            if sent.is_err() {
                self.syslog_failed.store(true, Ordering::Relaxed);
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "{}vaultboot: warning: syslog does not accept lines; logging to stderr only",
                    if self.priority_prefix { "<4>" } else { "" }
                );
            }
        }
    }
}

/// `line` (already escaped) as stderr shows it: with its priority on the journal.
fn stderr_line(priority_prefix: bool, level: Level, line: &str) -> String {
    let tag = match level {
        Level::Info => "",
        Level::Warning => "warning: ",
        Level::Error => "error: ",
    };
    // syslog(3) priorities: LOG_ERR 3, LOG_WARNING 4, LOG_INFO 6.
    let priority = match (priority_prefix, level) {
        (false, _) => "",
        (true, Level::Info) => "<6>",
        (true, Level::Warning) => "<4>",
        (true, Level::Error) => "<3>",
    };
    format!("{priority}vaultboot: {tag}{line}")
}

/// systemd sets JOURNAL_STREAM to the device and inode of the journal stream it connected.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// `1.234s` or `87ms`.
pub fn took(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}
