#!/bin/sh
# Runs one cargo-fuzz target for a given time:  fuzz/run.sh TARGET SECONDS [libFuzzer options...]
#   targets: config, vault_answer, encoders, imds   (fuzz/run.sh list)
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz). The corpus grows in
# fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET, which is never written); a crash lands in
# fuzz/artifacts/TARGET/. Keep a fixed crash as fuzz/regressions/TARGET/<name>: the normal test
# suite replays it (tests/fuzz_regressions.rs). See docs/fuzzing.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if [ "${1:-}" = list ] || [ $# -lt 2 ]; then
    echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer options...]" >&2
    echo "targets: config vault_answer encoders imds" >&2
    [ "${1:-}" = list ]
    exit
fi
target=$1 seconds=$2
shift 2
case $target in
    config) dict=dict/config.dict max_len=4096 ;;
    vault_answer) dict=dict/json.dict max_len=4096 ;;
    imds) dict=dict/json.dict max_len=2048 ;;
    encoders) dict= max_len=1024 ;;
    *) echo "unknown target $target (config vault_answer encoders imds)" >&2; exit 64 ;;
esac
mkdir -p "corpus/$target" "artifacts/$target"
set -- -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 ${dict:+-dict="$dict"} "$@"
# -O: optimised; -a: with debug assertions (integer overflow checks) as well.
# FUZZ_NO_BUILD=1 runs the target as last built (`cargo +nightly fuzz build -O -a`), for when
# the source tree is in the middle of an edit.
if [ -n "${FUZZ_NO_BUILD:-}" ]; then
    exec "target/x86_64-unknown-linux-gnu/release/$target" -artifact_prefix="artifacts/$target/" \
        "$@" "corpus/$target" "seeds/$target"
fi
exec cargo +nightly fuzz run -O -a "$target" "corpus/$target" "seeds/$target" -- "$@"
