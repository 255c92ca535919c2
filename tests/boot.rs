//! The boot job end to end: the real binary against the IMDS and Vault simulators.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vaultboot_sim::{Control, Fault, RecordedRequest};

/// The requests a simulator saw that `keep` selects, in order.
fn seen(control: &Control, keep: impl Fn(&RecordedRequest) -> bool) -> Vec<RecordedRequest> {
    control.requests().into_iter().filter(|r| keep(r)).collect()
}

fn stored_nonce(env: &Env) -> String {
    let text = fs::read_to_string(env.state_dir().join("nonce.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["instance_id"], INSTANCE);
    v["nonce"].as_str().unwrap().to_string()
}

#[test]
fn first_boot_writes_every_file_right() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());

    // The nonce must be on disk before the login that uses it reaches Vault.
    let seen_at_login: Arc<Mutex<Vec<bool>>> = Arc::default();
    let state = env.state_dir().join("nonce.json");
    let seen = seen_at_login.clone();
    env.vault.set_login_hook(Box::new(move |body| {
        let on_disk = fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["nonce"] == body["nonce"])
            .unwrap_or(false);
        seen.lock().unwrap().push(on_disk);
    }));

    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(*seen_at_login.lock().unwrap(), vec![true]);

    // Nonce: ours, bound in Vault, private on disk.
    let nonce = stored_nonce(&env);
    assert!(nonce.len() >= 43);
    assert_eq!(
        env.vault.client_nonce("aws", INSTANCE).as_deref(),
        Some(nonce.as_str())
    );
    assert_eq!(fs::metadata(env.state_dir()).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        fs::metadata(env.state_dir().join("nonce.json"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );

    // Files: content, modes, owners.
    let crt = env.path("out/tls/server.crt");
    let key = env.path("out/tls/server.key");
    assert_eq!(fs::metadata(&crt).unwrap().mode() & 0o777, 0o644);
    assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    let crt_pem = fs::read_to_string(&crt).unwrap();
    assert_eq!(
        crt_pem.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + ca_chain"
    );
    assert!(fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
    tls_check::serves(
        &crt_pem,
        &fs::read_to_string(&key).unwrap(),
        &env.vault.pki_ca_pem(),
        "ip-10-0-1-23.ec2.internal",
    );

    let env_file = env.path("out/run/ad-join.env");
    assert_eq!(fs::metadata(&env_file).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        fs::read_to_string(env.path("out/run/ad-join.password")).unwrap(),
        AD_PASSWORD
    );
    // The env file reads back exactly in a real shell.
    let sh = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}' && printf '%s|%s' \"$username\" \"$password\"",
            env_file.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(sh.stdout).unwrap(),
        format!("svc-join|{AD_PASSWORD}")
    );

    let json_path = env.path(&format!("out/app/{INSTANCE}.json"));
    assert_eq!(fs::metadata(&json_path).unwrap().mode() & 0o777, 0o640);
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"api_key": env.api_key}));
    for f in [&crt, &key, &env_file, &json_path] {
        let m = fs::metadata(f).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (nix_ids().0, nix_ids().1),
            "{}",
            f.display()
        );
    }
    assert_eq!(
        env.out_files().len(),
        5,
        "no staged file left: {:?}",
        env.out_files()
    );
    // New directories are private.
    assert_eq!(
        fs::metadata(env.path("out/run")).unwrap().mode() & 0o777,
        0o700
    );

    // Token revoked; one summary line; steps logged to syslog too.
    assert_eq!(env.vault.live_tokens(), 0);
    assert_eq!(env.vault.revoked_tokens(), 1);
    assert!(
        out.stderr
            .contains("done: 3 secret(s), 5 file(s) written, 0 unchanged, token revoked"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nonce generated"), "{}", out.stderr);
    assert!(
        out.syslog
            .iter()
            .any(|l| l.contains("vaultboot") && l.contains("logged in")),
        "{:?}",
        out.syslog
    );
    assert!(
        out.syslog.iter().all(|l| l.starts_with("<3")),
        "facility daemon: {:?}",
        out.syslog
    );

    // IMDSv2 only; Vault requests all carry X-Vault-Request; the signed document was sent
    // without newlines.
    for r in env.imds.control().requests() {
        if r.method == "GET" {
            assert!(
                r.header("x-aws-ec2-metadata-token").is_some(),
                "IMDSv1 read: {}",
                r.path
            );
        } else {
            assert_eq!(r.path, "/latest/api/token");
            assert_eq!(r.header("x-aws-ec2-metadata-token-ttl-seconds"), Some("60"));
        }
    }
    let vault_requests = env.vault.control().requests();
    assert!(vault_requests
        .iter()
        .all(|r| r.header("x-vault-request") == Some("true")));
    let login = vault_requests
        .iter()
        .find(|r| r.path == "/v1/auth/aws/login")
        .unwrap();
    let body = login.json().unwrap();
    assert_eq!(body["role"], "web");
    assert!(!body["pkcs7"].as_str().unwrap().contains('\n'));
    assert_eq!(
        body["pkcs7"].as_str().unwrap(),
        env.imds
            .signed_document(vaultboot_sim::SignatureKind::Rsa2048)
            .replace('\n', "")
    );
}

fn nix_ids() -> (u32, u32) {
    let m = fs::metadata("/proc/self").unwrap();
    (m.uid(), m.gid())
}

#[test]
fn second_boot_reuses_the_nonce_and_leaves_unchanged_files_alone() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    assert_eq!(env.run(&cfg).status, 0);
    let nonce = stored_nonce(&env);
    let env_file = env.path("out/run/ad-join.env");
    let before = fs::metadata(&env_file).unwrap();
    std::thread::sleep(Duration::from_millis(20));

    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(stored_nonce(&env), nonce);
    assert_eq!(env.vault.logins(), 2);
    assert_eq!(env.vault.nonce_mismatches(), 0);
    assert!(out.stderr.contains("nonce reused"), "{}", out.stderr);
    let after = fs::metadata(&env_file).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    // KV values are the same; the PKI certificate in place is still valid: not issued again.
    assert!(out.stderr.contains("unchanged"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("0 file(s) written, 3 unchanged, 2 skipped"),
        "{}",
        out.stderr
    );
    let issues = seen(env.vault.control(), |r| {
        r.path.contains("pki_int/issue/web")
    })
    .len();
    assert_eq!(issues, 1, "one certificate over two boots");
}

#[test]
fn state_baked_on_another_instance_is_not_used() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    // An image baked after a run on the build instance.
    env.imds
        .set_identity(vaultboot_sim::Identity::sample("i-0bbbbbbbbbbbbbbbb"));
    assert_eq!(env.run(&cfg).status, 0);
    let baked = fs::read_to_string(env.state_dir().join("nonce.json")).unwrap();

    env.imds
        .set_identity(vaultboot_sim::Identity::sample(INSTANCE));
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.stderr
            .contains("belonged to instance i-0bbbbbbbbbbbbbbbb"),
        "{}",
        out.stderr
    );
    let nonce = stored_nonce(&env);
    assert!(!baked.contains(&nonce));
    assert_eq!(
        env.vault.client_nonce("aws", INSTANCE).as_deref(),
        Some(nonce.as_str())
    );
}

#[test]
fn nonce_mismatch_is_fatal_and_tells_the_operator_what_to_run() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    assert_eq!(env.run(&cfg).status, 0);
    let files_before: Vec<_> = env
        .out_files()
        .iter()
        .map(|f| (f.clone(), fs::read(env.path("out").join(f)).unwrap()))
        .collect();
    // The state is lost (a rebuilt root volume): a new nonce no longer matches Vault's.
    fs::remove_file(env.state_dir().join("nonce.json")).unwrap();

    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "vault delete auth/aws/identity-accesslist/{INSTANCE}"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(env.vault.nonce_mismatches(), 1);
    for (f, content) in files_before {
        assert_eq!(
            fs::read(env.path("out").join(&f)).unwrap(),
            content,
            "{f} changed"
        );
    }
    // The nonce it generated stays: never silently replaced again.
    let kept = stored_nonce(&env);
    assert_eq!(env.run(&cfg).status, 77);
    assert_eq!(stored_nonce(&env), kept);

    // Once the operator deletes the access-list entry, the stored nonce binds again.
    assert!(env.vault.delete_access_list_entry("aws", INSTANCE));
    assert_eq!(env.run(&cfg).status, 0);
    assert_eq!(env.vault.client_nonce("aws", INSTANCE), Some(kept));
}

#[test]
fn vault_503_twice_then_fine() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    env.vault.control().inject(
        Some("POST"),
        "/v1/auth/aws/login",
        Fault::Status {
            code: 503,
            retry_after: None,
            body: r#"{"errors":["Vault is sealed"]}"#.into(),
        },
        2,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let logins = seen(env.vault.control(), |r| r.path == "/v1/auth/aws/login").len();
    assert_eq!(logins, 3);
}

#[test]
fn status_429_honours_retry_after() {
    let env = Env::new();
    let cfg = env.write(&env.config().set("retry", "max_delay", "5s"));
    env.vault.control().inject(
        Some("GET"),
        "/v1/secret/data/app/api",
        Fault::Status {
            code: 429,
            retry_after: Some("2".into()),
            body: r#"{"errors":["rate limit quota exceeded"]}"#.into(),
        },
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let reads = seen(env.vault.control(), |r| r.path == "/v1/secret/data/app/api");
    assert_eq!(reads.len(), 2);
    let gap = reads[1].at.duration_since(reads[0].at);
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before Retry-After"
    );
}

#[test]
fn vault_unreachable_until_the_deadline_keeps_old_files() {
    let env = Env::new();
    let good = env.write_config(&env.full_config());
    assert_eq!(env.run(&good).status, 0);
    let old = fs::read(env.path("out/run/ad-join.env")).unwrap();

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cfg = env.write(
        &env.config()
            .set("vault", "address", format!("https://localhost:{port}"))
            .set("retry", "deadline", "3s"),
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 69, "{}", out.log());
    assert!(
        out.elapsed >= Duration::from_millis(2500),
        "{:?}",
        out.elapsed
    );
    // The 3 s deadline plus a little, stretched for a slow runner.
    assert!(
        out.elapsed <= Duration::from_secs(3) + scaled(Duration::from_millis(1500)),
        "{:?}",
        out.elapsed
    );
    assert!(out.stderr.contains("unavailable"), "{}", out.stderr);
    assert_eq!(fs::read(env.path("out/run/ad-join.env")).unwrap(), old);
    assert_eq!(env.out_files().len(), 5);
}

#[test]
fn a_missing_field_names_the_secret_and_the_field() {
    let env = Env::new();
    let cfg = env.write(&env.config().file(".json", "fields", ["api_secret"]));
    let out = env.run(&cfg);
    assert_eq!(out.status, 65, "{}", out.log());
    assert!(
        out.stderr.contains("secret \"api\"") && out.stderr.contains("\"api_secret\""),
        "{}",
        out.stderr
    );
    assert!(env.out_files().is_empty(), "{:?}", env.out_files());
    assert_eq!(
        env.vault.live_tokens(),
        0,
        "the token is revoked on failure too"
    );
}

#[test]
fn forbidden_secret_writes_nothing_at_all() {
    let env = Env::with_policies(&["pki_int/issue/web", "secret/data/ad/join"]);
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains("secret \"api\"") && out.stderr.contains("403"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    assert!(env.out_files().is_empty(), "{:?}", env.out_files());
    assert_eq!(
        env.vault.live_tokens(),
        0,
        "the token is revoked on a refusal"
    );
}

#[test]
fn world_writable_parent_is_refused() {
    let env = Env::new();
    fs::create_dir_all(env.path("out/run")).unwrap();
    fs::set_permissions(env.path("out/run"), fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 73, "{}", out.log());
    assert!(out.stderr.contains("writable by others"), "{}", out.stderr);
    assert!(env.out_files().is_empty(), "{:?}", env.out_files());
    assert_eq!(
        env.vault.live_tokens(),
        0,
        "the token is revoked when staging is refused"
    );
}

#[test]
fn a_symlink_at_an_output_path_is_replaced_not_followed() {
    let env = Env::new();
    fs::create_dir_all(env.path("out/tls")).unwrap();
    fs::set_permissions(env.path("out"), fs::Permissions::from_mode(0o700)).unwrap();
    let victim = env.path("victim");
    fs::write(&victim, "do not touch").unwrap();
    std::os::unix::fs::symlink(&victim, env.path("out/tls/server.key")).unwrap();
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "do not touch");
    let meta = fs::symlink_metadata(env.path("out/tls/server.key")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[test]
fn imds_not_up_yet_is_waited_for() {
    let env = Env::new();
    let signer = env.signer.clone();
    // Long enough that the agent's first attempts find the port closed (it starts in a few
    // milliseconds), short enough not to slow the suite: the wait is the agent's own, real.
    let late = vaultboot_sim::ImdsSim::start_delayed(
        Duration::from_millis(500),
        vaultboot_sim::Identity::sample(INSTANCE),
        &signer,
    )
    .unwrap();
    let cfg = env.write(&env.config().set("imds", "endpoint", late.url()));
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.elapsed >= Duration::from_millis(450),
        "{:?}",
        out.elapsed
    );
}

#[test]
fn an_expired_imds_token_is_renewed_once() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    env.imds.control().inject(
        Some("GET"),
        "/latest/dynamic/instance-identity/rsa2048",
        Fault::Status {
            code: 401,
            retry_after: None,
            body: String::new(),
        },
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let puts = seen(env.imds.control(), |r| r.method == "PUT").len();
    assert_eq!(puts, 2);
}

#[test]
fn instance_not_found_right_after_launch_is_retried() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    env.vault.set_instance_not_found(1);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(env.vault.logins(), 1);
}

#[test]
fn a_hanging_vault_is_cut_by_the_request_timeout() {
    let env = Env::new();
    let cfg = env.write(&env.config().set("vault", "request_timeout", "1s"));
    env.vault
        .control()
        .inject(Some("GET"), "/v1/secret/data/ad/join", Fault::Hang, 1);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        out.elapsed >= Duration::from_secs(1)
            && out.elapsed < scaled(Duration::from_secs(8)).min(Duration::from_secs(15)),
        "{:?}",
        out.elapsed
    );
}

#[test]
fn tls_server_name_and_namespace_are_used() {
    let env = Env::new();
    env.vault.require_namespace(Some("team-a"));
    let cfg = env.write(
        &env.config()
            .set("vault", "namespace", "team-a")
            .set("vault", "tls_server_name", "localhost")
            .set(
                "vault",
                "address",
                format!("https://127.0.0.1:{}", env.vault.addr().port()),
            ),
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let elsewhere = seen(env.vault.control(), |r| {
        r.header("x-vault-namespace") != Some("team-a")
    });
    assert!(elsewhere.is_empty());
}

/// In a namespace, the command the operator is told to run names it: without
/// `-namespace=`, `vault delete` would look for the access-list entry in the root namespace.
#[test]
fn a_nonce_mismatch_in_a_namespace_names_it_in_the_hint() {
    let env = Env::new();
    env.vault.require_namespace(Some("team-a"));
    let cfg = env.write(&env.config().set("vault", "namespace", "team-a"));
    assert_eq!(env.run(&cfg).status, 0);
    fs::remove_file(env.state_dir().join("nonce.json")).unwrap();
    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "vault delete -namespace=team-a auth/aws/identity-accesslist/{INSTANCE}"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let env = Env::new();
    let other = vaultboot_sim::TestCa::new("someone else");
    other.write_cert_pem(&env.path("other-ca.pem")).unwrap();
    let cfg = env.write(
        &env.config()
            .set("vault", "ca_cert", &env.path("other-ca.pem")),
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 69, "{}", out.log());
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    assert!(
        out.elapsed < scaled(Duration::from_secs(5)).min(Duration::from_secs(15)),
        "not retried: {:?}",
        out.elapsed
    );
    assert_eq!(env.vault.logins(), 0);
}

#[test]
fn kv1_and_pkcs7_signature_work() {
    let env = Env::new();
    let cfg = env.write(
        &env.base()
            .set("imds", "signature", "pkcs7")
            .add_secret("legacy", "kv1/legacy")
            .add_file(env.path("out/legacy").to_str().unwrap(), &["token"]),
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(
        fs::read_to_string(env.path("out/legacy")).unwrap(),
        LEGACY_TOKEN
    );
    assert!(!seen(env.imds.control(), |r| r.path
        == "/latest/dynamic/instance-identity/pkcs7")
    .is_empty());
}

#[test]
fn on_change_runs_only_for_changed_files_without_shell_or_environment() {
    let env = Env::new();
    let marker = env.path("on_change.log");
    let script = env.path("hook.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"args=$*\"; env; }} >> '{}'\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    let hook = [script.to_str().unwrap(), "reload; rm -rf /"];
    let cfg = env.write(&env.config().file("run/ad-join.env", "on_change", hook));
    let out = common::vaultboot_command()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("VAULTBOOT_TEST_SECRET_ENV", "must-not-reach-children")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = fs::read_to_string(&marker).unwrap();
    assert!(
        log.contains("args=reload; rm -rf /"),
        "argv passed as is, no shell: {log}"
    );
    assert!(!log.contains("must-not-reach-children"), "{log}");
    assert!(!log.contains(AD_PASSWORD.lines().next().unwrap()), "{log}");
    let vars: Vec<&str> = log
        .lines()
        .filter(|l| l.contains('=') && !l.starts_with("args="))
        .collect();
    assert!(
        vars.iter().all(|v| v.starts_with("PATH=")
            || v.starts_with("PWD=")
            || v.starts_with("SHLVL=")
            || v.starts_with("_=")),
        "{vars:?}"
    );

    // Second run: the env file is unchanged, so the hook does not run again.
    let before = fs::read_to_string(&marker).unwrap();
    assert_eq!(env.run(&cfg).status, 0);
    assert_eq!(fs::read_to_string(&marker).unwrap(), before);
}

#[test]
#[ignore = "needs root: chown to another user"]
fn root_owners_and_groups_are_set() {
    assert_root();
    let env = Env::new();
    let cfg = env.write(
        &env.config()
            .file("server.key", "owner", "nobody")
            .file("server.key", "group", "65534")
            .file("server.key", "mode", "0440"),
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let m = fs::metadata(env.path("out/tls/server.key")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o440));
    // Unchanged on the next run only if owner and mode still match.
    let out = env.run(&cfg);
    assert_eq!(out.status, 0);
}

#[test]
fn an_answer_over_the_size_cap_is_refused() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    env.vault.control().inject(
        Some("GET"),
        "/v1/secret/data/app/api",
        Fault::EndlessBody,
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 65, "{}", out.log());
    assert!(
        out.stderr.contains("larger than 1048576 bytes"),
        "{}",
        out.stderr
    );
    assert!(env.out_files().is_empty());
    assert_eq!(
        env.vault.live_tokens(),
        0,
        "the token is revoked on a malformed answer"
    );
}

/// A 3xx (a standby during a cluster election) is retried against the configured address;
/// the redirect is never followed.
#[test]
fn a_redirect_is_not_followed_with_the_token() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    env.vault.control().inject(
        Some("GET"),
        "/v1/secret/data/app/api",
        Fault::Raw(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://evil.example:8200/v1/steal?x=1\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let reads = seen(env.vault.control(), |r| {
        r.path.starts_with("/v1/secret/data/app/api")
    });
    assert_eq!(reads.len(), 2, "retried at the configured address");
    assert!(seen(env.vault.control(), |r| r.path.contains("steal")).is_empty());
    assert_eq!(env.out_files().len(), 5);
}

#[test]
fn connection_resets_are_retried() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    env.vault.control().inject(
        Some("POST"),
        "/v1/pki_int/issue/web",
        Fault::ResetConnection,
        2,
    );
    env.imds
        .control()
        .inject(Some("PUT"), "/latest/api/token", Fault::ResetConnection, 1);
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(env.out_files().len(), 5);
}
