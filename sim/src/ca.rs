//! A throw-away certificate authority (rcgen, ECDSA P-256) for test TLS servers and the PKI sim.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

struct CaInner {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

/// A test CA. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct TestCa {
    inner: Arc<CaInner>,
}

/// A leaf certificate issued by a [`TestCa`].
pub struct IssuedCert {
    pub cert_pem: String,
    /// PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"), EC P-256.
    pub key_pem: String,
    /// Serial number as Vault writes it: lowercase hex pairs joined by ':'.
    pub serial: String,
    /// not_after, unix seconds.
    pub not_after: u64,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn odt(t: SystemTime) -> OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(secs).expect("time in range")
}

fn random_serial() -> (SerialNumber, String) {
    let mut b = crate::util::random_bytes(16);
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 0x01;
    }
    let s = b
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    (SerialNumber::from_slice(&b), s)
}

impl TestCa {
    /// A new self-signed CA with this common name, valid from yesterday for ten years.
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "vaultboot-sim (TEST ONLY)");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = odt(now - Duration::from_secs(86_400));
        params.not_after = odt(now + Duration::from_secs(10 * 365 * 86_400));
        params.serial_number = Some(random_serial().0);
        let cert = params.self_signed(&key).expect("self-sign CA");
        let pem = cert.pem();
        TestCa {
            inner: Arc::new(CaInner { cert, key, pem }),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.inner.pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.inner.cert.der().to_vec()
    }

    /// Write the CA certificate (PEM) to `path`.
    pub fn write_cert_pem(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.inner.pem.as_bytes())
    }

    /// A TLS server certificate for these names/addresses, valid from an hour ago for a year.
    /// Returns (certificate PEM, PKCS#8 key PEM).
    pub fn issue_server_cert(&self, dns_names: &[&str], ips: &[IpAddr]) -> (String, String) {
        let now = SystemTime::now();
        let c = self.issue(
            dns_names.first().copied().unwrap_or("vaultboot-sim"),
            dns_names,
            ips,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(365 * 86_400),
            true,
        );
        (c.cert_pem, c.key_pem)
    }

    /// Like [`TestCa::issue_server_cert`] but expired (valid two days ago until yesterday).
    pub fn issue_expired_server_cert(
        &self,
        dns_names: &[&str],
        ips: &[IpAddr],
    ) -> (String, String) {
        let now = SystemTime::now();
        let c = self.issue(
            dns_names.first().copied().unwrap_or("vaultboot-sim"),
            dns_names,
            ips,
            now - Duration::from_secs(2 * 86_400),
            now - Duration::from_secs(86_400),
            true,
        );
        (c.cert_pem, c.key_pem)
    }

    /// General leaf issuance (used by the PKI simulator).
    pub fn issue(
        &self,
        common_name: &str,
        dns_names: &[&str],
        ips: &[IpAddr],
        not_before: SystemTime,
        not_after: SystemTime,
        server_auth: bool,
    ) -> IssuedCert {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        for n in dns_names {
            if let Ok(ia5) = (*n).to_string().try_into() {
                params.subject_alt_names.push(SanType::DnsName(ia5));
            }
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = if server_auth {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = odt(not_before);
        params.not_after = odt(not_after);
        let (serial, serial_str) = random_serial();
        params.serial_number = Some(serial);
        let cert = params
            .signed_by(&key, &self.inner.cert, &self.inner.key)
            .expect("sign leaf");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial_str,
            not_after: not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}
