mod common;

use std::time::{Duration, Instant};

use common::*;
use vaultboot_sim::{Fault, Gate, Identity, ImdsSim, SignatureKind, Signer};

#[test]
fn token_flow_and_documents() {
    let signer = Signer::new();
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &signer).unwrap();
    assert!(imds.url().starts_with("http://127.0.0.1:"));
    let a = imds_agent();
    let r = req(
        &a,
        "PUT",
        &format!("{}/latest/api/token", imds.url()),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let token = r.body;
    assert!(token.len() >= 40);

    let doc = imds_get(
        &a,
        &imds,
        &token,
        "/latest/dynamic/instance-identity/document",
    );
    assert_eq!(doc.status, 200);
    assert!(doc
        .body
        .contains("\"instanceId\" : \"i-0abc1234def567890\""));
    let v = doc.json();
    for k in [
        "accountId",
        "architecture",
        "availabilityZone",
        "imageId",
        "instanceId",
        "instanceType",
        "pendingTime",
        "privateIp",
        "region",
        "version",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(v["region"], "us-east-1");

    for (path, kind) in [
        (
            "/latest/dynamic/instance-identity/rsa2048",
            SignatureKind::Rsa2048,
        ),
        (
            "/latest/dynamic/instance-identity/pkcs7",
            SignatureKind::Pkcs7,
        ),
    ] {
        let sig = imds_get(&a, &imds, &token, path);
        assert_eq!(sig.status, 200);
        assert!(sig.body.contains('\n'), "wrapped like IMDS");
        let (k, d) = signer.verify(&sig.body).unwrap();
        assert_eq!(k, kind);
        assert_eq!(d, doc.body);
    }
    let h = imds_get(&a, &imds, &token, "/latest/meta-data/local-hostname");
    assert_eq!(h.body, "ip-10-0-1-23.ec2.internal");
    assert_eq!(
        imds_get(&a, &imds, &token, "/latest/meta-data/local-ipv4").body,
        "10.0.1.23"
    );
    assert_eq!(
        imds_get(&a, &imds, &token, "/latest/meta-data/instance-id").body,
        INSTANCE
    );
    assert_eq!(imds_get(&a, &imds, &token, "/latest/nope").status, 404);

    // No IMDSv1: a GET without (or with a bad) token is 401.
    let r = req(
        &a,
        "GET",
        &format!("{}/latest/meta-data/instance-id", imds.url()),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        imds_get(&a, &imds, "bogus", "/latest/meta-data/instance-id").status,
        401
    );

    imds.expire_tokens();
    assert_eq!(
        imds_get(&a, &imds, &token, "/latest/meta-data/instance-id").status,
        401
    );
    assert_eq!(imds.tokens_issued(), 1);
}

#[test]
fn ttl_validation_and_forwarded() {
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &Signer::new()).unwrap();
    let a = imds_agent();
    let url = format!("{}/latest/api/token", imds.url());
    for bad in ["0", "21601", "abc", "-1", ""] {
        let r = req(
            &a,
            "PUT",
            &url,
            &[("X-aws-ec2-metadata-token-ttl-seconds", bad)],
            None,
        )
        .unwrap();
        assert_eq!(r.status, 400, "ttl {bad:?}");
    }
    assert_eq!(req(&a, "PUT", &url, &[], None).unwrap().status, 400);
    let r = req(
        &a,
        "PUT",
        &url,
        &[
            ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 403);

    // A token expires after its TTL.
    let r = req(
        &a,
        "PUT",
        &url,
        &[("X-aws-ec2-metadata-token-ttl-seconds", "1")],
        None,
    )
    .unwrap();
    let t = r.body;
    assert_eq!(
        imds_get(&a, &imds, &t, "/latest/meta-data/instance-id").status,
        200
    );
    imds.age_tokens(Duration::from_millis(900));
    assert_eq!(
        imds_get(&a, &imds, &t, "/latest/meta-data/instance-id").status,
        200
    );
    imds.age_tokens(Duration::from_millis(200));
    assert_eq!(
        imds_get(&a, &imds, &t, "/latest/meta-data/instance-id").status,
        401
    );
}

#[test]
fn role_credentials() {
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &Signer::new()).unwrap();
    let a = imds_agent();
    let t = imds_token(&a, &imds);
    let base = "/latest/meta-data/iam/security-credentials/";
    assert_eq!(imds_get(&a, &imds, &t, base).status, 404);
    imds.set_role_credentials("vault-login", "ASIAEXAMPLE", "secret/key", "tok+en");
    assert_eq!(imds_get(&a, &imds, &t, base).body, "vault-login");
    let c = imds_get(&a, &imds, &t, &format!("{base}vault-login")).json();
    assert_eq!(c["Code"], "Success");
    assert_eq!(c["Type"], "AWS-HMAC");
    assert_eq!(c["AccessKeyId"], "ASIAEXAMPLE");
    assert_eq!(c["SecretAccessKey"], "secret/key");
    assert_eq!(c["Token"], "tok+en");
    assert!(c["Expiration"].as_str().unwrap().ends_with('Z'));
    assert_eq!(imds_get(&a, &imds, &t, &format!("{base}other")).status, 404);
}

#[test]
fn set_identity_changes_document() {
    let signer = Signer::new();
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &signer).unwrap();
    let a = imds_agent();
    let t = imds_token(&a, &imds);
    imds.set_identity(Identity::sample("i-0fffffffffffffff0"));
    let v = imds_get(&a, &imds, &t, "/latest/dynamic/instance-identity/document").json();
    assert_eq!(v["instanceId"], "i-0fffffffffffffff0");
}

#[test]
fn start_delayed_refuses_then_serves() {
    let imds = ImdsSim::start_delayed(
        Duration::from_millis(150),
        Identity::sample(INSTANCE),
        &Signer::new(),
    )
    .unwrap();
    let e = std::net::TcpStream::connect(imds.addr()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    let start = Instant::now();
    let a = imds_agent();
    loop {
        let r = req(
            &a,
            "PUT",
            &format!("{}/latest/api/token", imds.url()),
            &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
            None,
        );
        if let Ok(r) = r {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[test]
fn faults_status_reset_delay_raw_hang() {
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &Signer::new()).unwrap();
    let a = imds_agent();
    let c = imds.control();
    c.inject(
        Some("PUT"),
        "/latest/api/token",
        Fault::Status {
            code: 503,
            retry_after: Some("2".into()),
            body: "busy".into(),
        },
        1,
    );
    let url = format!("{}/latest/api/token", imds.url());
    let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "60")];
    let r = req(&a, "PUT", &url, &ttl, None).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.body, "busy");
    assert_eq!(req(&a, "PUT", &url, &ttl, None).unwrap().status, 200);

    c.inject(None, "/latest/", Fault::ResetConnection, 1);
    assert!(req(&a, "PUT", &url, &ttl, None).is_err());

    c.inject(
        None,
        "/latest/",
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    let t0 = Instant::now();
    assert_eq!(req(&a, "PUT", &url, &ttl, None).unwrap().status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));

    c.inject(
        None,
        "/",
        Fault::Raw(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
        1,
    );
    let r = req(&a, "PUT", &url, &ttl, None).unwrap();
    assert_eq!(r.status, 302);

    c.inject(None, "/", Fault::Hang, 1);
    let short: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_millis(300)))
        .build()
        .into();
    let t0 = Instant::now();
    assert!(req(&short, "PUT", &url, &ttl, None).is_err());
    assert!(t0.elapsed() < Duration::from_secs(5));

    let statuses: Vec<u16> = c.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 200, 0, 200, 302, 0]);
    assert_eq!(c.pending_faults(), 0);
    let first = &c.requests()[0];
    assert_eq!(first.method, "PUT");
    assert_eq!(
        first.header("X-AWS-EC2-METADATA-TOKEN-TTL-SECONDS"),
        Some("60")
    );
}

#[test]
fn endless_body_streams_until_client_leaves() {
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &Signer::new()).unwrap();
    imds.control().inject(None, "/", Fault::EndlessBody, 1);
    let mut s = std::net::TcpStream::connect(imds.addr()).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = 0usize;
    let mut buf = [0u8; 65536];
    while got < 1 << 20 {
        got += s.read(&mut buf).unwrap();
    }
    drop(s);
}

#[test]
fn keep_alive_limits_and_close() {
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &Signer::new()).unwrap();
    let a = imds_agent();
    let t = imds_token(&a, &imds);
    imds_get(&a, &imds, &t, "/latest/meta-data/instance-id");
    imds_get(&a, &imds, &t, "/latest/meta-data/local-ipv4");
    assert_eq!(imds.control().connections(), 1);
    let reqs = imds.control().requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.conn_id == 1));

    // Connection: close is honoured.
    let out = raw(
        imds.addr(),
        b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    let s = String::from_utf8_lossy(&out);
    assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
    assert!(s.contains("Connection: close"));

    // Oversized body and head.
    let out = raw(
        imds.addr(),
        b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 413"));
    // A client still sending its oversized body sees the 413 too.
    let body = "x".repeat(2 * 1024 * 1024);
    let r = req(
        &a,
        "PUT",
        &format!("{}/latest/api/token", imds.url()),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "5")],
        Some(&body),
    )
    .unwrap();
    assert_eq!(r.status, 413);
    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let out = raw(imds.addr(), &big, Duration::from_secs(5)).unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"));

    // Chunked request bodies are read.
    let out = raw(
        imds.addr(),
        b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert_eq!(imds.control().requests().last().unwrap().body, b"abc");
}

#[test]
fn latency_is_added() {
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &Signer::new()).unwrap();
    imds.control()
        .set_latency(Duration::from_millis(100), Duration::from_millis(100));
    let a = imds_agent();
    let t0 = Instant::now();
    imds_token(&a, &imds);
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

/// `Fault::Hold` and `Fault::HoldAnswer`: the request waits for the test's gate, whatever the
/// time; `reset` drops it unhandled.
#[test]
fn a_held_request_waits_for_its_gate() {
    let signer = Signer::new();
    let imds = ImdsSim::start(Identity::sample(INSTANCE), &signer).unwrap();
    let c = imds.control();
    let url = format!("{}/latest/api/token", imds.url());
    let put = move || {
        let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "60")];
        req(&imds_agent(), "PUT", &url, &ttl, None).map(|r| r.status)
    };
    // A pause only gives a broken hold the time to show: a working one waits regardless.
    let settle = || std::thread::sleep(Duration::from_millis(200));

    let gate = Gate::new();
    c.inject(None, "/latest/", Fault::Hold(gate.clone()), 1);
    let client = std::thread::spawn(put.clone());
    assert!(gate.wait_held(Duration::from_secs(60)), "never held");
    settle();
    assert!(!client.is_finished(), "answered while held");
    assert!(c.requests().is_empty(), "handled while held");
    gate.release();
    assert_eq!(client.join().unwrap().unwrap(), 200);
    assert!(gate.wait_done(Duration::from_secs(60)));

    let gate = Gate::new();
    c.inject(None, "/latest/", Fault::Hold(gate.clone()), 1);
    let client = std::thread::spawn(put.clone());
    assert!(gate.wait_held(Duration::from_secs(60)), "never held");
    gate.reset();
    assert!(
        client.join().unwrap().is_err(),
        "a reset request was answered"
    );
    assert!(gate.wait_done(Duration::from_secs(60)));
    assert_eq!(
        c.requests().last().unwrap().status,
        0,
        "a reset request was handled"
    );

    let gate = Gate::new();
    c.inject(None, "/latest/", Fault::HoldAnswer(gate.clone()), 1);
    let client = std::thread::spawn(put);
    assert!(gate.wait_held(Duration::from_secs(60)), "never held");
    assert_eq!(
        c.requests().last().unwrap().status,
        200,
        "not handled first"
    );
    settle();
    assert!(!client.is_finished(), "answered while held");
    gate.release();
    assert_eq!(client.join().unwrap().unwrap(), 200);
    assert_eq!(c.requests().len(), 3);
}
