//! The HTTP layer shared by IMDS and Vault: one ureq agent per endpoint, TLS roots, per-request
//! timeouts clamped to the run's deadline, size-capped answer bodies and error classification.
//!
//! Redirects are never followed (a token must not travel to a host nobody configured), and
//! proxies come only from configuration, never from the environment.

use crate::retry::{parse_retry_after, Verdict};
use crate::secret::Secret;
use std::fmt;
use std::io::Read;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;
use ureq::http;

/// Largest answer body read from IMDS or Vault; a larger one is refused (exit 65).
pub const MAX_BODY: u64 = 1024 * 1024;
/// Largest answer header block.
const MAX_HEADER: usize = 64 * 1024;
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
    user_agent: String,
}

impl Client {
    /// A client for plain HTTP (IMDS): never through a proxy.
    pub fn plain(base: &str, timeout: Duration) -> Client {
        let config = common_config(None).https_only(false).build();
        Client {
            agent: config.new_agent(),
            base: base.to_string(),
            shown: base.to_string(),
            timeout,
            user_agent: user_agent(),
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
        let config = common_config(proxy)
            .https_only(base.starts_with("https://"))
            .tls_config(tls_config)
            .build();
        let (agent, target_base) = match tls.server_name {
            None => (config.new_agent(), base.to_string()),
            Some(name) => {
                // Send the request to `name` (SNI, certificate check and Host header all use
                // it) but resolve `name` to the configured address.
                let authority = base.split_once("://").map(|x| x.1).unwrap_or(base);
                let port = port_of(authority, base.starts_with("https://"));
                let resolver = PinnedResolver {
                    name: name.to_string(),
                    target: host_port(authority, port),
                };
                let agent = ureq::Agent::with_parts(
                    config,
                    ureq::unversioned::transport::DefaultConnector::default(),
                    resolver,
                );
                let scheme = base.split("://").next().unwrap_or("https");
                (agent, format!("{scheme}://{name}:{port}"))
            }
        };
        Ok(Client {
            agent,
            base: target_base,
            shown: base.to_string(),
            timeout,
            user_agent: user_agent(),
        })
    }

    pub fn shown_url(&self, path: &str) -> String {
        format!("{}{}", self.shown, path)
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
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("user-agent", &self.user_agent);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder
            .body(body.map(<[u8]>::to_vec).unwrap_or_default())
            .map_err(|e| Error::Protocol {
                url: url.clone(),
                detail: format!("cannot build request: {e}"),
            })?;
        for (name, value) in sensitive {
            let mut v =
                http::HeaderValue::from_bytes(value.expose()).map_err(|_| Error::Protocol {
                    url: url.clone(),
                    detail: format!("{name} is not a valid header value"),
                })?;
            v.set_sensitive(true);
            let name =
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::Protocol {
                    url: url.clone(),
                    detail: "bad header name".into(),
                })?;
            request.headers_mut().insert(name, v);
        }
        let timeout = self.timeout.min(time_left).max(Duration::from_millis(1));
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .build();
        let mut response = self.agent.run(request).map_err(|e| classify(&url, e))?;

        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if (300..400).contains(&status) {
            let target = header("location")
                .map(|l| redirect_host(&l))
                .unwrap_or_else(|| "(no location)".into());
            return Err(Error::Redirect {
                url,
                status,
                target,
            });
        }
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
        let content_type = header("content-type");
        if let Some(len) = response.body().content_length() {
            if len > MAX_BODY {
                return Err(Error::TooLarge {
                    url,
                    limit: MAX_BODY,
                });
            }
        }
        let mut buf = Secret::default();
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(
            response
                .body()
                .content_length()
                .unwrap_or(8 * 1024)
                .min(MAX_BODY) as usize
                + 1,
        ));
        let reader = response.body_mut().with_config().limit(u64::MAX).reader();
        reader
            .take(MAX_BODY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| classify_io(&url, e))?;
        if bytes.len() as u64 > MAX_BODY {
            return Err(Error::TooLarge {
                url,
                limit: MAX_BODY,
            });
        }
        if !bytes.is_empty() {
            buf = Secret::new(std::mem::take(&mut *bytes));
        }
        Ok(Answer {
            status,
            body: buf,
            retry_after,
            content_type,
        })
    }
}

fn user_agent() -> String {
    format!("vaultboot/{}", env!("CARGO_PKG_VERSION"))
}

fn common_config(
    proxy: Option<ureq::Proxy>,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(proxy)
        .max_response_header_size(MAX_HEADER)
        .max_idle_connections_per_host(8)
        .max_idle_age(Duration::from_secs(30))
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

fn port_of(authority: &str, https: bool) -> u16 {
    let after_host = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    after_host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(if https { 443 } else { 80 })
}

fn host_port(authority: &str, port: u16) -> String {
    let host = match authority.rfind(']') {
        Some(i) => &authority[..=i],
        None => authority.rsplit_once(':').map(|x| x.0).unwrap_or(authority),
    };
    format!("{host}:{port}")
}

/// Only the host of a redirect target is named: its path or query might carry anything.
fn redirect_host(location: &str) -> String {
    let rest = location.split_once("://").map(|x| x.1).unwrap_or(location);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
    if host.is_empty() {
        "(same host)".into()
    } else {
        host.chars().take(255).collect()
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
            detail: detail.to_string(),
        },
        ureq::Error::BodyExceedsLimit(limit) => Error::TooLarge { url, limit },
        ureq::Error::LargeResponseHeader(_, limit) => Error::TooLarge {
            url,
            limit: limit as u64,
        },
        other => Error::Protocol {
            url,
            detail: other.to_string(),
        },
    }
}

/// Certificate problems are final; other TLS failures may be a server restarting.
fn classify_tls(url: &str, tls: &rustls::Error) -> Error {
    match tls {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::UnsupportedNameType => Error::Tls {
            url: url.into(),
            detail: tls.to_string(),
        },
        other => Error::Connect {
            url: url.into(),
            detail: format!("TLS: {other}"),
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

/// Resolves the pinned TLS name to the configured address; any other host normally.
#[derive(Debug)]
struct PinnedResolver {
    name: String,
    target: String,
}

impl ureq::unversioned::resolver::Resolver for PinnedResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        if uri.host() != Some(self.name.as_str()) {
            return ureq::unversioned::resolver::DefaultResolver::default()
                .resolve(uri, config, timeout);
        }
        let mut out = self.empty();
        for addr in self
            .target
            .to_socket_addrs()
            .map_err(ureq::Error::Io)?
            .take(16)
        {
            out.push(addr);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_hosts() {
        assert_eq!(port_of("vault:8200", true), 8200);
        assert_eq!(port_of("vault", true), 443);
        assert_eq!(port_of("[::1]:8200", true), 8200);
        assert_eq!(port_of("[::1]", false), 80);
        assert_eq!(host_port("[::1]:8200", 8200), "[::1]:8200");
        assert_eq!(host_port("127.0.0.1:8200", 8200), "127.0.0.1:8200");
        assert_eq!(host_port("vault", 443), "vault:443");
    }

    #[test]
    fn redirect_names_only_the_host() {
        assert_eq!(
            redirect_host("https://user:pw@evil.example:8443/x?token=s"),
            "evil.example:8443"
        );
        assert_eq!(redirect_host("/v1/other"), "(same host)");
    }
}
