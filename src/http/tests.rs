use super::*;
use error::redirect_host;

/// The Vault simulator, answering every request `latency` later, and a client trusting it.
fn vault_and_client(latency: Duration) -> (vaultboot_sim::VaultSim, Client, tempfile::TempDir) {
    let signer = vaultboot_sim::Signer::new();
    let vault = vaultboot_sim::VaultSim::start(vaultboot_sim::VaultOptions::new(&signer)).unwrap();
    vault.control().set_latency(latency, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, vault.ca_pem()).unwrap();
    let tls = Tls {
        ca_file: Some(&ca),
        server_name: None,
    };
    let client = Client::vault(&vault.url(), &tls, None, Duration::from_secs(5)).unwrap();
    (vault, client, dir)
}

/// `n` requests at once, each bounded by `time_left`; their statuses.
fn at_once(client: &Client, n: usize, time_left: Duration) -> Vec<u16> {
    let get = || {
        let answer = client.send(
            http::Method::GET,
            "/v1/auth/token/lookup-self",
            &[("x-vault-request", "true")],
            &[],
            None,
            time_left,
        );
        answer.unwrap().status
    };
    std::thread::scope(|s| {
        let all: Vec<_> = (0..n).map(|_| s.spawn(get)).collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Connections opened ahead wait, unused, for the requests; connections opened later, also by
/// requests with a timeout of their own, resume the TLS sessions of the first ones.
#[test]
fn connections_opened_ahead_are_used_and_later_connections_resume() {
    // Answers slow enough that parallel requests overlap.
    let (vault, client, _dir) = vault_and_client(Duration::from_millis(100));
    for h in client.warm_up(3) {
        h.join().unwrap();
    }
    assert_eq!(vault.control().connections(), 3);
    assert!(vault.control().requests().is_empty(), "nothing is sent");

    assert_eq!(at_once(&client, 3, Duration::from_secs(60)), [403; 3]);
    assert_eq!(vault.control().connections(), 3, "the ones opened ahead");
    // Those that started after the first one's session tickets came resumed it.
    let (full, resumed) = vault.control().tls_handshakes();
    assert_eq!(full + resumed, 3);

    // Shorter than the client's timeout: each request is configured on its own.
    assert_eq!(at_once(&client, 5, Duration::from_secs(2)), [403; 5]);
    assert_eq!(vault.control().connections(), 5);
    assert_eq!(vault.control().tls_handshakes(), (full, resumed + 2));
}

/// A request that needs a connection while one is being opened ahead waits for it instead of
/// opening another.
#[test]
fn a_request_waits_for_the_connection_being_opened() {
    let (vault, client, _dir) = vault_and_client(Duration::ZERO);
    // The simulator sleeps this long before each TLS handshake.
    vault
        .control()
        .set_latency(Duration::ZERO, Duration::from_millis(300));
    let warm_up = client.warm_up(1);
    assert_eq!(at_once(&client, 1, Duration::from_secs(60)), [403]);
    assert_eq!(vault.control().connections(), 1);
    warm_up.into_iter().for_each(|h| h.join().unwrap());
}

/// A warm-up that cannot connect leaves nothing behind; the request reports its own error.
#[test]
fn a_failed_warm_up_is_silent() {
    let (vault, client, _dir) = vault_and_client(Duration::ZERO);
    let url = vault.url();
    drop(vault);
    for h in client.warm_up(2) {
        h.join().unwrap();
    }
    let err = client
        .send(
            http::Method::GET,
            "/v1/sys/health",
            &[],
            &[],
            None,
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().starts_with(&url), "{err}");
}

#[test]
fn a_pinned_name_is_what_requests_are_sent_to() {
    let base = |address: &str| ahead::Resolve::pinned(address, "vault.example").unwrap().1;
    assert_eq!(base("https://127.0.0.1:8200"), "https://vault.example:8200");
    assert_eq!(base("https://[::1]"), "https://vault.example:443");
    assert_eq!(base("http://10.0.0.1"), "http://vault.example:80");
}

#[test]
fn redirect_names_only_the_host() {
    assert_eq!(
        redirect_host("https://user:pw@evil.example:8443/x?token=s"),
        "evil.example:8443"
    );
    assert_eq!(redirect_host("/v1/other"), "(same host)");
}
