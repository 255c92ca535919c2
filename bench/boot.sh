#!/bin/sh
# The boot benchmark (issue #7): the release static vaultboot against the curl + jq recipe users
# write in user-data today (bench/curl-recipe.sh), both fetching the same secrets from the
# project's IMDSv2 and Vault simulators on loopback (real TLS), with injected latency: IMDS 1 ms,
# Vault 20 ms, on every answer and on every new TCP connection. They run alternately (A B A B …)
# and it prints the medians, the ratio, the lower bound for this work, and which targets are met.
#
#   bench/boot.sh                     # 30 runs of each
#   bench/boot.sh --runs 100 --csv runs.csv --timeline
#   bench/boot.sh --help              # every option (bench/harness/src/main.rs)
#
# Needs: a Rust toolchain with the musl target and musl-gcc (as for the release build), bash,
# curl, jq and GNU time. Builds into $CARGO_TARGET_DIR (default target/). Exits 1 when a
# target is missed. docs/performance.md has the figures and what they mean.
set -eu
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}

missing=""
for tool in bash curl jq musl-gcc; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -x /usr/bin/time ] || missing="$missing /usr/bin/time"
if [ -n "$missing" ]; then
    echo "bench/boot.sh: missing:$missing (apt-get install bash curl jq musl-tools time)" >&2
    exit 69
fi
if command -v rustup >/dev/null 2>&1 &&
    ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    echo "bench/boot.sh: the musl target is missing (rustup target add x86_64-unknown-linux-musl)" >&2
    exit 69
fi

echo "bench/boot.sh: building the release static vaultboot and the benchmark harness" >&2
# Linked as dist/release.sh links it (dist/link-flags.sh), so that the size is the release's.
link_flags=$(dist/link-flags.sh) || exit 69
CARGO_ENCODED_RUSTFLAGS=$(printf '%s\n' "$link_flags" | paste -sd "$(printf '\037')") RUSTFLAGS='' \
    cargo build --quiet --release --target x86_64-unknown-linux-musl --bin vaultboot
cargo build --quiet --release --manifest-path bench/harness/Cargo.toml --target-dir "$target_dir"

# What the recipe needs on disk: bash, curl, jq and the shared libraries they load.
recipe_size=$(
    for bin in bash curl jq; do
        path=$(command -v "$bin")
        echo "$path"
        ldd "$path" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
    done | xargs -r readlink -f | sort -u | xargs -r stat -c %s | awk '{ s += $1 } END { print s + 0 }'
)

set -- --agent "$target_dir/x86_64-unknown-linux-musl/release/vaultboot" \
    --recipe bench/curl-recipe.sh --recipe-size "$recipe_size" "$@"
echo "bench/boot.sh: $target_dir/release/vaultboot-bench $*" >&2
exec "$target_dir/release/vaultboot-bench" "$@"
