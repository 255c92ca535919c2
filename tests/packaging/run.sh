#!/bin/sh
# Every packaging check that can run on this machine (no AWS, no VM):
#   - systemd-analyze verify on every unit, failing on ANY output
#   - systemd-analyze security --offline=yes: exposure score of the two services
#   - cloud-init schema --config-file on every example user-data
#   - the Python tests (tests/packaging/test_*.py) with Debian's python3,
#     the one that can import cloudinit (python3-cloudinit 22.4)
#   - packer fmt -check, and packer validate with Debian's packer 1.6.6 on
#     what that version can read
#   - the man pages made from docs/ (tests/packaging/man-pages.sh)
#   - shellcheck on the shell scripts
# Prints one line per check and closes with "N passed, M failed"; exits
# non-zero on any failure.
#
# Debian packages it needs: systemd cloud-init python3-pytest packer shellcheck lowdown man-db
# (python3-yaml, python3-jsonschema come with cloud-init). packer/cleanup.sh's
# tests (as root) run the real static binary in a chroot: VAULTBOOT_STATIC_BIN,
# default target/x86_64-unknown-linux-musl/release/vaultboot (the release's).
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3 # not the pyenv python3 first on PATH: it has no cloudinit
export CHECKPOINT_DISABLE=1 # packer: no version check over the network
export PYTHONDONTWRITEBYTECODE=1

passed=0
failed=0
work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-packaging.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

ok() {
    passed=$((passed + 1))
    printf 'ok    %s\n' "$1"
}
bad() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/      /'; fi
}
# check NAME CMD...: passes when CMD exits 0.
check() {
    _name=$1
    shift
    if _out=$("$@" 2>&1); then ok "$_name"; else bad "$_name" "$_out"; fi
}
# check_silent NAME CMD...: passes when CMD exits 0 AND prints nothing
# (systemd-analyze verify only warns about misspelled keys, with status 0).
check_silent() {
    _name=$1
    shift
    _out=$("$@" 2>&1)
    _rc=$?
    if [ "$_rc" -eq 0 ] && [ -z "$_out" ]; then ok "$_name"; else bad "$_name" "exit $_rc: $_out"; fi
}
need() { # need COMMAND PACKAGE
    if command -v "$1" >/dev/null 2>&1; then return 0; fi
    bad "tool $1 is installed" "apt-get install $2"
    return 1
}

cd "$repo" || exit 2
placeholder="$work/vaultboot-placeholder" # stands in for the binary (see below)
printf '#!/bin/sh\nexit 0\n' >"$placeholder"
chmod 0755 "$placeholder"

# --- systemd -----------------------------------------------------------------
# `systemd-analyze verify` refuses a unit whose ExecStart binary is missing,
# and needs the units it refers to (sysinit.target, network-online.target...).
# So the units are verified inside a throwaway root (--root): it gets a copy
# of this system's unit directory, executable placeholders where the units'
# commands live (/usr/local/sbin/vaultboot need not be built for this; verify
# only checks that the path is executable), a stub nginx.service for the
# drop-in, and our units installed by packer/install.sh itself (DESTDIR), so
# what is verified is what an image gets.
vroot="$work/root"
if need systemd-analyze systemd && need systemctl systemd; then
    mkdir -p "$vroot/usr/lib/systemd" "$vroot/usr/bin" "$vroot/etc/systemd/system"
    ln -s usr/lib "$vroot/lib"
    ln -s usr/bin "$vroot/bin"
    cp -R /usr/lib/systemd/system "$vroot/usr/lib/systemd/"
    for b in sh rm; do cp "$placeholder" "$vroot/usr/bin/$b"; done
    printf '[Unit]\nDescription=stub nginx\n[Service]\nExecStart=/usr/bin/sh -c true\n' \
        >"$vroot/usr/lib/systemd/system/nginx.service"
    if out=$(GATE_UNITS=nginx.service DESTDIR="$vroot" sh packer/install.sh \
        "$placeholder" dist 2>&1); then
        ok "install.sh into a verify root"
    else
        bad "install.sh into a verify root" "$out"
    fi
    cp dist/systemd/examples/vaultboot-ad-join.service "$vroot/etc/systemd/system/"

    for unit in vaultboot.service vaultboot-refresh.service vaultboot-refresh.timer \
        vaultboot-ad-join.service nginx.service; do
        check_silent "systemd-analyze verify $unit" \
            systemd-analyze verify --root="$vroot" "$unit"
    done

    # The harness itself: a misspelled key must be caught (output, status 0).
    cp dist/systemd/vaultboot.service "$vroot/etc/systemd/system/vb-typo.service"
    printf '[Service]\nProtectSytem=strict\n' >>"$vroot/etc/systemd/system/vb-typo.service"
    if out=$(systemd-analyze verify --root="$vroot" vb-typo.service 2>&1) || true; [ -n "$out" ]; then
        ok "verify harness reports a misspelled key"
    else
        bad "verify harness reports a misspelled key" "systemd-analyze printed nothing"
    fi
    rm -f "$vroot/etc/systemd/system/vb-typo.service"

    # Exposure score (0 = locked down, 10 = none). vaultboot runs as root and
    # must write /etc and /run: 2.2 when written; fail above 3.0.
    for unit in vaultboot.service vaultboot-refresh.service; do
        line=$(systemd-analyze security --offline=yes --root="$vroot" "$unit" 2>&1 | grep 'Overall exposure level')
        score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9][0-9.]*\) .*/\1/p')
        if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then
            ok "systemd-analyze security $unit: exposure $score"
        else
            bad "systemd-analyze security $unit: exposure ${score:-?} (want <= 3.0)" "$line"
        fi
    done
fi

# --- cloud-init ------------------------------------------------------------------
if need cloud-init cloud-init; then
    for f in cloud-init/examples/*.yaml; do
        out=$(cloud-init schema --config-file "$f" 2>&1)
        rc=$?
        # 22.4 can exit 0 on some errors: require its success line too.
        case $rc:$out in
            0:*"Valid cloud-config"*) ok "cloud-init schema $f" ;;
            *) bad "cloud-init schema $f" "exit $rc: $out" ;;
        esac
    done
fi

# --- Python tests ------------------------------------------------------------------
if [ -x "$PY" ] && "$PY" -c 'import cloudinit, pytest, yaml' 2>"$work/err"; then
    junit="$work/junit.xml"
    "$PY" -m pytest -q -p no:cacheprovider --junitxml="$junit" tests/packaging >"$work/pytest.out" 2>&1
    rc=$?
    counts=$("$PY" - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0")
    sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f)
PY
)
    p=${counts% *}
    f=${counts#* }
    # Each test counts as one check.
    passed=$((passed + p))
    if [ "$rc" -eq 0 ] && [ "$p" -gt 0 ] && [ "$f" -eq 0 ]; then
        printf 'ok    python tests: %s\n' "$(tail -n 1 "$work/pytest.out")"
    else
        # A collection error or "no tests ran" (exit 5) counts as one failure.
        [ "$f" -gt 0 ] || f=1
        failed=$((failed + f - 1))
        bad "python tests: exit $rc" "$(tail -n 60 "$work/pytest.out")"
    fi
else
    bad "$PY can import cloudinit, pytest, yaml" "apt-get install cloud-init python3-pytest: $(cat "$work/err")"
fi

# --- Packer ------------------------------------------------------------------------
# Debian's packer is 1.6.6. It cannot read plugins.pkr.hcl (required_plugins,
# >= 1.7), nor, in a full validate, amazon-ebs's metadata_options block and
# imds_support argument (newer Amazon plugin). So: fmt on everything; a
# syntax-only validate of every file but plugins.pkr.hcl; and a full validate
# (variables, references, provisioner sources) of a copy with just those two
# settings removed, after checking they are there.
if need packer packer; then
    check "packer fmt -check packer/" packer fmt -check -diff packer/
    pk="$work/pk"
    mkdir -p "$pk/packer"
    for f in packer/*.pkr.hcl packer/*.sh; do
        case $f in packer/plugins.pkr.hcl) ;; *) cp "$f" "$pk/packer/" ;; esac
    done
    ln -s "$repo/dist" "$pk/dist"
    check "packer validate -syntax-only (all but plugins.pkr.hcl)" packer validate -syntax-only "$pk/packer"

    tpl=packer/vaultboot.pkr.hcl
    if grep -q '^  imds_support *= "v2.0"$' "$tpl" &&
        grep -q '^    http_tokens *= "required"$' "$tpl" &&
        grep -q '^  metadata_options {$' "$tpl"; then
        ok "template requires IMDSv2 (metadata_options http_tokens=required, imds_support=v2.0)"
    else
        bad "template requires IMDSv2 (metadata_options http_tokens=required, imds_support=v2.0)"
    fi
    if grep -q 'required_plugins' packer/plugins.pkr.hcl &&
        ! grep -Eq '^(variable|source|build|locals|data)[[:space:]]' packer/plugins.pkr.hcl &&
        ! grep -l 'required_plugins' packer/*.pkr.hcl | grep -qv 'plugins.pkr.hcl'; then
        ok "required_plugins only, and only in plugins.pkr.hcl"
    else
        bad "required_plugins only, and only in plugins.pkr.hcl"
    fi

    sed -e '/^  imds_support *=/d' -e '/^  metadata_options {$/,/^  }$/d' "$tpl" >"$pk/packer/vaultboot.pkr.hcl"
    printf '[vault]\naddress = "https://vault.internal:8200"\n[auth]\nrole = "web"\n' >"$work/config.toml"
    pkgfile="$work/vaultboot_0.1.0_amd64.deb"
    printf 'stands in for the package\n' >"$pkgfile"
    printf -- '-----BEGIN CERTIFICATE-----\n' >"$work/vault-ca.pem"
    sum=$(sha256sum "$pkgfile" | cut -d' ' -f1)
    # Every distro and arch, a local package with a CA, and a URL without one.
    for distro in debian-12 ubuntu-24.04 al2023; do
        for arch in x86_64 arm64; do
            check "packer validate distro=$distro arch=$arch (1.6.6, without metadata_options/imds_support)" \
                packer validate -var "distro=$distro" -var "arch=$arch" \
                -var "vaultboot_config=$work/config.toml" -var "vaultboot_package=$pkgfile" \
                -var "vaultboot_package_sha256=$sum" -var "vault_ca_cert=$work/vault-ca.pem" "$pk/packer"
        done
    done
    check "packer validate with an https:// package URL and no CA" \
        packer validate -var "vaultboot_config=$work/config.toml" \
        -var "vaultboot_package=https://releases.example/vaultboot_0.1.0_amd64.deb" \
        -var "vaultboot_package_sha256=$sum" "$pk/packer"
    # What validate must refuse: a wrong arch, a short checksum, a missing local package.
    for bad_var in "arch=amd64" "vaultboot_package_sha256=abc" "vaultboot_package=$work/missing.deb" \
        "distro=centos-7" "vaultboot_package=$work/config.toml"; do
        if out=$(packer validate -var "vaultboot_config=$work/config.toml" -var "vaultboot_package=$pkgfile" \
            -var "vaultboot_package_sha256=$sum" -var "$bad_var" "$pk/packer" 2>&1); then
            bad "packer validate refuses $bad_var" "$out"
        else
            ok "packer validate refuses $bad_var"
        fi
    done
fi

# --- man pages -----------------------------------------------------------------------
# Made from docs/ by dist/man.sh as a release makes them; every key of docs/configuration.md
# must be in vaultboot.toml(5), and both must render without a warning.
if need lowdown lowdown && need lexgrog man-db; then
    check "man pages (tests/packaging/man-pages.sh)" bash tests/packaging/man-pages.sh
fi

# --- shell -------------------------------------------------------------------------
if need shellcheck shellcheck; then
    for f in packer/install.sh packer/cleanup.sh packer/install-release.sh tests/packaging/run.sh \
        tests/boot/guest/fake-realm dist/deb/postinst dist/deb/prerm dist/deb/postrm; do
        check "shellcheck $f" shellcheck -s sh "$f"
    done
    # bash: the boot test, its in-guest report, the test runner and its install library,
    # the release script and its checks
    for f in tests/boot/run.sh tests/boot/guest/boottest-report tests/run-all.sh tests/lib/deps.sh \
        dist/release.sh dist/man.sh tests/packaging/check-release.sh tests/packaging/reproducible.sh \
        tests/packaging/deb-lifecycle.sh tests/packaging/man-pages.sh tests/lib/checks.sh tests/lib/cargo-tools.sh; do
        check "shellcheck $f" shellcheck -x "$f"
    done
fi

printf '%s passed, %s failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
