//! Secrets stay secret: the scanner that every run of the suite goes through really finds
//! leaks, hostile answers cannot make vaultboot print what it holds, core dumps are off while
//! it holds secrets, and on_change children inherit nothing secret.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};
use vaultboot_sim::{Fault, Gate};

fn stored_nonce(env: &Env) -> String {
    let text = fs::read_to_string(env.state_dir().join("nonce.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["nonce"].as_str().unwrap().to_string()
}

/// A nonce file for this instance with a nonce the test knows.
fn plant_nonce(env: &Env, nonce: &str) {
    fs::create_dir_all(env.state_dir()).unwrap();
    fs::set_permissions(env.state_dir(), fs::Permissions::from_mode(0o700)).unwrap();
    let p = env.state_dir().join("nonce.json");
    fs::write(
        &p,
        serde_json::json!({"version": 1, "instance_id": INSTANCE, "nonce": nonce, "created": 1})
            .to_string(),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    register_secret(nonce);
}

fn random_nonce(tag: &str) -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).unwrap();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!("{tag}{}", &n[tag.len()..])
}

#[test]
fn the_scanner_catches_every_kind_of_secret_in_every_form() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    let out = env.run(&cfg);
    assert_eq!(out.status, 0, "{}", out.log());
    let clean = out.log();
    assert!(env.find_leaks(&clean).is_empty());

    // Every kind of secret is known to the scanner.
    let known = env.known_secrets();
    let token = known
        .iter()
        .find(|s| s.starts_with("hvs."))
        .expect("the Vault token")
        .clone();
    let imds_token = env
        .imds
        .control()
        .requests()
        .iter()
        .find_map(|r| r.header("x-aws-ec2-metadata-token").map(str::to_string))
        .unwrap();
    assert!(known.contains(&imds_token), "the IMDS session token");
    let nonce = stored_nonce(&env);
    assert!(known.contains(&nonce), "the nonce");
    let key = known
        .iter()
        .find(|s| s.contains("PRIVATE KEY"))
        .expect("the PKI private key")
        .clone();
    assert!(known.contains(&env.api_key));
    assert!(known.contains(&AD_PASSWORD.to_string()));

    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [
        &token,
        &imds_token,
        &nonce,
        &key,
        &env.api_key,
        &AD_PASSWORD.to_string(),
    ] {
        let forms = leak_forms(secret);
        assert!(forms.len() >= 8, "{} forms", forms.len());
        for (form, needle) in forms.iter() {
            let planted = format!("{clean}\nvaultboot: error: something {needle} happened\n");
            assert!(
                !env.find_leaks(&planted).is_empty(),
                "a leak {form} was not found"
            );
        }
        // Inside a longer encoded message, at every alignment.
        for prefix in ["", "a", "ab", "abc"] {
            let message = format!("{prefix}token={secret};");
            for encoded in [
                b64(message.as_bytes()),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message.as_bytes()),
                message
                    .bytes()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            ] {
                let planted = format!("{clean}\ndebug: {encoded}\n");
                assert!(
                    !env.find_leaks(&planted).is_empty(),
                    "an encoded leak with prefix {prefix:?} was not found"
                );
            }
        }
    }
    // One line of a multi-line secret (a PEM key) is enough.
    let line = key.lines().nth(1).unwrap();
    assert!(!env.find_leaks(&format!("x {line} y")).is_empty());

    // The harness's own check (run by Env::run on every run of the suite) fails on a leak.
    let planted = Outcome {
        status: 0,
        stderr: format!("vaultboot: logged in with {token}"),
        stdout: String::new(),
        syslog: vec![],
        elapsed: Duration::ZERO,
    };
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.assert_no_secrets(&planted)
    }));
    assert!(caught.is_err(), "assert_no_secrets let a token through");
    let planted = Outcome {
        stderr: String::new(),
        syslog: vec![format!("<30>vaultboot: nonce {}", b64(nonce.as_bytes()))],
        ..planted
    };
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.assert_no_secrets(&planted)
    }));
    assert!(
        caught.is_err(),
        "assert_no_secrets let a base64 nonce in syslog through"
    );
}

#[test]
fn a_vault_error_that_echoes_the_nonce_is_not_repeated() {
    let env = Env::new();
    let nonce = random_nonce("echoed");
    plant_nonce(&env, &nonce);
    let cfg = env.write_config(&env.full_config());
    env.vault.control().inject(
        Some("POST"),
        "/v1/auth/aws/login",
        Fault::status(400, &format!("invalid nonce {nonce} for role web")),
        1,
    );
    // Env::run scans the output for the nonce in every form.
    let out = env.run(&cfg);
    assert_eq!(out.status, 77, "{}", out.log());
    assert!(out.stderr.contains("[redacted]"), "{}", out.stderr);
    assert!(out.stderr.contains("for role web"), "{}", out.stderr);
}

#[test]
fn a_vault_error_or_redirect_that_echoes_the_token_is_not_repeated() {
    for redirect in [false, true] {
        let env = Env::new();
        // A redirect is retried until the deadline (then 69, its target named): keep it short.
        let cfg = env.write(&env.config().set("retry", "deadline", "2s"));
        // The login's answer (the token issued) held until a fault that quotes it is planted.
        let gate = Gate::new();
        env.vault.control().inject(
            Some("POST"),
            "/v1/auth/aws/login",
            Fault::HoldAnswer(gate.clone()),
            1,
        );
        let log = env.path("run.log");
        let child = env.spawn(&cfg, &log);
        assert!(gate.wait_held(Duration::from_secs(60)), "no login");
        let token = env
            .vault
            .issued_secrets()
            .into_iter()
            .find(|s| s.starts_with("hvs."))
            .unwrap();
        let fault = if redirect {
            Fault::Raw(
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: https://{token}.evil.example/\r\nContent-Length: 0\r\n\r\n"
                )
                .into_bytes(),
            )
        } else {
            Fault::status(403, &format!("permission denied for token {token}"))
        };
        let times = if redirect { 10_000 } else { 1 };
        env.vault
            .control()
            .inject(Some("GET"), "/v1/secret/data/app/api", fault, times);
        gate.release();
        let out = env.finish(child, &log);
        assert_eq!(out.status, if redirect { 69 } else { 77 }, "{}", out.stderr);
        assert!(out.stderr.contains("redacted"), "{}", out.stderr);
    }
}

/// An on_change command, looked at from outside while it runs: its argv is the configured one,
/// its environment is PATH alone, and it holds stdin, stdout and stderr only (no socket to
/// Vault, no staged file, no syslog socket, nothing inherited).
#[test]
fn nothing_secret_reaches_on_change_children() {
    let env = Env::new();
    let marker = format!("3.{}", std::process::id());
    let hook = ["sleep", marker.as_str()];
    let cfg = env.write(&env.config().file("server.key", "on_change", hook));
    let log = env.path("run.log");
    // A descriptor the agent inherits (as from a careless parent): not for its children.
    let inherited = nix::fcntl::open(
        &env.path("inherited"),
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let agent = env.spawn(&cfg, &log);
    nix::unistd::close(inherited).unwrap();
    let find_child = || -> Option<u32> {
        fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (cmdline == format!("sleep\0{marker}\0").as_bytes()).then_some(pid)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let child = loop {
        if let Some(pid) = find_child() {
            break pid;
        }
        assert!(Instant::now() < deadline, "the on_change command never ran");
        std::thread::sleep(Duration::from_millis(5));
    };
    let environ = fs::read(format!("/proc/{child}/environ")).unwrap();
    let child_fds = || -> Vec<(String, String)> {
        let mut fds: Vec<(String, String)> = fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .flatten()
            .map(|e| {
                let target = fs::read_link(e.path()).unwrap_or_default();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    target.display().to_string(),
                )
            })
            .collect();
        fds.sort();
        fds
    };
    // Right after exec the child's own dynamic loader briefly holds a shared library open
    // (seen: fd 3 = libc.so.6); that descriptor is the child's, not one vaultboot passed on.
    let loading = |fds: &[(String, String)]| fds.iter().any(|(_, t)| t.contains(".so"));
    let mut fds = child_fds();
    let settle = Instant::now() + Duration::from_secs(5);
    while loading(&fds) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(5));
        fds = child_fds();
    }
    let out = env.finish(agent, &log);
    assert_eq!(out.status, 0, "{}", out.stderr);

    assert_eq!(
        String::from_utf8_lossy(&environ),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\0"
    );
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0", "1", "2"], "{fds:?}");
    assert_eq!(fds[0].1, "/dev/null");
    assert_eq!(fds[1].1, "/dev/null");
    let text = format!("{}\n{fds:?}", String::from_utf8_lossy(&environ));
    let leaks = env.find_leaks(&text);
    assert!(leaks.is_empty(), "{leaks:?}");
}

fn limits_core(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn wait_gone(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Core dumps are off while vaultboot holds a token and secrets: RLIMIT_CORE 0 even when the
/// parent allowed them, and the dumpable flag cleared. The flag has no line in /proc; it shows
/// in two documented effects (proc(5)): a non-dumpable process's /proc/<pid> files belong to
/// root, and a process of the same unprivileged uid may not read its /proc/<pid>/environ. Both
/// are checked on a run as uid 65534, next to a control process of that uid.
#[test]
#[ignore = "needs root: runs the agent as another user"]
fn root_core_dumps_are_off_while_secrets_are_held() {
    assert_root();
    let env = Env::new();
    // A place uid 65534 can use: config, CA, state.
    let home = tempfile::Builder::new()
        .prefix("vaultboot-nobody")
        .tempdir_in("/tmp")
        .unwrap();
    let h = home.path();
    std::os::unix::fs::chown(h, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(h, fs::Permissions::from_mode(0o700)).unwrap();
    let ca = h.join("ca.pem");
    fs::write(&ca, env.vault.ca_pem()).unwrap();
    let config = env
        .config_writing_to(&h.join("out"))
        .set("vault", "ca_cert", &ca)
        .set("state", "dir", &h.join("state"))
        .set("vault", "request_timeout", "20s");
    let cfg = h.join("config.toml");
    fs::write(&cfg, config.text()).unwrap();
    for p in [&ca, &cfg] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    // The login is held: the agent sits there with the nonce (and the signed document) in
    // memory. (Held, not counted: the warm-up's health checks may reach Vault before it.)
    let login = Gate::new();
    env.vault.control().inject(
        Some("POST"),
        "/v1/auth/aws/login",
        Fault::Hold(login.clone()),
        1,
    );
    let bin: Vec<String> = vaultboot_argv()
        .iter()
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect();
    let bin = bin.join(" ");
    let agent = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "ulimit -c unlimited 2>/dev/null || ulimit -c 1000000; exec {bin} run --config '{}'",
            cfg.display()
        ))
        .env("VAULTBOOT_SYSLOG_SOCKET", h.join("none.sock"))
        .current_dir(h)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let control = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -c unlimited 2>/dev/null || ulimit -c 1000000; exec sleep 30")
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let reached = login.wait_held(Duration::from_secs(60));
    let (apid, cpid) = (agent.id(), control.id());
    let check = || -> Result<(), String> {
        if !reached {
            return Err("the agent never reached the login".into());
        }
        // The control really had core dumps allowed: what the agent inherited.
        let control_core = limits_core(cpid);
        if control_core.starts_with('0') {
            return Err(format!("control core limit {control_core}"));
        }
        let agent_core = limits_core(apid);
        if agent_core != "0 0" {
            return Err(format!("agent's core limit is {agent_core}"));
        }
        // /proc/<pid>/status belongs to root for a non-dumpable process, to its uid otherwise.
        let owner = |pid: u32| fs::metadata(format!("/proc/{pid}/status")).unwrap().uid();
        if owner(cpid) != 65534 {
            return Err(format!("control's /proc owner is {}", owner(cpid)));
        }
        if owner(apid) != 0 {
            return Err(format!(
                "agent's /proc owner is {}: still dumpable",
                owner(apid)
            ));
        }
        // A process of the same uid may read the control's environment but not the agent's.
        let read_environ = |pid: u32| {
            std::process::Command::new("/bin/cat")
                .arg(format!("/proc/{pid}/environ"))
                .uid(65534)
                .gid(65534)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        if !read_environ(cpid) {
            return Err("uid 65534 cannot read its own control's environ".into());
        }
        if read_environ(apid) {
            return Err("uid 65534 read the agent's environ: dumpable".into());
        }
        Ok(())
    };
    let result = check();
    wait_gone(agent);
    wait_gone(control);
    login.reset();
    result.unwrap();
}

/// vaultboot's own argv and environment hold nothing secret while it runs (the token is live).
#[test]
fn the_agents_own_argv_and_environment_stay_clean() {
    let env = Env::new();
    let cfg = env.write_config(&env.full_config());
    env.vault
        .control()
        .inject(Some("GET"), "/v1/secret/data/app/api", Fault::Hang, 1);
    let log = env.path("run.log");
    let child = env.spawn(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !env
        .vault
        .control()
        .requests()
        .iter()
        .any(|r| r.path == "/v1/secret/data/app/api")
    {
        assert!(Instant::now() < deadline, "the fetch never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id();
    let mut text = String::new();
    for f in ["cmdline", "environ"] {
        text.push_str(&String::from_utf8_lossy(
            &fs::read(format!("/proc/{pid}/{f}")).unwrap(),
        ));
        text.push('\n');
    }
    let leaks = env.find_leaks(&text);
    let out = env.finish(child, &log);
    assert!(leaks.is_empty(), "{leaks:?}");
    assert_eq!(out.status, 0, "{}", out.stderr);
}
