//! Reading the instance from IMDS: one session, then the identity document, the signed document
//! (ec2) and the metadata the templates need, in parallel.

use super::Error;
use crate::config::{AuthMethod, Config, Signature};
use crate::fanout::Fanout;
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

/// IMDS reads at once, at most: the identity document, the signed document and the two
/// metadata items templates can name.
const MAX_IMDS_THREADS: usize = 4;

const IMDS_READS: Fanout = Fanout::new("IMDS reads", "imds-read", MAX_IMDS_THREADS);

/// One read of [`read_instance`], and what it gives.
#[derive(Clone, Copy)]
enum Read {
    Identity,
    Metadata(Fact),
    Signed(Signature),
}

enum Got {
    Identity(imds::Identity),
    Text(String),
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
    // In reading order: the error reported is the first real one in it.
    let reads: Vec<Read> = std::iter::once(Read::Identity)
        .chain(
            config
                .needed_facts()
                .into_iter()
                .filter(|f| f.needs_metadata_read())
                .map(Read::Metadata),
        )
        .chain(signature.map(Read::Signed))
        .collect();
    let results = IMDS_READS
        .map(&reads, |read| {
            let got = match *read {
                Read::Identity => imds.fetch_identity().map(Got::Identity),
                Read::Metadata(fact) => imds.fetch_metadata(fact.name()).map(Got::Text),
                Read::Signed(sig) => imds.fetch_signed_document(sig).map(Got::Text),
            };
            // The first failure stops the other reads (their retries would only delay it).
            if got.is_err() {
                policy.cancel_all();
            }
            got
        })
        .map_err(Error::StartingThreads)?;
    let mut failures = Vec::new();
    let (mut identity, mut facts, mut signed) = (None, Vec::new(), None);
    for (read, result) in reads.into_iter().zip(results) {
        match (read, result) {
            (Read::Identity, Ok(Got::Identity(id))) => identity = Some(id),
            (Read::Metadata(fact), Ok(Got::Text(value))) => facts.push((fact, value)),
            (Read::Signed(_), Ok(Got::Text(doc))) => signed = Some(doc),
            (_, Ok(_)) => unreachable!("each read gives its own kind of answer"),
            (Read::Metadata(fact), Err(imds::Error::Refused { what, status: 404 })) => {
                failures.push(Error::FactNotOnInstance(fact, what))
            }
            (_, Err(e)) => failures.push(Error::ReadingInstance(e)),
        }
    }
    match (identity, failures.is_empty()) {
        (Some(identity), true) => {
            let mut all = base_facts(&identity);
            for (fact, value) in facts {
                all.set(fact, value);
            }
            Ok((identity, all, signed))
        }
        // The first real error in reading order: the others were cancelled because of it.
        _ => Err(failures
            .into_iter()
            .find(|e| !matches!(e, Error::ReadingInstance(imds::Error::Cancelled)))
            .unwrap_or(Error::ReadingInstance(imds::Error::Cancelled))),
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
