//! Process hardening applied before any secret is read: private umask, no core dumps, and no
//! inherited descriptor passed on to the commands we start.

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::resource::{setrlimit, Resource};

/// umask 077, RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (which also keeps other users' ptrace and
/// /proc/<pid>/mem out), and close-on-exec on every descriptor inherited beyond stdin, stdout
/// and stderr. Returns what could not be applied.
pub fn harden() -> Vec<String> {
    let mut problems = Vec::new();
    // Nothing we create is readable by others, whatever mode a creation asks for.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        problems.push(format!("cannot disable core dumps (RLIMIT_CORE): {e}"));
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        problems.push(format!("cannot clear the dumpable flag: {e}"));
    }
    if let Err(e) = cloexec_inherited() {
        problems.push(format!("cannot list inherited descriptors: {e}"));
    }
    problems
}

/// Whatever started us may have left descriptors open (a pipe, a socket, a file): an on_change
/// command must not get them. Ours are all opened close-on-exec already.
fn cloexec_inherited() -> std::io::Result<()> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // The directory listing's own descriptor is gone by now: EBADF, ignored.
        let _ = fcntl(borrow_inherited(fd), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    Ok(())
}

/// The crate's one `unsafe`: a descriptor we did not open has no owner in Rust's types, and
/// nix's `fcntl` takes a borrowed one.
#[allow(unsafe_code)]
fn borrow_inherited(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used for one fcntl at start-up, before any thread exists and before anything
    // could close it; an fd that is not open (the listing's own) only makes fcntl fail (EBADF).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
