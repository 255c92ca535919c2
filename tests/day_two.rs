//! Day two: certificates renewed before expiry rather than on every run, refreshes that leave
//! boot-only secrets alone, the status file and textfile for monitoring, and `vaultboot plan`.

mod common;

use common::*;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vaultboot_sim::{Fault, Leaf, LeafKey};

/// The demo configuration reduced to its PKI secret.
fn pki_only(env: &Env) -> Config {
    env.config().only(&["tls"])
}

fn vault_requests(env: &Env) -> Vec<String> {
    env.vault
        .control()
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn inode_and_mtime(path: &Path) -> (u64, i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn a_valid_certificate_is_left_alone_without_a_single_vault_request() {
    let env = Env::new();
    let marker = env.path("reloaded");
    let hook = format!("echo x >> {}", marker.display());
    let text = pki_only(&env).file("server.crt", "on_change", ["/bin/sh", "-c", hook.as_str()]);
    let cfg = env.write(&text);
    assert_eq!(env.run(&cfg).status, 0);
    let crt = env.path("out/tls/server.crt");
    let before = inode_and_mtime(&crt);
    assert_eq!(fs::read_to_string(&marker).unwrap().lines().count(), 1);

    env.vault.control().clear_requests();
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert_eq!(
        vault_requests(&env),
        Vec::<String>::new(),
        "not even a login"
    );
    assert!(
        out.stderr
            .contains("secret \"tls\" skipped: certificate valid until")
            && out
                .stderr
                .contains("done: nothing to fetch (2 file(s) skipped), no Vault request"),
        "{}",
        out.stderr
    );
    assert_eq!(
        inode_and_mtime(&crt),
        before,
        "the certificate was not touched"
    );
    assert_eq!(
        fs::read_to_string(&marker).unwrap().lines().count(),
        1,
        "no reload"
    );

    // The configuration asks for other names: issued again, and its on_change runs.
    let data = r#"{ common_name = "{{ local-hostname }}", ip_sans = "{{ local-ipv4 }}", ttl = "72h", alt_names = "www.example.com" }"#;
    let renamed = text.secret("tls", "data", Raw(data));
    let out = env.run(&env.write(&renamed));
    assert_eq!(out.status, 0, "{}", out.log());
    assert_ne!(inode_and_mtime(&crt), before);
    assert_eq!(fs::read_to_string(&marker).unwrap().lines().count(), 2);

    // renew_before longer than what is left (a 72h certificate): issued again.
    env.vault.control().clear_requests();
    let soon = renamed.secret("tls", "renew_before", "73h");
    let out = env.run(&env.write(&soon));
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(
        vault_requests(&env)
            .iter()
            .any(|r| r == "POST /v1/pki_int/issue/web"),
        "{}",
        out.stderr
    );
}

const ISSUE: &str = "POST /v1/pki_int/issue/web";

fn refresh(env: &Env, cfg: &Path) -> Outcome {
    let out = env.run_args(&["run", "--refresh", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.log());
    out
}

/// The output's owner (nginx's user, say, which must read the key) replaces the certificate
/// and the key with a pair of its own for the same names, valid until 2100. It is not the
/// certificate Vault issued: the next refresh issues a new one and says why, in the log and
/// in the status; Vault's new certificate is then kept as usual.
#[test]
fn a_certificate_vault_did_not_issue_is_renewed_and_the_reason_said() {
    let env = Env::new();
    let cfg = env.write(&pki_only(&env));
    assert_eq!(env.run(&cfg).status, 0);
    let (crt, key) = (
        env.path("out/tls/server.crt"),
        env.path("out/tls/server.key"),
    );
    let id = env.imds.identity();
    let ip: IpAddr = id.local_ipv4.parse().unwrap();
    let forged = Leaf {
        common_name: &id.local_hostname,
        dns_names: &[&id.local_hostname],
        ips: &[ip],
        not_before: SystemTime::now() - Duration::from_secs(3600),
        not_after: UNIX_EPOCH + Duration::from_secs(4_129_401_600), // 2100-11-09
    }
    .self_signed();
    // Written in place: the files keep their owner and mode.
    fs::write(&crt, &forged.cert_pem).unwrap();
    fs::write(&key, &forged.key_pem).unwrap();

    env.vault.control().clear_requests();
    let out = refresh(&env, &cfg);
    assert!(
        vault_requests(&env).contains(&ISSUE.to_string()),
        "{}",
        out.stderr
    );
    let why = format!(
        "the certificate in {} was not issued by pki_int/issue/web",
        crt.display()
    );
    assert!(
        out.stderr
            .contains(&format!("secret \"tls\" needs a new certificate: {why}")),
        "{}",
        out.stderr
    );
    assert_ne!(fs::read_to_string(&crt).unwrap(), forged.cert_pem);
    let s = status(&env);
    for output in s["outputs"].as_array().unwrap() {
        assert_eq!(output["state"], "written", "{s}");
        assert!(
            output["reason"].as_str().unwrap_or("").contains(&why),
            "{s}"
        );
    }
    let not_after = s["certificates"][0]["not_after"].as_u64().unwrap();
    assert!(not_after < forged.not_after - 365 * 86_400, "{s}");

    // Vault's certificate is recognised: kept, without a request.
    env.vault.control().clear_requests();
    let out = refresh(&env, &cfg);
    assert!(vault_requests(&env).is_empty(), "{}", out.stderr);
    assert!(out
        .stderr
        .contains("secret \"tls\" skipped: certificate valid until"));
}

/// `renew_before` shorter than the time left: kept until then (a 72 h certificate, 24 h).
#[test]
fn renew_before_shorter_than_the_time_left_keeps_the_certificate() {
    let env = Env::new();
    let cfg = env.write(&pki_only(&env).secret("tls", "renew_before", "24h"));
    assert_eq!(env.run(&cfg).status, 0);
    env.vault.control().clear_requests();
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(vault_requests(&env).is_empty(), "{}", out.stderr);
    // "renewed from" is 24 h before the end, not the default 48 h after the start.
    let not_after = status(&env)["certificates"][0]["not_after"]
        .as_u64()
        .unwrap();
    let renew_from =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(not_after - 24 * 3600));
    assert!(
        out.stderr.contains(&format!("renewed from {renew_from}")),
        "{}",
        out.stderr
    );
}

/// A PKI role with `key_type = "rsa"`: the RSA key (PKCS#1, as Vault returns it) and its
/// certificate are kept while valid, and another RSA key beside the certificate renews it.
#[test]
fn rsa_certificates_are_kept_and_renewed_like_ec_ones() {
    let env = Env::new();
    env.vault.set_pki_rsa(true);
    let cfg = env.write(&pki_only(&env));
    assert_eq!(env.run(&cfg).status, 0);
    let key = env.path("out/tls/server.key");
    let written = fs::read_to_string(&key).unwrap();
    assert!(written.starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    env.vault.control().clear_requests();
    let out = refresh(&env, &cfg);
    assert!(vault_requests(&env).is_empty(), "{}", out.stderr);

    // The other RSA test key beside the certificate.
    let ca = vaultboot_sim::TestCa::new("other");
    let leaf = Leaf {
        common_name: "x",
        dns_names: &[],
        ips: &[],
        not_before: SystemTime::now(),
        not_after: SystemTime::now() + Duration::from_secs(3600),
    };
    let other = [LeafKey::Rsa(0), LeafKey::Rsa(1)]
        .map(|k| ca.issue_leaf(&leaf, k, true).key_pem)
        .into_iter()
        .find(|k| k.trim_end() != written.trim_end())
        .unwrap();
    fs::write(&key, other).unwrap();
    env.vault.control().clear_requests();
    let out = refresh(&env, &cfg);
    assert!(
        vault_requests(&env).contains(&ISSUE.to_string()),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "the key in {} is not the certificate's",
            key.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_changed_key_or_a_lost_file_gets_a_new_certificate() {
    let env = Env::new();
    let cfg = env.write(&pki_only(&env));
    assert_eq!(env.run(&cfg).status, 0);
    let key = env.path("out/tls/server.key");
    // Someone put another key beside the certificate (same owner and mode).
    let other = vaultboot_sim::TestCa::new("other")
        .issue_server_cert(&["x"], &[])
        .1;
    fs::write(&key, other).unwrap();
    env.vault.control().clear_requests();
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    assert!(vault_requests(&env).contains(&"POST /v1/pki_int/issue/web".to_string()));
    // The certificate is gone.
    fs::remove_file(env.path("out/tls/server.crt")).unwrap();
    env.vault.control().clear_requests();
    assert_eq!(env.run(&cfg).status, 0);
    assert!(vault_requests(&env).contains(&"POST /v1/pki_int/issue/web".to_string()));
}

#[test]
fn a_refresh_leaves_boot_only_secrets_alone() {
    let env = Env::new();
    let cfg = env.write(&env.config().secret("ad-join", "boot_only", true));
    assert_eq!(env.run(&cfg).status, 0);
    let ad = env.path("out/run/ad-join.env");
    let before = inode_and_mtime(&ad);

    env.vault.control().clear_requests();
    let out = env.run_args(&["run", "--refresh", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.log());
    let requests = vault_requests(&env);
    assert!(
        !requests.iter().any(|r| r.contains("ad/join")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("app/api")),
        "{requests:?}"
    );
    assert!(
        out.stderr.contains("start (refresh):")
            && out
                .stderr
                .contains("secret \"ad-join\" skipped: boot-only, and this is a refresh"),
        "{}",
        out.stderr
    );
    assert_eq!(inode_and_mtime(&ad), before);

    // The boot run still reads it.
    env.vault.control().clear_requests();
    assert_eq!(env.run(&cfg).status, 0);
    assert!(vault_requests(&env).iter().any(|r| r.contains("ad/join")));
}

#[test]
fn renew_before_is_refused_where_there_is_no_certificate_to_renew() {
    let env = Env::new();
    let cfg = env.write(&env.config().secret("ad-join", "renew_before", "24h"));
    let out = env.run_args(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status, 78, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("[[secret]] \"ad-join\": renew_before: only a PKI issue"),
        "{}",
        out.stderr
    );
}

fn status(env: &Env) -> serde_json::Value {
    let path = env.path("status/status.json");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn every_run_leaves_a_status_and_a_textfile_for_monitoring() {
    let env = Env::new();
    let textfile = env.path("textfile/vaultboot.prom");
    let cfg = env.write(&env.config().set("status", "textfile", &textfile));
    assert_eq!(env.run(&cfg).status, 0);
    let s = status(&env);
    assert_eq!(s["outcome"], "success");
    assert_eq!(s["exit_status"], 0);
    assert_eq!(s["mode"], "boot");
    let outputs = s["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 5);
    assert!(outputs.iter().all(|o| o["state"] == "written"), "{s}");
    let certs = s["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{s}");
    let crt = env.path("out/tls/server.crt");
    assert_eq!(certs[0]["path"], crt.display().to_string());
    let not_after = certs[0]["not_after"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 71 * 3600..=now + 73 * 3600).contains(&not_after),
        "{s}"
    );
    let succeeded = s["last_success_at"].as_u64().unwrap();

    // The textfile, read by a Prometheus exposition-format parser.
    let prom = fs::read_to_string(&textfile).unwrap();
    assert_eq!(fs::metadata(&textfile).unwrap().mode() & 0o7777, 0o644);
    let lines = prom.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                ref other => panic!("{name} is not a gauge: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no {name} in\n{prom}"))
    };
    assert_eq!(value("vaultboot_last_exit_status"), 0.0);
    assert_eq!(
        value("vaultboot_last_success_timestamp_seconds"),
        succeeded as f64
    );
    assert!(value("vaultboot_last_run_timestamp_seconds") >= succeeded as f64);
    let cert_sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "vaultboot_certificate_not_after_timestamp_seconds")
        .expect("a certificate sample");
    assert_eq!(
        cert_sample.labels.get("path"),
        Some(crt.display().to_string().as_str())
    );
    assert!(
        matches!(cert_sample.value, prometheus_parse::Value::Gauge(v) if v == not_after as f64)
    );

    // A failed run: its status says so, and keeps the last success and the certificate.
    env.vault.control().inject(
        Some("POST"),
        "/v1/auth/aws/login",
        Fault::status(403, "permission denied"),
        1,
    );
    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    let s = status(&env);
    assert_eq!(s["outcome"], "failure");
    assert_eq!(s["exit_status"], 77);
    assert_eq!(s["last_success_at"].as_u64(), Some(succeeded));
    assert!(
        s["error"].as_str().unwrap().contains("permission denied"),
        "{s}"
    );
    assert_eq!(s["certificates"][0]["not_after"].as_u64(), Some(not_after));
    let prom = fs::read_to_string(&textfile).unwrap();
    assert!(prom.contains("vaultboot_last_exit_status 77"), "{prom}");
    // Nothing secret in either file.
    let both = format!(
        "{}\n{prom}",
        fs::read_to_string(env.path("status/status.json")).unwrap()
    );
    assert!(env.find_leaks(&both).is_empty(), "{both}");
}

#[test]
fn plan_says_what_run_would_do_and_writes_nothing() {
    let env = Env::new();
    let cfg = env.write(
        &env.config()
            .file(".json", "on_change", ["/bin/true", "api"]),
    );
    assert_eq!(env.run(&cfg).status, 0);
    env.vault.put_kv2(
        "secret",
        "app/api",
        serde_json::json!({"api_key": "key-rotated-0123456789abcdef"}),
    );
    let out_before = env.snapshot();
    let status_before = fs::read(env.path("status/status.json")).unwrap();

    let out = env.run_args(&["plan", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.log());
    let json = format!("{}/app/{INSTANCE}.json", env.path("out").display());
    for want in [
        format!("replace   {json} (secret \"api\")"),
        format!(
            "unchanged {}/run/ad-join.env (secret \"ad-join\")",
            env.path("out").display()
        ),
        format!(
            "skip      {}/tls/server.crt (secret \"tls\": certificate valid until",
            env.path("out").display()
        ),
        format!("on_change [\"/bin/true\", \"api\"] would run (for {json})"),
        "plan: 0 to create, 1 to replace, 2 unchanged, 2 skipped; 1 on_change command(s); token revoked; nothing was written".to_string(),
    ] {
        assert!(out.stdout.contains(&want), "no {want:?} in\n{}", out.stdout);
    }
    assert!(env.find_leaks(&out.stdout).is_empty(), "{}", out.stdout);
    assert_eq!(env.snapshot(), out_before, "plan wrote an output");
    assert_eq!(
        fs::read(env.path("status/status.json")).unwrap(),
        status_before
    );
    assert!(!env.state_dir().join("pending_on_change.json").exists());
    assert_eq!(env.vault.live_tokens(), 0, "the token was revoked");
}

/// Holds `<state>/run.lock` as another vaultboot run would.
fn hold_run_lock(env: &Env) -> nix::fcntl::Flock<fs::File> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(env.state_dir()).unwrap();
    fs::set_permissions(env.state_dir(), fs::Permissions::from_mode(0o700)).unwrap();
    let file = fs::File::create(env.state_dir().join("run.lock")).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap()
}

const WAITING: &str = "waiting for another vaultboot run to finish";

/// What `log` holds once it says `line` or the run ended (bounded only against a hang).
fn wait_for_log(log: &Path, line: &str, child: &mut std::process::Child) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        let ended = child.try_wait().unwrap().is_some();
        if text.contains(line) || ended || start.elapsed() > Duration::from_secs(120) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn one_run_at_a_time_on_a_state_directory() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    // Another run holds the lock: this one says it waits and asks Vault nothing until the
    // lock is let go (the test lets go once it has seen the wait, however slow the machine).
    let held = hold_run_lock(&env);
    let log = env.path("waiting.log");
    let mut child = env.spawn(&cfg, &log);
    let said = wait_for_log(&log, WAITING, &mut child);
    assert!(said.contains(WAITING), "{said}");
    assert!(
        vault_requests(&env).is_empty(),
        "went on while the lock was held"
    );
    drop(held);
    let out = env.finish(child, &log);
    assert_eq!(out.status, 0, "{}", out.log());

    // Held until the deadline: 69, nothing changed, no Vault request.
    let _held = hold_run_lock(&env);
    env.vault.control().clear_requests();
    let short = env.config().set("retry", "deadline", "1s");
    let out = env.run(&env.write(&short));
    assert_eq!(out.status, 69, "{}", out.log());
    assert!(
        out.stderr.contains(&format!(
            "another vaultboot run held {} until the deadline",
            env.state_dir().join("run.lock").display()
        )),
        "{}",
        out.stderr
    );
    assert!(vault_requests(&env).is_empty());
}

/// The lock proven by concurrency: on a first boot (empty state directory) the boot run and a
/// refresh start at the same moment, and Vault holds the first login until the other run is
/// seen waiting for the lock or logging in too. Without the lock each would create a nonce and
/// Vault binds only one (a mismatch, 77), or one removes the other's staged nonce (73), or
/// their logins overlap. With it: both 0, one nonce bound, logins one after the other.
#[test]
fn a_boot_run_and_a_refresh_started_together_on_a_first_boot_take_turns() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    for round in 0..8 {
        let env = Env::new();
        let cfg = env.write_config(&env.full_config());
        let (boot_log, refresh_log) = (env.path("boot.log"), env.path("refresh.log"));
        let logins: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
        let (seen, entered) = (logins.clone(), Arc::new(AtomicUsize::new(0)));
        let logs = [boot_log.clone(), refresh_log.clone()];
        env.vault.set_login_hook(Box::new(move |_| {
            let start = Instant::now();
            let first = entered.fetch_add(1, Ordering::SeqCst) == 0;
            let other_waits = || {
                logs.iter()
                    .any(|l| fs::read_to_string(l).unwrap_or_default().contains(WAITING))
            };
            // Bounded only against a hang: the other run starts however slow the machine.
            while first
                && entered.load(Ordering::SeqCst) < 2
                && !other_waits()
                && start.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            seen.lock().unwrap().push((start, Instant::now()));
        }));
        let mut boot = env.spawn_args(&["run"], &cfg, &boot_log);
        let mut refresh = env.spawn_args(&["run", "--refresh"], &cfg, &refresh_log);
        let boot_status = boot.wait().unwrap().code();
        let refresh_status = refresh.wait().unwrap().code();
        let said = format!(
            "round {round}\nboot:\n{}\nrefresh:\n{}",
            fs::read_to_string(&boot_log).unwrap(),
            fs::read_to_string(&refresh_log).unwrap()
        );
        assert_eq!((boot_status, refresh_status), (Some(0), Some(0)), "{said}");
        assert_eq!(env.vault.nonce_mismatches(), 0, "{said}");
        let stored: serde_json::Value =
            serde_json::from_slice(&fs::read(env.state_dir().join("nonce.json")).unwrap()).unwrap();
        assert_eq!(
            env.vault.client_nonce("aws", INSTANCE).as_deref(),
            stored["nonce"].as_str(),
            "the one nonce Vault bound is the one on disk: {said}"
        );
        let mut spans = logins.lock().unwrap().clone();
        spans.sort();
        assert!(!spans.is_empty(), "{said}");
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "logins overlapped: {said}");
        }
        assert_eq!(env.vault.live_tokens(), 0, "{said}");
    }
}
