//! Reading the instance from IMDS: one session, then the identity document, the signed document
//! (ec2) and the metadata the templates need, in parallel.

use super::Error;
use crate::config::{AuthMethod, Config, Signature};
use crate::imds::{self, Imds};
use crate::log::{took, Log};
use crate::retry::Policy;
use crate::template::{Fact, Facts};
use std::time::Instant;

/// What the run knows of the instance: its identity, the facts templates use, and the signed
/// document (ec2).
type Instance = (Option<imds::Identity>, Facts, Option<String>);

/// Reads the instance, unless the run is off EC2 (iam with credentials from the environment)
/// and no template needs a fact of the instance.
pub(super) fn read_if_needed(
    config: &Config,
    log: &Log,
    imds: &Imds<'_>,
    policy: &Policy,
    env_credentials: bool,
) -> Result<Instance, Error> {
    if env_credentials && config.needed_facts().is_empty() {
        log.info("not on EC2: iam credentials from the environment, no templates, IMDS not used");
        return Ok((None, Facts::default(), None));
    }
    let step = Instant::now();
    let signature = match config.auth.method {
        AuthMethod::Ec2 => Some(config.imds.signature),
        AuthMethod::Iam => None,
    };
    let (identity, facts, signed) = read_instance(config, imds, policy, signature)?;
    log.info(&format!(
        "instance {} in {} (account {}, image {}) ({})",
        identity.instance_id,
        identity.region,
        identity.account_id,
        identity.image_id,
        took(step.elapsed())
    ));
    Ok((Some(identity), facts, signed))
}

/// The identity document, the metadata the templates need and (ec2) the signed document: read
/// in parallel once the session token is there, so two IMDS round trips in all.
fn read_instance(
    config: &Config,
    imds: &Imds<'_>,
    policy: &Policy,
    signature: Option<Signature>,
) -> Result<(imds::Identity, Facts, Option<String>), Error> {
    imds.open_session().map_err(Error::ReadingInstance)?;
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
        _ => Err(Error::ReadingInstance(
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
