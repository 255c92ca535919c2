//! A file's content from the fields of Vault's answer: `raw`, `env` or `json`.

use super::Error;
use crate::config::{FileConfig, Format};
use crate::secret::{Growing, Secret, SecretJson};
use serde_json::Value;

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
    match file.format {
        Format::Raw => encode_raw(secret, &present),
        Format::Env => encode_env(secret, &present),
        Format::Json => encode_json(secret, &present),
    }
}

// Every content is written into a `Growing` buffer: a plain `Vec` or `String` that grows frees
// its outgrown buffer with the secret's bytes still in it.

/// The fields' text one after another, a newline between them.
fn encode_raw(secret: &str, present: &[(&str, &Value)]) -> Result<Secret, Error> {
    let mut out = Growing::default();
    for (i, (name, value)) in present.iter().enumerate() {
        if i > 0 {
            out.extend(b"\n");
        }
        write_text(&mut out, secret, name, value)?;
    }
    Ok(out.into_secret())
}

/// `NAME="value"` lines that sh and systemd's EnvironmentFile= read back the same.
fn encode_env(secret: &str, present: &[(&str, &Value)]) -> Result<Secret, Error> {
    let mut out = Growing::default();
    for (name, value) in present {
        let mut text = Growing::default();
        write_text(&mut text, secret, name, value)?;
        let text = text.into_bytes();
        if text.contains(&0) {
            return Err(Error::Unencodable {
                secret: secret.into(),
                field: name.to_string(),
                why: "holds a NUL byte, which an environment file cannot carry",
            });
        }
        out.extend(name.as_bytes());
        out.extend(b"=\"");
        for b in text.iter() {
            // Inside double quotes, sh and systemd's EnvironmentFile= both take these four
            // literally after a backslash, and everything else (newlines too) as is. They are
            // ASCII, so never part of a longer UTF-8 sequence.
            if matches!(b, b'\\' | b'"' | b'$' | b'`') {
                out.extend(b"\\");
            }
            out.extend(std::slice::from_ref(b));
        }
        out.extend(b"\"\n");
    }
    Ok(out.into_secret())
}

/// One JSON object of the fields, values as Vault typed them.
fn encode_json(secret: &str, present: &[(&str, &Value)]) -> Result<Secret, Error> {
    let mut map = serde_json::Map::new();
    for (name, value) in present {
        map.insert(name.to_string(), (*value).clone());
    }
    let object = SecretJson(Value::Object(map));
    let mut out = Growing::default();
    serde_json::to_writer(&mut out, &object.0).map_err(|_| Error::Unencodable {
        secret: secret.into(),
        field: String::new(),
        why: "cannot be written as JSON",
    })?;
    out.extend(b"\n");
    Ok(out.into_secret())
}

/// A field as text: strings as they are, numbers and booleans as JSON writes them, arrays
/// joined by newlines (PKI's `ca_chain`).
fn write_text(out: &mut Growing, secret: &str, field: &str, value: &Value) -> Result<(), Error> {
    let wrong = |found| Error::WrongType {
        secret: secret.into(),
        field: field.into(),
        found,
    };
    match value {
        Value::String(s) => out.extend(s.as_bytes()),
        Value::Number(n) => drop(std::io::Write::write_fmt(out, format_args!("{n}"))),
        Value::Bool(b) => out.extend(if *b { &b"true"[..] } else { b"false" }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend(b"\n");
                }
                match item {
                    Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                        write_text(out, secret, field, item)?
                    }
                    _ => return Err(wrong("a list holding non-text items")),
                }
            }
        }
        Value::Object(_) => return Err(wrong("an object")),
        Value::Null => return Err(wrong("null")),
    }
    Ok(())
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
            owner: crate::config::Ids { uid: 0, gid: 0 },
            on_change: None,
            credential: None,
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
    fn numbers_and_booleans_are_written_as_json_writes_them() {
        let f = fields(json!({"n": 12345678901234_i64, "f": 1e300, "b": false,
            "l": [2.5, true, "x"]}));
        let out = encode("s", &file(Format::Raw, &["n", "f", "b", "l"]), &f).unwrap();
        // Vault's JSON numbers as serde_json prints them (1e300 as `1e+300`).
        assert_eq!(
            out.expose_str().unwrap(),
            "12345678901234\n1e+300\nfalse\n2.5\ntrue\nx"
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
