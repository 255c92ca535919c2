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

/// For a buffer that shares the secret (an HTTP header value built on it): the bytes are
/// wiped when the last holder drops it.
impl AsRef<[u8]> for Secret {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A byte buffer for secret material that is wiped on drop and grows without leaving copies:
/// a `Vec` that outgrows its buffer frees the old one as is, with the bytes written so far (a
/// nonce, a token, a secret value) still in it; this one moves to a buffer twice as large and
/// wipes the old one.
#[derive(Default)]
pub struct Growing(Zeroizing<Vec<u8>>);

impl Growing {
    pub fn extend(&mut self, bytes: &[u8]) {
        reserve_wiping(&mut self.0, bytes.len());
        self.0.extend_from_slice(bytes);
    }

    pub fn into_secret(self) -> Secret {
        Secret(self.0)
    }

    pub fn into_bytes(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::io::Write for Growing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Room for `more` bytes in `buf`; when it is full, a new buffer of at least twice the
/// capacity takes its bytes, and the old one is wiped as it is dropped.
pub fn reserve_wiping(buf: &mut Zeroizing<Vec<u8>>, more: usize) {
    if buf.capacity() - buf.len() >= more {
        return;
    }
    let capacity = buf
        .capacity()
        .saturating_mul(2)
        .max(buf.len() + more)
        .max(64);
    let mut bigger = Zeroizing::new(Vec::with_capacity(capacity));
    bigger.extend_from_slice(buf);
    std::mem::swap(buf, &mut bigger);
}

/// `value` as JSON, in a [`Growing`] buffer (serde_json's own `to_vec` grows a plain `Vec`).
pub fn to_json(value: &impl serde::Serialize) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let mut out = Growing::default();
    serde_json::to_writer(&mut out, value)?;
    Ok(out.into_bytes())
}

/// [`to_json`], indented (for files people read).
pub fn to_json_pretty(
    value: &impl serde::Serialize,
) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let mut out = Growing::default();
    serde_json::to_writer_pretty(&mut out, value)?;
    Ok(out.into_bytes())
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
    fn a_growing_buffer_moves_and_keeps_every_byte() {
        let mut out = Growing::default();
        let mut buffers = std::collections::HashSet::new();
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let piece = i.to_string();
            out.extend(piece.as_bytes());
            expected.extend_from_slice(piece.as_bytes());
            buffers.insert(out.0.as_ptr());
        }
        assert_eq!(*out.0, expected);
        // It outgrew its buffer several times, each time into a new one.
        assert!(buffers.len() > 5, "{}", buffers.len());
        let v = serde_json::json!({"role": "web", "nonce": "n".repeat(300), "list": [1, "x"]});
        assert_eq!(*to_json(&v).unwrap(), serde_json::to_vec(&v).unwrap());
        let pretty = to_json_pretty(&v).unwrap();
        assert_eq!(*pretty, serde_json::to_vec_pretty(&v).unwrap());
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
