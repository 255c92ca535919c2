//! `vaultboot plan`: what `run` would do to every output and which on_change commands would
//! run, with no secret value shown and nothing written but the nonce state. A certificate that
//! would be renewed is not issued (an issue is a write on Vault's side): its files are shown as
//! a new certificate would change them.

use super::session::Session;
use super::{log_start, login, Error, Mode};
use crate::config::{Config, SecretConfig};
use crate::files::{self, Change};
use crate::log::Log;
use crate::pending::{self, Found};
use crate::retry::Policy;
use crate::secrets;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Replace,
    Unchanged,
    Skip,
}

/// What `run` would do to one output.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub secret: String,
    pub action: Action,
    /// Why it is skipped, or that a new certificate would be issued.
    pub note: Option<String>,
    pub on_change: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// In configuration order.
    pub entries: Vec<Entry>,
    /// Each command once, with the output it would run for.
    pub on_change: Vec<(Vec<String>, PathBuf)>,
    pub logged_in: bool,
    pub revoked: bool,
}

/// After a stop signal, it fails with `Error::Stopped` (the token revoked).
pub fn plan(config: &Config, mode: Mode, log: &Log) -> Result<Plan, Error> {
    plan_job(config, mode, log).map_err(Error::after_stop)
}

fn plan_job(config: &Config, mode: Mode, log: &Log) -> Result<Plan, Error> {
    let start = Instant::now();
    let policy = Policy::starting(start, config.retry.deadline, config.retry.max_delay);
    log_start(config, mode, " (plan: nothing is written)", log);
    let _lock = super::lock(config, &policy, log)?;
    let mut session = Session::open(config, mode, log, &policy)?;
    let owed = pending::peek(&config.state_dir);
    let issued = crate::issued::peek(&config.state_dir);
    let chosen = session.choose(config, mode, (&owed, &issued), log);
    let (to_fetch, skipped) = (chosen.to_fetch, chosen.skipped);
    let mut plan = Plan::default();
    let (issues, reads): (Vec<&SecretConfig>, Vec<&SecretConfig>) =
        to_fetch.iter().partition(|s| s.is_pki_issue());
    let mut read_entries = Vec::new();
    if !to_fetch.is_empty() {
        let token = session.login(config, log, &policy)?;
        let token = login::hold(config, &session.vault, token);
        plan.logged_in = true;
        let fetched =
            super::stopped().and_then(|()| fetch_reads(&session, &token, &reads, &policy));
        // The last Vault read is done: the token goes before the files are looked at.
        plan.revoked = login::revoke(config, log, &policy);
        read_entries = preview_reads(&session, &reads, fetched?)?;
    }
    for secret in &config.secrets {
        let mine = |e: &&Entry| e.secret == secret.name;
        if issues.iter().any(|s| std::ptr::eq(*s, secret)) {
            plan.entries.extend(issue_entries(secret, &session));
        } else {
            plan.entries
                .extend(read_entries.iter().filter(mine).cloned());
        }
    }
    plan.entries.extend(skipped.into_iter().map(|o| Entry {
        path: o.path,
        secret: o.secret,
        action: Action::Skip,
        note: o.reason,
        on_change: None,
    }));
    // Configuration order, skipped secrets included.
    let order = |e: &Entry| config.secrets.iter().position(|s| s.name == e.secret);
    plan.entries.sort_by_key(order);
    plan.on_change = commands(&plan.entries, &owed);
    Ok(plan)
}

/// Reads these secrets.
fn fetch_reads(
    session: &Session<'_>,
    token: &crate::auth::Token,
    reads: &[&SecretConfig],
    policy: &Policy,
) -> Result<Vec<secrets::Fetched>, Error> {
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    secrets::fetch_all(
        &session.vault,
        &token.client_token,
        reads,
        &session.facts,
        policy,
    )
    .map_err(Error::ReadingSecret)
}

/// Compares what `run` would write from these answers with what is on disk.
fn preview_reads(
    session: &Session<'_>,
    reads: &[&SecretConfig],
    answers: Vec<secrets::Fetched>,
) -> Result<Vec<Entry>, Error> {
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    let outputs =
        secrets::render_outputs(reads, &answers, &session.facts).map_err(Error::RenderingFiles)?;
    outputs
        .iter()
        .map(|output| {
            let action = match files::preview(output).map_err(Error::StagingFiles)? {
                Change::Create => Action::Create,
                Change::Replace => Action::Replace,
                Change::Unchanged => Action::Unchanged,
            };
            Ok(Entry {
                path: output.path.clone(),
                secret: output.secret.clone(),
                action,
                note: None,
                on_change: output.on_change.clone(),
            })
        })
        .collect()
}

/// The files of a certificate that would be issued: replaced, or created where missing.
fn issue_entries(secret: &SecretConfig, session: &Session<'_>) -> Vec<Entry> {
    secret
        .files
        .iter()
        .map(|file| {
            let path = secrets::output_path(secret, file, &session.facts)
                .unwrap_or_else(|_| PathBuf::from(&file.path_text));
            Entry {
                action: if path.exists() {
                    Action::Replace
                } else {
                    Action::Create
                },
                path,
                secret: secret.name.clone(),
                note: Some("a new certificate would be issued".into()),
                on_change: file.on_change.clone(),
            }
        })
        .collect()
}

/// The commands `run` would start: those of the outputs it would create or replace, and those
/// an earlier run still owes (all of them when its record is unusable); each argv once.
fn commands(entries: &[Entry], owed: &Found) -> Vec<(Vec<String>, PathBuf)> {
    let mut out: Vec<(Vec<String>, PathBuf)> = Vec::new();
    for entry in entries {
        let changed = matches!(entry.action, Action::Create | Action::Replace);
        let is_owed = match owed {
            Found::Nothing => false,
            Found::Owed(paths) => paths.contains(&entry.path),
            Found::Unusable { .. } => true,
        };
        let Some(argv) = &entry.on_change else {
            continue;
        };
        if (changed || (is_owed && entry.action != Action::Skip))
            && !out.iter().any(|(a, _)| a == argv)
        {
            out.push((argv.clone(), entry.path.clone()));
        }
    }
    out
}
