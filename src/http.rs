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
//! end sooner, near the deadline, gets a shorter timeout of its own. Its crypto is ring, chosen
//! as rustls's process-wide default, which ureq uses before a default of its own, with AES-GCM
//! only (tls.rs).

use crate::retry::parse_retry_after;
use crate::secret::Secret;
use crate::untrusted;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use ureq::config::Config;
use ureq::http;
use ureq::tls::Certificate;

mod ahead;
mod error;
mod lookup;
#[cfg(test)]
mod tests;
mod tls;

use error::{classify, classify_io, redirect_host};
pub use error::{Error, SetupError};

/// Largest answer body read from IMDS or Vault; a larger one is refused (exit 65).
pub const MAX_BODY: u64 = 1024 * 1024;
/// Largest answer header block.
const MAX_HEADER: usize = 64 * 1024;
/// Idle connections an agent keeps: more than a boot job opens at once.
const MAX_IDLE: usize = 8;
/// Longest wait for the warm-up's requests before a request opens a connection of its own.
const WARM_WAIT: Duration = Duration::from_secs(2);
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
    /// Vault: the login opened ahead, until `send` takes it.
    ahead: Arc<Mutex<Option<ahead::Opened>>>,
    /// Vault: how many warm-up requests are under way (below zero once no longer waited for).
    warming: Arc<ahead::Shared<isize>>,
    /// What requests are sent to: the configured address, or the TLS name when one is pinned.
    base: String,
    /// The configured address, for messages.
    shown: String,
    timeout: Duration,
}

impl Client {
    /// A client for plain HTTP (IMDS): never through a proxy.
    pub fn plain(base: &str, timeout: Duration) -> Client {
        let config = agent_config(None, timeout).https_only(false).build();
        Client::new(config, Default::default(), base.into(), base, timeout)
    }

    /// A client for Vault. `https` unless the configuration allowed plain HTTP.
    pub fn vault(
        base: &str,
        tls: &Tls<'_>,
        proxy: Option<&str>,
        timeout: Duration,
    ) -> Result<Client, SetupError> {
        let proxy = proxy.map(ureq::Proxy::new).transpose();
        let proxy = proxy.map_err(SetupError::Proxy)?;
        let roots = load_roots(tls.ca_file)?;
        let tls_config = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .build();
        let config = agent_config(proxy, timeout)
            .https_only(base.starts_with("https://"))
            .tls_config(tls_config)
            .build();
        let (resolver, target_base) = match tls.server_name {
            None => (lookup::Resolve::default(), base.to_string()),
            Some(name) => lookup::Resolve::pinned(base, name)?,
        };
        Ok(Client::new(config, resolver, target_base, base, timeout))
    }

    fn new(
        config: Config,
        resolve: lookup::Resolve,
        base: String,
        shown: &str,
        timeout: Duration,
    ) -> Client {
        Client {
            agent: lookup::agent(config, resolve),
            ahead: Arc::default(),
            warming: Arc::default(),
            base,
            shown: shown.into(),
            timeout,
        }
    }

    pub fn shown_url(&self, path: &str) -> String {
        format!("{}{}", self.shown, path)
    }

    /// Starts the login (`POST path`, no sensitive header) that `send` will be asked for, on a
    /// thread of its own: ureq connects and sends its head now, `send` hands it its body.
    pub fn open_ahead(&self, path: &str, headers: &[(&str, &str)]) {
        let (url, target) = (self.shown_url(path), format!("{}{path}", self.base));
        if let Ok(request) = build_request(&url, http::Method::POST, &target, headers, &[], None) {
            let opened = ahead::Opened::start(&self.agent, request, path, self.timeout);
            *self.ahead.lock().unwrap_or_else(PoisonError::into_inner) = opened;
        }
    }

    /// Sends `n` cheap `GET path` requests (at most `MAX_IDLE`, the login opened ahead
    /// included: no more connections than the pool keeps) at once, each on a thread of its
    /// own, and drops their answers, whatever they are: each leaves its connection in the pool
    /// (ureq pools a connection once a whole answer was read on it) for the requests to come,
    /// which wait for them (at most `WARM_WAIT`) rather than open more. A thread that cannot be
    /// started is no warm-up, not an error. The handles are for tests.
    pub fn warm_up(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        n: usize,
    ) -> Vec<std::thread::JoinHandle<()>> {
        let (url, target) = (self.shown_url(path), format!("{}{path}", self.base));
        let spawn = |_| {
            let request = build_request(&url, http::Method::GET, &target, headers, &[], None);
            let (client, url) = (self.clone(), url.clone());
            let get = move || {
                if let Ok(request) = request {
                    let _ = client.run(&url, request, client.timeout);
                }
                client.warming.change(|n| *n -= 1);
            };
            std::thread::Builder::new()
                .name("vault-warm-up".into())
                .spawn(get)
                .ok()
                .inspect(|_| self.warming.change(|n| *n += 1))
        };
        let opened = usize::from(self.ahead.lock().map_or(true, |o| o.is_some()));
        (0..n.min(MAX_IDLE - opened)).filter_map(spawn).collect()
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
        let post = method == http::Method::POST && sensitive.is_empty();
        let opened = ahead::take(&self.ahead, path, post);
        if let Some(answer) = opened.and_then(|o| o.send(body.unwrap_or_default(), time_left)) {
            return read_answer(&url, answer.map_err(|e| classify(&url, e))?);
        }
        let target = format!("{}{}", self.base, path);
        let request = build_request(&url, method, &target, headers, sensitive, body)?;
        // The requests sent at once wait together, once: the count is cleared after a wait.
        *self.warming.wait(WARM_WAIT.min(time_left), |n| *n > 0) = 0;
        self.run(&url, request, time_left)
    }

    /// Runs `request` (see the module's comment for its timeout) and reads its answer.
    fn run(
        &self,
        url: &str,
        request: http::Request<&[u8]>,
        time_left: Duration,
    ) -> Result<Answer, Error> {
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
        read_answer(url, response.map_err(|e| classify(url, e))?)
    }
}

fn agent_config(
    proxy: Option<ureq::Proxy>,
    timeout: Duration,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    // TLS with ring, AES-GCM only (tls.rs); one installed before (a second client) is the same.
    let _ = tls::provider().install_default();
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
    let bad = |detail: String| Error::Protocol(url.to_string(), detail);
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
    let header = |name: &str| Some(response.headers().get(name)?.to_str().ok()?.to_string());
    if (300..400).contains(&status) {
        let target = header("location").map_or("(no location)".into(), |l| redirect_host(&l));
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
        return Err(Error::TooLarge(url.to_string(), MAX_BODY));
    }
    // One byte more than announced: the read that finds the end needs room too, and a full
    // buffer would be moved to a larger one.
    let capacity = announced.unwrap_or(8 * 1024).min(MAX_BODY) as usize + 1;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    // Beyond the limit, ureq's reader fails with BodyExceedsLimit: TooLarge.
    let mut reader = response.body_mut().with_config().limit(MAX_BODY).reader();
    untrusted::read_to_end_wiping(&mut reader, &mut bytes).map_err(|e| classify_io(url, e))?;
    let body = match bytes.is_empty() {
        true => Secret::default(),
        false => Secret::new(std::mem::take(&mut *bytes)),
    };
    Ok(Answer {
        status,
        body,
        retry_after,
        content_type,
    })
}

fn load_roots(ca_file: Option<&std::path::Path>) -> Result<Vec<Certificate<'static>>, SetupError> {
    let (path, pem) = match ca_file {
        Some(p) => {
            let pem = crate::files::read_input(p, crate::config::MAX_CA_BYTES);
            (
                p.display().to_string(),
                pem.map_err(SetupError::CaCert)?.to_vec(),
            )
        }
        None => SYSTEM_CA_BUNDLES
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p.to_string(), b)))
            .ok_or(SetupError::NoSystemBundle)?,
    };
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    match certs.is_empty() {
        true => Err(SetupError::NoCertificate(path)),
        false => Ok(certs),
    }
}
