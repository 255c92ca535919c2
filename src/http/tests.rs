use super::*;

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

/// Warmed-up connections wait in the pool for the requests; connections opened later, also by
/// requests with a timeout of their own, resume the TLS sessions of the first ones.
#[test]
fn warmed_up_connections_are_used_and_later_connections_resume() {
    // Answers slow enough that parallel requests overlap.
    let (vault, client, _dir) = vault_and_client(Duration::from_millis(100));
    for h in client.warm_up(
        "/v1/sys/health?standbyok=true",
        &[("x-vault-request", "true")],
        3,
    ) {
        h.join().unwrap();
    }
    assert_eq!(vault.control().connections(), 3);
    // Those that started after the first one's session tickets came resumed it.
    let (full, resumed) = vault.control().tls_handshakes();
    assert_eq!(full + resumed, 3);

    assert_eq!(at_once(&client, 3, Duration::from_secs(60)), [403; 3]);
    assert_eq!(vault.control().connections(), 3, "the warmed-up ones");

    // Shorter than the client's timeout: each request is configured on its own.
    assert_eq!(at_once(&client, 5, Duration::from_secs(2)), [403; 5]);
    assert_eq!(vault.control().connections(), 5);
    assert_eq!(vault.control().tls_handshakes(), (full, resumed + 2));
    let paths: Vec<String> = vault
        .control()
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.starts_with("HEAD /v1/sys/health"))
            .count(),
        3
    );
}

/// A warm-up that cannot connect leaves nothing behind; the request reports its own error.
#[test]
fn a_failed_warm_up_is_silent() {
    let (vault, client, _dir) = vault_and_client(Duration::ZERO);
    let url = vault.url();
    drop(vault);
    for h in client.warm_up("/v1/sys/health", &[], 2) {
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
    let config = || ureq::Agent::config_builder().build();
    let base = |address: &str| pinned::agent(config(), address, "vault.example").unwrap().1;
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
