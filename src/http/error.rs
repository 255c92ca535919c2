//! What can go wrong with one HTTP exchange, and how ureq's errors map to it; what can go wrong
//! setting up a Vault client.

use crate::untrusted::one_line;
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

impl std::error::Error for Error {}

/// Why a Vault client could not be set up: the message names the configuration key at fault
/// (a proxy's URL is never repeated: it may hold a password), and the source when there is one.
#[derive(Debug)]
pub struct SetupError(
    pub(super) String,
    pub(super) Option<Box<dyn std::error::Error + Send + Sync>>,
);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
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

pub(super) fn classify(url: &str, e: ureq::Error) -> Error {
    let detail = one_line(&e.to_string(), MAX_DETAIL);
    let (class, detail) = match e {
        ureq::Error::Timeout(_) => return timeout(url),
        ureq::Error::Io(io) => return classify_io(url, io),
        ureq::Error::Rustls(tls) => return classify_tls(url, &tls),
        ureq::Error::BodyExceedsLimit(limit) => return too_large(url, limit),
        ureq::Error::LargeResponseHeader(_, limit) => return too_large(url, limit as u64),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => (Class::Broken, detail),
        ureq::Error::Tls(_) => (Class::Untrusted, format!("TLS: {detail}")),
        // The protocol errors may quote what the server sent (a bad header, a status line).
        _ => (Class::Garbled, format!("bad HTTP answer: {detail}")),
    };
    Error::new(url, class, detail)
}

/// Certificate problems are final; other TLS failures may be a server restarting.
fn classify_tls(url: &str, tls: &rustls::Error) -> Error {
    use rustls::Error::*;
    let class = match tls {
        InvalidCertificate(_) | NoCertificatesPresented | InvalidCertRevocationList(_) => {
            Class::Untrusted
        }
        UnsupportedNameType => Class::Untrusted,
        _ => Class::Broken,
    };
    let detail = format!("TLS: {}", one_line(&tls.to_string(), MAX_DETAIL));
    Error::new(url, class, detail)
}

pub(super) fn classify_io(url: &str, e: std::io::Error) -> Error {
    let inner = e.get_ref();
    // rustls reports handshake failures through io::Error; ureq wraps its own errors (timeouts,
    // limits) into io::Error when a body is read.
    if let Some(tls) = inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return classify_tls(url, tls);
    }
    match (inner.and_then(|i| i.downcast_ref()), e.kind()) {
        (Some(ureq::Error::BodyExceedsLimit(limit)), _) => too_large(url, *limit),
        (Some(ureq::Error::Timeout(_)), _) | (_, ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            timeout(url)
        }
        (_, kind) => Error::new(url, Class::Broken, format!("connection error ({kind})")),
    }
}

pub(super) fn too_large(url: &str, limit: u64) -> Error {
    let detail = format!("answer larger than {limit} bytes, refused");
    Error::new(url, Class::Garbled, detail)
}

fn timeout(url: &str) -> Error {
    Error::new(url, Class::Broken, "no answer in time".into())
}
