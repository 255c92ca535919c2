//! The boot job, step by step: IMDS → nonce → login → secrets → files → on_change → revoke.

use crate::auth::{self, ec2, iam, Token};
use crate::config::{AuthMethod, Config};
use crate::files::{self, Outcome};
use crate::imds::{self, Imds};
use crate::log::{took, Log};
use crate::nonce::{self, Origin};
use crate::retry::Policy;
use crate::secrets;
use crate::template::{Fact, Facts};
use crate::vault::Vault;
use std::fmt;
use std::time::{Duration, Instant};

/// What kind of failure, for the exit status (mapped in main).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A malformed answer from IMDS or Vault.
    Malformed,
    /// IMDS or Vault unavailable until the deadline.
    Unavailable,
    /// A file or the state could not be written.
    CannotWrite,
    /// Vault refused.
    Refused,
    /// The configuration is wrong.
    Config,
}

/// A failed step of the boot job.
#[derive(Debug)]
pub enum Error {
    Config(crate::config::Error),
    VaultClient(String),
    Imds(imds::Error),
    Nonce(nonce::Error),
    Login(auth::Error),
    Secrets(secrets::Error),
    Files(files::Error),
}

impl Error {
    pub fn class(&self) -> Class {
        use crate::vault::Error as V;
        match self {
            Error::Config(_) | Error::VaultClient(_) => Class::Config,
            Error::Imds(e) => match e {
                imds::Error::Malformed { .. } => Class::Malformed,
                _ => Class::Unavailable,
            },
            Error::Nonce(_) | Error::Files(_) => Class::CannotWrite,
            Error::Login(e) => match e {
                auth::Error::NonceMismatch { .. } | auth::Error::Denied(_) => Class::Refused,
                auth::Error::Malformed(_) | auth::Error::Signing(_) => Class::Malformed,
                auth::Error::Unavailable(_) | auth::Error::Cancelled => Class::Unavailable,
            },
            Error::Secrets(e) => match e {
                secrets::Error::Read { source, .. } => match source {
                    V::Status { .. } => Class::Refused,
                    V::Http(h) if !h.is_malformed() => Class::Unavailable,
                    _ => Class::Malformed,
                },
                secrets::Error::Unavailable { .. } | secrets::Error::Cancelled => {
                    Class::Unavailable
                }
                secrets::Error::DuplicatePath { .. }
                | secrets::Error::BadPath { .. }
                | secrets::Error::Template { .. } => Class::Config,
                _ => Class::Malformed,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::VaultClient(e) => write!(f, "vault client: {e}"),
            Error::Imds(e) => e.fmt(f),
            Error::Nonce(e) => write!(f, "nonce state: {e}"),
            Error::Login(e) => e.fmt(f),
            Error::Secrets(e) => e.fmt(f),
            Error::Files(e) => write!(f, "writing files: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// What a successful run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub secrets: usize,
    pub written: usize,
    pub unchanged: usize,
    pub on_change_failed: usize,
    pub revoked: bool,
    pub took: Duration,
}

/// Runs the whole boot job.
pub fn run(config: &Config, log: &Log) -> Result<Summary, Error> {
    let start = Instant::now();
    let policy = Policy::new(start + config.retry.deadline, config.retry.max_delay);
    log.info(&format!(
        "start: vault {}, {} login as role {:?} on auth/{}, {} secret(s), deadline {}",
        config.vault.address,
        method_name(config.auth.method),
        config.auth.role,
        config.auth.mount,
        config.secrets.len(),
        humantime::format_duration(config.retry.deadline)
    ));
    let vault = Vault::new(&config.vault).map_err(Error::VaultClient)?;
    let imds = Imds::new(&config.imds, &policy);

    // Off EC2 (iam with credentials from the environment) IMDS is needed only for templates.
    let env_credentials = match config.auth.method {
        AuthMethod::Iam => iam::Credentials::from_env(),
        AuthMethod::Ec2 => None,
    };
    let needs_imds = env_credentials.is_none() || !config.needed_facts().is_empty();
    let step = Instant::now();
    let (identity, facts) = if needs_imds {
        let identity = imds.fetch_identity().map_err(Error::Imds)?;
        let facts = gather_facts(config, &imds, &identity)?;
        log.info(&format!(
            "instance {} in {} (account {}, image {}) ({})",
            identity.instance_id,
            identity.region,
            identity.account_id,
            identity.image_id,
            took(step.elapsed())
        ));
        (Some(identity), facts)
    } else {
        log.info("not on EC2: iam credentials from the environment, no templates, IMDS not used");
        (None, Facts::default())
    };

    let token = match (config.auth.method, &identity) {
        (AuthMethod::Ec2, Some(identity)) => {
            login_ec2(config, log, &vault, &imds, &policy, identity)?
        }
        _ => login_iam(config, log, &vault, &imds, &policy, env_credentials)?,
    };

    let result = after_login(config, log, &vault, &token, &facts, &policy);

    let revoked = if config.auth.revoke_token {
        let step = Instant::now();
        // A fresh budget: a failed run still gives its token back.
        let revoke_policy = Policy::new(
            Instant::now() + Duration::from_secs(5).max(policy.remaining()),
            config.retry.max_delay,
        );
        match auth::revoke(&vault, &token, &revoke_policy) {
            Ok(()) => {
                log.info(&format!("token revoked ({})", took(step.elapsed())));
                true
            }
            Err(e) => {
                log.warn(&format!(
                    "token not revoked: {e}; it expires by itself in {}",
                    humantime::format_duration(token.ttl)
                ));
                false
            }
        }
    } else {
        log.info("token kept (auth.revoke_token = false)");
        false
    };

    let mut summary = result?;
    summary.revoked = revoked;
    summary.took = start.elapsed();
    Ok(summary)
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::Ec2 => "ec2",
        AuthMethod::Iam => "iam",
    }
}

fn gather_facts(config: &Config, imds: &Imds<'_>, id: &imds::Identity) -> Result<Facts, Error> {
    let mut facts = Facts::default();
    facts.set(Fact::InstanceId, id.instance_id.clone());
    facts.set(Fact::Region, id.region.clone());
    facts.set(Fact::AccountId, id.account_id.clone());
    facts.set(Fact::AvailabilityZone, id.availability_zone.clone());
    facts.set(Fact::ImageId, id.image_id.clone());
    facts.set(Fact::PrivateIp, id.private_ip.clone());
    for fact in config.needed_facts() {
        if fact.needs_metadata_read() {
            let value = imds.fetch_metadata(fact.name()).map_err(Error::Imds)?;
            facts.set(fact, value);
        }
    }
    Ok(facts)
}

fn login_ec2(
    config: &Config,
    log: &Log,
    vault: &Vault,
    imds: &Imds<'_>,
    policy: &Policy,
    identity: &imds::Identity,
) -> Result<Token, Error> {
    let pkcs7 = imds
        .fetch_signed_document(config.imds.signature)
        .map_err(Error::Imds)?;
    let nonce =
        nonce::load_or_create(&config.state_dir, &identity.instance_id).map_err(Error::Nonce)?;
    for repair in &nonce.repairs {
        log.warn(repair);
    }
    let state = config.state_dir.join("nonce.json");
    match &nonce.origin {
        Origin::Reused => log.info(&format!("nonce reused from {}", state.display())),
        Origin::Generated => log.info(&format!("nonce generated and saved to {}", state.display())),
        Origin::ReplacedForeign { stored_instance } => log.warn(&format!(
            "{} belonged to instance {stored_instance} (baked into the image?): not used; \
             a new nonce was generated and saved",
            state.display()
        )),
        Origin::ReplacedUnreadable { moved_to, why } => log.warn(&format!(
            "{} was unreadable ({why}): moved to {}; a new nonce was generated and saved",
            state.display(),
            moved_to.display()
        )),
    }
    let step = Instant::now();
    let token = ec2::login(
        vault,
        policy,
        &ec2::Ec2Login {
            mount: &config.auth.mount,
            role: &config.auth.role,
            pkcs7: &pkcs7,
            nonce: &nonce.value,
            instance_id: &identity.instance_id,
        },
    )
    .map_err(Error::Login)?;
    log.info(&format!(
        "logged in: token accessor {}, ttl {} ({})",
        token.accessor,
        humantime::format_duration(token.ttl),
        took(step.elapsed())
    ));
    Ok(token)
}

fn login_iam(
    config: &Config,
    log: &Log,
    vault: &Vault,
    imds: &Imds<'_>,
    policy: &Policy,
    env_credentials: Option<iam::Credentials>,
) -> Result<Token, Error> {
    let credentials = match env_credentials {
        Some(c) => {
            log.info("iam credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY");
            c
        }
        None => {
            let step = Instant::now();
            let role = imds.fetch_role_credentials().map_err(Error::Imds)?;
            log.info(&format!(
                "iam credentials of the instance profile ({})",
                took(step.elapsed())
            ));
            iam::Credentials {
                access_key_id: role.access_key_id,
                secret_access_key: role.secret_access_key,
                session_token: Some(role.token).filter(|t| !t.is_empty()),
            }
        }
    };
    let step = Instant::now();
    let token = iam::login(
        vault,
        policy,
        &iam::IamLogin {
            mount: &config.auth.mount,
            role: &config.auth.role,
            region: &config.auth.sts_region,
            server_id: config.auth.iam_server_id.as_deref(),
            credentials: &credentials,
        },
    )
    .map_err(Error::Login)?;
    log.info(&format!(
        "logged in (iam, STS region {}): token accessor {}, ttl {} ({})",
        config.auth.sts_region,
        token.accessor,
        humantime::format_duration(token.ttl),
        took(step.elapsed())
    ));
    Ok(token)
}

fn after_login(
    config: &Config,
    log: &Log,
    vault: &Vault,
    token: &Token,
    facts: &Facts,
    policy: &Policy,
) -> Result<Summary, Error> {
    let step = Instant::now();
    let fetched = secrets::fetch_all(vault, &token.client_token, config, facts, policy)
        .map_err(Error::Secrets)?;
    for f in &fetched {
        log.info(&format!("secret {:?} fetched ({})", f.name, took(f.took)));
    }
    log.info(&format!(
        "{} secret(s) fetched ({})",
        fetched.len(),
        took(step.elapsed())
    ));

    let outputs = secrets::render_outputs(config, &fetched, facts).map_err(Error::Secrets)?;
    drop(fetched);
    let step = Instant::now();
    let staged = files::stage_all(&outputs).map_err(Error::Files)?;
    let done = staged.commit().map_err(Error::Files)?;
    let mut summary = Summary {
        secrets: config.secrets.len(),
        ..Summary::default()
    };
    let mut written = Vec::new();
    for (output, outcome) in &done {
        match outcome {
            Outcome::Written => {
                summary.written += 1;
                written.push(*output);
                log.info(&format!(
                    "wrote {} (mode {:04o}, uid {}, gid {})",
                    output.path.display(),
                    output.mode,
                    output.uid,
                    output.gid
                ));
            }
            Outcome::Unchanged => {
                summary.unchanged += 1;
                log.info(&format!("unchanged {}", output.path.display()));
            }
        }
    }
    log.info(&format!("files in place ({})", took(step.elapsed())));
    for ran in files::run_on_change(&written) {
        match ran.result {
            Ok(()) => log.info(&format!("on_change {:?} ok ({})", ran.argv, took(ran.took))),
            Err(e) => {
                summary.on_change_failed += 1;
                log.warn(&format!("on_change {:?} failed: {e}", ran.argv));
            }
        }
    }
    Ok(summary)
}
