//! The TLS crypto: rustls's ring primitives with AES-GCM only.
//!
//! Every Vault (Go's crypto/tls) and every AWS endpoint offers AES-GCM, which EC2's x86 and
//! Graviton processors run in hardware; ChaCha20-Poly1305 is for processors without AES
//! instructions. Leaving it out takes its code (about 53 KB of a static binary) out of the
//! build, which only happens when nothing names ring's default provider: so the provider is
//! spelled out here, with rustls's own lists of groups and signature algorithms for ring.

use rustls::crypto::ring::{cipher_suite as suite, kx_group};
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom};
use rustls::crypto::{WebPkiSupportedAlgorithms, WebPkiSupportedAlgorithms as Algorithms};
use rustls::SignatureScheme as Scheme;
use std::sync::Arc;
use webpki::ring as alg;

/// rustls's provider for ring, less ChaCha20-Poly1305.
pub(super) fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Ring,
        key_provider: &Ring,
    }
}

/// What rustls's ring provider verifies (rustls 0.23's `SUPPORTED_SIG_ALGS`, which is private).
static SIGNATURES: WebPkiSupportedAlgorithms = Algorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::ED25519,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
        alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    // For TLS 1.2 the curve is not fixed by the scheme; for TLS 1.3 it is.
    mapping: &[
        (
            Scheme::ECDSA_NISTP384_SHA384,
            &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        ),
        (
            Scheme::ECDSA_NISTP256_SHA256,
            &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        ),
        (Scheme::ED25519, &[alg::ED25519]),
        (
            Scheme::RSA_PSS_SHA512,
            &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            Scheme::RSA_PSS_SHA384,
            &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            Scheme::RSA_PSS_SHA256,
            &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (Scheme::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
        (Scheme::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
        (Scheme::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

/// ring's system random source; and no client key: vaultboot never presents a certificate.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(
        &self,
        _: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "vaultboot uses no client certificate".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    /// An in-memory handshake of our client with a server offering `suites` only: the suite
    /// agreed on, or the client's error.
    fn handshake(suites: &[rustls::SupportedCipherSuite]) -> Result<String, rustls::Error> {
        let ca = vaultboot_sim::TestCa::new("tls test CA");
        let (cert, key) = ca.issue_server_cert(&["vault.internal"], &[]);
        let server_provider = CryptoProvider {
            cipher_suites: suites.to_vec(),
            ..rustls::crypto::ring::default_provider()
        };
        let server = ServerConfig::builder_with_provider(Arc::new(server_provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )?;
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert_der()))?;
        let client = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "vault.internal".try_into().unwrap();
        let mut client = ClientConnection::new(Arc::new(client), name)?;
        let mut server = ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            // The server's alert, if it has one, tells the client why.
            let refused = server.process_new_packets().err();
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if let Some(e) = refused {
                return Err(e);
            }
            if !client.is_handshaking() {
                return Ok(format!(
                    "{:?}",
                    client.negotiated_cipher_suite().unwrap().suite()
                ));
            }
        }
        panic!("the handshake did not end");
    }

    #[test]
    fn aes_gcm_is_agreed_and_a_server_with_chacha20_only_is_refused() {
        use rustls::crypto::ring::cipher_suite::*;
        assert_eq!(
            handshake(&[TLS13_AES_128_GCM_SHA256]).unwrap(),
            "TLS13_AES_128_GCM_SHA256"
        );
        let tls12 = handshake(&[TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]).unwrap();
        assert_eq!(tls12, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
        for chacha in [
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ] {
            let refused = handshake(&[chacha]).unwrap_err().to_string();
            assert!(
                refused.contains("HandshakeFailure") || refused.contains("no shared"),
                "{refused}"
            );
        }
    }
}
