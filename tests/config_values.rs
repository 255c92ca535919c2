//! A property of the configuration: no value a TOML file can hold, in any key, makes vaultboot
//! panic or abort. Every key of every section gets each value of a fixed list of hostile and
//! edge cases (huge, negative and zero numbers, 2^32-1, 2^63, huge durations, odd Unicode,
//! empty strings, control characters, every TOML type) and of a seeded random series; for each,
//! `parse` runs in-process, and on every eighth case the real `vaultboot check` binary runs on the
//! file: it exits 0 or 78, agreeing with `parse`, with its error on one line. Then "what check accepts, run
//! handles": some accepted values of each key that does not name a path or a command go
//! through `vaultboot run` against the simulators, which must end with a status of the
//! table, never a crash. `VAULTBOOT_PROPERTY_SEED=<n>` repeats a random series.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use vaultboot::fuzzing::config::{on_this_machine, parse};

/// (section, key): `secret` and `secret.file` are the first `[[secret]]` and its first file;
/// `data.ttl` is a value inside the secret's `data` table.
const KEYS: &[(&str, &str)] = &[
    ("vault", "address"),
    ("vault", "ca_cert"),
    ("vault", "tls_server_name"),
    ("vault", "namespace"),
    ("vault", "request_timeout"),
    ("vault", "insecure_http"),
    ("vault", "proxy"),
    ("auth", "method"),
    ("auth", "mount"),
    ("auth", "role"),
    ("auth", "iam_server_id"),
    ("auth", "sts_region"),
    ("auth", "sts_endpoint"),
    ("auth", "revoke_token"),
    ("imds", "endpoint"),
    ("imds", "token_ttl"),
    ("imds", "signature"),
    ("state", "dir"),
    ("retry", "deadline"),
    ("retry", "max_delay"),
    ("status", "file"),
    ("status", "textfile"),
    ("secret", "name"),
    ("secret", "path"),
    ("secret", "data"),
    ("secret", "data.ttl"),
    ("secret", "renew_before"),
    ("secret", "boot_only"),
    ("secret.file", "path"),
    ("secret.file", "fields"),
    ("secret.file", "format"),
    ("secret.file", "mode"),
    ("secret.file", "owner"),
    ("secret.file", "group"),
    ("secret.file", "on_change"),
    ("secret.credential", "name"),
    ("secret.credential", "fields"),
    ("secret.credential", "format"),
    ("secret.credential", "seal"),
    ("secret.credential", "on_change"),
    ("outputs", "plaintext_at_rest"),
    ("outputs", "credstore_parent"),
];

/// Keys whose accepted values are paths or commands: a run would write or execute them as
/// root, so they are parsed and checked only.
const NOT_RUN: &[&str] = &[
    "ca_cert",
    "dir",
    "file",
    "textfile",
    "path",
    "on_change",
    "credstore_parent",
];

/// The configuration with `key` set to the TOML literal `value` (iam keys with method iam).
fn config_text(env: &Env, (section, key): (&str, &str), value: &str) -> String {
    let out = env.path("out").display().to_string();
    let mut sections: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "[vault]",
            vec![
                kv("address", &quoted(&env.vault.url())),
                kv(
                    "ca_cert",
                    &quoted(&env.path("vault-ca.pem").display().to_string()),
                ),
                kv("request_timeout", "\"2s\""),
            ],
        ),
        ("[auth]", vec![kv("role", "\"web\"")]),
        ("[imds]", vec![kv("endpoint", &quoted(&env.imds.url()))]),
        (
            "[state]",
            vec![kv("dir", &quoted(&env.state_dir().display().to_string()))],
        ),
        (
            "[retry]",
            vec![kv("deadline", "\"1s\""), kv("max_delay", "\"200ms\"")],
        ),
        (
            "[status]",
            vec![kv(
                "file",
                &quoted(&env.path("status/status.json").display().to_string()),
            )],
        ),
        (
            "[outputs]",
            vec![kv(
                "credstore_parent",
                &quoted(&env.path("creds").display().to_string()),
            )],
        ),
        (
            "[[secret]]",
            vec![
                kv("name", "\"tls\""),
                kv("path", "\"pki_int/issue/web\""),
                kv(
                    "data",
                    "{ common_name = \"{{ local-hostname }}\", ttl = \"72h\" }",
                ),
            ],
        ),
        (
            "[[secret.file]]",
            vec![
                kv("path", &quoted(&format!("{out}/tls/server.crt"))),
                kv("fields", "[\"certificate\"]"),
                kv("mode", "\"0644\""),
            ],
        ),
        (
            "[[secret.file]]",
            vec![
                kv("path", &quoted(&format!("{out}/tls/server.key"))),
                kv("fields", "[\"private_key\"]"),
            ],
        ),
        (
            "[[secret.credential]]",
            vec![
                kv("name", "\"tls.key\""),
                kv("fields", "[\"private_key\"]"),
                kv("seal", "\"none\""),
            ],
        ),
    ];
    if ["iam_server_id", "sts_region", "sts_endpoint"].contains(&key) {
        sections[1].1.push(kv("method", "\"iam\""));
    }
    if key == "sts_endpoint" {
        sections[1].1.push(kv("sts_region", "\"us-east-1\""));
    }
    let header = match section {
        "secret" | "secret.file" | "secret.credential" => format!("[[{section}]]"),
        _ => format!("[{section}]"),
    };
    let (_, lines) = sections
        .iter_mut()
        .find(|(h, _)| *h == header)
        .expect("a section");
    if key == "data.ttl" {
        let data = format!("{{ common_name = \"{{{{ local-hostname }}}}\", ttl = {value} }}");
        set(lines, "data", &data);
    } else {
        set(lines, key, value);
    }
    let mut text = String::new();
    for (header, lines) in sections {
        text.push_str(header);
        text.push('\n');
        for (k, v) in lines {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    text
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn set(lines: &mut Vec<(String, String)>, key: &str, value: &str) {
    match lines.iter_mut().find(|(k, _)| k == key) {
        Some(line) => line.1 = value.to_string(),
        None => lines.push(kv(key, value)),
    }
}

/// `text` as a TOML basic string: control characters as `\uXXXX`, the rest as is.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The fixed cases, as TOML literals: strings, then every other TOML type.
fn fixed_values() -> Vec<String> {
    let long = "x".repeat(70_000);
    let strings: Vec<&str> = vec![
        "",
        " ",
        "0",
        "-1",
        "1",
        "+1",
        "00",
        "-0",
        "4294967295",
        "4294967296",
        "4294967294",
        "65535",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "0s",
        "1ns",
        "-1s",
        "1s",
        "200ms",
        "5m",
        "1h",
        "1h 1ns",
        "24h",
        "24h 1ns",
        "6h",
        "21600s",
        "21601s",
        "3650d",
        "3651d",
        "36500d",
        "36501d",
        "300000000000y",
        "584942417355y",
        "18446744073709551615s",
        "18446744073709551615y",
        "99999999999999999999999999s",
        "1e3s",
        "5 m",
        "nan",
        "inf",
        "\0",
        "\n",
        "a\nb",
        "\r\n",
        "\t",
        "\u{1b}[31m",
        "\u{7f}",
        "\u{85}",
        "\u{2028}",
        "\u{202e}",
        "\u{feff}",
        "é",
        "😀",
        "\u{10ffff}",
        "\u{fffd}",
        &long,
        ".",
        "..",
        "/",
        "//",
        "/etc/x",
        "/tmp/../etc/x",
        "a/b",
        "a//b",
        "x@localhost",
        "localhost",
        "127.0.0.1",
        "::1",
        "[::1]",
        "10.0.0.1",
        "http://",
        "https://",
        "http://[::1]:0",
        "http://127.0.0.1:65536",
        "http://127.0.0.1:1",
        "http://169.254.169.254",
        "http://[fd00:ec2::254]",
        "socks5://127.0.0.1:1080",
        "http://user:pw@127.0.0.1:1",
        "https://localhost:1",
        "{{ region }}",
        "{{",
        "}}",
        "{{ nope }}",
        "0644",
        "07777",
        "0o777",
        "4755",
        "root",
        "nobody",
        "i-0123",
        "%",
        "%00",
        "?",
        "#",
        "ec2",
        "iam",
        "rsa2048",
        "pkcs7",
        "raw",
        "env",
        "json",
        "ca_chain?",
        "a?",
        "us-east-1",
        "us-east-1\n<3>forged",
    ];
    let mut values: Vec<String> = strings.into_iter().map(quoted).collect();
    let others = [
        "0",
        "1",
        "-1",
        "420",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "0x7fffffff",
        "0o777",
        "nan",
        "+inf",
        "-inf",
        "0.0",
        "-0.0",
        "1e308",
        "5e-324",
        "0.5",
        "true",
        "false",
        "[]",
        "[\"\"]",
        "[\"a\", \"b\"]",
        "[1]",
        "[[]]",
        "[\"\\u0000\"]",
        "[\"true\", \"-c\"]",
        "{}",
        "{ a = 1 }",
        "{ \"\" = \"\" }",
        "{ a = { b = nan } }",
        "1979-05-27T07:32:00Z",
        "07:32:00",
        "1979-05-27",
        "'literal \\n'",
        "\"\"\"multi\nline\"\"\"",
    ];
    values.extend(others.iter().map(|v| v.to_string()));
    values
}

/// xorshift64*: small, seeded, the same series on every machine.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A random value: a string of edge characters, a duration with a random number and unit,
    /// or a random integer or float.
    fn value(&mut self) -> String {
        const CHARS: &[char] = &[
            'a', 'Z', '0', '9', '-', '.', '/', ':', '@', '%', '?', '#', '[', ']', '{', '}', ' ',
            '\n', '\0', '\u{1b}', '\u{85}', '\u{202e}', 'é', '😀', '_', '+', '=', ',',
        ];
        const UNITS: &[&str] = &["ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", "", "x"];
        match self.below(4) {
            0 => {
                let len = self.below(40);
                let text: String = (0..len).map(|_| CHARS[self.below(CHARS.len())]).collect();
                quoted(&text)
            }
            1 => {
                let digits: String = (0..1 + self.below(25))
                    .map(|_| char::from(b'0' + self.below(10) as u8))
                    .collect();
                quoted(&format!("{digits}{}", UNITS[self.below(UNITS.len())]))
            }
            2 => (self.next() as i64 >> self.below(64)).to_string(),
            _ => format!("{:e}", f64::from_bits(self.next())).replace("NaN", "nan"),
        }
    }
}

fn seed() -> u64 {
    std::env::var("VAULTBOOT_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            t.map_or(1, |d| d.as_nanos() as u64) | 1
        })
}

/// `parse` on `text`, then the checks on this machine (as `check` and `run` load it): whether
/// they accepted it; panics (with the case) if either panicked or the error is not one clean
/// line.
fn parsed(text: &str, case: &str) -> bool {
    let result = std::panic::catch_unwind(|| {
        parse(text, Path::new("/x/config.toml")).and_then(on_this_machine)
    });
    match result {
        Err(_) => panic!("parse panicked on {case}"),
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            let shown = e.to_string();
            assert!(!shown.contains(char::is_control), "{case}: {shown:?}");
            false
        }
    }
}

/// `vaultboot check` on the file `config`: exit 0 or 78, as `accepted` says.
fn checked(config: &Path, accepted: bool, case: &str) {
    let out = vaultboot_command()
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = if accepted { 0 } else { 78 };
    assert_eq!(
        out.status.code(),
        Some(expected),
        "check on {case}: {stderr}"
    );
    if !accepted {
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{case}: {stderr}");
    }
}

/// Every value for every key (see `fixed_values`, `Random::value`); the seed is printed.
fn values() -> (Vec<String>, Random, u64) {
    let seed = seed();
    eprintln!("VAULTBOOT_PROPERTY_SEED={seed}");
    let mut random = Random(seed);
    let mut values = fixed_values();
    values.extend((0..60).map(|_| random.value()));
    (values, random, seed)
}

/// Each key with each value through `parse`; `binary` says on which cases (by index in the list)
/// `vaultboot check` runs too. The accepted values of each key.
fn accepted_values(
    env: &Env,
    values: &[String],
    seed: u64,
    binary: impl Fn(usize, &str) -> bool,
) -> BTreeMap<&'static str, Vec<String>> {
    let config = env.path("property.toml");
    let mut accepted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut refused = 0;
    for &place in KEYS {
        for (i, value) in values.iter().enumerate() {
            let case = format!("[{}] {} = {value:.200} (seed {seed})", place.0, place.1);
            let text = config_text(env, place, value);
            let ok = parsed(&text, &case);
            if binary(i, place.1) {
                std::fs::write(&config, &text).unwrap();
                checked(&config, ok, &case);
            }
            match ok {
                true => accepted.entry(place.1).or_default().push(value.clone()),
                false => refused += 1,
            }
        }
    }
    let count: usize = accepted.values().map(Vec::len).sum();
    assert!(
        count > 50 && refused > 1000,
        "{count} accepted, {refused} refused"
    );
    accepted
}

#[test]
fn no_value_in_any_key_makes_parse_or_check_panic_or_abort() {
    let env = Env::new();
    let (values, _, seed) = values();
    // The binary on every eighth case (a process each: the suite's time), the key's turn in
    // the list shifting with the key; `parse` on every one.
    accepted_values(&env, &values, seed, |i, key| (i + key.len()) % 8 == 0);
}

#[test]
fn what_check_accepts_run_handles() {
    let env = Env::new();
    let (values, mut random, seed) = values();
    let accepted = accepted_values(&env, &values, seed, |_, _| false);
    runs_handle_what_check_accepts(&env, &accepted, &mut random);
}

/// Some accepted values of each key that names no path or command, each in a real run: the
/// first and the last in order, the longest (for a number or a duration, the largest) and one
/// at random.
fn runs_handle_what_check_accepts(
    env: &Env,
    accepted: &BTreeMap<&str, Vec<String>>,
    random: &mut Random,
) {
    let config = env.path("run.toml");
    let mut runs = 0;
    let started = std::time::Instant::now();
    for &place in KEYS {
        if NOT_RUN.contains(&place.1) {
            continue;
        }
        let mut values = accepted.get(place.1).cloned().unwrap_or_default();
        values.sort();
        values.dedup();
        let mut sample: Vec<&String> = Vec::new();
        if !values.is_empty() {
            let longest = values.iter().max_by_key(|v| v.len()).unwrap();
            let picked = [0, values.len() - 1, random.below(values.len())];
            sample = picked.iter().map(|&i| &values[i]).collect();
            sample.push(longest);
            sample.sort();
            sample.dedup();
        }
        for value in sample {
            std::fs::write(&config, config_text(env, place, value)).unwrap();
            // No certificate in place: every run logs in and issues one.
            let _ = std::fs::remove_dir_all(env.path("out"));
            let out = env.run(&config);
            let case = format!("run with [{}] {} = {value:.200}", place.0, place.1);
            assert!(
                [0, 65, 69, 73, 77, 78].contains(&out.status),
                "{case}: exit {}\n{}",
                out.status,
                out.log()
            );
            assert!(!out.stderr.contains("panicked"), "{case}: {}", out.stderr);
            runs += 1;
        }
    }
    assert!(runs > 25, "only {runs} runs");
    eprintln!("{runs} runs in {:?}", started.elapsed());
}
