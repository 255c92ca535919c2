//! Connections opened ahead of the requests (`Client::open_ahead`, `Client::warm_up`), through
//! ureq's public API. ureq's pool hands a connection to a request only once a whole earlier
//! request came back on it, a round trip after it opened, and the login is ready sooner (IMDS
//! is read meanwhile). So the login itself is opened ahead: its request starts at once, ureq
//! connects and sends the head, and the body (so the request) is completed when the login is
//! sent. The other connections carry cheap requests, back in the pool before the login's
//! answer; a request that needs a connection while they are under way waits for them.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ureq::http;
use zeroize::Zeroizing;

/// Longest wait for the body of a request opened ahead: a server may close a connection whose
/// request does not come (Vault's `http_read_timeout` is 30 s); past it, the request is given up
/// and the login opens its own connection.
const BODY_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for the warm-up's requests before a request opens a connection of its own.
const WARM_WAIT: Duration = Duration::from_secs(2);

type Answer = Result<http::Response<ureq::Body>, ureq::Error>;

/// Where the request opened ahead stands: its body and its answer pass through here.
enum State {
    /// Connected (or connecting), waiting for its body.
    Waiting,
    Body(Zeroizing<Vec<u8>>),
    Sending,
    Answered(Answer),
    /// No body came in time, or it failed before it needed one: `send` sends on its own.
    GivenUp,
}

#[derive(Default)]
struct Exchange {
    state: Mutex<Option<State>>,
    changed: Condvar,
}

impl Exchange {
    fn lock(&self) -> MutexGuard<'_, Option<State>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while `busy` says so, for at most `wait`.
    fn wait_while<'a>(
        &self,
        mut state: MutexGuard<'a, Option<State>>,
        wait: Duration,
        busy: fn(&State) -> bool,
    ) -> MutexGuard<'a, Option<State>> {
        let until = Instant::now() + wait;
        while state.as_ref().is_some_and(busy) {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state
    }

    fn set(&self, state: &mut Option<State>, to: State) {
        *state = Some(to);
        self.changed.notify_all();
    }
}

/// The request opened ahead: what it is, and where its body goes and its answer comes from.
pub(super) struct Opened {
    key: (http::Method, String, Vec<(String, String)>),
    exchange: Arc<Exchange>,
}

impl Opened {
    /// Starts `request` (to `path`, with `headers`) on a thread of its own, its body to come
    /// within `BODY_WAIT` (at most half of `timeout`, the request's whole budget).
    pub(super) fn start(
        agent: &ureq::Agent,
        request: http::request::Builder,
        (path, headers): (&str, &[(&str, &str)]),
        timeout: Duration,
    ) -> Option<Opened> {
        let key = (
            request.method_ref()?.clone(),
            path.to_string(),
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
        let exchange = Arc::new(Exchange::default());
        *exchange.lock() = Some(State::Waiting);
        let reader = Handed {
            exchange: exchange.clone(),
            wait: BODY_WAIT.min(timeout / 2),
            body: None,
        };
        let (agent, shared) = (agent.clone(), exchange.clone());
        let run = move || {
            // Built here: a body read from elsewhere cannot move between threads.
            let request = request.body(ureq::SendBody::from_owned_reader(reader));
            let answer = request
                .map_err(ureq::Error::Http)
                .and_then(|r| agent.run(r));
            let mut state = shared.lock();
            let to = match *state {
                Some(State::Sending) => State::Answered(answer),
                _ => State::GivenUp,
            };
            shared.set(&mut state, to);
        };
        let spawned = std::thread::Builder::new()
            .name("vault-ahead".into())
            .spawn(run);
        spawned.ok().map(|_| Opened { key, exchange })
    }

    pub(super) fn is(&self, method: &http::Method, path: &str, headers: &[(&str, &str)]) -> bool {
        let same = |(n, v): (&(String, String), &(&str, &str))| n.0 == v.0 && n.1 == v.1;
        self.key.0 == method
            && self.key.1 == path
            && self.key.2.len() == headers.len()
            && self.key.2.iter().zip(headers).all(same)
    }

    /// Completes the request with `body`: its answer, or `None` when it was given up before.
    pub(super) fn send(self, body: &[u8], time_left: Duration) -> Option<Answer> {
        let mut state = self.exchange.lock();
        if !matches!(*state, Some(State::Waiting)) {
            return None;
        }
        self.exchange
            .set(&mut state, State::Body(Zeroizing::new(body.to_vec())));
        let busy = |s: &State| matches!(s, State::Body(_) | State::Sending);
        let mut state = self.exchange.wait_while(state, time_left, busy);
        match state.take() {
            Some(State::Answered(answer)) => Some(answer),
            Some(State::GivenUp) => None,
            _ => Some(Err(ureq::Error::Timeout(ureq::Timeout::Global))),
        }
    }
}

/// The body of a request opened ahead, as `send` hands it over; wiped once sent.
struct Handed {
    exchange: Arc<Exchange>,
    wait: Duration,
    body: Option<(Zeroizing<Vec<u8>>, usize)>,
}

impl Handed {
    fn body(&self) -> Option<Zeroizing<Vec<u8>>> {
        let state = self.exchange.lock();
        let waiting = |s: &State| matches!(s, State::Waiting);
        let mut state = self.exchange.wait_while(state, self.wait, waiting);
        match state.take() {
            Some(State::Body(body)) => {
                *state = Some(State::Sending);
                Some(body)
            }
            // Given up: ureq abandons the request, and the connection with it.
            _ => {
                self.exchange.set(&mut state, State::GivenUp);
                None
            }
        }
    }
}

impl Read for Handed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.body.is_none() {
            let body = self.body().ok_or(std::io::ErrorKind::TimedOut)?;
            self.body = Some((body, 0));
        }
        let (body, at) = self.body.as_mut().expect("set above");
        let n = buf.len().min(body.len() - *at);
        buf[..n].copy_from_slice(&body[*at..*at + n]);
        *at += n;
        Ok(n)
    }
}

/// How many warm-up requests are under way.
#[derive(Default)]
pub(super) struct Warming {
    count: Mutex<usize>,
    done: Condvar,
}

impl Warming {
    pub(super) fn started(&self, n: usize) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += n;
    }

    pub(super) fn finished(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.done.notify_all();
    }

    /// Until no warm-up is under way, for at most `WARM_WAIT` or `time_left`.
    pub(super) fn wait(&self, time_left: Duration) {
        let until = Instant::now() + WARM_WAIT.min(time_left);
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return;
            };
            let waited = self.done.wait_timeout(count, left);
            count = waited.unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// The shared state of a client's connections opened ahead.
#[derive(Default)]
pub(super) struct Ahead {
    pub opened: Mutex<Option<Opened>>,
    pub warming: Warming,
}

impl Ahead {
    /// The request opened ahead, if it is this one (and it is then no longer there).
    pub(super) fn take(
        &self,
        method: &http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<Opened> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        match &*opened {
            Some(o) if o.is(method, path, headers) => opened.take(),
            _ => None,
        }
    }
}
