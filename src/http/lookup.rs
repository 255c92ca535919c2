//! The one place that uses `ureq::unversioned` (exempt from semver): an agent with our own
//! resolver. ureq has no public way to connect to one host while naming another (issue
//! https://github.com/algesten/ureq/issues/953 tracks making `Resolver` public), which
//! `vault.tls_server_name` needs, and its own resolver starts a thread for every lookup when a
//! timeout is set (every request here) with `thread::spawn`, which aborts the release binary
//! when no thread can be started: the revoke after a fan-out that could not start its threads
//! would die that way, leaving the token valid. Here an address needs no lookup and no thread,
//! and a host name whose lookup thread cannot be started is looked up on the request's thread.
//! `Agent::with_parts` also wants a connector: ureq's own `DefaultConnector`, unchanged.

use super::SetupError;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{config::Config, http::Uri, Error};

/// Addresses a resolver hands ureq at most (the size of its list).
const MAX_ADDRS: usize = 16;

/// An agent with ureq's connector and our resolver.
pub(super) fn agent(config: Config, resolve: Resolve) -> ureq::Agent {
    ureq::Agent::with_parts(config, DefaultConnector::default(), resolve)
}

/// Resolves as ureq does, without its thread; with `vault.tls_server_name`, requests go to
/// `scheme://<name>:<port>` (SNI, the certificate check and the Host header all use the
/// name) and this sends that authority to the configured address.
#[derive(Debug, Clone, Default)]
pub(super) struct Resolve(Option<(String, Uri)>);

impl Resolve {
    /// The resolver, and the base URL requests are sent to.
    pub(super) fn pinned(base: &str, name: &str) -> Result<(Resolve, String), SetupError> {
        let a = base.parse::<Uri>();
        let address = a.map_err(|e| SetupError(format!("vault.address: {e}"), Some(e.into())))?;
        let (scheme, port) = match address.scheme_str() {
            Some("https") => ("https", 443),
            _ => ("http", 80),
        };
        let authority = format!("{name}:{}", address.port_u16().unwrap_or(port));
        let target = format!("{scheme}://{authority}");
        Ok((Resolve(Some((authority, address))), target))
    }
}

impl Resolver for Resolve {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        match &self.0 {
            Some((pinned, address)) if uri.authority().is_some_and(|a| a == pinned.as_str()) => {
                lookup(address, config, timeout)
            }
            // Anything else (a proxy) as ureq would.
            _ => lookup(uri, config, timeout),
        }
    }
}

fn lookup(uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, Error> {
    let bad = || Error::BadUri(format!("{uri}: no scheme, host or port"));
    let (scheme, authority) = uri.scheme().zip(uri.authority()).ok_or_else(bad)?;
    let host_port = DefaultResolver::host_and_port(scheme, authority).ok_or_else(bad)?;
    let found: Vec<SocketAddr> = match host_port.parse::<SocketAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => on_a_thread(host_port, timeout)?,
    };
    let mut addrs = DefaultResolver::default().empty();
    let family = config.ip_family();
    let wanted = family.keep_wanted(found.into_iter()).take(MAX_ADDRS);
    wanted.for_each(|addr| addrs.push(addr));
    if addrs.is_empty() {
        return Err(Error::HostNotFound);
    }
    Ok(addrs)
}

/// The lookup on a thread of its own, so that the request's timeout bounds it; on this thread
/// (bounded by the system resolver's own timeouts) when no thread can be started.
fn on_a_thread(host_port: String, timeout: NextTimeout) -> Result<Vec<SocketAddr>, Error> {
    let (tx, rx) = mpsc::sync_channel(1);
    let name = host_port.clone();
    let spawned = std::thread::Builder::new()
        .name("lookup".into())
        .spawn(move || tx.send(name.to_socket_addrs().map(Iterator::collect)));
    if spawned.is_err() {
        return Ok(host_port.to_socket_addrs()?.collect());
    }
    match rx.recv_timeout(*timeout.after) {
        Ok(found) => Ok(found?),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout(timeout.reason)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::HostNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::time::Duration;

    fn next(after: std::time::Duration) -> NextTimeout {
        NextTimeout {
            after: Duration::Exact(after),
            ..NextTimeout::default()
        }
    }

    #[test]
    fn addresses_need_no_lookup_and_names_are_looked_up() {
        let config = Config::default();
        let t = || next(std::time::Duration::from_secs(5));
        let v4 = lookup(&"https://127.0.0.1:8200/v1".parse().unwrap(), &config, t()).unwrap();
        assert_eq!(&v4[..], ["127.0.0.1:8200".parse().unwrap()]);
        let v6 = lookup(&"http://[fd00:ec2::254]/x".parse().unwrap(), &config, t()).unwrap();
        assert_eq!(&v6[..], ["[fd00:ec2::254]:80".parse().unwrap()]);
        let named = lookup(&"https://localhost:1/".parse().unwrap(), &config, t()).unwrap();
        assert!(named.iter().all(|a| a.ip().is_loopback() && a.port() == 1));
    }
}
