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
    let good = env.config();
    let set = |section: &str, key: &str, value: &str| good.clone().set(section, key, value).text();
    let file =
        |path_end: &str, key: &str, value: &str| good.clone().file(path_end, key, value).text();
    let out = |rel: &str| format!("{}/{rel}", env.path("out").display());
    let tls_data = r#"{ common_name = "{{ local-hostname }}", ip_sans = "{{ public-ipv4 }}" }"#;
    let cases: Vec<(String, Vec<&str>)> = vec![
        (set("auth", "rol", "x"), vec!["[auth]", "rol"]),
        (
            good.clone().unset("auth", "role").text(),
            vec!["[auth]", "role"],
        ),
        (
            set("auth", "method", "kerberos"),
            vec!["method", "kerberos"],
        ),
        (
            set("retry", "deadline", "soon"),
            vec!["[retry]", "deadline", "soon"],
        ),
        (
            file("server.crt", "mode", "rw-r--r--"),
            vec!["\"tls\"", "server.crt", "mode"],
        ),
        (
            good.clone().secret("tls", "data", Raw(tls_data)).text(),
            vec!["\"tls\"", "public-ipv4"],
        ),
        (
            good.clone().secret("api", "name", "tls").text(),
            vec!["\"tls\"", "same name"],
        ),
        (
            file("ad-join.password", "path", &out("run/ad-join.env")),
            vec!["ad-join.env", "same path"],
        ),
        (
            set("vault", "address", &format!("http://{}", env.vault.addr())),
            vec!["[vault]", "insecure_http"],
        ),
        (file(".json", "format", "xml"), vec!["\"api\"", "format"]),
        (
            format!("{good}\n[unknown]\nx = 1\n"),
            vec!["unknown key `unknown`"],
        ),
        (
            "[vault\naddress = 1".to_string(),
            vec!["config.toml", "line 1"],
        ),
        // What `check` used to accept and `run` could not handle, or handled otherwise.
        (
            set("vault", "proxy", "socks5://127.0.0.1:1080"),
            vec!["[vault]", "proxy", "SOCKS proxies are not supported"],
        ),
        (
            set("vault", "tls_server_name", "x@localhost"),
            vec![
                "[vault]",
                "tls_server_name",
                "\"x@localhost\" is not a host name",
            ],
        ),
        (
            file("server.key", "owner", "4294967295"),
            vec!["\"tls\"", "server.key", "owner", "\"no change\""],
        ),
        (
            file("server.key", "group", "4294967295"),
            vec!["\"tls\"", "server.key", "group", "\"no change\""],
        ),
        (
            set("retry", "deadline", "300000000000y"),
            vec!["[retry]", "deadline", "longer than 24h"],
        ),
        (
            set("vault", "request_timeout", "18446744073709551615s"),
            vec!["[vault]", "request_timeout", "longer than 1h"],
        ),
        (
            set("imds", "endpoint", "http://192.0.2.1"),
            vec!["[imds]", "endpoint", "\"http://192.0.2.1\" is not IMDS"],
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
    assert!(
        env.imds.control().requests().is_empty(),
        "no run reached IMDS"
    );
    let missing = env.run_args(&["check", "--config", "/nonexistent/vaultboot.toml"]);
    assert_eq!(missing.status, 78);
    assert!(missing.stderr.contains("/nonexistent/vaultboot.toml"));
}

/// `insecure_http = true` is for test servers: every run (and `check`) says so, on stderr and
/// syslog alike, so that an image built with it does not go unnoticed.
#[test]
fn insecure_http_is_warned_on_every_run() {
    let env = Env::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cfg = env.write(
        &env.config()
            .set("vault", "address", format!("http://127.0.0.1:{port}"))
            .set("vault", "insecure_http", true)
            .set("retry", "deadline", "1s"),
    );
    let says = "warning: ";
    let what = "[vault] insecure_http = true: the Vault token, the login and every secret travel in clear text";
    for _ in 0..2 {
        let out = env.run(&cfg);
        assert_eq!(out.status, 69, "{}", out.log());
        let line = out.stderr.lines().find(|l| l.contains(what));
        assert!(
            line.is_some_and(|l| l.starts_with(&format!("vaultboot: {says}"))),
            "{}",
            out.stderr
        );
        assert!(
            out.syslog.iter().any(|m| m.contains(what)),
            "{:?}",
            out.syslog
        );
    }
    let out = env.run_args(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains(what), "{}", out.stderr);
}

/// `check` warns (exit 0 all the same) about each output whose existing directory others can
/// search, and about no other: a 0700 or 0710 directory, or one that does not exist yet (run
/// creates it 0700), is quiet.
#[test]
fn check_warns_about_an_output_directory_others_can_search() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    let cfg = cfg.to_str().unwrap();
    let run_dir = env.path("out/run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let quiet = |mode: u32| {
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = env.run_args(&["check", "--config", cfg]);
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert!(out.stdout.contains("is valid"), "{}", out.stdout);
        out.stderr
    };
    for mode in [0o700, 0o710, 0o750] {
        let stderr = quiet(mode);
        assert!(!stderr.contains("warning"), "{mode:o}: {stderr}");
    }
    let stderr = quiet(0o751);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    for (line, name) in warnings.iter().zip(["ad-join.env", "ad-join.password"]) {
        assert!(line.starts_with("vaultboot: warning: "), "{line}");
        for needle in [
            "\"ad-join\"",
            name,
            &format!("{} (mode 0751)", run_dir.display()),
            "searched by others",
        ] {
            assert!(line.contains(needle), "{line:?} should name {needle:?}");
        }
    }
    // tls/ and app/ do not exist: run would create them 0700, nothing to warn about.
    assert!(!env.path("out/tls").exists() && !env.path("out/app").exists());
}

/// `check --print-outputs` prints every output path and nothing else on stdout, however the
/// TOML spells it (basic or literal strings, inline tables), a templated part as a shell glob;
/// a path that cannot be printed as a glob is a configuration error naming it.
#[test]
fn check_prints_every_output_path() {
    let env = Env::new();
    let out_dir = env.path("out");
    let extra = format!(
        r#"
[[secret]]
name = "literal"
path = "secret/data/app/api"
file = [
  {{ path = '{o}/lit/"quoted".env', fields = ["api_key"] }},
  {{ path = "{o}/inline/{{{{ availability-zone }}}}.key", fields = ["api_key"] }},
]
"#,
        o = out_dir.display()
    );
    let cfg = env.write_config(&format!("{}{extra}", env.full_config()));
    let out = env.run_args(&[
        "check",
        "--print-outputs",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let o = out_dir.display();
    let expected = [
        format!("{o}/tls/server.crt"),
        format!("{o}/tls/server.key"),
        format!("{o}/run/ad-join.env"),
        format!("{o}/run/ad-join.password"),
        format!("{o}/app/i-*.json"),
        format!("{o}/lit/\"quoted\".env"),
        format!("{o}/inline/[a-z][a-z]-*-[0-9]*[a-z].key"),
    ];
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected);

    let bad = format!("{}/run/ad-join[1].env", out_dir.display());
    let cfg = env.write(&env.config().file("run/ad-join.env", "path", bad));
    let out = env.run_args(&[
        "check",
        "--print-outputs",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status, 78, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    for needle in ["\"ad-join\"", "ad-join[1].env", "shell glob"] {
        assert!(
            out.stderr.contains(needle),
            "{:?} should name {needle}",
            out.stderr
        );
    }
}
