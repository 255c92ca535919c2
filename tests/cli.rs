//! The command line, `check`, and configuration errors, through the real binary.

mod common;

use common::*;

#[test]
fn help_version_and_usage_errors() {
    let env = Env::new();
    let out = env.run_args(&["--help"]);
    assert_eq!(out.status, 0);
    assert!(out.stdout.contains("usage: vaultboot") && out.stdout.contains("check"));
    let out = env.run_args(&["--version"]);
    assert_eq!(out.status, 0);
    assert_eq!(
        out.stdout.trim(),
        format!("vaultboot {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [&[][..], &["fly"], &["run", "--nope"], &["run", "--config"]] {
        let out = env.run_args(args);
        assert_eq!(out.status, 64, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("usage:"));
    }
}

#[test]
fn check_validates_offline() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    let out = env.run_args(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("3 secret(s), 5 file(s)"),
        "{}",
        out.stdout
    );
    assert!(env.imds.control().requests().is_empty());
    assert!(env.vault.control().requests().is_empty());
    assert!(!env.state_dir().exists(), "check must not create state");
}

#[test]
fn every_bad_configuration_exits_78_and_names_the_place() {
    let env = Env::new();
    let good = env.full_config();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            good.replace("role = \"web\"", "role = \"web\"\nrol = \"x\""),
            vec!["[auth]", "rol"],
        ),
        (good.replace("role = \"web\"", ""), vec!["[auth]", "role"]),
        (
            good.replace("[auth]\n", "[auth]\nmethod = \"kerberos\"\n"),
            vec!["method", "kerberos"],
        ),
        (
            good.replace("deadline = \"20s\"", "deadline = \"soon\""),
            vec!["[retry]", "deadline", "soon"],
        ),
        (
            good.replace("mode = \"0644\"", "mode = \"rw-r--r--\""),
            vec!["\"tls\"", "server.crt", "mode"],
        ),
        (
            good.replace("{{ local-ipv4 }}", "{{ public-ipv4 }}"),
            vec!["\"tls\"", "public-ipv4"],
        ),
        (
            good.replace("name = \"api\"", "name = \"tls\""),
            vec!["\"tls\"", "same name"],
        ),
        (
            good.replace("ad-join.password", "ad-join.env"),
            vec!["ad-join.env", "same path"],
        ),
        (
            good.replace("https://", "http://"),
            vec!["[vault]", "insecure_http"],
        ),
        (
            good.replace("format = \"json\"", "format = \"xml\""),
            vec!["\"api\"", "format"],
        ),
        (
            format!("{good}\n[unknown]\nx = 1\n"),
            vec!["unknown key `unknown`"],
        ),
        (
            "[vault\naddress = 1".to_string(),
            vec!["config.toml", "line 1"],
        ),
    ];
    for (text, needles) in cases {
        let cfg = env.write_config(&text);
        for cmd in ["check", "run"] {
            let out = env.run_args(&[cmd, "--config", cfg.to_str().unwrap()]);
            assert_eq!(
                out.status, 78,
                "{cmd} should refuse {needles:?}: {}",
                out.stderr
            );
            for n in &needles {
                assert!(
                    out.stderr.contains(n),
                    "{cmd}: {:?} should name {n:?}",
                    out.stderr
                );
            }
        }
    }
    assert!(
        env.vault.control().requests().is_empty(),
        "no run reached Vault"
    );
    let missing = env.run_args(&["check", "--config", "/nonexistent/vaultboot.toml"]);
    assert_eq!(missing.status, 78);
    assert!(missing.stderr.contains("/nonexistent/vaultboot.toml"));
}
