//! The login opened ahead (`Client::open_ahead`), through ureq's public API. ureq's pool hands
//! out a connection only once a whole answer came back on it, a round trip after it opened, and
//! the login is ready sooner (IMDS is read and the nonce stored meanwhile). So the login starts
//! at once on a thread of its own: ureq connects and sends its head, and the body (chunked)
//! follows once `send` hands it over.

use std::io::{Cursor, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use ureq::http;
use zeroize::Zeroizing;

/// Longest wait for the body: a server closes a connection whose request does not come
/// (Vault's `http_read_timeout` is 30 s). Past it the request is given up, its connection
/// closed, and `send` sends the login as any other request.
const BODY_WAIT: Duration = Duration::from_secs(5);

type Answer = Result<http::Response<ureq::Body>, ureq::Error>;
type Body = Zeroizing<Vec<u8>>;

pub(super) struct Opened {
    path: String,
    body: SyncSender<Body>,
    answer: Receiver<Answer>,
}

impl Opened {
    /// Starts `request` (to `path`), its body awaited for `BODY_WAIT`, at most half of
    /// `timeout` (the request's whole budget, which runs from now).
    pub(super) fn start(
        agent: &ureq::Agent,
        request: http::Request<&'static [u8]>,
        path: &str,
        timeout: Duration,
    ) -> Option<Opened> {
        let ((body, handed), (answered, answer)) = (sync_channel(1), sync_channel(1));
        let reader = Handed(handed, BODY_WAIT.min(timeout / 2), None);
        let agent = agent.clone();
        let run = move || {
            // Built here: a body read from elsewhere cannot move between threads.
            let request = request.map(|_| ureq::SendBody::from_owned_reader(reader));
            drop(answered.send(agent.run(request)));
        };
        let spawned = std::thread::Builder::new()
            .name("vault-ahead".into())
            .spawn(run);
        spawned.ok().map(|_| Opened {
            path: path.into(),
            body,
            answer,
        })
    }

    /// Completes the request with `body`: its answer, or `None` when it was given up (or
    /// failed) before it read its body.
    pub(super) fn send(self, body: &[u8], time_left: Duration) -> Option<Answer> {
        self.body.send(Zeroizing::new(body.to_vec())).ok()?;
        let answer = self.answer.recv_timeout(time_left);
        Some(answer.unwrap_or(Err(ureq::Error::Timeout(ureq::Timeout::Global))))
    }
}

/// The request opened ahead, when this is the one (a POST to its path, no sensitive header).
pub(super) fn take(
    slot: &Mutex<Option<Opened>>,
    method: &http::Method,
    path: &str,
    plain: bool,
) -> Option<Opened> {
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    let this = slot.as_ref().is_some_and(|o| o.path == path);
    slot.take_if(|_| this && plain && method == http::Method::POST)
}

/// The body of the request opened ahead, as `send` hands it over; wiped once sent.
struct Handed(Receiver<Body>, Duration, Option<Cursor<Body>>);

impl Read for Handed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.2.is_none() {
            // Given up: the receiver is dropped, ureq abandons the request and its connection.
            let body = self.0.recv_timeout(self.1);
            self.2 = Some(Cursor::new(body.map_err(|_| std::io::ErrorKind::TimedOut)?));
        }
        self.2.as_mut().map_or(Ok(0), |body| body.read(buf))
    }
}
