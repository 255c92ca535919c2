//! What the commands print: `check`'s verdict, `plan`'s table, `run`'s last line.

use crate::app::{Action, Plan, Summary};
use crate::config::Config;
use crate::log::took;
use std::path::Path;

/// `check`'s line for a valid configuration.
pub fn valid(path: &Path, c: &Config) -> String {
    let files: usize = c.secrets.iter().map(|s| s.files.len()).sum();
    format!(
        "vaultboot: {} is valid: vault {}, role {:?}, {} secret(s), {} file(s)",
        path.display(),
        c.vault.address,
        c.auth.role,
        c.secrets.len(),
        files
    )
}

/// What `plan` prints on stdout: one line per output, then the commands.
pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    for e in &plan.entries {
        let action = match e.action {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Unchanged => "unchanged",
            Action::Skip => "skip",
        };
        let note = e
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{action:<9} {} (secret {:?}{note})\n",
            e.path.display(),
            e.secret
        ));
    }
    for (argv, path) in &plan.on_change {
        out.push_str(&format!(
            "on_change {argv:?} would run (for {})\n",
            path.display()
        ));
    }
    let count = |a: Action| plan.entries.iter().filter(|e| e.action == a).count();
    out.push_str(&format!(
        "plan: {} to create, {} to replace, {} unchanged, {} skipped; {} on_change command(s); \
         {}; nothing was written\n",
        count(Action::Create),
        count(Action::Replace),
        count(Action::Unchanged),
        count(Action::Skip),
        plan.on_change.len(),
        match (plan.logged_in, plan.revoked) {
            (false, _) => "no Vault request",
            (true, true) => "token revoked",
            (true, false) => "token not revoked",
        }
    ));
    out
}

/// The run's last line when it succeeded.
pub fn done_line(s: &Summary) -> String {
    if !s.logged_in {
        return format!(
            "done: nothing to fetch ({} file(s) skipped), no Vault request, in {}",
            s.skipped,
            took(s.took)
        );
    }
    let mut line = format!(
        "done: {} secret(s), {} file(s) written, {} unchanged, ",
        s.secrets, s.written, s.unchanged
    );
    if s.skipped > 0 {
        line.push_str(&format!("{} skipped, ", s.skipped));
    }
    line.push_str(&format!(
        "token {}, in {}",
        if s.revoked { "revoked" } else { "not revoked" },
        took(s.took)
    ));
    if s.on_change_failed > 0 {
        line.push_str(&format!(
            "; {} on_change command(s) failed",
            s.on_change_failed
        ));
    }
    line
}
