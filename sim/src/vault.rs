//! HashiCorp Vault simulator (HTTPS only): aws auth (ec2 and iam methods), token self-endpoints,
//! KV v1/v2 reads and PKI issue.

mod aws;
mod iam;
mod sigv4;

pub use aws::AwsFault;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use crate::ca::TestCa;
use crate::http::{error_json, Control, Request, Response, Server, Transport};
use crate::identity::{SignatureKind, Signer};
use crate::util;

/// Default token TTL (32 days, Vault's default max lease TTL).
pub const DEFAULT_TOKEN_TTL: u64 = 2_764_800;

/// How the Vault simulator is started.
#[derive(Clone)]
pub struct VaultOptions {
    /// Issues the TLS server certificate; its PEM is what the agent must trust.
    pub ca: TestCa,
    /// DNS names in the server certificate; the first one is used in [`VaultSim::url`].
    pub server_names: Vec<String>,
    /// IP addresses in the server certificate.
    pub server_ips: Vec<IpAddr>,
    pub bind: SocketAddr,
    /// Verifies the signed identity documents (share it with the IMDS sim).
    pub signer: Signer,
    /// Serve this (certificate chain PEM, private key PEM) instead of a certificate from `ca`:
    /// for hostile-endpoint tests (e.g. `ca.issue_expired_server_cert(..)`, or a foreign CA).
    pub server_cert: Option<(String, String)>,
}

impl VaultOptions {
    /// A fresh TLS CA, names ["localhost"], IPs [127.0.0.1], bind 127.0.0.1:0.
    pub fn new(signer: &Signer) -> VaultOptions {
        VaultOptions {
            ca: TestCa::new("vaultboot-sim Vault TLS CA"),
            server_names: vec!["localhost".into()],
            server_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            bind: "127.0.0.1:0".parse().unwrap(),
            signer: signer.clone(),
            server_cert: None,
        }
    }
}

/// What happened to the nonce in one ec2 login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceOutcome {
    /// First login, client nonce stored.
    Bound,
    /// First login without a nonce: the server generated one and returned it.
    Generated,
    /// First login with "": reauthentication disabled for good.
    Disabled,
    /// Later login with the stored nonce.
    Reused,
    /// Later login with another nonce: refused.
    Mismatch,
    /// Later login after "" was bound: refused.
    ReauthDisabled,
}

impl NonceOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            NonceOutcome::Bound => "bound",
            NonceOutcome::Generated => "generated",
            NonceOutcome::Disabled => "disabled",
            NonceOutcome::Reused => "reused",
            NonceOutcome::Mismatch => "mismatch",
            NonceOutcome::ReauthDisabled => "reauth-disabled",
        }
    }
}

/// Reported to the login observer for every ec2 login that reached the nonce check.
#[derive(Clone, Debug)]
pub struct LoginEvent {
    pub mount: String,
    pub role: String,
    pub instance_id: String,
    pub nonce: NonceOutcome,
    /// Whether a token was issued.
    pub success: bool,
}

type LoginHook = Arc<dyn Fn(&Value) + Send + Sync>;
type LoginObserver = Arc<dyn Fn(&LoginEvent) + Send + Sync>;

struct Ec2Role {
    bound_ami_id: Option<String>,
    policies: Vec<String>,
    ttl: u64,
}

struct TokenInfo {
    accessor: String,
    /// Path prefixes (after /v1/) this token may use; root may use everything.
    policies: Vec<String>,
    root: bool,
    created: SystemTime,
    expires: Instant,
    ttl: u64,
    revoked: bool,
    meta: Value,
    path: String,
    entity_id: String,
    display_name: String,
}

struct VaultState {
    roles: HashMap<(String, String), Ec2Role>,
    kv1: HashMap<String, Value>,
    kv2: HashMap<(String, String), Vec<(Value, SystemTime)>>,
    pki: HashMap<String, HashSet<String>>,
    omit_ca_chain: bool,
    namespace: Option<String>,
    access_list: HashMap<(String, String), String>,
    tokens: HashMap<String, TokenInfo>,
    logins: u64,
    nonce_mismatches: u64,
    issued: Vec<String>,
    accessors: Vec<String>,
    instance_not_found: usize,
    rate: Option<(u32, Option<u64>)>,
    rate_window: (Instant, u32),
    reject_sha1_pkcs7: bool,
    iam: iam::IamState,
    aws: aws::AwsState,
}

struct VaultShared {
    state: Mutex<VaultState>,
    signer: Signer,
    pki_ca: TestCa,
    login_hook: Mutex<Option<LoginHook>>,
    login_observer: Mutex<Option<LoginObserver>>,
    root_token: String,
}

/// The Vault simulator. Stops its threads when dropped.
pub struct VaultSim {
    addr: SocketAddr,
    url: String,
    control: Control,
    shared: Arc<VaultShared>,
    ca: TestCa,
    server: Option<Server>,
}

fn load_tls(cert_pem: &str, key_pem: &str) -> io::Result<Arc<rustls::ServerConfig>> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("certificate PEM: {e:?}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad(format!("key PEM: {e:?}")))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(cfg))
}

impl VaultSim {
    /// Start serving HTTPS on `opts.bind`.
    pub fn start(opts: VaultOptions) -> io::Result<VaultSim> {
        let (cert_pem, key_pem) = match &opts.server_cert {
            Some(pair) => pair.clone(),
            None => {
                let names: Vec<&str> = opts.server_names.iter().map(|s| s.as_str()).collect();
                opts.ca.issue_server_cert(&names, &opts.server_ips)
            }
        };
        let tls = load_tls(&cert_pem, &key_pem)?;
        let listener = TcpListener::bind(opts.bind)?;
        let addr = listener.local_addr()?;
        let host = match opts.server_names.first() {
            Some(n) => n.clone(),
            None => match addr.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            },
        };
        let url = format!("https://{host}:{}", addr.port());
        let shared = Arc::new(VaultShared {
            state: Mutex::new(VaultState {
                roles: HashMap::new(),
                kv1: HashMap::new(),
                kv2: HashMap::new(),
                pki: HashMap::new(),
                omit_ca_chain: false,
                namespace: None,
                access_list: HashMap::new(),
                tokens: HashMap::new(),
                logins: 0,
                nonce_mismatches: 0,
                issued: Vec::new(),
                accessors: Vec::new(),
                instance_not_found: 0,
                rate: None,
                rate_window: (Instant::now(), 0),
                reject_sha1_pkcs7: false,
                iam: iam::IamState::default(),
                aws: aws::AwsState::default(),
            }),
            signer: opts.signer.clone(),
            pki_ca: TestCa::new("vaultboot-sim PKI Intermediate CA"),
            login_hook: Mutex::new(None),
            login_observer: Mutex::new(None),
            root_token: format!("hvs.{}", util::random_alnum(24)),
        });
        let control = Control::new();
        let s2 = shared.clone();
        let server = Server::start(
            listener,
            Transport::Tls(tls),
            control.clone(),
            Arc::new(move |req: &Request| handle(&s2, req)),
        )?;
        Ok(VaultSim {
            addr,
            url,
            control,
            shared,
            ca: opts.ca,
            server: Some(server),
        })
    }

    /// "https://localhost:PORT" (the first server name).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "https://127.0.0.1:PORT": the address without a name (pair it with a TLS server-name
    /// override, or put the IP in `VaultOptions::server_ips`).
    pub fn ip_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA (PEM) the agent must trust.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// A token allowed everywhere (for operator-style calls, e.g. deleting an access-list entry).
    pub fn root_token(&self) -> String {
        let mut st = self.shared.state.lock().unwrap();
        let t = self.shared.root_token.clone();
        st.tokens.entry(t.clone()).or_insert_with(|| TokenInfo {
            accessor: util::random_alnum(24),
            policies: vec![],
            root: true,
            created: SystemTime::now(),
            expires: Instant::now() + Duration::from_secs(100 * 365 * 86_400),
            ttl: 0,
            revoked: false,
            meta: Value::Null,
            path: "auth/token/root".into(),
            entity_id: String::new(),
            display_name: "root".into(),
        });
        t
    }

    /// Define an ec2 role on the aws auth `mount`. `policies` are path prefixes (after /v1/)
    /// that the role's tokens may use.
    pub fn add_ec2_role(
        &self,
        mount: &str,
        role: &str,
        bound_ami_id: Option<&str>,
        policies: &[&str],
    ) {
        self.shared.state.lock().unwrap().roles.insert(
            (mount.to_string(), role.to_string()),
            Ec2Role {
                bound_ami_id: bound_ami_id.map(|s| s.to_string()),
                policies: policies.iter().map(|s| s.to_string()).collect(),
                ttl: DEFAULT_TOKEN_TTL,
            },
        );
    }

    /// TTL of tokens issued for this role from now on.
    pub fn set_role_token_ttl(&self, mount: &str, role: &str, ttl: Duration) {
        if let Some(r) = self
            .shared
            .state
            .lock()
            .unwrap()
            .roles
            .get_mut(&(mount.to_string(), role.to_string()))
        {
            r.ttl = ttl.as_secs();
        }
    }

    /// A KV v1 secret at `GET /v1/<path>`.
    pub fn put_kv1(&self, path: &str, data: Value) {
        let mut st = self.shared.state.lock().unwrap();
        collect_strings(&data, &mut st.issued);
        st.kv1.insert(path.trim_matches('/').to_string(), data);
    }

    /// A new version of a KV v2 secret at `GET /v1/<mount>/data/<path>`.
    pub fn put_kv2(&self, mount: &str, path: &str, data: Value) {
        let mut st = self.shared.state.lock().unwrap();
        collect_strings(&data, &mut st.issued);
        st.kv2
            .entry((
                mount.trim_matches('/').to_string(),
                path.trim_matches('/').to_string(),
            ))
            .or_default()
            .push((data, SystemTime::now()));
    }

    /// Enable PKI `issue` for `role` on `mount` (POST /v1/<mount>/issue/<role>).
    pub fn enable_pki(&self, mount: &str, role: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .pki
            .entry(mount.trim_matches('/').to_string())
            .or_default()
            .insert(role.to_string());
    }

    /// Leave `ca_chain` out of PKI answers (Vault before 1.11 with a root CA).
    pub fn set_pki_omit_ca_chain(&self, omit: bool) {
        self.shared.state.lock().unwrap().omit_ca_chain = omit;
    }

    /// The CA (PEM) that signs PKI-issued certificates (not the TLS CA).
    pub fn pki_ca_pem(&self) -> String {
        self.shared.pki_ca.cert_pem()
    }

    /// When set, requests without `X-Vault-Namespace: ns` get 404.
    pub fn require_namespace(&self, ns: Option<&str>) {
        self.shared.state.lock().unwrap().namespace = ns.map(|s| s.trim_matches('/').to_string());
    }

    /// Refuse `/pkcs7` (SHA-1) documents, as Vault 1.12+ does by default.
    pub fn set_reject_sha1_pkcs7(&self, reject: bool) {
        self.shared.state.lock().unwrap().reject_sha1_pkcs7 = reject;
    }

    /// The nonce the identity access list holds for this instance ("" = reauthentication disabled).
    pub fn client_nonce(&self, mount: &str, instance_id: &str) -> Option<String> {
        self.shared
            .state
            .lock()
            .unwrap()
            .access_list
            .get(&(mount.to_string(), instance_id.to_string()))
            .cloned()
    }

    /// `vault delete auth/<mount>/identity-accesslist/<instance-id>`
    pub fn delete_access_list_entry(&self, mount: &str, instance_id: &str) -> bool {
        self.shared
            .state
            .lock()
            .unwrap()
            .access_list
            .remove(&(mount.to_string(), instance_id.to_string()))
            .is_some()
    }

    /// Bind `""` to this instance, as a first login with an empty nonce (or a role with
    /// `disallow_reauthentication`) does: every later login is refused.
    pub fn disable_reauthentication(&self, mount: &str, instance_id: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .access_list
            .insert((mount.to_string(), instance_id.to_string()), String::new());
    }

    pub fn nonce_mismatches(&self) -> u64 {
        self.shared.state.lock().unwrap().nonce_mismatches
    }

    /// Successful logins.
    pub fn logins(&self) -> u64 {
        self.shared.state.lock().unwrap().logins
    }

    /// Login tokens issued and not revoked (expired ones included).
    pub fn live_tokens(&self) -> usize {
        let st = self.shared.state.lock().unwrap();
        st.tokens.values().filter(|t| !t.root && !t.revoked).count()
    }

    pub fn revoked_tokens(&self) -> usize {
        let st = self.shared.state.lock().unwrap();
        st.tokens.values().filter(|t| t.revoked).count()
    }

    /// Every token, nonce, secret value and private key handed out (or stored to hand out):
    /// tests scan logs for them. Strings shorter than 4 characters are left out. Token
    /// accessors are not secrets (the contract logs them): see [`VaultSim::issued_accessors`].
    pub fn issued_secrets(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().issued.clone()
    }

    /// The accessors of the tokens issued by logins, in order.
    pub fn issued_accessors(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().accessors.clone()
    }

    /// Called with the login body when a login request arrives, before it is processed.
    pub fn set_login_hook(&self, hook: Box<dyn Fn(&Value) + Send + Sync>) {
        *self.shared.login_hook.lock().unwrap() = Some(Arc::from(hook));
    }

    /// Called after every ec2 login that reached the nonce check.
    pub fn set_login_observer(&self, observer: Box<dyn Fn(&LoginEvent) + Send + Sync>) {
        *self.shared.login_observer.lock().unwrap() = Some(Arc::from(observer));
    }

    /// The next `times` ec2 logins fail with EC2's eventual-consistency "InvalidInstanceID.NotFound".
    pub fn set_instance_not_found(&self, times: usize) {
        self.shared.state.lock().unwrap().instance_not_found = times;
    }

    /// More than `per_second` login requests in one second get 429 (with Retry-After when given).
    /// `per_second = 0` turns the limit off.
    pub fn set_login_rate_limit(&self, per_second: u32, retry_after_secs: Option<u64>) {
        let mut st = self.shared.state.lock().unwrap();
        st.rate = if per_second == 0 {
            None
        } else {
            Some((per_second, retry_after_secs))
        };
        st.rate_window = (Instant::now(), 0);
    }

    /// EC2's API throttling behind Vault: each ec2 login makes one `DescribeInstances` call,
    /// which EC2 allows `burst` at once, refilled at `per_second` (AWS documents 100 and 20 for
    /// the Describe* actions of an account and region). Beyond it the login gets Vault's 400
    /// quoting `RequestLimitExceeded`, as once Vault's SDK retries are spent. `burst = 0`
    /// (the default): no limit.
    pub fn set_describe_instances_limit(&self, burst: u32, per_second: f64) {
        self.shared.state.lock().unwrap().aws.describe_instances =
            (burst > 0).then(|| aws::TokenBucket::new(burst, per_second));
    }

    /// STS's throttling behind Vault: each iam login makes one `GetCallerIdentity` call;
    /// beyond `burst` at once and `per_second` the login gets Vault's 400 relaying STS's
    /// `Throttling` / `Rate exceeded`. `burst = 0` (the default): no limit.
    pub fn set_get_caller_identity_limit(&self, burst: u32, per_second: f64) {
        self.shared.state.lock().unwrap().aws.get_caller_identity =
            (burst > 0).then(|| aws::TokenBucket::new(burst, per_second));
    }

    /// The next `times` logins of the fault's method (ec2 or iam) that reach Vault's AWS call
    /// fail with it, with Vault's text.
    pub fn inject_aws_fault(&self, fault: AwsFault, times: usize) {
        self.shared
            .state
            .lock()
            .unwrap()
            .aws
            .faults
            .push_back((fault, times));
    }

    /// AWS calls made behind logins: (DescribeInstances, of which throttled,
    /// GetCallerIdentity, of which throttled).
    pub fn aws_calls(&self) -> (u64, u64, u64, u64) {
        let st = self.shared.state.lock().unwrap();
        (
            st.aws.describe_calls,
            st.aws.describe_throttled,
            st.aws.sts_calls,
            st.aws.sts_throttled,
        )
    }

    /// Stop serving (also done on drop).
    pub fn shutdown(mut self) {
        if let Some(mut s) = self.server.take() {
            s.shutdown();
        }
    }
}

impl Drop for VaultSim {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.len() >= 4 => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

fn envelope(data: Value, lease_duration: u64) -> Value {
    json!({
        "request_id": util::uuid(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

fn not_found() -> Response {
    Response::json(404, &json!({ "errors": [] }))
}

fn permission_denied() -> Response {
    error_json(403, "permission denied")
}

fn handle(shared: &VaultShared, req: &Request) -> Response {
    let path = req.path_only();
    let Some(vpath) = path.strip_prefix("/v1/") else {
        return not_found();
    };
    if req.header("x-vault-request") != Some("true") {
        return error_json(400, "missing X-Vault-Request header");
    }
    {
        let st = shared.state.lock().unwrap();
        if let Some(ns) = &st.namespace {
            let got = req.header("x-vault-namespace").map(|v| v.trim_matches('/'));
            if got != Some(ns.as_str()) {
                return not_found();
            }
        }
    }
    let segs: Vec<&str> = vpath.split('/').collect();
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("POST" | "PUT", ["auth", mount, "login"]) if *mount != "token" => {
            login(shared, mount, req)
        }
        ("GET", ["auth", "token", "lookup-self"]) => with_token(shared, req, lookup_self),
        ("POST" | "PUT", ["auth", "token", "revoke-self"]) => with_token(shared, req, |st, tok| {
            if let Some(t) = st.tokens.get_mut(tok) {
                t.revoked = true;
            }
            Response::empty(204)
        }),
        ("POST" | "PUT", ["auth", "token", "renew-self"]) => with_token(shared, req, |st, tok| {
            let t = st.tokens.get_mut(tok).expect("checked");
            t.expires = Instant::now() + Duration::from_secs(t.ttl);
            let auth = json!({
                "client_token": tok, "accessor": t.accessor, "policies": policy_names(&t.policies),
                "token_policies": policy_names(&t.policies), "metadata": t.meta,
                "lease_duration": t.ttl, "renewable": true, "entity_id": t.entity_id,
                "token_type": "service", "orphan": true,
            });
            let mut env = envelope(Value::Null, 0);
            env["auth"] = auth;
            Response::json(200, &env)
        }),
        _ => {
            let mut st = shared.state.lock().unwrap();
            let tok = match token_ok(&st, req) {
                Ok(t) => t,
                Err(r) => return r,
            };
            let info = &st.tokens[&tok];
            if !info.root && !info.policies.iter().any(|p| vpath.starts_with(p.as_str())) {
                return permission_denied();
            }
            data_route(shared, &mut st, m, &segs, vpath, req)
        }
    }
}

fn policy_names(prefixes: &[String]) -> Vec<String> {
    let mut v = vec!["default".to_string()];
    v.extend(prefixes.iter().cloned());
    v
}

/// The valid token in the request, or the 403 answer.
fn token_ok(st: &VaultState, req: &Request) -> Result<String, Response> {
    let tok = req.header("x-vault-token").ok_or_else(permission_denied)?;
    match st.tokens.get(tok) {
        Some(t) if !t.revoked && t.expires > Instant::now() => Ok(tok.to_string()),
        _ => Err(permission_denied()),
    }
}

fn with_token(
    shared: &VaultShared,
    req: &Request,
    f: impl FnOnce(&mut VaultState, &str) -> Response,
) -> Response {
    let mut st = shared.state.lock().unwrap();
    match token_ok(&st, req) {
        Ok(tok) => f(&mut st, &tok),
        Err(r) => r,
    }
}

fn lookup_self(st: &mut VaultState, tok: &str) -> Response {
    let t = &st.tokens[tok];
    let now = Instant::now();
    let remaining = if t.root {
        0
    } else {
        t.expires.saturating_duration_since(now).as_secs()
    };
    let data = json!({
        "accessor": t.accessor,
        "creation_time": t.created.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "creation_ttl": t.ttl,
        "display_name": t.display_name,
        "entity_id": t.entity_id,
        "expire_time": if t.root { Value::Null } else { Value::String(util::rfc3339(SystemTime::now() + Duration::from_secs(remaining))) },
        "explicit_max_ttl": 0,
        "id": tok,
        "issue_time": util::rfc3339(t.created),
        "meta": t.meta,
        "num_uses": 0,
        "orphan": true,
        "path": t.path,
        "policies": if t.root { vec!["root".to_string()] } else { policy_names(&t.policies) },
        "renewable": !t.root,
        "ttl": remaining,
        "type": "service",
    });
    Response::json(200, &envelope(data, 0))
}

fn data_route(
    shared: &VaultShared,
    st: &mut VaultState,
    method: &str,
    segs: &[&str],
    vpath: &str,
    req: &Request,
) -> Response {
    // Operator: delete an identity access-list entry.
    if let ("DELETE", ["auth", mount, "identity-accesslist", id]) = (method, segs) {
        st.access_list.remove(&(mount.to_string(), id.to_string()));
        return Response::empty(204);
    }
    // PKI issue.
    if let [mount, "issue", role] = segs {
        if let Some(roles) = st.pki.get(*mount) {
            if method != "POST" && method != "PUT" {
                return error_json(405, "unsupported operation");
            }
            if !roles.contains(*role) {
                return error_json(400, &format!("unknown role: {role}"));
            }
            return pki_issue(shared, st, req);
        }
    }
    if method != "GET" {
        return if st.kv1.contains_key(vpath) {
            error_json(405, "unsupported operation")
        } else {
            not_found()
        };
    }
    if let Some(v) = st.kv1.get(vpath) {
        return Response::json(200, &envelope(v.clone(), DEFAULT_TOKEN_TTL));
    }
    // KV v2: <mount>/data/<path>
    if let Some(pos) = segs.iter().position(|s| *s == "data") {
        if pos > 0 && pos + 1 < segs.len() {
            let mount = segs[..pos].join("/");
            let path = segs[pos + 1..].join("/");
            if let Some(versions) = st.kv2.get(&(mount, path)) {
                let want = req.query().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("version="))
                        .and_then(|v| v.parse::<usize>().ok())
                });
                let n = match want {
                    Some(0) | None => versions.len(),
                    Some(n) => n,
                };
                let Some((data, created)) = versions.get(n.wrapping_sub(1)) else {
                    return not_found();
                };
                let d = json!({
                    "data": data,
                    "metadata": {
                        "created_time": util::rfc3339_nanos(*created),
                        "custom_metadata": null,
                        "deletion_time": "",
                        "destroyed": false,
                        "version": n,
                    }
                });
                return Response::json(200, &envelope(d, 0));
            }
        }
    }
    not_found()
}

fn pki_issue(shared: &VaultShared, st: &mut VaultState, req: &Request) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        _ if req.body.is_empty() => json!({}),
        _ => return error_json(400, "failed to parse JSON input"),
    };
    let field = |k: &str| -> Option<String> {
        match body.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    };
    let cn = match field("common_name") {
        Some(cn) if !cn.trim().is_empty() => cn.trim().to_string(),
        _ => {
            return error_json(
                400,
                "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false",
            )
        }
    };
    let ttl = match field("ttl") {
        None => 72 * 3600,
        Some(t) => match util::parse_vault_duration(&t) {
            Some(s) if s > 0 => s,
            _ => return error_json(400, &format!("error parsing ttl: invalid duration {t:?}")),
        },
    };
    let mut dns: Vec<String> = Vec::new();
    let mut ips: Vec<IpAddr> = Vec::new();
    match cn.parse::<IpAddr>() {
        Ok(ip) => ips.push(ip),
        Err(_) => dns.push(cn.clone()),
    }
    for n in field("alt_names").unwrap_or_default().split(',') {
        let n = n.trim();
        if !n.is_empty() && !dns.iter().any(|d| d == n) {
            dns.push(n.to_string());
        }
    }
    for s in field("ip_sans").unwrap_or_default().split(',') {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        match s.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => {
                return error_json(400, &format!("the value {s:?} is not a valid IP address"))
            }
        }
    }
    let dns_refs: Vec<&str> = dns.iter().map(|s| s.as_str()).collect();
    let now = SystemTime::now();
    let c = shared.pki_ca.issue(
        &cn,
        &dns_refs,
        &ips,
        now - Duration::from_secs(30),
        now + Duration::from_secs(ttl),
        true,
    );
    st.issued.push(c.key_pem.clone());
    let issuing = shared.pki_ca.cert_pem().trim_end().to_string();
    let mut data = json!({
        "certificate": c.cert_pem.trim_end(),
        "issuing_ca": issuing,
        "ca_chain": [issuing],
        "private_key": c.key_pem.trim_end(),
        "private_key_type": "ec",
        "serial_number": c.serial,
        "expiration": c.not_after,
    });
    if st.omit_ca_chain {
        data.as_object_mut().unwrap().remove("ca_chain");
    }
    Response::json(200, &envelope(data, 0))
}

fn login(shared: &VaultShared, mount: &str, req: &Request) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error_json(400, "failed to parse JSON input"),
    };
    let hook = shared.login_hook.lock().unwrap().clone();
    if let Some(h) = hook {
        h(&body);
    }
    let (resp, event) = {
        let mut st = shared.state.lock().unwrap();
        login_locked(shared, &mut st, mount, &body)
    };
    if let Some(ev) = event {
        let obs = shared.login_observer.lock().unwrap().clone();
        if let Some(o) = obs {
            o(&ev);
        }
    }
    resp
}

fn login_locked(
    shared: &VaultShared,
    st: &mut VaultState,
    mount: &str,
    body: &Value,
) -> (Response, Option<LoginEvent>) {
    // Rate-limit quota first, as Vault applies quotas before the handler.
    if let Some((per_second, retry_after)) = st.rate {
        let now = Instant::now();
        if now.duration_since(st.rate_window.0) >= Duration::from_secs(1) {
            st.rate_window = (now, 0);
        }
        st.rate_window.1 += 1;
        if st.rate_window.1 > per_second {
            let mut r = error_json(
                429,
                &format!("request path \"auth/{mount}/login\": rate limit quota exceeded"),
            );
            if let Some(s) = retry_after {
                r = r.with_header("Retry-After", &s.to_string());
            }
            return (r, None);
        }
    }
    if !st.roles.keys().any(|(m, _)| m == mount) && !st.iam.has_mount(mount) {
        return (not_found(), None);
    }
    let obj = body.as_object().expect("object");
    let is_iam = obj.keys().any(|k| k.starts_with("iam_"));
    let method = if is_iam {
        "iam"
    } else if obj.contains_key("pkcs7") {
        "ec2-pkcs7"
    } else if obj.contains_key("identity") || obj.contains_key("signature") {
        "ec2-identity"
    } else {
        "none"
    };
    match method {
        // SigV4-signed sts:GetCallerIdentity, checked as Vault and STS do (vault/iam.rs).
        "iam" => iam::login(st, mount, obj),
        "ec2-identity" => (
            error_json(
                400,
                "ec2 login with identity + signature is not supported by this simulator; send pkcs7",
            ),
            None,
        ),
        "ec2-pkcs7" => ec2_login(shared, st, mount, obj),
        _ => (
            error_json(
                400,
                "either pkcs7 or a tuple containing the instance identity document and its SHA256 RSA signature needs to be provided",
            ),
            None,
        ),
    }
}

fn ec2_login(
    shared: &VaultShared,
    st: &mut VaultState,
    mount: &str,
    obj: &serde_json::Map<String, Value>,
) -> (Response, Option<LoginEvent>) {
    let err = |code: u16, msg: &str| (error_json(code, msg), None);
    let Some(pkcs7) = obj.get("pkcs7").and_then(|v| v.as_str()) else {
        return err(400, "failed to parse JSON input: pkcs7 must be a string");
    };
    let (kind, doc) = match shared.signer.verify(pkcs7) {
        Ok(x) => x,
        Err(e) => {
            return err(
                400,
                &format!("failed to verify the instance identity document using pkcs7: {e:?}"),
            )
        }
    };
    if kind == SignatureKind::Pkcs7 && st.reject_sha1_pkcs7 {
        return err(
            400,
            "failed to verify the instance identity document using pkcs7: x509: cannot verify signature: insecure algorithm SHA1-RSA",
        );
    }
    let doc: Value = match serde_json::from_str(&doc) {
        Ok(v) => v,
        Err(_) => return err(400, "failed to parse the instance identity document"),
    };
    let g = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (instance_id, ami, account, region) =
        (g("instanceId"), g("imageId"), g("accountId"), g("region"));
    let role_name = match obj.get("role").and_then(|v| v.as_str()) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => ami.clone(),
    };
    let Some(role) = st.roles.get(&(mount.to_string(), role_name.clone())) else {
        if st.iam.has_role(mount, &role_name) {
            return err(
                400,
                &format!("auth method ec2 not allowed for role {role_name}"),
            );
        }
        return err(400, &format!("entry for role {role_name:?} not found"));
    };
    let (bound_ami, policies, ttl) = (role.bound_ami_id.clone(), role.policies.clone(), role.ttl);
    // validateInstance: EC2 DescribeInstances (before the access list: a failure here binds
    // no nonce).
    if st.instance_not_found > 0 {
        st.instance_not_found -= 1;
        return err(
            400,
            &aws::AwsFault::NotFound.message(&instance_id, &account, &region),
        );
    }
    if let Some(fault) = st.aws.take_fault(true) {
        return err(400, &fault.message(&instance_id, &account, &region));
    }
    if !st.aws.describe_instances() {
        return err(
            400,
            &aws::AwsFault::Ec2Throttled.message(&instance_id, &account, &region),
        );
    }
    if let Some(b) = bound_ami {
        if b != ami {
            return err(
                400,
                &format!(
                    "Error validating instance: AMI ID {ami:?} does not belong to role {role_name:?}"
                ),
            );
        }
    }
    let given = match obj.get("nonce") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return err(400, "failed to parse JSON input: nonce must be a string"),
    };
    if let Some(n) = &given {
        if n.len() > 128 {
            return err(400, "client nonce exceeding the limit of 128 characters");
        }
    }
    let key = (mount.to_string(), instance_id.clone());
    let mut event = LoginEvent {
        mount: mount.to_string(),
        role: role_name.clone(),
        instance_id: instance_id.clone(),
        nonce: NonceOutcome::Reused,
        success: false,
    };
    let mut returned_nonce = None;
    match st.access_list.get(&key) {
        Some(stored) if stored.is_empty() => {
            event.nonce = NonceOutcome::ReauthDisabled;
            return (
                error_json(
                    400,
                    "reauthentication is disabled; delete the identity access-list entry to log in again",
                ),
                Some(event),
            );
        }
        Some(stored) => {
            if given.as_deref() != Some(stored.as_str()) {
                st.nonce_mismatches += 1;
                event.nonce = NonceOutcome::Mismatch;
                return (error_json(400, "client nonce mismatch"), Some(event));
            }
            event.nonce = NonceOutcome::Reused;
        }
        None => match given {
            Some(n) => {
                event.nonce = if n.is_empty() {
                    NonceOutcome::Disabled
                } else {
                    NonceOutcome::Bound
                };
                if !n.is_empty() {
                    st.issued.push(n.clone());
                }
                st.access_list.insert(key, n);
            }
            None => {
                let n = util::uuid();
                st.issued.push(n.clone());
                st.access_list.insert(key, n.clone());
                returned_nonce = Some(n);
                event.nonce = NonceOutcome::Generated;
            }
        },
    }
    let token = format!("hvs.{}", util::random_alnum(24));
    let accessor = util::random_alnum(24);
    let entity_id = util::uuid();
    let mut meta = json!({
        "account_id": account,
        "ami_id": ami,
        "instance_id": instance_id,
        "region": region,
        "role": role_name,
        "role_tag_max_ttl": "0s",
    });
    if let Some(n) = &returned_nonce {
        meta["nonce"] = Value::String(n.clone());
    }
    st.issued.push(token.clone());
    st.accessors.push(accessor.clone());
    st.tokens.insert(
        token.clone(),
        TokenInfo {
            accessor: accessor.clone(),
            policies: policies.clone(),
            root: false,
            created: SystemTime::now(),
            expires: Instant::now() + Duration::from_secs(ttl),
            ttl,
            revoked: false,
            meta: meta.clone(),
            path: format!("auth/{mount}/login"),
            entity_id: entity_id.clone(),
            display_name: format!("{mount}-{instance_id}"),
        },
    );
    st.logins += 1;
    event.success = true;
    let mut env = envelope(Value::Null, 0);
    env["auth"] = json!({
        "client_token": token,
        "accessor": accessor,
        "policies": policy_names(&policies),
        "token_policies": policy_names(&policies),
        "metadata": meta,
        "lease_duration": ttl,
        "renewable": true,
        "entity_id": entity_id,
        "token_type": "service",
        "orphan": true,
        "mfa_requirement": null,
        "num_uses": 0,
    });
    (Response::json(200, &env), Some(event))
}
