#!/usr/bin/env bash
# Every test of vaultboot, from a fresh clone on Debian 12: installs what is missing (as root),
# then lint, unit and integration tests (real binary against the simulators, real TLS), the
# static release build, and the packaging checks. Ends with "N passed, N failed" over stages.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

MUSL_TARGET=x86_64-unknown-linux-musl
MAX_BINARY_BYTES=$((2500 * 1000))

say() { printf '\n== %s\n' "$*"; }

# Each tool a stage needs is checked by running it; only what does not run is installed.
# tests/lib/deps.sh: how a package preinstalled from another suite is handled (said out loud).
# shellcheck source=tests/lib/deps.sh
. tests/lib/deps.sh
require musl-tools musl-gcc --version
require file file --version
require systemd systemd-analyze --version
require cloud-init cloud-init --version
require cloud-init /usr/bin/python3 -c 'import cloudinit, yaml'
require python3-pytest /usr/bin/python3 -m pytest --version
require packer env CHECKPOINT_DISABLE=1 packer version
require shellcheck shellcheck --version

install_missing() {
    ensure_required "the test stages" || exit 2
    if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
        say "adding the $MUSL_TARGET target"
        rustup target add "$MUSL_TARGET"
    fi
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}

passed=0
failed=0
failed_stages=()
stage() {
    local name=$1
    shift
    say "$name"
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "-- $name: ok ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        failed_stages+=("$name")
        echo "-- $name: FAILED ($((SECONDS - start))s)"
    fi
}

static_binary() {
    cargo build --release --locked --target "$MUSL_TARGET" --bin vaultboot || return 1
    local bin=target/$MUSL_TARGET/release/vaultboot
    local size
    size=$(stat -c %s "$bin")
    file "$bin"
    file "$bin" | grep -q "static" || { echo "not statically linked"; return 1; }
    echo "size: $size bytes (limit $MAX_BINARY_BYTES)"
    [ "$size" -le "$MAX_BINARY_BYTES" ] || { echo "binary too large"; return 1; }
    "$bin" --version || return 1
    "$bin" check --config examples/config.toml || return 1
}

install_missing
stage "format" cargo fmt --all -- --check
stage "clippy" cargo clippy --locked --workspace --all-targets -- -D warnings
stage "unit and integration tests" cargo test --locked --workspace
stage "static release binary" static_binary
if [ -x tests/packaging/run.sh ]; then
    stage "packaging (systemd, cloud-init, packer)" tests/packaging/run.sh
fi
if [ "${VAULTBOOT_SKIP_VM:-}" = 1 ]; then
    say "boot test in a VM: SKIPPED because VAULTBOOT_SKIP_VM=1"
    failed=$((failed + 1))
    failed_stages+=("boot tests in VMs (skipped on request)")
else
    stage "boot test in a Debian 12 VM (cloud-init 22.4, systemd 252, nginx, real binary)" tests/boot/run.sh --suite bookworm
    stage "boot test in a Debian 13 VM (cloud-init 25.1, systemd 257, nginx, real binary)" tests/boot/run.sh --suite trixie
fi

echo
if ((failed)); then
    echo "failed stages: ${failed_stages[*]}"
fi
echo "stages: $passed passed, $failed failed"
((failed == 0))
