#!/bin/sh
# The whole boot job on this machine, without AWS: the real agent against the project's IMDSv2
# and Vault simulators on loopback (Vault over real TLS). Shows where every file went.
set -eu
cd "$(dirname "$0")"
cargo build --release --quiet --workspace --bins
exec target/release/vaultboot-demo target/release/vaultboot "${1:-target/demo}"
