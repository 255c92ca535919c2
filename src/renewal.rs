//! Whether a certificate already in place can stay: it is there with the configured owner and
//! mode, parses, is the one Vault issued when vaultboot last put it there (`issued`), matches
//! the private key beside it, was issued for the names the configuration asks for now, and has
//! more than `renew_before` of its lifetime left. Vault Agent's pkiCert
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
    /// A sealed credential's name: what is on disk is opened with `systemd-creds decrypt`.
    pub sealed: Option<String>,
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
    fn issued_as(&self, cert: &certificate::Details) -> bool {
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

/// Who issued the certificate that belongs at a path, as vaultboot recorded it.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// The PKI issue path, e.g. `pki_int/issue/web`.
    pub by: &'a str,
    /// SHA-256 of the certificate it issued for this path (`certificate::Details::sha256`).
    pub sha256: Option<&'a str>,
}

/// Keep the certificate in place, or renew it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
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
    recorded: Recorded<'_>,
    now: SystemTime,
) -> Renewal {
    match check(cert, key, wanted, renew_before, recorded, now) {
        Ok(verdict) => verdict,
        Err(why) => Renewal::Renew(why),
    }
}

fn check(
    cert: &Target,
    key: &Target,
    wanted: &Names,
    renew_before: Option<Duration>,
    recorded: Recorded<'_>,
    now: SystemTime,
) -> Result<Renewal, String> {
    let cert_pem = read_as_configured(cert)?;
    let mut key_pem = read_as_configured(key)?;
    if let Some(name) = &key.sealed {
        key_pem = crate::files::creds::decrypt(name, &key_pem, MAX_PEM_BYTES)
            .map_err(|m| format!("{}: {m}", key.path.display()))?;
    }
    let facts = certificate::first_in_pem(&cert_pem)
        .map_err(|e| format!("{}: {e}", cert.path.display()))?;
    if let Some(why) = not_issued(cert, &facts, recorded) {
        return Ok(Renewal::Renew(why));
    }
    if !certificate::key_matches(&cert_pem, &key_pem)
        .map_err(|e| format!("{}: {e}", key.path.display()))?
    {
        return Ok(Renewal::Renew(format!(
            "the key in {} is not the certificate's",
            key.path.display()
        )));
    }
    if !wanted.issued_as(&facts) {
        return Ok(Renewal::Renew(
            "the certificate was issued for other names than the configuration asks".into(),
        ));
    }
    let before = renew_before.unwrap_or(facts.lifetime() / 3);
    let renew_at = facts
        .not_after
        .checked_sub(before)
        .unwrap_or(facts.not_before);
    if now < facts.not_before {
        // Issued while a clock was ahead, or not Vault's: its lifetime has not begun.
        return Ok(Renewal::Renew(format!(
            "the certificate is not valid before {}",
            humantime::format_rfc3339_seconds(facts.not_before)
        )));
    }
    if now >= renew_at {
        return Ok(Renewal::Renew(format!(
            "the certificate expires {} (renew_before {})",
            humantime::format_rfc3339_seconds(facts.not_after),
            humantime::format_duration(before)
        )));
    }
    Ok(Renewal::Keep {
        not_after: facts.not_after,
        renew_at,
    })
}

/// Why the certificate in place is not the one Vault issued for it, if it is not. Whoever can
/// write the file (its owner, say nginx's user, which must read the key) could otherwise keep
/// a pair of their own there for good: names, key and dates can all be made to fit.
fn not_issued(
    cert: &Target,
    facts: &certificate::Details,
    recorded: Recorded<'_>,
) -> Option<String> {
    let why = match recorded.sha256 {
        Some(sha256) if sha256 == facts.sha256 => return None,
        Some(_) => "it is not the one vaultboot put there",
        None => "no record of it: written by an earlier version, or the record was lost",
    };
    Some(format!(
        "the certificate in {} was not issued by {} ({why})",
        cert.path.display(),
        recorded.by
    ))
}

/// The file's content, if it is a regular file with the configured owner and mode.
fn read_as_configured(target: &Target) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let shown = target.path.display();
    // (Either way the certificate is renewed: the lookup only words the reason.)
    let file = crate::files::open_to_read(&target.path).map_err(|e| {
        if std::fs::symlink_metadata(&target.path).is_err() {
            format!("{shown} is not there")
        } else {
            e.to_string()
        }
    })?;
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
    use vaultboot_sim::{Leaf, LeafKey};

    struct Fixture {
        dir: tempfile::TempDir,
        ca: vaultboot_sim::TestCa,
    }

    const BY: &str = "pki/issue/web";

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                ca: vaultboot_sim::TestCa::new("renewal CA"),
            }
        }

        /// Issues a certificate valid from `age` ago for `lifetime`, and writes it and its key.
        fn issue(&self, cn: &str, dns: &[&str], age: u64, lifetime: u64) -> (Target, Target) {
            let start = SystemTime::now() - Duration::from_secs(age);
            self.issue_at(cn, dns, start, lifetime, LeafKey::EcP256)
        }

        /// Issues a certificate valid from `start` for `lifetime` with a key of this kind, and
        /// writes it and its key.
        fn issue_at(
            &self,
            cn: &str,
            dns: &[&str],
            start: SystemTime,
            lifetime: u64,
            key: LeafKey,
        ) -> (Target, Target) {
            let leaf = Leaf {
                common_name: cn,
                dns_names: dns,
                ips: &[],
                not_before: start,
                not_after: start + Duration::from_secs(lifetime),
            };
            let issued = self.ca.issue_leaf(&leaf, key, true);
            (
                self.write("web.crt", &issued.cert_pem),
                self.write("web.key", &issued.key_pem),
            )
        }

        fn write(&self, name: &str, text: &str) -> Target {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            Target {
                sealed: None,
                path,
                mode: 0o600,
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            }
        }
    }

    /// The fingerprint of the certificate in `cert` now: as vaultboot records it when it
    /// writes the certificate.
    fn sha256_of(cert: &Target) -> String {
        let pem = std::fs::read(&cert.path).unwrap();
        certificate::first_in_pem(&pem).unwrap().sha256
    }

    /// `decide`, with the certificate in place recorded as the one Vault issued.
    fn decide_issued(
        cert: &Target,
        key: &Target,
        wanted: &Names,
        renew_before: Option<Duration>,
        now: SystemTime,
    ) -> Renewal {
        let sha256 = std::fs::read(&cert.path)
            .ok()
            .and_then(|pem| certificate::first_in_pem(&pem).ok())
            .map(|f| f.sha256);
        let recorded = Recorded {
            by: BY,
            sha256: sha256.as_deref(),
        };
        decide(cert, key, wanted, renew_before, recorded, now)
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
        let Renewal::Keep {
            not_after,
            renew_at,
        } = decide_issued(&cert, &key, &wanted, None, now)
        else {
            panic!(
                "renewed: {:?}",
                decide_issued(&cert, &key, &wanted, None, now)
            );
        };
        // Renewed from day 20, give or take the certificate's second-granular dates.
        let after_day_20 = not_after - Duration::from_secs(10 * DAY);
        let off = renew_at
            .duration_since(after_day_20)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(off < Duration::from_secs(5), "renewed {off:?} off day 20");
        // Past two thirds of its life: renewed.
        let (cert, key) = f.issue("web.example.com", &["www.example.com"], 21 * DAY, 30 * DAY);
        assert!(
            matches!(decide_issued(&cert, &key, &wanted, None, now), Renewal::Renew(why) if why.contains("expires"))
        );
        // renew_before set: a 30-day certificate with 29 days left and renew_before 30 days.
        let (cert, key) = f.issue("web.example.com", &["www.example.com"], DAY, 30 * DAY);
        let month = Some(Duration::from_secs(30 * DAY));
        assert!(matches!(
            decide_issued(&cert, &key, &wanted, month, now),
            Renewal::Renew(_)
        ));
        // ... and renew_before shorter than what is left: kept, renewed from then on.
        let week = Duration::from_secs(7 * DAY);
        let Renewal::Keep {
            not_after,
            renew_at,
        } = decide_issued(&cert, &key, &wanted, Some(week), now)
        else {
            panic!("renewed with a week to go of 29 days");
        };
        assert_eq!(not_after.duration_since(renew_at).unwrap(), week);
    }

    #[test]
    fn a_certificate_not_yet_valid_is_renewed() {
        // Issued while the clock was ahead, or planted: its lifetime has not begun.
        let f = Fixture::new();
        let tomorrow = SystemTime::now() + Duration::from_secs(DAY);
        let (cert, key) = f.issue_at("web.example.com", &[], tomorrow, 30 * DAY, LeafKey::EcP256);
        let verdict = decide_issued(
            &cert,
            &key,
            &names("web.example.com", ""),
            None,
            SystemTime::now(),
        );
        assert!(
            matches!(&verdict, Renewal::Renew(why) if why.contains("not valid before")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_certificate_vault_did_not_issue_is_renewed_whatever_it_says() {
        let f = Fixture::new();
        let wanted = names("web.example.com", "");
        let now = SystemTime::now();
        let (cert, key) = f.issue("web.example.com", &["web.example.com"], DAY, 30 * DAY);
        let vaults = sha256_of(&cert);
        // The output's owner puts a pair of its own there: same names, its key, valid for a
        // century.
        let forged = Leaf {
            common_name: "web.example.com",
            dns_names: &["web.example.com"],
            ips: &[],
            not_before: now - Duration::from_secs(DAY),
            not_after: now + Duration::from_secs(36_500 * DAY),
        }
        .self_signed();
        std::fs::write(&cert.path, &forged.cert_pem).unwrap();
        std::fs::write(&key.path, &forged.key_pem).unwrap();
        let recorded = |sha256| Recorded { by: BY, sha256 };
        let verdict = decide(&cert, &key, &wanted, None, recorded(Some(&vaults)), now);
        assert!(
            matches!(&verdict, Renewal::Renew(why) if why.contains(&format!("{} was not issued by {BY}", cert.path.display()))),
            "{verdict:?}"
        );
        // No record of it (written by an earlier version, or the record was lost).
        let verdict = decide(&cert, &key, &wanted, None, recorded(None), now);
        assert!(
            matches!(&verdict, Renewal::Renew(why) if why.contains(&format!("{} was not issued by {BY} (no record of it", cert.path.display()))),
            "{verdict:?}"
        );
        // The same pair, recorded as the one Vault issued: kept (only the record differs).
        let verdict = decide_issued(&cert, &key, &wanted, None, now);
        assert!(matches!(verdict, Renewal::Keep { .. }), "{verdict:?}");
    }

    #[test]
    fn rsa_certificates_and_keys_are_kept_and_compared() {
        let f = Fixture::new();
        let wanted = names("web.example.com", "");
        let now = SystemTime::now();
        let start = now - Duration::from_secs(DAY);
        // The key as Vault's PKI returns an RSA key (PKCS#1), then as PKCS#8.
        let (cert, key) = f.issue_at("web.example.com", &[], start, 30 * DAY, LeafKey::Rsa(0));
        assert!(std::fs::read_to_string(&key.path)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let verdict = decide_issued(&cert, &key, &wanted, None, now);
        assert!(matches!(verdict, Renewal::Keep { .. }), "{verdict:?}");
        // The other RSA key beside it: renewed.
        let (_, other) = f.issue_at("x", &[], start, DAY, LeafKey::Rsa(1));
        let other = std::fs::read_to_string(&other.path).unwrap();
        let (cert, key) = f.issue_at("web.example.com", &[], start, 30 * DAY, LeafKey::Rsa(0));
        std::fs::write(&key.path, other).unwrap();
        let verdict = decide_issued(&cert, &key, &wanted, None, now);
        assert!(
            matches!(&verdict, Renewal::Renew(why) if why.contains("is not the certificate's")),
            "{verdict:?}"
        );
    }

    #[test]
    fn other_names_another_key_or_another_mode_renew() {
        let f = Fixture::new();
        let (cert, key) = f.issue("web.example.com", &["www.example.com"], DAY, 30 * DAY);
        let now = SystemTime::now();
        let renewed = |wanted: &Names, cert: &Target, key: &Target| {
            matches!(
                decide_issued(cert, key, wanted, None, now),
                Renewal::Renew(_)
            )
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
