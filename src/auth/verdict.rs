//! What a refused login means: one table of the texts Vault's aws auth method answers, its own
//! and the AWS errors it relays, used by both login methods. The status alone cannot tell: Vault
//! answers "EC2 throttled my DescribeInstances" with the same 400 as "this AMI is not bound".
//!
//! Where the texts come from (Vault's builtin/credential/aws): `validateInstance` wraps the AWS
//! SDK's error as `failed to verify instance ID: error fetching description for instance ID
//! "i-…": <Code>: <Message>\n\tstatus code: <N>, request id: <R>` after the SDK's own retries
//! (`max_retries` in `auth/<mount>/config/client`); the client set-up (client.go) adds `unable to
//! fetch current caller: …`, `unable to fetch client for account ID …` and the credential
//! chain's `NoCredentialProviders`; the iam method relays STS as `error making upstream request:
//! received error code <N> from STS: <ErrorResponse …>` (STS 4xx such as 400 `Throttling` /
//! `Rate exceeded` come back at once) or, once its HTTP client gave up on STS 5xx and connection
//! errors, `error making upstream request: error making request: POST … giving up after N
//! attempt(s)`. <https://github.com/hashicorp/vault/tree/main/builtin/credential/aws>

use crate::retry::Verdict;
use crate::vault;
use std::time::Duration;

/// What a row of the table means for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// AWS throttled a call Vault made for the login: retried until the deadline.
    Throttled,
    /// AWS failed (5xx) or Vault could not reach it: retried until the deadline.
    AwsFailing,
    /// Vault could not check the instance with EC2 and does not say why: retried until the
    /// deadline (throttling is the likely cause during a scale-out).
    Unexplained,
    /// EC2 does not list the instance yet (eventual consistency right after launch): retried
    /// [`NOT_YET_KNOWN_RETRIES`] times, then a refusal.
    NotYetKnown,
    /// The ec2 nonce bound to this instance is another one.
    NonceMismatch,
    /// Retrying cannot help: the hint names the fix.
    Refused,
}

impl Meaning {
    /// AWS behind Vault failed, not the instance's claim: worth waiting for.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Meaning::Throttled | Meaning::AwsFailing | Meaning::Unexplained
        )
    }
}

/// One row: any of `needles` found in one of Vault's messages selects it.
pub struct Row {
    pub needles: &'static [&'static str],
    pub meaning: Meaning,
    /// The cause and its fix, for the operator.
    pub hint: &'static str,
}

/// "InvalidInstanceID.NotFound" is retried this many times, this far apart at least.
pub const NOT_YET_KNOWN_RETRIES: u32 = 5;
pub const NOT_YET_KNOWN_PAUSE: Duration = Duration::from_secs(2);

/// Refusals first: a message that names a refusal and also, say, a 5xx is a refusal.
pub static TABLE: &[Row] = &[
    Row {
        needles: &["client nonce mismatch"],
        meaning: Meaning::NonceMismatch,
        hint: "this instance's identity is bound to another nonce in Vault's access list; an \
               operator resets it: vault delete auth/<mount>/identity-accesslist/<instance-id>",
    },
    Row {
        needles: &["reauthentication is disabled"],
        meaning: Meaning::Refused,
        hint: "this instance's access-list entry forbids another login (disallow_reauthentication \
               or an empty nonce); an operator resets it: vault delete \
               auth/<mount>/identity-accesslist/<instance-id>",
    },
    Row {
        needles: &["UnauthorizedOperation"],
        meaning: Meaning::Refused,
        hint: "Vault's own AWS credentials may not call ec2:DescribeInstances: allow it for the \
               IAM identity Vault uses (its instance profile, or the keys in \
               auth/<mount>/config/client)",
    },
    Row {
        needles: &["AccessDenied"],
        meaning: Meaning::Refused,
        hint:
            "an AWS call Vault makes for this login was denied to Vault's own AWS credentials \
               (ec2:DescribeInstances, iam:GetInstanceProfile, iam:GetRole/GetUser, or \
               sts:AssumeRole of auth/<mount>/config/sts): allow it for the IAM identity Vault uses",
    },
    Row {
        needles: &[
            "NoCredentialProviders",
            "could not compile valid credential",
        ],
        meaning: Meaning::Refused,
        hint: "Vault has no AWS credentials to check instances with: write them to \
               auth/<mount>/config/client or give Vault's host an instance profile",
    },
    Row {
        needles: &["unable to fetch client for account ID"],
        meaning: Meaning::Refused,
        hint: "this instance's AWS account is not Vault's: give Vault a role to assume there \
               (vault write auth/<mount>/config/sts/<account-id> sts_role=…)",
    },
    Row {
        needles: &["not in 'running' state"],
        meaning: Meaning::Refused,
        hint: "EC2 reports this instance as not running (stopping, stopped or terminated): \
               only a running instance may log in",
    },
    Row {
        needles: &[
            "does not belong to",
            "does not satisfy the constraint",
            "not allowed for role",
            "entry for role",
        ],
        meaning: Meaning::Refused,
        hint: "this instance does not match the Vault role: compare `vault read \
               auth/<mount>/role/<role>` (auth_type and bound_*) with the instance's AMI, \
               account, region, VPC, subnet and instance profile (ec2) or IAM principal (iam), \
               and auth.role / auth.mount",
    },
    Row {
        needles: &["InvalidInstanceID.NotFound", "instance not found"],
        meaning: Meaning::NotYetKnown,
        hint: "EC2 still does not list this instance as Vault's credentials see it: check that \
               Vault's EC2 endpoint (auth/<mount>/config/client) and STS role \
               (auth/<mount>/config/sts) reach this instance's region and account",
    },
    Row {
        needles: &[
            "RequestLimitExceeded",
            "Throttling",
            "Throttled",
            "TooManyRequestsException",
            "SlowDown",
            "PriorRequestNotComplete",
            "BandwidthLimitExceeded",
            "Rate exceeded",
            "upstream rate limited",
        ],
        meaning: Meaning::Throttled,
        hint: "AWS throttled the calls Vault makes for each login (EC2 DescribeInstances, STS): \
               not a refusal",
    },
    Row {
        needles: &[
            "status code: 5",
            "error code 5",
            "InternalError",
            "InternalFailure",
            "Unavailable",
            "RequestTimeout",
            "RequestError",
            "RequestCanceled",
            "giving up after",
            "error making request",
            "i/o timeout",
            "connection reset",
            "connection refused",
            "EOF",
            "TLS handshake timeout",
            "Client.Timeout",
            "context deadline exceeded",
            "no such host",
        ],
        meaning: Meaning::AwsFailing,
        hint: "AWS failed (5xx) or could not be reached from Vault for the login's check: \
               not a refusal",
    },
    Row {
        needles: &["as a valid EC2 instance"],
        meaning: Meaning::Unexplained,
        hint: "Vault could not check the instance with EC2 and does not say why (throttling, \
               eventual consistency, or its credentials lacking ec2:DescribeInstances; Vault's \
               server log has the AWS error)",
    },
];

/// The row that explains this error, if any.
pub fn judge(e: &vault::Error) -> Option<&'static Row> {
    let vault::Error::Status { messages, .. } = e else {
        return None;
    };
    TABLE.iter().find(|row| {
        messages
            .iter()
            .any(|m| row.needles.iter().any(|n| m.contains(n)))
    })
}

/// The retry verdicts of one login's attempts: the table first, then the status.
#[derive(Default)]
pub struct LoginJudge {
    not_yet_known: u32,
}

impl LoginJudge {
    pub fn verdict(&mut self, e: &vault::Error) -> Verdict {
        let Some(row) = judge(e) else {
            return e.verdict();
        };
        match row.meaning {
            // Not a 429: no Retry-After, so the back-off cap grows with each one.
            m if m.is_transient() => Verdict::Transient { retry_after: None },
            Meaning::NotYetKnown if self.not_yet_known < NOT_YET_KNOWN_RETRIES => {
                self.not_yet_known += 1;
                Verdict::Transient {
                    retry_after: Some(NOT_YET_KNOWN_PAUSE),
                }
            }
            _ => Verdict::Fatal,
        }
    }
}

/// What to do when a login's deadline ended on this error (the run's last line, exit 69).
pub fn advice(last: &vault::Error) -> Option<String> {
    if let Some(advice) = redirect_advice(last) {
        return Some(advice);
    }
    let row = judge(last).filter(|r| r.meaning.is_transient())?;
    let what = match row.meaning {
        Meaning::Throttled => "it was AWS throttling behind Vault",
        Meaning::AwsFailing => "it was AWS failing (or unreachable) behind Vault",
        _ => "Vault could not check the instance with EC2 (see Vault's server log)",
    };
    Some(format!(
        "{what}, not a refusal: raise max_retries in Vault's auth/<mount>/config/client (its \
         AWS SDK retries), spread the scale-out over more time, or raise retry.deadline"
    ))
}

/// What to do when any Vault request's deadline ended on a redirect.
pub fn redirect_advice(last: &vault::Error) -> Option<String> {
    let host = last.redirected_to()?;
    // "(same host)" or "(no location)" is not a host name: not quoted.
    let to = match host.starts_with('(') {
        true => host.to_string(),
        false => format!("{host:?}"),
    };
    Some(format!(
        "Vault kept redirecting to {to} until the deadline (a standby pointing at an active \
         node that is gone, as during a cluster election): check the Vault cluster; vaultboot \
         never follows a redirect and retried the configured address"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, message: &str) -> vault::Error {
        vault::Error::Status {
            url: "https://vault.example:8200/v1/auth/aws/login".into(),
            status,
            messages: vec![message.replace(['\n', '\t'], " ")],
            retry_after: None,
        }
    }

    fn meaning(status: u16, message: &str) -> Option<Meaning> {
        judge(&answer(status, message)).map(|r| r.meaning)
    }

    const ID: &str = "i-0e1c0ef82afa24a7c";

    fn describe(aws: &str) -> String {
        format!(
            "failed to verify instance ID: error fetching description for instance ID \"{ID}\": {aws}"
        )
    }

    #[test]
    fn every_row_is_reached_by_vaults_own_texts() {
        use Meaning::*;
        let sts = |code: u16, c: &str, m: &str| {
            format!(
                "error making upstream request: received error code {code} from STS: \
                 <ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
                 <Type>Sender</Type>\n    <Code>{c}</Code>\n    <Message>{m}</Message>\n  </Error>"
            )
        };
        let cases: Vec<(String, Meaning)> = vec![
            ("client nonce mismatch".into(), NonceMismatch),
            ("reauthentication is disabled".into(), Refused),
            (describe("UnauthorizedOperation: You are not authorized to perform this operation.\n\tstatus code: 403, request id: r"), Refused),
            ("failed to verify instance ID: AccessDenied: User: arn:aws:sts::1:assumed-role/vault/x is not authorized to perform: sts:AssumeRole\n\tstatus code: 403, request id: r".into(), Refused),
            ("failed to verify instance ID: NoCredentialProviders: no valid providers in chain. Deprecated.".into(), Refused),
            ("failed to verify instance ID: unable to fetch client for account ID \"2\" -- default client is for account \"1\"".into(), Refused),
            ("failed to verify instance ID: instance is not in 'running' state".into(), Refused),
            ("Error validating instance: AMI ID \"ami-1\" does not belong to role \"web\"".into(), Refused),
            ("Error validating instance: subnet ID \"subnet-1\" does not satisfy the constraint on role \"web\"".into(), Refused),
            ("Region \"eu-west-1\" does not satisfy the constraint on role \"web\"".into(), Refused),
            ("IAM Principal \"arn:aws:sts::1:assumed-role/app/i-1\" does not belong to the role \"web\"".into(), Refused),
            ("auth method ec2 not allowed for role web".into(), Refused),
            ("entry for role \"web\" not found".into(), Refused),
            (describe(&format!("InvalidInstanceID.NotFound: The instance ID '{ID}' does not exist\n\tstatus code: 400, request id: r")), NotYetKnown),
            (describe("RequestLimitExceeded: Request limit exceeded.\n\tstatus code: 503, request id: r"), Throttled),
            (describe("EC2ThrottledException: throttled\n\tstatus code: 400, request id: r"), Throttled),
            (sts(400, "Throttling", "Rate exceeded"), Throttled),
            ("IAM role ARN could not be fetched: Throttling: Rate exceeded\n\tstatus code: 400, request id: r; upstream rate limited".into(), Throttled),
            (describe("InternalError: An internal error has occurred\n\tstatus code: 500, request id: r"), AwsFailing),
            (describe("Unavailable: The service is unavailable. Please try again shortly.\n\tstatus code: 503, request id: r"), AwsFailing),
            (describe("RequestError: send request failed\ncaused by: Post \"https://ec2.us-east-1.amazonaws.com/\": dial tcp 52.94.0.1:443: i/o timeout"), AwsFailing),
            (describe("RequestError: send request failed\ncaused by: Post \"https://ec2.us-east-1.amazonaws.com/\": read tcp 10.0.0.1:1->52.94.0.1:443: read: connection reset by peer"), AwsFailing),
            ("failed to verify instance ID: unable to fetch current caller: RequestError: send request failed\ncaused by: Post \"https://sts.amazonaws.com/\": EOF".into(), AwsFailing),
            ("error making upstream request: error making request: POST https://sts.amazonaws.com/ giving up after 4 attempt(s)".into(), AwsFailing),
            ("error making upstream request: error making request: Post \"https://sts.amazonaws.com/\": dial tcp: lookup sts.amazonaws.com: no such host".into(), AwsFailing),
            (sts(503, "ServiceUnavailable", "Service is unavailable"), AwsFailing),
            ("failed to verify i-1 as a valid EC2 instance in region us-east-1".into(), Unexplained),
        ];
        for (message, want) in &cases {
            assert_eq!(meaning(400, message), Some(*want), "{message}");
        }
        // Every row is reached by at least one of Vault's texts.
        for (i, row) in TABLE.iter().enumerate() {
            assert!(
                cases
                    .iter()
                    .any(|(m, _)| std::ptr::eq(judge(&answer(400, m)).unwrap(), row)),
                "row {i} ({:?}) has no case",
                row.needles
            );
        }
    }

    #[test]
    fn what_the_table_does_not_know_is_judged_by_status() {
        assert_eq!(meaning(403, "permission denied"), None);
        assert_eq!(meaning(400, "missing iam_request_url"), None);
        assert_eq!(
            meaning(
                429,
                "request path \"auth/aws/login\": rate limit quota exceeded"
            ),
            None
        );
        assert_eq!(meaning(503, "Vault is sealed"), None);
        assert_eq!(
            meaning(
                500,
                "local node not active but active cluster node not found"
            ),
            None
        );
        let mut judge = LoginJudge::default();
        assert_eq!(
            judge.verdict(&answer(403, "permission denied")),
            Verdict::Fatal
        );
        assert!(matches!(
            judge.verdict(&answer(503, "Vault is sealed")),
            Verdict::Transient { .. }
        ));
    }

    #[test]
    fn verdicts_follow_the_meaning() {
        let mut judge = LoginJudge::default();
        let throttled = answer(
            400,
            &describe("RequestLimitExceeded: Request limit exceeded. status code: 503"),
        );
        for _ in 0..50 {
            assert_eq!(
                judge.verdict(&throttled),
                Verdict::Transient { retry_after: None }
            );
        }
        // A refusal behind a 5xx is still a refusal.
        assert_eq!(
            judge.verdict(&answer(
                500,
                "IAM role ARN could not be fetched: AccessDenied: not authorized"
            )),
            Verdict::Fatal
        );
        let not_found = answer(
            400,
            &describe("InvalidInstanceID.NotFound: does not exist status code: 400"),
        );
        for _ in 0..NOT_YET_KNOWN_RETRIES {
            assert_eq!(
                judge.verdict(&not_found),
                Verdict::Transient {
                    retry_after: Some(NOT_YET_KNOWN_PAUSE)
                }
            );
        }
        assert_eq!(judge.verdict(&not_found), Verdict::Fatal);
        assert_eq!(
            judge.verdict(&answer(400, "client nonce mismatch")),
            Verdict::Fatal
        );
    }

    #[test]
    fn advice_names_the_cause_and_the_fixes() {
        let a = advice(&answer(
            400,
            &describe("RequestLimitExceeded: Request limit exceeded."),
        ))
        .unwrap();
        assert!(a.contains("AWS throttling behind Vault"), "{a}");
        assert!(
            a.contains("max_retries") && a.contains("retry.deadline"),
            "{a}"
        );
        let a = advice(&answer(
            400,
            "error making upstream request: error making request: POST https://sts.amazonaws.com/ giving up after 4 attempt(s)",
        ))
        .unwrap();
        assert!(a.contains("AWS failing"), "{a}");
        assert!(advice(&answer(400, "client nonce mismatch")).is_none());
        assert!(advice(&answer(503, "Vault is sealed")).is_none());
        let redirected = vault::Error::Http(crate::http::Error::Redirect {
            url: "https://vault.example:8200/v1/secret/data/x".into(),
            status: 307,
            target: "vault-0.internal:8200".into(),
        });
        for a in [advice(&redirected), redirect_advice(&redirected)] {
            let a = a.unwrap();
            assert!(
                a.starts_with("Vault kept redirecting to \"vault-0.internal:8200\""),
                "{a}"
            );
        }
        // A secret read's 5xx that happens to say "i/o timeout" is not AWS behind Vault.
        assert!(redirect_advice(&answer(500, "storage: i/o timeout")).is_none());
    }
}
