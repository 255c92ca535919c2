//! The ec2 method: the signed identity document plus vaultboot's persisted client nonce.
//!
//! <https://developer.hashicorp.com/vault/api-docs/auth/aws#login>

use super::{login_failure, token_from, Error, Token};
use crate::decide::{self, Judge, Meaning, Source};
use crate::retry::{Failure, Policy};
use crate::secret::Secret;
use crate::vault::Vault;
use serde::Serialize;
use ureq::http::Method;

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
    let bytes = crate::secret::to_json(&body).unwrap_or_default();
    let path = format!("auth/{}/login", req.mount);
    let mut judge = Judge::new(Source::Login);
    let result = policy.run(
        |left| vault.request(Method::POST, &path, None, Some(&bytes), left),
        |e| judge.vault(e),
    );
    match result {
        Ok(answer) => token_from(&answer, &vault.shown_url(&path)).map_err(Error::Malformed),
        Err(Failure::Fatal(e))
            if decide::login_row(&e).is_some_and(|r| r.meaning == Meaning::NonceMismatch) =>
        {
            Err(Error::NonceMismatch {
                mount: req.mount.to_string(),
                instance_id: req.instance_id.to_string(),
                namespace: vault.namespace().map(str::to_string),
            })
        }
        Err(f) => Err(login_failure(f)),
    }
}
