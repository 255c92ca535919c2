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

/// The fields' text one after another, a newline between them.
fn encode_raw(secret: &str, present: &[(&str, &Value)]) -> Result<Vec<u8>, Error> {
    let mut out = Zeroizing::new(Vec::new());
    for (i, (name, value)) in present.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(text_of(secret, name, value)?.as_bytes());
    }
    Ok(std::mem::take(&mut *out))
}

/// `NAME="value"` lines that sh and systemd's EnvironmentFile= read back the same.
fn encode_env(secret: &str, present: &[(&str, &Value)]) -> Result<Vec<u8>, Error> {
    let mut out = Zeroizing::new(Vec::new());
    for (name, value) in present {
        let text = text_of(secret, name, value)?;
        if text.contains('\0') {
            return Err(Error::Unencodable {
                secret: secret.into(),
                field: name.to_string(),
                why: "holds a NUL byte, which an environment file cannot carry",
            });
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        for c in text.chars() {
            // Inside double quotes, sh and systemd's EnvironmentFile= both take these
            // four literally after a backslash, and everything else (newlines too) as is.
            if matches!(c, '\\' | '"' | '$' | '`') {
                out.push(b'\\');
            }
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
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
    let mut out = Zeroizing::new(Vec::new());
    serde_json::to_writer(&mut *out, &object.0).map_err(|_| Error::Unencodable {
        secret: secret.into(),
        field: String::new(),
        why: "cannot be written as JSON",
    })?;
    out.push(b'\n');
    Ok(std::mem::take(&mut *out))
}

/// A field as text: strings as they are, numbers and booleans as JSON writes them, arrays
/// joined by newlines (PKI's `ca_chain`).
fn text_of(secret: &str, field: &str, value: &Value) -> Result<Zeroizing<String>, Error> {
    let wrong = |found| Error::WrongType {
        secret: secret.into(),
        field: field.into(),
        found,
    };
    Ok(Zeroizing::new(match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let mut joined = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    joined.push('\n');
                }
                match item {
                    Value::String(s) => joined.push_str(s),
                    Value::Number(n) => joined.push_str(&n.to_string()),
                    Value::Bool(b) => joined.push_str(&b.to_string()),
                    _ => return Err(wrong("a list holding non-text items")),
                }
            }
            joined
        }
        Value::Object(_) => return Err(wrong("an object")),
        Value::Null => return Err(wrong("null")),
    }))
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
    fn json_keeps_types() {
        let f = fields(json!({"a": "x", "b": [1, 2], "c": true}));
        let out = encode("s", &file(Format::Json, &["a", "b", "d?"]), &f).unwrap();
        let back: Value = serde_json::from_slice(out.expose()).unwrap();
        assert_eq!(back, json!({"a": "x", "b": [1, 2]}));
    }
}
