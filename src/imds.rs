//! IMDSv2: the session token, the signed identity document, the identity document, metadata and
//! role credentials. IMDSv1 is never used: every read carries the session token.
//!
//! <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html>

use crate::config::{ImdsConfig, Signature};
use crate::decide::{self, Judge, Source};
use crate::formats;
use crate::http::{self, Client};
use crate::kind::Kind;
use crate::retry::{Failure, Policy};
use crate::secret::Secret;
use crate::untrusted;
use serde::Deserialize;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::Method;
use zeroize::Zeroize;

const TOKEN_PATH: &str = "/latest/api/token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";
/// A single IMDS request never waits longer than this: IMDS is link-local and answers in
/// milliseconds, and a stuck request must not eat the run's whole deadline.
const IMDS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// IMDS could not be reached, or kept failing, until the deadline.
    Unavailable {
        what: String,
        last: String,
    },
    /// IMDS refused (403: disabled; 404: no such item, e.g. no instance profile).
    Refused {
        what: String,
        status: u16,
    },
    /// The answer is not what IMDS sends.
    Malformed {
        what: String,
        detail: String,
    },
    Cancelled,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable { what, last } => {
                write!(
                    f,
                    "IMDS {what}: unavailable until the deadline (last: {last})"
                )
            }
            Error::Refused { what, status: 404 } => write!(f, "IMDS {what}: not found (404)"),
            Error::Refused { what, status: 403 } => {
                write!(
                    f,
                    "IMDS {what}: forbidden (403): is the metadata service disabled?"
                )
            }
            Error::Refused { what, status } => write!(f, "IMDS {what}: answered {status}"),
            Error::Malformed { what, detail } => write!(f, "IMDS {what}: {detail}"),
            Error::Cancelled => f.write_str("IMDS: cancelled"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Malformed { .. } => Kind::Malformed,
            Error::Refused { status, .. } => decide::kind(
                Source::Imds,
                &decide::Problem::Status {
                    status: *status,
                    messages: &[],
                },
            ),
            Error::Unavailable { .. } | Error::Cancelled => Kind::Unavailable,
        }
    }
}

/// One failed attempt, before retry decisions.
enum Attempt {
    Http(http::Error),
    Status(u16, Option<Duration>),
    /// The session token IMDS gave is not a token (empty, too long, not printable ASCII).
    NotAToken,
}

impl Attempt {
    fn describe(&self) -> String {
        match self {
            Attempt::Http(e) => e.to_string(),
            Attempt::Status(s, _) => format!("HTTP {s}"),
            Attempt::NotAToken => "the session token is not a token".into(),
        }
    }

    fn answer(&self) -> decide::Problem<'_> {
        match self {
            Attempt::Http(e) => decide::Problem::Transport(e),
            Attempt::Status(status, _) => decide::Problem::Status {
                status: *status,
                messages: &[],
            },
            Attempt::NotAToken => decide::Problem::Unusable,
        }
    }

    fn verdict(&self, judge: &mut Judge) -> crate::retry::Verdict {
        let retry_after = match self {
            Attempt::Status(_, after) => *after,
            _ => None,
        };
        judge.verdict(&self.answer(), retry_after)
    }
}

/// The fields of the identity document vaultboot uses.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    pub account_id: String,
    pub availability_zone: String,
    pub image_id: String,
    pub private_ip: String,
}

/// AWS credentials of the instance profile (`iam` method).
pub struct RoleCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub token: Secret,
}

pub struct Imds<'p> {
    client: Client,
    ttl_seconds: String,
    token: Mutex<Option<Secret>>,
    policy: &'p Policy,
}

impl<'p> Imds<'p> {
    pub fn new(config: &ImdsConfig, policy: &'p Policy) -> Self {
        Imds {
            client: Client::plain(&config.endpoint, IMDS_REQUEST_TIMEOUT),
            ttl_seconds: config.token_ttl.as_secs().to_string(),
            token: Mutex::new(None),
            policy,
        }
    }

    /// Gets the session token now (with the usual retries), so that reads made in parallel
    /// afterwards share it instead of each asking for one.
    pub fn open_session(&self) -> Result<(), Error> {
        let mut judge = Judge::new(Source::Imds);
        self.policy
            .run(
                |left| self.session_token(left).map(drop),
                |a| a.verdict(&mut judge),
            )
            .map_err(|f| failure(TOKEN_PATH, f))
    }

    /// The signed identity document, newlines removed, as Vault's `pkcs7` field wants it.
    pub fn fetch_signed_document(&self, signature: Signature) -> Result<String, Error> {
        let path = match signature {
            Signature::Rsa2048 => "/latest/dynamic/instance-identity/rsa2048",
            Signature::Pkcs7 => "/latest/dynamic/instance-identity/pkcs7",
        };
        let body = self.get(path)?;
        parse_signed_document(body.expose()).map_err(|why| malformed(path, why))
    }

    pub fn fetch_identity(&self) -> Result<Identity, Error> {
        let body = self.get(DOCUMENT_PATH)?;
        parse_identity(body.expose()).map_err(|why| malformed(DOCUMENT_PATH, &why))
    }

    /// A one-line metadata item such as `local-hostname`.
    pub fn fetch_metadata(&self, name: &str) -> Result<String, Error> {
        let path = format!("/latest/meta-data/{name}");
        let body = self.get(&path)?;
        let text = std::str::from_utf8(body.expose())
            .map_err(|_| malformed(&path, "not text"))?
            .trim();
        if text.is_empty() || text.len() > 255 {
            return Err(malformed(&path, "not a single short line"));
        }
        let (valid, what) = metadata_format(name);
        if !valid(text) {
            let why = format!("{name} {} is not {what}", formats::shown(text));
            return Err(malformed(&path, &why));
        }
        Ok(text.to_string())
    }

    /// Credentials of the instance profile's role.
    pub fn fetch_role_credentials(&self) -> Result<RoleCredentials, Error> {
        let list_path = "/latest/meta-data/iam/security-credentials/";
        let body = self.get(list_path)?;
        let role = std::str::from_utf8(body.expose())
            .ok()
            .and_then(|t| t.lines().next())
            .map(str::trim)
            .filter(|r| formats::is_role_name(r))
            .ok_or_else(|| malformed(list_path, "no IAM role name on its first line"))?
            .to_string();
        let path = format!("{list_path}{role}");
        let body = self.get(&path)?;
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Raw {
            access_key_id: String,
            secret_access_key: String,
            token: String,
        }
        // Also when the answer is refused after these were read.
        impl Drop for Raw {
            fn drop(&mut self) {
                self.access_key_id.zeroize();
                self.secret_access_key.zeroize();
                self.token.zeroize();
            }
        }
        let mut raw: Raw = serde_json::from_slice(body.expose()).map_err(|e| {
            malformed(
                &path,
                &format!("not role credentials: {}", untrusted::json_problem(&e)),
            )
        })?;
        Ok(RoleCredentials {
            access_key_id: Secret::from_string(std::mem::take(&mut raw.access_key_id)),
            secret_access_key: Secret::from_string(std::mem::take(&mut raw.secret_access_key)),
            token: Secret::from_string(std::mem::take(&mut raw.token)),
        })
    }

    /// GET with the session token; a 401 drops it, and the table allows one fresh one.
    fn get(&self, path: &str) -> Result<Secret, Error> {
        let mut judge = Judge::new(Source::Imds);
        let result = self.policy.run(
            |left| {
                let token = self.session_token(left)?;
                let answer = self
                    .client
                    .send(
                        Method::GET,
                        path,
                        &[],
                        &[(TOKEN_HEADER, &token)],
                        None,
                        left,
                    )
                    .map_err(Attempt::Http)?;
                if answer.status == 401 {
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                match answer.status {
                    200 => Ok(answer.body),
                    s => Err(Attempt::Status(s, answer.retry_after)),
                }
            },
            |attempt| attempt.verdict(&mut judge),
        );
        result.map_err(|f| failure(path, f))
    }

    fn session_token(&self, left: Duration) -> Result<Secret, Attempt> {
        let mut slot = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let answer = self
            .client
            .send(
                Method::PUT,
                TOKEN_PATH,
                &[(TTL_HEADER, &self.ttl_seconds)],
                &[],
                None,
                left,
            )
            .map_err(Attempt::Http)?;
        if answer.status != 200 {
            return Err(Attempt::Status(answer.status, answer.retry_after));
        }
        let token = answer.body;
        let valid = !token.is_empty()
            && token.len() <= 512
            && token.expose().iter().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(Attempt::NotAToken);
        }
        *slot = Some(token.clone());
        Ok(token)
    }
}

/// The signed document as Vault's `pkcs7` field wants it: ASCII whitespace removed, then only
/// the base64 alphabet accepted.
pub fn parse_signed_document(body: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "not text")?;
    let doc: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if doc.is_empty()
        || !doc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return Err("not a base64 signature");
    }
    Ok(doc)
}

/// The identity document: a JSON object (serde would take an array as the fields in order)
/// whose every field vaultboot uses has its AWS format: they end up in log lines, templated
/// output paths and Vault request bodies, and the instance id in the operator's reset hint.
pub fn parse_identity(body: &[u8]) -> Result<Identity, String> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    let id: Identity = serde_json::from_slice(body)
        .map_err(|e| format!("not an identity document: {}", untrusted::json_problem(&e)))?;
    let checks = [
        (
            "instanceId",
            formats::is_instance_id(&id.instance_id),
            &id.instance_id,
            "an instance id",
        ),
        (
            "region",
            formats::is_region(&id.region),
            &id.region,
            "a region",
        ),
        (
            "accountId",
            formats::is_account_id(&id.account_id),
            &id.account_id,
            "a 12-digit account id",
        ),
        (
            "availabilityZone",
            formats::is_availability_zone(&id.availability_zone, &id.region),
            &id.availability_zone,
            "an availability zone of the region",
        ),
        (
            "imageId",
            formats::is_image_id(&id.image_id),
            &id.image_id,
            "an AMI id",
        ),
        (
            // An IPv6-only instance's document holds its IPv6 address here.
            "privateIp",
            formats::is_ipv4(&id.private_ip) || formats::is_ipv6(&id.private_ip),
            &id.private_ip,
            "an IP address",
        ),
    ];
    if let Some((field, _, value, what)) = checks.into_iter().find(|(_, ok, _, _)| !ok) {
        return Err(format!("{field} {} is not {what}", formats::shown(value)));
    }
    Ok(id)
}

/// The format a metadata item must have, and its name in messages.
fn metadata_format(name: &str) -> (fn(&str) -> bool, &'static str) {
    match name {
        "local-hostname" => (formats::is_host_name, "a host name"),
        "local-ipv4" => (formats::is_ipv4, "an IPv4 address"),
        "ipv6" => (formats::is_ipv6, "an IPv6 address"),
        _ => (|text| !text.contains(char::is_control), "a single line"),
    }
}

fn failure(path: &str, f: Failure<Attempt>) -> Error {
    let what = path.to_string();
    match f {
        Failure::Cancelled => Error::Cancelled,
        Failure::Exhausted { last, .. } => Error::Unavailable {
            what,
            last: last.describe(),
        },
        Failure::Fatal(Attempt::Status(status, _)) => Error::Refused { what, status },
        Failure::Fatal(Attempt::NotAToken) => Error::Malformed {
            what: TOKEN_PATH.into(),
            detail: Attempt::NotAToken.describe(),
        },
        Failure::Fatal(a @ Attempt::Http(_)) => match decide::kind(Source::Imds, &a.answer()) {
            Kind::Malformed => Error::Malformed {
                what,
                detail: a.describe(),
            },
            _ => Error::Unavailable {
                what,
                last: a.describe(),
            },
        },
    }
}

fn malformed(path: &str, detail: &str) -> Error {
    Error::Malformed {
        what: path.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r#"{"accountId":"123456789012","availabilityZone":"us-east-1a",
        "imageId":"ami-0123456789abcdef0","instanceId":"i-0123456789abcdef0",
        "privateIp":"10.0.1.23","region":"us-east-1","version":"2017-09-30"}"#;

    fn with(field: &str, value: &str) -> Vec<u8> {
        let mut doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        doc[field] = value.into();
        doc.to_string().into_bytes()
    }

    #[test]
    fn a_plain_document_is_read() {
        let id = parse_identity(DOCUMENT.as_bytes()).unwrap();
        assert_eq!(
            (id.region.as_str(), id.private_ip.as_str()),
            ("us-east-1", "10.0.1.23")
        );
    }

    #[test]
    fn each_field_out_of_format_is_named_with_its_value() {
        for (field, value) in [
            ("instanceId", "i-0123/.."),
            ("region", "us-east-1\n<3>vaultboot: error: FORGED"),
            ("accountId", "12345678901"),
            ("availabilityZone", "us-east-1a/.."),
            ("imageId", "ami-nothex00"),
            ("privateIp", "10.0.1"),
        ] {
            let e = parse_identity(&with(field, value)).unwrap_err();
            let named = format!("{field} \"{value}\" is not ");
            assert!(e.starts_with(&named), "{e}");
            assert_eq!(
                e,
                format!(
                    "{field} \"{value}\" is not {}",
                    e.rsplit(" is not ").next().unwrap()
                )
            );
        }
        // The zone must be one of the document's region.
        let e = parse_identity(&with("availabilityZone", "eu-west-1a")).unwrap_err();
        assert!(e.starts_with("availabilityZone \"eu-west-1a\""), "{e}");
    }

    #[test]
    fn metadata_items_have_their_formats() {
        let (host, _) = metadata_format("local-hostname");
        assert!(host("ip-10-0-1-23.ec2.internal") && !host("a/b") && !host(".."));
        let (ip, _) = metadata_format("local-ipv4");
        assert!(ip("10.0.1.23") && !ip("10.0.1.23\n"));
        let (ip6, what) = metadata_format("ipv6");
        assert_eq!(what, "an IPv6 address");
        assert!(ip6("2600:1f18:5cb5:3200:fff9:6ea:f5b8:67a4"));
        for bad in [
            "10.0.1.23",
            "fe80::1%eth0",
            "[2600::1]",
            "2600::1/128",
            "2600::G",
            "",
        ] {
            assert!(!ip6(bad), "{bad}");
        }
    }

    /// On an IPv6-only instance EC2 writes the IPv6 address in `privateIp`.
    #[test]
    fn an_ipv6_only_instance_document_is_read() {
        let id = parse_identity(&with("privateIp", "2600:1f18:5cb5:3200::67a4")).unwrap();
        assert_eq!(id.private_ip, "2600:1f18:5cb5:3200::67a4");
        let e = parse_identity(&with("privateIp", "fe80::1%ens5")).unwrap_err();
        assert_eq!(e, "privateIp \"fe80::1%ens5\" is not an IP address");
    }
}
