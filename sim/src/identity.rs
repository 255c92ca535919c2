//! The simulated instance and the stand-in for AWS's document-signing key.

use std::sync::Arc;

use base64::Engine;

/// What the simulated instance looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    pub account_id: String,
    pub availability_zone: String,
    pub image_id: String,
    pub private_ip: String,
    pub local_hostname: String,
    /// Empty on an IPv6-only instance: IMDS then answers 404 for `local-ipv4`.
    pub local_ipv4: String,
    /// The primary interface's IPv6 address (`meta-data/ipv6`), if it has one.
    pub ipv6: Option<String>,
    /// The instance profile's role, if any (IMDS `iam/security-credentials/`).
    pub iam_role: Option<String>,
}

impl Identity {
    /// Realistic values for an instance in us-east-1a.
    pub fn sample(instance_id: &str) -> Identity {
        Identity {
            instance_id: instance_id.to_string(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            availability_zone: "us-east-1a".into(),
            image_id: "ami-0123456789abcdef0".into(),
            private_ip: "10.0.1.23".into(),
            local_hostname: "ip-10-0-1-23.ec2.internal".into(),
            local_ipv4: "10.0.1.23".into(),
            ipv6: None,
            iam_role: None,
        }
    }

    /// An instance in an IPv6-only subnet, as EC2 describes one: no IPv4 address (no
    /// `local-ipv4`), its IPv6 address in `ipv6` and in the document's `privateIp`, and a
    /// resource-based host name.
    pub fn ipv6_only(instance_id: &str) -> Identity {
        let address = "2600:1f18:5cb5:3200:fff9:6ea:f5b8:67a4".to_string();
        Identity {
            private_ip: address.clone(),
            local_hostname: format!("{instance_id}.ec2.internal"),
            local_ipv4: String::new(),
            ipv6: Some(address),
            ..Identity::sample(instance_id)
        }
    }

    /// The identity document as IMDS serves it (pretty-printed the AWS way, `" : "`).
    pub fn document(&self, pending_time: &str) -> String {
        fn s(v: &str) -> String {
            serde_json::Value::String(v.to_string()).to_string()
        }
        let fields: Vec<(&str, String)> = vec![
            ("accountId", s(&self.account_id)),
            ("architecture", s("x86_64")),
            ("availabilityZone", s(&self.availability_zone)),
            ("billingProducts", "null".into()),
            ("devpayProductCodes", "null".into()),
            ("marketplaceProductCodes", "null".into()),
            ("imageId", s(&self.image_id)),
            ("instanceId", s(&self.instance_id)),
            ("instanceType", s("t3.micro")),
            ("kernelId", "null".into()),
            ("pendingTime", s(pending_time)),
            ("privateIp", s(&self.private_ip)),
            ("ramdiskId", "null".into()),
            ("region", s(&self.region)),
            ("version", s("2017-09-30")),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("  \"{k}\" : {v}"))
            .collect();
        format!("{{\n{}\n}}", body.join(",\n"))
    }
}

/// Which signature flavour a blob claims to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureKind {
    /// `/rsa2048`: PKCS#7 with SHA-256 (what Vault 1.12+ wants).
    Rsa2048,
    /// `/pkcs7`: PKCS#7 with SHA-1 (rejected by default by Vault 1.12+).
    Pkcs7,
}

impl SignatureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureKind::Rsa2048 => "rsa2048",
            SignatureKind::Pkcs7 => "pkcs7",
        }
    }
}

/// Why a signed blob was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    Base64,
    Format,
    BadSignature,
}

const MAGIC: &str = "VAULTBOOT-SIM SIGNED IDENTITY DOCUMENT v1";

/// Stand-in for AWS's document-signing key: the IMDS sim signs, the Vault sim verifies.
/// Blobs are `base64(MAGIC \n kind \n hex(HMAC-SHA256(kind \n document)) \n\n document)`,
/// wrapped at 64 characters like IMDS's.
#[derive(Clone)]
pub struct Signer {
    key: Arc<ring::hmac::Key>,
}

impl Default for Signer {
    fn default() -> Self {
        Signer::new()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh random key.
    pub fn new() -> Signer {
        let k = crate::util::random_bytes(32);
        Signer {
            key: Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k)),
        }
    }

    fn mac(&self, kind: SignatureKind, document: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(kind.as_str().as_bytes());
        ctx.update(b"\n");
        ctx.update(document.as_bytes());
        crate::util::hex(ctx.sign().as_ref())
    }

    /// The blob IMDS serves for this document (base64, "\n" every 64 characters).
    pub fn sign(&self, document: &str, kind: SignatureKind) -> String {
        let raw = format!(
            "{MAGIC}\n{}\n{}\n\n{document}",
            kind.as_str(),
            self.mac(kind, document)
        );
        crate::util::base64_wrapped(raw.as_bytes())
    }

    /// Verify a blob (newlines and other ASCII whitespace tolerated); returns the kind and document.
    pub fn verify(&self, blob: &str) -> Result<(SignatureKind, String), VerifyError> {
        let compact: String = blob.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| VerifyError::Base64)?;
        let text = String::from_utf8(raw).map_err(|_| VerifyError::Format)?;
        let (head, document) = text.split_once("\n\n").ok_or(VerifyError::Format)?;
        let mut lines = head.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(VerifyError::Format);
        }
        let kind = match lines.next() {
            Some("rsa2048") => SignatureKind::Rsa2048,
            Some("pkcs7") => SignatureKind::Pkcs7,
            _ => return Err(VerifyError::Format),
        };
        let mac_hex = lines.next().ok_or(VerifyError::Format)?;
        let mac = (0..mac_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(mac_hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| VerifyError::Format)?;
        let mut msg = Vec::new();
        msg.extend_from_slice(kind.as_str().as_bytes());
        msg.push(b'\n');
        msg.extend_from_slice(document.as_bytes());
        ring::hmac::verify(&self.key, &msg, &mac).map_err(|_| VerifyError::BadSignature)?;
        Ok((kind, document.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip() {
        let s = Signer::new();
        let doc = Identity::sample("i-0abc").document("2026-01-01T00:00:00Z");
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["instanceId"], "i-0abc");
        let blob = s.sign(&doc, SignatureKind::Rsa2048);
        assert!(blob.contains('\n'));
        assert!(blob.lines().all(|l| l.len() <= 64));
        assert_eq!(
            s.verify(&blob).unwrap(),
            (SignatureKind::Rsa2048, doc.clone())
        );
        assert_eq!(
            s.verify(&blob.replace('\n', "")).unwrap().0,
            SignatureKind::Rsa2048
        );
        assert_eq!(
            Signer::new().verify(&blob).unwrap_err(),
            VerifyError::BadSignature
        );
        assert!(s.verify("not base64!").is_err());
    }
}
