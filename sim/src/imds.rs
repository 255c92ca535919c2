//! IMDSv2 simulator (plain HTTP, like the real one).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::http::{Control, Handler, Request, Response, Server, Transport};
use crate::identity::{Identity, SignatureKind, Signer};
use crate::util;

#[derive(Clone)]
struct RoleCreds {
    role: String,
    access_key_id: String,
    secret_access_key: String,
    token: String,
}

struct ImdsState {
    identity: Identity,
    creds: Option<RoleCreds>,
    tokens: HashMap<String, Instant>,
    pending_time: String,
    disabled: bool,
    tokens_issued: u64,
}

struct ImdsShared {
    state: Mutex<ImdsState>,
    signer: Signer,
}

/// The IMDSv2 simulator. Stops its threads when dropped.
pub struct ImdsSim {
    addr: SocketAddr,
    control: Control,
    shared: Arc<ImdsShared>,
    server: Arc<Mutex<Option<Server>>>,
    starter: Option<JoinHandle<()>>,
}

fn html_error(code: u16, text: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n <head>\n  <title>{code} - {text}</title>\n </head>\n <body>\n  <h1>{code} - {text}</h1>\n </body>\n</html>\n"
    );
    Response::new(code, "text/html", body)
}

fn text(body: impl Into<Vec<u8>>) -> Response {
    Response::new(200, "text/plain", body)
}

fn default_creds(role: &str) -> RoleCreds {
    RoleCreds {
        role: role.to_string(),
        access_key_id: format!("ASIA{}", util::random_alnum(16).to_ascii_uppercase()),
        secret_access_key: util::random_alnum(40),
        token: format!("IQoJb3JpZ2luX2Vj{}", util::random_alnum(200)),
    }
}

impl ImdsSim {
    /// Serve on 127.0.0.1 with an OS-chosen port.
    pub fn start(identity: Identity, signer: &Signer) -> io::Result<ImdsSim> {
        ImdsSim::start_on("127.0.0.1:0".parse().unwrap(), identity, signer)
    }

    /// Serve on `addr`.
    pub fn start_on(addr: SocketAddr, identity: Identity, signer: &Signer) -> io::Result<ImdsSim> {
        let listener = TcpListener::bind(addr)?;
        let mut sim = ImdsSim::new(listener.local_addr()?, identity, signer);
        let server = Server::start(
            listener,
            Transport::Plain,
            sim.control.clone(),
            sim.handler(),
        )?;
        *sim.server.lock().unwrap() = Some(server);
        sim.starter = None;
        Ok(sim)
    }

    /// "IMDS not up yet": reserve a port on 127.0.0.1, refuse connections until `after` has
    /// passed, then start serving on that port.
    pub fn start_delayed(
        after: Duration,
        identity: Identity,
        signer: &Signer,
    ) -> io::Result<ImdsSim> {
        let probe = TcpListener::bind("127.0.0.1:0")?;
        let addr = probe.local_addr()?;
        drop(probe);
        let mut sim = ImdsSim::new(addr, identity, signer);
        let control = sim.control.clone();
        let handler = sim.handler();
        let slot = sim.server.clone();
        sim.starter = Some(std::thread::spawn(move || {
            if !control.sleep(after) {
                return;
            }
            // The port may linger briefly; retry binding for a second.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match TcpListener::bind(addr) {
                    Ok(l) => {
                        if let Ok(s) = Server::start(l, Transport::Plain, control.clone(), handler)
                        {
                            *slot.lock().unwrap() = Some(s);
                        }
                        return;
                    }
                    Err(_) if Instant::now() < deadline && !control.is_shut_down() => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        eprintln!("vaultboot-sim: imds could not bind {addr}: {e}");
                        return;
                    }
                }
            }
        }));
        Ok(sim)
    }

    fn new(addr: SocketAddr, identity: Identity, signer: &Signer) -> ImdsSim {
        let creds = identity.iam_role.as_deref().map(default_creds);
        ImdsSim {
            addr,
            control: Control::new(),
            shared: Arc::new(ImdsShared {
                state: Mutex::new(ImdsState {
                    identity,
                    creds,
                    tokens: HashMap::new(),
                    pending_time: util::rfc3339(SystemTime::now() - Duration::from_secs(30)),
                    disabled: false,
                    tokens_issued: 0,
                }),
                signer: signer.clone(),
            }),
            server: Arc::new(Mutex::new(None)),
            starter: None,
        }
    }

    fn handler(&self) -> Handler {
        let shared = self.shared.clone();
        Arc::new(move |req: &Request| handle(&shared, req))
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn identity(&self) -> Identity {
        self.shared.state.lock().unwrap().identity.clone()
    }

    /// Replace the instance identity (e.g. to simulate an image booted as another instance).
    pub fn set_identity(&self, identity: Identity) {
        let mut st = self.shared.state.lock().unwrap();
        match (&identity.iam_role, &st.creds) {
            (Some(r), Some(c)) if *r == c.role => {}
            (Some(r), _) => st.creds = Some(default_creds(r)),
            (None, _) => st.creds = None,
        }
        st.identity = identity;
    }

    /// Attach an instance profile role with these credentials.
    pub fn set_role_credentials(
        &self,
        role: &str,
        access_key_id: &str,
        secret_access_key: &str,
        token: &str,
    ) {
        let mut st = self.shared.state.lock().unwrap();
        st.identity.iam_role = Some(role.to_string());
        st.creds = Some(RoleCreds {
            role: role.to_string(),
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            token: token.to_string(),
        });
    }

    /// Every issued IMDS token becomes invalid (the next GET with one gets 401).
    pub fn expire_tokens(&self) {
        self.shared.state.lock().unwrap().tokens.clear();
    }

    /// Time passes for the session tokens issued so far: each one's remaining lifetime shrinks
    /// by `d` (so that a test of their TTL need not wait for it).
    pub fn age_tokens(&self, d: Duration) {
        let now = Instant::now();
        for expires in self.shared.state.lock().unwrap().tokens.values_mut() {
            *expires = expires.checked_sub(d).unwrap_or(now);
        }
    }

    /// IMDS disabled on the instance: every request gets 403.
    pub fn set_disabled(&self, disabled: bool) {
        self.shared.state.lock().unwrap().disabled = disabled;
    }

    /// How many session tokens were handed out.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.state.lock().unwrap().tokens_issued
    }

    /// The signed blob the sim serves at `/rsa2048` (or `/pkcs7`) right now.
    pub fn signed_document(&self, kind: SignatureKind) -> String {
        let st = self.shared.state.lock().unwrap();
        let doc = st.identity.document(&st.pending_time);
        self.shared.signer.sign(&doc, kind)
    }

    /// Stop serving (also done on drop).
    pub fn shutdown(self) {}
}

impl Drop for ImdsSim {
    fn drop(&mut self) {
        self.control.signal_shutdown();
        if let Some(h) = self.starter.take() {
            let _ = h.join();
        }
        if let Some(mut s) = self.server.lock().unwrap().take() {
            s.shutdown();
        }
    }
}

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

fn handle(shared: &ImdsShared, req: &Request) -> Response {
    let mut st = shared.state.lock().unwrap();
    if st.disabled {
        return html_error(403, "Forbidden");
    }
    let path = req.path_only();
    if path == "/latest/api/token" {
        if req.method != "PUT" {
            return html_error(405, "Method Not Allowed");
        }
        if req.header("x-forwarded-for").is_some() {
            return html_error(403, "Forbidden");
        }
        let ttl = match req.header(TTL_HEADER).map(|v| v.trim().parse::<u64>()) {
            Some(Ok(n)) if (1..=21600).contains(&n) => n,
            _ => return html_error(400, "Bad Request"),
        };
        let token = format!("AQAEA{}", util::random_alnum(51));
        let now = Instant::now();
        st.tokens.retain(|_, exp| *exp > now);
        st.tokens
            .insert(token.clone(), now + Duration::from_secs(ttl));
        st.tokens_issued += 1;
        return text(token).with_header("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", &ttl.to_string());
    }
    if req.method != "GET" && req.method != "HEAD" {
        return html_error(405, "Method Not Allowed");
    }
    // IMDSv2 only: a valid session token is required.
    let remaining = match req
        .header("x-aws-ec2-metadata-token")
        .and_then(|t| st.tokens.get(t))
    {
        Some(exp) if *exp > Instant::now() => (*exp - Instant::now()).as_secs(),
        _ => return html_error(401, "Unauthorized"),
    };
    let ttl_hdr = remaining.to_string();
    let id = st.identity.clone();
    let doc = || id.document(&st.pending_time);
    let resp = match path {
        "/latest/dynamic/instance-identity/document" => Response::new(200, "text/plain", doc()),
        "/latest/dynamic/instance-identity/rsa2048" => {
            text(shared.signer.sign(&doc(), SignatureKind::Rsa2048))
        }
        "/latest/dynamic/instance-identity/pkcs7" => {
            text(shared.signer.sign(&doc(), SignatureKind::Pkcs7))
        }
        "/latest/dynamic/instance-identity/" | "/latest/dynamic/instance-identity" => {
            text("document\npkcs7\nrsa2048\nsignature")
        }
        "/latest/meta-data/instance-id" => text(id.instance_id.clone()),
        "/latest/meta-data/local-hostname" | "/latest/meta-data/hostname" => {
            text(id.local_hostname.clone())
        }
        "/latest/meta-data/local-ipv4" if !id.local_ipv4.is_empty() => text(id.local_ipv4.clone()),
        "/latest/meta-data/ipv6" => match &id.ipv6 {
            Some(address) => text(address.clone()),
            None => html_error(404, "Not Found"),
        },
        "/latest/meta-data/ami-id" => text(id.image_id.clone()),
        "/latest/meta-data/placement/availability-zone" => text(id.availability_zone.clone()),
        "/latest/meta-data/placement/region" => text(id.region.clone()),
        "/latest/meta-data/" | "/latest/meta-data" => {
            let ipv4 = if id.local_ipv4.is_empty() {
                ""
            } else {
                "local-ipv4\n"
            };
            let ipv6 = if id.ipv6.is_some() { "ipv6\n" } else { "" };
            text(format!(
                "ami-id\nhostname\niam/\ninstance-id\n{ipv6}local-hostname\n{ipv4}placement/"
            ))
        }
        "/latest/meta-data/iam/security-credentials/"
        | "/latest/meta-data/iam/security-credentials" => match &st.creds {
            Some(c) => text(c.role.clone()),
            None => html_error(404, "Not Found"),
        },
        p if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
            let role = &p["/latest/meta-data/iam/security-credentials/".len()..];
            match &st.creds {
                Some(c) if c.role == role => {
                    let now = SystemTime::now();
                    let body = format!(
                        "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"{}\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : {},\n  \"SecretAccessKey\" : {},\n  \"Token\" : {},\n  \"Expiration\" : \"{}\"\n}}",
                        util::rfc3339(now - Duration::from_secs(60)),
                        serde_json::Value::String(c.access_key_id.clone()),
                        serde_json::Value::String(c.secret_access_key.clone()),
                        serde_json::Value::String(c.token.clone()),
                        util::rfc3339(now + Duration::from_secs(6 * 3600)),
                    );
                    text(body)
                }
                _ => html_error(404, "Not Found"),
            }
        }
        _ => html_error(404, "Not Found"),
    };
    resp.with_header("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", &ttl_hdr)
}
