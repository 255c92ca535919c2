//! Properties checked by the fuzz targets, one public function per target. Each panics when a
//! property does not hold (libFuzzer records the input as a crash).
//!
//! This file depends only on `vaultboot` and `serde_json` (and std), so the root crate's
//! `tests/fuzz_regressions.rs` includes it with `#[path]` and replays every kept input of
//! `fuzz/regressions/<target>/` in the normal test suite.

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;
use vaultboot::fuzzing::config::{self, Field, FileConfig, Format};
use vaultboot::fuzzing::secret::SecretJson;
use vaultboot::fuzzing::secrets;
use vaultboot::fuzzing::template::{facts_in_json, render_json, Fact, Facts, Template};
use vaultboot::fuzzing::untrusted::json_problem;
use vaultboot::fuzzing::vault::secret_fields;

/// Runs the property of fuzz target `target` on `data`; `false` for an unknown target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "config" => config(data),
        "vault_answer" => vault_answer(data),
        "encoders" => encoders(data),
        "imds" => imds(data),
        _ => return false,
    }
    true
}

// ---- config + templates ---------------------------------------------------------------------

/// Plausible values for every fact (what IMDS answers).
fn plausible_facts() -> Facts {
    let mut f = Facts::default();
    for (fact, v) in [
        (Fact::InstanceId, "i-0123456789abcdef0"),
        (Fact::Region, "us-east-1"),
        (Fact::AccountId, "123456789012"),
        (Fact::AvailabilityZone, "us-east-1a"),
        (Fact::ImageId, "ami-0123456789abcdef0"),
        (Fact::PrivateIp, "10.0.1.23"),
        (Fact::LocalHostname, "ip-10-0-1-23.ec2.internal"),
        (Fact::LocalIpv4, "10.0.1.23"),
    ] {
        f.set(fact, v.to_string());
    }
    f
}

/// Every fact rendered as its own canonical placeholder `{{ name }}`.
fn placeholder_facts() -> Facts {
    let mut f = Facts::default();
    for fact in Fact::ALL {
        f.set(fact, format!("{{{{ {} }}}}", fact.name()));
    }
    f
}

/// Hostile values (what a broken or spoofed metadata service might answer).
fn hostile_facts(v: &str) -> Facts {
    let mut f = Facts::default();
    for fact in Fact::ALL {
        f.set(fact, v.to_string());
    }
    f
}

/// `{{ name }}` templates: parse, render, re-parse.
pub fn template(text: &str) {
    let parsed = Template::parse(text);
    if !text.contains("{{") {
        let t = parsed
            .as_ref()
            .expect("text without {{ is a literal template");
        assert!(t.is_literal());
        assert_eq!(t.render(&Facts::default()).unwrap(), text);
    }
    let t = match parsed {
        Ok(t) => t,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    let facts: Vec<Fact> = t.facts().collect();
    // Rendered with every fact known, it always succeeds; with none, only a literal does.
    t.render(&plausible_facts()).expect("all facts known");
    assert_eq!(t.render(&Facts::default()).is_ok(), t.is_literal());
    if let Some(first) = facts.first() {
        assert_eq!(t.render(&Facts::default()), Err(*first));
    }
    // Rendering each fact as its canonical placeholder gives a template with the same facts
    // in the same order, and the same text around them.
    let canonical = t.render(&placeholder_facts()).unwrap();
    let again = Template::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {text:?} fails: {e}"));
    assert_eq!(again, t, "{text:?} -> {canonical:?}");
    // A value holding braces is inserted as is, never re-expanded.
    let tricky = t.render(&hostile_facts("{{ region }}}}{{")).unwrap();
    assert!(tricky.matches("{{ region }}}}{{").count() >= facts.len());
}

/// The configuration parser: TOML text → checked `Config`, then every template rendered.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    template(text);
    let parsed = config::parse(text, Path::new("/etc/vaultboot/fuzz.toml"));
    let config = match parsed {
        Ok(c) => c,
        Err(e) => {
            let shown = e.to_string();
            assert!(!e.place.is_empty() && !e.message.is_empty(), "{shown:?}");
            // One log line: no newline, no terminal control sequence from the input.
            assert!(
                !shown.chars().any(|c| c.is_control() && c != '\t'),
                "a configuration error is not one clean line: {shown:?}"
            );
            return;
        }
    };
    assert!(config.vault.address.starts_with("http"));
    assert!(config.state_dir.is_absolute());
    assert!(!config.retry.deadline.is_zero() && !config.retry.max_delay.is_zero());
    let ttl = config.imds.token_ttl.as_secs();
    assert!((1..=21600).contains(&ttl));
    let mut expected_facts = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for secret in &config.secrets {
        assert!(!secret.name.is_empty() && names.insert(secret.name.clone()));
        assert!(!secret.files.is_empty());
        assert!(!secret.path.starts_with('/'));
        assert!(!secret
            .path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".."));
        if let Some(data) = &secret.data {
            assert!(data.is_object());
            let mut found = Vec::new();
            facts_in_json(data, &mut found).expect("data was validated");
            expected_facts.extend(found);
            check_toml_json(data);
            let rendered = render_json(data, &plausible_facts()).expect("all facts known");
            assert_eq!(count_strings(&rendered), count_strings(data));
        }
        for file in &secret.files {
            assert!(paths.insert(file.path_text.clone()), "duplicate path");
            assert!(!file.fields.is_empty());
            assert!(file.mode <= 0o777);
            let mut seen = BTreeSet::new();
            for field in &file.fields {
                assert!(!field.name.is_empty() && seen.insert(field.name.clone()));
                if file.format == Format::Env {
                    assert!(is_env_name(&field.name), "{:?}", field.name);
                }
            }
            expected_facts.extend(file.path.facts());
            let path = file
                .path
                .render(&plausible_facts())
                .expect("all facts known");
            config::check_output_path(&path)
                .unwrap_or_else(|e| panic!("{:?} renders to a refused path: {e}", file.path_text));
            // Whatever IMDS answers, the runtime check decides without panicking, and never
            // lets `..` through.
            for hostile in ["..", ".", "", "a/../../b", "/", "x\0y", "{{ region }}"] {
                let p = file.path.render(&hostile_facts(hostile)).unwrap();
                if config::check_output_path(&p).is_ok() {
                    assert!(!p.split('/').any(|c| c == ".." || c == "."), "{p:?}");
                    assert!(p.starts_with('/') && !p.contains('\0'));
                }
            }
        }
    }
    assert_eq!(config.needed_facts(), expected_facts);
}

/// TOML has no null, and its datetimes have no JSON form: neither may reach Vault's body.
fn check_toml_json(v: &Value) {
    match v {
        Value::Null => panic!("a TOML value became JSON null (NaN or infinity?)"),
        Value::Array(items) => items.iter().for_each(check_toml_json),
        Value::Object(map) => {
            for (k, item) in map {
                assert!(
                    !k.starts_with("$__toml_private"),
                    "a TOML datetime reached the JSON body as {k:?}"
                );
                check_toml_json(item);
            }
        }
        _ => {}
    }
}

fn count_strings(v: &Value) -> usize {
    match v {
        Value::String(_) => 1,
        Value::Array(items) => items.iter().map(count_strings).sum(),
        Value::Object(map) => map.values().map(count_strings).sum(),
        _ => 0,
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---- Vault answers and the encoders ---------------------------------------------------------

/// A Vault answer body: parsed (as vaultboot parses it), its fields extracted (KV v1/v2), then
/// written in each format with fields chosen from the first byte.
pub fn vault_answer(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let reference = serde_json::from_slice::<Value>(body);
    let answer = match SecretJson::parse(body) {
        Ok(a) => a,
        Err(e) => {
            let shown = json_problem(&e);
            // Stricter than serde_json's Value: a repeated key is refused (and said so).
            assert!(
                reference.is_err() || shown.starts_with("the same key twice"),
                "{shown:?}"
            );
            assert!(
                shown.contains(" at line ") && !shown.contains('\n') && shown.len() < 80,
                "{shown:?}"
            );
            return;
        }
    };
    let reference = reference.expect("same parser");
    assert_eq!(answer.0, reference);
    let Some(fields) = secret_fields(&answer.0) else {
        assert!(!matches!(reference.get("data"), Some(Value::Object(_))));
        return;
    };
    // KV v2 is recognised by data.data next to data.metadata, both objects.
    let data = reference["data"].as_object().unwrap();
    let expected = match (data.get("data"), data.get("metadata")) {
        (Some(Value::Object(inner)), Some(Value::Object(_))) => inner,
        _ => data,
    };
    assert_eq!(fields, expected);
    // The fields a configuration names: every key, in order, optional when bit 0 is set, plus
    // one absent field (optional when bit 1 is set), reversed when bit 2 is set.
    let mut chosen: Vec<Field> = fields
        .keys()
        .filter(|k| !k.is_empty() && !k.ends_with('?'))
        .take(8)
        .map(|k| Field {
            name: k.clone(),
            optional: control & 1 != 0,
        })
        .collect();
    if !fields.contains_key("absent") {
        chosen.push(Field {
            name: "absent".into(),
            optional: control & 2 != 0,
        });
    }
    if control & 4 != 0 {
        chosen.reverse();
    }
    check_encode(fields, chosen);
}

/// Structured values (strings dense in quotes, `$`, backquotes, backslashes, newlines, NULs and
/// multi-byte characters; numbers; booleans; lists; nulls; objects) through every encoder.
pub fn encoders(data: &[u8]) {
    let mut input = Bytes(data);
    let count = 1 + input.byte() % 6;
    let mut fields = Map::new();
    let mut chosen = Vec::new();
    for i in 0..count {
        let b = input.byte();
        let name = FIELD_NAMES[(b as usize >> 1) % FIELD_NAMES.len()];
        let name = if chosen.iter().any(|f: &Field| f.name == name) {
            format!("{name}_{i}")
        } else {
            name.to_string()
        };
        let kind = input.byte() % 9;
        let value = match kind {
            0..=2 => Some(Value::String(input.string())),
            3 => Some(Value::from(input.int())),
            4 => serde_json::Number::from_f64(input.float()).map(Value::Number),
            5 => Some(Value::Bool(input.byte() & 1 == 1)),
            6 => {
                let n = input.byte() % 4;
                Some(Value::Array(
                    (0..n)
                        .map(|_| match input.byte() % 5 {
                            0 => Value::from(input.int()),
                            1 => Value::Bool(true),
                            2 => Value::Null,
                            3 => Value::Array(vec![]),
                            _ => Value::String(input.string()),
                        })
                        .collect(),
                ))
            }
            7 => Some(Value::Null),
            _ => None,
        };
        if let Some(v) = value {
            fields.insert(name.clone(), v);
        }
        chosen.push(Field {
            name,
            optional: b & 1 == 1,
        });
    }
    check_encode(&fields, chosen);
    // And the same map as Vault would send it, through the answer parser.
    let body =
        serde_json::to_vec(&serde_json::json!({ "data": { "data": fields, "metadata": {} } }))
            .unwrap();
    let answer = SecretJson::parse(&body).expect("serde_json reads what it wrote");
    let back = Value::Object(secret_fields(&answer.0).expect("data").clone());
    assert!(same_json(
        &back,
        &Value::Object(fields),
        floats_read_exactly()
    ));
}

const FIELD_NAMES: &[&str] = &[
    "password",
    "username",
    "_x",
    "A1",
    "certificate",
    "ca_chain",
    "private_key",
    "data",
    "metadata",
    "api_key",
    "Z",
    "_",
];

const SPECIAL: &[char] = &[
    '\\', '"', '$', '`', '\n', '\'', '\0', '\r', '\t', '!', '{', '}', ' ', '=', '#', '~', '*', 'ā',
    '\u{85}', '\u{2028}', '€', '😀', '\u{7f}', '\u{1b}', '\u{feff}',
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn int(&mut self) -> i64 {
        let mut b = [0u8; 8];
        for x in b.iter_mut().take(1 + (self.byte() % 8) as usize) {
            *x = self.byte();
        }
        i64::from_le_bytes(b)
    }
    fn float(&mut self) -> f64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        f64::from_le_bytes(b)
    }
    fn string(&mut self) -> String {
        let len = self.byte() as usize % 48;
        (0..len)
            .map(|_| {
                let b = self.byte();
                if b < 0x80 {
                    b as char
                } else {
                    SPECIAL[(b as usize - 0x80) % SPECIAL.len()]
                }
            })
            .collect()
    }
}

fn file(format: Format, fields: Vec<Field>) -> FileConfig {
    FileConfig {
        path: Template::parse("/run/fuzz/out").unwrap(),
        path_text: "/run/fuzz/out".into(),
        fields,
        format,
        mode: 0o600,
        owner: config::Ids { uid: 0, gid: 0 },
        on_change: None,
        credential: None,
    }
}

/// What `encode` must do, worked out independently: the present fields with their text, or
/// the error it must report (kind and field).
#[derive(Debug, PartialEq)]
enum Expected {
    Missing(String),
    WrongType(String),
    Unencodable(String),
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Array(_) | Value::Object(_) | Value::Null => None,
                scalar => text_of(scalar),
            })
            .collect::<Option<Vec<_>>>()
            .map(|t| t.join("\n")),
        Value::Object(_) | Value::Null => None,
    }
}

/// `encode` with each format; what is written reads back exactly as the fields.
pub fn check_encode(fields: &Map<String, Value>, chosen: Vec<Field>) {
    let present: Vec<(String, &Value)> = chosen
        .iter()
        .filter_map(|f| match fields.get(&f.name) {
            None | Some(Value::Null) => None,
            Some(v) => Some((f.name.clone(), v)),
        })
        .collect();
    for format in [Format::Raw, Format::Env, Format::Json] {
        let usable: Vec<Field> = chosen
            .iter()
            .filter(|f| format != Format::Env || is_env_name(&f.name))
            .cloned()
            .collect();
        if usable.is_empty() {
            continue;
        }
        let names: BTreeSet<&str> = usable.iter().map(|f| f.name.as_str()).collect();
        let present: Vec<(String, &Value)> = present
            .iter()
            .filter(|(n, _)| names.contains(n.as_str()))
            .cloned()
            .collect();
        let missing = usable
            .iter()
            .find(|f| !f.optional && matches!(fields.get(&f.name), None | Some(Value::Null)))
            .map(|f| f.name.clone());
        let expected_err = if let Some(m) = missing {
            Some(Expected::Missing(m))
        } else if format == Format::Json {
            None
        } else {
            present.iter().find_map(|(n, v)| match text_of(v) {
                None => Some(Expected::WrongType(n.clone())),
                Some(t) if format == Format::Env && t.contains('\0') => {
                    Some(Expected::Unencodable(n.clone()))
                }
                Some(_) => None,
            })
        };
        let result = secrets::encode("fuzz", &file(format, usable), fields);
        let out = match (result, expected_err) {
            (Ok(out), None) => out,
            (Err(e), Some(expected)) => {
                let got = match &e {
                    secrets::Error::MissingField { field, .. } => Expected::Missing(field.clone()),
                    secrets::Error::WrongType { field, .. } => Expected::WrongType(field.clone()),
                    secrets::Error::Unencodable { field, .. } => {
                        Expected::Unencodable(field.clone())
                    }
                    other => panic!("unexpected error {other}"),
                };
                assert_eq!(got, expected, "{format:?}");
                // Errors name the place, never a value.
                let shown = e.to_string();
                assert!(!shown.contains('\n'), "{shown:?}");
                continue;
            }
            (Ok(_), Some(expected)) => panic!("{format:?}: expected {expected:?}, got Ok"),
            (Err(e), None) => panic!("{format:?}: unexpected error: {e}"),
        };
        let bytes = out.expose();
        match format {
            Format::Raw => {
                let texts: Vec<String> = present.iter().map(|(_, v)| text_of(v).unwrap()).collect();
                assert_eq!(bytes, texts.join("\n").as_bytes());
            }
            Format::Env => {
                let text = std::str::from_utf8(bytes).expect("env output is UTF-8");
                let back = read_env_file(text)
                    .unwrap_or_else(|e| panic!("env output unreadable: {e}: {text:?}"));
                let want: Vec<(String, String)> = present
                    .iter()
                    .map(|(n, v)| (n.clone(), text_of(v).unwrap()))
                    .collect();
                assert_eq!(back, want, "{text:?}");
            }
            Format::Json => {
                assert_eq!(bytes.last(), Some(&b'\n'));
                let back: Value = serde_json::from_slice(bytes).expect("json output is JSON");
                let want: Map<String, Value> = present
                    .iter()
                    .map(|(n, v)| (n.clone(), (*v).clone()))
                    .collect();
                // The text written is serde_json's own (shortest round-trip floats).
                let text = serde_json::to_vec(&want).unwrap();
                assert_eq!(&bytes[..bytes.len() - 1], &text[..]);
                let want = Value::Object(want);
                assert!(
                    same_json(&back, &want, floats_read_exactly()),
                    "read back {back:?}\nwritten   {want:?}"
                );
            }
        }
    }
}

/// Whether this build's serde_json reads every float exactly (its `float_roundtrip` feature).
/// Without it, serde_json's fast float parser may be a few units in the last place off for a
/// 17-digit number: vaultboot then writes a float of Vault's answer a few ULPs off in a `json`
/// file (found by fuzzing; fuzz/pending/, docs/fuzzing.md). Until the feature is on, floats
/// are compared within a few ULPs; once it is on, exactly.
pub fn floats_read_exactly() -> bool {
    serde_json::from_str::<f64>("2.0886163968049374e159").ok() == Some(2.0886163968049374e159)
}

/// JSON equality; floats within a few ULPs (8) unless `exact`.
pub fn same_json(a: &Value, b: &Value, exact: bool) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if !exact && (x.is_f64() || y.is_f64()) => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x.to_bits() as i128 - y.to_bits() as i128).unsigned_abs() <= 8
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y, exact))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w, exact)))
        }
        _ => a == b,
    }
}

/// Reads an env file as POSIX `sh` would source it: only `NAME="value"` lines. Inside double
/// quotes a backslash keeps its special meaning only before `$`, `` ` ``, `"`, `\` or a newline
/// (removed: line continuation); elsewhere it stays. An unescaped `$` or `` ` `` would expand:
/// an error here. systemd's `EnvironmentFile=` (v240 and later) applies the same rules to
/// double-quoted values.
pub fn read_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut name = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                other => return Err(format!("bad name character {other:?} after {name:?}")),
            }
        }
        if !is_env_name(&name) {
            return Err(format!("{name:?} is not a name"));
        }
        if chars.next() != Some('"') {
            return Err(format!("{name}: value not double-quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(format!("{name}: unterminated value")),
                Some('"') => break,
                Some('$') => return Err(format!("{name}: unescaped $ would expand")),
                Some('`') => return Err(format!("{name}: unescaped ` would run a command")),
                Some('\\') => match chars.next() {
                    None => return Err(format!("{name}: backslash at the end")),
                    Some(c @ ('$' | '`' | '"' | '\\')) => value.push(c),
                    Some('\n') => {}
                    Some(c) => {
                        value.push('\\');
                        value.push(c);
                    }
                },
                Some(c) => value.push(c),
            }
        }
        if chars.next() != Some('\n') {
            return Err(format!("{name}: no newline after the value"));
        }
        out.push((name, value));
    }
    Ok(out)
}

// ---- IMDS ------------------------------------------------------------------------------------

/// The identity document as vaultboot reads it (`imds::Identity` via serde_json), and the signed
/// document's sanitizing.
pub fn imds(data: &[u8]) {
    // What the current code accepts: serde's derive takes a JSON array as the struct's fields
    // in order, so `["i-1","r","a","z","ami","ip"]` is an "identity document" (found by
    // fuzzing: fuzz/pending/imds/array-as-document.json).
    let current = serde_json::from_slice::<vaultboot::fuzzing::imds::Identity>(data);
    let parsed = parse_identity(data);
    if parsed.is_ok() {
        assert!(current.is_ok());
    }
    if let Ok(id) = &parsed {
        // serde skips the fields vaultboot does not use without checking their escapes, so
        // the document may be readable although a full parse fails: compare when it is not.
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        for (key, got) in [
            ("instanceId", &id.instance_id),
            ("region", &id.region),
            ("accountId", &id.account_id),
            ("availabilityZone", &id.availability_zone),
            ("imageId", &id.image_id),
            ("privateIp", &id.private_ip),
        ] {
            assert_eq!(v[key].as_str(), Some(got.as_str()), "{key}");
        }
        // Every field that passes its check is used in log lines, templated output paths or
        // request bodies (the id also in the nonce file and the operator's `vault delete
        // .../identity-accesslist/<id>` hint): a plain token, nothing else.
        assert!(id.instance_id.len() <= 64);
        for value in [
            &id.instance_id,
            &id.region,
            &id.account_id,
            &id.availability_zone,
            &id.image_id,
            &id.private_ip,
        ] {
            assert!(
                !value.is_empty()
                    && !value.contains(|c: char| c.is_control() || c.is_whitespace() || c == '/')
                    && !value.starts_with('.'),
                "accepted {value:?}"
            );
        }
    }
    if let Err(e) = &current {
        assert!(!json_problem(e).contains('\n'));
    }
    if let Ok(doc) = sanitize_signed_document(data) {
        assert!(!doc.is_empty());
        assert!(doc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
        assert_eq!(
            sanitize_signed_document(doc.as_bytes()).as_deref(),
            Ok(doc.as_str())
        );
        let text = std::str::from_utf8(data).unwrap();
        let stripped: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        assert_eq!(doc, stripped);
    }
}

/// The agent's own sanitizing of the signed document (`vaultboot::imds`).
pub fn sanitize_signed_document(body: &[u8]) -> Result<String, &'static str> {
    vaultboot::fuzzing::imds::parse_signed_document(body)
}

/// The agent's own identity parsing (`vaultboot::imds`): a JSON object and a plain instance id.
pub fn parse_identity(body: &[u8]) -> Result<vaultboot::fuzzing::imds::Identity, String> {
    let id = vaultboot::fuzzing::imds::parse_identity(body)?;
    assert!(
        instance_id_ok(&id.instance_id),
        "an accepted instanceId must be plain"
    );
    Ok(id)
}

/// A copy of `Imds::fetch_identity`'s check of `instanceId` as it is: it accepts
/// "i-\n..." (found by fuzzing: fuzz/pending/imds/; the id goes into log lines and into the
/// operator's hint).
pub fn instance_id_ok_current(id: &str) -> bool {
    id.starts_with("i-") && id.len() <= 64
}

/// The check proposed for `vaultboot::imds` (docs/fuzzing.md): "i-" and 1 to 62 ASCII letters
/// or digits (EC2 ids are "i-" and 8 or 17 hex digits). The target checks this one, so that
/// fuzzing goes on past the known finding.
pub fn instance_id_ok(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 62 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}
