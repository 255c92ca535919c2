//! AWS behind Vault: the calls Vault's aws auth method makes for a login (EC2
//! `DescribeInstances` for ec2, STS `GetCallerIdentity` for iam), their throttling (AWS's token
//! buckets), their failures and refusals, answered with the texts Vault builds around them
//! (builtin/credential/aws: `validateInstance`, the client set-up in client.go, the iam
//! method's upstream STS request).
//!
//! What the agent sees is what Vault answers once its own retries are spent: Vault's AWS SDK
//! retries a throttled or failed EC2 call `max_retries` times (`auth/<mount>/config/client`)
//! and its STS client retries 5xx and connection errors, then the login gets a 400 quoting the
//! last AWS error. The simulator answers at once (the time Vault spends retrying is not
//! modelled).

use std::collections::VecDeque;
use std::time::Instant;

use super::iam::StsError;
use crate::util;

/// An AWS token bucket: `burst` requests at once, refilled at `per_second`.
pub(super) struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(super) fn new(burst: u32, per_second: f64) -> TokenBucket {
        TokenBucket {
            burst: burst as f64,
            per_second,
            tokens: burst as f64,
            at: Instant::now(),
        }
    }

    pub(super) fn drain(&mut self) {
        self.tokens = 0.0;
        self.at = Instant::now();
    }

    /// Takes a token if there is one (a throttled request takes none).
    pub(super) fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One failure of the AWS call behind a login, as Vault reports it.
/// [`VaultSim::inject_aws_fault`](super::VaultSim::inject_aws_fault) queues them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsFault {
    // ---- ec2 logins: EC2 DescribeInstances and the EC2 client's set-up ----
    /// `RequestLimitExceeded` (EC2's API throttling; HTTP 503 from EC2).
    Ec2Throttled,
    /// `Unavailable` (EC2 503).
    Ec2Unavailable,
    /// `InternalError` (EC2 500).
    Ec2InternalError,
    /// Vault's request to EC2 timed out (`RequestError: send request failed … i/o timeout`).
    Ec2Unreachable,
    /// Vault's credentials lack `ec2:DescribeInstances` (`UnauthorizedOperation`, EC2 403).
    Ec2Unauthorized,
    /// Vault may not assume the role of `auth/<mount>/config/sts/<account>` (`AccessDenied`).
    AssumeRoleDenied,
    /// Vault has no AWS credentials at all (`NoCredentialProviders`).
    NoCredentials,
    /// The instance's account is not Vault's, and no STS role is configured for it.
    OtherAccount,
    /// EC2 reports the instance stopping, stopped or terminated.
    NotRunning,
    /// `InvalidInstanceID.NotFound` (EC2's eventual consistency right after launch).
    NotFound,
    // ---- iam logins: STS GetCallerIdentity replayed by Vault ----
    /// STS 400 `Throttling` / `Rate exceeded` (Vault relays 4xx at once).
    StsThrottled,
    /// STS kept answering 5xx (or the connection failed) until Vault's client gave up.
    StsUnavailable,
    /// The iam role infers an EC2 instance (`inferred_entity_type=ec2_instance`) and Vault
    /// could not check it: Vault's message does not say why.
    InferredInstanceUnverified,
}

impl AwsFault {
    /// Whether it hits ec2 logins (else iam logins).
    pub fn is_ec2(self) -> bool {
        !matches!(
            self,
            AwsFault::StsThrottled
                | AwsFault::StsUnavailable
                | AwsFault::InferredInstanceUnverified
        )
    }

    /// Vault's error message (the login's HTTP 400).
    pub(super) fn message(self, instance_id: &str, account: &str, region: &str) -> String {
        let request_id = util::uuid();
        let sdk = |code: &str, message: &str, status: u16| {
            format!("{code}: {message}\n\tstatus code: {status}, request id: {request_id}")
        };
        let describe = |aws: String| {
            format!(
                "failed to verify instance ID: error fetching description for instance ID \
                 {instance_id:?}: {aws}"
            )
        };
        match self {
            AwsFault::Ec2Throttled => {
                describe(sdk("RequestLimitExceeded", "Request limit exceeded.", 503))
            }
            AwsFault::Ec2Unavailable => describe(sdk(
                "Unavailable",
                "The service is unavailable. Please try again shortly.",
                503,
            )),
            AwsFault::Ec2InternalError => {
                describe(sdk("InternalError", "An internal error has occurred", 500))
            }
            AwsFault::Ec2Unreachable => describe(format!(
                "RequestError: send request failed\ncaused by: Post \
                 \"https://ec2.{region}.amazonaws.com/\": dial tcp 52.94.236.248:443: i/o timeout"
            )),
            AwsFault::Ec2Unauthorized => describe(sdk(
                "UnauthorizedOperation",
                "You are not authorized to perform this operation.",
                403,
            )),
            AwsFault::AssumeRoleDenied => format!(
                "failed to verify instance ID: {}",
                sdk(
                    "AccessDenied",
                    &format!(
                        "User: arn:aws:sts::{VAULT_ACCOUNT}:assumed-role/vault-server/i-0vault is \
                         not authorized to perform: sts:AssumeRole on resource: \
                         arn:aws:iam::{account}:role/vault-describe-instances"
                    ),
                    403
                )
            ),
            AwsFault::NoCredentials => "failed to verify instance ID: NoCredentialProviders: no \
                                        valid providers in chain. Deprecated.\n\tFor verbose \
                                        messaging see aws.Config.CredentialsChainVerboseErrors"
                .to_string(),
            AwsFault::OtherAccount => format!(
                "failed to verify instance ID: unable to fetch client for account ID \
                 {account:?} -- default client is for account \"{VAULT_ACCOUNT}\""
            ),
            AwsFault::NotRunning => {
                "failed to verify instance ID: instance is not in 'running' state".to_string()
            }
            AwsFault::NotFound => describe(sdk(
                "InvalidInstanceID.NotFound",
                &format!("The instance ID '{instance_id}' does not exist"),
                400,
            )),
            AwsFault::StsThrottled => format!(
                "error making upstream request: received error code 400 from STS: {}",
                StsError::new(400, "Throttling", "Rate exceeded").xml()
            ),
            AwsFault::StsUnavailable => format!(
                "error making upstream request: error making request: POST {} giving up after \
                 4 attempt(s)",
                sts_endpoint(region)
            ),
            AwsFault::InferredInstanceUnverified => {
                format!("failed to verify {instance_id} as a valid EC2 instance in region {region}")
            }
        }
    }
}

/// The account Vault's own credentials belong to, in the simulated messages.
const VAULT_ACCOUNT: &str = "111122223333";

/// Vault's default STS endpoint for a region (what its iam login replays to).
fn sts_endpoint(region: &str) -> String {
    if region == "us-east-1" {
        "https://sts.amazonaws.com".to_string()
    } else {
        format!("https://sts.{region}.amazonaws.com")
    }
}

/// The AWS side of the simulator's state (inside `VaultState`).
#[derive(Default)]
pub(super) struct AwsState {
    /// EC2's bucket for `DescribeInstances` (one call per ec2 login); `None`: unlimited.
    pub(super) describe_instances: Option<TokenBucket>,
    /// STS's bucket for `GetCallerIdentity` (one call per iam login); `None`: unlimited.
    pub(super) get_caller_identity: Option<TokenBucket>,
    pub(super) faults: VecDeque<(AwsFault, usize)>,
    pub(super) describe_calls: u64,
    pub(super) describe_throttled: u64,
    pub(super) sts_calls: u64,
    pub(super) sts_throttled: u64,
}

impl AwsState {
    /// The next queued fault for a login of this kind, if any (consumed).
    pub(super) fn take_fault(&mut self, ec2: bool) -> Option<AwsFault> {
        let i = self
            .faults
            .iter()
            .position(|(f, n)| f.is_ec2() == ec2 && *n > 0)?;
        let fault = self.faults[i].0;
        self.faults[i].1 -= 1;
        if self.faults[i].1 == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }

    /// One `DescribeInstances` call: false when EC2 throttles it.
    pub(super) fn describe_instances(&mut self) -> bool {
        self.describe_calls += 1;
        let ok = self
            .describe_instances
            .as_mut()
            .is_none_or(TokenBucket::take);
        if !ok {
            self.describe_throttled += 1;
        }
        ok
    }

    /// One `GetCallerIdentity` call: false when STS throttles it.
    pub(super) fn get_caller_identity(&mut self) -> bool {
        self.sts_calls += 1;
        let ok = self
            .get_caller_identity
            .as_mut()
            .is_none_or(TokenBucket::take);
        if !ok {
            self.sts_throttled += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_refill() {
        let mut b = TokenBucket::new(3, 20.0);
        let start = b.at;
        assert!((0..3).all(|_| b.take_at(start)));
        assert!(!b.take_at(start));
        let later = start + Duration::from_millis(120);
        assert!(b.take_at(later), "refilled at 20/s");
        assert!(b.take_at(later));
        assert!(!b.take_at(later));
    }

    #[test]
    fn texts_are_vaults() {
        let m = AwsFault::Ec2Throttled.message("i-1", "2", "eu-west-1");
        assert!(m.starts_with(
            "failed to verify instance ID: error fetching description for instance ID \"i-1\": \
             RequestLimitExceeded: Request limit exceeded.\n\tstatus code: 503, request id: "
        ));
        let m = AwsFault::StsThrottled.message("i-1", "2", "us-east-1");
        assert!(m.contains("received error code 400 from STS: <ErrorResponse"));
        assert!(m.contains("<Code>Throttling</Code>") && m.contains("Rate exceeded"));
        assert_eq!(
            AwsFault::StsUnavailable.message("i-1", "2", "us-east-1"),
            "error making upstream request: error making request: POST https://sts.amazonaws.com \
             giving up after 4 attempt(s)"
        );
    }
}
