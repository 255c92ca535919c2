//! IPv6-only instances: IMDS and Vault reached over IPv6 (the simulators listen on `[::1]`
//! only), the certificate issued for the instance's IPv6 address, and the IPv4 facts such an
//! instance does not have.

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use vaultboot_sim::Identity;

/// The address the simulated IPv6-only instance has (see `Identity::ipv6_only`).
const INSTANCE_V6: &str = "2600:1f18:5cb5:3200:fff9:6ea:f5b8:67a4";

const LOOPBACK_V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);

/// Both simulators on `[::1]` only, Vault's certificate naming `names` and `[::1]`, and the
/// instance in an IPv6-only subnet.
fn ipv6_only_env(names: &[&str]) -> Env {
    let env = Env::with_world(|world| {
        world
            .imds_bind(LOOPBACK_V6)
            .vault_bind(LOOPBACK_V6)
            .server_names(names.iter().map(|n| n.to_string()).collect())
            .server_ips(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])
    });
    env.imds.set_identity(Identity::ipv6_only(INSTANCE));
    env
}

/// The example's configuration with the certificate asked for `ip_sans`.
fn with_ip_sans(env: &Env, ip_sans: &str) -> Config {
    let data = format!(
        r#"{{ common_name = "{{{{ local-hostname }}}}", ip_sans = "{ip_sans}", ttl = "72h" }}"#
    );
    env.config().secret("tls", "data", Raw(&data))
}

#[test]
fn a_full_boot_over_ipv6_issues_the_certificate_for_the_ipv6_address() {
    let env = ipv6_only_env(&[]);
    let config = with_ip_sans(&env, "{{ ipv6 }}");
    let text = config.text();
    let port = |url: String| url.rsplit(':').next().unwrap().to_string();
    let vault = format!("address = \"https://[::1]:{}\"", port(env.vault.url()));
    let imds = format!("endpoint = \"http://[::1]:{}\"", port(env.imds.url()));
    assert!(text.contains(&vault) && text.contains(&imds), "{text}");

    let out = env.run(&env.write(&config));
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(!env.imds.control().requests().is_empty());
    let issue: Vec<_> = env
        .vault
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/pki_int/issue/web")
        .collect();
    assert_eq!(issue.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&issue[0].body).unwrap();
    assert_eq!(body["ip_sans"], INSTANCE_V6);
    assert_eq!(body["common_name"], format!("{INSTANCE}.ec2.internal"));
    // The certificate serves TLS for the IPv6 address (an IP SAN, checked by rustls).
    tls_check::serves(
        &fs::read_to_string(env.path("out/tls/server.crt")).unwrap(),
        &fs::read_to_string(env.path("out/tls/server.key")).unwrap(),
        &env.vault.pki_ca_pem(),
        INSTANCE_V6,
    );
}

/// EC2 writes an IPv6-only instance's address in the identity document's `privateIp`:
/// `{{ private-ip }}` is that address there.
#[test]
fn private_ip_is_the_ipv6_address_on_an_ipv6_only_instance() {
    let env = ipv6_only_env(&[]);
    let out = env.run(&env.write(&with_ip_sans(&env, "{{ private-ip }}")));
    assert_eq!(out.status, 0, "{}", out.log());
    let issue = env.vault.control().requests();
    let issue = issue
        .iter()
        .find(|r| r.path == "/v1/pki_int/issue/web")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&issue.body).unwrap();
    assert_eq!(body["ip_sans"], INSTANCE_V6);
}

/// An IPv6-only instance has no `local-ipv4` (IMDS answers 404): the run stops before any
/// login with an error that names the template and says what to use, never an empty SAN.
#[test]
fn local_ipv4_on_an_ipv6_only_instance_names_the_template() {
    let env = ipv6_only_env(&[]);
    let out = env.run(&env.write(&env.config()));
    assert_eq!(out.status, 78, "{}", out.log());
    let log = out.log();
    assert!(
        log.contains(
            "template {{ local-ipv4 }}: this instance has no local-ipv4 (IMDS \
             /latest/meta-data/local-ipv4: not found (404)): an IPv6-only instance has no IPv4 \
             address; use {{ ipv6 }}"
        ),
        "{log}"
    );
    // No login was sent (the request opened ahead is completed empty when a run stops
    // before it logs in: Vault answers it 400) and nothing was issued.
    let vault = env.vault.control().requests();
    let done: Vec<_> = vault
        .iter()
        .filter(|r| r.path.contains("/issue/") || (r.path.contains("/login") && !r.body.is_empty()))
        .map(|r| (&r.path, r.status))
        .collect();
    assert!(done.is_empty(), "{done:?}");
    assert!(env.out_files().is_empty(), "{:?}", env.out_files());
}

/// `{{ ipv6 }}` on an instance without an IPv6 address (IMDS answers 404) is named too.
#[test]
fn ipv6_on_an_instance_without_one_names_the_template() {
    let env = Env::new();
    let out = env.run(&env.write(&with_ip_sans(&env, "{{ ipv6 }}")));
    assert_eq!(out.status, 78, "{}", out.log());
    assert!(
        out.log().contains(
            "template {{ ipv6 }}: this instance has no ipv6 (IMDS /latest/meta-data/ipv6: \
             not found (404)): the instance has no IPv6 address"
        ),
        "{}",
        out.log()
    );
}

/// A Vault name that resolves only to an IPv6 address (an AAAA record; here a private
/// /etc/hosts in a mount namespace of the run's own, so the machine's is untouched).
#[test]
#[ignore = "needs root (a mount namespace)"]
fn root_a_vault_name_with_only_an_ipv6_address_is_reached() {
    assert_root();
    let name = "vault6.vaultboot.test";
    let env = ipv6_only_env(&[name]);
    assert!(env.vault.url().starts_with(&format!("https://{name}:")));
    let hosts = env.path("hosts");
    fs::write(&hosts, format!("::1 {name}\n")).unwrap();
    let config = env.write(&with_ip_sans(&env, "{{ ipv6 }}"));
    let wrapper = [
        "unshare",
        "-m",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        hosts.to_str().unwrap(),
    ];
    let out = env.run_in(&wrapper, &["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(out.log().contains(name), "{}", out.log());
}

/// A minimal HTTP CONNECT proxy on `[::1]`: it records each CONNECT target and relays the
/// tunnel's bytes both ways.
fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(LOOPBACK_V6).unwrap();
    let addr = listener.local_addr().unwrap();
    let targets: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = targets.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || tunnel(client, &seen));
        }
    });
    (addr, targets)
}

fn tunnel(client: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let target = line.split(' ').nth(1).unwrap_or_default().to_string();
    while line != "\r\n" && !line.is_empty() {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    seen.lock().unwrap().push(target.clone());
    let mut client = client;
    let Ok(server) = TcpStream::connect(&target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .unwrap();
    let (mut up_from, mut up_to) = (reader, server.try_clone().unwrap());
    let (mut down_from, mut down_to) = (server, client);
    std::thread::spawn(move || std::io::copy(&mut up_from, &mut up_to));
    let _ = std::io::copy(&mut down_from, &mut down_to);
}

/// `vault.proxy` with an IPv6 literal: Vault's requests go through it (tunnelled, so TLS is
/// still verified end to end); IMDS's never do.
#[test]
fn a_proxy_at_an_ipv6_address_carries_the_vault_requests() {
    let env = ipv6_only_env(&[]);
    let (proxy, targets) = connect_proxy();
    let config = with_ip_sans(&env, "{{ ipv6 }}").set("vault", "proxy", format!("http://{proxy}"));
    assert!(config
        .text()
        .contains(&format!("proxy = \"http://[::1]:{}\"", proxy.port())));
    let out = env.run(&env.write(&config));
    assert_eq!(out.status, 0, "{}", out.log());
    let targets = targets.lock().unwrap().clone();
    let vault = format!("[::1]:{}", env.vault.addr().port());
    assert!(!targets.is_empty());
    assert!(targets.iter().all(|t| *t == vault), "{targets:?}");
    // Every Vault request came through the proxy: no more connections than tunnels.
    let mut connections: Vec<u64> = env
        .vault
        .control()
        .requests()
        .iter()
        .map(|r| r.conn_id)
        .collect();
    connections.sort_unstable();
    connections.dedup();
    assert!(
        connections.len() <= targets.len(),
        "{connections:?} {targets:?}"
    );
}
