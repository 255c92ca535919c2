#!/bin/sh
# Boots the packaging in a real Debian 12 VM (qemu, TCG) to check what no
# offline tool can: that the units' sandbox still lets vaultboot do its job,
# the boot order, the gating, the cloud-init module at a real first boot, the
# AD join example and the refresh. The vaultboot binary is replaced by
# fake-vaultboot (python), which performs the same file-system and process
# operations as the real one (create 0700 parents, stage, fchown, fchmod,
# rename, compare, nonce file, setrlimit/prctl, /dev/log, on_change with
# systemctl) with fake secrets and no network. The real binary's VM test is
# separate (it needs the IMDS and Vault simulators).
#
# Three boots of one image (NoCloud seed, the module example's shape):
#   1. first boot: everything active, in order; refresh works, nginx stays up
#   2. reboot: module not re-run, nonce reused, AD join skipped by ExecCondition
#   3. vaultboot fails (flag file): nginx and the AD join are kept down
#
# Needs: apt-get install --no-install-recommends qemu-system-x86 debootstrap
#        e2fsprogs (and the Debian mirror). About 5 min cold, 3 min with the
#        cached debootstrap tree ($VAULTBOOT_VM_CACHE, default
#        /var/cache/vaultboot-vm). Not part of run.sh. Prints "N passed, M failed".
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${VAULTBOOT_VM_CACHE:-/var/cache/vaultboot-vm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
pkgs=systemd-sysv,linux-image-amd64,nginx-light,cloud-init,python3-cffi-backend,iproute2,ca-certificates
work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
R="$work/root"

for t in qemu-system-x86_64 debootstrap mke2fs debugfs; do
    command -v "$t" >/dev/null 2>&1 || { echo "missing $t: apt-get install qemu-system-x86 debootstrap e2fsprogs" >&2; exit 2; }
done

# --- image ---------------------------------------------------------------------
key=$(printf '%s %s' "$pkgs" "$mirror" | sha256sum | cut -c1-16)
tarball="$cache/bookworm-$key.tar"
if [ ! -f "$tarball" ]; then
    echo "debootstrap (cold, ~2 min)..."
    debootstrap --variant=minbase --include="$pkgs" bookworm "$R" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log"; exit 2; }
    mkdir -p "$cache"
    tar -C "$work" -cf "$tarball.tmp" root && mv "$tarball.tmp" "$tarball"
else
    tar -C "$work" -xf "$tarball"
fi

(cd "$repo" && GATE_UNITS=nginx.service DESTDIR="$R" sh packer/install.sh \
    "$here/fake-vaultboot" dist cloud-init) >"$work/install.log"
cp "$repo/dist/systemd/examples/vaultboot-ad-join.service" "$R/etc/systemd/system/"
ln -sf /etc/systemd/system/vaultboot-ad-join.service "$R/etc/systemd/system/multi-user.target.wants/"
install -m 0755 "$here/fake-realm" "$R/usr/local/bin/realm"
install -m 0755 "$here/vmtest-report" "$R/usr/local/bin/vmtest-report"
cp "$here/vmtest-report.service" "$R/etc/systemd/system/"
ln -sf /etc/systemd/system/vmtest-report.service "$R/etc/systemd/system/multi-user.target.wants/"
ln -sf /dev/null "$R/etc/systemd/system/serial-getty@ttyS0.service"
mkdir -p "$R/var/lib/cloud/seed/nocloud"
cp "$here/user-data" "$R/var/lib/cloud/seed/nocloud/user-data"
printf 'instance-id: i-vmtest-1\nlocal-hostname: vmtest\n' >"$R/var/lib/cloud/seed/nocloud/meta-data"
printf 'datasource_list: [NoCloud, None]\n' >"$R/etc/cloud/cloud.cfg.d/90_vmtest.cfg"
DESTDIR="$R" sh "$repo/packer/cleanup.sh" >/dev/null # as the AMI bake would
mke2fs -q -t ext4 -d "$R" "$work/img.raw" 2G
kernel=$(find "$R/boot" -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$R/boot" -name 'initrd.img-*' | sort | tail -n 1)

boot() {
    echo "boot $1..."
    timeout 480 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 -nographic -no-reboot \
        -kernel "$kernel" -initrd "$initrd" \
        -append "root=/dev/vda rw console=ttyS0" \
        -drive "file=$work/img.raw,format=raw,if=virtio" \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0 </dev/null >"$work/boot$1.log" 2>&1 || true
    debugfs -R "cat /var/log/vmtest-$1.txt" "$work/img.raw" >"$work/report$1.txt" 2>/dev/null || true
}

passed=0
failed=0
expect() { # expect BOOT PATTERN DESCRIPTION
    if grep -qE -- "$2" "$work/report$1.txt"; then
        passed=$((passed + 1)); echo "ok    boot $1: $3"
    else
        failed=$((failed + 1)); echo "FAIL  boot $1: $3 (no /$2/)"
    fi
}
refuse() { # refuse BOOT PATTERN DESCRIPTION
    if grep -qE -- "$2" "$work/report$1.txt"; then
        failed=$((failed + 1)); echo "FAIL  boot $1: $3 (found /$2/)"
    else
        passed=$((passed + 1)); echo "ok    boot $1: $3"
    fi
}

boot 1
expect 1 '^unit vaultboot.service active success$' "vaultboot.service succeeded under its sandbox"
expect 1 '^unit nginx.service active success$' "nginx started"
expect 1 '^unit vaultboot-ad-join.service active success$' "AD join ran"
expect 1 '^order cloud-init<vaultboot<nginx ok$' "cloud-init, then vaultboot, then nginx"
expect 1 '^file /etc/vaultboot/config.toml 600 root root$' "module wrote config.toml 0600 root"
expect 1 '^file /etc/nginx/tls 700 root root$' "missing output dir created 0700"
expect 1 '^file /etc/nginx/tls/server.crt 644 root root$' "certificate 0644 root"
expect 1 '^file /etc/nginx/tls/server.key 600 www-data www-data$' "key chowned to www-data 0600 (CAP_CHOWN, CAP_FOWNER)"
expect 1 '^file /var/lib/vaultboot/nonce.json 600 root root$' "nonce persisted 0600"
expect 1 '^log nonce generated$' "nonce generated on first boot"
expect 1 '^log on_change .* -> 0$' "on_change systemctl works from the sandbox"
expect 1 '^syslog ok$' "syslog (/dev/log) reachable"
expect 1 '^realm argv: join -U joiner corp.example.com$' "realm got user and domain on argv"
expect 1 '^realm stdin-ok$' "realm got the password on stdin, byte for byte"
expect 1 '^realm env-has-password: 0$' "password not in realm's environment"
expect 1 '^runfiles 0$' "ad-join.env removed after the join"
expect 1 '^refresh success nginx-active same-pid$' "refresh succeeded, nginx kept running"
expect 1 '^cloudinit-module ran$' "cc_vaultboot ran in the init stage"
refuse 1 'Invalid cloud-config' "no boot-time schema warning"
refuse 1 'Traceback.*cc_vaultboot' "no module traceback"

boot 2
expect 2 '^unit vaultboot.service active success$' "vaultboot.service succeeded again"
expect 2 '^unit nginx.service active success$' "nginx started"
expect 2 '^unit vaultboot-ad-join.service inactive exec-condition$' "AD join skipped (already joined)"
expect 2 '^runfiles 0$' "re-fetched AD password removed by ExecCondition"
expect 2 '^log nonce reused$' "nonce reused"
refuse 2 '^cloudinit-module ran$' "module not run again (once per instance)"

boot 3
expect 3 '^unit vaultboot.service failed exit-code$' "vaultboot failed (flag)"
expect 3 '^unit nginx.service inactive ' "nginx kept down"
expect 3 '^unit vaultboot-ad-join.service inactive ' "AD join kept down"

if [ "$failed" -ne 0 ]; then
    for n in 1 2 3; do echo "--- report $n"; cat "$work/report$n.txt"; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
