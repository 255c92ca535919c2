//! The single-table sections ([vault], [auth], [imds], [state], [retry], [status], [outputs]) from their raw shapes
//! to their checked form: defaults filled in, each value's check reported in a fixed order,
//! and the few rules that tie two keys together.

use super::raw::{duration, optional, RawAuth, RawImds, RawOutputs, RawRetry, RawState};
use super::raw::{RawStatus, RawVault};
use super::values::{AN_HOUR, A_DAY};
use super::VaultConfig;
use super::{defaults, err, values, Error};
use super::{AuthConfig, AuthMethod, ImdsConfig, OutputsConfig, RetryConfig, StatusConfig};
use std::path::PathBuf;

pub fn vault(raw: RawVault, place: &str) -> Result<VaultConfig, Error> {
    let address = vault_address(&raw.address, raw.insecure_http == Some(true))
        .map_err(|m| err(place, format!("address: {m}")))?;
    let tls_server_name = optional(raw.tls_server_name, place, "tls_server_name")?;
    let namespace = optional(raw.namespace, place, "namespace")?;
    let proxy = optional(raw.proxy, place, "proxy")?;
    let request_timeout = duration(raw.request_timeout, AN_HOUR, place, "request_timeout")?;
    Ok(VaultConfig {
        address,
        ca_cert: raw.ca_cert,
        tls_server_name: tls_server_name.map(|n| n.0),
        namespace: namespace.map(|n| n.0),
        request_timeout: request_timeout.unwrap_or(defaults::REQUEST_TIMEOUT),
        proxy: proxy.map(|p| p.0),
    })
}

/// `https://host[:port]`, or `http://` when `insecure_http` is set; no trailing slash. Checked
/// here rather than by a value type: which schemes are allowed depends on another key.
fn vault_address(text: &str, insecure_http: bool) -> Result<String, String> {
    let address = text.trim_end_matches('/');
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| format!("{address:?} is not a URL (https://host:port)"))?;
    match scheme {
        "https" => {}
        "http" if insecure_http => {}
        "http" => {
            return Err("http:// sends the Vault token in clear text; use https:// \
                 (or set insecure_http = true for a test server)"
                .into())
        }
        other => return Err(format!("unsupported scheme {other:?}")),
    }
    if rest.is_empty() || values::url_host(address, scheme).is_none() {
        return Err("must be scheme://host[:port] with no path, query or credentials".into());
    }
    Ok(address.to_string())
}

pub fn auth(raw: RawAuth, place: &str) -> Result<AuthConfig, Error> {
    let method = optional(raw.method, place, "method")?.unwrap_or(defaults::AUTH_METHOD);
    let mount = optional(raw.mount, place, "mount")?.map_or(defaults::AUTH_MOUNT.into(), |m| m.0);
    let role = raw.role.at(place, "role")?.0;
    // Two keys together: serde reads one value at a time.
    if method == AuthMethod::Ec2 {
        for (key, set) in [
            ("iam_server_id", raw.iam_server_id.is_some()),
            ("sts_region", raw.sts_region.is_some()),
            ("sts_endpoint", raw.sts_endpoint.is_some()),
        ] {
            if set {
                return Err(err(
                    place,
                    format!("{key}: applies only to method = \"iam\""),
                ));
            }
        }
    }
    let iam_server_id = optional(raw.iam_server_id, place, "iam_server_id")?;
    let sts_region = optional(raw.sts_region, place, "sts_region")?.map(|r| r.0);
    let sts_endpoint = optional(raw.sts_endpoint, place, "sts_endpoint")?.map(|e| e.0);
    if let Some(endpoint) = &sts_endpoint {
        sts_endpoint_region(endpoint, sts_region.as_deref())
            .map_err(|m| err(place, format!("sts_endpoint: {m}")))?;
    }
    Ok(AuthConfig {
        method,
        mount,
        role,
        iam_server_id: iam_server_id.map(|id| id.0),
        sts_region: sts_region.unwrap_or_else(|| defaults::STS_REGION.into()),
        sts_endpoint,
        revoke_token: raw.revoke_token.unwrap_or(defaults::REVOKE_TOKEN),
    })
}

/// An explicit endpoint is signed for `sts_region`, which must then be said too (the default
/// region would be a guess), and must be the region an AWS name says it serves: STS refuses
/// a signature scoped to another region, and that is better found by `check` than at boot.
fn sts_endpoint_region(endpoint: &str, region: Option<&str>) -> Result<(), String> {
    let Some(region) = region else {
        return Err("needs sts_region, the region this endpoint serves \
             (the same as Vault's sts_region)"
            .into());
    };
    let host = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/');
    match values::sts_host_region(host) {
        Some(named) if named != region => Err(format!(
            "{host} serves {named}, but sts_region is {region:?}"
        )),
        _ => Ok(()),
    }
}

pub fn imds(raw: RawImds, place: &str) -> Result<ImdsConfig, Error> {
    let endpoint = optional(raw.endpoint, place, "endpoint")?;
    let token_ttl = optional(raw.token_ttl, place, "token_ttl")?;
    let signature = optional(raw.signature, place, "signature")?;
    Ok(ImdsConfig {
        endpoint: endpoint.map_or(defaults::IMDS_ENDPOINT.into(), |e| e.0),
        token_ttl: token_ttl.map_or(defaults::IMDS_TOKEN_TTL, |t| t.0),
        signature: signature.unwrap_or(defaults::SIGNATURE),
    })
}

pub fn state_dir(raw: RawState, place: &str) -> Result<PathBuf, Error> {
    let dir = optional(raw.dir, place, "dir")?;
    Ok(dir.map_or_else(|| PathBuf::from(defaults::STATE_DIR), |d| d.0))
}

pub fn retry(raw: RawRetry, place: &str) -> Result<RetryConfig, Error> {
    let deadline = duration(raw.deadline, A_DAY, place, "deadline")?;
    let max_delay = duration(raw.max_delay, AN_HOUR, place, "max_delay")?;
    Ok(RetryConfig {
        deadline: deadline.unwrap_or(defaults::DEADLINE),
        max_delay: max_delay.unwrap_or(defaults::MAX_DELAY),
    })
}

pub fn status(raw: RawStatus, place: &str) -> Result<StatusConfig, Error> {
    let file = optional(raw.file, place, "file")?;
    let textfile = optional(raw.textfile, place, "textfile")?;
    Ok(StatusConfig {
        file: file.map_or_else(|| PathBuf::from(defaults::STATUS_FILE), |f| f.0),
        textfile: textfile.map(|f| f.0),
    })
}

pub fn outputs(raw: RawOutputs, place: &str) -> Result<OutputsConfig, Error> {
    let plaintext_at_rest = optional(raw.plaintext_at_rest, place, "plaintext_at_rest")?;
    let parent = optional(raw.credstore_parent, place, "credstore_parent")?
        .map_or_else(|| PathBuf::from(defaults::CREDSTORE_PARENT), |d| d.0);
    // It becomes the start of output paths, which may hold templates: no braces, no doubt.
    let text = parent.to_string_lossy();
    if text.contains(['{', '}']) || text.contains(char::is_control) {
        return Err(err(
            place,
            "credstore_parent: must not hold braces or control characters",
        ));
    }
    Ok(OutputsConfig {
        plaintext_at_rest: plaintext_at_rest.unwrap_or(defaults::PLAINTEXT_AT_REST),
        credstore_parent: parent,
    })
}
