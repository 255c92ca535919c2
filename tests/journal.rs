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
    let text = env.full_config().replacen(
        "mode = \"0640\"",
        "mode = \"0640\"\n  on_change = [\"/bin/false\"]",
        1,
    );
    let config = env.write_config(&text);
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
    let config = env.write_config(&env.full_config().replace("[vault]", "[vault]\nnope = 1"));
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
