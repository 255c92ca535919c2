#!/usr/bin/env bash
# Reproducibility of dist/release.sh: builds the release a second time from a copy of this
# checkout in another directory (another path length too), with its own empty
# CARGO_TARGET_DIR, and compares every artifact byte for byte with a first build: the
# binaries (also extracted from both tarballs), the tarballs, the .deb and .rpm packages,
# the SBOMs, the provenance, SHA256SUMS and, when VAULTBOOT_MINISIGN_KEY is set for both, the
# signatures. On a
# difference it shows where (tar listings, dpkg-deb and rpm headers).
#
# usage: tests/packaging/reproducible.sh FIRST_OUTDIR VERSION
#   FIRST_OUTDIR  a release made by dist/release.sh VERSION from this checkout
# environment: SOURCE_DATE_EPOCH (default: HEAD's commit time, as release.sh),
#   VAULTBOOT_MINISIGN_KEY (passed on), TMPDIR (where the copy and its target go: ~1.5 GB)
set -u
export LC_ALL=C

first=$(cd "${1:?usage: reproducible.sh FIRST_OUTDIR VERSION}" && pwd)
version=${2:?usage: reproducible.sh FIRST_OUTDIR VERSION}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 2

# shellcheck source=tests/lib/checks.sh
. "$repo/tests/lib/checks.sh"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) || {
        echo "not a git checkout: set SOURCE_DATE_EPOCH" >&2
        exit 2
    }
fi
export SOURCE_DATE_EPOCH
# The copy has no .git: the provenance's commit is this checkout's.
VAULTBOOT_COMMIT=${VAULTBOOT_COMMIT:-$(git rev-parse HEAD)} || exit 2
export VAULTBOOT_COMMIT

work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-repro.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
copy="$work/another/checkout/of/vaultboot"
mkdir -p "$copy"
# The files of this checkout as they are (committed or not), without .git and target/.
git ls-files -z --cached --others --exclude-standard |
    tar --null -T - -cf - | tar -xf - -C "$copy" || exit 2

start=$SECONDS
if CARGO_TARGET_DIR="$work/target" "$copy/dist/release.sh" "$version" "$work/second" >"$work/release.log" 2>&1; then
    ok "second build from $copy with CARGO_TARGET_DIR=$work/target ($((SECONDS - start)) s)"
else
    bad "second build from $copy" "$(tail -n 30 "$work/release.log")"
    finish
fi

explain() { # explain FILE: where the two builds of FILE differ
    local a="$first/$1" b="$work/second/$1"
    case $1 in
        *.tar.gz)
            diff <(tar -tvzf "$a" --full-time) <(tar -tvzf "$b" --full-time) | head -n 20
            mkdir -p "$work/xa" "$work/xb"
            tar -xzf "$a" -C "$work/xa" && tar -xzf "$b" -C "$work/xb" && diff -r "$work/xa" "$work/xb" | head -n 20
            ;;
        *.deb)
            diff <(dpkg-deb -I "$a") <(dpkg-deb -I "$b") | head -n 20
            diff <(dpkg-deb -c "$a") <(dpkg-deb -c "$b") | head -n 20
            ;;
        *.rpm)
            diff <(rpm -qpi "$a"; rpm -qp --dump "$a") <(rpm -qpi "$b"; rpm -qp --dump "$b") | head -n 20
            ;;
    esac
}

for f in $(cd "$first" && ls); do
    if [ ! -f "$work/second/$f" ]; then
        bad "$f: in both builds" "missing from the second"
    elif cmp -s "$first/$f" "$work/second/$f"; then
        ok "$f: byte-identical ($(sha256sum <"$first/$f" | cut -c1-16))"
    else
        bad "$f: byte-identical" "$(explain "$f")"
    fi
done
if [ "$(cd "$first" && ls)" != "$(cd "$work/second" && ls)" ]; then
    bad "the same files in both builds" "$(diff <(cd "$first" && ls) <(cd "$work/second" && ls))"
fi
for arch in x86_64 arm64; do
    name="vaultboot-$version-$arch-linux"
    for side in first second; do
        case $side in first) dir=$first ;; *) dir=$work/second ;; esac
        mkdir -p "$work/bin-$side"
        tar -xzf "$dir/$name.tar.gz" -C "$work/bin-$side" "$name/vaultboot" 2>/dev/null
    done
    a="$work/bin-first/$name/vaultboot" b="$work/bin-second/$name/vaultboot"
    if [ -f "$a" ] && cmp -s "$a" "$b"; then
        ok "$arch binary: byte-identical ($(stat -c %s "$a") bytes, sha256 $(sha256sum <"$a" | cut -c1-16))"
    else
        bad "$arch binary: byte-identical" "$(cmp "$a" "$b" 2>&1 | head -n 3)"
    fi
done

finish
