//! What can go wrong with one HTTP exchange, and how ureq's errors map to it; what can go wrong
//! setting up a Vault client.

use crate::untrusted::one_line;
use std::error::Error as StdError;
use std::fmt;
use std::io::ErrorKind;

/// What went wrong with one HTTP exchange: the URL (never with credentials), the class, and
/// what happened (for a redirect: the host it pointed at).
#[derive(Debug)]
pub struct Error {
    pub url: String,
    pub class: Class,
    pub detail: String,
}

/// The classes of HTTP failure, by what they say about the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// No connection, or it broke (refused, reset, DNS, truncated body, no answer in time):
    /// worth retrying.
    Broken,
    /// The server's certificate could not be verified: retrying cannot help.
    Untrusted,
    /// A 3xx with this status: not followed.
    Redirect(u16),
    /// An answer larger than the cap, or not HTTP as expected.
    Garbled,
}

impl Error {
    pub fn new(url: &str, class: Class, detail: String) -> Error {
        let url = url.to_string();
        Error { url, class, detail }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (url, detail) = (&self.url, &self.detail);
        match self.class {
            Class::Redirect(status) => write!(
                f,
                "{url}: answered {status} redirecting to {detail:?}; redirects are not followed"
            ),
            _ => write!(f, "{url}: {detail}"),
        }
    }
}

impl StdError for Error {}

/// Why a Vault client could not be set up: the message names the configuration key at fault
/// (a proxy's URL is never repeated: it may hold a password), and the source when there is one.
#[derive(Debug)]
pub struct SetupError(
    pub(super) String,
    pub(super) Option<Box<dyn StdError + Send + Sync>>,
);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for SetupError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

/// Only the host of a redirect target is named: its path or query might carry anything.
pub(super) fn redirect_host(location: &str) -> String {
    let rest = location.split_once("://").map_or(location, |x| x.1);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match authority.rsplit_once('@').map_or(authority, |x| x.1) {
        "" => "(same host)".into(),
        host => one_line(host, 255),
    }
}

/// Longest piece of an error text that may come from the server.
const MAX_DETAIL: usize = 200;

/// What an answer that took too long says.
const TIMEOUT: &str = "no answer in time";

pub(super) fn classify(url: &str, e: &ureq::Error) -> Error {
    let text = || one_line(&e.to_string(), MAX_DETAIL);
    let (class, detail) = match e {
        ureq::Error::Timeout(_) => (Class::Broken, TIMEOUT.into()),
        ureq::Error::Io(io) => return classify_io(url, io),
        ureq::Error::Rustls(tls) => tls_class(tls),
        ureq::Error::BodyExceedsLimit(limit) => too_large(*limit),
        ureq::Error::LargeResponseHeader(_, limit) => too_large(*limit as u64),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => (Class::Broken, text()),
        ureq::Error::Tls(_) => (Class::Untrusted, format!("TLS: {}", text())),
        // The protocol errors may quote what the server sent (a bad header, a status line).
        _ => (Class::Garbled, format!("bad HTTP answer: {}", text())),
    };
    Error::new(url, class, detail)
}

/// rustls reports handshake failures through io::Error; ureq wraps its own errors (timeouts,
/// limits) into io::Error when a body is read.
pub(super) fn classify_io(url: &str, e: &std::io::Error) -> Error {
    use ureq::Error::{BodyExceedsLimit, Timeout};
    let inner = e.get_ref();
    if let Some(e @ (BodyExceedsLimit(_) | Timeout(_))) = inner.and_then(|i| i.downcast_ref()) {
        return classify(url, e);
    }
    let (class, detail) = match (inner.and_then(|i| i.downcast_ref()), e.kind()) {
        (Some(tls), _) => tls_class(tls),
        (_, ErrorKind::TimedOut | ErrorKind::WouldBlock) => (Class::Broken, TIMEOUT.into()),
        (_, kind) => (Class::Broken, format!("connection error ({kind})")),
    };
    Error::new(url, class, detail)
}

/// Certificate problems are final; other TLS failures may be a server restarting.
fn tls_class(tls: &rustls::Error) -> (Class, String) {
    use rustls::Error::*;
    let class = match tls {
        InvalidCertificate(_) | NoCertificatesPresented => Class::Untrusted,
        InvalidCertRevocationList(_) | UnsupportedNameType => Class::Untrusted,
        _ => Class::Broken,
    };
    let detail = format!("TLS: {}", one_line(&tls.to_string(), MAX_DETAIL));
    (class, detail)
}

fn too_large(limit: u64) -> (Class, String) {
    let detail = format!("answer larger than {limit} bytes, refused");
    (Class::Garbled, detail)
}
