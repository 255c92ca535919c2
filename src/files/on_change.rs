//! Running the on_change commands of the outputs a commit changed: each distinct argv once, no
//! shell, an empty environment but PATH, bounded in time.

use super::Output;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PATH given to on_change commands: their environment is otherwise empty.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// An on_change command running longer than this is killed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Result of one on_change command.
pub struct Ran {
    pub argv: Vec<String>,
    pub result: Result<(), String>,
    pub took: Duration,
}

/// Runs each distinct on_change argv of the written outputs once, in order: no shell, an empty
/// environment but PATH, stdin from /dev/null.
pub fn run_on_change(written: &[&Output]) -> Vec<Ran> {
    let mut seen = BTreeSet::new();
    let mut ran = Vec::new();
    for output in written {
        let Some(argv) = &output.on_change else {
            continue;
        };
        if !seen.insert(argv.clone()) {
            continue;
        }
        let start = Instant::now();
        let result = run_child(argv);
        ran.push(Ran {
            argv: argv.clone(),
            result,
            took: start.elapsed(),
        });
    }
    ran
}

fn run_child(argv: &[String]) -> Result<(), String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", CHILD_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .current_dir("/")
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let start = Instant::now();
    // Polled from 1 ms up to every 20 ms: a quick reload is not charged a whole 20 ms.
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if start.elapsed() > CHILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {}s", CHILD_TIMEOUT.as_secs()));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
    }
}
