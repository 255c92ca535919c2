//! Whether a certificate already in place can stay: it is there with the configured owner and
//! mode, parses, matches the private key beside it, was issued for the names the configuration
//! asks for now, and has more than `renew_before` of its lifetime left. Vault Agent's pkiCert
//! and step-ca's renewer ask the same question before they call the CA.

use crate::certificate;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Largest certificate or key file read to decide.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A file as the configuration wants it.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The names a PKI issue request asks for (its `common_name`, `alt_names`, `ip_sans`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub common_name: String,
    pub dns_names: BTreeSet<String>,
    pub ip_addresses: BTreeSet<IpAddr>,
}

impl Names {
    /// From the request body of `<mount>/issue/<role>`, templates already filled.
    pub fn from_request(data: &serde_json::Value) -> Option<Names> {
        let text = |key: &str| data.get(key).and_then(|v| v.as_str()).unwrap_or("");
        let list = |key: &str| {
            text(key)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let common_name = text("common_name").to_string();
        if common_name.is_empty() {
            return None;
        }
        let mut names = Names {
            common_name,
            ..Names::default()
        };
        // Emails in alt_names go into another kind of SAN: not compared.
        for name in list("alt_names").into_iter().filter(|n| !n.contains('@')) {
            names.dns_names.insert(name.to_ascii_lowercase());
        }
        for ip in list("ip_sans") {
            names.ip_addresses.insert(ip.parse().ok()?);
        }
        Some(names)
    }

    /// Vault puts the common name among the DNS SANs too (unless the role excludes it), so
    /// the two sets are compared with the common name added to both.
    fn issued_as(&self, cert: &certificate::Facts) -> bool {
        let cn = self.common_name.to_ascii_lowercase();
        let with_cn = |set: &BTreeSet<String>| {
            let mut s = set.clone();
            s.insert(cn.clone());
            s
        };
        cert.common_name
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(&self.common_name))
            && with_cn(&cert.dns_names) == with_cn(&self.dns_names)
            && cert.ip_addresses == self.ip_addresses
    }
}

/// Keep the certificate in place, or renew it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep {
        not_after: SystemTime,
        renew_at: SystemTime,
    },
    Renew(String),
}

/// Decides for the certificate in `cert` with its key in `key` (which may be the same file).
/// Without `renew_before`, a certificate is renewed once two thirds of its lifetime have passed.
pub fn decide(
    cert: &Target,
    key: &Target,
    wanted: &Names,
    renew_before: Option<Duration>,
    now: SystemTime,
) -> Verdict {
    match check(cert, key, wanted, renew_before, now) {
        Ok(verdict) => verdict,
        Err(why) => Verdict::Renew(why),
    }
}

fn check(
    cert: &Target,
    key: &Target,
    wanted: &Names,
    renew_before: Option<Duration>,
    now: SystemTime,
) -> Result<Verdict, String> {
    let cert_pem = read_as_configured(cert)?;
    let key_pem = read_as_configured(key)?;
    let facts = certificate::first_in_pem(&cert_pem)
        .map_err(|e| format!("{}: {e}", cert.path.display()))?;
    if !certificate::key_matches(&cert_pem, &key_pem)
        .map_err(|e| format!("{}: {e}", key.path.display()))?
    {
        return Ok(Verdict::Renew(format!(
            "the key in {} is not the certificate's",
            key.path.display()
        )));
    }
    if !wanted.issued_as(&facts) {
        return Ok(Verdict::Renew(
            "the certificate was issued for other names than the configuration asks".into(),
        ));
    }
    let before = renew_before.unwrap_or(facts.lifetime() / 3);
    let renew_at = facts
        .not_after
        .checked_sub(before)
        .unwrap_or(facts.not_before);
    if now >= renew_at || now < facts.not_before {
        return Ok(Verdict::Renew(format!(
            "the certificate expires {} (renew_before {})",
            humantime::format_rfc3339_seconds(facts.not_after),
            humantime::format_duration(before)
        )));
    }
    Ok(Verdict::Keep {
        not_after: facts.not_after,
        renew_at,
    })
}

/// The file's content, if it is a regular file with the configured owner and mode.
fn read_as_configured(target: &Target) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let shown = target.path.display();
    let file = crate::files::open_to_read(&target.path).map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.mode() & 0o7777 != target.mode || meta.uid() != target.uid || meta.gid() != target.gid {
        return Err(format!("{shown} has another owner or mode than configured"));
    }
    crate::untrusted::read_capped(file, MAX_PEM_BYTES).map_err(|e| format!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        dir: tempfile::TempDir,
        ca: vaultboot_sim::TestCa,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                ca: vaultboot_sim::TestCa::new("renewal CA"),
            }
        }

        /// Issues a certificate valid from `age` ago for `lifetime`, and writes it and its key.
        fn issue(&self, cn: &str, dns: &[&str], age: u64, lifetime: u64) -> (Target, Target) {
            let now = SystemTime::now();
            let start = now - Duration::from_secs(age);
            let issued = self.ca.issue(
                cn,
                dns,
                &[],
                start,
                start + Duration::from_secs(lifetime),
                true,
            );
            let target = |name: &str, text: &str| {
                let path = self.dir.path().join(name);
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                Target {
                    path,
                    mode: 0o600,
                    uid: nix::unistd::geteuid().as_raw(),
                    gid: nix::unistd::getegid().as_raw(),
                }
            };
            (
                target("web.crt", &issued.cert_pem),
                target("web.key", &issued.key_pem),
            )
        }
    }

    fn names(cn: &str, alt: &str) -> Names {
        Names::from_request(&serde_json::json!({"common_name": cn, "alt_names": alt})).unwrap()
    }

    const DAY: u64 = 86_400;

    #[test]
    fn a_fresh_certificate_for_the_same_names_is_kept_until_two_thirds_of_its_life() {
        let f = Fixture::new();
        let (cert, key) = f.issue(
            "web.example.com",
            &["web.example.com", "www.example.com"],
            DAY,
            30 * DAY,
        );
        let wanted = names("web.example.com", "www.example.com");
        let now = SystemTime::now();
        let Verdict::Keep {
            not_after,
            renew_at,
        } = decide(&cert, &key, &wanted, None, now)
        else {
            panic!("renewed: {:?}", decide(&cert, &key, &wanted, None, now));
        };
        let after_day_20 = not_after - Duration::from_secs(10 * DAY);
        assert!(renew_at.duration_since(after_day_20).unwrap_or_default() < Duration::from_secs(5));
        // Past two thirds of its life: renewed.
        let (cert, key) = f.issue("web.example.com", &["www.example.com"], 21 * DAY, 30 * DAY);
        assert!(
            matches!(decide(&cert, &key, &wanted, None, now), Verdict::Renew(why) if why.contains("expires"))
        );
        // renew_before set: a 30-day certificate with 29 days left and renew_before 30 days.
        let (cert, key) = f.issue("web.example.com", &["www.example.com"], DAY, 30 * DAY);
        let month = Some(Duration::from_secs(30 * DAY));
        assert!(matches!(
            decide(&cert, &key, &wanted, month, now),
            Verdict::Renew(_)
        ));
    }

    #[test]
    fn other_names_another_key_or_another_mode_renew() {
        let f = Fixture::new();
        let (cert, key) = f.issue("web.example.com", &["www.example.com"], DAY, 30 * DAY);
        let now = SystemTime::now();
        let renewed = |wanted: &Names, cert: &Target, key: &Target| {
            matches!(decide(cert, key, wanted, None, now), Verdict::Renew(_))
        };
        assert!(!renewed(
            &names("web.example.com", "www.example.com"),
            &cert,
            &key
        ));
        assert!(renewed(
            &names("web.example.com", "www.example.com,api.example.com"),
            &cert,
            &key
        ));
        assert!(renewed(
            &names("other.example.com", "www.example.com"),
            &cert,
            &key
        ));
        // A key that is not the certificate's.
        let other =
            f.ca.issue("x", &[], &[], now, now + Duration::from_secs(DAY), true);
        std::fs::write(&key.path, other.key_pem).unwrap();
        assert!(renewed(
            &names("web.example.com", "www.example.com"),
            &cert,
            &key
        ));
        // The configured mode changed.
        let (cert, key) = f.issue("web.example.com", &["www.example.com"], DAY, 30 * DAY);
        let wider = Target {
            mode: 0o640,
            ..cert.clone()
        };
        assert!(renewed(
            &names("web.example.com", "www.example.com"),
            &wider,
            &key
        ));
        // Missing or not a certificate.
        std::fs::write(&cert.path, "not a certificate").unwrap();
        assert!(renewed(
            &names("web.example.com", "www.example.com"),
            &cert,
            &key
        ));
        std::fs::remove_file(&cert.path).unwrap();
        assert!(renewed(
            &names("web.example.com", "www.example.com"),
            &cert,
            &key
        ));
    }

    #[test]
    fn request_names_are_read_as_vault_reads_them() {
        let n = Names::from_request(&serde_json::json!({
            "common_name": "Web.Example.com",
            "alt_names": " a.example.com ,B.example.com,me@example.com,",
            "ip_sans": "10.0.0.1, ::1",
        }))
        .unwrap();
        assert_eq!(
            n.dns_names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(n.ip_addresses.len(), 2);
        assert!(Names::from_request(&serde_json::json!({"ttl": "1h"})).is_none());
        assert!(
            Names::from_request(&serde_json::json!({"common_name": "x", "ip_sans": "nope"}))
                .is_none()
        );
    }
}
