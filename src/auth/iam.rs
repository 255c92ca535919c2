//! The iam method: a SigV4-signed `sts:GetCallerIdentity` that Vault replays to STS.
//!
//! The four login fields are encoded as Vault's own Go client encodes them (standard padded
//! base64 of the URL, of the body, and of the JSON object header name → [values]).
//! <https://developer.hashicorp.com/vault/docs/auth/aws#iam-auth-method>

use super::{login_failure, token_from, Error, Token};
use crate::decide::{Judge, Source};
use crate::retry::{Failure, Policy, Verdict};
use crate::secret::Secret;
use crate::vault::{self, Vault};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;
use ureq::http::Method;
use zeroize::Zeroize;

pub const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
pub const STS_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The header Vault compares with the role's `iam_server_id_header_value`, against replay.
pub const SERVER_ID_HEADER: &str = "x-vault-aws-iam-server-id";

/// AWS_* variables that are set by halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvError {
    TokenWithoutKeys,
    IdWithoutSecret,
    SecretWithoutId,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvError::TokenWithoutKeys => {
                "AWS_SESSION_TOKEN is set without AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            }
            EnvError::IdWithoutSecret => "AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY",
            EnvError::SecretWithoutId => "AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID",
        })
    }
}

impl std::error::Error for EnvError {}

/// Why `sts:GetCallerIdentity` could not be signed.
#[derive(Debug)]
pub enum SignError {
    /// This credential is not text.
    NotText(&'static str),
    /// aws-sigv4 refused this step.
    Sigv4 {
        step: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The signed headers could not be written as JSON.
    Encoding(serde_json::Error),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::NotText(what) => write!(f, "{what} is not text"),
            SignError::Sigv4 { step, source } => write!(f, "{step}: {source}"),
            SignError::Encoding(e) => write!(f, "headers as JSON: {e}"),
        }
    }
}

impl std::error::Error for SignError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignError::NotText(_) => None,
            SignError::Sigv4 { source, .. } => Some(source.as_ref()),
            SignError::Encoding(e) => Some(e),
        }
    }
}

fn sigv4(step: &'static str) -> impl FnOnce(aws_sigv4::http_request::SigningError) -> SignError {
    move |e| SignError::Sigv4 {
        step,
        source: Box::new(e),
    }
}

/// AWS credentials, wiped on drop.
pub struct Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl Credentials {
    /// From AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, when both keys are set.
    pub fn from_env() -> Option<Credentials> {
        Credentials::from_env_checked().ok().flatten()
    }

    /// Like [`Credentials::from_env`], but a half-set environment (one key without the other,
    /// or a session token without keys) is an error naming the variables, rather than a
    /// silent fall-back to IMDS, which off EC2 would only time out.
    pub fn from_env_checked() -> Result<Option<Credentials>, EnvError> {
        Credentials::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Credentials>, EnvError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty()).map(Secret::from_string);
        let session_token = get("AWS_SESSION_TOKEN");
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token,
            })),
            (None, None) if session_token.is_none() => Ok(None),
            (None, None) => Err(EnvError::TokenWithoutKeys),
            (Some(_), None) => Err(EnvError::IdWithoutSecret),
            (None, Some(_)) => Err(EnvError::SecretWithoutId),
        }
    }
}

/// The STS endpoint for a signing region: the global one for us-east-1 (Vault's default
/// endpoint), the regional one otherwise (`.amazonaws.com.cn` in the China partition).
pub fn sts_url(region: &str) -> String {
    if region == "us-east-1" {
        "https://sts.amazonaws.com/".to_string()
    } else if region.starts_with("cn-") {
        format!("https://sts.{region}.amazonaws.com.cn/")
    } else {
        format!("https://sts.{region}.amazonaws.com/")
    }
}

/// The four `iam_*` login fields (all but the method are base64). The headers hold the
/// signature and the session token: they are wiped on drop.
#[derive(Serialize)]
pub struct LoginData {
    pub iam_http_request_method: &'static str,
    pub iam_request_url: String,
    pub iam_request_body: String,
    pub iam_request_headers: String,
}

impl Drop for LoginData {
    fn drop(&mut self) {
        self.iam_request_headers.zeroize();
    }
}

/// Signs `sts:GetCallerIdentity` for `region`'s endpoint (`sts_url`) at `time`.
pub fn login_data(
    creds: &Credentials,
    region: &str,
    server_id: Option<&str>,
    time: SystemTime,
) -> Result<LoginData, SignError> {
    login_data_for(creds, &sts_url(region), region, server_id, time)
}

/// Signs `sts:GetCallerIdentity` for the endpoint `url` (a checked `https://<host>/`: its host
/// is signed as Host) in `region` at `time`. Vault replays the request to its own configured
/// endpoint with this Host, so both must be the same STS endpoint, serving `region`.
pub fn login_data_for(
    creds: &Credentials,
    url: &str,
    region: &str,
    server_id: Option<&str>,
    time: SystemTime,
) -> Result<LoginData, SignError> {
    let mut headers: Vec<(&str, &str)> = vec![("content-type", STS_CONTENT_TYPE)];
    if let Some(id) = server_id {
        headers.push((SERVER_ID_HEADER, id));
    }
    let identity = signing_identity(creds)?.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError::Sigv4 {
            step: "signing parameters",
            source: Box::new(e),
        })?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(STS_BODY.as_bytes()),
    )
    .map_err(sigv4("the request"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(sigv4("signing"))?
        .into_parts();

    // Go's http.Header: canonical names, each with a list of values. Host is not a header
    // there (Vault takes it from the URL), so it is not listed, though it is signed.
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        all.entry(go_canonical(name))
            .or_default()
            .push(value.to_string());
    }
    let json = crate::secret::to_json(&all).map_err(SignError::Encoding)?;
    all.values_mut().flatten().for_each(|v| v.zeroize());
    Ok(LoginData {
        iam_http_request_method: "POST",
        iam_request_url: STANDARD.encode(url),
        iam_request_body: STANDARD.encode(STS_BODY),
        iam_request_headers: STANDARD.encode(&*json),
    })
}

/// The credentials in the form aws-sigv4 signs with.
fn signing_identity(creds: &Credentials) -> Result<aws_credential_types::Credentials, SignError> {
    Ok(aws_credential_types::Credentials::new(
        creds
            .access_key_id
            .expose_str()
            .ok_or(SignError::NotText("the access key id"))?,
        creds
            .secret_access_key
            .expose_str()
            .ok_or(SignError::NotText("the secret access key"))?,
        creds
            .session_token
            .as_ref()
            .and_then(|t| t.expose_str())
            .map(str::to_string),
        None,
        "vaultboot",
    ))
}

/// `x-amz-date` → `X-Amz-Date`, as Go's textproto.CanonicalMIMEHeaderKey writes it.
fn go_canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[derive(Serialize)]
struct LoginBody<'a> {
    role: &'a str,
    #[serde(flatten)]
    data: &'a LoginData,
}

pub struct IamLogin<'a> {
    pub mount: &'a str,
    pub role: &'a str,
    pub region: &'a str,
    /// `[auth] sts_endpoint`; `None`: the endpoint `region` names.
    pub endpoint: Option<&'a str>,
    pub server_id: Option<&'a str>,
    pub credentials: &'a Credentials,
}

/// One login attempt's failure: the request could not be signed, or Vault's answer.
enum LoginAttempt {
    Signing(SignError),
    Vault(vault::Error),
}

/// Logs in, signing afresh for every attempt (a signature is only valid for 15 minutes).
pub fn login(vault: &Vault, policy: &Policy, req: &IamLogin<'_>) -> Result<Token, Error> {
    let path = format!("auth/{}/login", req.mount);
    let mut judge = Judge::new(Source::Login);
    let result = policy.run(
        |left| {
            let url = req
                .endpoint
                .map_or_else(|| sts_url(req.region), str::to_string);
            let data = login_data_for(
                req.credentials,
                &url,
                req.region,
                req.server_id,
                SystemTime::now(),
            )
            .map_err(LoginAttempt::Signing)?;
            let body = crate::secret::to_json(&LoginBody {
                role: req.role,
                data: &data,
            })
            .map_err(|e| LoginAttempt::Signing(SignError::Encoding(e)))?;
            vault
                .request(Method::POST, &path, None, Some(&body), left)
                .map_err(LoginAttempt::Vault)
        },
        |attempt| match attempt {
            LoginAttempt::Vault(e) => judge.vault(e),
            LoginAttempt::Signing(_) => Verdict::Fatal,
        },
    );
    match result {
        Ok(answer) => token_from(&answer, &vault.shown_url(&path)).map_err(Error::Malformed),
        Err(f) => Err(failure(f)),
    }
}

fn failure(f: Failure<LoginAttempt>) -> Error {
    match f {
        Failure::Fatal(LoginAttempt::Signing(e))
        | Failure::Exhausted {
            last: LoginAttempt::Signing(e),
        } => Error::Signing(e),
        Failure::Fatal(LoginAttempt::Vault(e)) => login_failure(Failure::Fatal(e)),
        Failure::Exhausted {
            last: LoginAttempt::Vault(last),
        } => login_failure(Failure::Exhausted { last }),
        Failure::Cancelled => Error::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: Secret::from_string("AKIDEXAMPLE".into()),
            secret_access_key: Secret::from_string(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            ),
            session_token: token.map(|t| Secret::from_string(t.into())),
        }
    }

    fn decode_headers(data: &LoginData) -> BTreeMap<String, Vec<String>> {
        serde_json::from_slice(&STANDARD.decode(&data.iam_request_headers).unwrap()).unwrap()
    }

    #[test]
    fn fields_are_encoded_like_vaults_go_client() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let d = login_data(
            &creds(Some("SESSION")),
            "us-east-1",
            Some("vault.example.com"),
            t,
        )
        .unwrap();
        assert_eq!(d.iam_http_request_method, "POST");
        assert_eq!(
            STANDARD.decode(&d.iam_request_url).unwrap(),
            b"https://sts.amazonaws.com/"
        );
        assert_eq!(
            STANDARD.decode(&d.iam_request_body).unwrap(),
            STS_BODY.as_bytes()
        );
        let h = decode_headers(&d);
        let names: Vec<&str> = h.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "Authorization",
                "Content-Type",
                "X-Amz-Date",
                "X-Amz-Security-Token",
                "X-Vault-Aws-Iam-Server-Id"
            ]
        );
        assert_eq!(h["X-Amz-Date"], ["20231114T221320Z"]);
        let auth = &h["Authorization"][0];
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/sts/aws4_request"
        ));
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-vault-aws-iam-server-id"),
            "{auth}"
        );
    }

    #[test]
    fn regional_endpoint_and_no_extra_amz_headers() {
        let d = login_data(&creds(None), "eu-west-1", None, SystemTime::now()).unwrap();
        assert_eq!(
            STANDARD.decode(&d.iam_request_url).unwrap(),
            b"https://sts.eu-west-1.amazonaws.com/"
        );
        let h = decode_headers(&d);
        let amz: Vec<&String> = h.keys().filter(|k| k.starts_with("X-Amz-")).collect();
        assert_eq!(amz, ["X-Amz-Date"]);
        assert!(h["Authorization"][0].contains("/eu-west-1/sts/aws4_request"));
        assert_eq!(
            sts_url("cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn/"
        );
        assert_eq!(
            sts_url("us-gov-west-1"),
            "https://sts.us-gov-west-1.amazonaws.com/"
        );
    }

    #[test]
    fn environment_credentials_are_all_or_nothing() {
        let from = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Credentials::from_vars(move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        assert!(from(&[]).unwrap().is_none());
        assert!(from(&[("AWS_ACCESS_KEY_ID", "")]).unwrap().is_none());
        let c = from(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.access_key_id.expose(), b"AKID");
        assert!(c.session_token.is_none());
        let c = from(&[
            ("AWS_ACCESS_KEY_ID", "ASIA"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "tok"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.session_token.unwrap().expose(), b"tok");
        for half in [
            &[("AWS_ACCESS_KEY_ID", "AKID")][..],
            &[("AWS_SECRET_ACCESS_KEY", "s3cr3t")][..],
            &[("AWS_SESSION_TOKEN", "tok")][..],
        ] {
            let e = from(half).err().expect("refused").to_string();
            assert!(e.contains("is set without"), "{e}");
            assert!(!e.contains("s3cr3t") && !e.contains("tok\""), "{e}");
        }
    }

    /// Credentials that cannot be signed with end the login with the signing error: no panic,
    /// no request to Vault.
    #[test]
    fn credentials_that_cannot_sign_are_an_error_before_any_request() {
        let signer = vaultboot_sim::Signer::new();
        let sim =
            vaultboot_sim::VaultSim::start(vaultboot_sim::VaultOptions::new(&signer)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, sim.ca_pem()).unwrap();
        let vault = Vault::new(&crate::config::VaultConfig {
            address: sim.url(),
            ca_cert: Some(ca),
            tls_server_name: None,
            namespace: None,
            request_timeout: std::time::Duration::from_secs(5),
            proxy: None,
        })
        .unwrap();
        let mut credentials = creds(None);
        credentials.access_key_id = Secret::new(vec![0xff, 0xfe]);
        let policy = Policy::new(
            std::time::Instant::now() + std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(100),
        );
        let req = IamLogin {
            mount: "aws",
            role: "app",
            region: "us-east-1",
            endpoint: None,
            server_id: None,
            credentials: &credentials,
        };
        let e = login(&vault, &policy, &req).err().expect("refused");
        assert!(matches!(e, Error::Signing(SignError::NotText(_))), "{e:?}");
        assert_eq!(
            e.to_string(),
            "login: signing sts:GetCallerIdentity: the access key id is not text"
        );
        assert!(sim.control().requests().is_empty());
    }

    #[test]
    fn go_canonical_names() {
        assert_eq!(
            go_canonical("x-vault-aws-iam-server-id"),
            "X-Vault-Aws-Iam-Server-Id"
        );
        assert_eq!(go_canonical("authorization"), "Authorization");
    }
}
