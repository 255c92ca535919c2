//! When stderr is the journal (systemd's JOURNAL_STREAM names its device and inode), vaultboot
//! sends its lines through journald's native socket: each with its PRIORITY, SYSLOG_IDENTIFIER,
//! the MESSAGE_ID of the event it reports (dist/systemd/vaultboot.catalog) and structured
//! fields, never a secret. When that socket does not take them, every stderr line starts with its
//! syslog priority, which journald stores as the line's priority: so `journalctl -p warning -u
//! vaultboot` shows exactly the warnings and errors either way. Anywhere else the lines are plain.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Runs `vaultboot run` with stderr on a file that JOURNAL_STREAM names (when `journal`), or
/// names something else, and no native journal socket; what it wrote there.
fn run_with_stderr_file(env: &Env, config: &Path, journal: bool) -> (i32, String) {
    let args = ["run", "--config", config.to_str().unwrap()];
    run_on_stream(env, &args, journal, &env.path("no-journal-here"))
}

/// `vaultboot ARGS` with stderr on a file that JOURNAL_STREAM names (when `journal`; else it
/// names something else) and the journal's native socket at `socket`; its status and stderr.
fn run_on_stream(env: &Env, args: &[&str], journal: bool, socket: &Path) -> (i32, String) {
    let path = env.path("stderr.stream");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let inode = if journal { meta.ino() } else { meta.ino() + 1 };
    let status = vaultboot_command()
        .args(args)
        .env("JOURNAL_STREAM", format!("{}:{inode}", meta.dev()))
        .env("VAULTBOOT_JOURNAL_SOCKET", socket)
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

// --- the native journal protocol ------------------------------------------------------------

// The MESSAGE_IDs, as dist/systemd/vaultboot.catalog documents them (an interface: alerts match
// them, so a changed id must fail here).
const STARTED: &str = "3d0f92aff9fc4266bef39708d6b8af62";
const DONE: &str = "4e88164a86054dc7916a6980bd9cea98";
const FAILED_UNAVAILABLE: &str = "5ebc5dabbf2b45339fb6a3069ea9a9cf";
const FAILED_CONFIG: &str = "0087c0c231e14614919a529ea4f7eb63";
const NEW_CERTIFICATE: &str = "be716bdc6fca49c5b097055a1cd3f7a8";
const CERTIFICATE_KEPT: &str = "e8d448ebf755417cb41357bd7c8b027c";
const TOKEN_NOT_REVOKED: &str = "cbf75f0df13b4efd9d4e81a5dbddf438";

type Entry = BTreeMap<String, String>;

/// What a run under journald sends: its exit status, its journal entries (parsed from the
/// native protocol's datagrams) and what it still wrote to stderr.
struct Journaled {
    status: i32,
    entries: Vec<Entry>,
    stderr: String,
    raw: String,
}

impl Journaled {
    fn with_id(&self, id: &str) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.get("MESSAGE_ID").map(String::as_str) == Some(id))
            .collect()
    }

    fn one(&self, id: &str) -> &Entry {
        let found = self.with_id(id);
        assert_eq!(found.len(), 1, "MESSAGE_ID {id}: {:#?}", self.entries);
        found[0]
    }
}

/// `vaultboot ARGS` with stderr on the journal stream and a journald stand-in on a datagram
/// socket of its own.
fn run_under_journald(env: &Env, args: &[&str]) -> Journaled {
    let socket_path = env.path("journal.socket");
    let _ = std::fs::remove_file(&socket_path);
    let journald = UnixDatagram::bind(&socket_path).unwrap();
    // Read while the run sends, as journald does: a datagram socket's queue is short
    // (net.unix.max_dgram_qlen), and a full one would make vaultboot give the journal up.
    let reader = journald;
    reader
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = std::sync::Arc::clone(&done);
    let collector = std::thread::spawn(move || {
        let mut datagrams = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match reader.recv(&mut buf) {
                Ok(n) => datagrams.push(String::from_utf8(buf[..n].to_vec()).unwrap()),
                Err(_) if finished.load(std::sync::atomic::Ordering::SeqCst) => return datagrams,
                Err(_) => {}
            }
        }
    });
    let (status, stderr) = run_on_stream(env, args, true, &socket_path);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let datagrams = collector.join().unwrap();
    let entries = datagrams.iter().map(|d| parse_entry(d)).collect();
    let raw = datagrams.concat();
    Journaled {
        status,
        entries,
        stderr,
        raw,
    }
}

/// One native-protocol datagram: `NAME=value` lines (the only form vaultboot sends).
fn parse_entry(datagram: &str) -> Entry {
    assert!(datagram.ends_with('\n'), "{datagram:?}");
    datagram
        .lines()
        .map(|line| {
            let (name, value) = line.split_once('=').expect(datagram);
            assert!(
                !name.is_empty()
                    && !name.starts_with('_')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "not a journal field name: {name:?} in {datagram:?}"
            );
            (name.to_string(), value.to_string())
        })
        .collect()
}

fn config_text(env: &Env, config: &common::config::Config) -> String {
    env.write(config).to_str().unwrap().to_string()
}

/// Every entry has its identity and a priority that agrees with its text; none holds a secret.
fn assert_well_formed(env: &Env, j: &Journaled) {
    assert!(
        !j.entries.is_empty(),
        "nothing sent to the journal; stderr: {}",
        j.stderr
    );
    assert_eq!(
        j.stderr, "",
        "a line went to stderr as well (twice in the journal)"
    );
    for e in &j.entries {
        assert_eq!(e["SYSLOG_IDENTIFIER"], "vaultboot", "{e:?}");
        assert_eq!(e["SYSLOG_FACILITY"], "3", "{e:?}");
        let message = &e["MESSAGE"];
        let expected = if message.starts_with("vaultboot: error: ") {
            "3"
        } else if message.starts_with("vaultboot: warning: ") {
            "4"
        } else {
            assert!(message.starts_with("vaultboot: "), "{e:?}");
            "6"
        };
        assert_eq!(e["PRIORITY"], expected, "{e:?}");
    }
    let leaks = env.find_leaks(&j.raw);
    assert!(leaks.is_empty(), "secrets in the journal: {leaks:?}");
}

#[test]
fn under_journald_a_run_reports_started_and_done_with_their_ids() {
    let env = Env::new();
    let config = config_text(&env, &env.config());
    let j = run_under_journald(&env, &["run", "--config", &config]);
    assert_eq!(j.status, 0, "{:#?}", j.entries);
    assert_well_formed(&env, &j);
    assert_eq!(j.one(STARTED)["VAULTBOOT_MODE"], "boot");
    let done = j.one(DONE);
    assert_eq!(done["VAULTBOOT_EXIT_STATUS"], "0");
    assert!(done["MESSAGE"].starts_with("vaultboot: done: "), "{done:?}");
    // Step lines carry no id: an id marks an event an operator looks up.
    assert!(j.entries.iter().any(|e| !e.contains_key("MESSAGE_ID")));

    let refresh = j_refresh(&env, &config);
    assert_eq!(refresh.one(STARTED)["VAULTBOOT_MODE"], "refresh");
    assert_eq!(refresh.one(DONE)["VAULTBOOT_MODE"], "refresh");
}

fn j_refresh(env: &Env, config: &str) -> Journaled {
    let j = run_under_journald(env, &["run", "--refresh", "--config", config]);
    assert_eq!(j.status, 0, "{:#?}", j.entries);
    assert_well_formed(env, &j);
    j
}

#[test]
fn under_journald_each_failure_has_the_id_of_its_exit_status() {
    let env = Env::new();
    // Vault that never answers: exit 69 when the (short) deadline is spent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = env
        .config()
        .set(
            "vault",
            "address",
            format!("https://127.0.0.1:{port}").as_str(),
        )
        .set("retry", "deadline", "2s");
    let j = run_under_journald(&env, &["run", "--config", &config_text(&env, &unreachable)]);
    assert_eq!(j.status, 69, "{:#?}", j.entries);
    assert_well_formed(&env, &j);
    let failed = j.one(FAILED_UNAVAILABLE);
    assert_eq!(failed["VAULTBOOT_EXIT_STATUS"], "69");
    assert_eq!(failed["PRIORITY"], "3");
    assert!(j.with_id(DONE).is_empty());

    let bad = env.config().set("vault", "nope", 1);
    let j = run_under_journald(&env, &["run", "--config", &config_text(&env, &bad)]);
    assert_eq!(j.status, 78, "{:#?}", j.entries);
    assert_well_formed(&env, &j);
    assert_eq!(j.one(FAILED_CONFIG)["VAULTBOOT_EXIT_STATUS"], "78");
    assert!(j.with_id(STARTED).is_empty(), "a run that never started");
}

#[test]
fn under_journald_a_certificate_kept_or_renewed_names_its_secret() {
    let env = Env::new();
    let config = config_text(&env, &env.config());
    assert_eq!(
        run_under_journald(&env, &["run", "--config", &config]).status,
        0
    );

    // Valid and recorded: kept, no issue.
    let j = run_under_journald(&env, &["run", "--config", &config]);
    assert_eq!(j.status, 0, "{:#?}", j.entries);
    assert_well_formed(&env, &j);
    assert_eq!(j.one(CERTIFICATE_KEPT)["VAULTBOOT_SECRET"], "tls");
    assert!(j.with_id(NEW_CERTIFICATE).is_empty());

    // renew_before beyond the lifetime: renewed on this run.
    let renewing = config_text(&env, &env.config().renew_every_run());
    let j = run_under_journald(&env, &["run", "--config", &renewing]);
    assert_eq!(j.status, 0, "{:#?}", j.entries);
    assert_well_formed(&env, &j);
    let renewed = j.one(NEW_CERTIFICATE);
    assert_eq!(renewed["VAULTBOOT_SECRET"], "tls");
    assert!(
        renewed["MESSAGE"].contains("new certificate in place"),
        "{renewed:?}"
    );
    assert!(j.with_id(CERTIFICATE_KEPT).is_empty());
}

#[test]
fn under_journald_a_token_not_revoked_gives_its_accessor_only() {
    let env = Env::new();
    env.vault.control().inject(
        Some("POST"),
        "/v1/auth/token/revoke-self",
        vaultboot_sim::Fault::Status {
            code: 403,
            retry_after: None,
            body: r#"{"errors":["permission denied"]}"#.into(),
        },
        10,
    );
    let config = config_text(&env, &env.config());
    let j = run_under_journald(&env, &["run", "--config", &config]);
    assert_eq!(j.status, 0, "{:#?}", j.entries);
    assert_well_formed(&env, &j);
    let warned = j.one(TOKEN_NOT_REVOKED);
    assert_eq!(warned["PRIORITY"], "4");
    let accessor = &warned["VAULTBOOT_TOKEN_ACCESSOR"];
    assert!(!accessor.is_empty() && warned["MESSAGE"].contains(accessor.as_str()));
}

/// A journal socket that refuses (here: nothing bound at its path any more) is given up for
/// stderr with priorities, and no line is lost.
#[test]
fn when_the_journal_socket_refuses_lines_go_to_stderr_with_priorities() {
    let env = Env::new();
    let config = config_text(&env, &env.config());
    let socket_path = env.path("journal.socket");
    // Bound then closed: the path exists, connect() is refused.
    drop(UnixDatagram::bind(&socket_path).unwrap());
    let (status, out) = run_on_stream(&env, &["run", "--config", &config], true, &socket_path);
    assert_eq!(status, 0, "{out}");
    assert_prioritised(&out);
    assert!(
        out.lines().any(|l| l.starts_with("<6>vaultboot: done: ")),
        "{out}"
    );
}

/// The catalog explains every id the agent sends, and nothing else; systemd's own parser takes it.
#[test]
fn the_catalog_has_an_entry_for_each_message_id() {
    let catalog = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd/vaultboot.catalog"),
    )
    .unwrap();
    let ids: Vec<&str> = catalog
        .lines()
        .filter_map(|l| l.strip_prefix("-- "))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "an id twice: {ids:?}");
    let sent =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/log.rs")).unwrap();
    let in_code: Vec<&str> = sent
        .split('"')
        .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(in_code.len(), 11, "{in_code:?}");
    for id in &in_code {
        assert!(ids.contains(id), "{id} has no catalog entry");
    }
    for id in &ids {
        assert!(in_code.contains(id), "catalog entry {id} for no event");
    }
    for id in [
        STARTED,
        DONE,
        FAILED_UNAVAILABLE,
        FAILED_CONFIG,
        NEW_CERTIFICATE,
        CERTIFICATE_KEPT,
        TOKEN_NOT_REVOKED,
    ] {
        assert!(ids.contains(&id), "{id}");
    }
    // journalctl's own parser, on a root of its own, when journalctl is here.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/lib/systemd/catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vaultboot.catalog"), &catalog).unwrap();
    let Ok(updated) = std::process::Command::new("journalctl")
        .arg(format!("--root={}", root.path().display()))
        .arg("--update-catalog")
        .output()
    else {
        eprintln!("journalctl not here: the catalog's syntax is checked by the packaging tests");
        return;
    };
    assert!(updated.status.success(), "{updated:?}");
    let listed = std::process::Command::new("journalctl")
        .arg(format!("--root={}", root.path().display()))
        .arg("--list-catalog")
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    for id in &ids {
        assert!(
            listed.contains(&format!("{id} vaultboot: ")),
            "{id} not parsed:\n{listed}"
        );
    }
}
