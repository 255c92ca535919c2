//! The HTTP layer shared by IMDS and Vault: one ureq agent per endpoint, TLS roots, per-request
//! timeouts clamped to the run's deadline, size-capped answer bodies and error classification.
//!
//! Redirects are never followed (a token must not travel to a host nobody configured), and
//! proxies come only from configuration, never from the environment.
//!
//! TLS is ureq's own rustls connector. It builds one rustls `ClientConfig` (and so one session
//! cache, whose sessions later connections resume) per agent, the first time a request with the
//! agent's own configuration connects; a request configured on its own (`configure_request`)
//! reuses it once it exists, and before that builds a throwaway one. So a request carries the
//! agent's configuration whenever the agent's timeout fits in the time left; only one that must
//! end sooner, near the deadline, gets a shorter timeout of its own.

use crate::retry::parse_retry_after;
use crate::secret::Secret;
use crate::untrusted;
use std::sync::Arc;
use std::time::Duration;
use ureq::http;

mod ahead;
mod error;
mod lookup;
#[cfg(test)]
mod tests;

pub use error::Error;
use error::{classify, classify_io, redirect_host};

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
    /// Vault: the agent that opens connections ahead (`warm_up`), and where it leaves them.
    ahead: Option<(ureq::Agent, Arc<ahead::Ahead>)>,
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
            agent: ureq::Agent::with_parts(
                agent_config(None, timeout).https_only(false).build(),
                ureq::unversioned::transport::DefaultConnector::default(),
                ahead::Resolve::default(),
            ),
            ahead: None,
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
        let (resolver, target_base) = match tls.server_name {
            None => (ahead::Resolve::default(), base.to_string()),
            Some(name) => ahead::Resolve::pinned(base, name)?,
        };
        let (agent, warm, parked) = ahead::agents(config, resolver);
        Ok(Client {
            agent,
            ahead: Some((warm, parked)),
            base: target_base,
            shown: base.to_string(),
            timeout,
        })
    }

    pub fn shown_url(&self, path: &str) -> String {
        format!("{}{}", self.shown, path)
    }

    /// Opens `connections` connections (at most 8) in the background, for requests to come:
    /// the next ones that need a new connection take these instead, and wait for one that is
    /// being opened rather than open another. Nothing is sent on them meanwhile; failures are
    /// not reported (the requests then open their own, with their own retries). The handles
    /// are for tests.
    pub fn warm_up(&self, connections: usize) -> Vec<std::thread::JoinHandle<()>> {
        let Some((agent, parked)) = &self.ahead else {
            return Vec::new();
        };
        let n = connections.min(MAX_IDLE);
        parked.opening(n);
        let url = format!("{}/", self.base);
        let warm_up = |_| {
            let (agent, parked, url) = (agent.clone(), parked.clone(), url.clone());
            let done = parked.clone();
            let spawned = std::thread::Builder::new()
                .name("vault-warm-up".into())
                .spawn(move || {
                    // Ends in the warm-up agent's connector, once it has parked the connection.
                    let _ = agent.head(&url).call();
                    done.opened();
                });
            spawned.map_err(|_| parked.opened()).ok()
        };
        (0..n).filter_map(warm_up).collect()
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

/// The request, its body borrowed from the caller's (wiping) buffer: no copy of a nonce or of
/// PKI data is made here. A sensitive header's value shares the `Secret`'s own bytes, so that
/// it too is wiped when the request is dropped (`http` copies a value given as bytes into a
/// buffer that is freed as is).
fn build_request<'b>(
    url: &str,
    method: http::Method,
    target: &str,
    headers: &[(&str, &str)],
    sensitive: &[(&str, &Secret)],
    body: Option<&'b [u8]>,
) -> Result<http::Request<&'b [u8]>, Error> {
    let bad = |detail: String| Error::Protocol {
        url: url.to_string(),
        detail,
    };
    let mut builder = http::Request::builder().method(method).uri(target);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder
        .body(body.unwrap_or_default())
        .map_err(|e| bad(format!("cannot build request: {e}")))?;
    for (name, value) in sensitive {
        let shared = bytes::Bytes::from_owner((*value).clone());
        let mut v = http::HeaderValue::from_maybe_shared(shared)
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
    let announced = response.body().content_length();
    if announced.is_some_and(|len| len > MAX_BODY) {
        let url = url.to_string();
        return Err(Error::TooLarge {
            url,
            limit: MAX_BODY,
        });
    }
    // One byte more than announced: the read that finds the end needs room too, and a full
    // buffer would be moved to a larger one.
    let capacity = announced.unwrap_or(8 * 1024).min(MAX_BODY) as usize + 1;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    // Beyond the limit, ureq's reader fails with BodyExceedsLimit: TooLarge.
    let mut reader = response.body_mut().with_config().limit(MAX_BODY).reader();
    untrusted::read_to_end_wiping(&mut reader, &mut bytes).map_err(|e| classify_io(url, e))?;
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
            crate::files::read_input(p, crate::config::MAX_CA_BYTES)
                .map_err(|e| format!("ca_cert {e}"))?
                .to_vec(),
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
