//! aws auth login: the dispatch by method, the ec2 method, and the token a login grants
//! (the iam method: iam.rs).

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::{aws, envelope, iam, not_found, policy_names, LoginEvent, NonceOutcome, TokenInfo};
use super::{VaultShared, VaultState};
use crate::http::{error_json, Request, Response};
use crate::identity::SignatureKind;
use crate::util;

pub(super) fn login(shared: &VaultShared, mount: &str, req: &Request) -> Response {
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
    let mut env = envelope(Value::Null, 0);
    env["auth"] = grant_token(st, mount, &instance_id, &policies, meta, ttl);
    event.success = true;
    (Response::json(200, &env), Some(event))
}

/// The valid token in the request, or the 403 answer.
/// Issues a login token (ec2 or iam) for `policies` with `meta`, named `<mount>-<who>`, and
/// returns the login answer's `auth` object.
pub(super) fn grant_token(
    st: &mut VaultState,
    mount: &str,
    who: &str,
    policies: &[String],
    meta: Value,
    ttl: u64,
) -> Value {
    let token = format!("hvs.{}", util::random_alnum(24));
    let accessor = util::random_alnum(24);
    let entity_id = util::uuid();
    st.issued.push(token.clone());
    st.accessors.push(accessor.clone());
    st.tokens.insert(
        token.clone(),
        TokenInfo {
            accessor: accessor.clone(),
            policies: policies.to_vec(),
            root: false,
            created: SystemTime::now(),
            expires: Instant::now() + Duration::from_secs(ttl),
            ttl,
            revoked: false,
            meta: meta.clone(),
            path: format!("auth/{mount}/login"),
            entity_id: entity_id.clone(),
            display_name: format!("{mount}-{who}"),
        },
    );
    st.logins += 1;
    json!({
        "client_token": token,
        "accessor": accessor,
        "policies": policy_names(policies),
        "token_policies": policy_names(policies),
        "metadata": meta,
        "lease_duration": ttl,
        "renewable": true,
        "entity_id": entity_id,
        "token_type": "service",
        "orphan": true,
        "mfa_requirement": null,
        "num_uses": 0,
    })
}
