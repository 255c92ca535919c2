//! Logging in (ec2 with the persisted nonce, or iam with the instance profile's credentials)
//! and giving the token back at the end.

use super::{held, Error};
use crate::auth::{ec2, iam, Token};
use crate::config::Config;
use crate::imds::{self, Imds};
use crate::log::{took, Log};
use crate::nonce::{self, Origin};
use crate::retry::Policy;
use crate::vault::Vault;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The revoke's retries stop this long after it started, or at the deadline if sooner...
const REVOKE_BUDGET: Duration = Duration::from_secs(5);
/// ...but it always gets at least this long, even past a spent deadline; and a stopping run
/// (SIGTERM, SIGINT) gives it this long exactly.
pub(super) const REVOKE_GRACE: Duration = Duration::from_secs(2);

/// Gives the held token back (unless configured not to); whether it was revoked (by this
/// call, or already by a stop signal's).
pub(super) fn revoke(config: &Config, log: &Log, policy: &Policy) -> bool {
    if !config.auth.revoke_token {
        log.info("token kept (auth.revoke_token = false)");
        return false;
    }
    // Its own short budget: a few seconds of what is left (a standby's redirects or a 5xx
    // during a failover are retried), but never nothing: a run whose failure spent the
    // deadline still makes an attempt and a retry, as a token left behind stays valid for its
    // TTL. (The main budget may also be cancelled by a failed step or a stop: this one is not.)
    let budget = if crate::stop::requested().is_some() {
        REVOKE_GRACE
    } else {
        policy.remaining().min(REVOKE_BUDGET).max(REVOKE_GRACE)
    };
    held::revoke(log, budget).unwrap_or(false)
}

/// Keeps the token where a stop signal can revoke it too (unless it is to be kept).
pub(super) fn hold(config: &Config, vault: &Vault, token: Token) -> Arc<Token> {
    if config.auth.revoke_token {
        held::hold(vault, token, config.retry.max_delay)
    } else {
        Arc::new(token)
    }
}

pub(super) fn login_ec2(
    config: &Config,
    log: &Log,
    vault: &Vault,
    policy: &Policy,
    identity: &imds::Identity,
    pkcs7: &str,
) -> Result<Token, Error> {
    let nonce = nonce::load_or_create(&config.state_dir, &identity.instance_id)
        .map_err(Error::LoadingNonce)?;
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
    .map_err(Error::LoggingIn)?;
    log.info(&format!(
        "logged in: token accessor {}, ttl {} ({})",
        token.accessor,
        humantime::format_duration(token.ttl),
        took(step.elapsed())
    ));
    Ok(token)
}

pub(super) fn login_iam(
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
                imds::Error::Refused { what, status: 404 } => Error::FindingInstanceProfile(what),
                e => Error::ReadingInstance(e),
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
            endpoint: config.auth.sts_endpoint.as_deref(),
            server_id: config.auth.iam_server_id.as_deref(),
            credentials: &credentials,
        },
    )
    .map_err(Error::LoggingIn)?;
    log.info(&format!(
        "logged in (iam, STS region {}): token accessor {}, ttl {} ({})",
        config.auth.sts_region,
        token.accessor,
        humantime::format_duration(token.ttl),
        took(step.elapsed())
    ));
    Ok(token)
}
