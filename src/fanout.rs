//! One bounded fan-out for every job the run does in parallel (IMDS reads, secret reads,
//! staging files, syncing directories): at most a fixed number of threads, results in the
//! order of the items, and a thread that cannot be started is an error, not an abort.
//!
//! Panic policy: a job's panic is re-raised in the caller, with its own payload, once every
//! other thread has stopped. A panic is a bug of vaultboot, not a condition of the run: the
//! release binary is built with `panic = "abort"`, so it never gets here at all, and in tests
//! and debug builds turning it into a run error would disguise the bug as, say, an exit 69
//! that a test expecting a failure would accept.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::thread;

/// No thread could be started for a fan-out (the process or user is at its thread limit,
/// or memory for a stack is short). No job of the fan-out ran.
#[derive(Debug)]
pub struct SpawnError {
    /// What the threads were for ("secret reads").
    pub what: &'static str,
    pub wanted: usize,
    pub source: io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot start the {} threads for the {}: {}",
            self.wanted, self.what, self.source
        )
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A fan-out of at most `max_threads` threads named `name` (shown in /proc and by debuggers).
pub struct Fanout {
    what: &'static str,
    name: &'static str,
    max_threads: usize,
    /// Only tests set it: a stack no system can give makes the spawn fail on demand.
    stack_size: Option<usize>,
}

impl Fanout {
    pub const fn new(what: &'static str, name: &'static str, max_threads: usize) -> Fanout {
        Fanout {
            what,
            name,
            max_threads,
            stack_size: None,
        }
    }

    /// `job` applied to every item, the results in the items' order. Up to `max_threads`
    /// threads take the items one at a time; one item (or a cap of 1) runs on the caller's
    /// thread. The jobs start only once every thread is started, so a failed start runs no job
    /// at all: nothing to cancel or undo.
    pub fn map<'a, T, R, F>(&self, items: &'a [T], job: F) -> Result<Vec<R>, SpawnError>
    where
        T: Sync,
        R: Send,
        F: Fn(&'a T) -> R + Sync,
    {
        let threads = self.max_threads.max(1).min(items.len());
        if threads <= 1 {
            return Ok(items.iter().map(job).collect());
        }
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let go = AtomicBool::new(false);
        let gate = RwLock::new(());
        let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
        let panicked = Mutex::new(None);
        let worker = || {
            // Waits here until every thread is started (or one failed to start).
            drop(gate.read().unwrap_or_else(|p| p.into_inner()));
            if !go.load(Ordering::SeqCst) {
                return;
            }
            while !stop.load(Ordering::SeqCst) {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                match panic::catch_unwind(AssertUnwindSafe(|| job(item))) {
                    Ok(r) => *lock(&results[i]) = Some(r),
                    Err(payload) => {
                        stop.store(true, Ordering::SeqCst);
                        lock(&panicked).get_or_insert(payload);
                    }
                }
            }
        };
        let started = thread::scope(|scope| {
            let held = gate.write().unwrap_or_else(|p| p.into_inner());
            for _ in 0..threads {
                if let Err(source) = self.builder().spawn_scoped(scope, worker) {
                    drop(held);
                    return Err(source);
                }
            }
            go.store(true, Ordering::SeqCst);
            drop(held);
            Ok(())
        });
        if let Some(payload) = lock(&panicked).take() {
            panic::resume_unwind(payload);
        }
        started.map_err(|source| SpawnError {
            what: self.what,
            wanted: threads,
            source,
        })?;
        Ok(results
            .into_iter()
            .map(|slot| {
                let r = slot.into_inner().unwrap_or_else(|p| p.into_inner());
                r.expect("every item ran: no job panicked and no thread failed to start")
            })
            .collect())
    }

    fn builder(&self) -> thread::Builder {
        let builder = thread::Builder::new().name(self.name.into());
        match self.stack_size {
            Some(size) => builder.stack_size(size),
            None => builder,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u64> = (0..12).collect();
        // The first items take longest, so they finish last.
        let out = Fanout::new("test", "t", 4)
            .map(&items, |&i| {
                thread::sleep(Duration::from_millis(5 * (12 - i)));
                i * 10
            })
            .unwrap();
        assert_eq!(out, (0..12).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn at_most_max_threads_run_at_once() {
        let alive = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let ids = Mutex::new(std::collections::HashSet::new());
        let items: Vec<usize> = (0..40).collect();
        let out = Fanout::new("test", "t", 3)
            .map(&items, |&i| {
                let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                lock(&ids).insert(thread::current().id());
                thread::sleep(Duration::from_millis(10));
                alive.fetch_sub(1, Ordering::SeqCst);
                i
            })
            .unwrap();
        assert_eq!(out, items);
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 3, "{most} jobs ran at once");
        let threads = lock(&ids).len();
        assert!(threads <= 3, "{threads} threads ran jobs");
        assert!(!lock(&ids).contains(&thread::current().id()));
    }

    #[test]
    fn one_item_runs_on_the_callers_thread() {
        let me = thread::current().id();
        let out = Fanout::new("test", "t", 8)
            .map(&[1], |_| thread::current().id())
            .unwrap();
        assert_eq!(out, [me]);
    }

    #[test]
    fn a_thread_that_cannot_start_is_an_error_and_no_job_runs() {
        let ran = AtomicUsize::new(0);
        let mut fanout = Fanout::new("secret reads", "t", 4);
        // No system gives a thread a stack of 2^50 bytes (the address space is 2^47).
        fanout.stack_size = Some(1 << 50);
        let e = fanout
            .map(&[1, 2, 3], |_| ran.fetch_add(1, Ordering::SeqCst))
            .unwrap_err();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(e.wanted, 3);
        let shown = e.to_string();
        assert!(
            shown.starts_with("cannot start the 3 threads for the secret reads: "),
            "{shown}"
        );
    }

    #[test]
    fn a_panic_is_raised_again_in_the_caller_after_the_others_stop() {
        let items: Vec<usize> = (0..20).collect();
        let caught = panic::catch_unwind(|| {
            Fanout::new("test", "t", 4).map(&items, |&i| {
                if i == 5 {
                    panic!("job 5 failed");
                }
                i
            })
        });
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"job 5 failed"));
    }
}
