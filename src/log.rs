//! One line per step, with its duration, to syslog (facility daemon, ident vaultboot) and stderr;
//! under journald, through the journal's native protocol instead, where the lines that report an
//! event carry that event's stable `MESSAGE_ID` (explained by dist/systemd/vaultboot.catalog) and
//! structured fields (names, paths, exit statuses: never a value).
//!
//! Callers pass only names, paths, counts and durations: nothing secret reaches this module.
//! Every line is one line, whatever a caller passes: the logger escapes control characters
//! itself (a value from IMDS, Vault or a file may hold a newline and a forged `<3>` priority),
//! so no call site can forget to.

use crate::kind::Kind;
use crate::untrusted;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
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

/// The events an operator alerts on or looks up, each with its journal `MESSAGE_ID`. The ids are
/// an interface: never change one (dist/systemd/vaultboot.catalog explains each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Started,
    Done,
    Failed(Kind),
    NewCertificate,
    CertificateKept,
    TokenNotRevoked,
}

impl Event {
    pub fn message_id(self) -> &'static str {
        match self {
            Event::Started => "3d0f92aff9fc4266bef39708d6b8af62",
            Event::Done => "4e88164a86054dc7916a6980bd9cea98",
            Event::Failed(Kind::Malformed) => "ecb2f5709e74409dbeb82e3ae1770cd9",
            Event::Failed(Kind::Unavailable) => "5ebc5dabbf2b45339fb6a3069ea9a9cf",
            Event::Failed(Kind::CannotWrite) => "bdcc5e0d2259415d905a4b56fb0ffa00",
            Event::Failed(Kind::Stopped) => "0c987be1344c4030b602554bb1876684",
            Event::Failed(Kind::Refused) => "5cdde770be214a208b2d82dbd3d5c3ab",
            Event::Failed(Kind::Config) => "0087c0c231e14614919a529ea4f7eb63",
            Event::NewCertificate => "be716bdc6fca49c5b097055a1cd3f7a8",
            Event::CertificateKept => "e8d448ebf755417cb41357bd7c8b027c",
            Event::TokenNotRevoked => "cbf75f0df13b4efd9d4e81a5dbddf438",
        }
    }
}

/// A structured journal field of an event's line: `VAULTBOOT_SECRET`, `VAULTBOOT_OUTPUT`,
/// `VAULTBOOT_EXIT_STATUS`… Names, paths and numbers only.
pub type Field<'a> = (&'static str, &'a str);

pub struct Log {
    syslog: Option<Mutex<SyslogLogger>>,
    syslog_failed: AtomicBool,
    /// journald's native socket, when stderr is the journal; given up (for stderr) at the first
    /// line it does not take.
    journal: Option<Journal>,
    /// stderr is the journal: each line starts with its syslog priority (`<4>`), which
    /// journald reads as the line's priority (so `journalctl -p warning` finds the warnings).
    priority_prefix: bool,
}

const SYSLOG_SEND_TIMEOUT: Duration = Duration::from_millis(250);
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    failed: AtomicBool,
}

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
            journal: journal.then(Journal::open).flatten(),
            priority_prefix: journal,
        }
    }

    /// A line that reports `event`, with its fields (journal only; elsewhere the line alone).
    pub fn event(&self, level: Level, event: Event, fields: &[Field], line: &str) {
        self.send(level, Some(event), fields, line);
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
        self.send(level, None, &[], line);
    }

    fn send(&self, level: Level, event: Option<Event>, fields: &[Field], line: &str) {
        let line = untrusted::escaped(line);
        if let Some(journal) = &self.journal {
            if journal.send(&entry(
                level,
                event,
                fields,
                &stderr_line(false, level, &line),
            )) {
                return;
            }
        }
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

impl Journal {
    /// The native socket (`$VAULTBOOT_JOURNAL_SOCKET` in tests); none when nothing listens there.
    fn open() -> Option<Journal> {
        let path = std::env::var_os("VAULTBOOT_JOURNAL_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET));
        let socket = UnixDatagram::unbound().ok()?;
        // journald reads its socket at once; a stuck one must not stall the boot either.
        socket.set_write_timeout(Some(SYSLOG_SEND_TIMEOUT)).ok()?;
        socket.connect(&path).ok()?;
        Some(Journal {
            socket,
            path,
            failed: AtomicBool::new(false),
        })
    }

    /// Whether journald took the entry; after a refusal every line goes to stderr, once said.
    fn send(&self, entry: &[u8]) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            return false;
        }
        if self.socket.send(entry).is_ok() {
            return true;
        }
        self.failed.store(true, Ordering::Relaxed);
        let _ = writeln!(
            std::io::stderr().lock(),
            "<4>vaultboot: warning: the journal socket {} does not accept lines; logging to stderr",
            self.path.display()
        );
        false
    }
}

/// One journal entry in the native protocol: `NAME=value` lines. Every value is escaped first
/// (the message by `send`, the fields here), so none holds a newline and the protocol's
/// length-prefixed form for multi-line values is never needed.
fn entry(level: Level, event: Option<Event>, fields: &[Field], message: &str) -> Vec<u8> {
    // syslog(3) priorities: LOG_ERR 3, LOG_WARNING 4, LOG_INFO 6; facility LOG_DAEMON 3.
    let priority = match level {
        Level::Info => "6",
        Level::Warning => "4",
        Level::Error => "3",
    };
    let mut out = String::with_capacity(message.len() + 160);
    let mut put = |name: &str, value: &str| {
        out.push_str(name);
        out.push('=');
        out.push_str(value);
        out.push('\n');
    };
    put("MESSAGE", message);
    put("PRIORITY", priority);
    put("SYSLOG_FACILITY", "3");
    put("SYSLOG_IDENTIFIER", "vaultboot");
    if let Some(event) = event {
        put("MESSAGE_ID", event.message_id());
    }
    for (name, value) in fields {
        put(name, &untrusted::escaped(value));
    }
    out.into_bytes()
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
