#!/usr/bin/env bash
# Every test of vaultboot, from a fresh clone on Debian 12: installs what is missing (as root),
# then lint, the licence policy, unit and integration tests (real binary against the simulators, real TLS), the
# release (x86_64 and arm64 binaries, tarballs, .deb, .rpm, signed SHA256SUMS) and its checks,
# the integration tests again against the arm64 binary under qemu-user, a second release
# compared byte for byte, the packaging checks, the VM boot tests (Debian 12 and 13 on x86_64,
# Debian 12 on arm64) and the .deb's life in a Debian 12 chroot. Ends with "N passed,
# N failed" over stages, each with its time. The boot tests' guest trees are built in the
# background from the start; once the release is built, the boot tests and the release's
# other checks run side by side (lanes).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

MUSL_TARGETS="x86_64-unknown-linux-musl aarch64-unknown-linux-musl"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
RELEASE=target/dist/$VERSION

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
# The release: arm64 cross build, packages, their linters, signing (dist/release.sh).
require gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc --version
require libc6-dev-arm64-cross sh -c 'printf "#include <stdint.h>\n" | aarch64-linux-gnu-gcc -x c -c -o /dev/null -'
require qemu-user-static qemu-aarch64-static --version
require rpm rpmbuild --version
require lintian lintian --version
require rpmlint rpmlint --version
require minisign minisign -v
# The man pages: made by dist/man.sh (lowdown), checked with man --warnings and lexgrog.
require lowdown lowdown -Tman /dev/null
require man-db man --version
require man-db lexgrog --version
require zstd zstd --version
require debootstrap debootstrap --version
# The provenance's check runs README's verification command (jq).
require jq jq --version
# The boot tests (tests/boot/run.sh asks for the same; listed here so that one apt call installs
# everything at the start): qemu for both architectures, the guest trees' builders, their tools.
if [ "${VAULTBOOT_SKIP_VM:-}" != 1 ]; then
    require qemu-system-x86 qemu-system-x86_64 --version
    require qemu-system-arm qemu-system-aarch64 --version
    require debootstrap debootstrap --version
    require mmdebstrap mmdebstrap --version
    require arch-test sh -c 'command -v arch-test'
    require e2fsprogs mke2fs -V
    require socat socat -V
    require openssl openssl version
    require curl curl --version
    require python3-yaml /usr/bin/python3 -c 'import yaml'
fi
# The cargo subcommands (SBOM, dependency list in the binary, licence policy): built from
# crates.io at pinned versions into ~/.cargo/bin, kept for later runs (tests/lib/cargo-tools.sh).
# shellcheck source=tests/lib/cargo-tools.sh
. tests/lib/cargo-tools.sh

install_missing() {
    ensure_required "the test stages" || exit 2
    local t
    for t in $MUSL_TARGETS; do
        if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
            say "adding the $t target"
            rustup target add "$t"
        fi
    done
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
    ensure_cargo_tools || exit 2
}

passed=0
failed=0
failed_stages=()
# script PATH ARGS...: runs a stage's script; a script that is missing or lost its exec bit
# fails the stage (it must never be skipped quietly).
script() {
    if [ ! -f "$1" ] || [ ! -x "$1" ]; then
        echo "$1 is missing or not executable: this stage cannot run"
        return 1
    fi
    "$@"
}
stage() {
    local name=$1
    shift
    say "$name"
    local start=$SECONDS line
    if "$@"; then
        passed=$((passed + 1))
        line="-- $name: ok ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        failed_stages+=("$name")
        line="-- $name: FAILED ($((SECONDS - start))s)"
    fi
    echo "$line"
    # Inside a lane (below) the output goes to the lane's log: the end of each stage is also
    # said on the terminal at once.
    [ -z "${in_lane:-}" ] || echo "$line  [lane $in_lane, at $((SECONDS / 60)) min $((SECONDS % 60)) s]" >&3
}

# Lanes: stages that run side by side once the release is built. A boot test mostly waits on
# its guest (one core's worth of qemu for 6-8 minutes), so the three boot tests and the
# CPU-bound stages share the machine instead of queueing. Each lane runs its stages in order
# in the background; its output goes to a file, printed whole when the lane ends (never
# interleaved), and its counts are added to the run's.
exec 3>&1
lanes=()
# lane NAME FUNCTION: starts FUNCTION (which calls stage ...) in the background.
lane() {
    local name=$1
    shift
    (
        # shellcheck disable=SC2030 # the lane's own counts: written to a file, added by join_lanes
        in_lane=$name passed=0 failed=0 failed_stages=()
        "$@"
        { echo "$passed $failed" && printf '%s\n' "${failed_stages[@]+"${failed_stages[@]}"}"; } >"$work/lane-$name.counts"
    ) >"$work/lane-$name.log" 2>&1 </dev/null &
    lanes+=("$name $!")
    echo "-- lane $name started (at $((SECONDS / 60)) min $((SECONDS % 60)) s): $*"
}
# join_lanes: waits for every lane, prints its log and adds its counts; a lane that ended
# without its counts (killed) is a failed stage.
# shellcheck disable=SC2031 # the run's counts; the lanes' own ones come from their files
join_lanes() {
    local entry name pid p f rest one
    for entry in "${lanes[@]}"; do
        name=${entry% *}
        pid=${entry##* }
        wait "$pid"
        say "lane $name: its stages' output"
        cat "$work/lane-$name.log"
        if { read -r p f && mapfile -t rest; } 2>/dev/null <"$work/lane-$name.counts"; then
            passed=$((passed + p))
            failed=$((failed + f))
            for one in "${rest[@]}"; do [ -z "$one" ] || failed_stages+=("$one"); done
        else
            failed=$((failed + 1))
            failed_stages+=("lane $name (ended before its last stage)")
        fi
    done
    lanes=()
}

work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-run-all.XXXXXX")
trap 'rm -rf "$work"' EXIT

# dist/release.sh for both architectures, SHA256SUMS signed with a throwaway minisign key
# (made here, never kept), then every check of the artifacts (sizes, lintian, rpmlint, ...).
release() {
    minisign -G -W -p "$work/minisign.pub" -s "$work/minisign.key" >/dev/null || return 1
    VAULTBOOT_MINISIGN_KEY="$work/minisign.key" script dist/release.sh "$VERSION"
}
release_checks() {
    script tests/packaging/check-release.sh "$RELEASE" "$VERSION" "$work/minisign.pub"
}

# root_tests_in FILE...: the names of the root_* tests (#[test] functions) in FILE..., sorted.
root_tests_in() {
    awk '/^[[:space:]]*#\[test\]/ { t = 1; next }
        /^[[:space:]]*#\[/ { next }
        t && match($0, /fn root_[A-Za-z0-9_]*/) { print substr($0, RSTART + 3, RLENGTH - 3) }
        { t = 0 }' "$@" | sort
}

# root_tests_ran LOG: the names of the root_* tests that ran (passed or failed) in a cargo test
# log, sorted.
root_tests_ran() {
    sed -n 's/^test \(.*::\)\{0,1\}\(root_[A-Za-z0-9_]*\) \.\.\. .*/\2/p' "$1" | sort
}

# root_tests_compare EXPECTED RAN: 0 when the same names; else says which are missing.
root_tests_compare() {
    local missing
    missing=$(comm -23 <(printf '%s\n' "$1") <(printf '%s\n' "$2"))
    echo "$(printf '%s\n' "$2" | grep -c .) of $(printf '%s\n' "$1" | grep -c .) root-only tests ran"
    if [ -n "$missing" ]; then
        echo "not run: $(printf '%s\n' "$missing" | tr '\n' ' ')"
        return 1
    fi
    [ -n "$1" ]
}

# The integration tests that start the agent, against the arm64 release binary under
# qemu-aarch64-static (binfmt_misc cannot be relied on here), upper time bounds stretched 3x
# (tests/common/mod.rs, time_scale). A wrapper counts the runs of each
# test file, so the stage fails if a file's tests never started the arm64 binary. Not
# crash.rs: its kill points are timed for native speed (see tests/common/mod.rs,
# vaultboot_argv). Not fuzz_regressions.rs, nor iam.rs's library tests (the SigV4 vectors,
# login data posted directly, date arithmetic): they call the library in the x86_64 test
# process and never start the arm64 binary, so they would count as arm64 runs that were not.
ARM64_TESTS="boot cli hostile iam local_state secrets_scan day_two journal commit transient failover ipv6"
ARM64_HOST_ONLY="signature_is_pinned_to_botocore login_data_posted_directly_is_verified amz_date_arithmetic"
arm64_tests() {
    local bin=$PWD/target/aarch64-unknown-linux-musl/release/vaultboot
    file "$bin" | grep -q 'ARM aarch64' || { echo "no arm64 binary at $bin"; return 1; }
    # Some tests run the agent as nobody (uid 65534): the wrapper and its count are open to
    # it, in a directory of their own (the run's $work holds the throwaway signing key).
    local q rc=0 runs before t skips=() log=$work/arm64-root-tests.log
    q=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-arm64.XXXXXX") && chmod 0755 "$q" || return 1
    printf '#!/bin/sh\necho run >>"%s"\nexec qemu-aarch64-static "$@"\n' "$q/runs" >"$q/qemu-aarch64"
    chmod 0755 "$q/qemu-aarch64"
    : >"$q/runs"
    chmod 0666 "$q/runs"
    for t in $ARM64_HOST_ONLY; do skips+=(--skip "$t"); done
    : >"$log"
    for t in $ARM64_TESTS; do
        before=$(wc -l <"$q/runs")
        VAULTBOOT_TEST_BIN=$bin VAULTBOOT_TEST_RUNNER=$q/qemu-aarch64 VAULTBOOT_TEST_TIME_SCALE=3 \
            cargo test --locked -p vaultboot --no-fail-fast --test "$t" -- "${skips[@]}" || rc=1
        # Their root-only tests too (see root_tests).
        VAULTBOOT_TEST_BIN=$bin VAULTBOOT_TEST_RUNNER=$q/qemu-aarch64 VAULTBOOT_TEST_TIME_SCALE=3 \
            cargo test --locked -p vaultboot --no-fail-fast --test "$t" -- --ignored root_ 2>&1 | tee -a "$log" || rc=1
        runs=$(($(wc -l <"$q/runs") - before))
        echo "tests/$t.rs started the arm64 binary $runs times"
        [ "$runs" -gt 0 ] || { echo "tests/$t.rs never started the arm64 binary"; rc=1; }
    done
    runs=$(wc -l <"$q/runs")
    rm -rf "$q"
    echo "the arm64 binary ran $runs times under qemu-aarch64-static"
    local files=()
    for t in $ARM64_TESTS; do files+=("tests/$t.rs"); done
    root_tests_compare "$(root_tests_in "${files[@]}")" "$(root_tests_ran "$log")" || rc=1
    [ "$rc" -eq 0 ]
}

# The tests that need root (chown to another user, chattr +i, the agent run as another user)
# are named root_* and #[ignore]d, so that a run as another user does not count them as
# passed: here (CI runs as root) they are asked for by name. Not --include-ignored: that would
# also start tests/fleet.rs's load tests. The stage fails unless every root_* test of
# the sources ran (a lost prefix, a test filtered out or not compiled).
root_tests() {
    [ "$(id -u)" -eq 0 ] || { echo "the root-only tests need root"; return 1; }
    local log=$work/root-tests.log rc=0
    cargo test --locked --workspace --no-fail-fast -- --ignored root_ 2>&1 | tee "$log" || rc=1
    local sources
    sources=$(find src tests sim -name '*.rs' | sort)
    # shellcheck disable=SC2086 # file names without spaces (the repository's own)
    root_tests_compare "$(root_tests_in $sources)" "$(root_tests_ran "$log")" || rc=1
    [ "$rc" -eq 0 ]
}

# Two releases from the same commit, byte for byte: the second from a copy elsewhere with
# its own target directory (a full second build of both architectures).
reproducible() {
    VAULTBOOT_MINISIGN_KEY="$work/minisign.key" script tests/packaging/reproducible.sh "$RELEASE" "$VERSION"
}

# The packaging checks; packer/cleanup.sh's tests ask the real static binary for the outputs
# (in a chroot): the release stage's x86_64 build.
packaging() {
    VAULTBOOT_STATIC_BIN=$PWD/target/x86_64-unknown-linux-musl/release/vaultboot script tests/packaging/run.sh
}

# The fuzz targets (fuzz/, a workspace of its own) are built, so that a change of the API they
# drive cannot go unnoticed. Only built: running them needs a nightly toolchain and
# cargo-fuzz (docs/fuzzing.md), which CI does not have.
fuzz_build() {
    cargo check --locked --manifest-path fuzz/Cargo.toml --all-targets
}

# The .deb installed, upgraded to a newer build, removed and purged in a Debian 12 chroot.
deb_lifecycle() {
    VAULTBOOT_ARCHES=x86_64 script dist/release.sh "$VERSION+1" "$work/upgrade" >"$work/upgrade.log" 2>&1 ||
        { tail -n 20 "$work/upgrade.log"; return 1; }
    script tests/packaging/deb-lifecycle.sh "$RELEASE/vaultboot_${VERSION}_amd64.deb" \
        "$work/upgrade/vaultboot_${VERSION}+1_amd64.deb"
}

# The boot tests' guest trees, cold on a new machine (downloads; for arm64, every package's
# scripts run under emulation: ~13 minutes), are built in the background from the start, beside
# the cargo stages, into the cache the boot tests read (tests/boot/run.sh --tree-only; a boot
# test that starts before its tree is done waits for it on the cache's lock). Their output is
# printed after the lanes.
trees_pid=
start_trees() {
    local args
    for args in "--suite bookworm" "--suite trixie" "--suite bookworm --arch arm64"; do
        echo "== tests/boot/run.sh $args --tree-only"
        # shellcheck disable=SC2086 # two or four words
        script tests/boot/run.sh $args --tree-only || echo "(not cached: the boot test builds it itself)"
    done >"$work/trees.log" 2>&1 </dev/null &
    trees_pid=$!
    echo "-- guest trees: building in the background (at $((SECONDS / 60)) min $((SECONDS % 60)) s)"
}
join_trees() {
    [ -n "$trees_pid" ] || return 0
    wait "$trees_pid"
    say "guest trees, built in the background (tests/boot/run.sh --tree-only)"
    cat "$work/trees.log"
    trees_pid=
}

install_missing
[ "${VAULTBOOT_SKIP_VM:-}" = 1 ] || start_trees
stage "format" cargo fmt --all -- --check
stage "clippy" cargo clippy --locked --workspace --all-targets -- -D warnings
# tests/licence-policy.py: allowed licences (and why), banned crates, from `cargo metadata`.
stage "licence policy" /usr/bin/python3 tests/licence-policy.py
stage "unit and integration tests" cargo test --locked --workspace
# The 100-agent fleet (tests/fleet.rs) is a load test: it times the machine, so it runs alone.
stage "fleet of 100 agents (load test)" cargo test --locked --test fleet -- --ignored --exact \
    fleet_of_100_scaling_out_through_ec2_throttling
stage "fuzz targets build (cargo check in fuzz/; not run: no nightly here)" fuzz_build
stage "root-only tests (cargo test -- --ignored root_)" root_tests
stage "release: dist/release.sh $VERSION (x86_64 + arm64, signed with a throwaway key)" release
stage "release checks (sizes, lintian, rpmlint, rpm --root, signature)" release_checks
# Side by side from here (see lane above). The .deb's chroot test uses the Debian 12 tree that
# the Debian 12 boot test caches, so it follows it.
artefact_lane() {
    stage "integration tests against the arm64 binary (qemu-aarch64-static)" arm64_tests
    stage "reproducible release (second build elsewhere, byte for byte)" reproducible
    stage "packaging (systemd, cloud-init, packer)" packaging
}
bookworm_lane() {
    stage "boot test in a Debian 12 VM (cloud-init 22.4, systemd 252, nginx, real binary)" script tests/boot/run.sh --suite bookworm
    stage ".deb install, upgrade, remove, purge in a Debian 12 chroot" deb_lifecycle
}
trixie_lane() {
    stage "boot test in a Debian 13 VM (cloud-init 25.1, systemd 257, nginx, real binary)" script tests/boot/run.sh --suite trixie
}
arm64_lane() {
    stage "boot test in an arm64 Debian 12 VM (qemu-system-aarch64, the arm64 .deb; boot 1)" script tests/boot/run.sh --suite bookworm --arch arm64
}
if [ "${VAULTBOOT_SKIP_VM:-}" = 1 ]; then
    artefact_lane
    say "boot tests in VMs: SKIPPED because VAULTBOOT_SKIP_VM=1"
    failed=$((failed + 1))
    failed_stages+=("boot tests in VMs (skipped on request)")
    stage ".deb install, upgrade, remove, purge in a Debian 12 chroot" deb_lifecycle
else
    lane debian12 bookworm_lane
    lane debian13 trixie_lane
    lane arm64-guest arm64_lane
    lane artefacts artefact_lane
    join_lanes
    join_trees
fi

echo
echo "total: $((SECONDS / 60)) min $((SECONDS % 60)) s"
if ((failed)); then
    echo "failed stages: ${failed_stages[*]}"
fi
echo "stages: $passed passed, $failed failed"
((failed == 0))
