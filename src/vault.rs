//! Vault requests: common headers, `{"errors": [...]}` bodies, KV v1/v2 unwrapping, revoke-self.
//!
//! <https://developer.hashicorp.com/vault/api-docs>

use crate::config::VaultConfig;
use crate::decide;
use crate::http::{self, Answer, Client};
use crate::kind::Kind;
use crate::secret::{Secret, SecretJson};
use crate::untrusted;
use std::fmt;
use std::time::Duration;
use ureq::http::Method;

/// Longest Vault error message repeated in our own messages.
const MAX_MESSAGE: usize = 300;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    Http(http::Error),
    /// Vault answered with a non-success status and these `errors`.
    Status {
        url: String,
        status: u16,
        messages: Vec<String>,
        retry_after: Option<Duration>,
    },
    /// A success whose body is not what Vault sends.
    Malformed {
        url: String,
        detail: String,
    },
}

impl Error {
    /// The answer as the decision table reads it.
    pub fn answer(&self) -> decide::Problem<'_> {
        match self {
            Error::Http(e) => decide::Problem::Transport(e),
            Error::Status {
                status, messages, ..
            } => decide::Problem::Status {
                status: *status,
                messages,
            },
            Error::Malformed { .. } => decide::Problem::Unusable,
        }
    }

    /// The Retry-After Vault sent with a status.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Vault's refusal, an unreachable Vault, or an answer Vault would not send.
    pub fn kind(&self) -> Kind {
        decide::kind(decide::Source::Vault, &self.answer())
    }

    /// The host a 3xx pointed at.
    pub fn redirected_to(&self) -> Option<&str> {
        match self {
            Error::Http(e) if matches!(e.class, http::Class::Redirect(_)) => Some(&e.detail),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Http(e) => e.fmt(f),
            Error::Status {
                url,
                status,
                messages,
                ..
            } => {
                write!(f, "{url}: Vault answered {status}")?;
                if messages.is_empty() {
                    Ok(())
                } else {
                    write!(f, ": {}", messages.join("; "))
                }
            }
            Error::Malformed { url, detail } => write!(f, "{url}: {detail}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Http(e) => Some(e),
            Error::Status { .. } | Error::Malformed { .. } => None,
        }
    }
}

#[derive(Clone)]
pub struct Vault {
    client: Client,
    namespace: Option<String>,
}

impl Vault {
    pub fn new(config: &VaultConfig) -> Result<Vault, http::SetupError> {
        Ok(Vault {
            client: Client::vault(config)?,
            namespace: config.namespace.clone(),
        })
    }

    /// The namespace every request is sent in (`X-Vault-Namespace`), if one is configured.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Opens `connections` connections in the background, for the requests to come: the
    /// login (`POST /v1/<login>`) is opened ahead, the others each carry an unauthenticated
    /// `GET sys/health` (what Vault's own clients probe; whatever the answer, the connection
    /// is then in the pool).
    pub fn warm_up(&self, login: &str, connections: usize) {
        let login = format!("/v1/{login}");
        self.client.open_ahead(&login, &self.headers(true));
        let others = connections.saturating_sub(1);
        drop(
            self.client
                .warm_up("/v1/sys/health", &self.headers(false), others),
        );
    }

    /// What every request carries, and the body's type when it has one.
    fn headers(&self, with_body: bool) -> Vec<(&str, &str)> {
        let mut headers = vec![("x-vault-request", "true")];
        if with_body {
            headers.push(("content-type", "application/json"));
        }
        if let Some(ns) = &self.namespace {
            headers.push(("x-vault-namespace", ns));
        }
        headers
    }

    /// One request to `/v1/<path>`; a success's body is parsed as JSON (an empty one as null).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&[u8]>,
        time_left: Duration,
    ) -> Result<SecretJson, Error> {
        let full = format!("/v1/{path}");
        let headers = self.headers(body.is_some());
        let sensitive: Vec<(&str, &Secret)> =
            token.map(|t| ("x-vault-token", t)).into_iter().collect();
        let answer = match self
            .client
            .send(method, &full, &headers, &sensitive, body, time_left)
        {
            Ok(a) => a,
            // A redirect target is the server's text: it must not repeat what we sent.
            Err(mut e) if matches!(e.class, http::Class::Redirect(_)) => {
                e.detail = redact(&e.detail, &sent_secrets(token, body));
                return Err(Error::Http(e));
            }
            Err(e) => return Err(Error::Http(e)),
        };
        let url = self.client.shown_url(&full);
        if !answer.is_success() {
            return Err(status_error(url, &answer, &sent_secrets(token, body)));
        }
        if answer.body.is_empty() {
            return Ok(SecretJson::default());
        }
        SecretJson::parse(answer.body.expose()).map_err(|e| Error::Malformed {
            url,
            detail: format!(
                "answer is not JSON ({}){}",
                untrusted::json_problem(&e),
                content_type_note(answer.content_type.as_deref())
            ),
        })
    }

    pub fn shown_url(&self, path: &str) -> String {
        self.client.shown_url(&format!("/v1/{path}"))
    }
}

fn status_error(url: String, answer: &Answer, secrets: &[Secret]) -> Error {
    // Parsed into a SecretJson: a hostile error body may hold anything, and is wiped on drop.
    let parsed = SecretJson::parse(answer.body.expose()).ok();
    let messages = parsed
        .as_ref()
        .and_then(|v| v.0.get("errors"))
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .filter_map(|m| m.as_str())
                .map(|m| untrusted::one_line(&redact(m, secrets), MAX_MESSAGE))
                .filter(|m| !m.is_empty())
                .take(5)
                .collect()
        })
        .unwrap_or_default();
    Error::Status {
        url,
        status: answer.status,
        messages,
        retry_after: answer.retry_after,
    }
}

/// The label of an answer that is not JSON, when it says something else: a page from a proxy
/// or a captive portal is recognised at once. (A JSON body is read whatever its label, as
/// Vault's own client does.)
fn content_type_note(content_type: Option<&str>) -> String {
    match content_type {
        Some(ct) if !ct.to_ascii_lowercase().contains("json") => {
            format!("; content type {:?}", untrusted::one_line(ct, 100))
        }
        _ => String::new(),
    }
}

/// What this request sent that must never come back into our messages: the token, and every
/// string of the JSON body at least 8 bytes long (the login's nonce and signed document).
fn sent_secrets(token: Option<&Secret>, body: Option<&[u8]>) -> Vec<Secret> {
    let mut secrets: Vec<Secret> = token.into_iter().cloned().collect();
    if let Some(parsed) = body.and_then(|b| SecretJson::parse(b).ok()) {
        collect_strings(&parsed.0, &mut secrets);
    }
    secrets
}

fn collect_strings(value: &serde_json::Value, into: &mut Vec<Secret>) {
    match value {
        serde_json::Value::String(s) if s.len() >= 8 => {
            into.push(Secret::from_string(s.clone()));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, into)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, into)),
        _ => {}
    }
}

/// `text` with every occurrence of a secret replaced by `[redacted]`.
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if let Some(s) = s.expose_str().filter(|s| !s.is_empty()) {
            if out.contains(s) {
                out = out.replace(s, "[redacted]");
            }
        }
    }
    out
}

/// The fields of a secret read: KV v2 answers keep them in `data.data` next to
/// `data.metadata`; KV v1, PKI and the rest in `data`.
pub fn secret_fields(
    answer: &serde_json::Value,
) -> Option<&serde_json::Map<String, serde_json::Value>> {
    let data = answer.get("data")?.as_object()?;
    match (data.get("data"), data.get("metadata")) {
        (Some(serde_json::Value::Object(inner)), Some(serde_json::Value::Object(_))) => Some(inner),
        _ => Some(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kv_versions_are_unwrapped() {
        let v1 = json!({"data": {"password": "p"}});
        assert_eq!(secret_fields(&v1).unwrap()["password"], "p");
        let v2 = json!({"data": {"data": {"password": "p"}, "metadata": {"version": 3}}});
        assert_eq!(secret_fields(&v2).unwrap()["password"], "p");
        // A KV v1 secret that has a field named "data" is not mistaken for v2.
        let v1_data = json!({"data": {"data": "x"}});
        assert_eq!(secret_fields(&v1_data).unwrap()["data"], "x");
        assert!(secret_fields(&json!({"data": null})).is_none());
    }

    #[test]
    fn what_was_sent_is_never_repeated() {
        let token = Secret::from_string("hvs.0123456789abcdef".into());
        let body = br#"{"role":"web","nonce":"n0nce-value-xyz","x":1}"#;
        let secrets = sent_secrets(Some(&token), Some(body));
        assert_eq!(
            redact(
                "bad nonce n0nce-value-xyz with hvs.0123456789abcdef for web",
                &secrets
            ),
            "bad nonce [redacted] with [redacted] for web"
        );
    }
}
