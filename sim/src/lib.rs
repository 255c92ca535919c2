//! TEST AND DEMO ONLY: simulators of EC2's IMDSv2 and of the HashiCorp Vault endpoints that
//! vaultboot uses (aws auth ec2 login, token self-endpoints, KV v1/v2, PKI issue), over real HTTP
//! and real TLS on loopback, with fault injection and request recording.
//!
//! Never part of the agent binary or an AMI.

mod ca;
mod http;
mod identity;
mod imds;
mod util;
mod vault;
mod world;

pub use ca::{IssuedCert, Leaf, LeafKey, TestCa};
pub use http::{Control, Fault, Gate, RecordedRequest, MAX_BODY, MAX_HEAD};
pub use identity::{Identity, SignatureKind, Signer, VerifyError};
pub use imds::ImdsSim;
pub use vault::{AwsFault, LoginEvent, NonceOutcome, VaultOptions, VaultSim, DEFAULT_TOKEN_TTL};
pub use world::{DemoSecrets, DemoWorld, DemoWorldBuilder, DEMO_INSTANCE, DEMO_POLICIES};
