//! Vault connections opened ahead of the requests (`Client::warm_up`). ureq's pool can hand a
//! connection to a request only once a whole earlier request has come back on it, a round trip
//! after it was opened, and the login is ready sooner (IMDS is read meanwhile). So the Vault
//! client's connector hands out connections a second agent opened (the warm-up's requests end
//! in its connector once the connection is open, before anything is sent), and a request that
//! needs one while one is being opened waits for it. Both agents use one instance of ureq's own
//! connectors (its rustls configuration, hence its session cache, included). Also here: the
//! resolver for a pinned TLS name.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ureq::http::Uri;
// ureq::unversioned, exempt from semver: ureq has no public way to hand a request a connection
// opened earlier (a `Connector`, and the `Transport` it returns, given the request's
// `ConnectionDetails`), nor to connect to one host while naming another (a `Resolver`, its
// address list and timeout types). Behind both, ureq's own `DefaultConnector` and our
// `lookup` do the work.
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{ConnectionDetails, Connector, DefaultConnector};
use ureq::unversioned::transport::{NextTimeout, Transport};

/// A parked connection older than this is closed unused: a server may close a connection
/// that sent no request for a while (Vault's `http_read_header_timeout` is 10 s).
const PARKED_FOR: Duration = Duration::from_secs(5);
/// Longest wait for a connection being opened.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The client's agent and the warm-up's, and where the warm-up leaves its connections.
pub(super) fn agents(
    config: ureq::config::Config,
    resolver: Resolve,
) -> (ureq::Agent, ureq::Agent, Arc<Ahead>) {
    let parked = Arc::new(Ahead::default());
    let inner = Arc::new(DefaultConnector::default());
    let connector = |park| Connect {
        inner: inner.clone(),
        parked: parked.clone(),
        park,
    };
    let agent = ureq::Agent::with_parts(config.clone(), connector(false), resolver.clone());
    let warm = ureq::Agent::with_parts(config, connector(true), resolver);
    (agent, warm, parked)
}

#[derive(Debug, Default)]
pub(super) struct Ahead {
    state: Mutex<Parked>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Parked {
    ready: Vec<(Instant, Box<dyn Transport>)>,
    opening: usize,
}

impl Ahead {
    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn opening(&self, n: usize) {
        self.lock().opening += n;
    }

    /// One warm-up is over, whether it parked a connection or not.
    pub(super) fn opened(&self) {
        self.lock().opening -= 1;
        self.changed.notify_all();
    }

    fn park(&self, connection: Box<dyn Transport>) {
        self.lock().ready.push((Instant::now(), connection));
        self.changed.notify_all();
    }

    /// A parked connection, if there is one or one comes within `wait`.
    fn take(&self, wait: Duration) -> Option<Box<dyn Transport>> {
        let until = Instant::now() + wait;
        let mut parked = self.lock();
        loop {
            parked.ready.retain(|(at, _)| at.elapsed() < PARKED_FOR);
            if let Some((_, connection)) = parked.ready.pop() {
                return Some(connection);
            }
            let now = Instant::now();
            if parked.opening == 0 || now >= until {
                return None;
            }
            let waited = self.changed.wait_timeout(parked, until - now);
            parked = waited.unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// ureq's connectors, behind the parked connections (`park`: the warm-up's, which parks).
#[derive(Debug)]
struct Connect {
    inner: Arc<DefaultConnector>,
    parked: Arc<Ahead>,
    park: bool,
}

impl Connector<()> for Connect {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if self.park {
            if let Some(connection) = self.inner.connect(details, None)? {
                self.parked.park(connection);
            }
            // The warm-up's request ends here, with what it came for.
            return Err(ureq::Error::ConnectionFailed);
        }
        match self.parked.take((*details.timeout.after).min(MAX_WAIT)) {
            Some(connection) => Ok(Some(connection)),
            None => self.inner.connect(details, None),
        }
    }
}

/// Resolves as ureq does (see `lookup`); with `vault.tls_server_name`, requests go to
/// `scheme://<name>:<port>` (SNI, the certificate check and the Host header all use the
/// name) and this sends the name to the configured address.
#[derive(Debug, Clone, Default)]
pub(super) struct Resolve {
    pinned: Option<(String, u16, Uri)>,
}

impl Resolve {
    /// The resolver, and the base URL requests are sent to.
    pub(super) fn pinned(base: &str, name: &str) -> Result<(Resolve, String), String> {
        let address: Uri = base
            .parse()
            .map_err(|e| format!("vault address {base:?}: {e}"))?;
        let https = address.scheme_str() == Some("https");
        let port = address.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = format!("{}://{name}:{port}", if https { "https" } else { "http" });
        let pinned = Some((name.to_string(), port, address));
        Ok((Resolve { pinned }, target))
    }
}

impl Resolver for Resolve {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let uri = match &self.pinned {
            Some((name, port, address))
                if uri.host() == Some(name.as_str()) && uri.port_u16() == Some(*port) =>
            {
                address
            }
            // Anything else (a proxy) as ureq would.
            _ => uri,
        };
        super::lookup::lookup(uri, config, timeout)
    }
}
