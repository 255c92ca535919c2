//! AWS Signature Version 4, as STS checks it: written from the published algorithm with ring's
//! HMAC-SHA256 and SHA-256, independently of the aws-sigv4 crate the agent signs with (a shared
//! bug would otherwise pass unnoticed). Pinned to botocore's output in the tests below.
//!
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>

use ring::{digest, hmac};

pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    pub terminator: String,
    /// Lower-case names, in the order given.
    pub signed_headers: Vec<String>,
    /// Lower-case hex.
    pub signature: String,
}

impl Authorization {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.date, self.region, self.service, self.terminator
        )
    }
}

/// Parses the header value; the error is STS's own wording for an incomplete signature.
pub(crate) fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            "Authorization header requires 'AWS4-HMAC-SHA256' as the algorithm".to_string()
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| format!("Authorization header requires '{what}' parameter");
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let c: Vec<&str> = credential.split('/').collect();
    if c.len() != 5 || c.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "Credential should be scoped to a valid region. Credential has {} parts, expected 5",
            c.len()
        ));
    }
    Ok(Authorization {
        access_key_id: c[0].to_string(),
        date: c[1].to_string(),
        region: c[2].to_string(),
        service: c[3].to_string(),
        terminator: c[4].to_string(),
        signed_headers: signed.split(';').map(|h| h.to_ascii_lowercase()).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (and `/` in paths).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decoding (for re-encoding paths and query strings canonically).
fn uri_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A header value as SigV4 canonicalizes it: trimmed, inner runs of spaces collapsed.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request. `headers` are (name, values) as sent, any case; a signed header that
/// was not sent contributes an empty value (and so a signature that cannot match).
pub(crate) fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, Vec<String>)],
    signed_headers: &[String],
    body: &[u8],
) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let canonical_path = uri_encode(&String::from_utf8_lossy(&uri_decode(path)), true);
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&String::from_utf8_lossy(&uri_decode(k)), false),
                uri_encode(&String::from_utf8_lossy(&uri_decode(v)), false),
            )
        })
        .collect();
    params.sort();
    let canonical_query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, vs)| vs.iter().map(|v| canonical_value(v)))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{method}\n{canonical_path}\n{canonical_query}\n{canonical_headers}\n{}\n{}",
        signed_headers.join(";"),
        sha256_hex(body)
    )
}

pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The hex signature of a string to sign.
pub(crate) fn signature(signing_key: &[u8], string_to_sign: &str) -> String {
    hex(&hmac_sha256(signing_key, string_to_sign.as_bytes()))
}

/// Constant-time comparison of two hex signatures.
pub(crate) fn signatures_match(expected: &str, given: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"compare");
    // Comparing MACs of both sides through ring keeps the comparison constant-time.
    hmac::verify(
        &key,
        given.as_bytes(),
        hmac::sign(&key, expected.as_bytes()).as_ref(),
    )
    .is_ok()
}

/// `YYYYMMDDTHHMMSSZ` → seconds since the epoch.
pub(crate) fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, mi, se) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Seconds since the epoch → `YYYYMMDDTHHMMSSZ`.
pub(crate) fn format_amz_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// botocore's SigV4Auth over the same requests (tests/fixtures/sigv4/generate.py).
    const VECTORS: &str =
        include_str!("../../../tests/fixtures/sigv4/sts_get_caller_identity.json");

    #[test]
    fn matches_botocore_step_by_step() {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 2);
        for case in cases {
            let inputs = &case["inputs"];
            let sent = case["signed_headers"].as_object().unwrap();
            let auth = parse_authorization(sent["Authorization"].as_str().unwrap()).unwrap();
            let url = inputs["url"].as_str().unwrap();
            let host = url
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            let mut headers: Vec<(String, Vec<String>)> = sent
                .iter()
                .filter(|(k, _)| *k != "Authorization")
                .map(|(k, v)| (k.clone(), vec![v.as_str().unwrap().to_string()]))
                .collect();
            headers.push(("Host".into(), vec![host]));
            let creq = canonical_request(
                "POST",
                "/",
                "",
                &headers,
                &auth.signed_headers,
                inputs["body"].as_str().unwrap().as_bytes(),
            );
            assert_eq!(creq, case["canonical_request"].as_str().unwrap());
            let amz_date = sent["X-Amz-Date"].as_str().unwrap();
            let sts = string_to_sign(amz_date, &auth.scope(), &creq);
            assert_eq!(sts, case["string_to_sign"].as_str().unwrap());
            let key = signing_key(
                inputs["secret_access_key"].as_str().unwrap(),
                &auth.date,
                &auth.region,
                &auth.service,
            );
            let sig = signature(&key, &sts);
            assert_eq!(sig, case["signature"].as_str().unwrap());
            assert_eq!(sig, auth.signature);
            assert!(signatures_match(&sig, &auth.signature));
            assert_eq!(
                parse_amz_date(amz_date),
                Some(inputs["time_unix"].as_i64().unwrap())
            );
        }
    }

    #[test]
    fn aws_documentation_signing_key() {
        // The worked example of AWS's SigV4 documentation (iam ListUsers, 2015-08-30).
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&key),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn authorization_parsing() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/sts/aws4_request, \
             SignedHeaders=Content-Type;host, Signature=ABCDEF",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.scope(), "20231114/us-east-1/sts/aws4_request");
        assert_eq!(a.signed_headers, ["content-type", "host"]);
        assert_eq!(a.signature, "abcdef");
        assert!(parse_authorization("AWS4-HMAC-SHA1 Credential=a/b/c/d/e").is_err());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=a/b/c/d/e").is_err());
        assert!(parse_authorization(
            "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=h, Signature=0"
        )
        .is_err());
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(format_amz_date(1_700_000_000), "20231114T221320Z");
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
        assert_eq!(parse_amz_date("20231114 221320Z"), None);
        assert_eq!(parse_amz_date("20231314T221320Z"), None);
        assert_eq!(parse_amz_date("2023111T4221320Z"), None);
    }

    #[test]
    fn canonical_values_and_paths() {
        assert_eq!(canonical_value("  a   b  c "), "a b c");
        let creq = canonical_request(
            "GET",
            "/a b/%7Ec",
            "b=2&a=x y",
            &[("X-H".into(), vec!["1".into(), " 2 ".into()])],
            &["x-h".into()],
            b"",
        );
        assert!(
            creq.starts_with("GET\n/a%20b/~c\na=x%20y&b=2\nx-h:1,2\n\nx-h\n"),
            "{creq}"
        );
        assert!(signatures_match("00ff", "00ff"));
        assert!(!signatures_match("00ff", "00fe"));
    }
}
