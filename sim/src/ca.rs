//! A throw-away certificate authority (rcgen, ECDSA P-256) for test TLS servers and the PKI sim.
//! Its leaf certificates carry a new P-256 key, or one of two fixed RSA 2048 test keys (ring,
//! which rcgen uses here, cannot generate RSA keys; `src/fixtures/`, TEST ONLY).

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_RSA_SHA256,
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

/// The key of a leaf certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeafKey {
    /// A new EC P-256 key.
    #[default]
    EcP256,
    /// Fixed RSA 2048 test key number 0 or 1 (any other number is taken modulo 2).
    Rsa(usize),
}

/// The fixed RSA test keys: PKCS#8 (what ring signs with) and PKCS#1 (what Vault's PKI returns
/// for an RSA key), the same key in both.
const RSA_KEYS: [(&str, &str); 2] = [
    (
        include_str!("fixtures/rsa2048-1.pk8.pem"),
        include_str!("fixtures/rsa2048-1.pkcs1.pem"),
    ),
    (
        include_str!("fixtures/rsa2048-2.pk8.pem"),
        include_str!("fixtures/rsa2048-2.pkcs1.pem"),
    ),
];

impl LeafKey {
    /// The key pair, and its PEM as Vault hands it out.
    fn make(self) -> (KeyPair, String) {
        match self {
            LeafKey::EcP256 => {
                let key = KeyPair::generate().expect("generate leaf key");
                let pem = key.serialize_pem();
                (key, pem)
            }
            LeafKey::Rsa(n) => {
                let (pkcs8, pkcs1) = RSA_KEYS[n % RSA_KEYS.len()];
                let key =
                    KeyPair::from_pem_and_sign_algo(pkcs8, &PKCS_RSA_SHA256).expect("RSA test key");
                (key, pkcs1.to_string())
            }
        }
    }
}

/// A leaf certificate issued by a [`TestCa`].
pub struct IssuedCert {
    pub cert_pem: String,
    /// EC P-256: PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"); RSA: PKCS#1 PEM ("-----BEGIN RSA
    /// PRIVATE KEY-----"), as Vault's PKI returns them.
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
        let leaf = Leaf {
            common_name,
            dns_names,
            ips,
            not_before,
            not_after,
        };
        self.issue_leaf(&leaf, LeafKey::EcP256, server_auth)
    }

    /// A server certificate for `leaf` with a key of this kind.
    pub fn issue_leaf(&self, leaf: &Leaf<'_>, key: LeafKey, server_auth: bool) -> IssuedCert {
        let (key, key_pem) = key.make();
        let (params, serial) = leaf.params(server_auth);
        let cert = params
            .signed_by(&key, &self.inner.cert, &self.inner.key)
            .expect("sign leaf");
        leaf.issued(cert.pem(), key_pem, serial)
    }
}

/// What a leaf certificate says.
pub struct Leaf<'a> {
    pub common_name: &'a str,
    pub dns_names: &'a [&'a str],
    pub ips: &'a [IpAddr],
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Leaf<'_> {
    /// A self-signed certificate with a new P-256 key: what someone who can write a
    /// certificate output could put there instead of the one Vault issued.
    pub fn self_signed(&self) -> IssuedCert {
        let (key, key_pem) = LeafKey::EcP256.make();
        let (params, serial) = self.params(true);
        let cert = params.self_signed(&key).expect("self-sign leaf");
        self.issued(cert.pem(), key_pem, serial)
    }

    fn params(&self, server_auth: bool) -> (CertificateParams, String) {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name);
        params.distinguished_name = dn;
        for n in self.dns_names {
            if let Ok(ia5) = (*n).to_string().try_into() {
                params.subject_alt_names.push(SanType::DnsName(ia5));
            }
        }
        for ip in self.ips {
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
        params.not_before = odt(self.not_before);
        params.not_after = odt(self.not_after);
        let (serial, serial_str) = random_serial();
        params.serial_number = Some(serial);
        (params, serial_str)
    }

    fn issued(&self, cert_pem: String, key_pem: String, serial: String) -> IssuedCert {
        IssuedCert {
            cert_pem,
            key_pem,
            serial,
            not_after: self
                .not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}
