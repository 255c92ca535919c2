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

    /// The size of its buffer (at least `len`).
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// For a buffer that shares the secret (an HTTP header value built on it): the bytes are
/// wiped when the last holder drops it.
impl AsRef<[u8]> for Secret {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `value` as JSON in a buffer allocated once, at its final size, and wiped on drop.
/// (serde_json's own `to_vec` grows its buffer while it writes, and each growth leaves the
/// bytes written so far, a nonce or a token among them, in freed memory.)
pub fn to_json(value: &impl serde::Serialize) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    exact(|w| serde_json::to_writer(w, value))
}

/// [`to_json`] and a newline (a file's content).
pub fn to_json_line(
    value: &impl serde::Serialize,
) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    exact(|w| {
        serde_json::to_writer(&mut *w, value)?;
        w.write_all(b"\n").map_err(serde_json::Error::io)
    })
}

/// [`to_json`], indented (for files people read).
pub fn to_json_pretty(
    value: &impl serde::Serialize,
) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    exact(|w| serde_json::to_writer_pretty(w, value))
}

/// Writes twice: once to count the bytes, once into a buffer of that size.
fn exact(
    write: impl Fn(&mut dyn std::io::Write) -> Result<(), serde_json::Error>,
) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let mut counted = Count(0);
    write(&mut counted)?;
    let mut out = Zeroizing::new(Vec::with_capacity(counted.0));
    write(&mut *out)?;
    debug_assert_eq!(out.len(), counted.0, "the same value wrote two sizes");
    Ok(out)
}

/// A writer that only counts.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    /// Parses an answer strictly: an object with the same key twice is refused (serde_json's
    /// own `Value` would silently keep the last one, while a proxy or another client may have
    /// judged the first one).
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<Strict>(bytes).map(|s| SecretJson(s.0))
    }
}

/// The message of the error for a repeated key (see `vault::json_problem`).
pub const DUPLICATE_KEY: &str = "duplicate key in a JSON object";

/// A JSON value parsed without accepting repeated keys. What was built before an error is
/// wiped.
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(serde_json::Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(serde_json::Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Wiped on drop, also when an element fails.
        let mut guard = SecretJson(serde_json::Value::Array(Vec::new()));
        while let Some(Strict(item)) = seq.next_element()? {
            if let serde_json::Value::Array(items) = &mut guard.0 {
                items.push(item);
            }
        }
        Ok(std::mem::take(&mut guard.0))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut guard = SecretJson(serde_json::Value::Object(serde_json::Map::new()));
        while let Some(mut key) = map.next_key::<String>()? {
            let serde_json::Value::Object(object) = &mut guard.0 else {
                unreachable!("the guard holds an object");
            };
            if object.contains_key(&key) {
                key.zeroize();
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            let Strict(value) = match map.next_value() {
                Ok(v) => v,
                Err(e) => {
                    key.zeroize();
                    return Err(e);
                }
            };
            object.insert(key, value);
        }
        Ok(std::mem::take(&mut guard.0))
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
    fn strict_parse_refuses_repeated_keys_at_any_depth() {
        let ok = SecretJson::parse(br#"{"a":[1,2.5,"x",null,true,{"b":{}}],"c":-3}"#).unwrap();
        assert_eq!(
            ok.0,
            serde_json::json!({"a":[1,2.5,"x",null,true,{"b":{}}],"c":-3})
        );
        for dup in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"auth":{"client_token":"x","client_token":"y"}}"#,
            br#"[{"k":"v","k":"v"}]"#,
        ] {
            let e = SecretJson::parse(dup).err().unwrap();
            assert!(e.to_string().starts_with(DUPLICATE_KEY), "{e}");
        }
        // The same key in different objects is fine.
        assert!(SecretJson::parse(br#"{"a":{"k":1},"b":{"k":2}}"#).is_ok());
        // serde_json's depth limit still holds.
        let deep = "[".repeat(100_000);
        assert!(SecretJson::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn json_is_written_in_one_buffer_of_its_size() {
        let v = serde_json::json!({"role": "web", "nonce": "n".repeat(300), "list": [1, "x"]});
        for (bytes, expected) in [
            (to_json(&v).unwrap(), serde_json::to_vec(&v).unwrap()),
            (
                to_json_pretty(&v).unwrap(),
                serde_json::to_vec_pretty(&v).unwrap(),
            ),
        ] {
            assert_eq!(*bytes, expected);
            // Allocated once at the final size: never grown, so no copy was left behind.
            assert_eq!(bytes.capacity(), bytes.len());
        }
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
