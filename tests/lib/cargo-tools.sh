# shellcheck shell=bash
# The cargo subcommands that the release and the checks need, at pinned versions, built from
# crates.io with `cargo install --locked` into cargo's own bin directory (~/.cargo/bin), where a
# later run finds them: a tool already installed there at its pinned version is not built again.
#
#   source tests/lib/cargo-tools.sh
#   ensure_cargo_tools || exit 2
#
# Built without optimisation (--debug): the tool reads `cargo metadata` once per release, and
# its document is byte for byte the same, while the build costs a fraction of the CPU (119
# CPU-seconds, 191 s at load 5, against 884 s for an optimised build at load 3-25); once per
# machine.
# cargo-auditable is small (25 s optimised at load 3). (The licence policy needs no tool:
# tests/licence-policy.py reads `cargo metadata`; cargo-deny took 2,787 s to build here.)

# CRATE VERSION, one per line: what dist/release.sh runs.
#   cargo-auditable: the dependency list embedded in the binary (what syft and trivy read)
#   cargo-cyclonedx: the release's SBOM (CycloneDX JSON per architecture)
CARGO_TOOLS="cargo-auditable 0.7.7
cargo-cyclonedx 0.5.9"

# cargo_tool_installed CRATE VERSION: 0 when cargo install put that version in and it runs.
cargo_tool_installed() {
    cargo install --list 2>/dev/null | grep -qx "$1 v$2:" &&
        cargo "${1#cargo-}" --version >/dev/null 2>&1 </dev/null
}

ensure_cargo_tools() {
    local crate version start
    while read -r crate version; do
        if cargo_tool_installed "$crate" "$version"; then
            printf 'cargo-tools: %s %s is installed\n' "$crate" "$version"
            continue
        fi
        start=$SECONDS
        printf 'cargo-tools: cargo install --locked --debug %s --version %s\n' "$crate" "$version"
        cargo install --locked --debug --quiet --force "$crate" --version "$version" || {
            echo "cargo-tools: cargo install $crate $version failed" >&2
            return 1
        }
        printf 'cargo-tools: %s %s installed in %s s\n' "$crate" "$version" "$((SECONDS - start))"
    done <<<"$CARGO_TOOLS"
}
