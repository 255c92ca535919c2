//! Hostile and broken endpoints: IMDS and Vault answering with what no honest server sends.
//! Every test first makes a good run (so that every output and the nonce exist), then the
//! hostile one, and checks its exit status and that no file changed. docs/hardening.md gives
//! the reason for each expected status. A few cases live in tests/boot.rs already (a
//! certificate from another CA, a redirect of a secret read, a never-ending secret body).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vaultboot_sim::{Fault, TestCa, VaultOptions, VaultSim};

const DOCUMENT: &str = "/latest/dynamic/instance-identity/document";
const TOKEN: &str = "/latest/api/token";
const LOGIN: &str = "/v1/auth/aws/login";
const API: &str = "/v1/secret/data/app/api";

/// Short budgets so that the cases that run into the deadline end quickly.
fn config(env: &Env) -> String {
    env.full_config()
        .replace("deadline = \"20s\"", "deadline = \"3s\"")
        .replace("request_timeout = \"3s\"", "request_timeout = \"1s\"")
}

/// A good run first; returns the configuration and the snapshot of outputs and state.
fn prepared(env: &Env) -> (PathBuf, Snapshot) {
    let cfg = env.write_config(&config(env));
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "the good run: {}", out.log());
    assert_eq!(env.out_files().len(), 5);
    (cfg, env.snapshot())
}

/// Runs the hostile case: this exit status, and not one file changed.
fn refused(env: &Env, cfg: &Path, before: &Snapshot, status: i32) -> Outcome {
    let out = env.run(cfg);
    assert_eq!(out.status, status, "{}", out.log());
    assert_same_tree(before, &env.snapshot(), "after a refused run");
    assert!(out.stderr.contains("no file was changed"), "{}", out.stderr);
    assert_eq!(env.vault.live_tokens(), 0, "a token was left unrevoked");
    out
}

/// A whole HTTP answer, written raw; Content-Length added unless given.
fn raw(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Fault {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Fault::Raw(bytes)
}

fn json_answer(body: &str) -> Fault {
    raw(
        "200 OK",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

fn identity_document() -> String {
    vaultboot_sim::Identity::sample(INSTANCE).document("2024-01-01T00:00:00Z")
}

/// A listener nobody may connect to: it proves where a token did NOT go.
struct Catcher(TcpListener);

impl Catcher {
    fn new() -> Catcher {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Catcher(l)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
    fn untouched(&self) -> bool {
        matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

// ------------------------------------------------------------------------------------------
// IMDS

#[test]
fn imds_invalid_json_is_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    env.imds.control().inject(
        Some("GET"),
        DOCUMENT,
        raw(
            "200 OK",
            &[("Content-Type", "text/plain")],
            b"{\"instanceId\": i-0",
        ),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(
        out.stderr.contains("not an identity document"),
        "{}",
        out.stderr
    );
}

#[test]
fn imds_truncated_body_is_retried_then_unavailable() {
    let doc = identity_document();
    let truncated = |n| {
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            doc.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&doc.as_bytes()[..n]);
        Fault::Raw(bytes)
    };
    // Once: a connection that broke mid-answer is retried, and the run succeeds.
    let env = Env::new();
    let (cfg, _) = prepared(&env);
    env.imds
        .control()
        .inject(Some("GET"), DOCUMENT, truncated(doc.len() / 2), 1);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    // Every time: unavailable at the deadline.
    let before = env.snapshot();
    env.imds
        .control()
        .inject(Some("GET"), DOCUMENT, truncated(10), 10_000);
    let out = refused(&env, &cfg, &before, 69);
    assert!(out.elapsed < Duration::from_secs(6), "{:?}", out.elapsed);
}

#[test]
fn imds_body_over_the_cap_or_never_ending_is_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    // Announced: refused before reading it.
    env.imds.control().inject(
        Some("GET"),
        DOCUMENT,
        raw(
            "200 OK",
            &[("Content-Length", "5000000")],
            b"{\"instanceId\":\"",
        ),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("larger than 1048576"), "{}", out.stderr);
    // Never ending: cut at the cap.
    env.imds
        .control()
        .inject(Some("GET"), DOCUMENT, Fault::EndlessBody, 1);
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("larger than 1048576"), "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(3), "{:?}", out.elapsed);
}

#[test]
fn imds_that_never_answers_is_cut_by_the_deadline() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    // Reads the request, never answers.
    env.imds
        .control()
        .inject(Some("PUT"), TOKEN, Fault::Hang, 10_000);
    let out = refused(&env, &cfg, &before, 69);
    assert!(
        out.elapsed >= Duration::from_millis(2500) && out.elapsed < Duration::from_secs(5),
        "{:?}",
        out.elapsed
    );
    // Accepts the connection, never reads nor answers.
    env.imds.control().clear_faults();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_cfg = env.write_config(&config(&env).replace(
        &env.imds.url(),
        &format!("http://{}", silent.local_addr().unwrap()),
    ));
    let out = refused(&env, &silent_cfg, &before, 69);
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
    // Answers one byte at a time, forever.
    let trickle = trickle_server(None);
    let trickle_cfg = env.write_config(
        &config(&env).replace(&env.imds.url(), &format!("http://127.0.0.1:{trickle}")),
    );
    let out = refused(&env, &trickle_cfg, &before, 69);
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

#[test]
fn imds_redirect_is_not_followed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    let catcher = Catcher::new();
    let location = format!("http://127.0.0.1:{}/latest/api/token", catcher.port());
    env.imds.control().inject(
        Some("GET"),
        DOCUMENT,
        raw("301 Moved Permanently", &[("Location", &location)], b""),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(
        out.stderr.contains("redirects are not followed"),
        "{}",
        out.stderr
    );
    assert!(catcher.untouched(), "the redirect was followed");
}

#[test]
fn imds_content_type_is_not_trusted_either_way() {
    // Real IMDS labels the JSON document text/plain: the body decides.
    let env = Env::new();
    let (cfg, _) = prepared(&env);
    env.imds.control().inject(
        Some("GET"),
        DOCUMENT,
        raw(
            "200 OK",
            &[("Content-Type", "text/html; charset=utf-8")],
            identity_document().as_bytes(),
        ),
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    // A captive portal's page labelled JSON is still not an identity document.
    let before = env.snapshot();
    env.imds.control().inject(
        Some("GET"),
        DOCUMENT,
        raw(
            "200 OK",
            &[("Content-Type", "application/json")],
            b"<html><body>Please log in</body></html>",
        ),
        1,
    );
    refused(&env, &cfg, &before, 65);
}

#[test]
fn imds_duplicate_keys_and_wrong_types_are_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    let doc = identity_document();
    let duplicate = doc.replacen('{', "{\"instanceId\": \"i-0fffffffffffffff0\",", 1);
    let wrong_type = doc.replace(&format!("\"{INSTANCE}\""), "12345");
    assert_ne!(wrong_type, doc);
    for body in [duplicate, wrong_type] {
        env.imds.control().inject(
            Some("GET"),
            DOCUMENT,
            raw("200 OK", &[("Content-Type", "text/plain")], body.as_bytes()),
            1,
        );
        refused(&env, &cfg, &before, 65);
    }
}

#[test]
fn imds_huge_headers_and_bad_tokens_are_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    let huge = "x".repeat(100 * 1024);
    env.imds.control().inject(
        Some("GET"),
        DOCUMENT,
        raw(
            "200 OK",
            &[("X-Padding", &huge)],
            identity_document().as_bytes(),
        ),
        1,
    );
    refused(&env, &cfg, &before, 65);
    // A session token that is not one (spaces, a newline): never sent back as a header.
    env.imds.control().inject(
        Some("PUT"),
        TOKEN,
        raw("200 OK", &[], b"not a token\r\nX-Injected: yes"),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("not a token"), "{}", out.stderr);
}

// ------------------------------------------------------------------------------------------
// Vault

#[test]
fn vault_invalid_json_is_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    env.vault
        .control()
        .inject(Some("GET"), API, json_answer("{\"data\": {\"data\": "), 1);
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("not JSON"), "{}", out.stderr);
    env.vault
        .control()
        .inject(Some("POST"), LOGIN, json_answer("{\"auth\": nope}"), 1);
    refused(&env, &cfg, &before, 65);
    // Not UTF-8 at all.
    env.vault.control().inject(
        Some("GET"),
        API,
        raw("200 OK", &[], b"{\"data\": {\"k\": \"\xff\xfe\"}}"),
        1,
    );
    refused(&env, &cfg, &before, 65);
}

#[test]
fn vault_truncated_body_is_retried_then_unavailable() {
    let env = Env::new();
    let (cfg, _) = prepared(&env);
    let truncated = Fault::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"data\":{\"data\":{\"api_key\":\"abc"
            .to_vec(),
    );
    env.vault
        .control()
        .inject(Some("GET"), API, truncated.clone(), 1);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let before = env.snapshot();
    env.vault
        .control()
        .inject(Some("GET"), API, truncated, 10_000);
    let out = refused(&env, &cfg, &before, 69);
    assert!(out.elapsed < Duration::from_secs(6), "{:?}", out.elapsed);
    // A chunked body cut before its last chunk: the same.
    env.vault.control().clear_faults();
    env.vault.control().inject(
        Some("POST"),
        LOGIN,
        Fault::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{\"auth\":{\"client"
                .to_vec(),
        ),
        10_000,
    );
    refused(&env, &cfg, &before, 69);
}

#[test]
fn vault_body_over_the_cap_or_never_ending_is_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    env.vault.control().inject(
        Some("POST"),
        LOGIN,
        raw("200 OK", &[("Content-Length", "1048577")], b"{"),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("larger than 1048576"), "{}", out.stderr);
    env.vault
        .control()
        .inject(Some("POST"), LOGIN, Fault::EndlessBody, 1);
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("larger than 1048576"), "{}", out.stderr);
    assert_eq!(env.vault.logins(), 1, "only the good run logged in");
}

#[test]
fn vault_that_never_answers_is_cut_by_the_request_timeout() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    // After TLS, reads the request and never answers: every attempt is cut after 1 s.
    env.vault
        .control()
        .inject(Some("POST"), LOGIN, Fault::Hang, 10_000);
    let out = refused(&env, &cfg, &before, 69);
    assert!(
        out.elapsed >= Duration::from_millis(2500) && out.elapsed < Duration::from_secs(5),
        "{:?}",
        out.elapsed
    );
    let hung = env
        .vault
        .control()
        .requests()
        .iter()
        .filter(|r| r.path == LOGIN && r.status == 0)
        .count();
    assert!(hung >= 2, "each attempt had its own timeout: {hung}");
    env.vault.control().clear_faults();

    // Accepts the TCP connection, never starts TLS.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let silent_cfg = env.write_config(
        &config(&env).replace(&env.vault.url(), &format!("https://localhost:{port}")),
    );
    let out = refused(&env, &silent_cfg, &before, 69);
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);

    // Answers one byte every 100 ms, forever: the per-request timeout is a total, not per read.
    let ca = TestCa::new("trickle CA");
    ca.write_cert_pem(&env.path("trickle-ca.pem")).unwrap();
    let port = trickle_server(Some(&ca));
    let trickle_cfg = env.write_config(
        &config(&env)
            .replace(&env.vault.url(), &format!("https://localhost:{port}"))
            .replace(
                &env.path("vault-ca.pem").display().to_string(),
                &env.path("trickle-ca.pem").display().to_string(),
            ),
    );
    let out = refused(&env, &trickle_cfg, &before, 69);
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

/// A Vault simulator serving a certificate that must not be accepted; the good run before
/// used the right one.
fn tls_refused(make: impl FnOnce(&VaultOptions) -> (String, String)) {
    let env = Env::new();
    let (_, before) = prepared(&env);
    let mut opts = VaultOptions::new(&env.signer);
    opts.server_cert = Some(make(&opts));
    let bad = VaultSim::start(opts).unwrap();
    bad.add_ec2_role("aws", "web", None, &["secret/"]);
    std::fs::write(env.path("bad-ca.pem"), bad.ca_pem()).unwrap();
    let cfg = env.write_config(
        &config(&env)
            .replace(
                &env.vault.url(),
                &format!("https://localhost:{}", bad.addr().port()),
            )
            .replace(
                &env.path("vault-ca.pem").display().to_string(),
                &env.path("bad-ca.pem").display().to_string(),
            ),
    );
    let out = refused(&env, &cfg, &before, 69);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(2),
        "not retried: {:?}",
        out.elapsed
    );
    assert_eq!(bad.logins(), 0);
    assert!(bad.control().requests().is_empty(), "a request got through");
}

#[test]
fn vault_certificate_for_another_name_is_refused() {
    tls_refused(|o| o.ca.issue_server_cert(&["vault.elsewhere.example"], &[]));
}

#[test]
fn vault_certificate_for_an_ip_is_not_valid_for_a_name() {
    tls_refused(|o| o.ca.issue_server_cert(&[], &["127.0.0.1".parse().unwrap()]));
}

#[test]
fn vault_expired_certificate_is_refused() {
    tls_refused(|o| {
        o.ca.issue_expired_server_cert(&["localhost"], &["127.0.0.1".parse().unwrap()])
    });
}

#[test]
fn vault_tls_server_name_that_does_not_match_is_refused() {
    let env = Env::new();
    let (_, before) = prepared(&env);
    let cfg = env.write_config(&config(&env).replace(
        "request_timeout = \"1s\"",
        "request_timeout = \"1s\"\ntls_server_name = \"vault.wrong.example\"",
    ));
    let out = refused(&env, &cfg, &before, 69);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
}

/// A 3xx from Vault (a standby during an election) is retried against the configured address
/// until the deadline, then exits 69 naming the host: never followed, with the nonce or the
/// token.
#[test]
fn vault_redirects_are_not_followed_with_the_nonce_or_the_token() {
    let env = Env::new();
    let (_, before) = prepared(&env);
    let cfg = env.write_config(&config(&env).replace("deadline = \"3s\"", "deadline = \"1s\""));
    let catcher = Catcher::new();
    for (method, path) in [("POST", LOGIN), ("GET", API)] {
        for status in [
            "301 Moved Permanently",
            "302 Found",
            "307 Temporary Redirect",
            "308 Permanent Redirect",
        ] {
            let location = format!("https://localhost:{}{path}", catcher.port());
            env.vault.control().clear_faults();
            env.vault.control().inject(
                Some(method),
                path,
                raw(status, &[("Location", &location)], b""),
                10_000,
            );
            let out = refused(&env, &cfg, &before, 69);
            assert!(
                out.stderr.contains(&format!(
                    "Vault kept redirecting to \"localhost:{}\"",
                    catcher.port()
                )),
                "{}",
                out.stderr
            );
            assert!(catcher.untouched(), "{method} {path} {status} was followed");
        }
    }
    // A relative redirect to the same host is not followed either.
    env.vault.control().clear_faults();
    env.vault.control().inject(
        Some("GET"),
        API,
        raw(
            "307 Temporary Redirect",
            &[("Location", "/v1/secret/data/other")],
            b"",
        ),
        10_000,
    );
    let out = refused(&env, &cfg, &before, 69);
    env.vault.control().clear_faults();
    assert!(out.stderr.contains("(same host)"), "{}", out.stderr);
    assert!(!env
        .vault
        .control()
        .requests()
        .iter()
        .any(|r| r.path == "/v1/secret/data/other"));
}

#[test]
fn vault_content_type_is_judged_by_the_body() {
    // Like Vault's own Go client: a JSON body is read whatever its label.
    let env = Env::new();
    let (cfg, _) = prepared(&env);
    let body =
        serde_json::json!({"data": {"data": {"api_key": env.api_key}, "metadata": {"version": 1}}})
            .to_string();
    env.vault.control().inject(
        Some("GET"),
        API,
        raw("200 OK", &[("Content-Type", "text/plain")], body.as_bytes()),
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    // A page from something in the way (a proxy, a portal) is not an answer.
    let before = env.snapshot();
    env.vault.control().inject(
        Some("GET"),
        API,
        raw(
            "200 OK",
            &[("Content-Type", "text/html")],
            b"<html><body>Access denied by proxy</body></html>",
        ),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(
        out.stderr.contains("not JSON") && out.stderr.contains("content type \"text/html\""),
        "{}",
        out.stderr
    );
}

#[test]
fn vault_duplicate_json_keys_are_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    // Which api_key would be written? Neither.
    env.vault.control().inject(
        Some("GET"),
        API,
        json_answer(
            r#"{"data":{"data":{"api_key":"first-value-1","api_key":"second-value-2"},"metadata":{"version":1}}}"#,
        ),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("the same key twice"), "{}", out.stderr);
    // Which token would be used (and revoked)? Neither.
    env.vault.control().inject(
        Some("POST"),
        LOGIN,
        json_answer(
            r#"{"auth":{"client_token":"hvs.AAAAAAAAAAAAAAAAAAAAAAAA","client_token":"hvs.BBBBBBBBBBBBBBBBBBBBBBBB","accessor":"x","lease_duration":60}}"#,
        ),
        1,
    );
    let out = refused(&env, &cfg, &before, 65);
    assert!(out.stderr.contains("the same key twice"), "{}", out.stderr);
    let sent_tokens = env
        .vault
        .control()
        .requests()
        .iter()
        .filter(|r| {
            r.header("x-vault-token")
                .is_some_and(|t| t.contains("AAAAAAAA") || t.contains("BBBBBBBB"))
        })
        .count();
    assert_eq!(sent_tokens, 0);
}

#[test]
fn vault_fields_of_the_wrong_type_are_malformed() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    // A field that is an object or a list of objects cannot go into a raw or env file (a json
    // file keeps JSON types, so there it is fine).
    for password in [r#"{"nested":"x"}"#, r#"[{"a":1}]"#, "null"] {
        env.vault.control().inject(
            Some("GET"),
            "/v1/secret/data/ad/join",
            json_answer(&format!(
                r#"{{"data":{{"data":{{"username":"svc-join","password":{password}}},"metadata":{{"version":1}}}}}}"#
            )),
            1,
        );
        let out = refused(&env, &cfg, &before, 65);
        assert!(out.stderr.contains("\"password\""), "{}", out.stderr);
    }
    for answer in [
        // `data` is not an object.
        r#"{"data":"everything"}"#,
        r#"{"data":null}"#,
        r#"[1,2,3]"#,
        r#""just a string""#,
    ] {
        env.vault
            .control()
            .inject(Some("GET"), API, json_answer(answer), 1);
        let out = refused(&env, &cfg, &before, 65);
        assert!(out.stderr.contains("secret \"api\""), "{}", out.stderr);
    }
    for answer in [
        r#"{"auth":{"client_token":12345}}"#,
        r#"{"auth":"hvs.token"}"#,
        r#"{"auth":null}"#,
        r#"{"auth":{"client_token":["hvs.a"]}}"#,
        r#"{}"#,
    ] {
        env.vault
            .control()
            .inject(Some("POST"), LOGIN, json_answer(answer), 1);
        let out = refused(&env, &cfg, &before, 65);
        assert!(
            out.stderr.contains("login answer has no auth"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn vault_empty_or_impossible_client_token_is_malformed_and_never_sent() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    let requests_before = env.vault.control().requests().len();
    for token in [
        "",
        " ",
        "hvs.with space",
        "hvs.a\\r\\nX-Injected: 1",
        &"a".repeat(2000),
    ] {
        env.vault.control().inject(
            Some("POST"),
            LOGIN,
            json_answer(&format!(
                r#"{{"auth":{{"client_token":"{token}","accessor":"acc","lease_duration":60}}}}"#
            )),
            1,
        );
        let out = refused(&env, &cfg, &before, 65);
        assert!(out.stderr.contains("client_token"), "{}", out.stderr);
    }
    // Nothing but the logins was sent: no secret read, no revoke with a bogus token.
    let after: Vec<_> = env.vault.control().requests()[requests_before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(after.iter().all(|p| p == LOGIN), "{after:?}");
}

#[test]
fn vault_huge_headers_are_malformed_and_huge_retry_after_keeps_the_deadline() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    let body =
        serde_json::json!({"data": {"data": {"api_key": env.api_key}, "metadata": {"version": 1}}})
            .to_string();
    let huge = "x".repeat(100 * 1024);
    env.vault.control().inject(
        Some("GET"),
        API,
        raw("200 OK", &[("X-Padding", &huge)], body.as_bytes()),
        1,
    );
    refused(&env, &cfg, &before, 65);
    // Many headers, each small: the total counts.
    let many: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("X-H{i}"), "y".repeat(20)))
        .collect();
    let many_refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    env.vault.control().inject(
        Some("GET"),
        API,
        raw("200 OK", &many_refs, body.as_bytes()),
        1,
    );
    refused(&env, &cfg, &before, 65);
    // Retry-After of a year, or far in the future: the deadline still ends the run.
    for retry_after in [
        "31536000",
        "Fri, 01 Jan 2100 00:00:00 GMT",
        "99999999999999999999",
    ] {
        env.vault.control().inject(
            Some("POST"),
            LOGIN,
            raw(
                "503 Service Unavailable",
                &[
                    ("Retry-After", retry_after),
                    ("Content-Type", "application/json"),
                ],
                br#"{"errors":["sealed"]}"#,
            ),
            10_000,
        );
        let out = refused(&env, &cfg, &before, 69);
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{retry_after}: {:?}",
            out.elapsed
        );
        env.vault.control().clear_faults();
    }
}

#[test]
fn vault_error_messages_are_one_bounded_line_without_escapes() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    let message = format!(
        "permission denied\n\x1b[31mvaultboot: done: all fine\x1b[0m\r{}",
        "A".repeat(200_000)
    );
    env.vault
        .control()
        .inject(Some("GET"), API, Fault::status(403, &message), 1);
    let out = refused(&env, &cfg, &before, 77);
    assert!(!out.stderr.contains('\x1b'), "{}", out.stderr);
    assert!(!out.stderr.contains('\r'));
    assert!(
        out.stderr.lines().all(|l| l.len() < 2000),
        "a line of {} bytes",
        out.stderr.lines().map(str::len).max().unwrap_or(0)
    );
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("vaultboot: done")),
        "a forged log line: {}",
        out.stderr
    );
}

#[test]
fn garbage_instead_of_http_is_malformed_and_an_empty_answer_is_retried() {
    let env = Env::new();
    let (cfg, before) = prepared(&env);
    env.vault.control().inject(
        Some("GET"),
        API,
        Fault::Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        1,
    );
    refused(&env, &cfg, &before, 65);
    env.imds.control().inject(
        Some("GET"),
        DOCUMENT,
        Fault::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}".to_vec()),
        1,
    );
    refused(&env, &cfg, &before, 65);
    // A connection closed without a byte is a broken connection: retried.
    env.vault
        .control()
        .inject(Some("GET"), API, Fault::Raw(Vec::new()), 2);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
}

// ------------------------------------------------------------------------------------------
// A server that answers one byte every 100 ms, forever (plain HTTP, or TLS with a certificate
// for localhost from `ca`). Returns its port; it lives until the test process ends.

fn trickle_server(ca: Option<&TestCa>) -> u16 {
    let tls = ca.map(|ca| {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = ca.issue_server_cert(&["localhost"], &["127.0.0.1".parse().unwrap()]);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                match tls {
                    None => trickle(tcp),
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        trickle(rustls::StreamOwned::new(conn, tcp));
                    }
                }
            });
        }
    });
    port
}

fn trickle(mut s: impl Read + Write) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
    if s.write_all(answer).and_then(|_| s.flush()).is_err() {
        return;
    }
    for _ in 0..6000 {
        if s.write_all(b" ").and_then(|_| s.flush()).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
