//! The boot job, step by step: IMDS → nonce → login → secrets → files → on_change → revoke.

use crate::auth::{self, ec2, iam, Token};
use crate::config::{AuthMethod, Config, Signature};
use crate::files::{self, Outcome};
use crate::imds::{self, Imds};
use crate::log::{took, Log};
use crate::nonce::{self, Origin};
use crate::pending;
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
    /// iam without credentials in the environment, on an instance without an instance profile.
    NoInstanceProfile(String),
    Secrets(secrets::Error),
    Files(files::Error),
    /// A rename or directory sync failed part-way through the commit.
    Commit(files::CommitError),
    /// The record of owed on_change commands could not be read or written.
    Pending(crate::state::Error),
}

impl Error {
    pub fn class(&self) -> Class {
        use crate::vault::Error as V;
        match self {
            Error::Config(_) | Error::VaultClient(_) | Error::NoInstanceProfile(_) => Class::Config,
            Error::Imds(e) => match e {
                imds::Error::Malformed { .. } => Class::Malformed,
                _ => Class::Unavailable,
            },
            Error::Nonce(_) | Error::Files(_) | Error::Commit(_) | Error::Pending(_) => {
                Class::CannotWrite
            }
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

impl Error {
    /// The run's last line when the deadline ended on a failure with a known cause.
    pub fn advice(&self) -> Option<String> {
        match self {
            Error::Login(e) => e.advice(),
            // (A secret read's errors say nothing about AWS: only a redirect has advice.)
            Error::Secrets(secrets::Error::Unavailable { last, .. }) => {
                auth::verdict::redirect_advice(last)
            }
            _ => None,
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
            Error::NoInstanceProfile(what) => write!(
                f,
                "iam: no instance profile attached to this instance (IMDS {what}: not found \
                 (404)): attach one whose role Vault's iam role is bound to, or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in vaultboot's environment"
            ),
            Error::Secrets(e) => e.fmt(f),
            Error::Files(e) => write!(f, "writing files: {e}"),
            Error::Commit(e) => write!(f, "writing files: {e}"),
            Error::Pending(e) => write!(f, "pending on_change commands: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// What the failed run did to the outputs, for the summary line.
    pub fn outputs_changed(&self) -> String {
        match self {
            Error::Commit(e) if !e.replaced.is_empty() => {
                let tail = if e.not_replaced.is_empty() {
                    "not every directory could be synced".to_string()
                } else {
                    format!(
                        "{} not replaced: {}",
                        e.not_replaced.len(),
                        files::path_list(&e.not_replaced)
                    )
                };
                format!(
                    "{} file(s) replaced: {}; {tail}",
                    e.replaced.len(),
                    files::path_list(&e.replaced)
                )
            }
            _ => "no file was changed".into(),
        }
    }
}

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
    // One connection per secret, read all at once after the login: their TCP and TLS set-up
    // overlaps the IMDS reads, the nonce and the login.
    vault.warm_up(config.secrets.len().max(1));
    let imds = Imds::new(&config.imds, &policy);

    // Off EC2 (iam with credentials from the environment) IMDS is needed only for templates.
    let env_credentials = match config.auth.method {
        // Half-set AWS_* variables are an error, not a silent fall-back to IMDS.
        AuthMethod::Iam => iam::Credentials::from_env_checked().map_err(|message| {
            Error::Config(crate::config::Error {
                place: "environment".into(),
                message,
            })
        })?,
        AuthMethod::Ec2 => None,
    };
    let needs_imds = env_credentials.is_none() || !config.needed_facts().is_empty();
    let step = Instant::now();
    let (identity, facts, signed) = if needs_imds {
        let signature = match config.auth.method {
            AuthMethod::Ec2 => Some(config.imds.signature),
            AuthMethod::Iam => None,
        };
        let (identity, facts, signed) = read_instance(config, &imds, &policy, signature)?;
        log.info(&format!(
            "instance {} in {} (account {}, image {}) ({})",
            identity.instance_id,
            identity.region,
            identity.account_id,
            identity.image_id,
            took(step.elapsed())
        ));
        (Some(identity), facts, signed)
    } else {
        log.info("not on EC2: iam credentials from the environment, no templates, IMDS not used");
        (None, Facts::default(), None)
    };

    let token = match (config.auth.method, &identity, signed) {
        (AuthMethod::Ec2, Some(identity), Some(pkcs7)) => {
            login_ec2(config, log, &vault, &policy, identity, &pkcs7)?
        }
        _ => login_iam(config, log, &vault, &imds, &policy, env_credentials)?,
    };

    let step = Instant::now();
    let result = secrets::fetch_all(&vault, &token.client_token, config, &facts, &policy)
        .map_err(Error::Secrets)
        .and_then(|fetched| write_outputs(config, log, fetched, &facts, step));
    // After the files, as the contract orders it (also when a step failed). Its round trip
    // delays the end of the run, not the files.
    let revoked = revoke(config, log, &vault, &token, &policy);

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

/// The revoke's retries stop this long after it started, or at the deadline if sooner...
const REVOKE_BUDGET: Duration = Duration::from_secs(5);
/// ...but it always gets at least this long, even past a spent deadline.
const REVOKE_GRACE: Duration = Duration::from_secs(2);

/// Gives the token back (unless configured not to); whether it was revoked.
fn revoke(config: &Config, log: &Log, vault: &Vault, token: &Token, policy: &Policy) -> bool {
    if !config.auth.revoke_token {
        log.info("token kept (auth.revoke_token = false)");
        return false;
    }
    let step = Instant::now();
    // Its own short budget: a few seconds of what is left (a standby's redirects or a 5xx
    // during a failover are retried), but never nothing: a run whose failure spent the
    // deadline still makes an attempt and a retry, as a token left behind stays valid for its
    // TTL. (The main budget may also be cancelled by a failed step: this one is not.)
    let budget = policy.remaining().min(REVOKE_BUDGET).max(REVOKE_GRACE);
    let revoke_policy = Policy::new(Instant::now() + budget, config.retry.max_delay);
    match auth::revoke(vault, token, &revoke_policy) {
        Ok(()) => {
            log.info(&format!("token revoked ({})", took(step.elapsed())));
            true
        }
        Err(e) => {
            log.warn(&format!(
                "token not revoked after {}: {e}; it stays valid until it expires in {} \
                 (an operator can revoke it now: vault token revoke -accessor {})",
                took(step.elapsed()),
                humantime::format_duration(token.ttl),
                token.accessor
            ));
            false
        }
    }
}

/// The identity document, the metadata the templates need and (ec2) the signed document: read
/// in parallel once the session token is there, so two IMDS round trips in all.
fn read_instance(
    config: &Config,
    imds: &Imds<'_>,
    policy: &Policy,
    signature: Option<Signature>,
) -> Result<(imds::Identity, Facts, Option<String>), Error> {
    imds.open_session().map_err(Error::Imds)?;
    let metadata: Vec<Fact> = config
        .needed_facts()
        .into_iter()
        .filter(|f| f.needs_metadata_read())
        .collect();
    // The first failure stops the other reads (their retries would only delay the error).
    fn stop_others<T>(policy: &Policy, r: Result<T, imds::Error>) -> Result<T, imds::Error> {
        if r.is_err() {
            policy.cancel_all();
        }
        r
    }
    let (identity, values, signed) = std::thread::scope(|scope| {
        let signed = signature
            .map(|sig| scope.spawn(move || stop_others(policy, imds.fetch_signed_document(sig))));
        let values: Vec<_> = metadata
            .iter()
            .map(|fact| scope.spawn(move || stop_others(policy, imds.fetch_metadata(fact.name()))))
            .collect();
        let identity = stop_others(policy, imds.fetch_identity());
        let join = |h: std::thread::ScopedJoinHandle<'_, _>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        let values: Vec<Result<String, imds::Error>> = values.into_iter().map(join).collect();
        (identity, values, signed.map(join))
    });
    let mut failures = Vec::new();
    let identity = identity.map_err(|e| failures.push(e)).ok();
    let values: Vec<Option<String>> = values
        .into_iter()
        .map(|v| v.map_err(|e| failures.push(e)).ok())
        .collect();
    let signed = signed.and_then(|r| r.map_err(|e| failures.push(e)).ok());
    match (identity, failures.is_empty()) {
        (Some(identity), true) => {
            let mut facts = base_facts(&identity);
            for (fact, value) in metadata.into_iter().zip(values.into_iter().flatten()) {
                facts.set(fact, value);
            }
            Ok((identity, facts, signed))
        }
        // The first real error in reading order: the others were cancelled because of it.
        _ => Err(Error::Imds(
            failures
                .into_iter()
                .find(|e| !matches!(e, imds::Error::Cancelled))
                .unwrap_or(imds::Error::Cancelled),
        )),
    }
}

fn base_facts(id: &imds::Identity) -> Facts {
    let mut facts = Facts::default();
    facts.set(Fact::InstanceId, id.instance_id.clone());
    facts.set(Fact::Region, id.region.clone());
    facts.set(Fact::AccountId, id.account_id.clone());
    facts.set(Fact::AvailabilityZone, id.availability_zone.clone());
    facts.set(Fact::ImageId, id.image_id.clone());
    facts.set(Fact::PrivateIp, id.private_ip.clone());
    facts
}

fn login_ec2(
    config: &Config,
    log: &Log,
    vault: &Vault,
    policy: &Policy,
    identity: &imds::Identity,
    pkcs7: &str,
) -> Result<Token, Error> {
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
            pkcs7,
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
            let role = imds.fetch_role_credentials().map_err(|e| match e {
                imds::Error::Refused { what, status: 404 } => Error::NoInstanceProfile(what),
                e => Error::Imds(e),
            })?;
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

/// Logs what was fetched, writes every file (all or nothing) and runs the on_change commands.
fn write_outputs(
    config: &Config,
    log: &Log,
    fetched: Vec<secrets::Fetched>,
    facts: &Facts,
    fetch_started: Instant,
) -> Result<Summary, Error> {
    for f in &fetched {
        log.info(&format!("secret {:?} fetched ({})", f.name, took(f.took)));
    }
    log.info(&format!(
        "{} secret(s) fetched ({})",
        fetched.len(),
        took(fetch_started.elapsed())
    ));

    let outputs = secrets::render_outputs(config, &fetched, facts).map_err(Error::Secrets)?;
    drop(fetched);
    let earlier = pending::load(&config.state_dir).map_err(Error::Pending)?;
    for repair in &earlier.repairs {
        log.warn(repair);
    }
    let step = Instant::now();
    let staged = stage(&outputs).map_err(Error::Files)?;
    let (owed, dropped) = pending::owed(&outputs, &staged, &earlier.found);
    for path in dropped {
        log.warn(&format!(
            "on_change owed by an earlier run for {} is not run: the configuration no longer \
             gives that output an on_change command",
            path.display()
        ));
    }
    // Before the first rename: a kill from here on leaves the commands owed on disk.
    let recorded =
        pending::record(&config.state_dir, &earlier.found, &owed).map_err(Error::Pending)?;
    for warning in &recorded.warnings {
        log.warn(warning);
    }
    let done = match staged.commit() {
        Ok(done) => done,
        Err(e) => {
            if recorded.on_disk {
                log.warn(&format!(
                    "on_change commands not run: the files are not a complete set; they stay \
                     owed in {} and run after the next commit that completes",
                    config.state_dir.join(pending::FILE_NAME).display()
                ));
            }
            return Err(Error::Commit(e));
        }
    };
    let mut summary = Summary {
        secrets: config.secrets.len(),
        ..Summary::default()
    };
    for (output, outcome) in &done {
        match outcome {
            Outcome::Written => {
                summary.written += 1;
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
                if owed.iter().any(|o| std::ptr::eq(*o, *output)) {
                    log.info(&format!(
                        "unchanged {} (its on_change is owed by an earlier run)",
                        output.path.display()
                    ));
                } else {
                    log.info(&format!("unchanged {}", output.path.display()));
                }
            }
        }
    }
    log.info(&format!("files in place ({})", took(step.elapsed())));
    for ran in files::run_on_change(&owed) {
        match ran.result {
            Ok(()) => log.info(&format!("on_change {:?} ok ({})", ran.argv, took(ran.took))),
            Err(e) => {
                summary.on_change_failed += 1;
                log.warn(&format!("on_change {:?} failed: {e}", ran.argv));
            }
        }
    }
    // Every owed command has run (a failed one is a warning, not owed again).
    if recorded.on_disk {
        if let Err(e) = pending::clear(&config.state_dir) {
            log.warn(&format!(
                "cannot clear the pending on_change commands: {e}; they run again on the next run"
            ));
        }
    }
    Ok(summary)
}

/// Files staged at once on this many threads at most.
const MAX_FILE_THREADS: usize = 8;

/// `files::stage_all` with the outputs spread over threads: their fsyncs overlap instead of
/// queueing. Still all or nothing: a failure to stage any of them removes every staged file
/// (dropping a `Staged` does).
fn stage(outputs: &[files::Output]) -> Result<files::Staged<'_>, files::Error> {
    if outputs.len() < 2 {
        return files::stage_all(outputs);
    }
    let per_thread = outputs.len().div_ceil(MAX_FILE_THREADS);
    std::thread::scope(|scope| {
        let staging: Vec<_> = outputs
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || files::stage_all(chunk)))
            .collect();
        join_all(staging).map(files::Staged::join)
    })
}

/// Every thread's result, or the first error in their order (once all have finished).
fn join_all<T, E>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, E>>>,
) -> Result<Vec<T>, E> {
    let mut done = Vec::new();
    let mut first_error = None;
    for h in handles {
        match h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
            Ok(v) => done.push(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
