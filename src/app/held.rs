//! The token, held where both the run and a stop signal can revoke it: whichever comes first
//! revokes it, once, and the other learns how that went.

use crate::auth::{self, Token};
use crate::log::{took, Event, Level, Log};
use crate::retry::Policy;
use crate::vault::Vault;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

struct Held {
    vault: Vault,
    token: Arc<Token>,
    max_delay: Duration,
}

struct Slot {
    held: Option<Held>,
    /// How the revoke went, once it was made.
    revoked: Option<bool>,
}

static SLOT: Mutex<Slot> = Mutex::new(Slot {
    held: None,
    revoked: None,
});
/// Held for the whole revoke: the other party waits for its outcome instead of sending a
/// second revoke (which Vault would refuse with 403, the token being gone).
static REVOKING: Mutex<()> = Mutex::new(());

/// Keeps `token` for a revoke by either party; the run reads secrets with the copy returned.
pub(super) fn hold(vault: &Vault, token: Token, max_delay: Duration) -> Arc<Token> {
    let token = Arc::new(token);
    let mut slot = SLOT.lock().unwrap_or_else(PoisonError::into_inner);
    slot.held = Some(Held {
        vault: vault.clone(),
        token: token.clone(),
        max_delay,
    });
    slot.revoked = None;
    token
}

/// Revokes the held token within `budget` (a stop signal does not cut it short); whether it
/// is revoked, also when the other party did it. `None` when no token was ever held.
pub(super) fn revoke(log: &Log, budget: Duration) -> Option<bool> {
    let _revoking = REVOKING.lock().unwrap_or_else(PoisonError::into_inner);
    let taken = {
        let mut slot = SLOT.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.held.take() {
            Some(held) => held,
            None => return slot.revoked,
        }
    };
    let revoked = revoke_now(log, &taken, budget);
    SLOT.lock().unwrap_or_else(PoisonError::into_inner).revoked = Some(revoked);
    Some(revoked)
}

fn revoke_now(log: &Log, held: &Held, budget: Duration) -> bool {
    let step = Instant::now();
    let policy = Policy::unstoppable(step + budget, held.max_delay);
    match auth::revoke(&held.vault, &held.token, &policy) {
        Ok(()) => {
            log.info(&format!("token revoked ({})", took(step.elapsed())));
            true
        }
        Err(e) => {
            let line = format!(
                "token not revoked after {}: {e}; it stays valid until it expires in {} \
                 (an operator can revoke it now: vault token revoke -accessor {})",
                took(step.elapsed()),
                humantime::format_duration(held.token.ttl),
                held.token.accessor
            );
            let accessor = [("VAULTBOOT_TOKEN_ACCESSOR", held.token.accessor.as_str())];
            log.event(Level::Warning, Event::TokenNotRevoked, &accessor, &line);
            false
        }
    }
}
