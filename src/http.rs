//! The HTTP layer shared by IMDS and Vault: one ureq agent per endpoint, TLS roots, per-request
//! timeouts clamped to the run's deadline, size-capped answer bodies and error classification.
//!
//! Redirects are never followed (a token must not travel to a host nobody configured), and
//! proxies come only from configuration, never from the environment.
//!
//! TLS is ureq's own rustls connector. It builds one rustls `ClientConfig` per agent, and so
//! one session cache whose sessions later connections resume, the first time a request with the
//! agent's own configuration connects; a request configured on its own (`configure_request`)
//! reuses that `ClientConfig` once it exists, but before that builds a throwaway one (root store
//! included) that resumes nothing. So a request carries the agent's configuration whenever the
//! agent's timeout fits in the time left, and only one that must end sooner, near the deadline,
//! gets a shorter timeout of its own.

use crate::retry::{parse_retry_after, Verdict};
use crate::secret::Secret;
use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use ureq::http;

/// Largest answer body read from IMDS or Vault; a larger one is refused (exit 65).
pub const MAX_BODY: u64 = 1024 * 1024;
/// Largest answer header block.
const MAX_HEADER: usize = 64 * 1024;
/// Idle connections an agent keeps: more than a boot job opens at once.
const MAX_IDLE: usize = 8;
/// Where Linux distributions keep the system CA bundle (Debian/Ubuntu, RHEL/Amazon Linux, Alpine).
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

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

impl Error {
    pub fn verdict(&self) -> Verdict {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } => {
                Verdict::Transient { retry_after: None }
            }
            _ => Verdict::Fatal,
        }
    }

    /// The answer itself is unusable (exit 65), rather than the server being unreachable.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Error::TooLarge { .. } | Error::Redirect { .. } | Error::Protocol { .. }
        )
    }
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

/// One HTTP answer, whatever its status. The body is wiped on drop: it may hold secrets.
pub struct Answer {
    pub status: u16,
    pub body: Secret,
    pub retry_after: Option<Duration>,
    pub content_type: Option<String>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Retry verdict for an HTTP status that is not a success.
    pub fn status_verdict(&self, retry_412: bool) -> Verdict {
        match self.status {
            429 | 500..=599 => Verdict::Transient {
                retry_after: self.retry_after,
            },
            412 if retry_412 => Verdict::Transient {
                retry_after: self.retry_after,
            },
            _ => Verdict::Fatal,
        }
    }
}

/// TLS trust for an HTTPS endpoint.
pub struct Tls<'a> {
    /// A PEM bundle to trust instead of the system roots.
    pub ca_file: Option<&'a std::path::Path>,
    /// Verify the server certificate against this name instead of the URL's host.
    pub server_name: Option<&'a str>,
}

/// A client for one base URL (`scheme://host[:port]`).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// What requests are sent to: the configured address, or the TLS name when one is pinned.
    base: String,
    /// The configured address, for messages.
    shown: String,
    timeout: Duration,
}

impl Client {
    /// A client for plain HTTP (IMDS): never through a proxy.
    pub fn plain(base: &str, timeout: Duration) -> Client {
        Client {
            agent: agent_config(None, timeout)
                .https_only(false)
                .build()
                .new_agent(),
            base: base.to_string(),
            shown: base.to_string(),
            timeout,
        }
    }

    /// A client for Vault. `https` unless the configuration allowed plain HTTP.
    pub fn vault(
        base: &str,
        tls: &Tls<'_>,
        proxy: Option<&str>,
        timeout: Duration,
    ) -> Result<Client, String> {
        let proxy = proxy
            .map(|p| ureq::Proxy::new(p).map_err(|e| format!("proxy {p:?}: {e}")))
            .transpose()?;
        let roots = load_roots(tls.ca_file)?;
        let tls_config = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .build();
        let config = agent_config(proxy, timeout)
            .https_only(base.starts_with("https://"))
            .tls_config(tls_config)
            .build();
        let (agent, target_base) = match tls.server_name {
            None => (config.new_agent(), base.to_string()),
            Some(name) => pinned::agent(config, base, name)?,
        };
        Ok(Client {
            agent,
            base: target_base,
            shown: base.to_string(),
            timeout,
        })
    }

    pub fn shown_url(&self, path: &str) -> String {
        format!("{}{}", self.shown, path)
    }

    /// Opens `connections` connections (at most 8) in the background, ahead of the requests that
    /// will want them at once: each sends `HEAD path`, which must be an answer the server gives
    /// without credentials (its status does not matter), and leaves its connection in the agent's
    /// pool, where the next requests find it. Nothing is reported: a request that finds no
    /// connection ready opens its own, with its own retries. The handles are for tests.
    pub fn warm_up(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        connections: usize,
    ) -> Vec<std::thread::JoinHandle<()>> {
        let url = format!("{}{}", self.base, path);
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        (0..connections.min(MAX_IDLE))
            .filter_map(|_| {
                let (agent, url, headers) = (self.agent.clone(), url.clone(), headers.clone());
                // With the agent's own configuration: the first connection to finish its
                // handshake sets up the TLS configuration every later one shares.
                let warm = move || {
                    let head = headers
                        .iter()
                        .fold(agent.head(&url), |r, (n, v)| r.header(n, v));
                    drop(head.call())
                };
                std::thread::Builder::new()
                    .name("http-warm-up".into())
                    .spawn(warm)
                    .ok()
            })
            .collect()
    }

    /// Sends one request and reads the whole (capped) answer. `time_left` bounds the request.
    pub fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        sensitive: &[(&str, &Secret)],
        body: Option<&[u8]>,
        time_left: Duration,
    ) -> Result<Answer, Error> {
        let url = self.shown_url(path);
        let target = format!("{}{}", self.base, path);
        let request = build_request(&url, method, &target, headers, sensitive, body)?;
        let response = if time_left >= self.timeout {
            self.agent.run(request)
        } else {
            // Near the deadline: a shorter timeout of its own (see the module's comment).
            let request = self
                .agent
                .configure_request(request)
                .timeout_global(Some(time_left.max(Duration::from_millis(1))))
                .build();
            self.agent.run(request)
        };
        read_answer(&url, response.map_err(|e| classify(&url, e))?)
    }
}

fn agent_config(
    proxy: Option<ureq::Proxy>,
    timeout: Duration,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(proxy)
        .timeout_global(Some(timeout))
        .user_agent(concat!("vaultboot/", env!("CARGO_PKG_VERSION")))
        .max_response_header_size(MAX_HEADER)
        // ureq's defaults are 128 KiB each, allocated and zeroed for every connection (twice
        // for TLS: the socket's and the TLS layer's): a fifth of a run's CPU time. The input
        // buffer must hold more than MAX_HEADER, or an oversized header would read as a
        // stalled connection instead of one refused as too large; requests are small.
        .input_buffer_size(MAX_HEADER + 4 * 1024)
        .output_buffer_size(16 * 1024)
        .max_idle_connections(MAX_IDLE)
        .max_idle_connections_per_host(MAX_IDLE)
        .max_idle_age(Duration::from_secs(30))
}

fn build_request(
    url: &str,
    method: http::Method,
    target: &str,
    headers: &[(&str, &str)],
    sensitive: &[(&str, &Secret)],
    body: Option<&[u8]>,
) -> Result<http::Request<Vec<u8>>, Error> {
    let bad = |detail: String| Error::Protocol {
        url: url.to_string(),
        detail,
    };
    let mut builder = http::Request::builder().method(method).uri(target);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder
        .body(body.map(<[u8]>::to_vec).unwrap_or_default())
        .map_err(|e| bad(format!("cannot build request: {e}")))?;
    for (name, value) in sensitive {
        let mut v = http::HeaderValue::from_bytes(value.expose())
            .map_err(|_| bad(format!("{name} is not a valid header value")))?;
        v.set_sensitive(true);
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("bad header name".into()))?;
        request.headers_mut().insert(name, v);
    }
    Ok(request)
}

/// The status, the headers we use and the whole body, which must not exceed `MAX_BODY`.
fn read_answer(url: &str, mut response: http::Response<ureq::Body>) -> Result<Answer, Error> {
    let status = response.status().as_u16();
    let header = |name: &str| {
        let value = response.headers().get(name)?.to_str().ok()?;
        Some(value.to_string())
    };
    if (300..400).contains(&status) {
        let target = header("location")
            .map(|l| redirect_host(&l))
            .unwrap_or_else(|| "(no location)".into());
        let url = url.to_string();
        return Err(Error::Redirect {
            url,
            status,
            target,
        });
    }
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
    let content_type = header("content-type");
    let too_large = || Error::TooLarge {
        url: url.to_string(),
        limit: MAX_BODY,
    };
    let announced = response.body().content_length();
    if announced.is_some_and(|len| len > MAX_BODY) {
        return Err(too_large());
    }
    let capacity = announced.unwrap_or(8 * 1024).min(MAX_BODY) as usize + 1;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    let reader = response.body_mut().with_config().limit(u64::MAX).reader();
    reader
        .take(MAX_BODY + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| classify_io(url, e))?;
    if bytes.len() as u64 > MAX_BODY {
        return Err(too_large());
    }
    let body = if bytes.is_empty() {
        Secret::default()
    } else {
        Secret::new(std::mem::take(&mut *bytes))
    };
    Ok(Answer {
        status,
        body,
        retry_after,
        content_type,
    })
}

fn load_roots(
    ca_file: Option<&std::path::Path>,
) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let (path, pem) = match ca_file {
        Some(p) => (
            p.display().to_string(),
            std::fs::read(p).map_err(|e| format!("ca_cert {}: {e}", p.display()))?,
        ),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p.to_string(), b)))
            .ok_or_else(|| {
                "no system CA bundle found (install ca-certificates or set vault.ca_cert)"
                    .to_string()
            })?,
    };
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{path}: holds no PEM certificate"));
    }
    Ok(certs)
}

/// Only the host of a redirect target is named: its path or query might carry anything.
fn redirect_host(location: &str) -> String {
    let rest = location.split_once("://").map(|x| x.1).unwrap_or(location);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
    if host.is_empty() {
        "(same host)".into()
    } else {
        host.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(255)
            .collect()
    }
}

fn classify(url: &str, e: ureq::Error) -> Error {
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
            detail: one_line(detail),
        },
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge { url, limit },
        ureq::Error::LargeResponseHeader(_, limit) => Error::TooLarge {
            url,
            limit: limit as u64,
        },
        // The protocol errors may quote what the server sent (a bad header, a status line).
        other => Error::Protocol {
            url,
            detail: one_line(&other.to_string()),
        },
    }
}

/// Longest piece of an error text that may come from the server.
const MAX_DETAIL: usize = 200;

/// One line, bounded, no control characters: error texts may quote what the server sent, and
/// they end up in our log.
fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL)
        .collect();
    if text.chars().count() > MAX_DETAIL {
        out.push_str("...");
    }
    out
}

/// Certificate problems are final; other TLS failures may be a server restarting.
fn classify_tls(url: &str, tls: &rustls::Error) -> Error {
    match tls {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::UnsupportedNameType => Error::Tls {
            url: url.into(),
            detail: one_line(&tls.to_string()),
        },
        other => Error::Connect {
            url: url.into(),
            detail: format!("TLS: {}", one_line(&other.to_string())),
        },
    }
}

fn classify_io(url: &str, e: std::io::Error) -> Error {
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

/// `vault.tls_server_name`: requests go to `scheme://<name>:<port>`, so that SNI, the
/// certificate check and the Host header all use the name, and a resolver sends the name to
/// the configured address. ureq has no other way to connect to one host while naming another:
/// this is the one place that uses `ureq::unversioned` (exempt from semver), for the
/// `Resolver` trait and what its signature names, and ureq's own default resolver and
/// connector for everything else.
mod pinned {
    use ureq::http::Uri;
    use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
    use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

    /// The agent, and the base URL its requests are sent to.
    pub(super) fn agent(
        config: ureq::config::Config,
        base: &str,
        name: &str,
    ) -> Result<(ureq::Agent, String), String> {
        let address: Uri = base
            .parse()
            .map_err(|e| format!("vault address {base:?}: {e}"))?;
        let https = address.scheme_str() == Some("https");
        let port = address.port_u16().unwrap_or(if https { 443 } else { 80 });
        let scheme = if https { "https" } else { "http" };
        let resolver = Pinned {
            name: name.to_string(),
            port,
            address,
        };
        let agent = ureq::Agent::with_parts(config, DefaultConnector::default(), resolver);
        Ok((agent, format!("{scheme}://{name}:{port}")))
    }

    #[derive(Debug)]
    struct Pinned {
        name: String,
        port: u16,
        address: Uri,
    }

    impl Resolver for Pinned {
        fn resolve(
            &self,
            uri: &Uri,
            config: &ureq::config::Config,
            timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            // Anything else (a proxy) is resolved as ureq would.
            let pinned =
                uri.host() == Some(self.name.as_str()) && uri.port_u16() == Some(self.port);
            let uri = if pinned { &self.address } else { uri };
            DefaultResolver::default().resolve(uri, config, timeout)
        }
    }
}

#[cfg(test)]
mod tests;
