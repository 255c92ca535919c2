//! Stop signals: SIGTERM (`systemctl stop`, systemd's TimeoutStartSec, a shutdown) and SIGINT.
//!
//! The crate has no `unsafe` code, so no signal handler: both signals are blocked before the
//! first thread starts (every thread inherits the mask, and `std::process::Command` clears it
//! for the commands we start) and one thread takes them with sigwait(2). It raises a flag that
//! every step of a run looks at (retry loops and their back-off, the state lock's wait,
//! staging, the on_change commands), then calls the run's `on_stop`, which revokes the token
//! and, when the run cannot come back on its own (an answer in flight), ends the process.

use nix::sys::signal::{SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The signal that asked the run to stop, 0 before one came.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static FINISHED: Mutex<bool> = Mutex::new(false);
static FINISHED_CHANGED: Condvar = Condvar::new();
/// Held while files are staged and renamed: a process that ends on a stop takes it first, so
/// that it never ends in the middle of a commit.
static FILES: Mutex<()> = Mutex::new(());

/// Blocks SIGTERM and SIGINT in this thread (and so in every thread it starts from now on:
/// call it before the first) and starts the thread that waits for them and calls `on_stop`
/// with the signal's name once, for the first of them.
pub fn listen(on_stop: impl FnOnce(&'static str) + Send + 'static) -> Result<(), String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|e| format!("cannot block SIGTERM and SIGINT: {e}"))?;
    let waiting = std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || {
            let Ok(signal) = set.wait() else {
                return;
            };
            SIGNAL.store(signal as i32, Ordering::SeqCst);
            on_stop(signal.as_str());
        });
    match waiting {
        Ok(_) => Ok(()),
        Err(e) => {
            // Without the waiting thread, blocked signals would never be taken: the default
            // action (the end of the process) is better than a run that cannot be stopped.
            let _ = set.thread_unblock();
            Err(format!("cannot start the thread that waits for them: {e}"))
        }
    }
}

/// The name of the signal that asked the run to stop, once one came.
pub fn requested() -> Option<&'static str> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok().map(Signal::as_str),
    }
}

/// The run is over (its result logged and recorded): a stop from now on has nothing to cut.
pub fn finished() {
    *FINISHED.lock().unwrap_or_else(PoisonError::into_inner) = true;
    FINISHED_CHANGED.notify_all();
}

/// Waits until the run is over or `until`; whether it is over.
pub fn wait_finished(until: Instant) -> bool {
    let mut done = FINISHED.lock().unwrap_or_else(PoisonError::into_inner);
    while !*done {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return false;
        };
        done = FINISHED_CHANGED
            .wait_timeout(done, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

/// The files section: staging and the commit hold it; whoever ends the process takes it first.
pub fn files() -> MutexGuard<'static, ()> {
    FILES.lock().unwrap_or_else(PoisonError::into_inner)
}
