//! What the agent needs to know of a certificate: when it expires, which names it was issued
//! for, and whether a private key belongs to it. Parsing is `x509-cert` (RustCrypto's DER
//! decoder); PEM blocks and the key check are rustls's own (`pki-types`, `CertifiedKey`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

/// The common name's OID (2.5.4.3).
const COMMON_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub common_name: Option<String>,
    /// DNS names of the subject alternative names, lower case.
    pub dns_names: BTreeSet<String>,
    pub ip_addresses: BTreeSet<IpAddr>,
}

impl Facts {
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// The first certificate in `pem` (a leaf followed by its chain, as PKI writes it).
pub fn first_in_pem(pem: &[u8]) -> Result<Facts, String> {
    let der = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no certificate in it")?
        .map_err(|e| format!("not PEM: {e}"))?;
    parse_der(&der)
}

fn parse_der(der: &[u8]) -> Result<Facts, String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("not X.509: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let time = |t: x509_cert::time::Time| UNIX_EPOCH + t.to_unix_duration();
    let mut facts = Facts {
        not_before: time(tbs.validity.not_before),
        not_after: time(tbs.validity.not_after),
        common_name: None,
        dns_names: BTreeSet::new(),
        ip_addresses: BTreeSet::new(),
    };
    facts.common_name = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == COMMON_NAME)
        .and_then(|atv| std::str::from_utf8(atv.value.value()).ok())
        .map(str::to_string);
    let sans = tbs
        .get::<SubjectAltName>()
        .map_err(|e| format!("bad subject alternative names: {e}"))?;
    for name in sans.map(|(_, san)| san.0).unwrap_or_default() {
        match name {
            GeneralName::DnsName(dns) => {
                facts.dns_names.insert(dns.as_str().to_ascii_lowercase());
            }
            GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                4 => {
                    let b: [u8; 4] = ip.as_bytes().try_into().unwrap_or_default();
                    facts.ip_addresses.insert(IpAddr::from(b));
                }
                16 => {
                    let b: [u8; 16] = ip.as_bytes().try_into().unwrap_or_default();
                    facts.ip_addresses.insert(IpAddr::from(b));
                }
                _ => return Err("an IP address SAN is neither IPv4 nor IPv6".into()),
            },
            _ => {}
        }
    }
    Ok(facts)
}

/// Whether the first private key in `key_pem` (PKCS#1, SEC1 or PKCS#8) is the one the first
/// certificate in `cert_pem` was issued for.
pub fn key_matches(cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, String> {
    let cert = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or("no certificate")?
        .map_err(|e| format!("certificate not PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| "no private key in it")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| "the private key is of a kind rustls cannot use")?;
    let certified = rustls::sign::CertifiedKey::new(vec![cert], signing);
    match certified.keys_match() {
        Ok(()) => Ok(true),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Ok(false),
        Err(e) => Err(format!("cannot compare key and certificate: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_validity_of_a_pki_certificate() {
        let ca = vaultboot_sim::TestCa::new("test CA");
        let now = SystemTime::now();
        let issue = |cn: &str, dns: &[&str], ips: &[IpAddr]| {
            let c = ca.issue(cn, dns, ips, now, now + Duration::from_secs(3600), true);
            (c.cert_pem, c.key_pem)
        };
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let (cert, key) = issue("web.example.com", &["www.example.com"], &[ip]);
        let facts = first_in_pem(format!("{cert}{}", ca.cert_pem()).as_bytes()).unwrap();
        assert_eq!(facts.common_name.as_deref(), Some("web.example.com"));
        assert!(facts.dns_names.contains("www.example.com"));
        assert!(facts.ip_addresses.contains(&ip));
        let lifetime = facts.lifetime().as_secs();
        assert!((3590..=3700).contains(&lifetime), "{lifetime}");
        assert!(facts.not_after > SystemTime::now() + Duration::from_secs(3000));
        assert!(key_matches(cert.as_bytes(), key.as_bytes()).unwrap());
        let (_, other_key) = issue("web.example.com", &[], &[]);
        assert!(!key_matches(cert.as_bytes(), other_key.as_bytes()).unwrap());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(first_in_pem(b"").is_err());
        assert!(
            first_in_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
        assert!(key_matches(b"x", b"y").is_err());
    }
}
