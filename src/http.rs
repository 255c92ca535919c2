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
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::default(),
                FastResolver::new(None),
            ),
            base: base.to_string(),
            shown: base.to_string(),
            timeout,
            user_agent: user_agent(),
        }
    }

    /// A client for Vault. `https` unless the configuration allowed plain HTTP.
    ///
    /// Without a proxy, TLS is rustls with this client's own configuration (shared by all of its
    /// connections, so that they resume each other's sessions), and a client created after
    /// [`warm_next_vault_client`] opens its connections ahead of the requests.
    pub fn vault(
        base: &str,
        tls: &Tls<'_>,
        proxy: Option<&str>,
        timeout: Duration,
    ) -> Result<Client, String> {
        let warm = WARM_NEXT.with(|w| w.replace(0));
        let proxy = proxy
            .map(|p| ureq::Proxy::new(p).map_err(|e| format!("proxy {p:?}: {e}")))
            .transpose()?;
        let roots = load_roots(tls.ca_file)?;
        let https = base.starts_with("https://");
        // With a pinned TLS name, send the request to `name` (SNI, certificate check and Host
        // header all use it) but resolve `name` to the configured address.
        let authority = base.split_once("://").map(|x| x.1).unwrap_or(base);
        let port = port_of(authority, https);
        let pinned = tls.server_name.map(|name| PinnedResolver {
            name: name.to_string(),
            target: host_port(authority, port),
        });
        let target_base = match tls.server_name {
            None => base.to_string(),
            Some(name) => {
                let scheme = base.split("://").next().unwrap_or("https");
                format!("{scheme}://{name}:{port}")
            }
        };
        let agent = if proxy.is_some() {
            // Through a proxy: ureq's own connectors (CONNECT, and its TLS), no warm-up.
            let tls_config = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
                .build();
            let config = common_config(proxy)
                .https_only(https)
                .tls_config(tls_config)
                .build();
            match pinned {
                None => config.new_agent(),
                Some(resolver) => ureq::Agent::with_parts(
                    config,
                    ureq::unversioned::transport::DefaultConnector::default(),
                    resolver,
                ),
            }
        } else {
            let sessions = Arc::new(Sessions::default());
            let tls = Arc::new(VaultTls {
                config: vault_tls_config(&roots, sessions.clone())?,
            });
            let spare = Arc::new(Spare::default());
            let connector = Warm {
                tls: tls.clone(),
                spare: spare.clone(),
            };
            let config = common_config(None).https_only(https).build();
            let resolver = FastResolver::new(pinned);
            let agent = ureq::Agent::with_parts(config, connector, resolver.clone());
            if warm > 0 && https {
                if let Ok(uri) = target_base.parse::<http::Uri>() {
                    start_warm_up(WarmUp {
                        agent: agent.clone(),
                        tls,
                        spare,
                        sessions,
                        resolver,
                        uri,
                        want: warm.min(MAX_WARM),
                        timeout,
                    });
                }
            }
            agent
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
        // ureq's defaults are 128 KiB each, allocated and zeroed for every connection (twice
        // for TLS: the socket's and the TLS layer's): a fifth of a run's CPU time. The input
        // buffer must hold more than MAX_HEADER, or an oversized header would read as a
        // stalled connection instead of one refused as too large; requests are small.
        .input_buffer_size(MAX_HEADER + 4 * 1024)
        .output_buffer_size(16 * 1024)
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

/// Resolves the pinned TLS name to the configured address; any other host normally.
#[derive(Debug, Clone)]
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

// ---- Vault connections: ready before they are needed --------------------------------------------
//
// A boot job talks to one Vault: a login, then every secret at once, then a revoke; each new
// connection costs a TCP and a TLS set-up. So the Vault client the boot job asks for (see
// `warm_next_vault_client`) opens its first connection at once, in the background, while IMDS is
// read; the others' TCP connections at once too, and their TLS handshakes as soon as the
// server's session tickets let them resume the first one's session (the tickets come with or
// right after its handshake, read at the latest while the login waits for its answer), so that
// the parallel secret reads find them ready and, tickets allowing, only the first connection
// pays for a full handshake. TLS is rustls with the client's own `ClientConfig`, shared by all
// of the client's connections: ureq's does not expose its session store, and ureq 3.5 builds a
// new `ClientConfig` for every connection of a request with its own configuration (ours all
// have one: their timeout), so its connections never resumed anything. The session store counts
// what can be resumed.

/// More connections than this are never opened ahead (ureq keeps 8 idle per host).
const MAX_WARM: usize = 8;

thread_local! {
    static WARM_NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Asks the next Vault client created on this thread to open `connections` connections ahead of
/// its requests: the boot job's login and parallel secret reads then find them ready. Without a
/// proxy and over https only; anything that goes wrong while warming up is left to the requests
/// themselves (they open their own connections, with the usual retries).
pub fn warm_next_vault_client(connections: usize) {
    WARM_NEXT.with(|w| w.set(connections));
}

use ureq::unversioned::resolver::Resolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// rustls' in-memory session cache, counting what it holds that a new connection can resume.
#[derive(Debug)]
struct Sessions {
    cache: rustls::client::ClientSessionMemoryCache,
    count: std::sync::Mutex<Resumable>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct Resumable {
    /// TLS 1.3 tickets: each is used once.
    tickets: usize,
    /// A TLS 1.2 session: resumable any number of times.
    tls12: bool,
    /// The first connection failed: no session will come.
    abandoned: bool,
}

impl Resumable {
    fn connections(self) -> usize {
        if self.tls12 {
            usize::MAX
        } else {
            self.tickets
        }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            // One server; rustls keeps up to 8 TLS 1.3 tickets per server.
            cache: rustls::client::ClientSessionMemoryCache::new(8),
            count: Default::default(),
            changed: Default::default(),
        }
    }
}

impl Sessions {
    fn update(&self, f: impl FnOnce(&mut Resumable)) {
        f(&mut lock(&self.count));
        self.changed.notify_all();
    }

    /// How many new connections could resume now; waits until at least `want` could, or until
    /// `until`, and after the first one no longer than `settle` for more (0: none will).
    fn wait(&self, want: usize, until: std::time::Instant, settle: Duration) -> usize {
        let mut count = lock(&self.count);
        let mut first: Option<std::time::Instant> = None;
        loop {
            let now = std::time::Instant::now();
            if count.abandoned {
                return 0;
            }
            let n = count.connections();
            if n > 0 && first.is_none() {
                first = Some(now);
            }
            let end = match first {
                Some(f) => until.min(f + settle),
                None => until,
            };
            if n >= want || now >= end {
                return n;
            }
            count = self
                .changed
                .wait_timeout(count, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl rustls::client::ClientSessionStore for Sessions {
    fn set_kx_hint(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        group: rustls::NamedGroup,
    ) {
        self.cache.set_kx_hint(server_name, group)
    }

    fn kx_hint(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::NamedGroup> {
        self.cache.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.cache.set_tls12_session(server_name, value);
        self.update(|c| c.tls12 = true);
    }

    fn tls12_session(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.cache.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &rustls::pki_types::ServerName<'static>) {
        self.cache.remove_tls12_session(server_name);
        self.update(|c| c.tls12 = false);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.cache.insert_tls13_ticket(server_name, value);
        self.update(|c| c.tickets = (c.tickets + 1).min(8));
    }

    fn take_tls13_ticket(
        &self,
        server_name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        let ticket = self.cache.take_tls13_ticket(server_name);
        if ticket.is_some() {
            self.update(|c| c.tickets = c.tickets.saturating_sub(1));
        }
        ticket
    }
}

/// What ureq's own rustls configuration is (every protocol version, the given roots, SNI), with
/// `sessions` as the session store.
fn vault_tls_config(
    roots: &[ureq::tls::Certificate<'static>],
    sessions: Arc<Sessions>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(
        roots
            .iter()
            .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec())),
    );
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(rustls::ALL_VERSIONS)
    .map_err(|e| format!("TLS configuration: {e}"))?
    .with_root_certificates(store)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::store(sessions);
    Ok(Arc::new(config))
}

/// Wraps the TCP connection in TLS, as ureq's `RustlsConnector` does, with our configuration.
#[derive(Debug)]
struct VaultTls {
    config: Arc<rustls::ClientConfig>,
}

impl<In: Transport> Connector<In> for VaultTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|_| ureq::Error::Tls("invalid TLS server name"))?;
        let mut conn = rustls::ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: rustls::StreamOwned { conn, sock },
        })))
    }
}

struct TlsTransport {
    buffers: LazyBuffers,
    stream: rustls::StreamOwned<rustls::ClientConnection, TransportAdapter>,
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        use std::io::Write;
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish()
    }
}

/// Connections opened ahead, handed out when ureq needs a new one.
#[derive(Default)]
struct Spare {
    state: std::sync::Mutex<SpareState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct SpareState {
    ready: Vec<Box<dyn Transport>>,
    /// Being opened now.
    opening: usize,
    /// Opened by requests themselves, none being ready.
    on_demand: usize,
}

impl Spare {
    /// A connection opened ahead. While one is being opened, waits for it (until `until`) rather
    /// than opening another: that would take as long, and cost a full TLS handshake.
    /// (Not probed with `is_open`: it reads a byte, and the server's session tickets may be
    /// waiting there, unread.)
    fn take(&self, until: std::time::Instant) -> Option<Box<dyn Transport>> {
        let mut st = lock(&self.state);
        loop {
            if let Some(t) = st.ready.pop() {
                return Some(t);
            }
            let now = std::time::Instant::now();
            if st.opening == 0 || now >= until {
                st.on_demand += 1;
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn opened(&self, transport: Option<Box<dyn Transport>>) {
        let mut st = lock(&self.state);
        st.opening -= 1;
        st.ready.extend(transport);
        self.changed.notify_all();
    }
}

/// The connector the agent uses: a connection opened ahead if there is one, else a new one.
struct Warm {
    tls: Arc<VaultTls>,
    spare: Arc<Spare>,
}

impl fmt::Debug for Warm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Warm").finish()
    }
}

/// A TCP connection as ureq's `TcpConnector` makes it.
type Tcp = <ureq::unversioned::transport::TcpConnector as Connector<()>>::Out;

fn tcp_connect(details: &ConnectionDetails) -> Result<Option<Tcp>, ureq::Error> {
    Connector::<()>::connect(
        &ureq::unversioned::transport::TcpConnector::default(),
        details,
        None,
    )
}

impl Connector<()> for Warm {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let wait = match details.timeout.after {
            ureq::unversioned::transport::time::Duration::Exact(d) => d,
            ureq::unversioned::transport::time::Duration::NotHappening => Duration::from_secs(60),
        };
        if let Some(t) = self.spare.take(std::time::Instant::now() + wait) {
            return Ok(Some(t));
        }
        let tcp = tcp_connect(details)?;
        Ok(self
            .tls
            .connect(details, tcp)?
            .map(|t| Box::new(t) as Box<dyn Transport>))
    }
}

struct WarmUp {
    agent: ureq::Agent,
    tls: Arc<VaultTls>,
    spare: Arc<Spare>,
    sessions: Arc<Sessions>,
    resolver: FastResolver,
    uri: http::Uri,
    want: usize,
    timeout: Duration,
}

impl WarmUp {
    /// What a request's connection would be given, resolved through the agent's resolver.
    fn with_details<T>(&self, f: impl FnOnce(&ConnectionDetails) -> Option<T>) -> Option<T> {
        use ureq::unversioned::transport::time;
        let config = self.agent.config();
        let next = NextTimeout {
            after: time::Duration::from(self.timeout),
            reason: ureq::Timeout::Connect,
            ..NextTimeout::default()
        };
        // Resolved on this (background) thread: with a timeout, ureq's resolver would start yet
        // another thread. The answer is remembered for the requests.
        let untimed = NextTimeout {
            after: time::Duration::NotHappening,
            ..next
        };
        let addrs = self.resolver.resolve(&self.uri, config, untimed).ok()?;
        f(&ConnectionDetails {
            uri: &self.uri,
            addrs,
            config,
            request_level: false,
            resolver: &self.resolver,
            now: time::Instant::now(),
            timeout: next,
            current_time: Arc::new(time::Instant::now),
            run_connector: Arc::new(|_: &ConnectionDetails| Err(ureq::Error::ConnectionFailed)),
            register_shutdown: Arc::new(|_| Ok(())),
        })
    }

    fn tcp(&self) -> Option<Tcp> {
        self.with_details(|d| tcp_connect(d).ok().flatten())
    }

    fn tls(&self, tcp: Tcp) -> Option<Box<dyn Transport>> {
        self.with_details(|d| self.tls.connect(d, Some(tcp)).ok().flatten())
            .map(|t| Box::new(t) as Box<dyn Transport>)
    }
}

/// In the background: the first connection now (TCP, then a full TLS handshake); the TCP
/// connections of the `want - 1` others now too, and their TLS handshakes as soon as the first
/// one's session can be resumed (its tickets arrive while the login waits for its answer): one
/// ticket per connection, or a full handshake for those the server sent no ticket for (Vault,
/// being Go, sends one per handshake; rustls servers two). Those the requests had to open
/// themselves meanwhile are not opened again.
fn start_warm_up(warm: WarmUp) {
    let warm = Arc::new(warm);
    lock(&warm.spare.state).opening += 1;
    let w = warm.clone();
    let first = std::thread::Builder::new()
        .name("vault-warm-up".into())
        .spawn(move || {
            let t = w.tcp().and_then(|tcp| w.tls(tcp));
            if t.is_none() {
                w.sessions.update(|c| c.abandoned = true);
            }
            w.spare.opened(t);
        });
    if first.is_err() {
        warm.spare.opened(None);
        return;
    }
    if warm.want < 2 {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("vault-warm-up".into())
        .spawn(move || {
            let parked: Vec<Tcp> = (1..warm.want).map_while(|_| warm.tcp()).collect();
            let until = std::time::Instant::now() + warm.timeout;
            let resumable = warm
                .sessions
                .wait(parked.len(), until, Duration::from_millis(5));
            if resumable == 0 && lock(&warm.sessions.count).abandoned {
                return;
            }
            let n = {
                let mut st = lock(&warm.spare.state);
                let n = parked.len().saturating_sub(st.on_demand);
                st.opening += n;
                n
            };
            // Beyond `n`, the TCP connections are closed unused.
            for tcp in parked.into_iter().take(n) {
                let w = warm.clone();
                let spawned = std::thread::Builder::new()
                    .name("vault-warm-up".into())
                    .spawn(move || w.spare.opened(w.tls(tcp)));
                if spawned.is_err() {
                    warm.spare.opened(None);
                }
            }
        });
}

/// ureq resolves a request's host before it looks into its pool, and its resolver starts a
/// thread to do so whenever a timeout is set. This one answers IP literals (IMDS) at once and
/// remembers a name's addresses for a few seconds (the warm-up and the requests of one run).
#[derive(Debug, Clone)]
struct FastResolver {
    pinned: Option<PinnedResolver>,
    cache: Arc<std::sync::Mutex<Option<Resolved>>>,
}

type Resolved = (
    String,
    ureq::unversioned::resolver::ResolvedSocketAddrs,
    std::time::Instant,
);

/// How long a name's addresses are reused.
const RESOLVED_FOR: Duration = Duration::from_secs(10);

impl FastResolver {
    fn new(pinned: Option<PinnedResolver>) -> FastResolver {
        FastResolver {
            pinned,
            cache: Arc::default(),
        }
    }
}

impl Resolver for FastResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let pinned = self.pinned.as_ref().is_some_and(|p| p.name == host);
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>();
        if let (false, Ok(ip)) = (pinned, literal) {
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let mut out = self.empty();
            out.push(std::net::SocketAddr::new(ip, port));
            return Ok(out);
        }
        let key = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if let Some((k, addrs, at)) = &*lock(&self.cache) {
            if k == key && at.elapsed() < RESOLVED_FOR {
                return Ok(addrs.clone());
            }
        }
        let addrs = match &self.pinned {
            Some(p) => p.resolve(uri, config, timeout)?,
            None => ureq::unversioned::resolver::DefaultResolver::default()
                .resolve(uri, config, timeout)?,
        };
        *lock(&self.cache) = Some((key.to_string(), addrs.clone(), std::time::Instant::now()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Vault client asked to warm 3 connections, against the simulator: the first request
    /// finds one ready, and 3 parallel requests after it find the others, which resumed the
    /// first one's TLS session.
    #[test]
    fn warmed_connections_are_used_and_resume_the_first_session() {
        let signer = vaultboot_sim::Signer::new();
        let vault =
            vaultboot_sim::VaultSim::start(vaultboot_sim::VaultOptions::new(&signer)).unwrap();
        // Long enough answers that the warm-up has its resumed connections ready in time.
        vault
            .control()
            .set_latency(Duration::from_millis(300), Duration::ZERO);
        let dir = std::env::temp_dir().join(format!("vaultboot-warm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, vault.ca_pem()).unwrap();
        let tls = Tls {
            ca_file: Some(&ca),
            server_name: None,
        };
        warm_next_vault_client(3);
        let client = Client::vault(&vault.url(), &tls, None, Duration::from_secs(5)).unwrap();
        // A hint is for one client only.
        assert_eq!(WARM_NEXT.with(|w| w.get()), 0);
        let get = || {
            client
                .send(
                    http::Method::GET,
                    "/v1/auth/token/lookup-self",
                    &[("x-vault-request", "true")],
                    &[],
                    None,
                    Duration::from_secs(5),
                )
                .unwrap()
                .status
        };
        assert_eq!(get(), 403);
        std::thread::scope(|s| {
            let all: Vec<_> = (0..3).map(|_| s.spawn(get)).collect();
            for h in all {
                assert_eq!(h.join().unwrap(), 403);
            }
        });
        assert_eq!(vault.control().connections(), 3);
        assert_eq!(vault.control().tls_handshakes(), (1, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ip_literals_are_resolved_without_a_lookup_and_names_are_remembered() {
        let r = FastResolver::new(None);
        let config = ureq::Agent::config_builder().build();
        let addrs = r
            .resolve(
                &"http://169.254.169.254/latest".parse().unwrap(),
                &config,
                NextTimeout::default(),
            )
            .unwrap();
        assert_eq!(&addrs[..], &["169.254.169.254:80".parse().unwrap()]);
        let addrs = r
            .resolve(
                &"https://[fd00:ec2::254]:8443/".parse().unwrap(),
                &config,
                NextTimeout::default(),
            )
            .unwrap();
        assert_eq!(&addrs[..], &["[fd00:ec2::254]:8443".parse().unwrap()]);
        let localhost: http::Uri = "https://localhost:8200/".parse().unwrap();
        let first = r
            .resolve(&localhost, &config, NextTimeout::default())
            .unwrap();
        assert!(!first.is_empty());
        assert!(lock(&r.cache)
            .as_ref()
            .is_some_and(|(k, _, _)| k == "localhost:8200"));
    }

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
