//! The formats of the names and ids that come from outside and end up in log lines, templated
//! output paths, Vault request bodies and URLs: AWS's (instance, region, zone, account, AMI,
//! IAM role) and the Internet's (host names, IPv4 addresses). Each check is the format, not
//! merely "no control character": a value that passes can be put in a path segment, a log line
//! or a URL as it is.

use std::net::Ipv4Addr;

/// `i-` and 1 to 62 ASCII letters or digits (`i-0123456789abcdef0`; old ids had 8 hex digits).
pub fn is_instance_id(text: &str) -> bool {
    text.strip_prefix("i-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 62 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// An AWS region: two letters, one or more `-word` parts, then `-number`
/// (`us-east-1`, `us-gov-west-1`, `eu-isoe-west-1`, `cn-north-1`).
pub fn is_region(text: &str) -> bool {
    let mut parts = text.split('-');
    let (Some(country), Some(number)) = (parts.next(), parts.next_back()) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    text.len() <= 32
        && country.len() == 2
        && country.bytes().all(|b| b.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// An availability zone of `region`: the region and one or more letters (`us-east-1a`), or a
/// Local or Wavelength Zone: the region, `-`, and lowercase words and numbers joined by `-`
/// (`us-west-2-lax-1a`, `us-east-1-wl1-bos-wlz-1`).
pub fn is_availability_zone(text: &str, region: &str) -> bool {
    let Some(rest) = text.strip_prefix(region) else {
        return false;
    };
    if text.len() > 64 || rest.is_empty() {
        return false;
    }
    match rest.strip_prefix('-') {
        None => rest.bytes().all(|b| b.is_ascii_lowercase()),
        Some(zone) => zone.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }),
    }
}

/// A 12-digit AWS account id.
pub fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// An AMI id: `ami-` and 8 (older images) to 17 lowercase hex digits, with room for longer.
pub fn is_image_id(text: &str) -> bool {
    text.strip_prefix("ami-").is_some_and(|hex| {
        (8..=32).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A dotted-quad IPv4 address in its usual form (`10.0.1.23`; no leading zeros, no `10.1`).
pub fn is_ipv4(text: &str) -> bool {
    text.parse::<Ipv4Addr>()
        .is_ok_and(|ip| ip.to_string() == text)
}

/// An IPv6 address as IMDS writes it (`2600:1f18:5cb5:3200::1`): hex digits in lower case,
/// colons, and an embedded IPv4 part at most; never a zone (`%eth0`), brackets or a prefix
/// length. Only these characters, so that it is safe in a path and its glob stays narrow.
pub fn is_ipv6(text: &str) -> bool {
    text.parse::<std::net::Ipv6Addr>().is_ok() && !text.bytes().any(|b| b.is_ascii_uppercase())
}

/// A DNS host name: labels of 1 to 63 letters, digits and inner hyphens, joined by dots, at
/// most 253 characters (`ip-10-0-1-23.ec2.internal`). No empty label, so never `.` or `..`.
pub fn is_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An IAM role name: 1 to 64 of letters, digits and `+=,.@_-` (IAM's own rule), but never `.`
/// or `..`: the name becomes a segment of an IMDS URL.
pub fn is_role_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Up to `MAX_SHOWN` characters of a value that failed its check, for the error that names
/// it. Control characters stay: the log escapes them (see `log`), and they are often the
/// reason the value was refused.
pub fn shown(text: &str) -> String {
    const MAX_SHOWN: usize = 80;
    let mut out: String = text.chars().take(MAX_SHOWN).collect();
    if text.chars().nth(MAX_SHOWN).is_some() {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_values_pass() {
        for r in [
            "us-east-1",
            "us-gov-west-1",
            "eu-isoe-west-1",
            "cn-north-1",
            "il-central-1",
        ] {
            assert!(is_region(r), "{r}");
        }
        assert!(is_availability_zone("us-east-1a", "us-east-1"));
        assert!(is_availability_zone("us-west-2-lax-1a", "us-west-2"));
        assert!(is_availability_zone("us-east-1-wl1-bos-wlz-1", "us-east-1"));
        assert!(is_account_id("123456789012"));
        assert!(is_image_id("ami-0123456789abcdef0") && is_image_id("ami-12345678"));
        assert!(is_ipv4("10.0.1.23"));
        assert!(is_host_name("ip-10-0-1-23.ec2.internal"));
        assert!(is_host_name(
            "i-0123456789abcdef0.us-east-1.compute.internal"
        ));
        assert!(is_role_name("web-server_role.v2@team+x=y,z"));
        assert!(is_instance_id("i-0123456789abcdef0"));
    }

    #[test]
    fn hostile_values_fail() {
        let forged = "us-east-1\n<3>vaultboot: error: FORGED";
        assert!(!is_region(forged));
        for r in [
            "",
            "us",
            "us-1",
            "US-east-1",
            "us-east-",
            "us--east-1",
            "us-east-1/x",
        ] {
            assert!(!is_region(r), "{r}");
        }
        for az in [
            "us-east-1",
            "us-east-1a/..",
            "us-east-1A",
            "eu-west-1a",
            "us-east-1-",
            "us-east-1-a--b",
        ] {
            assert!(!is_availability_zone(az, "us-east-1"), "{az}");
        }
        for a in [
            "12345678901",
            "1234567890123",
            "12345678901a",
            "-12345678901",
        ] {
            assert!(!is_account_id(a), "{a}");
        }
        for ami in [
            "ami-",
            "ami-1234567",
            "ami-0123456789ABCDEF0",
            "ami-12345678/..",
            "i-12345678",
        ] {
            assert!(!is_image_id(ami), "{ami}");
        }
        for ip in [
            "10.0.1",
            "010.0.1.23",
            "10.0.1.23 ",
            "::1",
            "10.0.1.256",
            "10.0.1.23/8",
        ] {
            assert!(!is_ipv4(ip), "{ip}");
        }
        for ip in ["2600:1f18::1", "::1", "fd00:ec2::254", "::ffff:10.0.1.23"] {
            assert!(is_ipv6(ip), "{ip}");
        }
        for ip in [
            "10.0.1.23",
            "2600:1F18::1",
            "fe80::1%eth0",
            "[::1]",
            "::1/128",
            "::1 ",
            ":::1",
        ] {
            assert!(!is_ipv6(ip), "{ip}");
        }
        for h in [
            "",
            ".",
            "..",
            "a..b",
            "a/b",
            "-a.b",
            "a.b.",
            "a b",
            "a\nb",
            &"a".repeat(64),
        ] {
            assert!(!is_host_name(h), "{h}");
        }
        for r in ["", ".", "..", "a/b", "a b", &"r".repeat(65)] {
            assert!(!is_role_name(r), "{r}");
        }
    }

    #[test]
    fn shown_is_bounded() {
        assert_eq!(shown("a\nb"), "\"a\nb\"");
        let long = shown(&"x".repeat(1000));
        assert!(long.len() < 100 && long.ends_with("...\""), "{long}");
    }
}
