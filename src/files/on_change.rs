//! Running the on_change commands of the outputs a commit changed: each distinct argv once, no
//! shell, an empty environment but PATH, each in a process group of its own that is killed
//! whole when its time is up or the run is stopped.

use super::Output;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// PATH given to on_change commands: their environment is otherwise empty.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// An on_change command running longer than this is killed, whatever time the run has left.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Result of one on_change command.
pub struct Ran {
    pub argv: Vec<String>,
    pub result: Result<(), String>,
    pub took: Duration,
}

/// What `run_on_change` did.
pub struct Commands {
    pub ran: Vec<Ran>,
    /// Commands not started: the time was up, or the run was stopped.
    pub not_started: Vec<Vec<String>>,
    /// The stop signal that cut them short, if one did.
    pub stopped: Option<&'static str>,
}

/// Each distinct on_change argv of `owed`, in order.
pub fn commands_of(owed: &[&Output]) -> Vec<Vec<String>> {
    let mut argvs: Vec<Vec<String>> = Vec::new();
    for argv in owed.iter().filter_map(|o| o.on_change.as_ref()) {
        if !argvs.contains(argv) {
            argvs.push(argv.clone());
        }
    }
    argvs
}

/// Runs `argvs` one after another: no shell, an empty environment but PATH, stdin from
/// /dev/null. Each is killed (with its process group) after CHILD_TIMEOUT or at `until`,
/// whichever comes first; one not started by `until` is not started at all. A stop signal
/// kills the one running and starts no other.
pub fn run_on_change(argvs: &[Vec<String>], until: Instant) -> Commands {
    let mut done = Commands {
        ran: Vec::new(),
        not_started: Vec::new(),
        stopped: None,
    };
    for argv in argvs {
        done.stopped = crate::stop::requested();
        if done.stopped.is_some() || Instant::now() >= until {
            done.not_started.push(argv.clone());
            continue;
        }
        let start = Instant::now();
        let result = run_child(argv, until.min(start + CHILD_TIMEOUT));
        done.ran.push(Ran {
            argv: argv.clone(),
            result,
            took: start.elapsed(),
        });
    }
    done.stopped = done.stopped.or(crate::stop::requested());
    done
}

fn run_child(argv: &[String], until: Instant) -> Result<(), String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", CHILD_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .current_dir("/")
        // Its own group: whatever it starts is killed with it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let start = Instant::now();
    // Polled from 1 ms up to every 20 ms: a quick reload is not charged a whole 20 ms.
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
        if let Some(signal) = crate::stop::requested() {
            kill_group(&mut child);
            return Err(format!("killed: vaultboot is stopping ({signal})"));
        }
        if Instant::now() >= until {
            kill_group(&mut child);
            return Err(format!(
                "killed after {} (its time was up)",
                crate::log::took(start.elapsed())
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// SIGKILL to the command's process group (it leads it), then reaps the command.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
