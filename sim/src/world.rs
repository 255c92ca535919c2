//! The demo world: both simulators seeded with what the demo, the benchmark, `vaultboot-sim
//! serve` and the integration tests use, built in one place so that they all see the same roles,
//! policies, secrets and PKI.
//!
//! ```no_run
//! let world = vaultboot_sim::DemoWorld::builder().build().unwrap();
//! println!("IMDS at {}, Vault at {}", world.imds.url(), world.vault.url());
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::identity::{Identity, Signer};
use crate::imds::ImdsSim;
use crate::util;
use crate::vault::{VaultOptions, VaultSim};

/// The demo instance's id (default of [`DemoWorldBuilder::instance_id`]).
pub const DEMO_INSTANCE: &str = "i-0123456789abcdef0";

/// The path prefixes the ec2 role's tokens may use by default: the PKI role, both KV v2 secrets
/// and the KV v1 mount.
pub const DEMO_POLICIES: [&str; 4] = [
    "pki_int/issue/web",
    "secret/data/ad/join",
    "secret/data/app/api",
    "kv1/",
];

/// The values the demo world's secrets hold (random unless the builder was given them).
#[derive(Clone, Debug)]
pub struct DemoSecrets {
    /// KV v2 `secret/ad/join` field `username` (always `svc-join`).
    pub ad_username: String,
    /// KV v2 `secret/ad/join` field `password`.
    pub ad_password: String,
    /// KV v2 `secret/app/api` field `api_key`.
    pub api_key: String,
    /// KV v1 `kv1/legacy` field `token`.
    pub legacy_token: String,
}

/// Both simulators, seeded: an ec2 role on mount `aws` (default `web`, bound to the instance's
/// AMI) with [`DEMO_POLICIES`]; KV v2 `secret/ad/join` {username, password} and
/// `secret/app/api` {api_key}; KV v1 `kv1/legacy` {token}; PKI mount `pki_int` with role `web`.
pub struct DemoWorld {
    /// Signs IMDS's identity documents; Vault verifies with it.
    pub signer: Signer,
    /// The instance IMDS describes.
    pub identity: Identity,
    pub imds: ImdsSim,
    pub vault: VaultSim,
    pub secrets: DemoSecrets,
}

impl DemoWorld {
    /// A builder with the defaults: see its methods.
    pub fn builder() -> DemoWorldBuilder {
        DemoWorldBuilder::default()
    }

    /// Writes Vault's TLS CA (what the agent must trust) to `dir/vault-ca.pem` and returns that
    /// path.
    pub fn write_vault_ca(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = dir.join("vault-ca.pem");
        std::fs::write(&path, self.vault.ca_pem())?;
        Ok(path)
    }
}

/// What a caller may change about the demo world; every option has a default.
pub struct DemoWorldBuilder {
    instance_id: String,
    imds_bind: SocketAddr,
    vault_bind: SocketAddr,
    server_names: Option<Vec<String>>,
    server_ips: Option<Vec<IpAddr>>,
    role: String,
    policies: Vec<String>,
    /// `None`: bound to the identity's AMI; `Some(None)`: unbound.
    bound_ami: Option<Option<String>>,
    ad_password: Option<String>,
    api_key: Option<String>,
    legacy_token: Option<String>,
    imds_latency: (Duration, Duration),
    vault_latency: (Duration, Duration),
}

impl Default for DemoWorldBuilder {
    fn default() -> Self {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        DemoWorldBuilder {
            instance_id: DEMO_INSTANCE.into(),
            imds_bind: loopback,
            vault_bind: loopback,
            server_names: None,
            server_ips: None,
            role: "web".into(),
            policies: DEMO_POLICIES.iter().map(|p| p.to_string()).collect(),
            bound_ami: None,
            ad_password: None,
            api_key: None,
            legacy_token: None,
            imds_latency: (Duration::ZERO, Duration::ZERO),
            vault_latency: (Duration::ZERO, Duration::ZERO),
        }
    }
}

impl DemoWorldBuilder {
    /// The simulated instance id (default [`DEMO_INSTANCE`]).
    pub fn instance_id(mut self, id: &str) -> Self {
        self.instance_id = id.into();
        self
    }

    /// IMDS's listen address (default 127.0.0.1:0).
    pub fn imds_bind(mut self, addr: SocketAddr) -> Self {
        self.imds_bind = addr;
        self
    }

    /// Vault's listen address (default 127.0.0.1:0).
    pub fn vault_bind(mut self, addr: SocketAddr) -> Self {
        self.vault_bind = addr;
        self
    }

    /// DNS names in Vault's certificate (default [`VaultOptions::new`]'s, `localhost`).
    pub fn server_names(mut self, names: Vec<String>) -> Self {
        self.server_names = Some(names);
        self
    }

    /// IP addresses in Vault's certificate (default [`VaultOptions::new`]'s, 127.0.0.1).
    pub fn server_ips(mut self, ips: Vec<IpAddr>) -> Self {
        self.server_ips = Some(ips);
        self
    }

    /// The ec2 role's name on mount `aws` (default `web`).
    pub fn role(mut self, name: &str) -> Self {
        self.role = name.into();
        self
    }

    /// The path prefixes the role's tokens may use (default [`DEMO_POLICIES`]).
    pub fn policies<S: AsRef<str>>(mut self, prefixes: &[S]) -> Self {
        self.policies = prefixes.iter().map(|p| p.as_ref().to_string()).collect();
        self
    }

    /// The AMI the role is bound to; `None` leaves it unbound (default: the instance's AMI).
    pub fn bound_ami(mut self, ami: Option<&str>) -> Self {
        self.bound_ami = Some(ami.map(str::to_string));
        self
    }

    /// `secret/ad/join`'s password (default: random, with spaces, quotes, `$` and a backslash).
    pub fn ad_password(mut self, password: &str) -> Self {
        self.ad_password = Some(password.into());
        self
    }

    /// `secret/app/api`'s api_key (default: random, `key-` and 32 hex digits).
    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// `kv1/legacy`'s token (default: random, 32 hex digits).
    pub fn legacy_token(mut self, token: &str) -> Self {
        self.legacy_token = Some(token.into());
        self
    }

    /// Added to every IMDS answer, and to every new IMDS connection (default none).
    pub fn imds_latency(mut self, per_request: Duration, per_connection: Duration) -> Self {
        self.imds_latency = (per_request, per_connection);
        self
    }

    /// Added to every Vault answer, and to every new Vault connection (default none).
    pub fn vault_latency(mut self, per_request: Duration, per_connection: Duration) -> Self {
        self.vault_latency = (per_request, per_connection);
        self
    }

    /// Starts both simulators and seeds them.
    pub fn build(self) -> io::Result<DemoWorld> {
        let signer = Signer::new();
        let identity = Identity::sample(&self.instance_id);
        let imds = ImdsSim::start_on(self.imds_bind, identity.clone(), &signer)?;
        let mut opts = VaultOptions::new(&signer);
        opts.bind = self.vault_bind;
        if let Some(names) = self.server_names {
            opts.server_names = names;
        }
        if let Some(ips) = self.server_ips {
            opts.server_ips = ips;
        }
        let vault = VaultSim::start(opts)?;

        let bound_ami = self
            .bound_ami
            .unwrap_or_else(|| Some(identity.image_id.clone()));
        let policies: Vec<&str> = self.policies.iter().map(String::as_str).collect();
        vault.add_ec2_role("aws", &self.role, bound_ami.as_deref(), &policies);
        let secrets = DemoSecrets {
            ad_username: "svc-join".into(),
            ad_password: self.ad_password.unwrap_or_else(random_password),
            api_key: self
                .api_key
                .unwrap_or_else(|| format!("key-{}", util::hex(&util::random_bytes(16)))),
            legacy_token: self
                .legacy_token
                .unwrap_or_else(|| util::hex(&util::random_bytes(16))),
        };
        vault.put_kv2(
            "secret",
            "ad/join",
            json!({ "username": secrets.ad_username, "password": secrets.ad_password }),
        );
        vault.put_kv2("secret", "app/api", json!({ "api_key": secrets.api_key }));
        vault.put_kv1("kv1/legacy", json!({ "token": secrets.legacy_token }));
        vault.enable_pki("pki_int", "web");

        imds.control()
            .set_latency(self.imds_latency.0, self.imds_latency.1);
        vault
            .control()
            .set_latency(self.vault_latency.0, self.vault_latency.1);
        Ok(DemoWorld {
            signer,
            identity,
            imds,
            vault,
            secrets,
        })
    }
}

/// Random, with what breaks naive quoting: spaces, both quotes, `$`, a backslash.
fn random_password() -> String {
    let r: String = util::random_bytes(12)
        .iter()
        .map(|x| (b'a' + x % 26) as char)
        .collect();
    format!("{} p\"a'ss $HOME \\ {}", &r[..6], &r[6..])
}
