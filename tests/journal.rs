//! When stderr is the journal (systemd's JOURNAL_STREAM names its device and inode), every line
//! starts with its syslog priority, which journald stores as the line's priority: so
//! `journalctl -p warning -u vaultboot` shows exactly the warnings and errors. Anywhere else the
//! lines are plain.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Runs `vaultboot run` with stderr on a file that JOURNAL_STREAM names (when `journal`), or
/// names something else; what it wrote there.
fn run_with_stderr_file(env: &Env, config: &Path, journal: bool) -> (i32, String) {
    let path = env.path("stderr.stream");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let stream = if journal {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        format!("{}:{}", meta.dev(), meta.ino() + 1)
    };
    let status = vaultboot_command()
        .args(["run", "--config", config.to_str().unwrap()])
        .env("JOURNAL_STREAM", stream)
        .env_remove("VAULTBOOT_SYSLOG_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    (status.code().unwrap_or(-1), text)
}

/// Each line's priority agrees with what it says: `<3>` errors, `<4>` warnings, `<6>` the rest.
fn assert_prioritised(text: &str) {
    for line in text.lines() {
        let ok = match line.get(..3) {
            Some("<3>") => line[3..].starts_with("vaultboot: error: "),
            Some("<4>") => line[3..].starts_with("vaultboot: warning: "),
            Some("<6>") => {
                line[3..].starts_with("vaultboot: ")
                    && !line[3..].starts_with("vaultboot: warning: ")
                    && !line[3..].starts_with("vaultboot: error: ")
            }
            _ => false,
        };
        assert!(ok, "line without its priority: {line:?}\n{text}");
    }
}

#[test]
fn on_the_journal_every_line_carries_its_priority() {
    let env = Env::new();
    // A failing on_change: a warning in an otherwise good run.
    let config = env.write(&env.config().file(".json", "on_change", ["/bin/false"]));
    let (status, out) = run_with_stderr_file(&env, &config, true);
    assert_eq!(status, 0, "{out}");
    assert_prioritised(&out);
    assert!(
        out.lines().any(|l| l.starts_with("<6>vaultboot: done: ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("<4>vaultboot: warning: on_change [\"/bin/false\"] failed")),
        "{out}"
    );

    // A failed run: its error lines.
    let config = env.write(&env.config().set("vault", "nope", 1));
    let (status, out) = run_with_stderr_file(&env, &config, true);
    assert_eq!(status, 78, "{out}");
    assert_prioritised(&out);
    assert!(
        out.lines()
            .any(|l| l.starts_with("<3>vaultboot: error: configuration")),
        "{out}"
    );
}

#[test]
fn elsewhere_lines_are_plain() {
    let env = Env::new();
    let config = env.write_config(&env.full_config());
    let (status, out) = run_with_stderr_file(&env, &config, false);
    assert_eq!(status, 0, "{out}");
    assert!(!out.is_empty());
    assert!(out.lines().all(|l| l.starts_with("vaultboot: ")), "{out}");
}

/// A metadata value that holds a newline and a priority (`<3>`) is refused, and the error that
/// quotes it stays one line: no forged line reaches the journal, with its priority or without.
#[test]
fn a_metadata_value_cannot_forge_a_journal_line() {
    let env = Env::new();
    let mut doc: serde_json::Value = serde_json::from_str(
        &vaultboot_sim::Identity::sample(INSTANCE).document("2024-01-01T00:00:00Z"),
    )
    .unwrap();
    doc["region"] = "us-east-1\n<3>vaultboot: error: FORGED\r\n<6>vaultboot: done: FORGED".into();
    let body = doc.to_string();
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    env.imds.control().inject(
        Some("GET"),
        "/latest/dynamic/instance-identity/document",
        vaultboot_sim::Fault::Raw(answer.into_bytes()),
        1,
    );
    let config = env.write_config(&env.full_config());
    let (status, out) = run_with_stderr_file(&env, &config, true);
    assert_eq!(status, 65, "{out}");
    assert_prioritised(&out);
    let forged: Vec<&str> = out.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(forged.len(), 1, "{out}");
    assert!(
        forged[0].starts_with("<3>vaultboot: error: IMDS /latest/dynamic/instance-identity/document: region \"us-east-1\\n<3>"),
        "{out}"
    );
    assert!(!out.contains('\r'), "{out}");
}
