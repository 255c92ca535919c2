//! The ec2 method: the signed identity document plus vaultboot's persisted client nonce.
//!
//! <https://developer.hashicorp.com/vault/api-docs/auth/aws#login>

use super::{login_failure, token_from, Error, Token};
use crate::retry::{Policy, Verdict};
use crate::secret::Secret;
use crate::vault::Vault;
use serde::Serialize;
use std::time::Duration;
use ureq::http::Method;
use zeroize::Zeroizing;

/// Right after launch, EC2's API may not know the instance yet (eventual consistency): Vault
/// then answers "InvalidInstanceID.NotFound". That is retried this many times.
const NOT_FOUND_RETRIES: u32 = 5;
const NOT_FOUND_PAUSE: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct LoginBody<'a> {
    role: &'a str,
    pkcs7: &'a str,
    nonce: &'a str,
}

pub struct Ec2Login<'a> {
    pub mount: &'a str,
    pub role: &'a str,
    pub pkcs7: &'a str,
    pub nonce: &'a Secret,
    pub instance_id: &'a str,
}

pub fn login(vault: &Vault, policy: &Policy, req: &Ec2Login<'_>) -> Result<Token, Error> {
    let body = LoginBody {
        role: req.role,
        pkcs7: req.pkcs7,
        nonce: req.nonce.expose_str().unwrap_or_default(),
    };
    let bytes = Zeroizing::new(serde_json::to_vec(&body).unwrap_or_default());
    let path = format!("auth/{}/login", req.mount);
    let mut not_found = 0;
    let result = policy.run(
        |left| vault.request(Method::POST, &path, None, Some(&bytes), left),
        |e| {
            if e.mentions("client nonce mismatch") {
                return Verdict::Fatal;
            }
            if (e.mentions("InvalidInstanceID.NotFound") || e.mentions("instance not found"))
                && not_found < NOT_FOUND_RETRIES
            {
                not_found += 1;
                return Verdict::Transient {
                    retry_after: Some(NOT_FOUND_PAUSE),
                };
            }
            e.verdict()
        },
    );
    match result {
        Ok(answer) => token_from(&answer, &vault.shown_url(&path)).map_err(Error::Malformed),
        Err(crate::retry::Failure::Fatal(e)) if e.mentions("client nonce mismatch") => {
            Err(Error::NonceMismatch {
                mount: req.mount.to_string(),
                instance_id: req.instance_id.to_string(),
            })
        }
        Err(f) => Err(login_failure(f)),
    }
}
