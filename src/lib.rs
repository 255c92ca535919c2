//! vaultboot: an EC2 boot-time agent. IMDSv2 → Vault aws auth (ec2) with a persisted nonce →
//! secrets in root-only files, all or nothing → token revoked.
//!
//! Modules are listed in the order the data flows; a module uses only those after it.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]
#![allow(missing_debug_implementations)] // agents and clients hold ureq types without Debug

pub mod accounts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod files;
pub mod hardening;
pub mod http;
pub mod imds;
pub mod log;
pub mod nonce;
pub mod pending;
pub mod retry;
pub mod secret;
pub mod secrets;
pub mod state;
pub mod template;
pub mod vault;
