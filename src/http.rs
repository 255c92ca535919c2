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

use crate::config::VaultConfig;
use crate::retry::parse_retry_after;
use crate::secret::Secret;
use crate::untrusted;
use ahead::Shared;
use std::sync::Arc;
use std::time::Duration;
use ureq::config::ConfigBuilder;
use ureq::http::{self, request::Builder};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::typestate::AgentScope;

mod ahead;
mod error;
mod lookup;
#[cfg(test)]
mod tests;
mod tls;

use error::{classify, classify_io, redirect_host};
pub use error::{Class, Error, SetupError};

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

type Response = Result<http::Response<ureq::Body>, ureq::Error>;
/// A warm-up request's thread.
pub type Warming = std::thread::JoinHandle<()>;

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

/// A client for one base URL (`scheme://host[:port]`).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// Vault: the login opened ahead, until `send` takes it.
    ahead: Arc<Shared<Option<ahead::Opened>>>,
    /// Vault: how many warm-up requests are under way (below zero once no longer waited for).
    warming: Arc<Shared<isize>>,
    /// What requests are sent to: the configured address, or the TLS name when one is pinned.
    base: String,
    /// The configured address, for messages.
    shown: String,
    timeout: Duration,
}

impl Client {
    /// A client for plain HTTP (IMDS): never through a proxy.
    pub fn plain(base: &str, timeout: Duration) -> Client {
        let config = agent_config(None, timeout).build();
        let agent = lookup::agent(config, lookup::Resolve::default());
        Client::new(agent, base.into(), base, timeout)
    }

    /// A client for Vault. `https` unless the configuration allowed plain HTTP.
    pub fn vault(vault: &VaultConfig) -> Result<Client, SetupError> {
        let (base, timeout) = (vault.address.as_str(), vault.request_timeout);
        let proxy = vault.proxy.as_deref().map(ureq::Proxy::new).transpose();
        let proxy = proxy.map_err(|e| SetupError(format!("vault.proxy: {e}"), Some(e.into())))?;
        let roots = RootCerts::Specific(Arc::new(load_roots(vault.ca_cert.as_deref())?));
        let tls = TlsConfig::builder().root_certs(roots).build();
        let config = agent_config(proxy, timeout).tls_config(tls);
        let config = config.https_only(base.starts_with("https://")).build();
        let (resolve, target) = match &vault.tls_server_name {
            None => (lookup::Resolve::default(), base.to_string()),
            Some(name) => lookup::Resolve::pinned(base, name)?,
        };
        let agent = lookup::agent(config, resolve);
        Ok(Client::new(agent, target, base, timeout))
    }

    fn new(agent: ureq::Agent, base: String, shown: &str, timeout: Duration) -> Client {
        Client {
            agent,
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
        if let Ok(request) = self
            .request(http::Method::POST, path, headers)
            .body(&[][..])
        {
            *self.ahead.lock() = ahead::Opened::start(self, request);
        }
    }

    /// Sends `n` cheap `GET path` requests (at most `MAX_IDLE`, the login opened ahead
    /// included: no more connections than the pool keeps) at once, each on a thread of its
    /// own, and drops their answers, whatever they are: each leaves its connection in the pool
    /// (ureq pools a connection once a whole answer was read on it) for the requests to come,
    /// which wait for them (at most `WARM_WAIT`) rather than open more. A thread that cannot be
    /// started is no warm-up, not an error. The handles are for tests.
    pub fn warm_up(&self, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<Warming> {
        let spawn = |_| {
            let request = self.request(http::Method::GET, path, headers).body(&[][..]);
            let client = self.clone();
            let get = move || {
                let _ = request.map(|r| read_answer("", client.agent.run(r)));
                client.warming.change(|n| *n -= 1);
            };
            let thread = std::thread::Builder::new().name("vault-warm-up".into());
            let spawned = thread.spawn(get).ok();
            spawned.inspect(|_| self.warming.change(|n| *n += 1))
        };
        let opened = usize::from(self.ahead.lock().is_some());
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
        let login = method == http::Method::POST && sensitive.is_empty();
        let opened = self.ahead.lock().take_if(|o| login && o.0 == path);
        if let Some(response) = opened.and_then(|o| o.send(body.unwrap_or_default(), time_left)) {
            return read_answer(&url, response);
        }
        let bad = |detail: String| Error::new(&url, Class::Garbled, detail);
        let mut request = self.request(method, path, headers);
        // A sensitive header's value shares the `Secret`'s own bytes, so that it too is wiped
        // when the request is dropped (`http` copies a value given as bytes into a buffer that
        // is freed as is).
        for (name, value) in sensitive {
            let shared = bytes::Bytes::from_owner((*value).clone());
            let value = http::HeaderValue::from_maybe_shared(shared);
            let mut value = value.map_err(|_| bad(format!("{name}: not a valid header value")))?;
            value.set_sensitive(true);
            request = request.header(*name, value);
        }
        let request = request.body(body.unwrap_or_default());
        let mut request = request.map_err(|e| bad(format!("cannot build request: {e}")))?;
        if time_left < self.timeout {
            // Near the deadline: a shorter timeout of its own (see the module's comment).
            let timeout = Some(time_left.max(Duration::from_millis(1)));
            let config = self.agent.configure_request(request);
            request = config.timeout_global(timeout).build();
        }
        // The requests sent at once wait together, once: the count is cleared after a wait.
        *self.warming.wait(WARM_WAIT.min(time_left), |n| *n > 0) = 0;
        read_answer(&url, self.agent.run(request))
    }

    /// A request to `path` with `headers`; its body, given to `body`, is borrowed from the
    /// caller's (wiping) buffer: no copy of a nonce or of PKI data is made here.
    fn request(&self, method: http::Method, path: &str, headers: &[(&str, &str)]) -> Builder {
        let builder = http::Request::builder().method(method);
        let builder = builder.uri(format!("{}{path}", self.base));
        headers.iter().fold(builder, |b, (k, v)| b.header(*k, *v))
    }
}

fn agent_config(proxy: Option<ureq::Proxy>, timeout: Duration) -> ConfigBuilder<AgentScope> {
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

/// The status, the headers we use and the whole body, which must not exceed `MAX_BODY`.
fn read_answer(url: &str, response: Response) -> Result<Answer, Error> {
    let mut response = response.map_err(|e| classify(url, &e))?;
    let status = response.status().as_u16();
    let header = |name: &str| Some(response.headers().get(name)?.to_str().ok()?.to_string());
    if (300..400).contains(&status) {
        let target = header("location").map_or("(no location)".into(), |l| redirect_host(&l));
        return Err(Error::new(url, Class::Redirect(status), target));
    }
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
    let content_type = header("content-type");
    let announced = response.body().content_length();
    if announced.is_some_and(|len| len > MAX_BODY) {
        return Err(classify(url, &ureq::Error::BodyExceedsLimit(MAX_BODY)));
    }
    // One byte more than announced: the read that finds the end needs room too, and a full
    // buffer would be moved to a larger one.
    let capacity = announced.unwrap_or(8 * 1024).min(MAX_BODY) as usize + 1;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    // Beyond the limit, ureq's reader fails with BodyExceedsLimit: TooLarge.
    let mut reader = response.body_mut().with_config().limit(MAX_BODY).reader();
    untrusted::read_to_end_wiping(&mut reader, &mut bytes).map_err(|e| classify_io(url, &e))?;
    let body = Secret::new(std::mem::take(&mut bytes));
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
            let pem = pem.map_err(|e| SetupError(format!("vault.ca_cert: {e}"), Some(e.into())))?;
            (format!("vault.ca_cert: {}", p.display()), pem.to_vec())
        }
        None => SYSTEM_CA_BUNDLES
            .iter()
            .find_map(|p| Some((format!("system CA bundle {p}"), std::fs::read(p).ok()?)))
            .ok_or_else(|| SetupError(NO_BUNDLE.into(), None))?,
    };
    let certs = ureq::tls::parse_pem(&pem).filter_map(|item| match item.ok()? {
        PemItem::Certificate(c) => Some(c),
        _ => None,
    });
    let certs: Vec<_> = certs.collect();
    if certs.is_empty() {
        let empty = format!("{path}: holds no PEM certificate");
        return Err(SetupError(empty, None));
    }
    Ok(certs)
}

const NO_BUNDLE: &str =
    "vault.ca_cert: not set, and no system CA bundle found (install ca-certificates or set it)";
