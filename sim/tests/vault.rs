mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use vaultboot_sim::{Fault, Identity, TestCa, VaultOptions, VaultSim};

#[test]
fn tls_trusted_only_with_its_ca() {
    let env = Env::new();
    assert!(env.vault.url().starts_with("https://localhost:"));
    let r = env.vault("GET", "auth/token/lookup-self", None, None);
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), json!({"errors": ["permission denied"]}));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let other = vault_agent(&TestCa::new("someone else").cert_pem());
    let e = req(
        &other,
        "GET",
        &format!("{}/v1/sys/health", env.vault.url()),
        &[],
        None,
    );
    assert!(e.is_err());
    // The server notices the client's alert a moment later.
    let t0 = std::time::Instant::now();
    while env.vault.control().tls_failures() == 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(env.vault.control().tls_failures(), 1);
    assert_eq!(env.vault.control().tls_handshakes(), (1, 0));
}

#[test]
fn expired_server_cert_is_refused() {
    let signer = vaultboot_sim::Signer::new();
    let mut opts = VaultOptions::new(&signer);
    opts.server_cert = Some(
        opts.ca
            .issue_expired_server_cert(&["localhost"], &["127.0.0.1".parse().unwrap()]),
    );
    let v = VaultSim::start(opts).unwrap();
    let a = vault_agent(&v.ca_pem());
    let r = req(
        &a,
        "GET",
        &format!("{}/v1/x", v.url()),
        &[("X-Vault-Request", "true")],
        None,
    );
    assert!(r.is_err());
}

#[test]
fn vault_request_header_required_and_unknown_path() {
    let env = Env::new();
    let r = req(
        &env.va,
        "GET",
        &format!("{}/v1/auth/token/lookup-self", env.vault.url()),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"errors": ["missing X-Vault-Request header"]})
    );
    let t = env.token();
    let r = env.vault("GET", "kv1/nothing-here", Some(&t), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"errors": []}));
}

#[test]
fn ec2_login_binds_then_reuses_then_mismatches() {
    let env = Env::new();
    let hook_saw: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let h2 = hook_saw.clone();
    env.vault
        .set_login_hook(Box::new(move |b| h2.lock().unwrap().push(b.clone())));
    let nonce = "n".repeat(64);
    let r = env.login(Some(&nonce));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let auth = &v["auth"];
    assert!(auth["client_token"].as_str().unwrap().starts_with("hvs."));
    assert_eq!(auth["metadata"]["instance_id"], INSTANCE);
    assert_eq!(auth["metadata"]["role"], "web");
    assert_eq!(auth["metadata"]["ami_id"], "ami-0123456789abcdef0");
    assert!(
        auth["metadata"].get("nonce").is_none(),
        "client nonce not echoed"
    );
    assert_eq!(auth["lease_duration"], 2764800);
    assert_eq!(auth["renewable"], true);
    assert_eq!(v["data"], serde_json::Value::Null);
    assert_eq!(
        env.vault.client_nonce("aws", INSTANCE).as_deref(),
        Some(nonce.as_str())
    );

    assert_eq!(env.login(Some(&nonce)).status, 200);
    let r = env.login(Some("another-nonce"));
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"errors": ["client nonce mismatch"]}));
    assert_eq!(env.login(None).status, 400);
    assert_eq!(env.vault.nonce_mismatches(), 2);
    assert_eq!(env.vault.logins(), 2);
    assert_eq!(env.vault.live_tokens(), 2);
    assert_eq!(hook_saw.lock().unwrap().len(), 4);
    assert!(env.vault.issued_secrets().contains(&nonce));

    // The operator reset.
    let root = env.vault.root_token();
    let r = env.vault(
        "DELETE",
        &format!("auth/aws/identity-accesslist/{INSTANCE}"),
        Some(&root),
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(env.login(Some("fresh")).status, 200);

    // Recorded: the pkcs7 went without newlines.
    let logins: Vec<_> = env
        .vault
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/auth/aws/login")
        .collect();
    assert_eq!(logins.len(), 5);
    let body = logins[0].json().unwrap();
    assert!(!body["pkcs7"].as_str().unwrap().contains('\n'));
    assert_eq!(logins[0].header("x-vault-request"), Some("true"));
}

#[test]
fn ec2_login_server_generated_and_disabled_nonce() {
    let env = Env::new();
    let r = env.login(None);
    assert_eq!(r.status, 200, "{}", r.body);
    let n = r.json()["auth"]["metadata"]["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(env.vault.client_nonce("aws", INSTANCE), Some(n.clone()));
    assert_eq!(env.login(Some(&n)).status, 200);
    assert!(env.login(Some(&n)).json()["auth"]["metadata"]
        .get("nonce")
        .is_none());

    let env = Env::new();
    assert_eq!(env.login(Some("")).status, 200);
    assert_eq!(env.vault.client_nonce("aws", INSTANCE).as_deref(), Some(""));
    let r = env.login(Some(""));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("reauthentication is disabled"));

    let env = Env::new();
    let r = env.login(Some(&"x".repeat(129)));
    assert_eq!(r.status, 400);
    assert!(env.vault.client_nonce("aws", INSTANCE).is_none());
    assert_eq!(env.login(Some(&"x".repeat(128))).status, 200);
}

#[test]
fn ec2_login_refusals() {
    let env = Env::new();
    // Bad signature.
    let other = vaultboot_sim::Signer::new();
    let doc = Identity::sample(INSTANCE).document("2026-01-01T00:00:00Z");
    let forged = other.sign(&doc, vaultboot_sim::SignatureKind::Rsa2048);
    let b = json!({"role": "web", "pkcs7": forged, "nonce": "abc"}).to_string();
    let r = env.vault("POST", "auth/aws/login", None, Some(&b));
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]
        .as_str()
        .unwrap()
        .starts_with("failed to verify the instance identity document"));

    // Unknown role.
    let b = json!({"role": "nope", "pkcs7": env.pkcs7(), "nonce": "abc"}).to_string();
    let r = env.vault("POST", "auth/aws/login", None, Some(&b));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0], "entry for role \"nope\" not found");

    // Wrong AMI.
    env.vault
        .add_ec2_role("aws", "other", Some("ami-ffffffffffffffff0"), &["kv1/"]);
    let b = json!({"role": "other", "pkcs7": env.pkcs7(), "nonce": "abc"}).to_string();
    let r = env.vault("POST", "auth/aws/login", None, Some(&b));
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]
        .as_str()
        .unwrap()
        .starts_with("Error validating instance: AMI ID \"ami-"));

    // iam: Vault's own field checks come first (sim/tests/iam.rs has the rest).
    let b = json!({"role": "web", "iam_http_request_method": "POST", "iam_request_url": "", "iam_request_body": "", "iam_request_headers": ""}).to_string();
    let r = env.vault("POST", "auth/aws/login", None, Some(&b));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0], "missing iam_request_url");

    // Instance not found (eventual consistency), then fine.
    env.vault.set_instance_not_found(2);
    for _ in 0..2 {
        let r = env.login(Some("abc"));
        assert_eq!(r.status, 400);
        assert!(r.body.contains("InvalidInstanceID.NotFound"));
    }
    assert_eq!(env.login(Some("abc")).status, 200);
    assert_eq!(env.vault.logins(), 1);

    // Rate limit.
    env.vault.set_login_rate_limit(1, Some(3));
    let _ = env.login(Some("abc"));
    let r = env.login(Some("abc"));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert!(r.body.contains("rate limit quota exceeded"));
    env.vault.set_login_rate_limit(0, None);

    // Unknown mount.
    let b = json!({"role": "web", "pkcs7": env.pkcs7()}).to_string();
    assert_eq!(
        env.vault("POST", "auth/nope/login", None, Some(&b)).status,
        404
    );
}

#[test]
fn kv_reads_policy_and_revoke() {
    let env = Env::new();
    env.vault
        .put_kv1("kv1/legacy", json!({"password": "p@ss word$\\\"'"}));
    env.vault
        .put_kv2("secret", "app/api", json!({"api_key": "first-key"}));
    env.vault
        .put_kv2("secret", "app/api", json!({"api_key": "second-key"}));
    env.vault
        .put_kv2("secret", "ad/join", json!({"password": "not-allowed"}));
    let t = env.token();

    let r = env.vault("GET", "kv1/legacy", Some(&t), None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["data"]["password"], "p@ss word$\\\"'");
    assert_eq!(v["lease_duration"], 2764800);
    assert_eq!(v["lease_id"], "");
    assert_eq!(v["auth"], serde_json::Value::Null);

    let v = env
        .vault("GET", "secret/data/app/api", Some(&t), None)
        .json();
    assert_eq!(v["data"]["data"]["api_key"], "second-key");
    assert_eq!(v["data"]["metadata"]["version"], 2);
    assert_eq!(v["data"]["metadata"]["destroyed"], false);
    let v = env
        .vault("GET", "secret/data/app/api?version=1", Some(&t), None)
        .json();
    assert_eq!(v["data"]["data"]["api_key"], "first-key");

    // Outside the policy.
    let r = env.vault("GET", "secret/data/ad/join", Some(&t), None);
    assert_eq!(r.status, 403);
    assert_eq!(
        env.vault("GET", "kv1/legacy", Some("hvs.bogus"), None)
            .status,
        403
    );
    assert_eq!(env.vault("GET", "kv1/legacy", None, None).status, 403);

    let v = env
        .vault("GET", "auth/token/lookup-self", Some(&t), None)
        .json();
    assert!(v["data"]["ttl"].as_u64().unwrap() > 2_700_000);
    assert!(v["data"]["accessor"].as_str().is_some());

    let r = env.vault("POST", "auth/token/revoke-self", Some(&t), None);
    assert_eq!(r.status, 204);
    assert_eq!(r.body, "");
    assert_eq!(env.vault("GET", "kv1/legacy", Some(&t), None).status, 403);
    assert_eq!(env.vault.live_tokens(), 0);
    assert_eq!(env.vault.revoked_tokens(), 1);
    let secrets = env.vault.issued_secrets();
    assert!(secrets.contains(&t));
    let accessors = env.vault.issued_accessors();
    assert_eq!(accessors.len(), 1);
    assert!(
        !secrets.contains(&accessors[0]),
        "accessors are not secrets"
    );
    assert!(secrets.iter().any(|s| s == "second-key"));
}

#[test]
fn pki_issue_real_certificate() {
    use x509_parser::extensions::GeneralName;
    let env = Env::new();
    env.vault.enable_pki("pki_int", "web");
    let t = env.token();
    let body = json!({"common_name": "ip-10-0-1-23.ec2.internal", "alt_names": "www.example.test, api.example.test", "ip_sans": "10.0.1.23", "ttl": "72h"});
    let r = env.vault(
        "POST",
        "pki_int/issue/web",
        Some(&t),
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json()["data"].clone();
    let cert_pem = d["certificate"].as_str().unwrap();
    let key_pem = d["private_key"].as_str().unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(d["private_key_type"], "ec");
    assert_eq!(
        d["issuing_ca"].as_str().unwrap(),
        env.vault.pki_ca_pem().trim_end()
    );
    assert_eq!(d["ca_chain"][0], d["issuing_ca"]);
    let serial = d["serial_number"].as_str().unwrap();
    assert!(serial.contains(':'));
    let exp = d["expiration"].as_u64().unwrap();

    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(env.vault.pki_ca_pem().as_bytes()).unwrap();
    let ca = ca_pem.parse_x509().unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    // The TLS CA did not sign it.
    let (_, tls_ca) = x509_parser::pem::parse_x509_pem(env.vault.ca_pem().as_bytes()).unwrap();
    assert!(cert
        .verify_signature(Some(tls_ca.parse_x509().unwrap().public_key()))
        .is_err());
    let kp = rcgen::KeyPair::from_pem(key_pem).unwrap();
    assert_eq!(
        kp.public_key_raw(),
        cert.public_key().subject_public_key.data.as_ref()
    );
    let serial_hex: String = serial.split(':').collect();
    assert_eq!(cert.raw_serial_as_string().replace(':', ""), serial_hex);
    assert_eq!(cert.validity().not_after.timestamp() as u64, exp);
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::DNSName(n) => n.to_string(),
            GeneralName::IPAddress(b) => format!("ip:{b:?}"),
            o => format!("{o:?}"),
        })
        .collect();
    assert!(names.contains(&"ip-10-0-1-23.ec2.internal".to_string()));
    assert!(names.contains(&"api.example.test".to_string()));
    assert!(names.contains(&"ip:[10, 0, 1, 23]".to_string()));
    assert!(env
        .vault
        .issued_secrets()
        .iter()
        .any(|s| s.trim_end() == key_pem));

    // Vault before 1.11: no ca_chain.
    env.vault.set_pki_omit_ca_chain(true);
    let r = env.vault(
        "POST",
        "pki_int/issue/web",
        Some(&t),
        Some(&body.to_string()),
    );
    assert!(r.json()["data"].get("ca_chain").is_none());

    // common_name required.
    let r = env.vault("POST", "pki_int/issue/web", Some(&t), Some("{}"));
    assert_eq!(r.status, 400);
}

#[test]
fn namespace_required() {
    let env = Env::new();
    env.vault.put_kv1("kv1/x", json!({"a": "bcde"}));
    env.vault.require_namespace(Some("team-a"));
    assert_eq!(env.login(Some("abc")).status, 404);
    let b = json!({"role": "web", "pkcs7": env.pkcs7(), "nonce": "abc"}).to_string();
    let r = req(
        &env.va,
        "POST",
        &format!("{}/v1/auth/aws/login", env.vault.url()),
        &[("X-Vault-Request", "true"), ("X-Vault-Namespace", "team-a")],
        Some(&b),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let recorded = env.vault.control().requests();
    assert_eq!(
        recorded.last().unwrap().header("x-vault-namespace"),
        Some("team-a")
    );
}

#[test]
fn vault_faults_keep_alive_and_resumption() {
    let env = Env::new();
    env.vault.put_kv1("kv1/a", json!({"v": "value-1"}));
    let t = env.token();
    let c = env.vault.control();
    assert_eq!(c.connections(), 1);
    env.vault("GET", "kv1/a", Some(&t), None);
    assert_eq!(c.connections(), 1, "keep-alive reuses the connection");
    assert_eq!(c.tls_handshakes(), (1, 0));

    c.inject(
        Some("GET"),
        "/v1/kv1/",
        Fault::Status {
            code: 412,
            retry_after: None,
            body: json!({"errors": ["required index state not present"]}).to_string(),
        },
        1,
    );
    assert_eq!(env.vault("GET", "kv1/a", Some(&t), None).status, 412);
    c.inject(None, "/v1/", Fault::status(503, "Vault is sealed"), 1);
    let r = env.vault("GET", "kv1/a", Some(&t), None);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["errors"][0], "Vault is sealed");

    // A reset drops the pooled connection; the next one resumes the TLS session.
    c.inject(None, "/v1/", Fault::ResetConnection, 1);
    assert!(req(
        &env.va,
        "GET",
        &format!("{}/v1/kv1/a", env.vault.url()),
        &[("X-Vault-Request", "true"), ("X-Vault-Token", &t)],
        None
    )
    .is_err());
    assert_eq!(env.vault("GET", "kv1/a", Some(&t), None).status, 200);
    assert_eq!(c.connections(), 2);
    assert_eq!(c.tls_handshakes(), (1, 1));
    let statuses: Vec<u16> = c.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 412, 503, 0, 200]);
}

#[test]
fn shutdown_stops_serving() {
    let env = Env::new();
    let addr = env.vault.addr();
    let Env { vault, .. } = env;
    vault.shutdown();
    std::thread::sleep(Duration::from_millis(50));
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn token_ttl_and_sha1_rejection() {
    let env = Env::new();
    env.vault.put_kv1("kv1/a", json!({"v": "value-1"}));
    env.vault
        .set_role_token_ttl("aws", "web", Duration::from_secs(1));
    let r = env.login(Some("abc"));
    assert_eq!(r.json()["auth"]["lease_duration"], 1);
    let t = r.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(env.vault("GET", "kv1/a", Some(&t), None).status, 200);
    env.vault.age_tokens(Duration::from_millis(900));
    assert_eq!(env.vault("GET", "kv1/a", Some(&t), None).status, 200);
    env.vault.age_tokens(Duration::from_millis(200));
    assert_eq!(env.vault("GET", "kv1/a", Some(&t), None).status, 403);

    // /pkcs7 (SHA-1) documents: accepted unless the server is told to refuse them.
    let it = imds_token(&env.ia, &env.imds);
    let p = imds_get(
        &env.ia,
        &env.imds,
        &it,
        "/latest/dynamic/instance-identity/pkcs7",
    )
    .body;
    let b = json!({"role": "web", "pkcs7": p, "nonce": "abc"}).to_string();
    assert_eq!(
        env.vault("POST", "auth/aws/login", None, Some(&b)).status,
        200
    );
    env.vault.set_reject_sha1_pkcs7(true);
    let r = env.vault("POST", "auth/aws/login", None, Some(&b));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("SHA1"));
}
