//! `vaultboot-sim serve`: IMDSv2 + Vault simulators with demo data, for demos, the VM boot test
//! and benchmarks. TEST AND DEMO ONLY.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vaultboot_sim::DemoWorld;

const USAGE: &str = "\
vaultboot-sim — IMDSv2 and Vault simulators for vaultboot (TEST AND DEMO ONLY)

usage: vaultboot-sim serve [options]

options:
  --imds ADDR            IMDS listen address (default 127.0.0.1:0)
  --vault ADDR           Vault (HTTPS) listen address (default 127.0.0.1:0)
  --dir DIR              where vault-ca.pem and pki-ca.pem are written (default .)
  --instance-id ID       simulated instance id (default i-0123456789abcdef0)
  --server-name NAME     DNS name in Vault's certificate, repeatable (default localhost)
  --server-ip IP         IP address in Vault's certificate, repeatable (default 127.0.0.1)
  --latency-imds MS      added to every IMDS answer
  --latency-vault MS     added to every Vault answer
  --role NAME            ec2 role on mount \"aws\" (default web)
  --policy PREFIX        path prefix the role's tokens may use, repeatable
                         (default pki_int/issue/web, secret/data/ad/join, secret/data/app/api, kv1/)
  --bound-ami AMI        bind the role to this AMI id (default: unbound)
  --until-stdin-eof      also exit when standard input reaches end of file
  --dump-issued FILE     keep FILE (0600) up to date with every secret value the Vault
                         simulator hands out: a JSON object {\"private_keys\": [PEM...],
                         \"ad_password\", \"api_key\", \"legacy_token\"} (the boot test scans
                         a guest's disk for them)
  -h, --help             this text

Prints \"imds http://HOST:PORT\" and \"vault https://NAME:PORT\" on stdout, one line each;
on stderr one line per ec2 login: \"login instance=<id> nonce=bound|generated|disabled|reused|mismatch|reauth-disabled\".
Exits on SIGTERM, SIGINT or (with --until-stdin-eof) end of standard input.
";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Args {
    imds: SocketAddr,
    vault: SocketAddr,
    dir: PathBuf,
    instance_id: String,
    server_names: Vec<String>,
    server_ips: Vec<IpAddr>,
    latency_imds: u64,
    latency_vault: u64,
    role: String,
    policies: Vec<String>,
    bound_ami: Option<String>,
    until_stdin_eof: bool,
    dump_issued: Option<PathBuf>,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut a = Args {
        imds: "127.0.0.1:0".parse().unwrap(),
        vault: "127.0.0.1:0".parse().unwrap(),
        dir: PathBuf::from("."),
        instance_id: "i-0123456789abcdef0".into(),
        server_names: vec![],
        server_ips: vec![],
        latency_imds: 0,
        latency_vault: 0,
        role: "web".into(),
        policies: vec![],
        bound_ami: None,
        until_stdin_eof: false,
        dump_issued: None,
    };
    let mut saw_serve = false;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if !saw_serve && v == "serve" => saw_serve = true,
            Long("imds") => a.imds = p.value()?.parse()?,
            Long("vault") => a.vault = p.value()?.parse()?,
            Long("dir") => a.dir = p.value()?.into(),
            Long("instance-id") => a.instance_id = p.value()?.string()?,
            Long("server-name") => a.server_names.push(p.value()?.string()?),
            Long("server-ip") => a.server_ips.push(p.value()?.parse()?),
            Long("latency-imds") => a.latency_imds = p.value()?.parse()?,
            Long("latency-vault") => a.latency_vault = p.value()?.parse()?,
            Long("role") => a.role = p.value()?.string()?,
            Long("policy") => a.policies.push(p.value()?.string()?),
            Long("bound-ami") => a.bound_ami = Some(p.value()?.string()?),
            Long("until-stdin-eof") => a.until_stdin_eof = true,
            Long("dump-issued") => a.dump_issued = Some(p.value()?.into()),
            _ => return Err(arg.unexpected()),
        }
    }
    if !saw_serve {
        return Err("missing command: serve".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vaultboot-sim: {e}\n\n{USAGE}");
            std::process::exit(64);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("vaultboot-sim: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> std::io::Result<()> {
    // SAFETY: installing an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let ms = Duration::from_millis;
    let mut world = DemoWorld::builder()
        .instance_id(&a.instance_id)
        .imds_bind(a.imds)
        .vault_bind(a.vault)
        .role(&a.role)
        .bound_ami(a.bound_ami.as_deref())
        .imds_latency(ms(a.latency_imds), Duration::ZERO)
        .vault_latency(ms(a.latency_vault), Duration::ZERO);
    if !a.server_names.is_empty() {
        world = world.server_names(a.server_names.clone());
    }
    if !a.server_ips.is_empty() {
        world = world.server_ips(a.server_ips.clone());
    }
    if !a.policies.is_empty() {
        world = world.policies(&a.policies);
    }
    let DemoWorld {
        imds,
        vault,
        secrets,
        ..
    } = world.build()?;
    vault.set_login_observer(Box::new(|ev| {
        eprintln!(
            "login instance={} nonce={}",
            ev.instance_id,
            ev.nonce.as_str()
        );
    }));

    std::fs::create_dir_all(&a.dir)?;
    let vault_ca = a.dir.join("vault-ca.pem");
    let pki_ca = a.dir.join("pki-ca.pem");
    vault.ca().write_cert_pem(&vault_ca)?;
    std::fs::write(&pki_ca, vault.pki_ca_pem())?;
    eprintln!(
        "vaultboot-sim: TEST AND DEMO ONLY; wrote {} and {}; ec2 role {:?} on mount \"aws\"",
        vault_ca.display(),
        pki_ca.display(),
        a.role
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "imds {}", imds.url())?;
        writeln!(out, "vault {}", vault.url())?;
        out.flush()?;
    }
    if a.until_stdin_eof {
        std::thread::spawn(|| {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            STOP.store(true, Ordering::SeqCst);
        });
    }
    // The dump follows the simulator's own record of what it handed out; polled here, so the
    // simulator's request path stays as it is.
    let mut dumped = None;
    while !STOP.load(Ordering::SeqCst) {
        if let Some(path) = &a.dump_issued {
            let issued = vault.issued_secrets();
            if dumped != Some(issued.len()) {
                write_dump(path, &secrets, &issued)?;
                dumped = Some(issued.len());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("vaultboot-sim: stopping");
    vault.shutdown();
    imds.shutdown();
    Ok(())
}

/// The values a disk scan looks for, by kind: the KV secrets the world stores and every PKI
/// private key issued so far. Written whole to a temporary file (0600: these are the
/// simulator's secrets) and renamed, so that a reader never sees half of it.
fn write_dump(
    path: &std::path::Path,
    secrets: &vaultboot_sim::DemoSecrets,
    issued: &[String],
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let keys: Vec<&str> = issued
        .iter()
        .filter(|s| s.contains("PRIVATE KEY-----"))
        .map(String::as_str)
        .collect();
    let dump = serde_json::json!({
        "private_keys": keys,
        "ad_password": secrets.ad_password,
        "api_key": secrets.api_key,
        "legacy_token": secrets.legacy_token,
    });
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    let tmp = PathBuf::from(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(dump.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
