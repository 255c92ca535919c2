#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use vaultboot_sim::{Identity, ImdsSim, Signer, VaultOptions, VaultSim};

pub const INSTANCE: &str = "i-0abc1234def567890";

pub fn imds_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn vault_agent(ca_pem: &str) -> ureq::Agent {
    let certs: Vec<_> = ureq::tls::parse_pem(ca_pem.as_bytes())
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&certs))
                .build(),
        )
        .build()
        .into()
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Resp, ureq::Error> {
    let mut r = r?;
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = r.body_mut().read_to_string()?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// One request: method, url, headers, optional body.
pub fn req(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Resp, ureq::Error> {
    macro_rules! hdrs {
        ($b:expr) => {{
            let mut b = $b;
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b
        }};
    }
    match method {
        "GET" => finish(hdrs!(agent.get(url)).call()),
        "DELETE" => finish(hdrs!(agent.delete(url)).call()),
        "PUT" => {
            let b = hdrs!(agent.put(url));
            match body {
                Some(s) => finish(b.send(s)),
                None => finish(b.send_empty()),
            }
        }
        "POST" => {
            let b = hdrs!(agent.post(url)).header("Content-Type", "application/json");
            finish(b.send(body.unwrap_or("")))
        }
        m => panic!("method {m}"),
    }
}

pub fn imds_token(agent: &ureq::Agent, imds: &ImdsSim) -> String {
    let r = req(
        agent,
        "PUT",
        &format!("{}/latest/api/token", imds.url()),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

pub fn imds_get(agent: &ureq::Agent, imds: &ImdsSim, token: &str, path: &str) -> Resp {
    req(
        agent,
        "GET",
        &format!("{}{}", imds.url(), path),
        &[("X-aws-ec2-metadata-token", token)],
        None,
    )
    .unwrap()
}

/// Both simulators with a role "web" on mount "aws".
pub struct Env {
    pub signer: Signer,
    pub imds: ImdsSim,
    pub vault: VaultSim,
    pub ia: ureq::Agent,
    pub va: ureq::Agent,
}

impl Env {
    pub fn new() -> Env {
        let signer = Signer::new();
        let imds = ImdsSim::start(Identity::sample(INSTANCE), &signer).unwrap();
        let vault = VaultSim::start(VaultOptions::new(&signer)).unwrap();
        vault.add_ec2_role(
            "aws",
            "web",
            Some("ami-0123456789abcdef0"),
            &["secret/data/app/", "kv1/", "pki_int/issue/web"],
        );
        let va = vault_agent(&vault.ca_pem());
        Env {
            signer,
            imds,
            vault,
            ia: imds_agent(),
            va,
        }
    }

    pub fn pkcs7(&self) -> String {
        let t = imds_token(&self.ia, &self.imds);
        let r = imds_get(
            &self.ia,
            &self.imds,
            &t,
            "/latest/dynamic/instance-identity/rsa2048",
        );
        assert_eq!(r.status, 200);
        r.body
    }

    pub fn vault(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Resp {
        let mut h = vec![("X-Vault-Request", "true")];
        if let Some(t) = token {
            h.push(("X-Vault-Token", t));
        }
        req(
            &self.va,
            method,
            &format!("{}/v1/{}", self.vault.url(), path),
            &h,
            body,
        )
        .unwrap()
    }

    pub fn login(&self, nonce: Option<&str>) -> Resp {
        let mut b = serde_json::json!({ "role": "web", "pkcs7": self.pkcs7().replace('\n', "") });
        if let Some(n) = nonce {
            b["nonce"] = n.into();
        }
        self.vault("POST", "auth/aws/login", None, Some(&b.to_string()))
    }

    pub fn token(&self) -> String {
        let r = self.login(Some("a-nonce-for-tests-0123456789"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Send raw bytes, read until the server closes or `timeout`.
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}
