//! Every default of the configuration, in one place: what a key means when the file omits it.

use super::{AuthMethod, Format, PlaintextAtRest, Seal, Signature};
use std::time::Duration;

/// Where the configuration is read from without `--config`.
pub const CONFIG_PATH: &str = "/etc/vaultboot/config.toml";

// [vault]
/// One Vault request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// [auth]
pub const AUTH_METHOD: AuthMethod = AuthMethod::Ec2;
pub const AUTH_MOUNT: &str = "aws";
/// The region whose STS endpoint the `iam` login request names.
pub const STS_REGION: &str = "us-east-1";
pub const REVOKE_TOKEN: bool = true;

// [imds]
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
pub const IMDS_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const SIGNATURE: Signature = Signature::Rsa2048;

// [state]
pub const STATE_DIR: &str = "/var/lib/vaultboot";

// [status]
/// Where each run's status is written for monitoring (readable by all: it holds no secret). A
/// directory of its own: /run/vaultboot holds secrets and is 0700.
pub const STATUS_FILE: &str = "/run/vaultboot-status/status.json";

// [retry]
/// Wall-clock budget for the whole run.
pub const DEADLINE: Duration = Duration::from_secs(5 * 60);
/// Cap of one back-off sleep.
pub const MAX_DELAY: Duration = Duration::from_secs(20);

// [[secret]]
/// A secret is fetched on every run, refreshes included, unless marked boot-only.
pub const BOOT_ONLY: bool = false;

// [[secret.file]]
pub const FORMAT: Format = Format::Raw;
/// Root-only: secret files are readable by their owner alone unless the file says otherwise.
pub const MODE: u32 = 0o600;
/// Looked up like a configured name (`/etc/passwd`), as the owner of a secret file.
pub const OWNER: &str = "root";
/// Looked up like a configured name (`/etc/group`), as the group of a secret file.
pub const GROUP: &str = "root";

// [[secret.credential]]
/// Sealed with what the machine has: the host key, and the TPM2 where there is one.
pub const SEAL: Seal = Seal::Auto;

// [outputs]
pub const PLAINTEXT_AT_REST: PlaintextAtRest = PlaintextAtRest::Allow;
/// systemd (>= 250) looks for credentials by name in `/run/credstore.encrypted` and
/// `/run/credstore` (among others): /run is a tmpfs, gone at every boot.
pub const CREDSTORE_PARENT: &str = "/run";
