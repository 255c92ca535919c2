//! The one configuration builder of the tests: the sections every test shares and the
//! example's secrets, as data; a test changes a key where it belongs (a section, a secret by
//! name, a file by the end of its path) instead of editing the text, so that a change that
//! misses its key fails loudly rather than leaving the text as it was.

use std::fmt;

/// A value as TOML writes it: a string (quoted and escaped), a bool, an integer, a list of
/// strings, or `Raw` text for anything else (an inline table, a value of the wrong type).
pub trait Value {
    fn toml(self) -> String;
}

/// TOML text taken as is.
pub struct Raw<'a>(pub &'a str);

impl Value for Raw<'_> {
    fn toml(self) -> String {
        self.0.to_string()
    }
}

impl Value for &str {
    fn toml(self) -> String {
        quoted(self)
    }
}

impl Value for String {
    fn toml(self) -> String {
        quoted(&self)
    }
}

impl Value for &String {
    fn toml(self) -> String {
        quoted(self)
    }
}

impl Value for &std::path::Path {
    fn toml(self) -> String {
        quoted(&self.display().to_string())
    }
}

impl Value for &std::path::PathBuf {
    fn toml(self) -> String {
        quoted(&self.display().to_string())
    }
}

impl Value for bool {
    fn toml(self) -> String {
        self.to_string()
    }
}

impl Value for i64 {
    fn toml(self) -> String {
        self.to_string()
    }
}

impl<const N: usize> Value for [&str; N] {
    fn toml(self) -> String {
        let items: Vec<String> = self.iter().map(|s| quoted(s)).collect();
        format!("[{}]", items.join(", "))
    }
}

impl Value for &[String] {
    fn toml(self) -> String {
        let items: Vec<String> = self.iter().map(|s| quoted(s)).collect();
        format!("[{}]", items.join(", "))
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
pub fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

type Keys = Vec<(String, String)>;

/// One `[[secret]]`: its keys and its `[[secret.file]]` tables.
#[derive(Clone, Debug)]
struct Secret {
    keys: Keys,
    files: Vec<Keys>,
}

/// A configuration file under construction; `Display` writes it.
#[derive(Clone, Debug)]
pub struct Config {
    sections: Vec<(String, Keys)>,
    secrets: Vec<Secret>,
    /// TOML text after everything else (a table the builder does not know).
    tail: String,
}

fn put(keys: &mut Keys, key: &str, value: String) {
    match keys.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => keys.push((key.to_string(), value)),
    }
}

fn get<'a>(keys: &'a Keys, key: &str) -> Option<&'a str> {
    keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Config {
    /// The shared sections, no secret.
    pub fn new(sections: &[(&str, &[(&str, String)])]) -> Config {
        let own = |keys: &[(&str, String)]| -> Keys {
            keys.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        Config {
            sections: sections
                .iter()
                .map(|(name, keys)| (name.to_string(), own(keys)))
                .collect(),
            secrets: Vec::new(),
            tail: String::new(),
        }
    }

    /// `key` of `[section]` set (added, or replaced where it is); the section is added after
    /// the others when the configuration has none.
    pub fn set(mut self, section: &str, key: &str, value: impl Value) -> Config {
        let value = value.toml();
        match self.sections.iter_mut().find(|(name, _)| name == section) {
            Some((_, keys)) => put(keys, key, value),
            None => self
                .sections
                .push((section.to_string(), vec![(key.to_string(), value)])),
        }
        self
    }

    /// `key` of `[section]` removed; it must be there.
    pub fn unset(mut self, section: &str, key: &str) -> Config {
        let keys = self.section(section);
        let before = keys.len();
        keys.retain(|(k, _)| k != key);
        assert!(keys.len() < before, "no {key} in [{section}]");
        self
    }

    fn section(&mut self, section: &str) -> &mut Keys {
        let found = self.sections.iter_mut().find(|(name, _)| name == section);
        &mut found.unwrap_or_else(|| panic!("no [{section}]")).1
    }

    /// A `[[secret]]` added with `name` and `path`; `file` adds its files.
    pub fn add_secret(mut self, name: &str, path: &str) -> Config {
        self.secrets.push(Secret {
            keys: vec![("name".into(), quoted(name)), ("path".into(), quoted(path))],
            files: Vec::new(),
        });
        self
    }

    /// A `[[secret.file]]` added to the last secret, with its path and fields.
    pub fn add_file(mut self, path: &str, fields: &[&str]) -> Config {
        let secret = self.secrets.last_mut().expect("add_secret first");
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        secret.files.push(vec![
            ("path".into(), quoted(path)),
            ("fields".into(), fields.as_slice().toml()),
        ]);
        self
    }

    /// `key` of the `[[secret]]` named `name` set.
    pub fn secret(mut self, name: &str, key: &str, value: impl Value) -> Config {
        put(&mut self.named(name).keys, key, value.toml());
        self
    }

    fn named(&mut self, name: &str) -> &mut Secret {
        let name = quoted(name);
        let found = self
            .secrets
            .iter_mut()
            .find(|s| get(&s.keys, "name") == Some(&name));
        found.unwrap_or_else(|| panic!("no [[secret]] {name}"))
    }

    /// `key` of the one `[[secret.file]]` whose path ends with `path_end` set.
    pub fn file(mut self, path_end: &str, key: &str, value: impl Value) -> Config {
        let ends =
            |f: &&mut Keys| get(f, "path").is_some_and(|p| p.ends_with(&quoted(path_end)[1..]));
        let mut found: Vec<&mut Keys> = self
            .secrets
            .iter_mut()
            .flat_map(|s| s.files.iter_mut())
            .filter(ends)
            .collect();
        assert_eq!(found.len(), 1, "files whose path ends with {path_end:?}");
        put(found[0], key, value.toml());
        self
    }

    /// Only the secrets named, in the configuration's order.
    pub fn only(mut self, names: &[&str]) -> Config {
        let names: Vec<String> = names.iter().map(|n| quoted(n)).collect();
        self.secrets
            .retain(|s| get(&s.keys, "name").is_some_and(|n| names.iter().any(|m| m == n)));
        assert_eq!(self.secrets.len(), names.len(), "secrets {names:?}");
        self
    }

    /// No secret at all.
    pub fn no_secrets(mut self) -> Config {
        self.secrets.clear();
        self
    }

    /// TOML text written after everything else.
    pub fn append(mut self, text: &str) -> Config {
        self.tail.push_str(text);
        self
    }

    /// The example's PKI secret renewed on every run (renew_before beyond the certificate's
    /// lifetime): for tests that need a certificate issued each time.
    pub fn renew_every_run(self) -> Config {
        self.secret("tls", "renew_before", "100000h")
    }

    /// The `[[secret]]` tables alone, as text.
    pub fn secrets_text(&self) -> String {
        let mut out = String::new();
        for s in &self.secrets {
            out.push_str("\n[[secret]]\n");
            keys_text(&mut out, &s.keys, "");
            for f in &s.files {
                out.push_str("\n  [[secret.file]]\n");
                keys_text(&mut out, f, "  ");
            }
        }
        out
    }

    /// The text of the file.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

fn keys_text(out: &mut String, keys: &Keys, indent: &str) {
    for (k, v) in keys {
        out.push_str(&format!("{indent}{k} = {v}\n"));
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (i, (name, keys)) in self.sections.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("[{name}]\n"));
            keys_text(&mut out, keys, "");
        }
        out.push_str(&self.secrets_text());
        out.push_str(&self.tail);
        f.write_str(&out)
    }
}
