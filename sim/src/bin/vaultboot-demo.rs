//! `vaultboot-demo AGENT`: the whole boot job on this machine, without AWS. TEST AND DEMO ONLY.
//!
//! Starts the IMDSv2 and Vault simulators on loopback (Vault over real TLS), writes a
//! configuration, runs the real agent twice (first boot, then a reboot) and shows where every
//! file went, with its mode and owner, and what Vault saw.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vaultboot_sim::DemoWorld;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let agent = match args.next() {
        Some(a) => PathBuf::from(a),
        None => {
            eprintln!("usage: vaultboot-demo PATH-TO-vaultboot [WORK-DIR]");
            std::process::exit(64);
        }
    };
    let work = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/demo"));
    if let Err(e) = demo(&agent, &work) {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn demo(agent: &Path, work: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    fs::set_permissions(work, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let work = fs::canonicalize(work).map_err(|e| e.to_string())?;
    let root = work.join("root");

    let world = DemoWorld::builder().build().map_err(|e| e.to_string())?;
    let ca = world.write_vault_ca(&work).map_err(|e| e.to_string())?;
    let DemoWorld {
        imds,
        vault,
        identity,
        ..
    } = world;

    // Outside the demo these are root-owned; a non-root user gets files of their own.
    let me = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    let owner = if me == 0 {
        String::new()
    } else {
        format!(
            "  owner = \"{me}\"\n  group = \"{}\"\n",
            fs::metadata("/proc/self").map(|m| m.gid()).unwrap_or(0)
        )
    };
    let config = format!(
        r#"# Written by vaultboot-demo: simulators on loopback, outputs under {root}
[vault]
address = "{vault_url}"
ca_cert = "{ca}"

[auth]
method = "ec2"
role = "web"

[imds]
endpoint = "{imds_url}"

[state]
dir = "{root}/var/lib/vaultboot"

[status]
file = "{root}/run/vaultboot-status/status.json"

[retry]
deadline = "30s"

[[secret]]
name = "tls"
path = "pki_int/issue/web"
data = {{ common_name = "{{{{ local-hostname }}}}", ip_sans = "{{{{ local-ipv4 }}}}", ttl = "72h" }}

  [[secret.file]]
  path = "{root}/etc/nginx/tls/server.crt"
  fields = ["certificate", "ca_chain?"]
  mode = "0644"
{owner}
  [[secret.file]]
  path = "{root}/etc/nginx/tls/server.key"
  fields = ["private_key"]
{owner}
[[secret]]
name = "ad-join"
path = "secret/data/ad/join"

  [[secret.file]]
  path = "{root}/run/vaultboot/ad-join.env"
  format = "env"
  fields = ["username", "password"]
{owner}
[[secret]]
name = "api"
path = "secret/data/app/api"

  [[secret.file]]
  path = "{root}/etc/app/{{{{ instance-id }}}}.json"
  format = "json"
  fields = ["api_key"]
{owner}"#,
        root = root.display(),
        vault_url = vault.url(),
        ca = ca.display(),
        imds_url = imds.url(),
    );
    let config_path = work.join("config.toml");
    fs::write(&config_path, &config).map_err(|e| e.to_string())?;

    println!(
        "== vaultboot demo: IMDS at {}, Vault at {} (TLS, CA {})",
        imds.url(),
        vault.url(),
        ca.display()
    );
    println!("== configuration: {}\n", config_path.display());
    run_agent(agent, &config_path, "first boot")?;
    show_files(&root)?;
    run_agent(
        agent,
        &config_path,
        "reboot (nonce reused, unchanged files left alone)",
    )?;

    println!("\n== what Vault saw");
    println!(
        "   logins: {}, nonce mismatches: {}",
        vault.logins(),
        vault.nonce_mismatches()
    );
    println!(
        "   client nonce bound to {}: {}",
        identity.instance_id,
        if vault.client_nonce("aws", &identity.instance_id).is_some() {
            "yes (its value is only in nonce.json)"
        } else {
            "no"
        }
    );
    println!(
        "   tokens still valid: {} (each run revoked its own)",
        vault.live_tokens()
    );
    println!(
        "\nEverything is under {}; run again to start over.",
        work.display()
    );
    Ok(())
}

fn run_agent(agent: &Path, config: &Path, title: &str) -> Result<(), String> {
    println!(
        "== {title}: {} run --config {}",
        agent.display(),
        config.display()
    );
    let start = Instant::now();
    let status = Command::new(agent)
        .args(["run", "--config"])
        .arg(config)
        .env("VAULTBOOT_SYSLOG_SOCKET", "/nonexistent")
        .status()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (build it: cargo build --release)",
                agent.display()
            )
        })?;
    println!(
        "   exit status {} in {:.0?}\n",
        status.code().unwrap_or(-1),
        start.elapsed()
    );
    if !status.success() {
        return Err(format!("{title}: vaultboot exited with {status}"));
    }
    Ok(())
}

fn show_files(root: &Path) -> Result<(), String> {
    println!("== files written (path, mode, owner:group, bytes)");
    let mut found = Vec::new();
    walk(root, &mut found);
    found.sort();
    for path in found {
        let m = fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
        println!(
            "   {:<60} {:04o} {}:{} {:>5}",
            path.display(),
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.len()
        );
    }
    println!();
    Ok(())
}

fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, into);
        } else {
            into.push(p);
        }
    }
}
