//! HashiCorp Vault simulator (HTTPS only): aws auth (ec2 and iam methods), token self-endpoints,
//! KV v1/v2 reads and PKI issue.

mod aws;
mod data;
mod iam;
mod login;
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
use crate::identity::Signer;
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
    /// PKI issues with an RSA key (Vault's `key_type = "rsa"` role) instead of EC P-256.
    pki_rsa: bool,
    /// Certificates issued so far.
    pki_issued: usize,
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
                pki_rsa: false,
                pki_issued: 0,
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

    /// Issue certificates with RSA keys (PKCS#1 PEM, `private_key_type` "rsa", as a Vault role
    /// with `key_type = "rsa"` does) instead of EC P-256 ones. The keys are two fixed test keys,
    /// used in turn.
    pub fn set_pki_rsa(&self, rsa: bool) {
        self.shared.state.lock().unwrap().pki_rsa = rsa;
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

    /// Time passes for the tokens issued so far: each one's remaining lifetime shrinks by `d`
    /// (so that a test of their TTL need not wait for it).
    pub fn age_tokens(&self, d: Duration) {
        let now = Instant::now();
        for t in self.shared.state.lock().unwrap().tokens.values_mut() {
            t.expires = t.expires.checked_sub(d).unwrap_or(now);
        }
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

    /// Empties STS's bucket now: the next `GetCallerIdentity` is throttled unless a token has
    /// refilled by then (see [`set_get_caller_identity_limit`](Self::set_get_caller_identity_limit)).
    pub fn drain_get_caller_identity_bucket(&self) {
        if let Some(bucket) = self
            .shared
            .state
            .lock()
            .unwrap()
            .aws
            .get_caller_identity
            .as_mut()
        {
            bucket.drain();
        }
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
            login::login(shared, mount, req)
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
            data::data_route(shared, &mut st, m, &segs, vpath, req)
        }
    }
}

fn policy_names(prefixes: &[String]) -> Vec<String> {
    let mut v = vec!["default".to_string()];
    v.extend(prefixes.iter().cloned());
    v
}

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
