//! Handling what comes from outside (IMDS, Vault, files on disk): read it with a cap, print it on
//! one line, and describe a JSON problem without quoting the input (it may hold a secret).

use std::io::Read;
use zeroize::Zeroizing;

/// `text` on one bounded line: control characters become spaces, at most `max` characters
/// (then `...`), trimmed. For text another system wrote (Vault's messages, content types,
/// redirect targets, error texts quoting a server).
pub fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    let mut line = line.trim().to_string();
    if text.chars().nth(max).is_some() {
        line.push_str("...");
    }
    line
}

/// `text` with every control character shown escaped (`\n`, `\u{1b}`), and the Unicode
/// line separators and bidirectional overrides too (they break or reorder a line on a
/// terminal): what the log does to every line (see `log`), and our own messages that quote a
/// file (a configuration error names the offending key, which may hold a newline).
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// serde_json's messages can quote the input; say only what kind of problem it is, and where.
pub fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Data if e.to_string().starts_with(crate::secret::DUPLICATE_KEY) => {
            "the same key twice"
        }
        Category::Io => "read error",
        Category::Syntax => "invalid JSON",
        Category::Data => "unexpected shape",
        Category::Eof => "truncated",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// Why a capped read failed.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    TooLarge { limit: u64 },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
            ReadError::TooLarge { limit } if limit % 1024 == 0 => {
                write!(f, "larger than {} KiB", limit / 1024)
            }
            ReadError::TooLarge { limit } => write!(f, "larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::TooLarge { .. } => None,
        }
    }
}

/// Everything `from` holds, if it is at most `limit` bytes; a larger input is refused after
/// reading one byte past the cap, never read whole. The bytes are wiped when dropped, and so is
/// every smaller buffer they outgrew on the way.
pub fn read_capped(from: impl Read, limit: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let mut bytes = Zeroizing::new(Vec::new());
    read_to_end_wiping(&mut from.take(limit + 1), &mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// Largest single read: the zeroed window a read goes into.
const READ_CHUNK: usize = 16 * 1024;

/// Appends all `from` holds to `into`. `Read::read_to_end` grows a `Vec` the usual way, which
/// frees each outgrown buffer with the bytes read so far (a token, a secret) still in it; here
/// a full buffer moves to a larger one and the old one is wiped.
pub fn read_to_end_wiping(
    from: &mut impl Read,
    into: &mut Zeroizing<Vec<u8>>,
) -> std::io::Result<()> {
    loop {
        if into.len() == into.capacity() {
            crate::secret::reserve_wiping(into, READ_CHUNK);
        }
        let len = into.len();
        let window = (into.capacity() - len).min(READ_CHUNK);
        into.resize(len + window, 0);
        let read = from.read(&mut into[len..]);
        into.truncate(len + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_bounded_and_printable() {
        let m = one_line(&format!(" a\nb\u{1b}[31m{}", "x".repeat(1000)), 300);
        assert!(!m.contains(char::is_control), "{m:?}");
        assert!(m.starts_with("a b [31m") && m.ends_with("x..."), "{m:?}");
        assert_eq!(
            m.chars().count(),
            299 + 3,
            "trimmed, cut at the cap, marked"
        );
        assert_eq!(one_line("short\n", 300), "short");
    }

    #[test]
    fn json_problems_never_quote_the_input() {
        let e = serde_json::from_str::<serde_json::Value>("{\"k\": s3cr3t}").unwrap_err();
        let shown = json_problem(&e);
        assert!(shown.starts_with("invalid JSON at line 1"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    /// A reader that hands out a few bytes at a time and records where they were copied to.
    struct Trickle<'a>(&'a [u8], Vec<usize>);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            self.1.push(buf.as_ptr() as usize);
            Ok(n)
        }
    }

    #[test]
    fn a_growing_read_keeps_every_byte_in_order() {
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut from = Trickle(&input, Vec::new());
        let mut into = Zeroizing::new(b"head".to_vec());
        read_to_end_wiping(&mut from, &mut into).unwrap();
        assert_eq!(&into[..4], b"head");
        assert_eq!(&into[4..], &input[..]);
        // It outgrew its buffer several times, each time by moving to a new one.
        let buffers: std::collections::HashSet<_> = from.1.iter().map(|p| p & !0xfff).collect();
        assert!(buffers.len() > 3, "{buffers:?}");
    }

    #[test]
    fn reads_up_to_the_cap_and_refuses_beyond() {
        assert_eq!(&read_capped(&b"12345"[..], 5).unwrap()[..], b"12345");
        let e = read_capped(&b"123456"[..], 5).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 5 }), "{e:?}");
        assert_eq!(e.to_string(), "larger than 5 bytes");
        let e = read_capped(&vec![0u8; 2049][..], 2048).unwrap_err();
        assert_eq!(e.to_string(), "larger than 2 KiB");
    }
}
