//! KV v1/v2 reads and PKI issue.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{envelope, not_found, VaultShared, VaultState, DEFAULT_TOKEN_TTL};
use crate::ca::{Leaf, LeafKey};
use crate::http::{error_json, Request, Response};
use crate::util;

pub(super) fn data_route(
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

pub(super) fn pki_issue(shared: &VaultShared, st: &mut VaultState, req: &Request) -> Response {
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
    // Vault caps a requested ttl at the role's max_ttl, which defaults to the mount's maximum
    // lease (32 days), rather than refusing it: so does this simulator.
    const MAX_TTL: u64 = 768 * 3600;
    let ttl = match field("ttl") {
        None => 72 * 3600,
        Some(t) => match util::parse_vault_duration(&t) {
            Some(s) if s > 0 => s.min(MAX_TTL),
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
    let leaf = Leaf {
        common_name: &cn,
        dns_names: &dns_refs,
        ips: &ips,
        not_before: now - Duration::from_secs(30),
        not_after: now + Duration::from_secs(ttl),
    };
    // RSA: the two fixed test keys in turn, so that each issue changes the key.
    let (key, key_type) = if st.pki_rsa {
        (LeafKey::Rsa(st.pki_issued), "rsa")
    } else {
        (LeafKey::EcP256, "ec")
    };
    st.pki_issued += 1;
    let c = shared.pki_ca.issue_leaf(&leaf, key, true);
    st.issued.push(c.key_pem.clone());
    let issuing = shared.pki_ca.cert_pem().trim_end().to_string();
    let mut data = json!({
        "certificate": c.cert_pem.trim_end(),
        "issuing_ca": issuing,
        "ca_chain": [issuing],
        "private_key": c.key_pem.trim_end(),
        "private_key_type": key_type,
        "serial_number": c.serial,
        "expiration": c.not_after,
    });
    if st.omit_ca_chain {
        data.as_object_mut().unwrap().remove("ca_chain");
    }
    Response::json(200, &envelope(data, 0))
}
