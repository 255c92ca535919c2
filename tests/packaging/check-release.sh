#!/usr/bin/env bash
# Checks a release made by dist/release.sh, with the real tools:
#   - SHA256SUMS covers exactly the six artifacts, the two SBOMs and the provenance, and
#     verifies; a changed byte fails it; with a minisign public key: the signature verifies,
#     a changed SHA256SUMS fails it
#   - the provenance (tests/packaging/check_provenance.py): an in-toto statement with a SLSA v1
#     predicate whose subjects are every artifact with its sha256, naming this checkout's
#     commit; README's verification command accepts it; its signature verifies, a changed
#     statement fails it
#   - per architecture, the SBOM (tests/packaging/check_sbom.py): every crate the binary
#     links (cargo tree of the agent for that target) with version, licence, Cargo.lock's sha256;
#     the binary's embedded cargo auditable list present, each crate it names among those
#   - per architecture, the binary (from the tarball): static-pie (loaded at a random
#     address), the right ELF machine, at most 2,200,000 bytes on x86_64 and 1,900,000 on
#     arm64, `--version` and `check` run (arm64 under qemu-aarch64-static);
#     the inert config shipped in the packages makes `check` exit 78
#   - the tarball: exact file list, owners 0/0, modes; its install.sh (no arguments)
#     installs it into a scratch root
#   - the .deb: lintian without errors, contents, modes, conffiles, maintainer scripts
#     that enable by preset and never start vaultboot
#   - the man pages vaultboot(8) and vaultboot.toml(5) in all three (the .deb's checked by
#     tests/packaging/man-pages.sh: every key of the docs, no man --warnings line); lintian
#     reports neither no-manual-page nor any manpage-* tag
#   - the .rpm: rpmlint without errors (dist/rpm/vaultboot.rpmlintrc), rpm -qlp and
#     --scripts as expected, config.toml %config(noreplace), and an `rpm --root`
#     install into a scratch root with the files' modes and owners
# Prints one line per check and "N passed, M failed".
#
# usage: tests/packaging/check-release.sh OUTDIR VERSION [MINISIGN_PUBKEY_FILE]
set -u
export LC_ALL=C

out=${1:?usage: check-release.sh OUTDIR VERSION [MINISIGN_PUBKEY_FILE]}
version=${2:?usage: check-release.sh OUTDIR VERSION [MINISIGN_PUBKEY_FILE]}
pubkey=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# shellcheck source=tests/lib/checks.sh
. "$repo/tests/lib/checks.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-check-release.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

triple_of() { case $1 in x86_64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; esac; }

runner_for() {
    case $1:$(uname -m) in
        x86_64:x86_64 | arm64:aarch64) ;;
        arm64:*) echo qemu-aarch64-static ;;
        x86_64:*) echo qemu-x86_64-static ;;
    esac
}

# --- checksums and signature ----------------------------------------------------------------
expected_files=$(printf '%s\n' \
    "vaultboot-$version-x86_64-linux.tar.gz" "vaultboot-$version-arm64-linux.tar.gz" \
    "vaultboot_${version}_amd64.deb" "vaultboot_${version}_arm64.deb" \
    "vaultboot-$version-1.x86_64.rpm" "vaultboot-$version-1.aarch64.rpm" \
    "vaultboot-$version-x86_64.cdx.json" "vaultboot-$version-arm64.cdx.json" \
    "vaultboot-$version.intoto.json" | sort)
listed=$(awk '{ print $2 }' "$out/SHA256SUMS" 2>/dev/null | sort)
if [ "$listed" = "$expected_files" ]; then
    ok "SHA256SUMS lists exactly the six artifacts, the two SBOMs and the provenance"
else
    bad "SHA256SUMS lists exactly the six artifacts, the two SBOMs and the provenance" \
        "$(diff <(echo "$expected_files") <(echo "$listed"))"
fi
check "sha256sum -c SHA256SUMS" sh -c "cd '$out' && sha256sum --strict -c SHA256SUMS"
# The tamper check verifies exactly one file, the .deb, with its own line of SHA256SUMS (not
# --ignore-missing, which passes when nothing was verified): first as released (the control),
# then with one byte changed.
tampered=vaultboot_${version}_amd64.deb
mkdir -p "$work/tamper"
grep -F "  $tampered" "$out/SHA256SUMS" | grep -E "^[0-9a-f]{64}  $tampered\$" >"$work/tamper/SHA256SUMS"
cp "$out/$tampered" "$work/tamper/"
control=$(cd "$work/tamper" && sha256sum --strict -c SHA256SUMS 2>&1)
control_rc=$?
printf '\001' | dd of="$work/tamper/$tampered" bs=1 seek=5000 conv=notrunc status=none
result=$(cd "$work/tamper" && sha256sum --strict -c SHA256SUMS 2>&1)
result_rc=$?
if [ "$(wc -l <"$work/tamper/SHA256SUMS")" -eq 1 ] && [ "$control_rc" -eq 0 ] &&
    [ "$control" = "$tampered: OK" ] && [ "$result_rc" -ne 0 ] && [ "${result%%$'\n'*}" = "$tampered: FAILED" ]; then
    ok "a .deb with one changed byte fails sha256sum -c (1 file verified: OK as released, FAILED changed)"
else
    bad "a .deb with one changed byte fails sha256sum -c" \
        "lines: $(wc -l <"$work/tamper/SHA256SUMS"); as released (exit $control_rc): $control; changed (exit $result_rc): $result"
fi
if [ -n "$pubkey" ]; then
    check "minisign -V: SHA256SUMS.minisig verifies with the public key" \
        minisign -Vm "$out/SHA256SUMS" -x "$out/SHA256SUMS.minisig" -p "$pubkey"
    comment=$(minisign -Vm "$out/SHA256SUMS" -x "$out/SHA256SUMS.minisig" -p "$pubkey" -Q 2>&1)
    if [ "$comment" = "vaultboot $version SHA256SUMS" ]; then
        ok "trusted comment names the release: $comment"
    else
        bad "trusted comment names the release" "$comment"
    fi
    sed 's/^\(.\)/0/' "$out/SHA256SUMS" >"$work/SHA256SUMS"
    if minisign -Vm "$work/SHA256SUMS" -x "$out/SHA256SUMS.minisig" -p "$pubkey" >/dev/null 2>&1; then
        bad "a changed SHA256SUMS fails minisign -V"
    else
        ok "a changed SHA256SUMS fails minisign -V"
    fi
fi

# --- provenance ------------------------------------------------------------------------------
statement=vaultboot-$version.intoto.json
check "provenance: $statement (tests/packaging/check_provenance.py)" \
    python3 "$here/check_provenance.py" "$out" "$version" "$(git -C "$repo" rev-parse HEAD)"
# README's command, as written there: every subject's sha256 against the file beside it.
verified=$(cd "$out" && jq -r '.subject[] | "\(.digest.sha256)  \(.name)"' "$statement" | sha256sum --strict -c 2>&1)
verified_rc=$?
if [ "$verified_rc" -eq 0 ] && [ "$(printf '%s\n' "$verified" | grep -c ': OK$')" -eq 8 ]; then
    ok "README's jq | sha256sum -c verifies the 8 subjects"
else
    bad "README's jq | sha256sum -c verifies the 8 subjects" "exit $verified_rc: $verified"
fi
if [ -n "$pubkey" ]; then
    check "minisign -V: $statement.minisig verifies with the public key" \
        minisign -Vm "$out/$statement" -x "$out/$statement.minisig" -p "$pubkey"
    sed 's/"sha256": "./"sha256": "0/' "$out/$statement" >"$work/$statement"
    if ! cmp -s "$out/$statement" "$work/$statement" &&
        ! minisign -Vm "$work/$statement" -x "$out/$statement.minisig" -p "$pubkey" >/dev/null 2>&1; then
        ok "a changed provenance fails minisign -V"
    else
        bad "a changed provenance fails minisign -V"
    fi
fi

# --- per architecture -----------------------------------------------------------------------
tar_list() { # the tarball's expected entries, name-sorted
    local t="vaultboot-$version-$1-linux"
    printf '%s\n' "$t/" "$t/LICENSE" "$t/README.md" "$t/install.sh" "$t/vaultboot" \
        "$t/examples/" "$t/examples/config.toml" \
        "$t/dist/" "$t/dist/README.md" "$t/dist/systemd/" "$t/dist/systemd/80-vaultboot.preset" \
        "$t/dist/systemd/vaultboot.service" "$t/dist/systemd/vaultboot-refresh.service" \
        "$t/dist/systemd/vaultboot-refresh.timer" "$t/dist/systemd/vaultboot.catalog" \
        "$t/dist/systemd/examples/" \
        "$t/dist/systemd/examples/vaultboot-ad-join.service" \
        "$t/dist/systemd/examples/nginx.service.d/" \
        "$t/dist/systemd/examples/nginx.service.d/10-vaultboot.conf" \
        "$t/dist/systemd/examples/vaultboot.service.d/" \
        "$t/dist/systemd/examples/vaultboot.service.d/10-nginx.conf" \
        "$t/cloud-init/" "$t/cloud-init/README.md" "$t/cloud-init/examples/" \
        "$t/cloud-init/examples/user-data-write-files.yaml" \
        "$t/dist/man/" "$t/dist/man/vaultboot.8.gz" "$t/dist/man/vaultboot.toml.5.gz" | sort
}

# path mode owner: what both packages must install (the systemd path differs).
pkg_expect() { # pkg_expect UNITDIR
    cat <<EOF
/usr/sbin/vaultboot 755 root:root
$1/system/vaultboot.service 644 root:root
$1/system/vaultboot-refresh.service 644 root:root
$1/system/vaultboot-refresh.timer 644 root:root
$1/system-preset/80-vaultboot.preset 644 root:root
/usr/lib/systemd/catalog/vaultboot.catalog 644 root:root
/etc/vaultboot 700 root:root
/etc/vaultboot/config.toml 600 root:root
/var/lib/vaultboot 700 root:root
/usr/share/doc/vaultboot/examples/config.toml 644 root:root
/usr/share/man/man8/vaultboot.8.gz 644 root:root
/usr/share/man/man5/vaultboot.toml.5.gz 644 root:root
EOF
}

scripts_enable_never_start() { # NAME TEXT: preset on install, no start of vaultboot
    local name=$1 text=$2
    if printf '%s\n' "$text" | grep -q 'systemctl --no-reload preset vaultboot.service vaultboot-refresh.timer' &&
        ! printf '%s\n' "$text" | grep -Eq 'systemctl[^|;]* (start|restart|reload-or-restart|try-restart)|--now|enable --now'; then
        ok "$name: enables by preset, never starts"
    else
        bad "$name: enables by preset, never starts" "$text"
    fi
}

for arch in x86_64 arm64; do
    case $arch in
        x86_64) debarch=amd64 rpmarch=x86_64 machine="x86-64" max_bytes=2200000 ;;
        arm64) debarch=arm64 rpmarch=aarch64 machine="ARM aarch64" max_bytes=1900000 ;;
    esac
    runner=$(runner_for "$arch")
    tgz="$out/vaultboot-$version-$arch-linux.tar.gz"
    deb="$out/vaultboot_${version}_$debarch.deb"
    rpm="$out/vaultboot-$version-1.$rpmarch.rpm"
    x="$work/x-$arch"
    mkdir -p "$x"

    # tarball
    got=$(tar -tzf "$tgz" 2>&1 | sort)
    if [ "$got" = "$(tar_list "$arch")" ]; then
        ok "$arch tarball: the expected $(printf '%s\n' "$got" | wc -l) entries"
    else
        bad "$arch tarball: the expected entries" "$(diff <(tar_list "$arch") <(printf '%s\n' "$got"))"
    fi
    owners=$(tar -tvzf "$tgz" --numeric-owner | awk '{ print $2 }' | sort -u)
    modes=$(tar -tvzf "$tgz" | awk '$6 ~ /\/(vaultboot|install\.sh)$/ { print $1 }' | sort -u)
    if [ "$owners" = "0/0" ] && [ "$modes" = "-rwxr-xr-x" ]; then
        ok "$arch tarball: owners 0/0, vaultboot and install.sh 0755"
    else
        bad "$arch tarball: owners 0/0, vaultboot and install.sh 0755" "owners: $owners; modes: $modes"
    fi
    tar -xzf "$tgz" -C "$x"
    t="$x/vaultboot-$version-$arch-linux"
    bin="$t/vaultboot"

    # binary
    desc=$(file -b "$bin")
    size=$(stat -c %s "$bin")
    case $desc in
        *"$machine"*"static-pie linked"*) ok "$arch binary: $desc" ;;
        *) bad "$arch binary: static-pie $machine" "$desc" ;;
    esac
    if [ "$size" -le "$max_bytes" ]; then
        ok "$arch binary: $size bytes (limit $max_bytes)"
    else
        bad "$arch binary: $size bytes (limit $max_bytes)"
    fi
    check "$arch SBOM: vaultboot-$version-$arch.cdx.json lists what the binary links (check_sbom.py)" \
        python3 "$here/check_sbom.py" "$out/vaultboot-$version-$arch.cdx.json" "$repo/Cargo.lock" "$(triple_of "$arch")" "$bin"
    # shellcheck disable=SC2086 # $runner is empty or one word
    check "$arch binary runs${runner:+ under $runner}: --version" $runner "$bin" --version
    # shellcheck disable=SC2086
    check "$arch binary: check --config examples/config.toml" $runner "$bin" check --config "$t/examples/config.toml"

    # tarball's install.sh, no arguments, into a scratch root
    r="$x/root"
    mkdir -p "$r"
    if o=$(DESTDIR="$r" sh "$t/install.sh" 2>&1) &&
        cmp -s "$bin" "$r/usr/local/sbin/vaultboot" &&
        grep -q '^ExecStart=/usr/local/sbin/vaultboot run$' "$r/etc/systemd/system/vaultboot.service" &&
        [ -L "$r/etc/systemd/system/multi-user.target.wants/vaultboot.service" ]; then
        ok "$arch tarball: ./install.sh installs it (/usr/local/sbin, /etc/systemd/system, enabled)"
    else
        bad "$arch tarball: ./install.sh installs it" "$o"
    fi
    if cmp -s "$t/dist/man/vaultboot.8.gz" "$r/usr/local/share/man/man8/vaultboot.8.gz" &&
        cmp -s "$t/dist/man/vaultboot.toml.5.gz" "$r/usr/local/share/man/man5/vaultboot.toml.5.gz"; then
        ok "$arch tarball: ./install.sh installs the man pages under /usr/local/share/man"
    else
        bad "$arch tarball: ./install.sh installs the man pages under /usr/local/share/man" \
            "$(find "$r/usr/local/share" 2>&1)"
    fi
    if cmp -s "$t/dist/systemd/vaultboot.catalog" "$r/usr/local/lib/systemd/catalog/vaultboot.catalog"; then
        ok "$arch tarball: ./install.sh installs the journal catalog under /usr/local/lib/systemd/catalog"
    else
        bad "$arch tarball: ./install.sh installs the journal catalog under /usr/local/lib/systemd/catalog" \
            "$(find "$r/usr/local/lib" 2>&1)"
    fi

    # .deb: lintian's exit status (0; 2: an error tag, its --fail-on default; 1: lintian itself
    # failed) and its output both count. The status is taken from a run without
    # --show-overrides: with it, lintian 2.116 exits 2 for an overridden error tag (the arm64
    # binary's statically-linked-binary). A second run with --show-overrides prints the
    # overrides the package ships that matched (O: lines): the maintainer scripts' and the
    # root-only directories' always do, which proves lintian examined this package (an empty
    # output could not pass).
    lint_all=$(lintian --pedantic "$deb" 2>&1)
    lint_rc=$?
    lint_overrides=$(lintian --pedantic --show-overrides "$deb" 2>&1 | grep -c '^O: vaultboot: ')
    lint=$(printf '%s\n' "$lint_all" | grep -E '^[EWIPX]: ')
    if { [ "$lint_rc" -ne 0 ] && [ "$lint_rc" -ne 2 ]; } || [ "$lint_overrides" -lt 3 ]; then
        bad "$debarch .deb: lintian ran on the package" "exit $lint_rc, $lint_overrides overrides matched: $lint_all"
    elif [ "$lint_rc" -ne 0 ] || printf '%s\n' "$lint" | grep -q '^E: '; then
        bad "$debarch .deb: lintian without errors" "exit $lint_rc: $lint"
    else
        ok "$debarch .deb: lintian without errors, $lint_overrides overrides matched${lint:+ ($(printf '%s\n' "$lint" | grep -c '^[WIP]:') other tags: $(printf '%s\n' "$lint" | cut -d' ' -f1,3 | tr '\n' ' '))}"
    fi
    # no-manual-page is a warning (no error to fail the check above): asked for by name.
    if [ "$lint_overrides" -ge 3 ] && ! printf '%s\n' "$lint" | grep -qE '^[EWIPX]: vaultboot[^ ]*: (no-manual-page|manpage-)'; then
        ok "$debarch .deb: lintian reports no no-manual-page and no manpage-* tag"
    else
        bad "$debarch .deb: lintian reports no no-manual-page and no manpage-* tag" "$lint"
    fi
    mkdir -p "$x/man"
    dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$x/man" --strip-components=5 \
        ./usr/share/man/man8/vaultboot.8.gz ./usr/share/man/man5/vaultboot.toml.5.gz 2>/dev/null
    check "$debarch .deb: its man pages (tests/packaging/man-pages.sh)" "$here/man-pages.sh" "$x/man"
    check "$debarch .deb: Architecture $debarch, Version $version" \
        test "$(dpkg-deb -f "$deb" Architecture Version | tr '\n' ' ')" = "Architecture: $debarch Version: $version "
    listing=$(dpkg-deb -c "$deb" | awk '{ sub(/^\./, "", $6); sub(/\/$/, "", $6); print $6, $1, $2 }')
    missing=""
    while read -r path mode owner; do
        want=$(printf '%s' "$mode" | sed 's/^700$/drwx------/; s/^755$/-rwxr-xr-x/; s/^644$/-rw-r--r--/; s/^600$/-rw-------/')
        printf '%s\n' "$listing" | grep -qx "$path $want ${owner/:/\/}" || missing+="$path $want $owner"$'\n'
    done < <(pkg_expect /lib/systemd)
    if [ -z "$missing" ]; then ok "$debarch .deb: files, modes and owners"; else bad "$debarch .deb: files, modes and owners" "missing: $missing$listing"; fi
    dpkg-deb -e "$deb" "$x/DEBIAN"
    check "$debarch .deb: conffiles = /etc/vaultboot/config.toml" test "$(cat "$x/DEBIAN/conffiles")" = /etc/vaultboot/config.toml
    # A negative grep decides: on the listing itself, which must not be empty.
    # shellcheck disable=SC2016 # $1 is the inner sh's
    check "$debarch .deb: nothing under /etc/cloud or cloudinit/ (cloud-init is left alone)" \
        sh -c 'test -n "$1" && ! printf "%s\n" "$1" | grep -E "/etc/cloud|cloudinit/"' _ "$listing"
    check "$debarch .deb: no dpkg trigger" test ! -e "$x/DEBIAN/triggers"
    scripts_enable_never_start "$debarch .deb maintainer scripts" "$(cat "$x/DEBIAN/postinst" "$x/DEBIAN/prerm" "$x/DEBIAN/postrm")"
    dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./etc/vaultboot/config.toml >"$x/inert.toml"
    # shellcheck disable=SC2086
    "${runner:-env}" "$bin" check --config "$x/inert.toml" >"$x/inert.out" 2>&1
    rc=$?
    if [ "$rc" -eq 78 ]; then
        ok "$arch: the shipped (inert) config.toml makes check exit 78: $(head -n 1 "$x/inert.out")"
    else
        bad "$arch: the shipped (inert) config.toml makes check exit 78" "exit $rc: $(cat "$x/inert.out")"
    fi

    # .rpm
    lint=$(rpmlint -r "$repo/dist/rpm/vaultboot.rpmlintrc" "$rpm" 2>&1)
    lint_rc=$?
    summary=$(printf '%s\n' "$lint" | grep 'packages and .* checked')
    case $lint_rc:$summary in
        0:*"1 packages and "*" 0 errors"*) ok "$rpmarch .rpm: rpmlint: ${summary#* checked; }" ;;
        *) bad "$rpmarch .rpm: rpmlint without errors" "exit $lint_rc: $lint" ;;
    esac
    check "$rpmarch .rpm: Arch $rpmarch, Version $version-1" \
        test "$(rpm -qp --qf '%{ARCH} %{VERSION}-%{RELEASE}' "$rpm")" = "$rpmarch $version-1"
    files=$(rpm -qlp "$rpm")
    missing=""
    while read -r path _ _; do
        printf '%s\n' "$files" | grep -qx "$path" || missing+="$path "
    done < <(pkg_expect /usr/lib/systemd)
    if [ -z "$missing" ]; then ok "$rpmarch .rpm: rpm -qlp lists every file"; else bad "$rpmarch .rpm: rpm -qlp lists every file" "missing: $missing"; fi
    check "$rpmarch .rpm: /etc/vaultboot/config.toml is %config(noreplace)" \
        sh -c "rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' '$rpm' | grep -qx 'cn /etc/vaultboot/config.toml'"
    scripts=$(rpm -qp --scripts --triggers "$rpm")
    scripts_enable_never_start "$rpmarch .rpm scriptlets" "$scripts"
    check "$rpmarch .rpm: no trigger, nothing of cloud-init's" \
        sh -c "test -n \"\$1\" && test -n \"\$2\" && ! printf '%s\n' \"\$1\" | grep -qi 'trigger\|cloud' && ! printf '%s\n' \"\$2\" | grep -qE '/etc/cloud|cloudinit/'" _ "$scripts" "$files"
    rr="$x/rpmroot"
    mkdir -p "$rr"
    if o=$(rpm --root "$rr" --initdb 2>&1 &&
        rpm --root "$rr" -i --nodeps --noscripts --notriggers --ignorearch "$rpm" 2>&1); then
        wrong=""
        while read -r path mode owner; do
            st=$(stat -c '%a %U:%G' "$rr$path" 2>&1)
            [ "$st" = "$mode $owner" ] || wrong+="$path: want $mode $owner, got $st"$'\n'
        done < <(pkg_expect /usr/lib/systemd)
        if [ -z "$wrong" ] && cmp -s "$bin" "$rr/usr/sbin/vaultboot"; then
            ok "$rpmarch .rpm: rpm --root install: $(pkg_expect x x | wc -l) paths with their modes and owners"
        else
            bad "$rpmarch .rpm: rpm --root install: modes and owners" "$wrong"
        fi
        check "$rpmarch .rpm: rpm --root -V (installed files match the package)" rpm --root "$rr" -V --nodeps vaultboot
    else
        bad "$rpmarch .rpm: rpm --root install" "$o"
    fi
done

finish
