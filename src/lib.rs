//! vaultboot: an EC2 boot-time agent. IMDSv2 → Vault aws auth (ec2 with a persisted nonce, or
//! iam) → secrets in root-only files, all or nothing → token revoked.
//!
//! The modules are private: the binary (`main.rs`) sees the few items re-exported below, and
//! the fuzz targets and integration tests see [`fuzzing`]. README's "How it works" draws the
//! data flow between them.
// unsafe_code is denied in Cargo.toml's [lints]; one audited exception:
// hardening::borrow_inherited.

mod accounts;
mod app;
mod auth;
mod certificate;
mod check;
mod cli;
mod command;
mod config;
mod decide;
mod fanout;
mod files;
mod formats;
mod hardening;
mod http;
mod imds;
mod issued;
mod kind;
mod log;
mod nonce;
mod pending;
mod renewal;
mod retry;
mod secret;
mod secrets;
mod state;
mod status;
mod stop;
mod template;
mod untrusted;
mod vault;

pub use app::Mode;
pub use cli::{parse as parse_command_line, Command, USAGE};
pub use command::{check, plan, run, ExitStatuses};
pub use hardening::harden;
pub use kind::Kind;

/// The pure functions and types the fuzz targets (`fuzz/`) and the integration tests drive
/// directly. Not an API: it changes with the code behind it.
#[doc(hidden)]
pub mod fuzzing {
    pub mod config {
        pub use crate::config::{
            check_output_path, on_this_machine, parse, Config, Field, FileConfig, Format, Ids,
            Names,
        };
    }
    pub mod iam {
        pub use crate::auth::iam::{login_data, login_data_for, Credentials, STS_BODY};
    }
    pub mod imds {
        pub use crate::imds::{parse_identity, parse_signed_document, Identity};
    }
    pub mod secret {
        pub use crate::secret::{Secret, SecretJson};
    }
    pub mod secrets {
        pub use crate::secrets::{encode, Error};
    }
    pub mod template {
        pub use crate::template::{facts_in_json, render_json, Fact, Facts, Template};
    }
    pub mod untrusted {
        pub use crate::untrusted::json_problem;
    }
    pub mod vault {
        pub use crate::vault::{secret_fields, Error, Vault};
    }
}
