//! A file's content from the fields of Vault's answer: `raw`, `env` or `json`.

use super::Error;
use crate::config::{FileConfig, Format};
use crate::secret::{Secret, SecretJson};
use serde_json::Value;
use zeroize::Zeroizing;

/// The file's content from the answer's fields.
pub fn encode(
    secret: &str,
    file: &FileConfig,
    fields: &serde_json::Map<String, Value>,
) -> Result<Secret, Error> {
    let mut present: Vec<(&str, &Value)> = Vec::new();
    for field in &file.fields {
        match fields.get(&field.name) {
            Some(Value::Null) | None if field.optional => {}
            Some(Value::Null) | None => {
                return Err(Error::MissingField {
                    secret: secret.into(),
                    field: field.name.clone(),
                })
            }
            Some(v) => present.push((&field.name, v)),
        }
    }
    let out = match file.format {
        Format::Raw => encode_raw(secret, &present)?,
        Format::Env => encode_env(secret, &present)?,
        Format::Json => encode_json(secret, &present)?,
    };
    Ok(Secret::new(out))
}

// Every buffer below is allocated once at its final size: a growing `Vec` or `String` frees
// its outgrown buffer with the secret's bytes still in it.

/// The fields' text one after another, a newline between them.
fn encode_raw(secret: &str, present: &[(&str, &Value)]) -> Result<Vec<u8>, Error> {
    let texts = texts_of(secret, present)?;
    let size = texts.iter().map(|(_, t)| t.len() + 1).sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(size.saturating_sub(1)));
    for (i, (_, text)) in texts.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(text.as_bytes());
    }
    Ok(std::mem::take(&mut *out))
}

/// Inside double quotes, sh and systemd's EnvironmentFile= both take these four literally
/// after a backslash, and everything else (newlines too) as is.
fn needs_backslash(b: u8) -> bool {
    matches!(b, b'\\' | b'"' | b'$' | b'`')
}

/// `NAME="value"` lines that sh and systemd's EnvironmentFile= read back the same.
fn encode_env(secret: &str, present: &[(&str, &Value)]) -> Result<Vec<u8>, Error> {
    let texts = texts_of(secret, present)?;
    if let Some((name, _)) = texts.iter().find(|(_, t)| t.contains('\0')) {
        return Err(Error::Unencodable {
            secret: secret.into(),
            field: name.to_string(),
            why: "holds a NUL byte, which an environment file cannot carry",
        });
    }
    let size = texts
        .iter()
        .map(|(name, t)| {
            let escapes = t.bytes().filter(|b| needs_backslash(*b)).count();
            name.len() + "=\"\"\n".len() + t.len() + escapes
        })
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    for (name, text) in &texts {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        // Byte by byte: the four are ASCII, and never part of a longer UTF-8 sequence.
        for b in text.bytes() {
            if needs_backslash(b) {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\"\n");
    }
    Ok(std::mem::take(&mut *out))
}

/// One JSON object of the fields, values as Vault typed them.
fn encode_json(secret: &str, present: &[(&str, &Value)]) -> Result<Vec<u8>, Error> {
    let mut map = serde_json::Map::new();
    for (name, value) in present {
        map.insert(name.to_string(), (*value).clone());
    }
    let object = SecretJson(Value::Object(map));
    let mut out = crate::secret::to_json_line(&object.0).map_err(|_| Error::Unencodable {
        secret: secret.into(),
        field: String::new(),
        why: "cannot be written as JSON",
    })?;
    Ok(std::mem::take(&mut *out))
}

/// Each present field's name and text.
fn texts_of<'p>(
    secret: &str,
    present: &[(&'p str, &Value)],
) -> Result<Vec<(&'p str, Zeroizing<String>)>, Error> {
    present
        .iter()
        .map(|(name, value)| Ok((*name, text_of(secret, name, value)?)))
        .collect()
}

/// A field as text: strings as they are, numbers and booleans as JSON writes them, arrays
/// joined by newlines (PKI's `ca_chain`).
fn text_of(secret: &str, field: &str, value: &Value) -> Result<Zeroizing<String>, Error> {
    let wrong = |found| Error::WrongType {
        secret: secret.into(),
        field: field.into(),
        found,
    };
    match value {
        Value::String(s) => Ok(Zeroizing::new(s.clone())),
        Value::Number(n) => Ok(shown(n)),
        Value::Bool(b) => Ok(shown(b)),
        Value::Array(items) => {
            let pieces = items
                .iter()
                .map(|item| match item {
                    Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                        text_of(secret, field, item)
                    }
                    _ => Err(wrong("a list holding non-text items")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let size = pieces.iter().map(|p| p.len() + 1).sum::<usize>();
            let mut joined = Zeroizing::new(String::with_capacity(size.saturating_sub(1)));
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    joined.push('\n');
                }
                joined.push_str(piece);
            }
            Ok(joined)
        }
        Value::Object(_) => Err(wrong("an object")),
        Value::Null => Err(wrong("null")),
    }
}

/// `value` as `Display` writes it, in a buffer of its size.
fn shown(value: &impl std::fmt::Display) -> Zeroizing<String> {
    use std::fmt::Write;
    struct Count(usize);
    impl Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = write!(count, "{value}");
    let mut out = Zeroizing::new(String::with_capacity(count.0));
    let _ = write!(out, "{value}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Field;
    use crate::template::Template;
    use serde_json::json;

    fn file(format: Format, fields: &[&str]) -> FileConfig {
        FileConfig {
            path: Template::parse("/x/y").unwrap(),
            path_text: "/x/y".into(),
            fields: fields
                .iter()
                .map(|f| Field {
                    name: f.trim_end_matches('?').into(),
                    optional: f.ends_with('?'),
                })
                .collect(),
            format,
            mode: 0o600,
            uid: 0,
            gid: 0,
            on_change: None,
        }
    }

    fn fields(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn raw_joins_fields_and_arrays() {
        let f = fields(json!({"certificate": "C", "ca_chain": ["I1", "I2"]}));
        let out = encode("tls", &file(Format::Raw, &["certificate", "ca_chain?"]), &f).unwrap();
        assert_eq!(out.expose(), b"C\nI1\nI2");
        let f = fields(json!({"certificate": "C"}));
        let out = encode("tls", &file(Format::Raw, &["certificate", "ca_chain?"]), &f).unwrap();
        assert_eq!(out.expose(), b"C");
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let f = fields(json!({"a": {"nested": 1}}));
        let e = encode("s", &file(Format::Raw, &["b"]), &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"s\"") && e.contains("\"b\""), "{e}");
        let e = encode("s", &file(Format::Raw, &["a"]), &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("an object"), "{e}");
    }

    #[test]
    fn errors_are_one_line_whatever_the_field_name() {
        // Found by fuzzing (fuzz/regressions/vault_answer/missing-field-with-newline).
        let e = encode("s", &file(Format::Raw, &["a\nb"]), &fields(json!({})))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("\"a\\nb?\""), "{e}");
    }

    #[test]
    fn env_quotes_everything_sh_would_interpret() {
        let f = fields(json!({"password": "a b'c\"d$e`f\\g\nh", "n": 5}));
        let out = encode("s", &file(Format::Env, &["password", "n"]), &f).unwrap();
        assert_eq!(
            out.expose_str().unwrap(),
            "password=\"a b'c\\\"d\\$e\\`f\\\\g\nh\"\nn=\"5\"\n"
        );
    }

    #[test]
    fn every_format_is_written_in_one_buffer_of_its_size() {
        let long = "s3cr3t-\\-\"-$-`-".repeat(40);
        let f = fields(
            json!({"a": long, "n": 12345678901234_i64, "f": 1e300, "b": true,
            "l": [long, 7, false, "x"]}),
        );
        let all = ["a", "n", "f", "b", "l"];
        for format in [Format::Raw, Format::Env, Format::Json] {
            let out = encode("s", &file(format, &all), &f).unwrap();
            assert_eq!(out.expose().len(), out.capacity(), "{format:?}");
        }
        for value in [json!(1e300), json!([long, 7, false])] {
            let text = text_of("s", "v", &value).unwrap();
            assert_eq!(text.len(), text.capacity(), "{value}");
        }
    }

    #[test]
    fn json_keeps_types() {
        let f = fields(json!({"a": "x", "b": [1, 2], "c": true}));
        let out = encode("s", &file(Format::Json, &["a", "b", "d?"]), &f).unwrap();
        let back: Value = serde_json::from_slice(out.expose()).unwrap();
        assert_eq!(back, json!({"a": "x", "b": [1, 2]}));
    }
}
