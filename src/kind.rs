//! The kinds of failure. Every layer's error says which kind it is; `main` alone turns a kind
//! into an exit status.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The configuration is wrong (or the environment it relies on).
    Config,
    /// An answer from IMDS or Vault is not what they send.
    Malformed,
    /// IMDS or Vault stayed unavailable until the deadline.
    Unavailable,
    /// Vault (or IMDS) refused.
    Refused,
    /// A file or the state could not be written.
    CannotWrite,
    /// A stop signal (SIGTERM, SIGINT) ended the run before it was done.
    Stopped,
}
