//! docs/configuration.md lists every key the parser accepts, every template and every format:
//! the parser itself is asked which keys it knows (serde names them when it meets an unknown
//! one), so a key added to the code without a line in the reference fails here.

use std::path::Path;
use vaultboot::fuzzing::config::parse;
use vaultboot::fuzzing::template::Fact;

const BASE: &str = r#"[vault]
address = "https://vault.example.com:8200"

[auth]
role = "web"

[imds]

[state]

[retry]

[status]

[outputs]

[[secret]]
name = "s"
path = "secret/data/s"

  [[secret.file]]
  path = "/etc/s/value"
  fields = ["v"]

  [[secret.credential]]
  name = "c"
  fields = ["w"]
"#;

fn reference() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    std::fs::read_to_string(path).unwrap()
}

/// The part of the reference under the heading that starts with `heading`.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading:?} in docs/configuration.md"));
    let rest = &doc[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The keys the parser accepts where `marker` is, from its error for an unknown key there.
fn accepted_keys(marker: &str) -> Vec<String> {
    let text = BASE.replacen(marker, &format!("{marker}\nzzz_unknown = 1"), 1);
    let e = parse(&text, Path::new("/t.toml"))
        .err()
        .unwrap_or_else(|| panic!("an unknown key after {marker:?} was accepted"))
        .to_string();
    let expected = e.split_once("expected").unwrap_or_else(|| panic!("{e}")).1;
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!keys.is_empty(), "{e}");
    keys
}

#[test]
fn every_key_is_in_the_reference() {
    let doc = reference();
    for (marker, heading) in [
        ("[vault]", "## `[vault]`"),
        ("[auth]", "## `[auth]`"),
        ("[imds]", "## `[imds]`"),
        ("[state]", "## `[state]`"),
        ("[retry]", "## `[retry]`"),
        ("[status]", "## `[status]`"),
        ("path = \"secret/data/s\"", "## `[[secret]]`"),
        ("fields = [\"v\"]", "## `[[secret.file]]`"),
        ("fields = [\"w\"]", "## `[[secret.credential]]`"),
        ("[outputs]", "## `[outputs]`"),
    ] {
        let part = section(&doc, heading);
        for key in accepted_keys(marker) {
            assert!(
                part.contains(&format!("| `{key}` |")),
                "docs/configuration.md, {heading}: no row for `{key}`"
            );
        }
    }
}

#[test]
fn every_section_template_and_format_is_in_the_reference() {
    let doc = reference();
    let e = parse(&format!("{BASE}\n[zzz]\n"), Path::new("/t.toml"))
        .err()
        .unwrap()
        .to_string();
    let known = e.split_once("(known: ").unwrap().1.trim_end_matches(')');
    for name in known.split(", ") {
        let heading = if name == "secret" {
            "## `[[secret]]`".to_string()
        } else {
            format!("## `[{name}]`")
        };
        assert!(doc.contains(&heading), "no section {heading}");
    }
    let templates = section(&doc, "## Templates");
    for fact in Fact::ALL {
        assert!(
            templates.contains(&format!("| `{{{{ {} }}}}` |", fact.name())),
            "no template {}",
            fact.name()
        );
    }
    let e = parse(
        // The last table of BASE is its [[secret.credential]] (formats as for files).
        &format!("{BASE}  format = \"zzz\"\n"),
        Path::new("/t.toml"),
    )
    .err()
    .unwrap()
    .to_string();
    let formats = section(&doc, "## Formats");
    let listed = e.split_once("is not ").unwrap().1.replace(" or ", ", ");
    for format in listed.split(", ").map(|f| f.trim_matches('"')) {
        assert!(
            formats.contains(&format!("- `{format}`:")),
            "no format {format} ({e})"
        );
    }
}
