//! The simulator's iam login against requests signed by an independent SigV4 implementation
//! (botocore, tests/fixtures/sigv4/), replayed at their signing time through the simulated
//! STS clock: accepted as signed, refused as Vault and STS refuse every kind of tampering.

mod common;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const VECTORS: &str = include_str!("../../tests/fixtures/sigv4/sts_get_caller_identity.json");
const ACCOUNT: &str = "123456789012";

fn case(i: usize) -> Value {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    v["cases"][i].clone()
}

/// A signed request as the login fields carry it, open to tampering.
#[derive(Clone)]
struct Signed {
    method: String,
    url: String,
    body: String,
    headers: BTreeMap<String, Vec<String>>,
}

impl Signed {
    fn from_case(c: &Value) -> Signed {
        Signed {
            method: "POST".into(),
            url: c["inputs"]["url"].as_str().unwrap().into(),
            body: c["inputs"]["body"].as_str().unwrap().into(),
            headers: c["signed_headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), vec![v.as_str().unwrap().to_string()]))
                .collect(),
        }
    }

    /// The login body as Vault's Go client builds it (awsutil.GenerateLoginData).
    fn login(&self, role: Option<&str>) -> Value {
        let mut b = json!({
            "iam_http_request_method": self.method,
            "iam_request_url": STANDARD.encode(&self.url),
            "iam_request_body": STANDARD.encode(&self.body),
            "iam_request_headers": STANDARD.encode(serde_json::to_vec(&self.headers).unwrap()),
        });
        if let Some(r) = role {
            b["role"] = r.into();
        }
        b
    }

    fn set(&mut self, name: &str, value: &str) {
        self.headers.insert(name.into(), vec![value.into()]);
    }

    fn authorization(&self) -> String {
        self.headers["Authorization"][0].clone()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Vault with the first vector's credentials (an instance-profile session) known to STS, an
/// iam role "app" bound to its role, the server id required, and STS's clock at signing time.
fn global_env() -> (Env, Signed) {
    let env = Env::new();
    let c = case(0);
    let i = &c["inputs"];
    env.vault.add_iam_credentials(
        i["access_key_id"].as_str().unwrap(),
        i["secret_access_key"].as_str().unwrap(),
        i["session_token"].as_str(),
        &format!("arn:aws:sts::{ACCOUNT}:assumed-role/app/i-0abc1234def567890"),
    );
    env.vault.add_iam_role(
        "aws",
        "app",
        &format!("arn:aws:iam::{ACCOUNT}:role/app"),
        &["secret/data/app/"],
    );
    env.vault
        .set_iam_server_id("aws", Some("vault.example.com"));
    env.vault
        .set_sts_clock_skew(i["time_unix"].as_i64().unwrap() - now());
    (env, Signed::from_case(&c))
}

fn post(env: &Env, body: &Value) -> Resp {
    env.vault("POST", "auth/aws/login", None, Some(&body.to_string()))
}

fn refused_with(env: &Env, body: &Value, needle: &str) {
    let r = post(env, body);
    assert_eq!(r.status, 400, "{}", r.body);
    let message = r.json()["errors"][0].as_str().unwrap().to_string();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert_eq!(env.vault.iam_refusals().last(), Some(&message));
}

#[test]
fn botocore_signed_request_is_accepted_with_vaults_answer() {
    let (env, signed) = global_env();
    let r = post(&env, &signed.login(Some("app")));
    assert_eq!(r.status, 200, "{}", r.body);
    let auth = &r.json()["auth"];
    let token = auth["client_token"].as_str().unwrap();
    assert_eq!(
        auth["metadata"]["client_arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/app/i-0abc1234def567890")
    );
    assert_eq!(
        auth["metadata"]["canonical_arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/app")
    );
    assert_eq!(auth["metadata"]["auth_type"], "iam");
    assert_eq!(auth["metadata"]["account_id"], ACCOUNT);
    assert_eq!(auth["policies"], json!(["default", "secret/data/app/"]));
    let me = env.vault("GET", "auth/token/lookup-self", Some(token), None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(env.vault.logins(), 1);

    // Without a role, Vault takes the principal's friendly name ("app").
    assert_eq!(post(&env, &signed.login(None)).status, 200);

    // Headers as a plain JSON object (Vault's TypeHeader accepts both), lower-case names.
    let mut b = signed.login(Some("app"));
    let lower: BTreeMap<String, Vec<String>> = signed
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    b["iam_request_headers"] = serde_json::to_value(lower).unwrap();
    assert_eq!(post(&env, &b).status, 200);

    // What STS needed to know, and the signatures it saw, count as secrets for log scans.
    let issued = env.vault.issued_secrets();
    let c = case(0);
    for s in [
        c["inputs"]["secret_access_key"].as_str().unwrap(),
        c["inputs"]["session_token"].as_str().unwrap(),
        c["signature"].as_str().unwrap(),
    ] {
        assert!(issued.iter().any(|i| i == s), "{s} not in issued_secrets");
    }
    assert_eq!(env.vault.iam_signatures_seen(), 3);
}

#[test]
fn regional_vector_needs_the_servers_sts_region() {
    let env = Env::new();
    let c = case(1);
    let i = &c["inputs"];
    env.vault.add_iam_credentials(
        i["access_key_id"].as_str().unwrap(),
        i["secret_access_key"].as_str().unwrap(),
        None,
        &format!("arn:aws:iam::{ACCOUNT}:user/ci"),
    );
    env.vault.add_iam_role(
        "aws",
        "ci",
        &format!("arn:aws:iam::{ACCOUNT}:user/*"),
        &["secret/data/app/"],
    );
    env.vault
        .set_sts_clock_skew(i["time_unix"].as_i64().unwrap() - now());
    let signed = Signed::from_case(&c);
    // Vault's STS endpoint is the global one (us-east-1) unless configured otherwise.
    refused_with(
        &env,
        &signed.login(Some("ci")),
        "Credential should be scoped to a valid region, not 'eu-west-1'.",
    );
    env.vault.set_sts_region("aws", "eu-west-1");
    let r = post(&env, &signed.login(Some("ci")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["auth"]["metadata"]["canonical_arn"],
        format!("arn:aws:iam::{ACCOUNT}:user/ci")
    );
}

#[test]
fn every_kind_of_tampering_is_refused() {
    let (env, signed) = global_env();
    let sts = "error making upstream request: received error code 403 from STS:";
    let mismatch = "<Code>SignatureDoesNotMatch</Code>";
    let tamper = |f: &dyn Fn(&mut Signed)| {
        let mut s = signed.clone();
        f(&mut s);
        s.login(Some("app"))
    };
    let date_plus = |secs: i64| {
        let t = case(0)["inputs"]["time_unix"].as_i64().unwrap() + secs;
        amz_date(t)
    };

    // The body: another API version is signed over (STS), anything else is refused by Vault.
    let b = tamper(&|s| s.body = s.body.replace("2011-06-15", "2011-06-16"));
    refused_with(&env, &b, mismatch);
    refused_with(&env, &b, sts);
    let b = tamper(&|s| s.body.push_str("&RoleArn=x"));
    refused_with(&env, &b, "iam_request_body contains unexpected values");
    let b = tamper(&|s| s.body = "Action=AssumeRole&Version=2011-06-15".into());
    refused_with(
        &env,
        &b,
        "iam_request_body must have 'Action=GetCallerIdentity'",
    );

    // A signed header's value.
    let b = tamper(&|s| s.set("Content-Type", "application/json"));
    refused_with(&env, &b, mismatch);
    // The date: a minute later is a signature mismatch, 20 minutes either way out of window.
    let b = tamper(&|s| s.set("X-Amz-Date", &date_plus(60)));
    refused_with(
        &env,
        &b,
        "The request signature we calculated does not match",
    );
    let b = tamper(&|s| s.set("X-Amz-Date", &date_plus(-20 * 60)));
    refused_with(
        &env,
        &b,
        "Signature expired: 20231114T215320Z is now earlier than",
    );
    let b = tamper(&|s| s.set("X-Amz-Date", &date_plus(20 * 60)));
    refused_with(&env, &b, "Signature not yet current: 20231114T223320Z");
    let b = tamper(&|s| {
        s.headers.remove("X-Amz-Date");
    });
    refused_with(&env, &b, "requires existence of either a 'X-Amz-Date'");
    // The signature itself.
    let b = tamper(&|s| {
        let a = s.authorization();
        let flipped = if a.ends_with('e') { "f" } else { "e" };
        s.set("Authorization", &format!("{}{flipped}", &a[..a.len() - 1]));
    });
    refused_with(&env, &b, mismatch);
    // The URL (its host is signed).
    let b = tamper(&|s| s.url = "https://sts.us-east-1.amazonaws.com/".into());
    refused_with(&env, &b, mismatch);

    // The server id: changed, missing, or present but not signed.
    let b = tamper(&|s| s.set("X-Vault-AWS-IAM-Server-ID", "other.example.com"));
    refused_with(
        &env,
        &b,
        "error validating X-Vault-AWS-IAM-Server-ID header: expected \"vault.example.com\" but got \"other.example.com\"",
    );
    let b = tamper(&|s| {
        s.headers.remove("X-Vault-AWS-IAM-Server-ID");
    });
    refused_with(
        &env,
        &b,
        "error validating X-Vault-AWS-IAM-Server-ID header: missing header \"X-Vault-AWS-IAM-Server-ID\"",
    );
    let b = tamper(&|s| {
        let a = s.authorization().replace(";x-vault-aws-iam-server-id", "");
        s.set("Authorization", &a);
    });
    refused_with(&env, &b, "vault header wasn't signed");

    // The session token: changed or left out.
    let b = tamper(&|s| s.set("X-Amz-Security-Token", "IQoJforged"));
    refused_with(&env, &b, "<Code>InvalidClientTokenId</Code>");
    let b = tamper(&|s| {
        s.headers.remove("X-Amz-Security-Token");
    });
    refused_with(
        &env,
        &b,
        "The security token included in the request is invalid.",
    );

    // Extra X-Amz-* headers are refused unless allow-listed; then they must be signed.
    let b = tamper(&|s| s.set("X-Amz-User-Agent", "aws-sdk"));
    refused_with(&env, &b, "invalid request header: X-Amz-User-Agent");
    env.vault
        .set_allowed_sts_header_values("aws", &["X-Amz-User-Agent"]);
    assert_eq!(
        post(&env, &b).status,
        200,
        "unsigned extra headers pass STS"
    );
    env.vault.set_allowed_sts_header_values("aws", &[]);

    // The form of the login itself.
    let b = tamper(&|s| s.method = "GET".into());
    refused_with(
        &env,
        &b,
        "invalid iam_http_request_method; currently only 'POST' is supported",
    );
    let mut b = signed.login(Some("app"));
    b.as_object_mut().unwrap().remove("iam_request_body");
    refused_with(
        &env,
        &b,
        "supplied some of the auth values for the iam auth type but not all",
    );
    let mut b = signed.login(Some("app"));
    b["iam_request_url"] = "not base64!".into();
    refused_with(&env, &b, "failed to base64 decode iam_request_url");

    assert_eq!(env.vault.logins(), 1, "only the allow-listed replay passed");
    assert_eq!(env.vault.iam_refusals().len(), 20);
}

#[test]
fn credentials_roles_and_bindings() {
    let (env, signed) = global_env();
    let c = case(0);

    // STS does not know the key, or knows it with another secret.
    let other = Env::new();
    other
        .vault
        .set_sts_clock_skew(c["inputs"]["time_unix"].as_i64().unwrap() - now());
    other.vault.add_iam_role("aws", "app", "", &[]);
    refused_with(
        &other,
        &signed.login(Some("app")),
        "<Code>InvalidClientTokenId</Code>",
    );
    other.vault.add_iam_credentials(
        "AKIDEXAMPLE",
        "another secret key",
        c["inputs"]["session_token"].as_str(),
        "arn:aws:sts::1:assumed-role/app/x",
    );
    refused_with(
        &other,
        &signed.login(Some("app")),
        "<Code>SignatureDoesNotMatch</Code>",
    );

    // STS's clock far from the signing time: the signature has expired.
    env.vault.set_sts_clock_skew(0);
    refused_with(
        &env,
        &signed.login(Some("app")),
        "Signature expired: 20231114T221320Z",
    );
    env.vault
        .set_sts_clock_skew(c["inputs"]["time_unix"].as_i64().unwrap() - now());

    // Roles: unknown, of the ec2 type, or bound to another principal.
    refused_with(
        &env,
        &signed.login(Some("nope")),
        "entry for role \"nope\" not found",
    );
    refused_with(
        &env,
        &signed.login(Some("web")),
        "auth method iam not allowed for role web",
    );
    env.vault
        .add_iam_role("aws", "db", &format!("arn:aws:iam::{ACCOUNT}:role/db"), &[]);
    refused_with(
        &env,
        &signed.login(Some("db")),
        &format!(
            "IAM Principal \"arn:aws:sts::{ACCOUNT}:assumed-role/app/i-0abc1234def567890\" does not belong to the role \"db\""
        ),
    );
    env.vault.add_iam_role(
        "aws",
        "any-app",
        &format!("arn:aws:iam::{ACCOUNT}:role/a*"),
        &[],
    );
    assert_eq!(post(&env, &signed.login(Some("any-app"))).status, 200);

    // A mount with no role at all does not exist.
    let r = env.vault(
        "POST",
        "auth/aws2/login",
        None,
        Some(&signed.login(Some("app")).to_string()),
    );
    assert_eq!(r.status, 404);
}

#[test]
fn login_rewrite_is_a_man_in_the_middle() {
    let (env, signed) = global_env();
    env.vault.set_iam_login_rewrite(Some(Box::new(|body| {
        body["iam_request_body"] = STANDARD
            .encode("Action=GetCallerIdentity&Version=2011-06-16")
            .into();
    })));
    let original = signed.login(Some("app"));
    refused_with(&env, &original, "<Code>SignatureDoesNotMatch</Code>");
    // The recorded request is what the client sent.
    let sent = env
        .vault
        .control()
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/v1/auth/aws/login")
        .unwrap();
    assert_eq!(sent.json().unwrap(), original);
    env.vault.set_iam_login_rewrite(None);
    assert_eq!(post(&env, &original).status, 200);
}

/// `YYYYMMDDTHHMMSSZ` for unix seconds (civil_from_days).
fn amz_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[test]
fn amz_dates() {
    assert_eq!(amz_date(1_700_000_000), "20231114T221320Z");
    assert_eq!(amz_date(0), "19700101T000000Z");
}
