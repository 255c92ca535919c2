//! The configuration's own tests: defaults, and what is refused with which message.

use super::*;

const GOOD: &str = r#"
[vault]
address = "https://vault.internal:8200"
[auth]
role = "web"
[[secret]]
name = "tls"
path = "pki_int/issue/web"
data = { common_name = "{{ local-hostname }}", ip_sans = "{{ local-ipv4 }}", ttl = "72h" }
  [[secret.file]]
  path = "/etc/nginx/tls/server.crt"
  fields = ["certificate", "ca_chain?"]
  mode = "0644"
  on_change = ["systemctl", "try-reload-or-restart", "nginx"]
  [[secret.file]]
  path = "/etc/nginx/tls/server.key"
  fields = ["private_key"]
[[secret]]
name = "ad-join"
path = "secret/data/ad/join"
  [[secret.file]]
  path = "/run/vaultboot/ad-join.env"
  format = "env"
  fields = ["username", "password"]
"#;

/// Parsed, then checked on this machine, as `load` does.
fn parse_str(text: &str) -> Result<Config, Error> {
    checks::on_this_machine(parse(text, Path::new("test.toml"))?)
}

#[test]
fn defaults_are_the_contracts() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.auth.method, AuthMethod::Ec2);
    assert_eq!(c.auth.mount, "aws");
    assert!(c.auth.revoke_token);
    assert_eq!(c.auth.sts_region, "us-east-1");
    assert_eq!(c.imds.endpoint, "http://169.254.169.254");
    assert_eq!(c.imds.token_ttl, Duration::from_secs(60));
    assert_eq!(c.imds.signature, Signature::Rsa2048);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/vaultboot"));
    assert_eq!(c.retry.deadline, Duration::from_secs(300));
    assert_eq!(c.retry.max_delay, Duration::from_secs(20));
    assert_eq!(c.vault.request_timeout, Duration::from_secs(10));
    assert_eq!(c.secrets[0].files[0].mode, 0o644);
    assert_eq!(c.secrets[0].files[1].mode, 0o600);
    assert_eq!(c.secrets[0].files[1].owner.uid, 0);
    assert!(c.secrets[0].files[0].fields[1].optional);
    assert_eq!(c.secrets[1].files[0].format, Format::Env);
    let facts: Vec<_> = c.needed_facts().into_iter().collect();
    assert_eq!(facts, vec![Fact::LocalHostname, Fact::LocalIpv4]);
}

fn refused(text: &str, needles: &[&str]) {
    let e = parse_str(text).expect_err("must be refused").to_string();
    for n in needles {
        assert!(e.contains(n), "{e:?} should contain {n:?}");
    }
}

#[test]
fn data_values_have_a_json_form() {
    let with = |v: &str| GOOD.replace("ttl = \"72h\" }", &format!("ttl = {v} }}"));
    let data = |v: &str| {
        parse_str(&with(v)).unwrap().secrets[0]
            .data
            .clone()
            .unwrap()
    };
    assert_eq!(data("1979-05-27")["ttl"], "1979-05-27");
    assert_eq!(data("1.5")["ttl"], 1.5);
    // Found by fuzzing (fuzz/regressions/config/nan-in-data.toml): serde_json turns a
    // non-finite float into null, which would have been sent to Vault in its place.
    for v in ["nan", "-inf", "+inf", "[1.0, { x = inf }]"] {
        refused(&with(v), &["\"tls\"", "data.ttl", "NaN"]);
    }
}

#[test]
fn refuses_what_the_contract_refuses() {
    refused(
        &GOOD.replace("role = \"web\"", "role = \"web\"\nrolee = 1"),
        &["[auth]", "rolee"],
    );
    refused(&GOOD.replace("role = \"web\"", ""), &["[auth]", "role"]);
    refused(
        &GOOD.replace("https://vault", "http://vault"),
        &["[vault]", "insecure_http"],
    );
    assert!(parse_str(&GOOD.replace(
        "address = \"https://vault.internal:8200\"",
        "address = \"http://vault.internal:8200\"\ninsecure_http = true"
    ))
    .is_ok());
    refused(
        &GOOD.replace("ttl = \"72h\" }", "ttl = \"72h\", x = \"{{ host }}\" }"),
        &["\"tls\"", "host"],
    );
    refused(
        &GOOD.replace("name = \"ad-join\"", "name = \"tls\""),
        &["\"tls\"", "same name"],
    );
    refused(
        &GOOD.replace("/run/vaultboot/ad-join.env", "/etc/nginx/tls/server.key"),
        &["server.key", "same path"],
    );
    refused(
        &GOOD.replace("mode = \"0644\"", "mode = \"0944\""),
        &["\"tls\"", "server.crt", "mode"],
    );
    refused(
        &GOOD.replace("mode = \"0644\"", "mode = \"4755\""),
        &["setuid"],
    );
    refused(
        &GOOD.replace("mode = \"0644\"", "mode = 644"),
        &["octal string"],
    );
    refused(
        &format!("{GOOD}\n[retry]\ndeadline = \"five minutes\"\n"),
        &["[retry]", "deadline", "five minutes"],
    );
    refused(
        &GOOD.replace("role = \"web\"", "role = \"web\"\niam_server_id = \"x\""),
        &["iam_server_id", "iam"],
    );
}

/// What `check` accepted but a run could not handle, or handled otherwise than it reads.
#[test]
fn refuses_what_a_run_could_not_handle() {
    let vault = |extra: &str| GOOD.replace("[auth]", &format!("{extra}\n[auth]"));
    refused(
        &vault("proxy = \"socks5://127.0.0.1:1080\""),
        &["[vault]", "proxy", "SOCKS"],
    );
    refused(
        &vault("proxy = \"http://proxy:3128/x\""),
        &["[vault]", "proxy", "without a path"],
    );
    let e = parse_str(&vault("proxy = \"http://u:s3cr3t@proxy:99999\"")).unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert!(parse_str(&vault("proxy = \"http://u:s3cr3t@proxy:3128\"")).is_ok());
    for v6 in [
        "http://[::1]:3128",
        "http://u:p@[fd00::10]:3128",
        "http://[fd00::10]",
    ] {
        assert!(
            parse_str(&vault(&format!("proxy = {v6:?}"))).is_ok(),
            "{v6}"
        );
    }
    // User info the client cannot decode (not UTF-8 once percent-decoded).
    refused(
        &vault("proxy = \"http://%ff:x@proxy:3128\""),
        &["[vault]", "proxy"],
    );
    for name in [
        "x@localhost",
        "localhost:8200",
        "a/b",
        "",
        "a..b",
        "-x.example",
        "1.2.3.4:1",
    ] {
        let line = format!("tls_server_name = {name:?}");
        refused(
            &vault(&line),
            &["[vault]", "tls_server_name", "not a host name"],
        );
    }
    for name in ["::1", "[fd00::10]"] {
        let line = format!("tls_server_name = {name:?}");
        refused(
            &vault(&line),
            &[
                "[vault]",
                "tls_server_name",
                "is an IPv6 address",
                "write it in address",
            ],
        );
    }
    for name in ["vault.internal", "localhost", "10.0.0.1"] {
        assert!(
            parse_str(&vault(&format!("tls_server_name = {name:?}"))).is_ok(),
            "{name}"
        );
    }
    for address in [
        "https://vault:99999",
        "https://vault:0",
        "https://vault\\u001b:8200",
        "https://vault:",
    ] {
        let text = GOOD.replace("https://vault.internal:8200", address);
        refused(&text, &["[vault]", "address", "scheme://host[:port]"]);
    }
    for (section, key, path) in [
        ("state", "dir", "/var/lib/a\\u0000b"),
        ("state", "dir", "/var/lib/../tmp"),
        ("status", "file", "/run/a\\u0000b/status.json"),
    ] {
        let text = format!("{GOOD}\n[{section}]\n{key} = \"{path}\"\n");
        refused(&text, &[&format!("[{section}]"), key, "NUL byte"]);
    }
    for key in ["owner", "group"] {
        let text = GOOD.replace("mode = \"0644\"", &format!("{key} = \"4294967295\""));
        refused(&text, &["\"tls\"", "server.crt", key, "\"no change\""]);
    }
}

#[test]
fn durations_are_capped() {
    let with = |section: &str, line: &str| format!("{GOOD}\n[{section}]\n{line}\n");
    for (section, key, max, over) in [
        ("retry", "deadline", "24h", "300000000000y"),
        ("retry", "deadline", "24h", "86401s"),
        ("retry", "max_delay", "1h", "61m"),
        ("vault", "request_timeout", "1h", "3601s"),
        ("imds", "token_ttl", "6h", "21601s"),
    ] {
        let place = format!("[{section}]");
        let vault = |line: &str| GOOD.replace("[auth]", &format!("{line}\n[auth]"));
        let text = |v: &str| match section {
            "vault" => vault(&format!("{key} = {v:?}")),
            _ => with(section, &format!("{key} = {v:?}")),
        };
        assert!(parse_str(&text(max)).is_ok(), "{key} = {max}");
        refused(&text(over), &[&place, key]);
    }
    let renew = |v: &str| {
        GOOD.replace(
            "ttl = \"72h\" }",
            &format!("ttl = \"72h\" }}\nrenew_before = {v:?}"),
        )
    };
    assert!(parse_str(&renew("36500d")).is_ok());
    refused(
        &renew("36501d"),
        &["\"tls\"", "renew_before", "longer than 36500d"],
    );
    refused(
        &with("retry", "deadline = \"300000000000y\""),
        &["deadline", "longer than 24h"],
    );
}

#[test]
fn imds_endpoint_is_imds_or_loopback() {
    let with = |endpoint: &str| format!("{GOOD}\n[imds]\nendpoint = {endpoint:?}\n");
    for ok in [
        "http://169.254.169.254",
        "http://169.254.169.254:80/",
        "http://[fd00:ec2::254]",
        "http://127.0.0.1:8080",
        "http://127.9.9.9",
        "http://[::1]:1234",
    ] {
        assert_eq!(
            parse_str(&with(ok)).unwrap().imds.endpoint,
            ok.trim_end_matches('/')
        );
    }
    for bad in [
        "http://imds.example",
        "http://localhost",
        "http://10.0.0.1",
        "http://169.254.169.253",
        "http://127.1",
        "http://[fd00:ec2::253]",
        "http://0.0.0.0",
    ] {
        refused(&with(bad), &["[imds]", "endpoint", "not IMDS"]);
    }
    for bad in [
        "http://u@169.254.169.254",
        "http://169.254.169.254:99999",
        "http://169.254.169.254/latest",
        "http://169.254.169.254?x",
    ] {
        refused(&with(bad), &["[imds]", "endpoint", "no path"]);
    }
}

#[test]
fn insecure_http_is_a_warning() {
    assert!(parse_str(GOOD).unwrap().warnings().is_empty());
    let text = GOOD.replace(
        "address = \"https://vault.internal:8200\"",
        "address = \"http://vault.internal:8200\"\ninsecure_http = true",
    );
    let warnings = parse_str(&text).unwrap().warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("insecure_http = true") && warnings[0].contains("clear text"));
}

#[test]
fn refuses_bad_files() {
    refused(
        &GOOD.replace("format = \"env\"", "format = \"yaml\""),
        &["\"ad-join\"", "format"],
    );
    refused(
        &GOOD.replace(
            "fields = [\"private_key\"]",
            "fields = [\"private_key\"]\n  owner = \"no-such-user-xyz\"",
        ),
        &["owner", "no-such-user-xyz"],
    );
    refused(
        &GOOD.replace("/etc/nginx/tls/server.key", "etc/server.key"),
        &["absolute"],
    );
    refused(
        &GOOD.replace("/etc/nginx/tls/server.key", "/etc/../server.key"),
        &[".."],
    );
    // Found by fuzzing (fuzz/regressions/config): `.` segments, which Path::components
    // skips, and a `.` that a template fact brings at run time.
    refused(
        &GOOD.replace("/etc/nginx/tls/server.key", "/etc/nginx/./server.key"),
        &["must not contain . or .."],
    );
    assert!(check_output_path("/etc/app/.").is_err());
    assert!(check_output_path("/etc/app/./x").is_err());
    assert!(check_output_path("/etc/app/.x").is_ok());
    refused(
        &GOOD.replace(
            "fields = [\"username\", \"password\"]",
            "fields = [\"user-name\"]",
        ),
        &["user-name", "environment variable"],
    );
}

#[test]
fn errors_name_the_file_on_one_clean_line() {
    refused(&format!("{GOOD}\n[extra]\n"), &["unknown key `extra`"]);
    // Found by fuzzing (fuzz/regressions/config): control characters of the file reach
    // the message (toml quotes the line; a quoted key may hold a newline).
    let e = parse_str(&format!("\"a\\nb\\u001b[31m\" = 1\n{GOOD}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown key `a\\nb\\u{1b}[31m`"), "{e}");
    let e = parse_str("[vault]\naddr\u{2} = 1\n")
        .unwrap_err()
        .to_string();
    assert!(!e.contains(char::is_control) && e.contains("\\u{2}"), "{e}");
    refused("[vault\n", &["test.toml", "line 1"]);
}

#[test]
fn iam_method_is_accepted_with_its_options() {
    let iam = |extra: &str| {
        GOOD.replace(
            "role = \"web\"",
            &format!("role = \"web\"\nmethod = \"iam\"\n{extra}"),
        )
    };
    let c = parse_str(&iam("")).unwrap();
    assert_eq!(c.auth.method, AuthMethod::Iam);
    assert_eq!(c.auth.sts_region, "us-east-1");
    assert_eq!(c.auth.iam_server_id, None);
    let c = parse_str(&iam(
        "iam_server_id = \"vault.example.com\"\nsts_region = \"eu-west-1\"",
    ))
    .unwrap();
    assert_eq!(c.auth.iam_server_id.as_deref(), Some("vault.example.com"));
    assert_eq!(c.auth.sts_region, "eu-west-1");
    assert!(parse_str(&iam("sts_region = \"us-gov-west-1\"")).is_ok());

    // ec2 keeps refusing the iam-only keys.
    refused(
        &GOOD.replace(
            "role = \"web\"",
            "role = \"web\"\nsts_region = \"eu-west-1\"",
        ),
        &["[auth]", "sts_region", "iam"],
    );
    // The server id is a header value: no line breaks (header injection), not empty.
    for bad in [
        "\"\"",
        "\"a\\r\\nX-Amz-Foo: 1\"",
        "\" padded \"",
        "\"caf\u{e9}\"",
    ] {
        refused(
            &iam(&format!("iam_server_id = {bad}")),
            &["[auth]", "iam_server_id"],
        );
    }
    for bad in [
        "\"\"",
        "\"EU-WEST-1\"",
        "\"eu-west-1/x\"",
        "\"-\"",
        "\"eu-west-\"",
    ] {
        refused(
            &iam(&format!("sts_region = {bad}")),
            &["[auth]", "sts_region"],
        );
    }
    refused(
        &GOOD.replace("role = \"web\"", "role = \"web\"\nmethod = \"aws\""),
        &["method", "\"ec2\" or \"iam\""],
    );
}

#[test]
fn sts_endpoint_is_an_sts_host_with_its_region() {
    let iam = |extra: &str| {
        GOOD.replace(
            "role = \"web\"",
            &format!("role = \"web\"\nmethod = \"iam\"\n{extra}"),
        )
    };
    let c = parse_str(&iam("")).unwrap();
    assert_eq!(c.auth.sts_endpoint, None);
    // Written with or without the slash, kept as the URL that is signed.
    for (written, region) in [
        ("https://sts-fips.us-east-1.amazonaws.com", "us-east-1"),
        ("https://sts.eu-west-1.amazonaws.com/", "eu-west-1"),
        ("https://sts.amazonaws.com/", "us-east-1"),
        (
            "https://vpce-0a1b-c2d3.sts.eu-west-1.vpce.amazonaws.com",
            "eu-west-1",
        ),
        ("https://sts.cn-north-1.amazonaws.com.cn/", "cn-north-1"),
        ("https://sts.proxy.internal/", "eu-west-1"),
    ] {
        let text = iam(&format!(
            "sts_endpoint = \"{written}\"\nsts_region = \"{region}\""
        ));
        let c = parse_str(&text).unwrap_or_else(|e| panic!("{written}: {e}"));
        let want = format!("{}/", written.trim_end_matches('/'));
        assert_eq!(c.auth.sts_endpoint.as_deref(), Some(want.as_str()));
        assert_eq!(c.auth.sts_region, region);
    }
    for bad in [
        "http://sts.amazonaws.com/",
        "sts.amazonaws.com",
        "https://STS.amazonaws.com/",
        "https://sts.amazonaws.com:443/",
        "https://a@sts.amazonaws.com/",
        "https://sts.amazonaws.com/path",
        "https://sts.amazonaws.com/?Action=AssumeRole",
        "https://sts.amazonaws.com/#f",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://sts..amazonaws.com/",
        "https:///",
    ] {
        let text = iam(&format!(
            "sts_endpoint = \"{bad}\"\nsts_region = \"us-east-1\""
        ));
        refused(&text, &["[auth]", "sts_endpoint: must be https://"]);
    }
    // The region an AWS name says it serves must be the signing region.
    refused(
        &iam("sts_endpoint = \"https://sts-fips.us-west-2.amazonaws.com\"\nsts_region = \"us-east-1\""),
        &["sts_endpoint", "serves us-west-2", "\"us-east-1\""],
    );
    refused(
        &iam("sts_endpoint = \"https://sts.amazonaws.com\""),
        &["[auth]", "sts_endpoint: needs sts_region"],
    );
    refused(
        &GOOD.replace(
            "role = \"web\"",
            "role = \"web\"\nsts_endpoint = \"https://sts.amazonaws.com\"",
        ),
        &["[auth]", "sts_endpoint", "iam"],
    );
}

#[test]
fn serde_errors_come_first_then_checks_in_order_with_their_place() {
    // An unknown key is reported before a bad value of the same table, as before serde read
    // the values through their types.
    let e = parse_str(&GOOD.replace("role = \"web\"", "role = \"\"\nmount = \"/x\"\nzzz = 1"))
        .unwrap_err();
    assert_eq!(e.place, "test.toml: [auth]");
    assert!(e.message.starts_with("unknown field `zzz`"), "{e}");
    // Then the checks in a fixed order, whatever the order of the keys.
    let e = parse_str(&GOOD.replace("role = \"web\"", "role = \"\"\nmount = \"/x\"")).unwrap_err();
    assert_eq!(e.message, "mount: \"/x\" is not a Vault mount path");
    // A file's serde error names it by position, a failed check by its path.
    let e = parse_str(&GOOD.replace("mode = \"0644\"", "mode = \"0644\"\nzzz = 1")).unwrap_err();
    assert_eq!(e.place, "test.toml: [[secret]] \"tls\" file #1");
    let e = parse_str(&GOOD.replace("mode = \"0644\"", "mode = \"9\"")).unwrap_err();
    assert_eq!(
        e.place,
        "test.toml: [[secret]] \"tls\" file \"/etc/nginx/tls/server.crt\""
    );
    assert_eq!(e.message, "mode: \"9\" is not an octal mode like \"0640\"");
    let e = parse_str(&GOOD.replace("format = \"env\"", "format = \"yaml\"")).unwrap_err();
    assert_eq!(
        e.message,
        "format: \"yaml\" is not \"raw\", \"env\" or \"json\""
    );
}

#[test]
fn parse_reads_nothing_but_the_text_and_load_checks_the_machine() {
    // An account this machine lacks and a CA file that does not exist: `parse` keeps them as
    // written (the fuzz targets drive it, and it must not depend on the machine)...
    let text = GOOD
        .replace(
            "fields = [\"private_key\"]",
            "fields = [\"private_key\"]\n  owner = \"no-such-user-xyz\"\n  group = \"7\"",
        )
        .replace("[auth]", "ca_cert = \"/nonexistent/ca.pem\"\n[auth]");
    let parsed = parse(&text, Path::new("test.toml")).unwrap();
    let names = |owner: &str, group: &str| Names {
        owner: owner.into(),
        group: group.into(),
    };
    let owners: Vec<_> = parsed.secrets[0].files.iter().map(|f| &f.owner).collect();
    assert_eq!(
        owners,
        [&names("root", "root"), &names("no-such-user-xyz", "7")]
    );
    // ...and the checks on this machine refuse them, CA first, each at its place.
    let e = checks::on_this_machine(parsed.clone()).unwrap_err();
    assert_eq!(e.place, "test.toml: [vault]");
    assert!(
        e.message.starts_with("ca_cert: /nonexistent/ca.pem: "),
        "{e}"
    );
    let mut parsed = parsed;
    parsed.vault.ca_cert = None;
    let e = checks::on_this_machine(parsed).unwrap_err();
    assert_eq!(
        e.place,
        "test.toml: [[secret]] \"tls\" file \"/etc/nginx/tls/server.key\""
    );
    assert!(
        e.message.starts_with("owner: no user \"no-such-user-xyz\""),
        "{e}"
    );
    // A number is taken as the id, with no lookup.
    let numeric = GOOD.replace("mode = \"0644\"", "owner = \"65534\"\n  group = \"7\"");
    let ids = parse_str(&numeric).unwrap().secrets[0].files[0].owner;
    assert_eq!(ids, Ids { uid: 65534, gid: 7 });
}
