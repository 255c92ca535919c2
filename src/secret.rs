//! Zeroizing holders for secret material: tokens, nonces, credentials and secret values.
//!
//! The plaintext is reached only through an explicit `expose*`, and `Debug` never prints it,
//! so a secret cannot slip into a log line or an error message by accident.

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Secret bytes (a Vault token, a nonce, a field value, a file's staged content).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn from_string(s: String) -> Self {
        Secret::new(s.into_bytes())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text; `None` when it is not UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([redacted; {} bytes])", self.0.len())
    }
}

/// A parsed JSON answer that may hold secrets: every string in it is wiped when it is dropped.
/// (serde_json's own `Value` frees its strings without clearing them.)
#[derive(Default)]
pub struct SecretJson(pub serde_json::Value);

impl SecretJson {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes).map(SecretJson)
    }
}

impl Drop for SecretJson {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for SecretJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretJson([redacted])")
    }
}

/// Clears every string (keys included) of a JSON value in place.
pub fn wipe(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => {
            let taken = std::mem::take(map);
            for (mut key, mut item) in taken {
                key.zeroize();
                wipe(&mut item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from_string("hunter2".into());
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes"));
    }

    #[test]
    fn wipe_clears_nested_strings() {
        let mut v = serde_json::json!({"a": ["x", {"b": "secret"}], "n": 1});
        wipe(&mut v);
        assert_eq!(v, serde_json::json!({}));
        let mut s = serde_json::json!("secret");
        wipe(&mut s);
        assert_eq!(s, serde_json::json!(""));
    }
}
