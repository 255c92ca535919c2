//! Small helpers: randomness, time formatting, base64 wrapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).expect("getrandom");
    b
}

/// `n` random characters from [A-Za-z0-9].
pub(crate) fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes(n) {
            // Rejection sampling keeps the distribution uniform.
            if (b as usize) < 248 && out.len() < n {
                out.push(CHARS[b as usize % CHARS.len()] as char);
            }
        }
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random UUID (version 4) string.
pub(crate) fn uuid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// (year, month, day) from days since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn parts(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (y, m, dd) = civil_from_days(days);
    let weekday = ((days + 4).rem_euclid(7)) as u32; // 1970-01-01 was a Thursday
    (
        y,
        m,
        dd,
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos(),
        weekday,
    )
}

/// "2026-11-23T12:00:00Z"
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _, _) = parts(t);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// "2026-11-23T12:00:00.123456789Z" (as Vault writes KV v2 metadata times)
pub(crate) fn rfc3339_nanos(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, ns, _) = parts(t);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ns:09}Z")
}

/// "Mon, 23 Nov 2026 12:00:00 GMT"
pub(crate) fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss, _, wd) = parts(t);
    format!(
        "{}, {d:02} {} {y:04} {hh:02}:{mm:02}:{ss:02} GMT",
        DAYS[wd as usize],
        MONTHS[(m - 1) as usize]
    )
}

pub(crate) fn http_date_now() -> String {
    http_date(SystemTime::now())
}

/// Standard base64 with a "\n" every 64 characters (as IMDS serves its signatures).
pub(crate) fn base64_wrapped(bytes: &[u8]) -> String {
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(s.len() + s.len() / 64 + 1);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out
}

/// Parse a Vault duration: "72h", "30m", "45s", "1h30m", "3600" (seconds).
pub(crate) fn parse_vault_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: u64 = num.parse().ok()?;
            num.clear();
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return None,
            };
            // A random test value may be huge: Vault refuses what it cannot represent.
            total = total.checked_add(n.checked_mul(unit)?)?;
        }
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(http_date(t), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_vault_duration("72h"), Some(259_200));
        assert_eq!(parse_vault_duration("1h30m"), Some(5400));
        assert_eq!(parse_vault_duration("15"), Some(15));
        assert_eq!(parse_vault_duration("x"), None);
    }

    #[test]
    fn wrap() {
        let w = base64_wrapped(&[7u8; 100]);
        assert!(w.lines().all(|l| l.len() <= 64));
        assert_eq!(w.lines().count(), 3);
    }

    #[test]
    fn alnum() {
        let s = random_alnum(30);
        assert_eq!(s.len(), 30);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
