//! What the agent needs to know of a certificate: when it expires, which names it was issued
//! for, which one it is (its SHA-256), and whether a private key belongs to it. The certificate is read with the `der` crate
//! (RustCrypto's DER reader), only as far as these fields; PEM blocks and the key check are
//! rustls's own (`pki-types`, `CertifiedKey`). (x509-cert, which decodes every field, added
//! 90 KB to the static binary; this reads four.)

use der::asn1::{AnyRef, GeneralizedTime, UtcTime};
use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The DER contents of the common name's OID (2.5.4.3) and of the subject alternative names
/// extension's (2.5.29.17).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub common_name: Option<String>,
    /// DNS names of the subject alternative names, lower case.
    pub dns_names: BTreeSet<String>,
    pub ip_addresses: BTreeSet<IpAddr>,
    /// SHA-256 of the certificate's DER, lower-case hex: which certificate this is.
    pub sha256: String,
}

impl Details {
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// The first certificate in `pem` (a leaf followed by its chain, as PKI writes it).
pub fn first_in_pem(pem: &[u8]) -> Result<Details, String> {
    let der = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no certificate in it")?
        .map_err(|e| format!("not PEM: {e}"))?;
    parse_der(&der)
}

fn parse_der(der: &[u8]) -> Result<Details, String> {
    let mut facts = parse_tbs(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    facts.sha256 = sha256_hex(der);
    Ok(facts)
}

/// SHA-256, lower-case hex. ring's, which rustls already brings into the binary.
fn sha256_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(DIGITS[usize::from(b >> 4)].into());
        out.push(DIGITS[usize::from(b & 15)].into());
    }
    out
}

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }, and in the TBS:
/// [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...,
/// [3] extensions.
fn parse_tbs(der: &[u8]) -> der::Result<Details> {
    let certificate = one(der, Tag::Sequence)?;
    let mut tbs = SliceReader::new(one_of_many(certificate, Tag::Sequence)?)?;
    let mut next = || AnyRef::decode(&mut tbs);
    // [0] version when present, then the serial number.
    if next()?.tag() == context(0) {
        next()?;
    }
    let (_signature, _issuer, validity, subject) = (next()?, next()?, next()?, next()?);
    let mut times = SliceReader::new(validity.value())?;
    let mut facts = Details {
        not_before: time(AnyRef::decode(&mut times)?)?,
        not_after: time(AnyRef::decode(&mut times)?)?,
        common_name: common_name(subject.value())?,
        dns_names: BTreeSet::new(),
        ip_addresses: BTreeSet::new(),
        sha256: String::new(),
    };
    while let Ok(item) = next() {
        if item.tag() == context(3) {
            alt_names(one(item.value(), Tag::Sequence)?, &mut facts)?;
        }
    }
    Ok(facts)
}

fn context(number: u8) -> Tag {
    Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::new(number),
    }
}

/// The value of the single `tag` element `der` holds.
fn one(der: &[u8], tag: Tag) -> der::Result<&[u8]> {
    let any = AnyRef::from_der(der)?;
    any.tag().assert_eq(tag)?;
    Ok(any.value())
}

/// The value of the first `tag` element in `der` (which may hold more after it).
fn one_of_many(der: &[u8], tag: Tag) -> der::Result<&[u8]> {
    let mut r = SliceReader::new(der)?;
    let any = AnyRef::decode(&mut r)?;
    any.tag().assert_eq(tag)?;
    Ok(any.value())
}

/// The contents of the OBJECT IDENTIFIER `r` is at.
fn oid<'a>(r: &mut SliceReader<'a>) -> der::Result<&'a [u8]> {
    let any = AnyRef::decode(r)?;
    any.tag().assert_eq(Tag::ObjectIdentifier)?;
    Ok(any.value())
}

fn time(any: AnyRef<'_>) -> der::Result<SystemTime> {
    let since_epoch = match any.tag() {
        Tag::UtcTime => UtcTime::try_from(any)?.to_unix_duration(),
        _ => GeneralizedTime::try_from(any)?.to_unix_duration(),
    };
    Ok(UNIX_EPOCH + since_epoch)
}

/// Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value }: the first common name.
fn common_name(name: &[u8]) -> der::Result<Option<String>> {
    let mut rdns = SliceReader::new(name)?;
    while !rdns.is_finished() {
        let set = AnyRef::decode(&mut rdns)?;
        let mut attributes = SliceReader::new(set.value())?;
        while !attributes.is_finished() {
            let attribute = AnyRef::decode(&mut attributes)?;
            let mut parts = SliceReader::new(attribute.value())?;
            let oid = oid(&mut parts)?;
            let value = AnyRef::decode(&mut parts)?;
            if oid == COMMON_NAME {
                return Ok(std::str::from_utf8(value.value()).ok().map(str::to_string));
            }
        }
    }
    Ok(None)
}

/// Extensions ::= SEQUENCE OF SEQUENCE { OID, critical BOOLEAN DEFAULT FALSE, OCTET STRING };
/// the subject alternative names' DNS names ([2]) and IP addresses ([7]).
fn alt_names(extensions: &[u8], facts: &mut Details) -> der::Result<()> {
    let mut list = SliceReader::new(extensions)?;
    while !list.is_finished() {
        let extension = AnyRef::decode(&mut list)?;
        let mut parts = SliceReader::new(extension.value())?;
        if oid(&mut parts)? != SUBJECT_ALT_NAME {
            continue;
        }
        let mut value = AnyRef::decode(&mut parts)?;
        if value.tag() == Tag::Boolean {
            value = AnyRef::decode(&mut parts)?;
        }
        let mut names = SliceReader::new(one(value.value(), Tag::Sequence)?)?;
        while !names.is_finished() {
            let name = AnyRef::decode(&mut names)?;
            let bytes = name.value();
            match (name.tag(), bytes.len()) {
                (Tag::ContextSpecific { number, .. }, _) if number.value() == 2 => {
                    let dns = String::from_utf8_lossy(bytes).to_ascii_lowercase();
                    facts.dns_names.insert(dns);
                }
                (Tag::ContextSpecific { number, .. }, 4 | 16) if number.value() == 7 => {
                    let ip = match <[u8; 4]>::try_from(bytes) {
                        Ok(v4) => IpAddr::from(v4),
                        Err(_) => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()),
                    };
                    facts.ip_addresses.insert(ip);
                }
                _ => {}
            }
        }
    }
    Ok(())
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
    fn a_certificate_is_known_by_the_sha256_of_its_der() {
        let ca = vaultboot_sim::TestCa::new("test CA");
        let digest = ring::digest::digest(&ring::digest::SHA256, &ca.cert_der());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let pem = ca.cert_pem();
        assert_eq!(first_in_pem(pem.as_bytes()).unwrap().sha256, hex);
        // The first certificate's, whatever follows it.
        let (leaf, _) = ca.issue_server_cert(&["a.example.com"], &[]);
        let leaf_facts = first_in_pem(leaf.as_bytes()).unwrap();
        let chained = first_in_pem(format!("{leaf}{pem}").as_bytes()).unwrap();
        assert_eq!(chained.sha256, leaf_facts.sha256);
        assert_ne!(leaf_facts.sha256, hex);
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
