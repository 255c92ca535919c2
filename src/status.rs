//! What monitoring is told after every run: a JSON status file (`status.file`) and, when
//! configured, the same as a node_exporter textfile-collector file (`status.textfile`).
//! Neither holds a secret value: paths, names, counts, times and the run's last error line
//! (which, like every log line, names things but never holds a secret).

use crate::files;
use crate::state;
use crate::untrusted;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Larger than any status vaultboot writes: a bigger file is not ours.
const MAX_STATUS_BYTES: u64 = 1024 * 1024;

/// What happened to one output in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputState {
    /// Written (created or replaced) by this run.
    Written,
    /// Fetched, and the file already held exactly that.
    Unchanged,
    /// Not fetched: a valid certificate is in place, or a boot-only secret on a refresh.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputStatus {
    pub path: PathBuf,
    pub secret: String,
    /// A `[[secret.credential]]`'s name (absent for a file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub state: OutputState,
    /// Why it was skipped, e.g. `certificate valid until 2026-12-31T00:00:00Z`, or why a new
    /// certificate was issued for it, e.g. `the certificate in … was not issued by
    /// pki_int/issue/web (…)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its expiry goes into `certificates`.
    #[serde(skip)]
    pub holds_certificate: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertificateStatus {
    pub path: PathBuf,
    /// Unix seconds.
    pub not_after: u64,
    /// The same, RFC 3339.
    pub not_after_text: String,
}

/// The status of one run, as written to `status.file`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Unix seconds.
    pub started_at: u64,
    pub finished_at: u64,
    pub duration_ms: u64,
    /// `boot` or `refresh`.
    pub mode: String,
    /// `success` or `failure`.
    pub outcome: String,
    pub exit_status: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a run last succeeded (this one, or an earlier one as the previous status said).
    pub last_success_at: Option<u64>,
    pub outputs: Vec<OutputStatus>,
    /// Every certificate output on disk after the run, with its expiry.
    pub certificates: Vec<CertificateStatus>,
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a run takes over from the status an earlier run left.
#[derive(Debug, Deserialize)]
pub struct Previous {
    pub last_success_at: Option<u64>,
    pub certificates: Vec<PreviousCertificate>,
}

#[derive(Debug, Deserialize)]
pub struct PreviousCertificate {
    pub path: PathBuf,
}

/// The status an earlier run left at `path`, if it is there and readable: read only from a
/// checked directory, never through a symlink, never blocking on a FIFO, size-capped.
pub fn previous(path: &Path) -> Option<Previous> {
    let bytes = read_regular(path)?;
    serde_json::from_slice(&bytes).ok()
}

/// A regular file's bytes (at most `MAX_STATUS_BYTES`) from a checked directory.
fn read_regular(path: &Path) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let file = files::open_to_read(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    untrusted::read_capped(file, MAX_STATUS_BYTES).ok()
}

/// The certificates at these paths as they are on disk now (unreadable ones are left out).
/// The paths come from the configuration, never from an earlier status file alone.
pub fn certificates_on_disk<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
) -> Vec<CertificateStatus> {
    let mut found: Vec<CertificateStatus> = Vec::new();
    for path in paths {
        if found.iter().any(|c| c.path == path) {
            continue;
        }
        let Some(pem) = read_regular(path) else {
            continue;
        };
        if let Ok(cert) = crate::certificate::first_in_pem(&pem) {
            found.push(CertificateStatus {
                path: path.to_path_buf(),
                not_after: unix_seconds(cert.not_after),
                not_after_text: humantime::format_rfc3339_seconds(cert.not_after).to_string(),
            });
        }
    }
    found
}

/// Writes the status file, and the textfile when one is configured. Both are replaced
/// atomically (a reader sees the old file or the new one, never half of one), mode 0644.
pub fn write(status: &Status, file: &Path, textfile: Option<&Path>) -> Result<(), state::Error> {
    let mut json = serde_json::to_vec(status).unwrap_or_default();
    json.push(b'\n');
    publish(file, &json)?;
    if let Some(textfile) = textfile {
        publish(textfile, prometheus_text(status).as_bytes())?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` by a rename. Not synced to disk: the status describes this
/// boot's runs, a crash loses at most the last one, and a run must not wait for a disk here.
fn publish(path: &Path, bytes: &[u8]) -> Result<(), state::Error> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(state::fail(path, "is not a file path"));
    };
    // Its own directory, readable by all (monitoring runs unprivileged), created 0755 if
    // missing; checked like an output's.
    let opened = files::TrustedDir::open(dir, files::Last::Strict, files::Missing::Create(0o755))?;
    state::replace(&opened, name, bytes, 0o644, false)
}

/// One gauge of the textfile: its name, help and samples (labels, value). Values are written
/// from integers: no float formatting code in the binary for this.
type Gauge = (&'static str, &'static str, Vec<(String, String)>);

/// The node_exporter textfile-collector form (Prometheus text exposition format 0.0.4).
pub fn prometheus_text(status: &Status) -> String {
    let mut out = String::new();
    for (name, help, samples) in gauges(status) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
    out
}

fn gauges(status: &Status) -> Vec<Gauge> {
    let one = |v: u64| vec![(String::new(), v.to_string())];
    let count = |state: OutputState| {
        let n = status.outputs.iter().filter(|o| o.state == state).count();
        (
            format!("{{state=\"{}\"}}", state_name(state)),
            n.to_string(),
        )
    };
    let mut gauges: Vec<Gauge> = vec![(
        "vaultboot_last_run_timestamp_seconds",
        "When the last vaultboot run ended (Unix seconds).",
        one(status.finished_at),
    )];
    if let Some(at) = status.last_success_at {
        gauges.push((
            "vaultboot_last_success_timestamp_seconds",
            "When a vaultboot run last succeeded (Unix seconds).",
            one(at),
        ));
    }
    gauges.extend([
        (
            "vaultboot_last_exit_status",
            "Exit status of the last run (0 success, 69 unavailable, 77 refused, 78 configuration, ...).",
            one(u64::from(status.exit_status)),
        ),
        (
            "vaultboot_last_run_duration_seconds",
            "How long the last run took.",
            vec![(
                String::new(),
                format!("{}.{:03}", status.duration_ms / 1000, status.duration_ms % 1000),
            )],
        ),
        (
            "vaultboot_last_run_outputs",
            "Outputs of the last run by what happened to them.",
            [OutputState::Written, OutputState::Unchanged, OutputState::Skipped]
                .map(count)
                .to_vec(),
        ),
        (
            "vaultboot_certificate_not_after_timestamp_seconds",
            "When each certificate vaultboot wrote expires (Unix seconds).",
            status
                .certificates
                .iter()
                .map(|c| {
                    let path = label_value(&c.path.display().to_string());
                    (format!("{{path=\"{path}\"}}"), c.not_after.to_string())
                })
                .collect(),
        ),
    ]);
    gauges
}

fn state_name(state: OutputState) -> &'static str {
    match state {
        OutputState::Written => "written",
        OutputState::Unchanged => "unchanged",
        OutputState::Skipped => "skipped",
    }
}

/// A label value as the exposition format escapes it: backslash, double quote, newline.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
