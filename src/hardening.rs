//! Process hardening applied before any secret is read: private umask and no core dumps.

use nix::sys::resource::{setrlimit, Resource};

/// umask 077, RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (which also keeps other users' ptrace and
/// /proc/<pid>/mem out). Returns what could not be applied.
pub fn harden() -> Vec<String> {
    let mut problems = Vec::new();
    crate::files::restrict_umask();
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        problems.push(format!("cannot disable core dumps (RLIMIT_CORE): {e}"));
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        problems.push(format!("cannot clear the dumpable flag: {e}"));
    }
    problems
}
