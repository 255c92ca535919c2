//! The login opened ahead (`Client::open_ahead`), through ureq's public API. ureq's pool hands
//! out a connection only once a whole answer came back on it, a round trip after it opened, and
//! the login is ready sooner (IMDS is read and the nonce stored meanwhile). So the login starts
//! at once on a thread of its own: ureq connects and sends its head, and the body (chunked)
//! follows once `send` hands it over.

use std::io::{Cursor, ErrorKind, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use ureq::http::Request;

/// Longest wait for the body: a server closes a connection whose request does not come
/// (Vault's `http_read_timeout` is 30 s). Past it the request is given up, its connection
/// closed, and `send` sends the login as any other request.
const BODY_WAIT: Duration = Duration::from_secs(5);

/// A value that threads wait on, and what wakes them when it changes (a Mutex and a Condvar,
/// already in the binary: a channel per type costs kilobytes of code).
#[derive(Default)]
pub(super) struct Shared<T>(Mutex<T>, Condvar);

impl<T> Shared<T> {
    pub(super) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value once `busy` no longer holds, or after `wait`.
    pub(super) fn wait(&self, wait: Duration, busy: fn(&mut T) -> bool) -> MutexGuard<'_, T> {
        let waited = self.1.wait_timeout_while(self.lock(), wait, busy);
        waited.unwrap_or_else(PoisonError::into_inner).0
    }

    /// Changes the value with `change`, and wakes the threads that wait on it.
    pub(super) fn change<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        let changed = change(&mut self.lock());
        self.1.notify_all();
        changed
    }
}

/// Where the login opened ahead stands.
enum State {
    Waiting,
    /// Its body, handed over by `send`, wiped once sent.
    Body(Cursor<zeroize::Zeroizing<Vec<u8>>>),
    /// Its answer, or `None` when it was given up or failed before it read its body.
    Done(Option<super::Response>),
}

/// The login opened ahead: its path, and where it stands.
pub(super) struct Opened(pub(super) String, Arc<Shared<State>>);

impl Opened {
    /// Starts `request` on `client`, its body awaited for `BODY_WAIT`, at most half of the
    /// client's timeout (the request's whole budget, which runs from now).
    pub(super) fn start(client: &super::Client, request: Request<&'static [u8]>) -> Option<Self> {
        let state = Arc::new(Shared(Mutex::new(State::Waiting), Condvar::new()));
        let body = Handed(state.clone(), BODY_WAIT.min(client.timeout / 2));
        let (agent, mine, path) = (client.agent.clone(), state.clone(), request.uri().path());
        let path = path.to_string();
        let run = move || {
            // Built here: a body read from elsewhere cannot move between threads.
            let answer = agent.run(request.map(|_| ureq::SendBody::from_owned_reader(body)));
            let sent = |s: &State| matches!(s, State::Body(b) if b.position() > 0);
            mine.change(|s| *s = State::Done(sent(s).then_some(answer)));
        };
        let thread = std::thread::Builder::new().name("vault-ahead".into());
        thread.spawn(run).ok().map(|_| Opened(path, state))
    }

    /// Completes the request with `body`: its answer, or `None` when it was given up (or
    /// failed) before it read its body.
    pub(super) fn send(self, body: &[u8], time_left: Duration) -> Option<super::Response> {
        let body = State::Body(Cursor::new(zeroize::Zeroizing::new(body.to_vec())));
        self.1
            .change(|s| matches!(s, State::Waiting).then(|| *s = body))?;
        let mut state = self.1.wait(time_left, |s| matches!(s, State::Body(_)));
        // Not done in time: the thread's next read fails, which abandons the request.
        match std::mem::replace(&mut *state, State::Done(None)) {
            State::Done(answer) => answer,
            _ => Some(Err(ureq::Error::Timeout(ureq::Timeout::Global))),
        }
    }
}

/// The body of the request opened ahead, as `send` hands it over.
struct Handed(Arc<Shared<State>>, Duration);

impl Read for Handed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut *self.0.wait(self.1, |s| matches!(s, State::Waiting)) {
            State::Body(body) => body.read(buf),
            // Given up (or `send` gave up): ureq abandons the request and its connection, and
            // the thread's end tells a `send` that came meanwhile that nothing was sent.
            _ => Err(ErrorKind::TimedOut.into()),
        }
    }
}
