//! The aws auth method's iam login: what Vault checks (builtin/credential/aws/path_login.go,
//! path_config_client.go) and what STS then checks when Vault replays the signed
//! `sts:GetCallerIdentity` (SigV4, see `sigv4.rs`), with Vault's and STS's error texts.
//!
//! STS is simulated in-process: the simulator knows each access key's secret key
//! ([`VaultSim::add_iam_credentials`]) and recomputes the signature over the headers that were
//! sent and signed. Every refusal is an HTTP 400 from Vault, as Vault answers them (STS's own
//! status and XML error are quoted inside Vault's message).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::aws::AwsFault;
use super::login::grant_token;
use super::sigv4;
use super::DEFAULT_TOKEN_TTL;
use super::{envelope, LoginEvent, VaultSim, VaultState};
use crate::http::{error_json, Response};
use crate::util;

/// The header Vault compares with `iam_server_id_header_value`.
pub const SERVER_ID_HEADER: &str = "X-Vault-AWS-IAM-Server-ID";
/// STS accepts a signature dated up to 15 minutes either side of its clock.
const MAX_SKEW_SECS: i64 = 15 * 60;
/// `X-Amz-*` headers Vault always allows (path_config_client.go); others need
/// `allowed_sts_header_values`.
const DEFAULT_ALLOWED_STS_HEADERS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Content-Sha256",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
];

type LoginRewrite = Arc<dyn Fn(&mut Value) + Send + Sync>;
/// What [`VaultSim::set_iam_login_rewrite`] takes.
type Rewrite = Box<dyn Fn(&mut Value) + Send + Sync>;

/// The iam part of the simulator's state (inside `VaultState`).
#[derive(Default)]
pub(super) struct IamState {
    /// access key id → what STS knows about it.
    credentials: HashMap<String, StsCredentials>,
    roles: HashMap<(String, String), IamRole>,
    /// mount → `auth/<mount>/config/client`.
    clients: HashMap<String, ClientConfig>,
    /// STS's clock is this many seconds ahead of the host's (negative: behind).
    sts_clock_skew: i64,
    rewrite: Option<LoginRewrite>,
    refusals: Vec<String>,
    signatures_seen: usize,
    replays: Vec<StsReplay>,
}

/// Where Vault sent one replayed `sts:GetCallerIdentity`: its configured endpoint, with the
/// Host header taken from the signed `iam_request_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsReplay {
    pub endpoint: String,
    pub host: String,
}

impl IamState {
    pub(super) fn has_mount(&self, mount: &str) -> bool {
        self.roles.keys().any(|(m, _)| m == mount)
    }

    pub(super) fn has_role(&self, mount: &str, role: &str) -> bool {
        self.roles
            .contains_key(&(mount.to_string(), role.to_string()))
    }
}

struct StsCredentials {
    secret_access_key: String,
    session_token: Option<String>,
    arn: String,
    user_id: String,
}

struct IamRole {
    bound_iam_principal_arn: String,
    policies: Vec<String>,
    role_id: String,
}

#[derive(Clone)]
struct ClientConfig {
    iam_server_id_header_value: Option<String>,
    /// `sts_endpoint`; `None`: Vault's default, the global endpoint.
    sts_endpoint: Option<String>,
    /// The region the configured endpoint serves: the only credential scope its STS accepts.
    sts_region: String,
    allowed_sts_header_values: Vec<String>,
}

impl ClientConfig {
    /// Where Vault sends the replayed request: `sts_endpoint`, or the endpoint of the region
    /// this simulator was told the server's STS serves (`set_sts_region`).
    fn endpoint(&self) -> String {
        match (&self.sts_endpoint, self.sts_region.as_str()) {
            (Some(e), _) => e.clone(),
            (None, "us-east-1") => "https://sts.amazonaws.com".into(),
            (None, region) => format!("https://sts.{region}.amazonaws.com"),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            iam_server_id_header_value: None,
            sts_endpoint: None,
            sts_region: "us-east-1".into(),
            allowed_sts_header_values: Vec::new(),
        }
    }
}

/// iam configuration and observation of the Vault simulator.
impl VaultSim {
    /// Make these credentials known to the simulated STS: `sts:GetCallerIdentity` signed with
    /// them answers `arn` (e.g. `arn:aws:sts::123456789012:assumed-role/web/i-0abc`). With a
    /// `session_token` (instance-profile and other temporary credentials), requests must carry
    /// it in `X-Amz-Security-Token`. The secret key and the token are added to
    /// [`VaultSim::issued_secrets`].
    pub fn add_iam_credentials(
        &self,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
        arn: &str,
    ) {
        let mut st = self.shared.state.lock().unwrap();
        st.issued.push(secret_access_key.to_string());
        if let Some(t) = session_token {
            st.issued.push(t.to_string());
        }
        let session = arn.rsplit('/').next().unwrap_or("");
        let unique = format!("AROA{}", util::random_alnum(17).to_ascii_uppercase());
        let user_id = if arn.contains(":assumed-role/") {
            format!("{unique}:{session}")
        } else {
            unique
        };
        st.iam.credentials.insert(
            access_key_id.to_string(),
            StsCredentials {
                secret_access_key: secret_access_key.to_string(),
                session_token: session_token.map(str::to_string),
                arn: arn.to_string(),
                user_id,
            },
        );
    }

    /// `vault write auth/<mount>/role/<role> auth_type=iam bound_iam_principal_arn=<arn>
    /// policies=…`. The ARN is compared with the caller's canonical ARN (an assumed-role
    /// session `arn:aws:sts::A:assumed-role/R/S` is `arn:aws:iam::A:role/R`); a trailing `*`
    /// matches any suffix; `""` binds no principal. `policies` are path prefixes, as for
    /// [`VaultSim::add_ec2_role`].
    pub fn add_iam_role(
        &self,
        mount: &str,
        role: &str,
        bound_iam_principal_arn: &str,
        policies: &[&str],
    ) {
        self.shared.state.lock().unwrap().iam.roles.insert(
            (mount.to_string(), role.to_string()),
            IamRole {
                bound_iam_principal_arn: bound_iam_principal_arn.to_string(),
                policies: policies.iter().map(|s| s.to_string()).collect(),
                role_id: util::uuid(),
            },
        );
    }

    /// `vault write auth/<mount>/config/client iam_server_id_header_value=<v>`: iam logins
    /// must then carry `X-Vault-AWS-IAM-Server-ID: <v>`, signed. `None` removes the requirement.
    pub fn set_iam_server_id(&self, mount: &str, value: Option<&str>) {
        let mut st = self.shared.state.lock().unwrap();
        st.iam
            .clients
            .entry(mount.to_string())
            .or_default()
            .iam_server_id_header_value = value.map(str::to_string);
    }

    /// `vault write auth/<mount>/config/client sts_region=<r> sts_endpoint=…`: the region the
    /// server's STS endpoint expects signatures for (default `us-east-1`, the global endpoint).
    pub fn set_sts_region(&self, mount: &str, region: &str) {
        let mut st = self.shared.state.lock().unwrap();
        st.iam
            .clients
            .entry(mount.to_string())
            .or_default()
            .sts_region = region.to_string();
    }

    /// `vault write auth/<mount>/config/client sts_endpoint=<endpoint> sts_region=<region>`:
    /// Vault replays every iam login to `endpoint` (keeping the signed Host), whose STS accepts
    /// only signatures scoped to `region` (the region that endpoint serves, e.g.
    /// `https://sts-fips.us-east-1.amazonaws.com` and `us-east-1`). Vault itself compares
    /// neither with the signed URL: a login signed for another region is refused by STS.
    pub fn set_sts_endpoint(&self, mount: &str, endpoint: &str, region: &str) {
        let mut st = self.shared.state.lock().unwrap();
        let config = st.iam.clients.entry(mount.to_string()).or_default();
        config.sts_endpoint = Some(endpoint.to_string());
        config.sts_region = region.to_string();
    }

    /// Every `sts:GetCallerIdentity` Vault replayed to its STS endpoint, oldest first.
    pub fn sts_replays(&self) -> Vec<StsReplay> {
        self.shared.state.lock().unwrap().iam.replays.clone()
    }

    /// `vault write auth/<mount>/config/client allowed_sts_header_values=…`: `X-Amz-*` headers
    /// accepted besides SigV4's own.
    pub fn set_allowed_sts_header_values(&self, mount: &str, headers: &[&str]) {
        let mut st = self.shared.state.lock().unwrap();
        st.iam
            .clients
            .entry(mount.to_string())
            .or_default()
            .allowed_sts_header_values = headers.iter().map(|h| canonical_key(h)).collect();
    }

    /// The simulated STS's clock runs `seconds` ahead of this host's (negative: behind), as
    /// seen from an instance whose clock is wrong.
    pub fn set_sts_clock_skew(&self, seconds: i64) {
        self.shared.state.lock().unwrap().iam.sts_clock_skew = seconds;
    }

    /// A man in the middle: every iam login body is passed through `rewrite` before Vault
    /// looks at it (the recorded request and the login hook see the original). The closure
    /// runs with the simulator's state locked: it must not call back into the `VaultSim`.
    pub fn set_iam_login_rewrite(&self, rewrite: Option<Rewrite>) {
        self.shared.state.lock().unwrap().iam.rewrite = rewrite.map(Arc::from);
    }

    /// The error messages of refused iam logins, oldest first.
    pub fn iam_refusals(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().iam.refusals.clone()
    }

    /// How many iam login signatures reached the simulated STS (each was added to
    /// [`VaultSim::issued_secrets`]).
    pub fn iam_signatures_seen(&self) -> usize {
        self.shared.state.lock().unwrap().iam.signatures_seen
    }
}

/// The `"iam"` arm of the login handler.
pub(super) fn login(
    st: &mut VaultState,
    mount: &str,
    body: &Map<String, Value>,
) -> (Response, Option<LoginEvent>) {
    let mut body = Value::Object(body.clone());
    if let Some(rewrite) = st.iam.rewrite.clone() {
        rewrite(&mut body);
    }
    let empty = Map::new();
    let obj = body.as_object().unwrap_or(&empty);
    match verify(st, mount, obj) {
        Ok(granted) => (issue_token(st, mount, granted), None),
        Err(message) => {
            st.iam.refusals.push(message.clone());
            (error_json(400, &message), None)
        }
    }
}

struct Granted {
    role: String,
    policies: Vec<String>,
    role_id: String,
    caller: Caller,
}

struct Caller {
    arn: String,
    user_id: String,
    account: String,
}

/// Vault's checks in Vault's order, then STS's, then the role's binding.
fn verify(st: &mut VaultState, mount: &str, obj: &Map<String, Value>) -> Result<Granted, String> {
    const FIELDS: [&str; 4] = [
        "iam_http_request_method",
        "iam_request_url",
        "iam_request_body",
        "iam_request_headers",
    ];
    if ["pkcs7", "identity", "signature"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        return Err("supplied auth values for both ec2 and iam auth types".into());
    }
    if !FIELDS.iter().all(|f| obj.contains_key(*f)) {
        return Err("supplied some of the auth values for the iam auth type but not all".into());
    }
    let text = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Null) | None => Ok(String::new()),
            Some(_) => Err(format!(
                "error converting input for field \"{name}\": expected a string"
            )),
        }
    };

    let method = text("iam_http_request_method")?;
    if method.is_empty() {
        return Err("missing iam_http_request_method".into());
    }
    if method != "POST" {
        return Err("invalid iam_http_request_method; currently only 'POST' is supported".into());
    }

    let url_b64 = text("iam_request_url")?;
    if url_b64.is_empty() {
        return Err("missing iam_request_url".into());
    }
    let url = STANDARD
        .decode(url_b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("failed to base64 decode iam_request_url")?;
    let url = ParsedUrl::parse(&url).ok_or("error parsing iam_request_url")?;

    let body_b64 = text("iam_request_body")?;
    if body_b64.is_empty() {
        return Err("missing iam_request_body".into());
    }
    let body = STANDARD
        .decode(body_b64)
        .map_err(|_| "failed to base64 decode iam_request_body")?;
    validate_body(&body)?;

    let headers = parse_headers(obj.get("iam_request_headers").unwrap_or(&Value::Null))?;
    if headers.is_empty() {
        return Err("missing iam_request_headers".into());
    }

    let config = st.iam.clients.get(mount).cloned().unwrap_or_default();
    if let Some(required) = &config.iam_server_id_header_value {
        validate_server_id(&headers, required)
            .map_err(|e| format!("error validating {SERVER_ID_HEADER} header: {e}"))?;
    }
    for (name, _) in &headers {
        if name.starts_with("X-Amz-")
            && !DEFAULT_ALLOWED_STS_HEADERS.contains(&name.as_str())
            && !config.allowed_sts_header_values.contains(name)
        {
            return Err(format!("invalid request header: {name}"));
        }
    }

    // AWS behind Vault: a scripted failure, or STS's own throttling, before STS checks anything.
    let fault = st.aws.take_fault(false);
    if let Some(f @ (AwsFault::StsThrottled | AwsFault::StsUnavailable)) = fault {
        return Err(f.message("", "", &config.sts_region));
    }
    if !st.aws.get_caller_identity() {
        return Err(AwsFault::StsThrottled.message("", "", &config.sts_region));
    }
    let caller = sts_get_caller_identity(st, &config, &url, &body, &headers).map_err(|e| {
        format!(
            "error making upstream request: received error code {} from STS: {}",
            e.status,
            e.xml()
        )
    })?;

    let entity = parse_iam_arn(&caller.arn)
        .map_err(|e| format!("error parsing arn {:?}: {e}", caller.arn))?;
    let role_name = match obj.get("role") {
        Some(Value::String(r)) if !r.is_empty() => r.clone(),
        _ => entity.friendly_name.clone(),
    };
    let key = (mount.to_string(), role_name.clone());
    let Some(role) = st.iam.roles.get(&key) else {
        if st.roles.contains_key(&key) {
            return Err(format!("auth method iam not allowed for role {role_name}"));
        }
        return Err(format!("entry for role {role_name:?} not found"));
    };
    let bound = &role.bound_iam_principal_arn;
    let matches = bound.is_empty()
        || *bound == entity.canonical_arn
        || bound
            .strip_suffix('*')
            .is_some_and(|prefix| entity.canonical_arn.starts_with(prefix));
    if !matches {
        return Err(format!(
            "IAM Principal {:?} does not belong to the role {role_name:?}",
            caller.arn
        ));
    }
    // A role that infers an EC2 instance checks it with DescribeInstances (the session name is
    // the instance id); its failure is reported without the AWS error.
    if let Some(f) = fault {
        let session = caller.arn.rsplit('/').next().unwrap_or("");
        return Err(f.message(session, "", &config.sts_region));
    }
    Ok(Granted {
        role: role_name,
        policies: role.policies.clone(),
        role_id: role.role_id.clone(),
        caller,
    })
}

fn issue_token(st: &mut VaultState, mount: &str, g: Granted) -> Response {
    let ttl = DEFAULT_TOKEN_TTL;
    let canonical = parse_iam_arn(&g.caller.arn)
        .map(|e| e.canonical_arn)
        .unwrap_or_default();
    let friendly = parse_iam_arn(&g.caller.arn)
        .map(|e| e.friendly_name)
        .unwrap_or_default();
    let meta = json!({
        "account_id": g.caller.account,
        "auth_type": "iam",
        "canonical_arn": canonical,
        "client_arn": g.caller.arn,
        "client_user_id": g.caller.user_id.split(':').next().unwrap_or(""),
        "inferred_aws_region": "",
        "inferred_entity_id": "",
        "inferred_entity_type": "",
        "role": g.role,
        "role_id": g.role_id,
    });
    let mut env = envelope(Value::Null, 0);
    env["auth"] = grant_token(st, mount, &friendly, &g.policies, meta, ttl);
    Response::json(200, &env)
}

/// `Action=GetCallerIdentity` and at most a `Version`: nothing else may ride on the signature
/// (Vault's fix for CVE-2020-16250).
fn validate_body(body: &[u8]) -> Result<(), String> {
    let text =
        std::str::from_utf8(body).map_err(|_| "iam_request_body contains unexpected values")?;
    let mut action = false;
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "Action" if v == "GetCallerIdentity" && !action => action = true,
            "Action" => return Err("iam_request_body must have 'Action=GetCallerIdentity'".into()),
            "Version" => {}
            _ => return Err("iam_request_body contains unexpected values".into()),
        }
    }
    if !action {
        return Err("iam_request_body must have 'Action=GetCallerIdentity'".into());
    }
    Ok(())
}

/// `iam_request_headers` as Vault's `TypeHeader` reads it: a JSON object, or a string holding
/// one (base64 first, else raw JSON); each value a string or a list of strings. Keys are
/// canonicalized and merged as Go's `http.Header.Add` does.
fn parse_headers(raw: &Value) -> Result<Vec<(String, Vec<String>)>, String> {
    let object = match raw {
        Value::Object(o) => o.clone(),
        Value::String(s) => {
            let bytes = STANDARD.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec());
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(o)) => o,
                _ => {
                    return Err(
                        "error converting input for field \"iam_request_headers\": not a JSON object of headers"
                            .into(),
                    )
                }
            }
        }
        Value::Null => Map::new(),
        _ => {
            return Err(
                "error converting input for field \"iam_request_headers\": unrecognized type"
                    .into(),
            )
        }
    };
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in object {
        let values: Vec<String> = match value {
            Value::String(s) => vec![s],
            Value::Number(n) => vec![n.to_string()],
            Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(format!("received non-string value for header key:{name}")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(format!("unrecognized type for header {name}")),
        };
        let key = canonical_key(&name);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => existing.extend(values),
            None => out.push((key, values)),
        }
    }
    out.sort();
    Ok(out)
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-amz-date` → `X-Amz-Date`; a key with a byte
/// that is not a token character is left as it is.
fn canonical_key(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

fn header<'h>(headers: &'h [(String, Vec<String>)], key: &str) -> Option<&'h [String]> {
    headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// validateVaultHeaderValue: present, equal, and named in the Authorization's SignedHeaders.
fn validate_server_id(headers: &[(String, Vec<String>)], required: &str) -> Result<(), String> {
    let provided = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(SERVER_ID_HEADER))
        .map(|(_, v)| v.join(","))
        .unwrap_or_default();
    if provided.is_empty() {
        return Err(format!("missing header {SERVER_ID_HEADER:?}"));
    }
    if provided != required {
        return Err(format!("expected {required:?} but got {provided:?}"));
    }
    let Some(authz) = header(headers, "Authorization") else {
        return Err("missing Authorization header".into());
    };
    let authz = authz.join(",");
    // Go: regexp `.*SignedHeaders=([^,]+)` (greedy: the last occurrence).
    let Some(pos) = authz.rfind("SignedHeaders=") else {
        return Err("vault header wasn't signed".into());
    };
    let signed = authz[pos + "SignedHeaders=".len()..]
        .split(',')
        .next()
        .unwrap_or("");
    let wanted = SERVER_ID_HEADER.to_ascii_lowercase();
    if signed.split(';').any(|h| h == wanted) {
        Ok(())
    } else {
        Err("vault header wasn't signed".into())
    }
}

/// `scheme://host[:port]/path?query`, as much of Go's url.Parse as Vault relies on.
struct ParsedUrl {
    host: String,
    path: String,
    query: String,
}

impl ParsedUrl {
    fn parse(url: &str) -> Option<ParsedUrl> {
        let (scheme, rest) = url.split_once("://")?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let host = &rest[..end];
        if host.is_empty() || host.contains(char::is_whitespace) {
            return None;
        }
        let rest = rest[end..].split('#').next().unwrap_or("");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        Some(ParsedUrl {
            host: host.to_string(),
            path: if path.is_empty() { "/" } else { path }.to_string(),
            query: query.to_string(),
        })
    }
}

/// An STS error answer: its status, code and message.
pub(super) struct StsError {
    status: u16,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl StsError {
    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> StsError {
        StsError {
            status,
            kind: "Sender",
            code,
            message: message.into(),
        }
    }

    fn mismatch(message: impl Into<String>) -> StsError {
        StsError::new(403, "SignatureDoesNotMatch", message)
    }

    fn invalid_token() -> StsError {
        StsError::new(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    }

    fn incomplete(message: impl Into<String>) -> StsError {
        StsError::new(400, "IncompleteSignature", message)
    }

    /// The body STS sends (Vault quotes it whole in its error).
    pub(super) fn xml(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
             <Type>{}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
             <RequestId>{}</RequestId>\n</ErrorResponse>\n",
            self.kind,
            self.code,
            esc(&self.message),
            util::uuid()
        )
    }
}

/// What STS does with the replayed request: SigV4 verification against the secret key it
/// knows, the 15-minute window, the credential scope, the session token.
fn sts_get_caller_identity(
    st: &mut VaultState,
    config: &ClientConfig,
    url: &ParsedUrl,
    body: &[u8],
    headers: &[(String, Vec<String>)],
) -> Result<Caller, StsError> {
    st.iam.replays.push(StsReplay {
        endpoint: config.endpoint(),
        host: url.host.clone(),
    });
    let Some(authz) = header(headers, "Authorization") else {
        return Err(StsError::new(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let auth = sigv4::parse_authorization(&authz.join(",")).map_err(StsError::incomplete)?;
    st.issued.push(auth.signature.clone());
    st.iam.signatures_seen += 1;

    let Some(creds) = st.iam.credentials.get(&auth.access_key_id) else {
        return Err(StsError::invalid_token());
    };
    let sent_token = header(headers, "X-Amz-Security-Token").map(|v| v.join(","));
    if sent_token != creds.session_token {
        return Err(StsError::invalid_token());
    }
    if auth.service != "sts" {
        return Err(StsError::mismatch(
            "Credential should be scoped to correct service: 'sts'. ",
        ));
    }
    if auth.terminator != "aws4_request" {
        return Err(StsError::mismatch(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'. ",
            auth.terminator
        )));
    }
    if auth.region != config.sts_region {
        return Err(StsError::mismatch(format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            auth.region
        )));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(StsError::incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let Some(amz_date) = header(headers, "X-Amz-Date").map(|v| v.join(",")) else {
        return Err(StsError::incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    let Some(signed_at) = sigv4::parse_amz_date(&amz_date) else {
        return Err(StsError::incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
        )));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
        + st.iam.sts_clock_skew;
    let fmt = sigv4::format_amz_date;
    if signed_at < now - MAX_SKEW_SECS {
        return Err(StsError::mismatch(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            fmt(now - MAX_SKEW_SECS),
            fmt(now)
        )));
    }
    if signed_at > now + MAX_SKEW_SECS {
        return Err(StsError::mismatch(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            fmt(now + MAX_SKEW_SECS),
            fmt(now)
        )));
    }
    if auth.date != amz_date[..8] {
        return Err(StsError::mismatch(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
            auth.date,
            &amz_date[..8]
        )));
    }

    // The request as it reaches STS: Vault sets Host from the signed URL, Go's client sets
    // Content-Length from the body; every other header is replayed as it was given.
    let mut sent: Vec<(String, Vec<String>)> = headers
        .iter()
        .filter(|(k, _)| k != "Host" && k != "Content-Length")
        .cloned()
        .collect();
    sent.push(("Host".into(), vec![url.host.clone()]));
    sent.push(("Content-Length".into(), vec![body.len().to_string()]));
    let creq = sigv4::canonical_request(
        "POST",
        &url.path,
        &url.query,
        &sent,
        &auth.signed_headers,
        body,
    );
    let to_sign = sigv4::string_to_sign(&amz_date, &auth.scope(), &creq);
    let key = sigv4::signing_key(
        &creds.secret_access_key,
        &auth.date,
        &auth.region,
        &auth.service,
    );
    let expected = sigv4::signature(&key, &to_sign);
    if !sigv4::signatures_match(&expected, &auth.signature) {
        return Err(StsError::mismatch(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ));
    }
    let account = creds.arn.split(':').nth(4).unwrap_or("").to_string();
    Ok(Caller {
        arn: creds.arn.clone(),
        user_id: creds.user_id.clone(),
        account,
    })
}

struct IamEntity {
    canonical_arn: String,
    friendly_name: String,
}

/// parseIamArn: `arn:aws:iam::A:user/N`, `…:role/path/N`, `arn:aws:sts::A:assumed-role/R/S`
/// (canonical: `arn:aws:iam::A:role/R`).
fn parse_iam_arn(arn: &str) -> Result<IamEntity, String> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "unrecognized arn: contains {} colon-separated parts, expected 6",
            parts.len()
        ));
    }
    if parts[0] != "arn" {
        return Err("unrecognized arn: does not begin with \"arn:\"".into());
    }
    if parts[2] != "iam" && parts[2] != "sts" {
        return Err(format!(
            "unrecognized service: {}, not one of iam or sts",
            parts[2]
        ));
    }
    let path: Vec<&str> = parts[5].split('/').collect();
    if path.len() < 2 {
        return Err(format!(
            "unrecognized arn: {:?} contains fewer than 2 slash-separated parts",
            parts[5]
        ));
    }
    let (kind, friendly) = match path[0] {
        "assumed-role" => ("role", path[1]),
        "user" | "role" | "instance-profile" => (path[0], path[path.len() - 1]),
        other => return Err(format!("unrecognized principal type: {other:?}")),
    };
    Ok(IamEntity {
        canonical_arn: format!("arn:{}:iam::{}:{kind}/{friendly}", parts[1], parts[4]),
        friendly_name: friendly.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_canonical_keys() {
        assert_eq!(canonical_key("x-amz-date"), "X-Amz-Date");
        assert_eq!(
            canonical_key("X-VAULT-AWS-IAM-SERVER-ID"),
            "X-Vault-Aws-Iam-Server-Id"
        );
        assert_eq!(canonical_key("bad key"), "bad key");
    }

    #[test]
    fn headers_in_every_form_vault_accepts() {
        let want = vec![
            ("Content-Type".to_string(), vec!["a".to_string()]),
            (
                "X-Amz-Date".to_string(),
                vec!["1".to_string(), "2".to_string()],
            ),
        ];
        let obj = json!({"content-type": "a", "X-Amz-Date": ["1", "2"]});
        assert_eq!(parse_headers(&obj).unwrap(), want);
        let b64 = STANDARD.encode(obj.to_string());
        assert_eq!(parse_headers(&Value::String(b64)).unwrap(), want);
        assert_eq!(
            parse_headers(&Value::String(obj.to_string())).unwrap(),
            want
        );
        assert!(parse_headers(&json!({"a": [{}]})).is_err());
        assert!(parse_headers(&json!(3)).is_err());
        // Names that differ only in case are one header, as Go's http.Header.Add makes them.
        let merged = parse_headers(&json!({"x-a": "1", "X-A": "2"})).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].1.len(), 2);
    }

    #[test]
    fn body_validation() {
        assert!(validate_body(b"Action=GetCallerIdentity&Version=2011-06-15").is_ok());
        assert!(validate_body(b"Action=GetCallerIdentity").is_ok());
        assert!(validate_body(b"Action=AssumeRole&Version=2011-06-15").is_err());
        assert!(validate_body(b"Version=2011-06-15").is_err());
        assert!(validate_body(b"Action=GetCallerIdentity&Action=GetCallerIdentity").is_err());
        assert_eq!(
            validate_body(b"Action=GetCallerIdentity&RoleArn=x").unwrap_err(),
            "iam_request_body contains unexpected values"
        );
    }

    #[test]
    fn server_id_must_be_present_equal_and_signed() {
        let h = |sid: Option<&str>, signed: &str| {
            let mut v = vec![(
                "Authorization".to_string(),
                vec![format!(
                    "AWS4-HMAC-SHA256 Credential=A/20231114/us-east-1/sts/aws4_request, SignedHeaders={signed}, Signature=00"
                )],
            )];
            if let Some(s) = sid {
                v.push(("X-Vault-Aws-Iam-Server-Id".to_string(), vec![s.to_string()]));
            }
            v
        };
        let signed = "host;x-amz-date;x-vault-aws-iam-server-id";
        assert!(validate_server_id(&h(Some("v"), signed), "v").is_ok());
        assert_eq!(
            validate_server_id(&h(None, signed), "v").unwrap_err(),
            "missing header \"X-Vault-AWS-IAM-Server-ID\""
        );
        assert_eq!(
            validate_server_id(&h(Some("w"), signed), "v").unwrap_err(),
            "expected \"v\" but got \"w\""
        );
        assert_eq!(
            validate_server_id(&h(Some("v"), "host;x-amz-date"), "v").unwrap_err(),
            "vault header wasn't signed"
        );
    }

    #[test]
    fn arns() {
        let e = parse_iam_arn("arn:aws:sts::123456789012:assumed-role/web/i-0abc").unwrap();
        assert_eq!(e.canonical_arn, "arn:aws:iam::123456789012:role/web");
        assert_eq!(e.friendly_name, "web");
        let e = parse_iam_arn("arn:aws:iam::123456789012:user/ops/ci").unwrap();
        assert_eq!(e.canonical_arn, "arn:aws:iam::123456789012:user/ci");
        assert!(parse_iam_arn("arn:aws:s3:::bucket").is_err());
        assert!(parse_iam_arn("arn:aws:iam::1:group/g").is_err());
    }

    #[test]
    fn urls() {
        let u = ParsedUrl::parse("https://sts.amazonaws.com/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("sts.amazonaws.com", "/")
        );
        let u = ParsedUrl::parse("https://sts.eu-west-1.amazonaws.com:443?a=b").unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str(), u.query.as_str()),
            ("sts.eu-west-1.amazonaws.com:443", "/", "a=b")
        );
        assert!(ParsedUrl::parse("sts.amazonaws.com").is_none());
    }
}
