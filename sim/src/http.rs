//! A small HTTP/1.1 server core shared by both simulators: keep-alive, Content-Length and chunked
//! request bodies, bounded sizes, optional TLS (rustls), fault injection and request recording.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A `Fault::Hang` holds the connection at most this long.
const HANG_MAX: Duration = Duration::from_secs(60);

/// What to do to a request instead of answering it normally.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status (with an optional `Retry-After` header and this body) instead.
    Status {
        code: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// Close the socket right after reading the request (with SO_LINGER 0: a TCP RST).
    ResetConnection,
    /// Read the request and never answer (the socket stays open until shutdown or ~60 s).
    Hang,
    /// Sleep, then answer normally.
    Delay(Duration),
    /// Write these bytes as the whole response, then close.
    Raw(Vec<u8>),
    /// 200 without Content-Length, streaming bytes until the client disconnects.
    EndlessBody,
    /// A redirect with this status and `Location`, no body, the connection kept open: what a
    /// Vault standby answers during a cluster's election (307 to the dead active node).
    Redirect { code: u16, location: String },
    /// Held before the simulator handles it (Vault has not seen it) until the test opens the
    /// gate: `Gate::release` hands it on (the answer goes to whoever is still listening),
    /// `Gate::reset` drops it unhandled with a TCP RST. Pins the client in one step for as
    /// long as the test needs, whatever the machine's load.
    Hold(Gate),
    /// Handled (Vault has acted on it) and its answer held until the test opens the gate.
    HoldAnswer(Gate),
}

/// What the test decided for a held request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opened {
    Release,
    Reset,
}

#[derive(Debug, Default)]
struct GateState {
    held: bool,
    opened: Option<Opened>,
    done: bool,
}

/// The test's side of `Fault::Hold` / `Fault::HoldAnswer`: one request, held until opened.
/// Cheap to clone; a gate opened before its request arrives lets it through at once.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    inner: Arc<(Mutex<GateState>, Condvar)>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Whether a request is being held (or was, and has since been let go).
    pub fn is_held(&self) -> bool {
        self.inner.0.lock().unwrap().held
    }

    /// Waits until a request is held or `timeout` passed; returns whether one is.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.held)
    }

    /// Lets the held request go on (handled, or its answer written).
    pub fn release(&self) {
        self.open(Opened::Release);
    }

    /// Drops the held request with a TCP RST, unhandled when held by `Fault::Hold`.
    pub fn reset(&self) {
        self.open(Opened::Reset);
    }

    /// Waits until a request let go has been handled and answered (or reset), or `timeout`
    /// passed; true at once when no request was ever held. Returns whether it is done.
    pub fn wait_done(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| !s.held || s.done)
    }

    fn open(&self, how: Opened) {
        let (m, cv) = &*self.inner;
        m.lock().unwrap().opened.get_or_insert(how);
        cv.notify_all();
    }

    fn wait_until(&self, timeout: Duration, ok: impl Fn(&GateState) -> bool) -> bool {
        let (m, cv) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap();
        while !ok(&g) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
        true
    }

    /// The server's side: marks the request held and waits until the test opens the gate or
    /// the simulator shuts down (then `None`).
    fn hold(&self, control: &Control) -> Option<Opened> {
        let (m, cv) = &*self.inner;
        let mut g = m.lock().unwrap();
        g.held = true;
        cv.notify_all();
        loop {
            if let Some(how) = g.opened {
                return Some(how);
            }
            if control.is_shut_down() {
                return None;
            }
            // Polled for shutdown, which signals another condition variable.
            g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
    }

    fn finished(&self) {
        let (m, cv) = &*self.inner;
        m.lock().unwrap().done = true;
        cv.notify_all();
    }
}

impl Fault {
    /// Convenience: a status fault with a JSON `{"errors":[msg]}` body.
    pub fn status(code: u16, msg: &str) -> Fault {
        Fault::Status {
            code,
            retry_after: None,
            body: serde_json::json!({ "errors": [msg] }).to_string(),
        }
    }
}

/// One request as the simulator saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Which TCP connection (1-based, in accept order, per simulator) carried it.
    pub conn_id: u64,
    pub method: String,
    /// Request target, query included.
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Status answered; 0 when the connection was reset or hung (or a raw answer had no status).
    pub status: u16,
    /// When the request (its head) had been read.
    pub at: Instant,
}

impl RecordedRequest {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

struct FaultRule {
    method: Option<String>,
    prefix: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Default)]
struct ControlInner {
    faults: Mutex<Vec<FaultRule>>,
    requests: Mutex<Vec<RecordedRequest>>,
    requests_cv: Condvar,
    latency: Mutex<(Duration, Duration)>,
    connections: AtomicU64,
    full_handshakes: AtomicU64,
    resumed_handshakes: AtomicU64,
    failed_handshakes: AtomicU64,
    /// Requests between their head being read and their answer written, now and at most.
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
    shutdown: AtomicBool,
    shutdown_lock: Mutex<()>,
    shutdown_cv: Condvar,
}

/// Fault injection, latency and recording for one simulator. Cheap to clone (an `Arc` inside).
#[derive(Clone, Default)]
pub struct Control {
    inner: Arc<ControlInner>,
}

impl Control {
    pub(crate) fn new() -> Control {
        Control::default()
    }

    /// The next `times` requests whose method matches (`None` = any) and whose path starts with
    /// `path_prefix` get `fault`. Rules are tried in the order they were added.
    pub fn inject(&self, method: Option<&str>, path_prefix: &str, fault: Fault, times: usize) {
        self.inner.faults.lock().unwrap().push(FaultRule {
            method: method.map(|m| m.to_ascii_uppercase()),
            prefix: path_prefix.to_string(),
            fault,
            remaining: times,
        });
    }

    /// Drop every pending fault.
    pub fn clear_faults(&self) {
        self.inner.faults.lock().unwrap().clear();
    }

    /// How many injected faults are still pending (summed over rules).
    pub fn pending_faults(&self) -> usize {
        self.inner
            .faults
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.remaining)
            .sum()
    }

    /// `per_request` is slept before every answer; `per_connection` once per new TCP connection,
    /// before the TLS handshake / first read.
    pub fn set_latency(&self, per_request: Duration, per_connection: Duration) {
        *self.inner.latency.lock().unwrap() = (per_request, per_connection);
    }

    /// Every request seen so far (faulted ones too), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Forget the recorded requests (counters are kept).
    pub fn clear_requests(&self) {
        self.inner.requests.lock().unwrap().clear();
    }

    /// Wait until at least `n` requests were recorded, or `timeout` passed; returns the count.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut reqs = self.inner.requests.lock().unwrap();
        while reqs.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            reqs = self
                .inner
                .requests_cv
                .wait_timeout(reqs, deadline - now)
                .unwrap()
                .0;
        }
        reqs.len()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes: (full, resumed). Always (0, 0) for plain HTTP.
    pub fn tls_handshakes(&self) -> (u64, u64) {
        (
            self.inner.full_handshakes.load(Ordering::SeqCst),
            self.inner.resumed_handshakes.load(Ordering::SeqCst),
        )
    }

    /// The most requests this simulator was handling at once (from the request's head read to
    /// its answer written, latency included) since it started or `reset_most_in_flight`.
    pub fn most_in_flight(&self) -> u64 {
        self.inner.most_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_most_in_flight(&self) {
        self.inner.most_in_flight.store(0, Ordering::SeqCst);
    }

    /// TLS handshakes that failed (e.g. the client did not trust the certificate).
    pub fn tls_failures(&self) -> u64 {
        self.inner.failed_handshakes.load(Ordering::SeqCst)
    }

    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut faults = self.inner.faults.lock().unwrap();
        let idx = faults.iter().position(|r| {
            r.remaining > 0
                && r.method.as_deref().is_none_or(|m| m == method)
                && path.starts_with(&r.prefix)
        })?;
        faults[idx].remaining -= 1;
        let fault = faults[idx].fault.clone();
        if faults[idx].remaining == 0 {
            faults.remove(idx);
        }
        Some(fault)
    }

    fn record(&self, r: RecordedRequest) {
        self.inner.requests.lock().unwrap().push(r);
        self.inner.requests_cv.notify_all();
    }

    fn latency(&self) -> (Duration, Duration) {
        *self.inner.latency.lock().unwrap()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.inner.shutdown.load(Ordering::SeqCst)
    }

    /// Sleep `d`, waking early on shutdown. Returns false when shut down.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = self.inner.shutdown_lock.lock().unwrap();
        loop {
            if self.is_shut_down() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            g = self
                .inner
                .shutdown_cv
                .wait_timeout(g, deadline - now)
                .unwrap()
                .0;
        }
    }

    pub(crate) fn signal_shutdown(&self) {
        let _g = self.inner.shutdown_lock.lock().unwrap();
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.shutdown_cv.notify_all();
    }
}

/// A parsed request handed to a simulator's handler.
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

/// A handler's answer.
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response::new(status, "application/json", v.to_string())
    }
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: vec![],
            body: vec![],
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

pub(crate) type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// How a connection is turned into a byte stream.
#[derive(Clone)]
pub(crate) enum Transport {
    Plain,
    Tls(Arc<rustls::ServerConfig>),
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A running server: an accept thread plus one thread per connection.
pub(crate) struct Server {
    addr: SocketAddr,
    control: Control,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

impl Server {
    pub fn start(
        listener: TcpListener,
        transport: Transport,
        control: Control,
        handler: Handler,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let c2 = control.clone();
        let conns2 = conns.clone();
        let accept = std::thread::Builder::new()
            .name(format!("sim-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, transport, c2, handler, conns2))?;
        Ok(Server {
            addr,
            control,
            accept: Some(accept),
            conns,
        })
    }

    pub fn shutdown(&mut self) {
        if self.control.is_shut_down() && self.accept.is_none() {
            return;
        }
        self.control.signal_shutdown();
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for (_, s) in self.conns.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    control: Control,
    handler: Handler,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
) {
    for stream in listener.incoming() {
        if control.is_shut_down() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let conn_id = control.inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(clone) = stream.try_clone() {
            conns.lock().unwrap().insert(conn_id, clone);
        }
        let (t, c, h, cs) = (
            transport.clone(),
            control.clone(),
            handler.clone(),
            conns.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("sim-conn-{conn_id}"))
            .spawn(move || {
                serve_connection(stream, conn_id, t, &c, &h);
                cs.lock().unwrap().remove(&conn_id);
            });
        if spawned.is_err() {
            conns.lock().unwrap().remove(&conn_id);
        }
    }
}

/// A held request dropped: the client sees a TCP RST, the test that the gate is done.
fn reset_held(raw: &TcpStream, gate: &Gate) {
    set_linger_zero(raw);
    let _ = raw.shutdown(Shutdown::Both);
    gate.finished();
}

fn set_linger_zero(s: &TcpStream) {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid fd, valid pointer and size for SO_LINGER.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &l as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
}

fn serve_connection(
    tcp: TcpStream,
    conn_id: u64,
    transport: Transport,
    control: &Control,
    handler: &Handler,
) {
    let (_, per_conn) = control.latency();
    if !per_conn.is_zero() && !control.sleep(per_conn) {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(IDLE_TIMEOUT));
    let raw = match tcp.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    };
    let mut stream: Box<dyn Stream> = match transport {
        Transport::Plain => Box::new(tcp),
        Transport::Tls(cfg) => {
            let conn = match rustls::ServerConnection::new(cfg) {
                Ok(c) => c,
                Err(_) => return,
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                if tls.conn.complete_io(&mut tls.sock).is_err() {
                    control
                        .inner
                        .failed_handshakes
                        .fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            match tls.conn.handshake_kind() {
                Some(rustls::HandshakeKind::Resumed) => {
                    control
                        .inner
                        .resumed_handshakes
                        .fetch_add(1, Ordering::SeqCst);
                }
                _ => {
                    control.inner.full_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
            Box::new(tls)
        }
    };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if control.is_shut_down() {
            return;
        }
        let head = match read_head(&mut stream, &mut buf) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(HeadError::TooLarge) => {
                let _ = write_response(
                    &mut stream,
                    &error_json(431, "request header fields too large"),
                    true,
                );
                lingering_close(stream, &raw);
                return;
            }
            Err(HeadError::Bad) => {
                let _ = write_response(&mut stream, &error_json(400, "malformed request"), true);
                lingering_close(stream, &raw);
                return;
            }
            Err(HeadError::Io) => return,
        };
        let _in_flight = InFlight::start(control);
        let at = Instant::now();
        let body = match read_body(&mut stream, &mut buf, &head) {
            Ok(b) => b,
            Err(status) => {
                let resp = error_json(status, "request body rejected");
                control.record(RecordedRequest {
                    conn_id,
                    method: head.method.clone(),
                    path: head.path.clone(),
                    headers: head.headers.clone(),
                    body: vec![],
                    status,
                    at,
                });
                let _ = write_response(&mut stream, &resp, true);
                lingering_close(stream, &raw);
                return;
            }
        };
        let close = head.wants_close();
        let mut rec = RecordedRequest {
            conn_id,
            method: head.method.clone(),
            path: head.path.clone(),
            headers: head.headers.clone(),
            body: body.clone(),
            status: 0,
            at,
        };
        let req = Request {
            method: head.method,
            path: head.path,
            headers: head.headers,
            body,
        };
        let (per_req, _) = control.latency();
        let fault = control.take_fault(&req.method, &req.path);
        // Told when the request held by this gate has been answered.
        let done_gate = match &fault {
            Some(Fault::Hold(g) | Fault::HoldAnswer(g)) => Some(g.clone()),
            _ => None,
        };
        let answer_gate = match &fault {
            Some(Fault::HoldAnswer(g)) => Some(g.clone()),
            _ => None,
        };
        let resp = match fault {
            Some(Fault::ResetConnection) => {
                control.record(rec);
                set_linger_zero(&raw);
                let _ = raw.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Hang) => {
                control.record(rec);
                control.sleep(HANG_MAX);
                let _ = raw.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Raw(bytes)) => {
                rec.status = parse_status(&bytes);
                control.record(rec);
                if !per_req.is_zero() && !control.sleep(per_req) {
                    return;
                }
                let _ = stream.write_all(&bytes);
                let _ = stream.flush();
                drop(stream);
                let _ = raw.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::EndlessBody) => {
                rec.status = 200;
                control.record(rec);
                if !per_req.is_zero() && !control.sleep(per_req) {
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
                );
                let chunk = vec![b' '; 16 * 1024];
                let _ = stream.write_all(b"{\"data\":\"");
                while !control.is_shut_down() {
                    if stream.write_all(&chunk).is_err() || stream.flush().is_err() {
                        break;
                    }
                }
                let _ = raw.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Status {
                code,
                retry_after,
                body,
            }) => {
                let mut r = Response::new(code, "application/json", body);
                if let Some(ra) = retry_after {
                    r.headers.push(("Retry-After".into(), ra));
                }
                r
            }
            Some(Fault::Redirect { code, location }) => Response::empty(code)
                .with_header("Location", &location)
                .with_header("Cache-Control", "no-store"),
            Some(Fault::Delay(d)) => {
                if !control.sleep(d) {
                    return;
                }
                handler(&req)
            }
            Some(Fault::Hold(gate)) => {
                if gate.hold(control) != Some(Opened::Release) {
                    control.record(rec);
                    reset_held(&raw, &gate);
                    return;
                }
                handler(&req)
            }
            Some(Fault::HoldAnswer(_)) | None => handler(&req),
        };
        rec.status = resp.status;
        control.record(rec);
        if let Some(gate) = &answer_gate {
            if gate.hold(control) != Some(Opened::Release) {
                reset_held(&raw, gate);
                return;
            }
        }
        if !per_req.is_zero() && !control.sleep(per_req) {
            return;
        }
        let head_only = req.method == "HEAD";
        let r = if head_only {
            write_head_only(&mut stream, &resp, close)
        } else {
            write_response(&mut stream, &resp, close)
        };
        if let Some(gate) = done_gate {
            let _ = stream.flush();
            gate.finished();
        }
        if r.is_err() || close {
            let _ = stream.flush();
            drop(stream);
            let _ = raw.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// One request counted in `Control::most_in_flight` while it lives.
struct InFlight<'a>(&'a ControlInner);

impl InFlight<'_> {
    fn start(control: &Control) -> InFlight<'_> {
        let inner = &*control.inner;
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.most_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// After an early error answer: stop sending, then read and discard what the client is still
/// sending (bounded), so that it sees the answer instead of a reset.
fn lingering_close(mut stream: Box<dyn Stream>, raw: &TcpStream) {
    let _ = stream.flush();
    let _ = raw.shutdown(Shutdown::Write);
    let _ = raw.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16384];
    let mut left: usize = 8 * MAX_BODY;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn parse_status(bytes: &[u8]) -> u16 {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(32)]).to_string();
    let mut it = s.split_whitespace();
    match (it.next(), it.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn error_json(status: u16, msg: &str) -> Response {
    Response::json(status, &serde_json::json!({ "errors": [msg] }))
}

struct Head {
    method: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn wants_close(&self) -> bool {
        let conn = find_header(&self.headers, "connection").map(|v| v.to_ascii_lowercase());
        match conn.as_deref() {
            Some(v) if v.split(',').any(|t| t.trim() == "close") => true,
            Some(v) if v.split(',').any(|t| t.trim() == "keep-alive") => false,
            _ => self.version != "HTTP/1.1",
        }
    }
}

enum HeadError {
    TooLarge,
    Bad,
    Io,
}

/// Read one request head; `Ok(None)` on a clean EOF before any byte.
fn read_head(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> Result<Option<Head>, HeadError> {
    let mut tmp = [0u8; 8192];
    let end = loop {
        if let Some(pos) = find_subslice(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        match stream.read(&mut tmp) {
            Ok(0) => {
                return if buf.is_empty() {
                    Ok(None)
                } else {
                    Err(HeadError::Io)
                }
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Io),
        }
    };
    if end > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let head_bytes: Vec<u8> = buf.drain(..end).collect();
    let text = std::str::from_utf8(&head_bytes).map_err(|_| HeadError::Bad)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(HeadError::Bad)?;
    let mut parts = request_line.split(' ');
    let (method, path, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v), None) if !m.is_empty() && v.starts_with("HTTP/1.") => {
            (m.to_string(), p.to_string(), v.to_string())
        }
        _ => return Err(HeadError::Bad),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (n, v) = line.split_once(':').ok_or(HeadError::Bad)?;
        if n.is_empty() || n.contains(' ') {
            return Err(HeadError::Bad);
        }
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Some(Head {
        method,
        path,
        version,
        headers,
    }))
}

fn find_subslice(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn fill(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> Result<(), u16> {
    let mut tmp = [0u8; 16384];
    loop {
        match stream.read(&mut tmp) {
            Ok(0) => return Err(400),
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(400),
        }
    }
}

fn read_body(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>, head: &Head) -> Result<Vec<u8>, u16> {
    let te = find_header(&head.headers, "transfer-encoding").map(|v| v.to_ascii_lowercase());
    if let Some(te) = te {
        if te.trim() != "chunked" {
            return Err(501);
        }
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = find_subslice(buf, b"\r\n") {
                    break p;
                }
                if buf.len() > 1024 {
                    return Err(400);
                }
                fill(stream, buf)?;
            };
            let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
            buf.drain(..line_end + 2);
            let size_str = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16).map_err(|_| 400u16)?;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let p = loop {
                        if let Some(p) = find_subslice(buf, b"\r\n") {
                            break p;
                        }
                        if buf.len() > MAX_HEAD {
                            return Err(400);
                        }
                        fill(stream, buf)?;
                    };
                    buf.drain(..p + 2);
                    if p == 0 {
                        return Ok(body);
                    }
                }
            }
            if body.len() + size > MAX_BODY {
                return Err(413);
            }
            while buf.len() < size + 2 {
                fill(stream, buf)?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    }
    let len = match find_header(&head.headers, "content-length") {
        None => 0,
        Some(v) => v.trim().parse::<usize>().map_err(|_| 400u16)?,
    };
    if len > MAX_BODY {
        return Err(413);
    }
    while buf.len() < len {
        fill(stream, buf)?;
    }
    Ok(buf.drain(..len).collect())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

fn head_bytes(resp: &Response, close: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    out.push_str(&format!("Date: {}\r\n", crate::util::http_date_now()));
    out.push_str("Server: vaultboot-sim\r\n");
    for (n, v) in &resp.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let no_body = resp.status == 204 || resp.status == 304 || (100..200).contains(&resp.status);
    if !no_body {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn write_response(stream: &mut Box<dyn Stream>, resp: &Response, close: bool) -> io::Result<()> {
    let mut out = head_bytes(resp, close);
    let no_body = resp.status == 204 || resp.status == 304;
    if !no_body {
        out.extend_from_slice(&resp.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}

fn write_head_only(stream: &mut Box<dyn Stream>, resp: &Response, close: bool) -> io::Result<()> {
    stream.write_all(&head_bytes(resp, close))?;
    stream.flush()
}
