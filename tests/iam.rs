//! The iam method end to end: the real binary signs sts:GetCallerIdentity with the instance
//! profile's (or the environment's) credentials, and the simulated Vault verifies it the way
//! Vault and STS do. The signature is pinned to botocore's for a fixed request.

mod common;
#[path = "common/iam.rs"]
mod iam_common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use iam_common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, SystemTime};
use vaultboot::fuzzing::iam::{login_data, Credentials, STS_BODY};
use vaultboot::fuzzing::secret::Secret;

const VECTORS: &str = include_str!("fixtures/sigv4/sts_get_caller_identity.json");

/// vaultboot's signature of each fixed request equals botocore's (tests/fixtures/sigv4/).
#[test]
fn signature_is_pinned_to_botocore() {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let i = &case["inputs"];
        let creds = Credentials {
            access_key_id: Secret::from_string(i["access_key_id"].as_str().unwrap().into()),
            secret_access_key: Secret::from_string(i["secret_access_key"].as_str().unwrap().into()),
            session_token: i["session_token"]
                .as_str()
                .map(|t| Secret::from_string(t.into())),
        };
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(i["time_unix"].as_u64().unwrap());
        let data = login_data(
            &creds,
            i["region"].as_str().unwrap(),
            i["server_id"].as_str(),
            time,
        )
        .unwrap();
        let ours: Value = serde_json::to_value(&data).unwrap();
        let headers = decode_headers(&ours);
        let theirs = case["signed_headers"].as_object().unwrap();

        // The pinned value: the whole Authorization header, signature included.
        assert_eq!(
            headers["Authorization"],
            [theirs["Authorization"].as_str().unwrap()],
            "{}",
            case["name"]
        );
        assert!(theirs["Authorization"]
            .as_str()
            .unwrap()
            .ends_with(case["signature"].as_str().unwrap()));
        // Every other header botocore sent, with the same value (names as Go writes them).
        assert_eq!(headers.len(), theirs.len(), "{headers:?}");
        for (name, value) in theirs {
            let go_name = go_canonical(name);
            assert_eq!(
                headers.get(&go_name),
                Some(&vec![value.as_str().unwrap().to_string()]),
                "{go_name}"
            );
        }
        assert_eq!(ours["iam_http_request_method"], "POST");
        assert_eq!(
            STANDARD
                .decode(ours["iam_request_url"].as_str().unwrap())
                .unwrap(),
            i["url"].as_str().unwrap().as_bytes()
        );
        assert_eq!(
            STANDARD
                .decode(ours["iam_request_body"].as_str().unwrap())
                .unwrap(),
            i["body"].as_str().unwrap().as_bytes()
        );
    }
    // The pinned signatures, spelled out (botocore 1.44.5 SigV4Auth).
    assert!(VECTORS
        .contains("Signature=780cccb0afb49f8580ff2366348f4f7674d35defc1d2f7af3b85d311684aed4e"));
    assert!(VECTORS
        .contains("Signature=013e0094d19e196ef55bc894b98f2ca8db0099515a5adc4115c50ee9168e649f"));
}

/// Go's textproto.CanonicalMIMEHeaderKey.
fn go_canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

#[test]
fn instance_profile_login_writes_every_file() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    let cfg = env.write(&iam_config(env.config(), Some(SERVER_ID)));

    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.stderr
            .contains("done: 3 secret(s), 5 file(s) written, 0 unchanged, token revoked"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("iam credentials of the instance profile"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("logged in (iam, STS region us-east-1)"),
        "{}",
        out.stderr
    );
    // The secrets landed.
    let api: Value = serde_json::from_str(
        &fs::read_to_string(env.path(&format!("out/app/{INSTANCE}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(api, json!({"api_key": env.api_key}));
    assert_eq!(
        fs::read_to_string(env.path("out/run/ad-join.password")).unwrap(),
        AD_PASSWORD
    );
    assert!(fs::read_to_string(env.path("out/tls/server.key"))
        .unwrap()
        .contains("PRIVATE KEY"));
    assert_eq!(env.vault.logins(), 1);
    assert_eq!(env.vault.live_tokens(), 0);
    assert!(env.vault.iam_refusals().is_empty());
    // No nonce: that is the ec2 method's.
    assert!(!env.state_dir().join("nonce.json").exists());

    // The login as Vault's Go client builds it.
    let logins = iam_logins(&env);
    assert_eq!(logins.len(), 1);
    let login = &logins[0];
    let keys: Vec<&str> = login
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "iam_http_request_method",
            "iam_request_body",
            "iam_request_headers",
            "iam_request_url",
            "role"
        ]
    );
    assert_eq!(login["role"], VAULT_ROLE);
    assert_eq!(
        STANDARD
            .decode(login["iam_request_url"].as_str().unwrap())
            .unwrap(),
        b"https://sts.amazonaws.com/"
    );
    assert_eq!(
        STANDARD
            .decode(login["iam_request_body"].as_str().unwrap())
            .unwrap(),
        STS_BODY.as_bytes()
    );
    let headers = decode_headers(login);
    let names: Vec<&str> = headers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Authorization",
            "Content-Type",
            "X-Amz-Date",
            "X-Amz-Security-Token",
            "X-Vault-Aws-Iam-Server-Id"
        ],
        "no other X-Amz-* header than SigV4's own"
    );
    assert_eq!(headers["X-Vault-Aws-Iam-Server-Id"], [SERVER_ID]);
    assert_eq!(
        headers["X-Amz-Security-Token"],
        [creds.session_token.clone().unwrap()]
    );
    assert_eq!(
        headers["Content-Type"],
        ["application/x-www-form-urlencoded; charset=utf-8"]
    );
    assert!(headers["Authorization"][0].contains(&format!("Credential={}/", creds.access_key_id)));
    assert!(headers["Authorization"][0].contains(
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-vault-aws-iam-server-id,"
    ));

    // IMDSv2 only, and the role's credentials were read through the list.
    let paths: Vec<String> = env
        .imds
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .inspect(|r| assert!(r.header("x-aws-ec2-metadata-token").is_some()))
        .map(|r| r.path)
        .collect();
    assert!(paths.contains(&"/latest/meta-data/iam/security-credentials/".to_string()));
    assert!(paths.contains(&format!(
        "/latest/meta-data/iam/security-credentials/{PROFILE_ROLE}"
    )));
    assert!(!paths
        .iter()
        .any(|p| p.contains("rsa2048") || p.contains("pkcs7")));
}

#[test]
fn environment_credentials_work_without_imds() {
    let env = Env::new();
    let creds = AwsCreds::iam_user();
    setup_vault(&env, &creds);
    let imds = format!("http://127.0.0.1:{}", closed_port());
    let config = secrets_without_templates(&env).set("imds", "endpoint", imds);
    let cfg = env.write(&iam_config(config, Some(SERVER_ID)));

    let out = run(&env, &cfg, &creds.as_env(), &[&creds]);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.elapsed < scaled(Duration::from_secs(3)).min(Duration::from_secs(10)),
        "took {:?}",
        out.elapsed
    );
    assert!(out.stderr.contains("IMDS not used"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("iam credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"),
        "{}",
        out.stderr
    );
    assert!(env.imds.control().requests().is_empty());
    assert!(fs::read_to_string(env.path("out/run/ad-join.env"))
        .unwrap()
        .contains("username=\"svc-join\""));
    assert!(env.path("out/app/api.json").exists());
    // Long-term keys: no session token header.
    let headers = decode_headers(&iam_logins(&env)[0]);
    assert!(!headers.contains_key("X-Amz-Security-Token"));
    assert!(headers["Authorization"][0].contains(&format!("Credential={}/", creds.access_key_id)));
}

#[test]
fn tampering_on_the_way_is_refused_and_exits_77() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    let cfg = env.write(&iam_config(env.config(), Some(SERVER_ID)));
    type Tamper = fn(&mut Value);
    let cases: [(&str, Tamper, &str); 5] = [
        (
            "a signed header",
            |b| edit_headers(b, |h| set(h, "Content-Type", "application/json")),
            "<Code>SignatureDoesNotMatch</Code>",
        ),
        (
            "the body",
            |b| {
                b["iam_request_body"] = STANDARD
                    .encode("Action=GetCallerIdentity&Version=2011-06-16")
                    .into()
            },
            "<Code>SignatureDoesNotMatch</Code>",
        ),
        (
            "the date, by a minute",
            |b| edit_headers(b, |h| shift_date(h, 60)),
            "<Code>SignatureDoesNotMatch</Code>",
        ),
        (
            "the date, by 20 minutes",
            |b| edit_headers(b, |h| shift_date(h, -20 * 60)),
            "Signature expired",
        ),
        (
            "the server id's signing",
            |b| {
                edit_headers(b, |h| {
                    let a = h["Authorization"][0].replace(";x-vault-aws-iam-server-id", "");
                    set(h, "Authorization", &a)
                })
            },
            "error validating X-Vault-AWS-IAM-Server-ID header: vault header wasn't signed",
        ),
    ];
    for (what, tamper, vault_says) in cases {
        env.vault.set_iam_login_rewrite(Some(Box::new(tamper)));
        let out = run(&env, &cfg, &[], &[&creds]);
        assert_eq!(out.status, 77, "{what}: {}", out.log());
        assert!(out.stderr.contains(vault_says), "{what}: {}", out.stderr);
        assert!(
            out.stderr.contains("login refused") && out.stderr.contains("Vault answered 400"),
            "{what}: {}",
            out.stderr
        );
        assert!(env.out_files().is_empty(), "{what}: {:?}", env.out_files());
    }
    assert_eq!(env.vault.logins(), 0);
    assert_eq!(env.vault.iam_refusals().len(), 5);

    // The same untouched request goes through.
    env.vault.set_iam_login_rewrite(None);
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 0, "{}", out.log());
}

fn edit_headers(body: &mut Value, f: impl Fn(&mut BTreeMap<String, Vec<String>>)) {
    let mut h = decode_headers(body);
    f(&mut h);
    body["iam_request_headers"] = encode_headers(&h).into();
}

fn set(h: &mut BTreeMap<String, Vec<String>>, name: &str, value: &str) {
    h.insert(name.to_string(), vec![value.to_string()]);
}

/// Moves X-Amz-Date by `secs`.
fn shift_date(h: &mut BTreeMap<String, Vec<String>>, secs: i64) {
    let shifted = shift_amz_date(&h["X-Amz-Date"][0], secs);
    set(h, "X-Amz-Date", &shifted);
}

#[test]
fn server_id_missing_or_different_is_refused_with_vaults_text() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);

    let cfg = env.write(&iam_config(env.config(), None));
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains(
            "error validating X-Vault-AWS-IAM-Server-ID header: missing header \"X-Vault-AWS-IAM-Server-ID\""
        ),
        "{}",
        out.stderr
    );
    assert!(!decode_headers(&iam_logins(&env)[0]).contains_key("X-Vault-Aws-Iam-Server-Id"));

    let cfg = env.write(&iam_config(env.config(), Some("vault.staging.example.com")));
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "expected \"{SERVER_ID}\" but got \"vault.staging.example.com\""
        )),
        "{}",
        out.stderr
    );
    assert!(env.out_files().is_empty());
}

#[test]
fn sts_region_must_match_the_servers() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    let cfg = env.write(&iam_config(env.config(), Some(SERVER_ID)).set(
        "auth",
        "sts_region",
        "eu-west-1",
    ));
    // Vault's STS endpoint is still the global one (us-east-1).
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains("SignatureDoesNotMatch")
            && out
                .stderr
                .contains("Credential should be scoped to a valid region, not 'eu-west-1'"),
        "{}",
        out.stderr
    );
    // Configured alike on both sides, the regional endpoint is signed for and accepted.
    env.vault.set_sts_region("aws", "eu-west-1");
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 0, "{}", out.log());
    let login = iam_logins(&env).pop().unwrap();
    assert_eq!(
        STANDARD
            .decode(login["iam_request_url"].as_str().unwrap())
            .unwrap(),
        b"https://sts.eu-west-1.amazonaws.com/"
    );
    assert!(decode_headers(&login)["Authorization"][0].contains("/eu-west-1/sts/aws4_request"));
    assert!(
        out.stderr.contains("STS region eu-west-1"),
        "{}",
        out.stderr
    );
}

const FIPS: &str = "https://sts-fips.us-east-1.amazonaws.com/";

/// A configuration that signs for `endpoint` in `region`.
fn sts_config(env: &Env, endpoint: &str, region: &str) -> std::path::PathBuf {
    let config = iam_config(env.config(), Some(SERVER_ID))
        .set("auth", "sts_endpoint", endpoint)
        .set("auth", "sts_region", region);
    env.write(&config)
}

/// The URL of the last login, as signed.
fn signed_url(env: &Env) -> String {
    let login = iam_logins(env).pop().expect("a login");
    let url = STANDARD.decode(login["iam_request_url"].as_str().unwrap());
    String::from_utf8(url.unwrap()).unwrap()
}

/// Vault configured with the regional endpoint of us-east-1 (not the global one that
/// `sts_region = "us-east-1"` alone names), vaultboot with the same: signed for that host and
/// region, verified, and replayed there with the signed Host.
#[test]
fn a_regional_sts_endpoint_is_signed_for_and_verified() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    let endpoint = "https://sts.us-east-1.amazonaws.com";
    env.vault.set_sts_endpoint("aws", endpoint, "us-east-1");
    let cfg = sts_config(&env, &format!("{endpoint}/"), "us-east-1");
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(signed_url(&env), format!("{endpoint}/"));
    let login = iam_logins(&env).pop().unwrap();
    assert!(decode_headers(&login)["Authorization"][0].contains("/us-east-1/sts/aws4_request"));
    let replay = env.vault.sts_replays().pop().unwrap();
    assert_eq!(replay.endpoint, endpoint);
    assert_eq!(replay.host, "sts.us-east-1.amazonaws.com");
    assert!(env.vault.iam_refusals().is_empty());
}

/// A FIPS endpoint (its host is not the one `sts_region` would name): the signed URL and
/// Host are the FIPS host, the signature verifies over it.
#[test]
fn a_fips_sts_endpoint_is_signed_for_and_verified() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    env.vault
        .set_sts_endpoint("aws", FIPS.trim_end_matches('/'), "us-east-1");
    let cfg = sts_config(&env, FIPS, "us-east-1");
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(signed_url(&env), FIPS);
    let replay = env.vault.sts_replays().pop().unwrap();
    assert_eq!(replay.host, "sts-fips.us-east-1.amazonaws.com");
    assert_eq!(env.vault.iam_signatures_seen(), 1);
}

/// Vault's STS is regional (eu-west-1), vaultboot signs for the FIPS endpoint in us-east-1:
/// Vault relays STS's refusal, a refused login (77), and nothing is written.
#[test]
fn a_login_signed_for_another_sts_region_is_refused() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    env.vault
        .set_sts_endpoint("aws", "https://sts.eu-west-1.amazonaws.com", "eu-west-1");
    let cfg = sts_config(&env, FIPS, "us-east-1");
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 77, "{}", out.log());
    let refusals = env.vault.iam_refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0].starts_with("error making upstream request: received error code 403 from STS:")
            && refusals[0]
                .contains("Credential should be scoped to a valid region, not 'us-east-1'"),
        "{refusals:?}"
    );
    assert!(out.stderr.contains("login refused"), "{}", out.stderr);
    assert!(env.out_files().is_empty());
}

/// `check` refuses a bad `sts_endpoint` with exit 78, naming the section and the key.
#[test]
fn a_bad_sts_endpoint_is_refused_by_check() {
    let env = Env::new();
    for (endpoint, region, says) in [
        (
            "http://sts.us-east-1.amazonaws.com/",
            "us-east-1",
            "https only",
        ),
        (
            "https://sts.amazonaws.com/x",
            "us-east-1",
            "no port, user info, path or query",
        ),
        ("https://u@sts.amazonaws.com/", "us-east-1", "user info"),
        ("https://sts.amazonaws.com:8443/", "us-east-1", "no port"),
        ("https://sts.amazonaws.com/?a=b", "us-east-1", "query"),
        (
            "https://sts.eu-west-1.amazonaws.com/",
            "us-east-1",
            "serves eu-west-1",
        ),
    ] {
        let cfg = sts_config(&env, endpoint, region);
        let out = env.run_args(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status, 78, "{endpoint}: {}", out.log());
        assert!(
            out.stderr.contains("[auth]: sts_endpoint: ") && out.stderr.contains(says),
            "{endpoint}: {}",
            out.stderr
        );
    }
    // Without sts_region, the endpoint's region would be a guess.
    let config = iam_config(env.config(), None).set("auth", "sts_endpoint", FIPS);
    let out = env.run_args(&["check", "--config", env.write(&config).to_str().unwrap()]);
    assert_eq!(out.status, 78, "{}", out.log());
    assert!(
        out.stderr.contains("sts_endpoint: needs sts_region"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_wrong_clock_or_unknown_principal_is_refused() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_instance_profile(&env, &creds);
    let cfg = env.write(&iam_config(env.config(), Some(SERVER_ID)));
    // The instance's clock is 20 minutes behind STS's.
    env.vault.set_sts_clock_skew(20 * 60);
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(out.stderr.contains("Signature expired"), "{}", out.stderr);
    env.vault.set_sts_clock_skew(0);

    // The role is bound to another principal.
    env.vault.add_iam_role(
        "aws",
        VAULT_ROLE,
        &format!("arn:aws:iam::{ACCOUNT}:role/db"),
        &POLICIES,
    );
    let out = run(&env, &cfg, &[], &[&creds]);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "IAM Principal \"{}\" does not belong to the role \"{VAULT_ROLE}\"",
            creds.arn
        )),
        "{}",
        out.stderr
    );
    assert_eq!(env.vault.logins(), 0);
}

#[test]
fn missing_instance_profile_is_a_clear_error() {
    let env = Env::new();
    // No role attached: IMDS answers 404 on iam/security-credentials/.
    setup_vault(&env, &AwsCreds::instance_profile());
    let cfg = env.write(&iam_config(env.config(), Some(SERVER_ID)));
    let out = run(&env, &cfg, &[], &[]);
    assert!(
        out.stderr
            .contains("IMDS /latest/meta-data/iam/security-credentials/: not found (404)"),
        "{}",
        out.stderr
    );
    // 69 today (an IMDS refusal); 78 with the clearer message proposed for app.rs in issue
    // #3's report, which names the instance profile and the environment variables.
    match out.status {
        69 => {}
        78 => assert!(
            out.stderr
                .contains("no instance profile attached to this instance")
                && out.stderr.contains("AWS_ACCESS_KEY_ID"),
            "{}",
            out.stderr
        ),
        other => panic!("exit {other}: {}", out.log()),
    }
    // Not retried until the deadline, and Vault never asked.
    assert!(
        out.elapsed < scaled(Duration::from_secs(3)).min(Duration::from_secs(10)),
        "took {:?}",
        out.elapsed
    );
    assert!(iam_logins(&env).is_empty());
    assert!(env.out_files().is_empty());
}

/// Half-set AWS_* variables are a configuration error at once, not a fall-back to an IMDS
/// that off EC2 is not there (which would only fail at the deadline).
#[test]
fn half_set_environment_credentials_are_a_configuration_error() {
    let env = Env::new();
    let creds = AwsCreds::iam_user();
    setup_vault(&env, &creds);
    let imds = format!("http://127.0.0.1:{}", closed_port());
    let config = secrets_without_templates(&env).set("imds", "endpoint", imds);
    let cfg = env.write(&iam_config(config, Some(SERVER_ID)));
    let only_the_key = vec![("AWS_ACCESS_KEY_ID", creds.access_key_id.clone())];
    let out = run(&env, &cfg, &only_the_key, &[&creds]);
    assert_eq!(out.status, 78, "{}", out.log());
    assert!(
        out.stderr
            .contains("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY"),
        "{}",
        out.stderr
    );
    assert!(
        out.elapsed < scaled(Duration::from_secs(3)).min(Duration::from_secs(10)),
        "took {:?}",
        out.elapsed
    );
    assert!(iam_logins(&env).is_empty());
}

/// `login_data` posted straight to the simulator with the agent's own Vault client: accepted
/// as signed, refused once a signed part is changed.
#[test]
fn login_data_posted_directly_is_verified() {
    let env = Env::new();
    let creds = AwsCreds::instance_profile();
    setup_vault(&env, &creds);
    let config = vaultboot::fuzzing::config::parse(
        &iam_config(env.config(), Some(SERVER_ID)).text(),
        &env.path("config.toml"),
    )
    .unwrap();
    let vault = vaultboot::fuzzing::vault::Vault::new(&config.vault).unwrap();
    let post = |body: &Value| {
        let bytes = serde_json::to_vec(body).unwrap();
        vault.request(
            ureq::http::Method::POST,
            "auth/aws/login",
            None,
            Some(&bytes),
            Duration::from_secs(5),
        )
    };
    let signed = || {
        let d = login_data(
            &creds.for_login_data(),
            "us-east-1",
            Some(SERVER_ID),
            SystemTime::now(),
        )
        .unwrap();
        let mut v = serde_json::to_value(&d).unwrap();
        v["role"] = VAULT_ROLE.into();
        v
    };

    let ok = post(&signed()).expect("accepted");
    assert!(ok.0["auth"]["client_token"].as_str().is_some());

    let refused = |body: Value, needle: &str| match post(&body) {
        Err(vaultboot::fuzzing::vault::Error::Status {
            status, messages, ..
        }) => {
            assert_eq!(status, 400);
            assert!(
                messages.iter().any(|m| m.contains(needle)),
                "{messages:?} lacks {needle:?}"
            );
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    };
    let mut b = signed();
    edit_headers(&mut b, |h| set(h, "X-Vault-Aws-Iam-Server-Id", "other"));
    refused(b, "expected \"vault.example.com\" but got \"other\"");
    let mut b = signed();
    edit_headers(&mut b, |h| set(h, "X-Amz-User-Agent", "aws-sdk-go/1.0"));
    refused(b, "invalid request header: X-Amz-User-Agent");
    let mut b = signed();
    b["iam_request_url"] = STANDARD
        .encode("https://sts.us-east-1.amazonaws.com/")
        .into();
    refused(b, "SignatureDoesNotMatch");
    let mut b = signed();
    edit_headers(&mut b, |h| {
        h.remove("X-Amz-Security-Token");
    });
    refused(b, "The security token included in the request is invalid.");
    // Signed for a time 16 minutes ago.
    let d = login_data(
        &creds.for_login_data(),
        "us-east-1",
        Some(SERVER_ID),
        SystemTime::now() - Duration::from_secs(16 * 60),
    )
    .unwrap();
    let mut b = serde_json::to_value(&d).unwrap();
    b["role"] = VAULT_ROLE.into();
    refused(b, "Signature expired");
}

#[test]
fn amz_date_arithmetic() {
    assert_eq!(shift_amz_date("20231114T221320Z", 0), "20231114T221320Z");
    assert_eq!(shift_amz_date("20231231T235930Z", 60), "20240101T000030Z");
    assert_eq!(
        shift_amz_date("20240301T000500Z", -20 * 60),
        "20240229T234500Z"
    );
}
