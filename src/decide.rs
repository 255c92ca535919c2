//! What every failed answer means, decided in one place: [`TABLE`]. For each answer (a
//! transport failure, an HTTP status, Vault's error texts and the AWS error behind them, a
//! success whose body is unusable) the first row that matches says whether it is retried until
//! the deadline, retried a few times, or final, and which [`Kind`] of failure it is when it ends
//! the run (a retried row's is the deadline's: unavailable). Callers ask [`Judge`] for the
//! retry verdict and [`kind`] for the kind; none decides on its own.
//!
//! The status alone cannot tell a login's failure: Vault answers "EC2 throttled my
//! DescribeInstances" with the same 400 as "this AMI is not bound". So a login's answer is read
//! for its texts first, refusals before transient failures.
//!
//! Where the login texts come from (Vault's builtin/credential/aws): `validateInstance` wraps
//! the AWS SDK's error as `failed to verify instance ID: error fetching description for instance ID
//! "i-…": <Code>: <Message>\n\tstatus code: <N>, request id: <R>` after the SDK's own retries
//! (`max_retries` in `auth/<mount>/config/client`); the client set-up (client.go) adds `unable to
//! fetch current caller: …`, `unable to fetch client for account ID …` and the credential
//! chain's `NoCredentialProviders`; the iam method relays STS as `error making upstream request:
//! received error code <N> from STS: <ErrorResponse …>` (STS 4xx such as 400 `Throttling` /
//! `Rate exceeded` come back at once) or, once its HTTP client gave up on STS 5xx and connection
//! errors, `error making upstream request: error making request: POST … giving up after N
//! attempt(s)`. <https://github.com/hashicorp/vault/tree/main/builtin/credential/aws>

use crate::http;
use crate::kind::Kind;
use crate::retry::Verdict;
use crate::vault;
use std::time::Duration;

/// Who answered: the instance metadata service, Vault, or Vault's aws auth login (whose texts
/// relay AWS's errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Imds,
    Vault,
    Login,
}

/// A failed answer, as the table reads it.
#[derive(Clone, Copy, Debug)]
pub enum Problem<'a> {
    /// No complete HTTP answer (or a redirect, which is never followed).
    Transport(&'a http::Error),
    /// A status that is not a success, with Vault's `errors` (none from IMDS).
    Status { status: u16, messages: &'a [String] },
    /// A success whose body is not what the service sends.
    Unusable,
}

/// The transport failures, by what they say about the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// No connection, it broke, or no complete answer in time.
    Broken,
    /// The certificate could not be verified.
    Untrusted,
    /// Over the size cap, or not HTTP as expected.
    Garbled,
    /// A 3xx.
    Redirect,
}

/// What a row matches.
#[derive(Debug)]
pub enum Pattern {
    /// Any of these texts in one of Vault's messages.
    Text(&'static [&'static str]),
    Transport(Transport),
    /// A status in this range (inclusive).
    Status(u16, u16),
    Unusable,
}

/// What is done after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retries {
    /// Retried until the deadline, after Retry-After if sent: with full-jitter back-off, or,
    /// for a refusal for load (429, AWS throttling), over the refusals' spread ([`Judge`]).
    UntilDeadline,
    /// Retried `times` times, at least `pause` apart; then final.
    Few { times: u32, pause: Duration },
    /// None: retrying cannot help.
    No,
}

/// What a login text row means, beyond its retries (the advice at the deadline, the nonce).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// Nothing more than the row's status or transport class says.
    Plain,
    /// AWS throttled a call Vault made for the login.
    Throttled,
    /// AWS failed (5xx) or Vault could not reach it.
    AwsFailing,
    /// Vault could not check the instance with EC2 and does not say why (throttling is the
    /// likely cause during a scale-out).
    Unexplained,
    /// EC2 does not list the instance yet (eventual consistency right after launch).
    NotYetKnown,
    /// The ec2 nonce bound to this instance is another one.
    NonceMismatch,
    /// Retrying cannot help: the hint names the fix.
    Refused,
}

/// One row: an answer from one of `from` that matches `answer`.
#[derive(Debug)]
pub struct Row {
    pub from: &'static [Source],
    pub answer: Pattern,
    pub retries: Retries,
    /// The failure's kind when this row ends the run: when final, or retried to the deadline.
    pub kind: Kind,
    pub meaning: Meaning,
    /// The cause and its fix, for the operator (empty: the answer says enough).
    pub hint: &'static str,
}

/// "InvalidInstanceID.NotFound" is retried this many times, this far apart at least.
pub const NOT_YET_KNOWN_RETRIES: u32 = 5;
pub const NOT_YET_KNOWN_PAUSE: Duration = Duration::from_secs(2);
const NOT_YET_KNOWN: Retries = Retries::Few {
    times: NOT_YET_KNOWN_RETRIES,
    pause: NOT_YET_KNOWN_PAUSE,
};

/// How much one refusal for load grows the spread of the next retries (`retry::Policy`): a
/// rate limit's 429 by one step; AWS throttling behind a login by two, as each such login cost
/// an AWS call (EC2 `DescribeInstances`, STS) from a bucket the whole account shares, where a
/// 429 cost nothing behind Vault's quota.
pub const QUOTA_WEIGHT: u32 = 1;
pub const AWS_THROTTLED_WEIGHT: u32 = 2;
const _: () = assert!(AWS_THROTTLED_WEIGHT > QUOTA_WEIGHT);

const LOGIN: &[Source] = &[Source::Login];
const VAULT: &[Source] = &[Source::Vault, Source::Login];
const IMDS: &[Source] = &[Source::Imds];
const ALL: &[Source] = &[Source::Imds, Source::Vault, Source::Login];

/// First match wins: a login's texts first (refusals before transient failures, so that a
/// refusal behind a 5xx is a refusal), then transport failures, then statuses.
pub static TABLE: &[Row] = &[
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["client nonce mismatch"]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::NonceMismatch,
        hint: "this instance's identity is bound to another nonce in Vault's access list; an \
               operator resets it: vault delete auth/<mount>/identity-accesslist/<instance-id>",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["reauthentication is disabled"]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Refused,
        hint: "this instance's access-list entry forbids another login (disallow_reauthentication \
               or an empty nonce); an operator resets it: vault delete \
               auth/<mount>/identity-accesslist/<instance-id>",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["UnauthorizedOperation"]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Refused,
        hint: "Vault's own AWS credentials may not call ec2:DescribeInstances: allow it for the \
               IAM identity Vault uses (its instance profile, or the keys in \
               auth/<mount>/config/client)",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["AccessDenied"]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Refused,
        hint:
            "an AWS call Vault makes for this login was denied to Vault's own AWS credentials \
               (ec2:DescribeInstances, iam:GetInstanceProfile, iam:GetRole/GetUser, or \
               sts:AssumeRole of auth/<mount>/config/sts): allow it for the IAM identity Vault uses",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&[
            "NoCredentialProviders",
            "could not compile valid credential",
        ]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Refused,
        hint: "Vault has no AWS credentials to check instances with: write them to \
               auth/<mount>/config/client or give Vault's host an instance profile",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["unable to fetch client for account ID"]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Refused,
        hint: "this instance's AWS account is not Vault's: give Vault a role to assume there \
               (vault write auth/<mount>/config/sts/<account-id> sts_role=…)",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["not in 'running' state"]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Refused,
        hint: "EC2 reports this instance as not running (stopping, stopped or terminated): \
               only a running instance may log in",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&[
            "does not belong to",
            "does not satisfy the constraint",
            "not allowed for role",
            "entry for role",
        ]),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Refused,
        hint: "this instance does not match the Vault role: compare `vault read \
               auth/<mount>/role/<role>` (auth_type and bound_*) with the instance's AMI, \
               account, region, VPC, subnet and instance profile (ec2) or IAM principal (iam), \
               and auth.role / auth.mount",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["InvalidInstanceID.NotFound", "instance not found"]),
        retries: NOT_YET_KNOWN,
        kind: Kind::Refused,
        meaning: Meaning::NotYetKnown,
        hint: "EC2 still does not list this instance as Vault's credentials see it: check that \
               Vault's EC2 endpoint (auth/<mount>/config/client) and STS role \
               (auth/<mount>/config/sts) reach this instance's region and account",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&[
            "RequestLimitExceeded",
            "Throttling",
            "Throttled",
            "TooManyRequestsException",
            "SlowDown",
            "PriorRequestNotComplete",
            "BandwidthLimitExceeded",
            "Rate exceeded",
            "upstream rate limited",
        ]),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::Throttled,
        hint: "AWS throttled the calls Vault makes for each login (EC2 DescribeInstances, STS): \
               not a refusal",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&[
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
        ]),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::AwsFailing,
        hint: "AWS failed (5xx) or could not be reached from Vault for the login's check: \
               not a refusal",
    },
    Row {
        from: LOGIN,
        answer: Pattern::Text(&["as a valid EC2 instance"]),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::Unexplained,
        hint: "Vault could not check the instance with EC2 and does not say why (throttling, \
               eventual consistency, or its credentials lacking ec2:DescribeInstances; Vault's \
               server log has the AWS error)",
    },
    Row {
        from: ALL,
        answer: Pattern::Transport(Transport::Broken),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    // Waiting cannot make a certificate trusted; the server is not reachable as configured.
    Row {
        from: ALL,
        answer: Pattern::Transport(Transport::Untrusted),
        retries: Retries::No,
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    // A server that sends too much or garbage once does it again.
    Row {
        from: ALL,
        answer: Pattern::Transport(Transport::Garbled),
        retries: Retries::No,
        kind: Kind::Malformed,
        meaning: Meaning::Plain,
        hint: "",
    },
    // A standby whose active node is gone (a cluster's election) redirects every request to
    // the dead node: retried against the configured address, never followed, so no token or
    // nonce goes to a host nobody configured.
    Row {
        from: VAULT,
        answer: Pattern::Transport(Transport::Redirect),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    // IMDS never redirects: whatever does is not IMDS.
    Row {
        from: IMDS,
        answer: Pattern::Transport(Transport::Redirect),
        retries: Retries::No,
        kind: Kind::Malformed,
        meaning: Meaning::Plain,
        hint: "",
    },
    Row {
        from: ALL,
        answer: Pattern::Status(429, 429),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    Row {
        from: ALL,
        answer: Pattern::Status(500, 599),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    // Vault's answer while a performance standby catches up.
    Row {
        from: VAULT,
        answer: Pattern::Status(412, 412),
        retries: Retries::UntilDeadline,
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    // The session token expired: one fresh token, at once.
    Row {
        from: IMDS,
        answer: Pattern::Status(401, 401),
        retries: Retries::Few {
            times: 1,
            pause: Duration::ZERO,
        },
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    // IMDS disabled (403) or no such item (404): the instance cannot give what is needed.
    Row {
        from: IMDS,
        answer: Pattern::Status(0, u16::MAX),
        retries: Retries::No,
        kind: Kind::Unavailable,
        meaning: Meaning::Plain,
        hint: "",
    },
    Row {
        from: VAULT,
        answer: Pattern::Status(0, u16::MAX),
        retries: Retries::No,
        kind: Kind::Refused,
        meaning: Meaning::Plain,
        hint: "",
    },
    Row {
        from: ALL,
        answer: Pattern::Unusable,
        retries: Retries::No,
        kind: Kind::Malformed,
        meaning: Meaning::Plain,
        hint: "",
    },
];

impl Row {
    fn matches(&self, source: Source, answer: &Problem<'_>) -> bool {
        if !self.from.contains(&source) {
            return false;
        }
        match (&self.answer, answer) {
            (Pattern::Text(needles), Problem::Status { messages, .. }) => messages
                .iter()
                .any(|m| needles.iter().any(|n| m.contains(n))),
            (Pattern::Transport(class), Problem::Transport(e)) => transport(e) == *class,
            (Pattern::Status(low, high), Problem::Status { status, .. }) => {
                (*low..=*high).contains(status)
            }
            (Pattern::Unusable, Problem::Unusable) => true,
            _ => false,
        }
    }
}

/// The class of a transport failure.
fn transport(e: &http::Error) -> Transport {
    match e.class {
        http::Class::Broken => Transport::Broken,
        http::Class::Untrusted => Transport::Untrusted,
        http::Class::Redirect(_) => Transport::Redirect,
        http::Class::Garbled => Transport::Garbled,
    }
}

/// The row that decides this answer. Every answer has one: the last rows match all.
pub fn row(source: Source, answer: &Problem<'_>) -> &'static Row {
    TABLE
        .iter()
        .find(|row| row.matches(source, answer))
        .unwrap_or(&FALLBACK)
}

/// Never reached (the table ends with rows that match everything); final rather than a panic.
static FALLBACK: Row = Row {
    from: ALL,
    answer: Pattern::Unusable,
    retries: Retries::No,
    kind: Kind::Malformed,
    meaning: Meaning::Plain,
    hint: "",
};

/// The kind of failure this answer is when it ends the run.
pub fn kind(source: Source, answer: &Problem<'_>) -> Kind {
    row(source, answer).kind
}

/// The retry verdicts of one operation's attempts: it counts the few retries of
/// [`Retries::Few`] rows.
pub struct Judge {
    source: Source,
    retried_few: u32,
}

impl Judge {
    pub fn new(source: Source) -> Judge {
        Judge {
            source,
            retried_few: 0,
        }
    }

    pub fn verdict(&mut self, answer: &Problem<'_>, retry_after: Option<Duration>) -> Verdict {
        let row = row(self.source, answer);
        match row.retries {
            // AWS's throttling behind a login carries no Retry-After: only the spread.
            Retries::UntilDeadline if row.meaning == Meaning::Throttled => Verdict::Refused {
                retry_after: None,
                weight: AWS_THROTTLED_WEIGHT,
            },
            Retries::UntilDeadline if matches!(row.answer, Pattern::Status(429, 429)) => {
                Verdict::Refused {
                    retry_after,
                    weight: QUOTA_WEIGHT,
                }
            }
            // AWS's failures behind a login carry no Retry-After: the back-off grows.
            Retries::UntilDeadline if matches!(row.answer, Pattern::Text(_)) => {
                Verdict::Transient { retry_after: None }
            }
            Retries::UntilDeadline => Verdict::Transient { retry_after },
            Retries::Few { times, pause } if self.retried_few < times => {
                self.retried_few += 1;
                Verdict::Transient {
                    retry_after: Some(pause),
                }
            }
            _ => Verdict::Fatal,
        }
    }

    /// The verdict on a failed Vault request.
    pub fn vault(&mut self, e: &vault::Error) -> Verdict {
        self.verdict(&e.answer(), e.retry_after())
    }
}

/// The login text row that explains this error, if any.
pub fn login_row(e: &vault::Error) -> Option<&'static Row> {
    Some(row(Source::Login, &e.answer())).filter(|r| matches!(r.answer, Pattern::Text(_)))
}

/// What to do when a login's deadline ended on this error (the run's last line, exit 69).
pub fn advice(last: &vault::Error) -> Option<String> {
    if let Some(advice) = redirect_advice(last) {
        return Some(advice);
    }
    let row = login_row(last).filter(|r| r.retries == Retries::UntilDeadline)?;
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
        login_row(&answer(status, message)).map(|r| r.meaning)
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
        // Every text row is reached by at least one of Vault's texts.
        let texts = TABLE.iter().enumerate();
        for (i, row) in texts.filter(|(_, r)| matches!(r.answer, Pattern::Text(_))) {
            assert!(
                cases
                    .iter()
                    .any(|(m, _)| std::ptr::eq(login_row(&answer(400, m)).unwrap(), row)),
                "row {i} ({:?}) has no case",
                row.answer
            );
        }
    }

    fn http(class: Transport) -> http::Error {
        let url = "http://169.254.169.254/latest/api/token";
        let class = match class {
            Transport::Broken => http::Class::Broken,
            Transport::Untrusted => http::Class::Untrusted,
            Transport::Garbled => http::Class::Garbled,
            Transport::Redirect => http::Class::Redirect(307),
        };
        http::Error::new(url, class, "vault-0:8200".into())
    }

    #[test]
    fn every_row_of_statuses_and_transport_decides_as_written() {
        use Source::*;
        let retry = Retries::UntilDeadline;
        let last = Retries::No;
        let once = Retries::Few {
            times: 1,
            pause: Duration::ZERO,
        };
        let (gone, malformed, refused) = (Kind::Unavailable, Kind::Malformed, Kind::Refused);
        let seal = ["Vault is sealed".to_string()];
        let storage = ["storage: i/o timeout".to_string()];
        let nonce = ["client nonce mismatch".to_string()];
        let quota = ["request path \"auth/aws/login\": rate limit quota exceeded".to_string()];
        let none: &[String] = &[];
        let status = |status, messages| Problem::Status { status, messages };
        let (broken, tls) = (http(Transport::Broken), http(Transport::Untrusted));
        let (large, redirect) = (http(Transport::Garbled), http(Transport::Redirect));
        let garbage = http::Error::new("u", http::Class::Garbled, "SSH-2.0".into());
        let cases: Vec<(Source, Problem<'_>, Retries, Kind)> = vec![
            (Imds, Problem::Transport(&broken), retry, gone),
            (Login, Problem::Transport(&broken), retry, gone),
            (Vault, Problem::Transport(&tls), last, gone),
            (Imds, Problem::Transport(&large), last, malformed),
            (Vault, Problem::Transport(&garbage), last, malformed),
            (Vault, Problem::Transport(&redirect), retry, gone),
            (Login, Problem::Transport(&redirect), retry, gone),
            (Imds, Problem::Transport(&redirect), last, malformed),
            (Imds, status(429, none), retry, gone),
            (Login, status(429, &quota), retry, gone),
            (Vault, status(503, &seal), retry, gone),
            (Imds, status(500, none), retry, gone),
            // A secret read's answer is not read for AWS's texts.
            (Vault, status(500, &storage), retry, gone),
            (Vault, status(412, none), retry, gone),
            (Imds, status(412, none), last, gone),
            (Imds, status(401, none), once, gone),
            (Vault, status(401, none), last, refused),
            (Imds, status(403, none), last, gone),
            (Imds, status(404, none), last, gone),
            (Vault, status(403, none), last, refused),
            (Vault, status(400, &nonce), last, refused),
            (Login, status(404, none), last, refused),
            (Imds, Problem::Unusable, last, malformed),
            (Login, Problem::Unusable, last, malformed),
        ];
        for (source, answer, action, kind) in &cases {
            let row = row(*source, answer);
            assert_eq!(
                (row.retries, row.kind),
                (*action, *kind),
                "{source:?} {answer:?}"
            );
            assert_eq!(super::kind(*source, answer), *kind);
            assert_eq!(row.meaning, Meaning::Plain, "{source:?} {answer:?}");
        }
        let others = TABLE.iter().enumerate();
        for (i, r) in others.filter(|(_, r)| !matches!(r.answer, Pattern::Text(_))) {
            assert!(
                cases.iter().any(|(s, a, ..)| std::ptr::eq(row(*s, a), r)),
                "row {i} ({:?} from {:?}) has no case",
                r.answer,
                r.from
            );
        }
    }

    #[test]
    fn a_few_retries_are_counted_and_retry_after_is_honoured() {
        let mut judge = Judge::new(Source::Imds);
        let expired = Problem::Status {
            status: 401,
            messages: &[],
        };
        let zero = Some(Duration::ZERO);
        assert_eq!(
            judge.verdict(&expired, None),
            Verdict::Transient { retry_after: zero }
        );
        assert_eq!(judge.verdict(&expired, None), Verdict::Fatal);
        let limited = Problem::Status {
            status: 429,
            messages: &[],
        };
        let after = Some(Duration::from_secs(3));
        assert_eq!(
            judge.verdict(&limited, after),
            Verdict::Refused {
                retry_after: after,
                weight: QUOTA_WEIGHT
            }
        );
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
        let mut judge = Judge::new(Source::Login);
        assert_eq!(
            judge.vault(&answer(403, "permission denied")),
            Verdict::Fatal
        );
        assert!(matches!(
            judge.vault(&answer(503, "Vault is sealed")),
            Verdict::Transient { .. }
        ));
    }

    #[test]
    fn verdicts_follow_the_meaning() {
        let mut judge = Judge::new(Source::Login);
        let throttled = answer(
            400,
            &describe("RequestLimitExceeded: Request limit exceeded. status code: 503"),
        );
        // Throttling weighs more than a quota's 429: it cost an AWS call.
        for _ in 0..50 {
            assert_eq!(
                judge.vault(&throttled),
                Verdict::Refused {
                    retry_after: None,
                    weight: AWS_THROTTLED_WEIGHT
                }
            );
        }
        // AWS failing (not throttling) is a blind failure: the normal back-off.
        let failing = answer(400, &describe("InternalError: oops status code: 500"));
        assert_eq!(
            judge.vault(&failing),
            Verdict::Transient { retry_after: None }
        );
        // A refusal behind a 5xx is still a refusal.
        assert_eq!(
            judge.vault(&answer(
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
                judge.vault(&not_found),
                Verdict::Transient {
                    retry_after: Some(NOT_YET_KNOWN_PAUSE)
                }
            );
        }
        assert_eq!(judge.vault(&not_found), Verdict::Fatal);
        assert_eq!(
            judge.vault(&answer(400, "client nonce mismatch")),
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
        let redirected = vault::Error::Http(crate::http::Error::new(
            "https://vault.example:8200/v1/secret/data/x",
            crate::http::Class::Redirect(307),
            "vault-0.internal:8200".into(),
        ));
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
