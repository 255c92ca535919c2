//! What can go wrong with one HTTP exchange, and how ureq's errors map to it; what can go wrong
//! setting up a Vault client.

use crate::untrusted::one_line;
use std::fmt;
use std::io::ErrorKind;

/// What went wrong with one HTTP exchange; each names the URL (never with credentials).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No connection, or it broke (refused, reset, DNS, truncated body): worth retrying.
    Connect(String, String),
    /// No complete answer within the time allowed: worth retrying.
    Timeout(String),
    /// The server's certificate could not be verified: retrying cannot help.
    Tls(String, String),
    /// The answer is larger than the cap (bytes).
    TooLarge(String, u64),
    /// A 3xx: not followed. `target` is the host it pointed at.
    Redirect {
        url: String,
        status: u16,
        target: String,
    },
    /// The server does not speak HTTP as expected.
    Protocol(String, String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(url, detail) => write!(f, "{url}: {detail}"),
            Error::Timeout(url) => write!(f, "{url}: no answer in time"),
            Error::Tls(url, detail) => write!(f, "{url}: TLS: {detail}"),
            Error::TooLarge(url, limit) => {
                write!(f, "{url}: answer larger than {limit} bytes, refused")
            }
            Error::Redirect {
                url,
                status,
                target,
            } => write!(
                f,
                "{url}: answered {status} redirecting to {target:?}; redirects are not followed"
            ),
            Error::Protocol(url, detail) => write!(f, "{url}: bad HTTP answer: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// Why a Vault client could not be set up; each names the configuration key at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// `vault.proxy` is refused by ureq (its URL is not repeated: it may hold a password).
    Proxy(ureq::Error),
    /// `vault.ca_cert` could not be read, or is not a root-owned file.
    CaCert(crate::files::Error),
    /// No `vault.ca_cert`, and none of the system CA bundles exists.
    NoSystemBundle,
    /// This bundle holds no PEM certificate.
    NoCertificate(String),
    /// `vault.address` does not parse as a URI (with `vault.tls_server_name`).
    Address(String, ureq::http::uri::InvalidUri),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Proxy(e) => write!(f, "vault.proxy: {e}"),
            SetupError::CaCert(e) => write!(f, "vault.ca_cert: {e}"),
            SetupError::NoSystemBundle => f.write_str(
                "no system CA bundle found (install ca-certificates or set vault.ca_cert)",
            ),
            SetupError::NoCertificate(path) => write!(f, "{path}: holds no PEM certificate"),
            SetupError::Address(address, e) => write!(f, "vault.address {address:?}: {e}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Proxy(e) => Some(e),
            SetupError::CaCert(e) => Some(e),
            SetupError::Address(_, e) => Some(e),
            SetupError::NoSystemBundle | SetupError::NoCertificate(_) => None,
        }
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
    let (url, detail) = (url.to_string(), one_line(&e.to_string(), MAX_DETAIL));
    match e {
        ureq::Error::Timeout(_) => Error::Timeout(url),
        ureq::Error::Io(io) => classify_io(&url, io),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => Error::Connect(url, detail),
        ureq::Error::Rustls(tls) => classify_tls(url, &tls),
        ureq::Error::Tls(_) => Error::Tls(url, detail),
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge(url, limit),
        ureq::Error::LargeResponseHeader(_, limit) => Error::TooLarge(url, limit as u64),
        // The protocol errors may quote what the server sent (a bad header, a status line).
        _ => Error::Protocol(url, detail),
    }
}

/// Certificate problems are final; other TLS failures may be a server restarting.
fn classify_tls(url: String, tls: &rustls::Error) -> Error {
    let detail = one_line(&tls.to_string(), MAX_DETAIL);
    match tls {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::UnsupportedNameType => Error::Tls(url, detail),
        _ => Error::Connect(url, format!("TLS: {detail}")),
    }
}

pub(super) fn classify_io(url: &str, e: std::io::Error) -> Error {
    let (url, inner) = (url.to_string(), e.get_ref());
    // rustls reports handshake failures through io::Error; ureq wraps its own errors (timeouts,
    // limits) into io::Error when a body is read.
    if let Some(tls) = inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return classify_tls(url, tls);
    }
    match (
        inner.and_then(|i| i.downcast_ref::<ureq::Error>()),
        e.kind(),
    ) {
        (Some(ureq::Error::BodyExceedsLimit(limit)), _) => Error::TooLarge(url, *limit),
        (Some(ureq::Error::Timeout(_)), _) | (_, ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            Error::Timeout(url)
        }
        (_, kind) => Error::Connect(url, format!("connection error ({kind})")),
    }
}
