//! The fuzz targets' properties (fuzz/src/check.rs, included here as is) replayed on every kept
//! input: `fuzz/regressions/<target>/*` (what the fuzzers found, fixed since) and
//! `fuzz/seeds/<target>/*` (the seed corpus). And the env encoder's reader cross-checked with a
//! real `sh`. See docs/fuzzing.md.

#[path = "../fuzz/src/check.rs"]
#[allow(dead_code)]
mod check;

use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::Command;
use vaultboot::fuzzing::config::{Field, FileConfig, Format};
use vaultboot::fuzzing::template::Template;

fn replay(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in ["config", "vault_answer", "encoders", "imds"] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            let data = std::fs::read(file).unwrap();
            replayed += 1;
            let outcome = std::panic::catch_unwind(|| check::run(target, &data));
            match outcome {
                Ok(true) => {}
                Ok(false) => failures.push(format!("{}: unknown target", file.display())),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{}: {why}", file.display()));
                }
            }
        }
    }
    assert!(replayed > 0, "nothing to replay under {}", root.display());
    assert!(
        failures.is_empty(),
        "{} of {replayed} inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fuzz_regressions_stay_fixed() {
    replay("regressions");
}

#[test]
fn fuzz_seeds_hold_the_properties() {
    replay("seeds");
}

/// Findings fixed outside the fuzz scope (serde_json's float_roundtrip; IMDS parsing); their
/// inputs now live in `fuzz/regressions/` with the rest.
#[test]
fn floats_from_vault_are_written_exactly() {
    assert!(
        check::floats_read_exactly(),
        "serde_json reads some floats a few ULPs off: a float of Vault's answer is written changed"
    );
    // A float exactly as Vault sent it ends up in the json file.
    let body = br#"{"data":{"x":2.0886163968049374e159}}"#;
    let answer = vaultboot::fuzzing::secret::SecretJson::parse(body).unwrap();
    let fields = vaultboot::fuzzing::vault::secret_fields(&answer.0).unwrap();
    let mut file = FileConfig {
        path: Template::parse("/run/x/y.json").unwrap(),
        path_text: "/run/x/y.json".into(),
        fields: vec![Field {
            name: "x".into(),
            optional: false,
        }],
        format: Format::Json,
        mode: 0o600,
        owner: vaultboot::fuzzing::config::Ids { uid: 0, gid: 0 },
        on_change: None,
        credential: None,
    };
    let exact: f64 = 2.0886163968049374e159;
    let out = vaultboot::fuzzing::secrets::encode("s", &file, fields).unwrap();
    let back: serde_json::Value = serde_json::from_slice(out.expose()).unwrap();
    assert_eq!(
        back["x"].as_f64(),
        Some(exact),
        "json file: {:?}",
        out.expose_str()
    );
    file.format = Format::Raw;
    let out = vaultboot::fuzzing::secrets::encode("s", &file, fields).unwrap();
    let text = out.expose_str().unwrap();
    assert_eq!(text.parse::<f64>().ok(), Some(exact), "raw file: {text:?}");
}

/// Values that exercise every rule of double quotes in sh.
fn hard_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "plain",
        "p@ss w'o\"rd $HOME `id` \\ end\nsecond line",
        "\\",
        "\\\\",
        "\\\n",
        "a\\\nb",
        "\\$x \\`y\\` \\\" \\n \\t",
        "$",
        "${HOME}",
        "$(id)",
        "`",
        "\"",
        "'",
        "''\"\"",
        "trailing newlines\n\n\n",
        "\n",
        "\r\n\tcontrol \u{1} \u{7f} \u{1b}[31m",
        "-n",
        "-e \\c",
        "%s %d %%",
        "!event !! !$",
        "~ ~root",
        "* ? [a-z]",
        "# not a comment",
        "a=b c=d",
        "ā ȁ ʂ ΄ Ѕ ؆ ࠇ ሇ", // UTF-8 continuation bytes 0x81..0x88 (dash's internal markers)
        "\u{85}\u{2028}\u{feff}€😀",
        "IFS=x; export PATH=",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(70_000));
    // A deterministic pseudo-random mix of the characters that matter.
    let alphabet: Vec<char> = "\\\"$`'\n\r\t !#&;|<>(){}[]*?~=%ab ā\u{85}€"
        .chars()
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..64 {
        let mut s = String::new();
        for _ in 0..(seed % 40) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        v.push(s);
    }
    v
}

fn env_file(values: &[String]) -> (Vec<String>, Vec<u8>) {
    let names: Vec<String> = (0..values.len()).map(|i| format!("v_{i}")).collect();
    let mut fields = Map::new();
    for (n, v) in names.iter().zip(values) {
        fields.insert(n.clone(), Value::String(v.clone()));
    }
    let file = FileConfig {
        path: Template::parse("/run/x/y.env").unwrap(),
        path_text: "/run/x/y.env".into(),
        fields: names
            .iter()
            .map(|n| Field {
                name: n.clone(),
                optional: false,
            })
            .collect(),
        format: Format::Env,
        mode: 0o600,
        owner: vaultboot::fuzzing::config::Ids { uid: 0, gid: 0 },
        on_change: None,
        credential: None,
    };
    let out = vaultboot::fuzzing::secrets::encode("sample", &file, &fields).unwrap();
    (names, out.expose().to_vec())
}

/// What each shell reads back from the file: `. file; printf '%s\0' "$v_0" "$v_1" ...`.
fn read_with_shell(shell: &[&str], file: &Path, names: &[String]) -> Option<Vec<String>> {
    let script = format!(
        ". \"$1\"; printf '%s\\0' {}",
        names
            .iter()
            .map(|n| format!("\"${n}\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(shell[0])
        .args(&shell[1..])
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .arg(file)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{shell:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut values: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect();
    assert_eq!(values.pop().as_deref(), Some(""), "a trailing NUL");
    Some(values)
}

/// The POSIX reader of fuzz/src/check.rs (which the fuzz targets trust) agrees with real shells
/// on what the env encoder writes, and both read back exactly the values.
#[test]
fn env_files_read_back_exactly_in_real_shells() {
    let values = hard_values();
    let (names, bytes) = env_file(&values);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.env");
    std::fs::write(&path, &bytes).unwrap();

    let ours = check::read_env_file(std::str::from_utf8(&bytes).unwrap()).unwrap();
    let ours: Vec<String> = ours.into_iter().map(|(_, v)| v).collect();
    assert_eq!(ours, values, "the reader of the fuzz targets");

    let mut shells_run = 0;
    for shell in [
        &["sh"][..],
        &["dash"][..],
        &["bash", "--posix"][..],
        &["busybox", "sh"][..],
    ] {
        let exists = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {} >/dev/null", shell[0]))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !exists {
            continue;
        }
        let Some(back) = read_with_shell(shell, &path, &names) else {
            continue;
        };
        shells_run += 1;
        for (i, (got, want)) in back.iter().zip(&values).enumerate() {
            assert_eq!(got, want, "{shell:?} read v_{i} differently");
        }
        assert_eq!(back.len(), values.len(), "{shell:?}");
    }
    assert!(shells_run >= 1, "no POSIX shell found");
}

/// The reader refuses what a shell would expand, so a lenient encoder cannot pass the fuzzer.
#[test]
fn the_reader_refuses_what_sh_would_expand() {
    assert!(check::read_env_file("a=\"$HOME\"\n").is_err());
    assert!(check::read_env_file("a=\"`id`\"\n").is_err());
    assert!(check::read_env_file("a=\"x\"").is_err());
    assert!(check::read_env_file("a=x\n").is_err());
    assert_eq!(
        check::read_env_file("a=\"\\$\\`\\\"\\\\\\n\\\nz\"\n").unwrap(),
        vec![("a".to_string(), "$`\"\\\\nz".to_string())]
    );
    // JSON output of the same values reads back as the same values.
    let v = json!({"data": {"x": hard_values()}});
    check::vault_answer(&[&[0u8][..], &serde_json::to_vec(&v).unwrap()].concat());
}
