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
    let client = Client::vault(&vault_config(&vault.url(), &ca)).unwrap();
    (vault, client, dir)
}

/// Vault at `address`, trusting the CA in `ca`.
fn vault_config(address: &str, ca: &std::path::Path) -> VaultConfig {
    VaultConfig {
        address: address.into(),
        ca_cert: Some(ca.into()),
        tls_server_name: None,
        namespace: None,
        request_timeout: Duration::from_secs(5),
        proxy: None,
    }
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

const LOGIN: &str = "/v1/auth/aws/login";
const HEADERS: [(&str, &str); 2] = [("x-vault-request", "true"), ("content-type", "x/y")];

/// The warm-up's requests leave their connections in the pool; later connections, also those
/// of requests with a timeout of their own, resume the TLS sessions of the first ones.
#[test]
fn the_warm_up_leaves_its_connections_and_later_connections_resume() {
    let (vault, client, _dir) = vault_and_client(Duration::from_millis(100));
    let health = [("x-vault-request", "true")];
    for h in client.warm_up("/v1/sys/health", &health, 3) {
        h.join().unwrap();
    }
    assert_eq!(vault.control().connections(), 3);
    assert_eq!(vault.control().requests().len(), 3);

    assert_eq!(at_once(&client, 3, Duration::from_secs(60)), [403; 3]);
    assert_eq!(vault.control().connections(), 3, "the warm-up's");
    let (full, resumed) = vault.control().tls_handshakes();
    assert_eq!(full + resumed, 3);

    // Shorter than the client's timeout: each request is configured on its own.
    assert_eq!(at_once(&client, 5, Duration::from_secs(2)), [403; 5]);
    assert_eq!(vault.control().connections(), 5);
    assert_eq!(vault.control().tls_handshakes(), (full, resumed + 2));
}

/// A request that needs a connection while the warm-up's are under way waits for one.
#[test]
fn a_request_waits_for_the_warm_up() {
    let (vault, client, _dir) = vault_and_client(Duration::ZERO);
    // The simulator sleeps this long before each TLS handshake.
    vault
        .control()
        .set_latency(Duration::ZERO, Duration::from_millis(300));
    let warm_up = client.warm_up("/v1/sys/health", &[("x-vault-request", "true")], 1);
    assert_eq!(at_once(&client, 1, Duration::from_secs(60)), [403]);
    assert_eq!(vault.control().connections(), 1);
    warm_up.into_iter().for_each(|h| h.join().unwrap());
}

/// The request opened ahead is connected before it is sent, and sent on that connection with
/// the body `send` hands it; another request does not take it.
#[test]
fn the_request_opened_ahead_is_completed_by_send() {
    let (vault, client, _dir) = vault_and_client(Duration::ZERO);
    client.open_ahead(LOGIN, &HEADERS);
    let control = vault.control();
    let connected = std::time::Instant::now() + Duration::from_secs(10);
    while control.connections() == 0 && std::time::Instant::now() < connected {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(control.requests().is_empty(), "its body has not come");
    assert_eq!(at_once(&client, 1, Duration::from_secs(60)), [403]);

    let body = send_login(&client);
    let requests = control.requests();
    assert_eq!(requests.len(), 2);
    let login = requests.iter().find(|r| r.path == LOGIN).unwrap();
    let other = requests.iter().find(|r| r.path != LOGIN).unwrap();
    assert!(
        login.conn_id < other.conn_id,
        "sent on the first connection"
    );
    assert_eq!(login.body, body);
    assert_eq!(login.header("content-type"), Some("x/y"));
    assert_eq!(
        control.connections(),
        2,
        "the login's own and the other request's"
    );
}

/// A request opened ahead whose body does not come is given up (its connection closed), and
/// `send` then sends the request as any other.
#[test]
fn a_request_opened_ahead_and_given_up_is_sent_anew() {
    let (vault, client, _dir) = vault_and_client(Duration::ZERO);
    // Its body is awaited for half the client's timeout.
    let client = Client {
        timeout: Duration::from_millis(400),
        ..client
    };
    client.open_ahead(LOGIN, &HEADERS);
    let control = vault.control();
    // The simulator records the request when the client gives it up.
    assert_eq!(control.wait_for_requests(1, Duration::from_secs(10)), 1);
    let body = send_login(&client);
    assert_eq!(control.requests()[1].body, body);
    assert_eq!(control.connections(), 2);
}

/// A warm-up or a request opened ahead that cannot connect leaves nothing behind; the request
/// reports its own error.
#[test]
fn a_failed_warm_up_is_silent() {
    let (vault, client, _dir) = vault_and_client(Duration::ZERO);
    let url = vault.url();
    drop(vault);
    client.open_ahead(LOGIN, &HEADERS);
    for h in client.warm_up("/v1/sys/health", &[], 2) {
        h.join().unwrap();
    }
    let post = |path| {
        client
            .send(
                http::Method::POST,
                path,
                &HEADERS,
                &[],
                Some(b"{}"),
                Duration::from_secs(1),
            )
            .err()
            .unwrap()
    };
    for err in [post(LOGIN), post("/v1/sys/health")] {
        assert_eq!(err.class, Class::Broken, "{err}");
        assert!(err.to_string().starts_with(&url), "{err}");
    }
}

/// A client that cannot be set up says which key is at fault: a `ca_cert` that cannot be read
/// (and why, as its source), one that holds no certificate, named by its path, and a proxy.
#[test]
fn a_client_that_cannot_be_set_up_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let vault =
        |ca: &std::path::Path| Client::vault(&vault_config("https://127.0.0.1:8200", ca)).err();
    let missing = dir.path().join("missing.pem");
    let e = vault(&missing).unwrap();
    assert!(e.to_string().starts_with("vault.ca_cert: "), "{e}");
    assert!(std::error::Error::source(&e).is_some());

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let e = vault(&empty).unwrap();
    let shown = empty.display().to_string();
    let no_certificate = format!("vault.ca_cert: {shown}: holds no PEM certificate");
    assert_eq!(e.to_string(), no_certificate);

    // A proxy ureq refuses: named by its key, never by its URL (it may hold a password).
    let proxy = Some("http://user:pa55word@bad host:3128".to_string());
    let config = VaultConfig {
        proxy,
        ..vault_config("https://127.0.0.1:8200", &empty)
    };
    let e = Client::vault(&config).err().unwrap();
    assert!(e.to_string().starts_with("vault.proxy: "), "{e}");
    assert!(!format!("{e} {e:?}").contains("pa55word"), "{e:?}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn a_pinned_name_is_what_requests_are_sent_to() {
    let base = |address: &str| lookup::Resolve::pinned(address, "vault.example").unwrap().1;
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

/// Sends the login with its body, as the login does; the simulator has no aws mount (404).
fn send_login(client: &Client) -> &'static [u8] {
    let body = br#"{"role":"web"}"#;
    let answer = client.send(
        http::Method::POST,
        LOGIN,
        &HEADERS,
        &[],
        Some(body),
        Duration::from_secs(60),
    );
    assert_eq!(
        answer.unwrap().status,
        404,
        "no aws mount in this simulator"
    );
    body
}
