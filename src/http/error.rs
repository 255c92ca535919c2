//! What can go wrong with one HTTP exchange, and how ureq's errors map to it.

use crate::untrusted;
use std::fmt;

/// What went wrong with one HTTP exchange. `url` never carries credentials.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No connection, or it broke (refused, reset, DNS, truncated body): worth retrying.
    Connect { url: String, detail: String },
    /// No complete answer within the time allowed: worth retrying.
    Timeout { url: String },
    /// The server's certificate could not be verified: retrying cannot help.
    Tls { url: String, detail: String },
    /// The answer is larger than the cap.
    TooLarge { url: String, limit: u64 },
    /// A 3xx: not followed.
    Redirect {
        url: String,
        status: u16,
        target: String,
    },
    /// The server does not speak HTTP as expected.
    Protocol { url: String, detail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { url, detail } => write!(f, "{url}: {detail}"),
            Error::Timeout { url } => write!(f, "{url}: no answer in time"),
            Error::Tls { url, detail } => write!(f, "{url}: TLS: {detail}"),
            Error::TooLarge { url, limit } => {
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
            Error::Protocol { url, detail } => write!(f, "{url}: bad HTTP answer: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// Only the host of a redirect target is named: its path or query might carry anything.
pub(super) fn redirect_host(location: &str) -> String {
    let rest = location.split_once("://").map(|x| x.1).unwrap_or(location);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
    if host.is_empty() {
        "(same host)".into()
    } else {
        untrusted::one_line(host, 255)
    }
}

pub(super) fn classify(url: &str, e: ureq::Error) -> Error {
    let url = url.to_string();
    match e {
        ureq::Error::Timeout(_) => Error::Timeout { url },
        ureq::Error::Io(io) => classify_io(&url, io),
        ureq::Error::HostNotFound => Error::Connect {
            url,
            detail: "host not found".into(),
        },
        ureq::Error::ConnectionFailed => Error::Connect {
            url,
            detail: "connection failed".into(),
        },
        ureq::Error::Rustls(tls) => classify_tls(&url, &tls),
        ureq::Error::Tls(detail) => Error::Tls {
            url,
            detail: untrusted::one_line(detail, MAX_DETAIL),
        },
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge { url, limit },
        ureq::Error::LargeResponseHeader(_, limit) => Error::TooLarge {
            url,
            limit: limit as u64,
        },
        // The protocol errors may quote what the server sent (a bad header, a status line).
        other => Error::Protocol {
            url,
            detail: untrusted::one_line(&other.to_string(), MAX_DETAIL),
        },
    }
}

/// Longest piece of an error text that may come from the server.
const MAX_DETAIL: usize = 200;

/// Certificate problems are final; other TLS failures may be a server restarting.
fn classify_tls(url: &str, tls: &rustls::Error) -> Error {
    match tls {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::UnsupportedNameType => Error::Tls {
            url: url.into(),
            detail: untrusted::one_line(&tls.to_string(), MAX_DETAIL),
        },
        other => Error::Connect {
            url: url.into(),
            detail: format!(
                "TLS: {}",
                untrusted::one_line(&other.to_string(), MAX_DETAIL)
            ),
        },
    }
}

pub(super) fn classify_io(url: &str, e: std::io::Error) -> Error {
    // rustls reports handshake failures through io::Error.
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return classify_tls(url, tls);
    }
    // ureq wraps its own errors (timeouts, limits) into io::Error when a body is read.
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
        match inner {
            ureq::Error::Timeout(_) => return Error::Timeout { url: url.into() },
            ureq::Error::BodyExceedsLimit(l) => {
                return Error::TooLarge {
                    url: url.into(),
                    limit: *l,
                }
            }
            _ => {}
        }
    }
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            Error::Timeout { url: url.into() }
        }
        kind => Error::Connect {
            url: url.into(),
            detail: format!("connection error ({kind})"),
        },
    }
}
