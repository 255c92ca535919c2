//! The fuzz targets' properties. `check.rs` depends only on `vaultboot` and `serde_json`, so the
//! root crate's `tests/fuzz_regressions.rs` includes the very same file (`#[path]`) to replay the
//! kept crashes in the normal test suite.
pub mod check;
