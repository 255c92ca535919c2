#!/usr/bin/env bash
# The boot test: the REAL static vaultboot in a real Debian guest (qemu:
# Debian 12 "bookworm" with cloud-init 22.4 and systemd 252, or Debian 13
# "trixie" with cloud-init 25.1 and systemd 257), installed from the project's
# .deb (dist/release.sh) with dpkg -i, upgraded to a newer build and purged
# inside the running guest, configured by plain write_files user-data from a NoCloud
# seed that also creates the user owning one output, against the IMDS and
# Vault simulators running on this host. See docs/boot-test.md.
#
#   boot 1  first boot: cloud-init writes the config, vaultboot fetches a TLS
#           certificate, the AD join password and an API key before nginx starts;
#           the key and the API key are encrypted systemd credentials (nginx and a
#           DynamicUser=yes service load them); the host checks nginx's certificate
#           with a real TLS client; the refresh unit rotates the certificate; then
#           the guest reboots, and the host scans its whole disk image for every
#           secret value the simulator handed out: none may be there.
#   boot 2  the same disk again: the persisted nonce is reused (the Vault
#           simulator sees the same client nonce), no "client nonce mismatch";
#           the credentials, gone with /run, are written again before their
#           consumers start.
#   boot 3  a fresh image whose Vault is unreachable at boot (the host forwards
#           vault.internal:8200 to a closed port; retry.deadline 20s):
#           vaultboot.service fails after its deadline, and so does its first
#           automatic retry (RestartSec=30s); nginx stays down. Copies of the shipped unit show
#           that exits 78 and 64 are not retried (69 is). Then the host opens
#           the way to Vault and, with nobody acting in the guest, a retry
#           succeeds and nginx serves the Vault-issued certificate; the refresh
#           timer (shortened on this image) fired during the outage and again.
#           This image has the plain-file configuration: its disk scan is the
#           control (each kind of secret found).
#
#   --arch arm64  (Debian 12 only) the same on an arm64 (Graviton) guest: the arm64
#           .deb, an arm64 tree (debootstrap --foreign, its second stage under
#           qemu-aarch64-static through a binfmt_misc entry of its own, removed at the
#           end), qemu-system-aarch64 -M virt under TCG; boot 1 only (boots 2 and 3
#           are skipped: they test nothing architecture-specific and cost minutes).
#
# usage: tests/boot/run.sh [--suite bookworm|trixie] [--arch amd64|arm64] [--tree-only]
#        (as root; default bookworm, amd64; --tree-only: build or check the cached
#        guest tree and stop, so that a CI can make it ahead, beside other stages)
# environment:
#   VAULTBOOT_BOOT_CACHE  where the debootstrap tree is cached (default
#                         /var/cache/vaultboot-boot), keyed on the package list
#   DEBIAN_MIRROR         default http://deb.debian.org/debian (cold build only)
#   VAULTBOOT_BOOT_ACCEL  kvm | tcg (default: kvm when usable, else tcg; arm64: tcg)
#   VAULTBOOT_BOOT_CPU    arm64: qemu's -cpu (default cortex-a72)
#   VAULTBOOT_BOOT_KEEP=1 keep the work directory (images, logs, reports)
#   CARGO_TARGET_DIR      honoured, as by cargo
# Prints one ok/FAIL line per check and ends with a summary; exits non-zero on
# any failure, including when it cannot run here (it says why).
set -uo pipefail

SUITE=bookworm
ARCH=amd64
TREE_ONLY=
usage="usage: $0 [--suite bookworm|trixie] [--arch amd64|arm64] [--tree-only]"
while [ $# -gt 0 ]; do
    case $1 in
        --tree-only) TREE_ONLY=1 && shift && continue ;;
        -h | --help) sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
        --suite)
            case ${2:-} in
                bookworm | trixie) SUITE=$2 ;;
                *) echo "$usage" >&2 && exit 64 ;;
            esac
            ;;
        --arch)
            case ${2:-} in
                amd64 | arm64) ARCH=$2 ;;
                *) echo "$usage" >&2 && exit 64 ;;
            esac
            ;;
        *) echo "$usage   (see --help)" >&2 && exit 64 ;;
    esac
    shift 2
done
if [ "$ARCH:$SUITE" = arm64:trixie ]; then echo "--arch arm64 runs Debian 12 (bookworm) only" >&2 && exit 64; fi

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo" || exit 2

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The guest's packages; the cache key. python3-cffi-backend: without it
# cloud-init stays unconfigured in a minbase tree. e2fsprogs (resize2fs for
# cc_resizefs; not in trixie's minbase) and openssh-client (ssh-keygen for
# cc_ssh's host keys): without them those modules fail, and cloud-init 25.1
# reports the boot as an error.
GUEST_PACKAGES=systemd-sysv,linux-image-$ARCH,nginx-light,cloud-init,python3-cffi-backend,iproute2,ca-certificates,curl,e2fsprogs,openssh-client
CACHE=${VAULTBOOT_BOOT_CACHE:-/var/cache/vaultboot-boot}
BOOT_READY_TIMEOUT=420 # seconds from qemu start to the guest's report
BOOT_EXIT_TIMEOUT=120  # seconds from the go-ahead to qemu's exit
# What differs between the guests' architectures: dist/release.sh's name for it, the
# binary's target, qemu, the serial console, and what `file` and the guest's report say
# of the installed binary (its ELF machine: bytes 18-19).
case $ARCH in
    amd64)
        RELEASE_ARCH=x86_64 MUSL_TARGET=x86_64-unknown-linux-musl
        QEMU=qemu-system-x86_64 QEMU_PKG=qemu-system-x86 CONSOLE=ttyS0
        FILE_MACHINE=x86-64 GUEST_MACHINE=x86_64 ELF_MACHINE=3e00
        qemu_machine=()
        ;;
    arm64)
        RELEASE_ARCH=arm64 MUSL_TARGET=aarch64-unknown-linux-musl
        QEMU=qemu-system-aarch64 QEMU_PKG=qemu-system-arm CONSOLE=ttyAMA0
        FILE_MACHINE="ARM aarch64" GUEST_MACHINE=aarch64 ELF_MACHINE=b700
        qemu_machine=(-M virt)
        # Emulated instruction by instruction (TCG): a boot takes about twice as long.
        BOOT_READY_TIMEOUT=900 BOOT_EXIT_TIMEOUT=240
        ;;
esac

INSTANCE_ID="i-0b007e57c0ffee001" # IMDS and the NoCloud seed agree on it
# Boot 3 is another instance (its own simulator): it reaches Vault in the end, and a fresh
# image's new nonce for boot 1's instance id would be refused ("client nonce mismatch", 77).
INSTANCE_ID3="i-0b007e57c0ffee003"
LOCAL_HOSTNAME=ip-10-0-1-23.ec2.internal # what the IMDS simulator answers
AD_DOMAIN=corp.example.com
FAIL_DEADLINE=20 # seconds: retry.deadline of the failure boot
FAIL_TIMEOUT=50  # seconds: its TimeoutStartSec (deadline + margin, as dist/README says)
RESTART_SEC=30   # seconds: the shipped vaultboot.service's RestartSec
RECOVERY_TIMEOUT=240 # seconds from Vault's return to nginx serving the certificate

t0=$SECONDS
passed=0
failed=0
failures=()
timings=()
scans=()

say() { printf '\n== %s\n' "$*"; }
ok() {
    passed=$((passed + 1))
    printf 'ok    %s\n' "$1"
}
bad() {
    failed=$((failed + 1))
    failures+=("$1")
    printf 'FAIL  %s\n' "$1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/      /'; fi
}
# fatal WHY: the test cannot go on (or cannot run here at all).
fatal() {
    bad "$1"
    summary
    exit 1
}
phase_start() { phase_t=$SECONDS; say "$1"; phase_name=$1; }
phase_end() { timings+=("$phase_name: $((SECONDS - phase_t))s"); }

summary() {
    echo
    echo "== boot test summary"
    for t in "${timings[@]}"; do echo "   $t"; done
    for t in "${scans[@]}"; do echo "   disk scan $t"; done
    if [ "$ARCH" = arm64 ] && [ -z "$TREE_ONLY" ]; then echo "   skipped on arm64: boots 2 and 3"; fi
    echo "   total: $((SECONDS - t0))s (Debian $SUITE, $ARCH)"
    if ((failed)); then
        for f in "${failures[@]}"; do echo "   failed: $f"; done
        echo "boot test: FAIL ($passed passed, $failed failed)"
    else
        echo "boot test: PASS ($passed passed, 0 failed)"
    fi
}

# end_run: on failure, what the guests and the simulators said; then the summary.
end_run() {
    if ((failed)); then
        for l in boot1 boot2 boot3; do
            for f in "$work/out/$l"/boottest/boot-*.txt; do
                [ -f "$f" ] || continue
                echo "--- $l: $(basename "$f")"
                grep -vE '^(refresh-log|nginx-log) ' "$f" | head -n 150
            done
        done
        echo "--- simulator stderr"
        cat "$work/sim.err"
        echo "--- boot 3's simulator stderr"
        cat "$work/sim3.err"
    fi
    summary
}

# --- cleanup: qemu, the simulators, the work directory -----------------------------
work=
qemu_pid=
sim_pid=
sim3_pid=
sim_feed_pid=
tree_pid=
gate_pid=
binfmt_entry=
binfmt_mounted=
cleanup() {
    if [ -n "$tree_pid" ]; then kill -- "-$tree_pid" 2>/dev/null; fi
    binfmt_off
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null
        sleep 1
        kill -9 "$qemu_pid" 2>/dev/null
    fi
    for p in "$sim_pid" "$sim3_pid"; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null; fi
    done
    if [ -n "$sim_feed_pid" ]; then kill "$sim_feed_pid" 2>/dev/null; fi
    if [ -n "$gate_pid" ]; then kill "$gate_pid" 2>/dev/null; fi
    wait 2>/dev/null
    # An interrupted debootstrap second stage leaves its /proc and /sys mounted in the tree.
    if [ -n "$work" ] && [ -d "$work/root" ]; then
        grep -o " $work/root/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n 1 umount -l 2>/dev/null
    fi
    if [ -n "$work" ] && [ -d "$work" ]; then
        if [ "${VAULTBOOT_BOOT_KEEP:-0}" = 1 ]; then
            echo "work directory kept: $work"
        else
            rm -rf "$work"
        fi
    fi
}
# --- arm64: its binaries run here through a binfmt_misc entry of this run's own ----------------
# The tree's second stage (debootstrap), dpkg -i in the chroot and `vaultboot --version` run
# arm64 binaries. The entry has its own name (another run may have one too), the F flag (the
# kernel opens qemu-aarch64-static now, so the chroot needs no copy of it), and is removed
# at the end, with binfmt_misc itself if this run mounted it: the machine as it was found.
binfmt_on() {
    local fs=/proc/sys/fs/binfmt_misc
    if [ ! -e "$fs/register" ]; then
        mount -t binfmt_misc binfmt_misc "$fs" || return 1
        binfmt_mounted=yes
    fi
    binfmt_entry=vaultboot-boottest-aarch64-$$
    printf ':%s:M::%s:%s:%s:F\n' "$binfmt_entry" \
        '\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' \
        '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' \
        "$(command -v qemu-aarch64-static)" >"$fs/register" || { binfmt_entry= && return 1; }
}
binfmt_off() {
    local fs=/proc/sys/fs/binfmt_misc
    if [ -n "$binfmt_entry" ] && [ -e "$fs/$binfmt_entry" ]; then echo -1 >"$fs/$binfmt_entry"; fi
    binfmt_entry=
    # Unmounted only when this run mounted it and no other entry was added meanwhile.
    if [ "$binfmt_mounted" = yes ] && [ -z "$(find "$fs" -mindepth 1 -maxdepth 1 ! -name register ! -name status)" ]; then
        umount "$fs" && binfmt_mounted=
    fi
}
trap cleanup EXIT
trap 'bad "interrupted (signal)"; summary; exit 130' INT TERM HUP

# --- preconditions ------------------------------------------------------------------
phase_start "preconditions"
[ "$(uname -s)" = Linux ] || fatal "needs Linux (this is $(uname -s))"
if [ "$(id -u)" -ne 0 ]; then
    fatal "needs root: debootstrap, and an image whose files keep their owners (run: sudo $0)"
fi
# Each host tool is checked by running it; only what does not run is installed (tests/lib/deps.sh
# says how a package preinstalled from another suite, like today's qemu-utils, is handled).
# shellcheck source=tests/lib/deps.sh
. "$repo/tests/lib/deps.sh"
require "$QEMU_PKG" "$QEMU" --version
if [ "$ARCH" = arm64 ]; then
    require qemu-user-static qemu-aarch64-static --version
    require mmdebstrap mmdebstrap --version
    require arch-test sh -c 'command -v arch-test' # (arm64 runs only once binfmt_misc knows it)
    require gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc --version
    require libc6-dev-arm64-cross sh -c 'printf "#include <stdint.h>\n" | aarch64-linux-gnu-gcc -x c -c -o /dev/null -'
fi
require debootstrap debootstrap --version
require e2fsprogs mke2fs -V
require e2fsprogs debugfs -V
require socat socat -V
require openssl openssl version
require curl curl --version
require zstd zstd --version
require python3-yaml /usr/bin/python3 -c 'import yaml'
require musl-tools musl-gcc --version
require rpm rpmbuild --version
ensure_required "the boot test" || fatal "cannot install what the boot test needs (the line above says why)"
command -v cargo >/dev/null 2>&1 || fatal "cargo not found: the boot test cannot run here"
if command -v rustup >/dev/null 2>&1 &&
    ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
    rustup target add "$MUSL_TARGET" || fatal "cannot add the $MUSL_TARGET target"
fi
SOCAT=$(command -v socat)

accel=${VAULTBOOT_BOOT_ACCEL:-}
if [ -z "$accel" ]; then
    # /dev/kvm alone is not enough: without vmx/svm in the CPU flags (nested
    # virtualisation off) qemu -accel kvm hangs.
    if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; else accel=tcg; fi
fi
case $ARCH:$accel in
    amd64:kvm) qemu_accel=(-accel kvm -cpu host) ;;
    amd64:tcg) qemu_accel=(-accel tcg -cpu max) ;;
    # cortex-a72: no pointer authentication, whose default (QARMA) emulation under TCG makes
    # -cpu max slow; -cpu max,pauth-impdef=on measured the same here (docs/boot-test.md).
    arm64:*) accel=tcg && qemu_accel=(-accel tcg -cpu "${VAULTBOOT_BOOT_CPU:-cortex-a72}") ;;
    *) fatal "VAULTBOOT_BOOT_ACCEL must be kvm or tcg, not $accel" ;;
esac
echo "qemu: $("$QEMU" --version | head -n 1), accel $accel, ${qemu_accel[*]}"
if [ "$ARCH" = arm64 ]; then
    binfmt_on || fatal "cannot register qemu-aarch64-static with binfmt_misc (arm64 binaries must run here)"
    echo "binfmt_misc: $binfmt_entry -> $(command -v qemu-aarch64-static) (flags F), removed at the end"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-boot.XXXXXX") || fatal "mktemp failed"
chmod 0755 "$work"
case $work in *[,\ ]*) fatal "work directory path must not contain commas or spaces (qemu options): $work" ;; esac
mkdir -p "$work/out" "$work/sim"
ok "preconditions (root, packages, $QEMU with $accel)"
phase_end

# --- the guest tree: debootstrap once, cached; in the background during the build ----------
# (amd64's key and name are what they were before arm64 came: existing caches stay valid.)
if [ "$ARCH" = amd64 ]; then
    key=$(printf 'v1 %s %s minbase %s' "$SUITE" "$(uname -m)" "$GUEST_PACKAGES" | sha256sum | cut -c1-16)
    tarball=$CACHE/$SUITE-$key.tar.zst
else
    key=$(printf 'v1 %s %s on %s mmdebstrap minbase initrd-list %s' "$SUITE" "$ARCH" "$(uname -m)" "$GUEST_PACKAGES" |
        sha256sum | cut -c1-16)
    tarball=$CACHE/$SUITE-$ARCH-$key.tar.zst
fi
R=$work/root
# guest_tree: wait for the tree (built or unpacked in the background), say where it came from.
guest_tree() {
    phase_start "guest tree (Debian $SUITE)"
    tree_rc=1
    if [ -n "$tree_pid" ]; then
        wait "$tree_pid"
        tree_rc=$?
    fi
    tree_pid=
    cat "$work/tree.log" 2>/dev/null
    case $tree_rc in
        0) ok "guest tree from the cache ($tarball)" ;;
        10) ok "guest tree built by ${tree_cmd[0]} and cached ($tarball, $(du -h "$tarball" | cut -f1))" ;;
        11) bad "cache the guest tree in $CACHE" "(the test goes on without the cache)" ;;
        *) fatal "no guest tree (see above)" ;;
    esac
    kernel=$(find "$R/boot" -name 'vmlinuz-*' | sort -V | tail -n 1)
    initrd=$R/boot/initrd.img-${kernel##*/vmlinuz-}
    if [ -z "$kernel" ] || [ ! -s "$initrd" ]; then fatal "no kernel/initrd in the guest tree"; fi
    phase_end
}

# The command that makes the tree.
if [ "$ARCH" = amd64 ]; then
    tree_cmd=(debootstrap --variant=minbase --include="$GUEST_PACKAGES" "$SUITE" "$R" "$MIRROR")
else
    # Another architecture: every program of the tree that runs while it is built (dpkg, the
    # maintainer scripts) runs under qemu-aarch64-static, many times slower than natively.
    # mmdebstrap resolves and downloads with the host's own apt and runs dpkg in the tree
    # once; debootstrap --foreign's second stage is an emulated shell loop (twice as long).
    # mkinitramfs with MODULES=most (every storage and network driver, a modprobe each) took
    # more than 9 minutes emulated: the initrd gets the root disk's drivers only (udev loads the
    # others from the root file system), set before initramfs-tools is installed.
    # shellcheck disable=SC2016 # $1 is mmdebstrap's: the tree, expanded by its hook's shell
    tree_cmd=(mmdebstrap --mode=root --arch="$ARCH" --variant=minbase --include="$GUEST_PACKAGES"
        --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"'
        --setup-hook='echo MODULES=list >"$1/etc/initramfs-tools/conf.d/boottest"'
        --setup-hook='printf "%s\n" virtio_pci virtio_blk crc32c_generic ext4 >"$1/usr/share/initramfs-tools/modules.d/boottest"'
        "$SUITE" "$R" "$MIRROR")
fi
# Exit status: 0 unpacked from the cache, 10 built and cached, 11 built but
# not cached, anything else: failed. Own process group (setsid), so that
# cleanup can stop debootstrap and its children.
# shellcheck disable=SC2016 # expanded by the inner bash
setsid bash -c '
    R=$1 tarball=$2 log=$3
    shift 3
    # One build of a tree at a time (CI builds them ahead, beside runs that may start before
    # they are done): another run waits here, then unpacks what the first cached.
    mkdir -p "${tarball%/*}" && exec 9>>"$tarball.lock" && flock 9 ||
        echo "cannot lock $tarball.lock: building without the lock"
    if [ -f "$tarball" ]; then
        mkdir "$R" && tar -C "$R" --zstd -xf "$tarball" && exit 0
        echo "cannot unpack the cached tree $tarball"
        exit 1
    fi
    echo "$1: the guest tree (cold; cached afterwards)"
    t=$SECONDS
    "$@" >"$log" 2>&1
    rc=$?
    # Nothing mounted in the tree (an interrupted build) may reach the tarball.
    grep -o " $R/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n 1 umount -l 2>/dev/null
    if [ "$rc" != 0 ]; then
        tail -n 20 "$log"
        echo "$1 failed (is the mirror reachable?)"
        exit 1
    fi
    echo "$1: $((SECONDS - t))s"
    rm -rf "$R/var/cache/apt/archives/"*.deb
    mkdir -p "${tarball%/*}" &&
        tar -C "$R" --zstd -cf "$tarball.tmp.$$" . && mv "$tarball.tmp.$$" "$tarball" && exit 10
    rm -f "$tarball.tmp.$$"
    exit 11
' guest-tree "$R" "$tarball" "$work/debootstrap.log" "${tree_cmd[@]}" >"$work/tree.log" 2>&1 &
tree_pid=$!
# --tree-only: fill the cache and stop (a CI can build the tree ahead, beside other stages).
if [ -n "$TREE_ONLY" ]; then
    guest_tree
    summary
    exit $((failed != 0))
fi

# --- the real binaries ----------------------------------------------------------------
phase_start "build: the release .deb (and an upgrade build) and vaultboot-sim"
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
    fatal "cargo metadata failed"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
for v in "$VERSION" "$VERSION+1"; do
    if ! VAULTBOOT_ARCHES=$RELEASE_ARCH dist/release.sh "$v" "$work/release-$v" >"$work/release-$v.log" 2>&1; then
        tail -n 30 "$work/release-$v.log"
        fatal "dist/release.sh $v failed"
    fi
done
DEB=$work/release-$VERSION/vaultboot_${VERSION}_$ARCH.deb
UPGRADE_DEB=$work/release-$VERSION+1/vaultboot_${VERSION}+1_$ARCH.deb
if [ ! -f "$DEB" ] || [ ! -f "$UPGRADE_DEB" ]; then fatal "dist/release.sh made no .deb"; fi
ok "release packages: $(basename "$DEB"), $(basename "$UPGRADE_DEB")"
if ! cargo build --release --locked -p vaultboot-sim --bin vaultboot-sim >"$work/build-sim.log" 2>&1; then
    tail -n 30 "$work/build-sim.log"
    fatal "cargo build of vaultboot-sim failed"
fi
SIM_BIN=$target_dir/release/vaultboot-sim
phase_end

# --- simulators on loopback -------------------------------------------------------------
phase_start "simulators"
mkfifo "$work/sim.stdin"
# The simulator exits at EOF of its stdin (--until-stdin-eof): the feeder
# below holds the fifo open for as long as this script runs.
sleep 100000 >"$work/sim.stdin" &
sim_feed_pid=$!
# start_sim NAME INSTANCE_ID: a simulator for that instance; its CAs in $work/NAME/, its log
# in $work/NAME.err; sets started_pid, started_imds_port, started_vault_port.
start_sim() {
    local name=$1 id=$2 imds_url vault_url
    mkdir -p "$work/$name"
    "$SIM_BIN" serve --imds 127.0.0.1:0 --vault 127.0.0.1:0 --dir "$work/$name" \
        --instance-id "$id" --dump-issued "$work/$name/issued.json" \
        --server-name vault.internal --server-name localhost --server-ip 127.0.0.1 \
        --until-stdin-eof <"$work/sim.stdin" >"$work/$name.out" 2>"$work/$name.err" &
    started_pid=$!
    for _ in $(seq 1 100); do
        grep -q '^vault ' "$work/$name.out" 2>/dev/null && break
        kill -0 "$started_pid" 2>/dev/null || break
        sleep 0.1
    done
    imds_url=$(sed -n 's/^imds //p' "$work/$name.out")
    vault_url=$(sed -n 's/^vault //p' "$work/$name.out")
    started_imds_port=${imds_url##*:}
    started_vault_port=${vault_url##*:}
    case "$started_imds_port$started_vault_port" in
        '' | *[!0-9]*) fatal "simulator $name did not start: $(cat "$work/$name.err" 2>/dev/null)" ;;
    esac
    if [ ! -s "$work/$name/vault-ca.pem" ] || [ ! -s "$work/$name/pki-ca.pem" ]; then
        fatal "simulator $name wrote no CA files"
    fi
    ok "simulator $name ($id): IMDS $imds_url, Vault $vault_url"
}
start_sim sim "$INSTANCE_ID"
sim_pid=$started_pid imds_port=$started_imds_port vault_port=$started_vault_port
start_sim sim3 "$INSTANCE_ID3"
sim3_pid=$started_pid imds3_port=$started_imds_port vault3_port=$started_vault_port
# Free loopback ports: nginx's 443 (qemu hostfwd), and boot 3's way to Vault (closed until
# vault_up relays it to the simulator).
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
https_port=$(free_port)
gate_port=$(free_port)
# The CAs the TLS checks trust (boot 3 has its own simulator).
pki_ca=$work/sim/pki-ca.pem
vault_ca=$work/sim/vault-ca.pem
phase_end

# --- the guest tree (started in the background before the build) ----------------------
guest_tree

# --- install vaultboot as the AMI build does, plus the test's own pieces -------------------
phase_start "install into the guest (dpkg -i the .deb) and make the images"
cp "$DEB" "$R/tmp/vaultboot.deb"
if ! chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    dpkg -i /tmp/vaultboot.deb >"$work/install.log" 2>&1; then
    cat "$work/install.log"
    fatal "dpkg -i $(basename "$DEB") in the guest tree failed"
fi
rm -f "$R/tmp/vaultboot.deb"
VAULTBOOT_BIN=$R/usr/sbin/vaultboot
if file "$VAULTBOOT_BIN" 2>/dev/null | grep -q static && file "$VAULTBOOT_BIN" | grep -qF ", $FILE_MACHINE,"; then
    ok "dpkg -i $(basename "$DEB"): $("$VAULTBOOT_BIN" --version 2>&1 | head -n 1), static $FILE_MACHINE, $(stat -c %s "$VAULTBOOT_BIN") bytes"
else
    bad "dpkg -i $(basename "$DEB"): a static $FILE_MACHINE /usr/sbin/vaultboot" "$(file "$VAULTBOOT_BIN" 2>&1)"
fi
# `boot_only = true` on the AD join secret: the refresh skips it.
boot_only_line='boot_only = true'
# The upgrade the guest installs at the end of boot 1 (boottest-report).
mkdir -p "$R/var/lib/boottest"
cp "$UPGRADE_DEB" "$R/var/lib/boottest/upgrade.deb"

sd=$R/etc/systemd/system
# Gate nginx on vaultboot, as the Packer build does for gate_units: both halves, nginx
# Requires= + After= vaultboot, and vaultboot's ExecStartPost= starts nginx after a
# successful run (one of its automatic retries, after a failed boot run).
mkdir -p "$sd/nginx.service.d" "$sd/vaultboot.service.d"
install -m 0644 "$R/usr/share/doc/vaultboot/examples/nginx.service.d/10-vaultboot.conf" "$sd/nginx.service.d/"
install -m 0644 "$R/usr/share/doc/vaultboot/examples/vaultboot.service.d/10-nginx.conf" "$sd/vaultboot.service.d/"
# The AD join example, as a user would adopt it (with the vaultboot.service drop-in its
# comment gives), with a stand-in realm(8).
install -m 0644 "$R/usr/share/doc/vaultboot/examples/vaultboot-ad-join.service" "$sd/"
ln -sfn /etc/systemd/system/vaultboot-ad-join.service "$sd/multi-user.target.wants/vaultboot-ad-join.service"
sed -n 's/^#   \(\[Service\]\|ExecStartPost=.* vaultboot-ad-join\.service\)$/\1/p' "$sd/vaultboot-ad-join.service" \
    >"$sd/vaultboot.service.d/10-ad-join.conf"
[ "$(wc -l <"$sd/vaultboot.service.d/10-ad-join.conf")" = 2 ] ||
    fatal "no vaultboot.service drop-in in the AD join example's comment: $(cat "$sd/vaultboot.service.d/10-ad-join.conf")"
mkdir -p "$sd/vaultboot-ad-join.service.d"
printf '[Service]\nEnvironment=AD_DOMAIN=%s\n' "$AD_DOMAIN" >"$sd/vaultboot-ad-join.service.d/10-domain.conf"
install -m 0755 "$here/guest/fake-realm" "$R/usr/local/bin/realm"
# nginx on 443 with vaultboot's certificate and key: on image 1 (credentials) the key is the
# credential nginx-tls.key (a drop-in beside the gating one) and a DynamicUser service reads
# the API key credential; image 2 (plain files) swaps these for the plain server block below.
install -m 0644 "$here/guest/nginx-tls-credential.conf" "$R/etc/nginx/conf.d/vaultboot-tls.conf"
install -m 0644 "$here/guest/nginx-credential.conf" "$sd/nginx.service.d/20-credential.conf"
install -m 0755 "$here/guest/boottest-apikey" "$R/usr/local/sbin/boottest-apikey"
install -m 0644 "$here/guest/boottest-apikey.service" "$sd/"
ln -sfn /etc/systemd/system/boottest-apikey.service "$sd/multi-user.target.wants/boottest-apikey.service"
# The report.
install -m 0755 "$here/guest/boottest-report" "$R/usr/local/sbin/boottest-report"
install -m 0644 "$here/guest/boottest-report.service" "$sd/"
ln -sfn /etc/systemd/system/boottest-report.service "$sd/multi-user.target.wants/boottest-report.service"
# Networking as in a networkd image: cloud-init (networkd renderer: no
# ifupdown here) writes the DHCP config, systemd-networkd applies it and
# systemd-networkd-wait-online provides network-online.target.
mkdir -p "$sd/sockets.target.wants" "$sd/network-online.target.wants"
ln -sfn /lib/systemd/system/systemd-networkd.service "$sd/multi-user.target.wants/systemd-networkd.service"
ln -sfn /lib/systemd/system/systemd-networkd.socket "$sd/sockets.target.wants/systemd-networkd.socket"
ln -sfn /lib/systemd/system/systemd-networkd-wait-online.service \
    "$sd/network-online.target.wants/systemd-networkd-wait-online.service"
# The serial console belongs to the kernel and the report; nothing else
# needed by this guest.
ln -sfn /dev/null "$sd/serial-getty@$CONSOLE.service"
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
    ln -sfn /dev/null "$sd/$u"
done
# Vault's name, as a private DNS zone would give it.
printf '169.254.169.253\tvault.internal\n' >>"$R/etc/hosts"
# The NoCloud seed only.
printf 'datasource_list: [NoCloud, None]\n' >"$R/etc/cloud/cloud.cfg.d/90_boottest.cfg"
# What the AMI bake does last.
DESTDIR="$R" sh packer/cleanup.sh >"$work/cleanup.log" 2>&1 || fatal "packer/cleanup.sh failed: $(cat "$work/cleanup.log")"

# The configuration's outputs, in two forms (OUTPUTS): "credentials" (boots 1 and 2) keeps
# every secret off the disk: the TLS key and the API key as encrypted systemd credentials in
# /run/credstore.encrypted, the other copies of the API key in /run (tmpfs), only the
# certificate (not secret) in /etc. "files" (boot 3, the disk scan's control) is the plain-file
# configuration: key and API key in /etc, and a plain copy of the AD password there too, so
# that every kind of secret the scan looks for has a copy on that disk.
# A credential reaches a running service only when it starts (a reload keeps the old one):
# on_change restarts nginx.
secret_tls() {
    cat <<EOF
      [[secret]]
      name = "tls"
      path = "pki_int/issue/web"
      data = { common_name = "{{ local-hostname }}", ip_sans = "{{ local-ipv4 }}", ttl = "72h" }
EOF
    if [ "$1" = credentials ]; then
        cat <<EOF

        [[secret.file]]
        path = "/etc/nginx/tls/server.crt"
        fields = ["certificate", "ca_chain?"]
        mode = "0644"
        on_change = ["systemctl", "try-restart", "nginx"]

        [[secret.credential]]
        name = "nginx-tls.key"
        fields = ["private_key"]
        seal = "auto"
        on_change = ["systemctl", "try-restart", "nginx"]
EOF
    else
        cat <<EOF

        [[secret.file]]
        path = "/etc/nginx/tls/server.crt"
        fields = ["certificate", "ca_chain?"]
        mode = "0644"
        on_change = ["systemctl", "try-reload-or-restart", "nginx"]

        [[secret.file]]
        path = "/etc/nginx/tls/server.key"
        fields = ["private_key"]
EOF
    fi
}
secret_api() {
    local d=/etc/app
    cat <<EOF
      [[secret]]
      name = "api"
      path = "secret/data/app/api"
EOF
    if [ "$1" = credentials ]; then
        d=/run/app
        cat <<EOF

        [[secret.credential]]
        name = "api.key"
        fields = ["api_key"]
        seal = "auto"
EOF
    fi
    cat <<EOF

        [[secret.file]]
        path = "$d/api.env"
        format = "env"
        fields = ["api_key"]
        mode = "0640"

        [[secret.file]]
        path = "$d/api.json"
        format = "json"
        fields = ["api_key"]
        owner = "www-data"
        group = "www-data"

        [[secret.file]]
        path = "$d/svc-web.env"
        format = "env"
        fields = ["api_key"]
        owner = "svc-web"
        group = "svc-web"
        mode = "0640"
EOF
}
secret_ad_on_disk() {
    [ "$1" = files ] || return 0
    cat <<EOF

        [[secret.file]]
        path = "/etc/app/ad-password"
        fields = ["password"]
EOF
}

# user_data DEADLINE SIM OUTPUTS: the NoCloud user-data (with SIM's Vault CA), the shape of
# cloud-init/examples/user-data-write-files.yaml: plain write_files (valid under every
# cloud-init's schema), and a user created by the same user-data that owns one output;
# OUTPUTS: credentials | files (above).
user_data() {
    cat <<EOF
#cloud-config
locale: C.UTF-8
manage_etc_hosts: false
groups:
  - svc-web
users:
  - name: svc-web
    system: true
    primary_group: svc-web
    shell: /usr/sbin/nologin
    no_create_home: true
write_files:
  - path: /etc/vaultboot/vault-ca.pem
    owner: root:root
    permissions: "0644"
    content: |
$(sed 's/^/      /' "$work/$2/vault-ca.pem")
  - path: /etc/vaultboot/config.toml
    owner: root:root
    permissions: "0600"
    content: |
      [vault]
      address = "https://vault.internal:8200"
      ca_cert = "/etc/vaultboot/vault-ca.pem"

      [auth]
      method = "ec2"
      role = "web"

      [retry]
      deadline = "$1"

$(secret_tls "$3")

      [[secret]]
      name = "ad-join"
      path = "secret/data/ad/join"
      $boot_only_line

        [[secret.file]]
        path = "/run/vaultboot/ad-join.env"
        format = "env"
        fields = ["username", "password"]
$(secret_ad_on_disk "$3")

$(secret_api "$3")
EOF
}
seed=$R/var/lib/cloud/seed/nocloud
mkdir -p "$seed"
printf 'instance-id: %s\nlocal-hostname: %s\n' "$INSTANCE_ID" "$LOCAL_HOSTNAME" >"$seed/meta-data"

# Image 1 (boots 1 and 2): the config as shipped.
user_data 5m sim credentials >"$seed/user-data"
mke2fs -q -t ext4 -L root -d "$R" "$work/ok.img" 2G >>"$work/mke2fs.log" 2>&1 || fatal "mke2fs (image 1) failed"
# Image 2 (boot 3): a short deadline, and TimeoutStartSec lowered to match,
# with the drop-in dist/README.md prescribes. The refresh timer fires 20 s after
# boot (while the boot run is failing) and then every 60 s, instead of 6 h / 12 h:
# the same OnBootSec=/OnUnitActiveSec= mechanism, on a scale a test can wait for.
# The report sees the recovery image by its marker.
make_image2() {
    user_data "${FAIL_DEADLINE}s" sim3 files >"$seed/user-data"
    install -m 0644 "$here/guest/nginx-tls.conf" "$R/etc/nginx/conf.d/vaultboot-tls.conf"
    rm -f "$sd/nginx.service.d/20-credential.conf" "$sd/multi-user.target.wants/boottest-apikey.service"
    printf 'instance-id: %s\nlocal-hostname: %s\n' "$INSTANCE_ID3" "$LOCAL_HOSTNAME" >"$seed/meta-data"
    mkdir -p "$sd/vaultboot.service.d" "$sd/vaultboot-refresh.timer.d"
    printf '[Service]\nTimeoutStartSec=%ss\n' "$FAIL_TIMEOUT" >"$sd/vaultboot.service.d/50-deadline.conf"
    # (One empty OnBootSec= resets every OnXSec= trigger of the timer, OnUnitActiveSec= included.)
    printf '[Timer]\nOnBootSec=\nOnBootSec=20s\nOnUnitActiveSec=60s\nRandomizedDelaySec=0\n' \
        >"$sd/vaultboot-refresh.timer.d/50-boottest.conf"
    : >"$R/var/lib/boottest/recovery"
    mke2fs -q -t ext4 -L root -d "$R" "$work/fail.img" 2G >>"$work/mke2fs.log" 2>&1 || fatal "mke2fs (image 2) failed"
}
# boot 3 is skipped on arm64 (see the header).
if [ "$ARCH" = amd64 ]; then make_image2; fi
ok "images built from a clean tree (first boot each)"
# Nothing of another architecture runs on this host from here on.
binfmt_off
phase_end

# --- booting ------------------------------------------------------------------------------
# boot LABEL IMAGE IMDS_PORT VAULT_PORT: start qemu; returns once the guest said
# BOOTTEST-READY (0) or not (1). qemu keeps running (host checks), see finish.
# The guest's 169.254.169.254:80 goes to IMDS_PORT, vault.internal:8200 to VAULT_PORT
# (boot 3: $gate_port, where nothing listens until vault_up relays it to its simulator).
boot() {
    local label=$1 img=$2 imds=$3 vault=$4 netdev
    : >"$work/ctl"
    netdev="user,id=n0,net=169.254.169.0/24,host=169.254.169.2,restrict=on"
    netdev+=",hostfwd=tcp:127.0.0.1:$https_port-:443"
    netdev+=",guestfwd=tcp:169.254.169.254:80-cmd:$SOCAT STDIO TCP:127.0.0.1:$imds"
    # -lf /dev/null: socat's own messages (boot 3: "connection refused") must not reach the
    # guest, whose end of the forward is socat's stderr too; the guest sees the connection close.
    netdev+=",guestfwd=tcp:169.254.169.253:8200-cmd:$SOCAT -lf /dev/null STDIO TCP:127.0.0.1:$vault"
    netdev+=",guestfwd=tcp:169.254.169.253:7-cmd:cat $work/ctl"
    boot_t=$SECONDS
    ready_after=
    # No `timeout` wrapper: qemu_pid must be qemu itself, so that cleanup's
    # kill reaches it; every wait below is bounded instead.
    "$QEMU" "${qemu_machine[@]}" "${qemu_accel[@]}" -smp 2 -m 1024 -name "vaultboot-boottest-$label" \
        -display none -vga none -monitor none -parallel none -serial "file:$work/serial-$label.log" \
        -no-reboot -kernel "$kernel" -initrd "$initrd" \
        -append "root=/dev/vda rw console=$CONSOLE loglevel=4" \
        -drive "file=$img,format=raw,if=virtio" \
        -netdev "$netdev" -device virtio-net-pci,netdev=n0 \
        -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0 \
        </dev/null >"$work/qemu-$label.log" 2>&1 &
    qemu_pid=$!
    local end=$((SECONDS + BOOT_READY_TIMEOUT))
    while [ "$SECONDS" -lt "$end" ]; do
        if grep -q "BOOTTEST-READY" "$work/serial-$label.log" 2>/dev/null; then
            ready_after=$((SECONDS - boot_t))
            return 0
        fi
        kill -0 "$qemu_pid" 2>/dev/null || break
        sleep 1
    done
    return 1
}

# stop_qemu: kill qemu at once (the guest did not report: nothing to wait for).
stop_qemu() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null
        sleep 2
        kill -9 "$qemu_pid" 2>/dev/null
    fi
}

# finish LABEL ACTION: tell the guest to go (reboot|poweroff), wait for qemu
# to exit (kill it after BOOT_EXIT_TIMEOUT), then copy the reports out.
finish() {
    local label=$1 action=$2 img=$3 n=$4
    printf 'go-%s %s\n' "$n" "$action" >"$work/ctl"
    local end=$((SECONDS + BOOT_EXIT_TIMEOUT))
    while [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 1; done
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null
        sleep 2
        kill -9 "$qemu_pid" 2>/dev/null
        bad "$label: guest ended on its own within ${BOOT_EXIT_TIMEOUT}s of the go-ahead (killed)"
    fi
    [ -n "$qemu_pid" ] && wait "$qemu_pid" 2>/dev/null
    qemu_pid=
    timings+=("$label: ready after ${ready_after:-?}s, qemu ran $((SECONDS - boot_t))s")
    rm -rf "$work/out/$label"
    mkdir -p "$work/out/$label"
    debugfs -R "rdump /var/log/boottest $work/out/$label" "$img" >/dev/null 2>&1
    report=$work/out/$label/boottest/boot-$n.txt
    journal=$work/out/$label/boottest/journal-$n.txt
    [ -f "$report" ] || : >"$report" 2>/dev/null || report=/dev/null
}

# --- checks on what the guest reported -------------------------------------------------------
R_() { grep -E -- "$1" "$report" >/dev/null 2>&1; } # the report has a line matching ERE
expect() { # expect LABEL ERE DESCRIPTION
    if R_ "$2"; then ok "$1: $3"; else bad "$1: $3" "no line /$2/ in the guest's report"; fi
}
refuse() { # refuse LABEL ERE DESCRIPTION: fails on a missing or empty report too (no line
    # proves nothing when the guest said nothing)
    if [ ! -s "$report" ]; then
        bad "$1: $3" "no report from the guest ($report missing or empty)"
    elif R_ "$2"; then
        bad "$1: $3" "$(grep -E -- "$2" "$report" | head -n 5)"
    else
        ok "$1: $3"
    fi
}
prop() { # prop UNIT NAME: a unit property from the report
    sed -n "s/^prop $1 $2=//p" "$report" | head -n 1
}
# journal_line ERE: line number of the first match in the guest's journal (0: none)
journal_line() {
    local l
    l=$(grep -n -E -m 1 -- "$1" "$journal" 2>/dev/null | cut -d: -f1)
    echo "${l:-0}"
}

# tls_check LABEL: nginx, seen from the host through the hostfwd port, serves
# a certificate for the guest's hostname issued by the Vault simulator's PKI CA.
tls_check() {
    local label=$1 out body
    for _ in $(seq 1 10); do
        out=$(timeout 20 openssl s_client -connect "127.0.0.1:$https_port" -servername "$LOCAL_HOSTNAME" \
            -CAfile "$pki_ca" -verify_return_error -verify_hostname "$LOCAL_HOSTNAME" \
            -showcerts </dev/null 2>&1)
        if grep -q 'Verify return code: 0 (ok)' <<<"$out"; then break; fi
        sleep 2
    done
    printf '%s\n' "$out" >"$work/out/s_client-$label.txt"
    if grep -q 'Verify return code: 0 (ok)' <<<"$out"; then
        ok "$label: openssl s_client: nginx's certificate verifies against pki-ca.pem for $LOCAL_HOSTNAME"
    else
        bad "$label: openssl s_client: nginx's certificate verifies against pki-ca.pem for $LOCAL_HOSTNAME" \
            "$(grep -E 'verify|error|errno|Verify' <<<"$out" | head -n 5)"
    fi
    openssl x509 -outform PEM <<<"$out" >"$work/out/served-$label.pem" 2>/dev/null
    if body=$(curl -sS --noproxy '*' --max-time 20 --cacert "$pki_ca" \
        --resolve "$LOCAL_HOSTNAME:$https_port:127.0.0.1" "https://$LOCAL_HOSTNAME:$https_port/" 2>&1) &&
        grep -q 'vaultboot boot test' <<<"$body"; then
        ok "$label: curl --cacert pki-ca.pem https://$LOCAL_HOSTNAME/ gets nginx's page"
    else
        bad "$label: curl --cacert pki-ca.pem https://$LOCAL_HOSTNAME/ gets nginx's page" "$body"
    fi
}

# served_is_file LABEL N: the served certificate is the one vaultboot wrote
# (after the refresh, if there was one).
served_is_file() {
    local label=$1 n=$2 f
    f=$work/out/$label/boottest/server-$n.crt
    [ -f "$f" ] || f=$work/out/$label/boottest/server-$n-boot.crt
    local a b
    a=$(openssl x509 -noout -fingerprint -sha256 -in "$work/out/served-$label.pem" 2>/dev/null)
    b=$(openssl x509 -noout -fingerprint -sha256 -in "$f" 2>/dev/null)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then
        ok "$label: the served certificate is the one vaultboot wrote to /etc/nginx/tls/server.crt"
    else
        bad "$label: the served certificate is the one vaultboot wrote" "served: ${a:-none}; file: ${b:-none}"
    fi
    local subj san
    subj=$(openssl x509 -noout -subject -in "$f" 2>/dev/null)
    san=$(openssl x509 -noout -ext subjectAltName -in "$f" 2>/dev/null | tr -d '\n')
    if grep -q "CN *= *$LOCAL_HOSTNAME" <<<"$subj" && grep -q "DNS:$LOCAL_HOSTNAME" <<<"$san"; then
        ok "$label: certificate CN/SAN = the instance's local-hostname ($LOCAL_HOSTNAME; $san)"
    else
        bad "$label: certificate CN/SAN = the instance's local-hostname" "$subj / $san"
    fi
    if openssl verify -CAfile "$pki_ca" "$f" >/dev/null 2>&1 &&
        ! openssl verify -CAfile "$vault_ca" "$f" >/dev/null 2>&1; then
        ok "$label: issued by the Vault simulator's PKI CA (not its TLS CA)"
    else
        bad "$label: issued by the Vault simulator's PKI CA"
    fi
}

# order_checks LABEL: vaultboot finished successfully before nginx started.
order_checks() {
    local label=$1
    local ci_done vb_start vb_exit vb_active ng_start ng_main
    # cloud-init's init stage: cloud-init.service up to 24.2, cloud-init-network.service after.
    ci_done=$(prop cloud-init.service ActiveEnterTimestampMonotonic)
    [ "${ci_done:-0}" -gt 0 ] || ci_done=$(prop cloud-init-network.service ActiveEnterTimestampMonotonic)
    vb_start=$(prop vaultboot.service ExecMainStartTimestampMonotonic)
    vb_exit=$(prop vaultboot.service ExecMainExitTimestampMonotonic)
    vb_active=$(prop vaultboot.service ActiveEnterTimestampMonotonic)
    ng_start=$(prop nginx.service InactiveExitTimestampMonotonic)
    ng_main=$(prop nginx.service ExecMainStartTimestampMonotonic)
    echo "      monotonic (s): cloud-init done $(us "$ci_done"), vaultboot $(us "$vb_start")..$(us "$vb_exit")" \
        "(active $(us "$vb_active")), nginx activating $(us "$ng_start"), nginx main $(us "$ng_main")"
    if [ "${ci_done:-0}" -gt 0 ] && [ "${vb_start:-0}" -ge "$ci_done" ]; then
        ok "$label: cloud-init's init stage (config written) finished before vaultboot started"
    else
        bad "$label: cloud-init's init stage finished before vaultboot started" "cloud-init=$ci_done vaultboot=$vb_start"
    fi
    if [ "${vb_exit:-0}" -gt 0 ] && [ "${vb_active:-0}" -ge "$vb_exit" ] && [ "${ng_start:-0}" -ge "$vb_active" ] &&
        [ "${ng_main:-0}" -ge "$ng_start" ]; then
        ok "$label: vaultboot.service exited successfully before nginx.service started (unit timestamps)"
    else
        bad "$label: vaultboot.service finished before nginx.service started (unit timestamps)" \
            "vaultboot exit=$vb_exit active=$vb_active nginx=$ng_start main=$ng_main"
    fi
    local fin st
    fin=$(journal_line 'Finished vaultboot\.service')
    st=$(journal_line 'Starting nginx\.service')
    if [ "$fin" -gt 0 ] && [ "$st" -gt "$fin" ]; then
        ok "$label: journal: 'Finished vaultboot.service' (line $fin) before 'Starting nginx.service' (line $st)"
        grep -E 'vaultboot\.service|nginx\.service' "$journal" | grep -E 'Start|Finish|Fail' | head -n 6 | sed 's/^/      /'
    else
        bad "$label: journal: vaultboot finished before nginx started" "Finished vaultboot at line $fin, Starting nginx at line $st"
    fi
}
us() { # microseconds -> seconds with 2 decimals
    local v=${1:-0}
    printf '%d.%02d' $((v / 1000000)) $((v % 1000000 / 10000))
}

file_checks() { # file_checks LABEL
    local label=$1
    expect "$label" '^file /etc/vaultboot 700 root root directory$' "/etc/vaultboot 0700 root"
    expect "$label" '^file /etc/vaultboot/config.toml 600 root root regular file$' "config.toml written by write_files 0600 root"
    expect "$label" '^file /var/lib/vaultboot 700 root root directory$' "state dir 0700 root"
    expect "$label" '^file /var/lib/vaultboot/nonce.json 600 root root regular file$' "nonce.json 0600 root"
    expect "$label" '^file /etc/nginx/tls 700 root root directory$' "/etc/nginx/tls created 0700 root"
    expect "$label" '^file /etc/nginx/tls/server.crt 644 root root regular file$' "server.crt 0644 root (mode \"0644\")"
    # The key is a credential: no key file on the disk; the API key's copies are on tmpfs.
    expect "$label" '^file /etc/nginx/tls/server.key absent$' "no server.key on the disk (the key is a credential)"
    expect "$label" '^file /etc/app absent$' "nothing in /etc/app (the API key's files are in /run/app)"
    expect "$label" '^file /run/app 700 root root directory$' "/run/app created 0700 root"
    expect "$label" '^file /run/app/api.env 640 root root regular file$' "api.env 0640 root (mode \"0640\")"
    expect "$label" '^file /run/app/api.json 600 www-data www-data regular file$' \
        "api.json 0600 www-data (owner/group set: CAP_CHOWN, CAP_FOWNER in the sandbox)"
    expect "$label" '^file /run/app/svc-web.env 640 svc-web svc-web regular file$' \
        "svc-web.env 0640 owned by svc-web, a user the same user-data created"
    expect "$label" '^file /run/credstore.encrypted 700 root root directory$' "/run/credstore.encrypted 0700 root"
    expect "$label" '^file /run/credstore.encrypted/nginx-tls.key [46]00 root root regular file$' \
        "credential nginx-tls.key written, root only"
    expect "$label" '^file /run/credstore.encrypted/api.key [46]00 root root regular file$' "credential api.key written, root only"
    expect "$label" '^credstore-fs tmpfs$' "/run/credstore.encrypted is on tmpfs"
    expect "$label" '^cred nginx-tls.key fresh=yes ' "credential nginx-tls.key written during this boot"
    expect "$label" '^cred api.key fresh=yes ' "credential api.key written during this boot"
    expect "$label" '^file /run/credentials/nginx.service/nginx-tls.key [0-9]+ root root regular file$' \
        "nginx has its decrypted copy in its own credentials directory"
    refuse "$label" '^cred-readable-by nobody' "nginx's decrypted key is not readable by another user"
    expect "$label" '^swaps 0$' "no swap in the guest (nothing of memory is written out to a disk)"
    apikey_checks "$label"
    expect "$label" '^file /run/vaultboot 700 root root directory$' "/run/vaultboot 0700 root (secrets: nobody else can even see what is there)"
    expect "$label" '^file /run/vaultboot-status 755 root root directory$' "/run/vaultboot-status 0755 root (the status for monitoring, no secret)"
    expect "$label" '^staged-leftovers 0$' "no staged temp files left behind"
}

# apikey_checks LABEL: the DynamicUser service read the API key credential, and it is the key
# the Vault simulator handed out (compared by hash); it started after vaultboot finished.
apikey_checks() {
    local label=$1 want got uid vb_active ak_start
    want=$(/usr/bin/python3 -c 'import hashlib, json, sys
print(hashlib.sha256(json.load(open(sys.argv[1]))["api_key"].encode()).hexdigest())' "$work/sim/issued.json" 2>/dev/null)
    got=$(sed -n 's/^apikey .* sha256=\([0-9a-f]*\)$/\1/p' "$report" | head -n 1)
    uid=$(sed -n 's/^apikey uid=\([0-9]*\) .*/\1/p' "$report" | head -n 1)
    if [ -n "$want" ] && [ "$got" = "$want" ]; then
        ok "$label: boottest-apikey.service read the api.key credential: the simulator's API key (sha256 equal)"
    else
        bad "$label: boottest-apikey.service read the simulator's API key from its credential" \
            "$(grep '^apikey ' "$report"; echo "expected sha256 ${want:-?}")"
    fi
    # DynamicUser= allocates from 61184-65519.
    if [ "${uid:-0}" -ge 61184 ] && [ "${uid:-0}" -le 65519 ]; then
        ok "$label: it ran as a dynamic user (uid $uid)"
    else
        bad "$label: it ran as a dynamic user" "$(grep '^apikey ' "$report")"
    fi
    expect "$label" '^apikey reads-root-file no$' "the dynamic user cannot read vaultboot's root-only copy in /run/app"
    expect "$label" '^prop boottest-apikey.service Result=success$' "boottest-apikey.service succeeded"
    vb_active=$(prop vaultboot.service ActiveEnterTimestampMonotonic)
    ak_start=$(prop boottest-apikey.service ExecMainStartTimestampMonotonic)
    if [ "${vb_active:-0}" -gt 0 ] && [ "${ak_start:-0}" -ge "$vb_active" ]; then
        ok "$label: boottest-apikey.service started after vaultboot.service finished"
    else
        bad "$label: boottest-apikey.service started after vaultboot.service finished" "vaultboot active=$vb_active apikey=$ak_start"
    fi
}

# disk_scan LABEL IMAGE SIM WANT: after qemu has exited, scan IMAGE's raw bytes for every
# secret value SIM handed out (tests/boot/disk-scan). WANT none: no kind found (the credential
# configuration); WANT all: every kind found (the plain-file control: the scan can find them).
disk_scan() {
    local label=$1 img=$2 sim=$3 want=$4 out rc t kind line values found occ
    t=$SECONDS
    out=$("$here/disk-scan" "$img" "$work/$sim/issued.json" 2>&1)
    rc=$?
    timings+=("$label: disk scan of $(basename "$img") $((SECONDS - t))s")
    if [ "$rc" != 0 ]; then
        bad "$label: disk scan of $(basename "$img")" "$out"
        return
    fi
    for kind in private-key-lines ad-password api-key; do
        line=$(grep "^scan $kind " <<<"$out")
        values=$(sed -n 's/.* values=\([0-9]*\).*/\1/p' <<<"$line")
        found=$(sed -n 's/.* found=\([0-9]*\).*/\1/p' <<<"$line")
        occ=$(sed -n 's/.* occurrences=\([0-9]*\).*/\1/p' <<<"$line")
        scans+=("$label ($want expected): $kind: ${found:-?} of ${values:-?} values found, ${occ:-?} occurrences")
        if [ "${values:-0}" -eq 0 ]; then
            bad "$label: disk scan: the simulator handed out $kind" "$line"
        elif [ "$want" = none ] && [ "$found" = 0 ] && [ "$occ" = 0 ]; then
            ok "$label: disk scan: 0 occurrences of $kind on the whole disk image ($values values looked for)"
        elif [ "$want" = all ] && [ "${found:-0}" -gt 0 ]; then
            ok "$label: disk scan (control): $kind found on the disk image ($found of $values values, $occ occurrences)"
        else
            bad "$label: disk scan: $kind $([ "$want" = none ] && echo "not on the disk" || echo "found (control)")" "$line"
        fi
    done
}

# cloud_init_checks LABEL: cloud-init says "done" of a boot that created a user and wrote the
# config; the user-data is valid under its schema; its module lists are the distribution's own.
cloud_init_checks() {
    local label=$1
    expect "$label" '^cloudinit-status-rc 0$' "cloud-init status --long exits 0"
    expect "$label" '^cloudinit-status status: done$' "cloud-init status: done"
    refuse "$label" '^cloudinit-status .*(degraded|DEPRECATED|WARNING)|^cloudinit-status recoverable_errors: [^{ ]|^cloudinit-status recoverable_errors: \{[^}]' \
        "cloud-init status: not degraded, no recoverable errors, warnings or deprecations"
    expect "$label" '^cloudinit-schema-rc 0$' "cloud-init schema --system exits 0"
    expect "$label" '^cloudinit-schema .*[Vv]alid' "cloud-init schema --system: the user-data is valid"
    refuse "$label" 'Invalid cloud-config|failed schema validation|vaultboot.*(unexpected|[Dd]eprecat)' \
        "cloud-init.log: no schema complaint, nothing about vaultboot"
    refuse "$label" '^cloudinit-log .*Traceback' "cloud-init.log: no traceback"
    refuse "$label" '^cloudinit-dropin .*vaultboot' "no vaultboot drop-in in /etc/cloud/cloud.cfg.d"
    expect "$label" '^cloudinit-modules-ran .*write[-_]files .*users[-_]groups ' \
        "cloud-init ran the distribution's modules, write_files then users_groups"
    expect "$label" '^svc-web svc-web:' "user svc-web created by the user-data"
    sed -n 's/^cloudinit-modules-ran /      modules: /p; s/^cloudinit-status /      status: /p' "$report" | head -n 12
}

# =============================================================================================
phase_start "boot 1: first boot (Debian $SUITE)"
if boot boot1 "$work/ok.img" "$imds_port" "$vault_port"; then
    ok "boot1: guest reported (BOOTTEST-READY after ${ready_after}s)"
    tls_check boot1
    finish boot1 reboot "$work/ok.img" 1
    b1=1
else
    bad "boot1: guest reported within ${BOOT_READY_TIMEOUT}s" "$(tail -n 30 "$work/serial-boot1.log" 2>/dev/null)"
    stop_qemu
    finish boot1 reboot "$work/ok.img" 1
    b1=0
fi
label=boot1
expect $label "^machine $GUEST_MACHINE vaultboot-elf-machine $ELF_MACHINE\$" \
    "the guest is $GUEST_MACHINE (uname -m) and its /usr/sbin/vaultboot an ELF for it (machine $ELF_MACHINE)"
expect $label '^prop vaultboot.service Result=success$' "vaultboot.service Result=success"
expect $label '^prop vaultboot.service ExecMainStatus=0$' "vaultboot exited 0"
expect $label '^prop nginx.service ActiveState=active$' "nginx.service active"
order_checks $label
file_checks $label
served_is_file $label 1
expect $label '^vaultboot-log .*nonce generated' "vaultboot: nonce generated (first boot)"
cloud_init_checks $label
expect $label '^cloudinit-result .*"errors": \[\]' "cloud-init finished without errors (result.json)"
expect $label '^prop vaultboot-ad-join.service Result=success$' "AD join example unit ran successfully"
expect $label "^realm argv: join -U svc-join $AD_DOMAIN\$" "realm got user and domain on argv"
expect $label '^realm stdin: password ok' "realm got the password on stdin, byte for byte"
expect $label '^realm env-file: 600 root root$' "ad-join.env was 0600 root while the join ran"
expect $label '^realm argv-has-password: no$' "password not in realm's argv"
expect $label '^realm env-has-password: no$' "password not in realm's environment"
expect $label '^realm journal-has-password: no$' "password not in the journal"
expect $label '^file /run/vaultboot/ad-join.env absent$' "ad-join.env removed after the join"
expect $label '^runfiles 0$' "nothing left in /run/vaultboot after the join"
expect $label '^status-file 644 root root dir 755$' "/run/vaultboot-status/status.json 0644 root, its directory 0755"
expect $label '^check-warnings 0$' "vaultboot check: no output in a directory others can search"
expect $label '^check-outputs 7$' "vaultboot check --print-outputs: the 7 outputs (5 files, 2 credentials)"
expect $label '^status-readable-by nobody$' "the status is readable by an unprivileged user (monitoring)"
expect $label '^status-json "mode":"boot" "outcome":"success" "exit_status":0 "not_after":[0-9]+ $' \
    "status.json: boot run, success, exit 0, the certificate's not_after"
expect $label '^refresh-valid result=success cert-unchanged$' \
    "vaultboot-refresh.service with a fresh certificate (its key a sealed credential, decrypted to decide): kept, nothing issued, nginx not restarted"
expect $label '^refresh result=success status=0 nginx=active new-pid cert-changed$' \
    "vaultboot-refresh.service after the key credential was lost: new certificate and key, nginx restarted (on_change try-restart: a reload would keep the old credential), active"
expect $label '^refresh-log .*unchanged /run/app/api.json' \
    "the refresh recognised the unchanged www-data 0600 file (read with CAP_DAC_READ_SEARCH), not rewritten"
expect $label '^refresh-log .*start \(refresh\):' "vaultboot-refresh.service ran 'vaultboot run --refresh'"
expect $label '^runfiles-after-refresh 0$' \
    "the refreshes did not fetch the AD join password again (boot_only = true)"
expect $label '^vaultboot-log .*done: ' "vaultboot logged its 'done:' line (info)"
expect $label '^msgid-done vaultboot: done: ' \
    "journalctl MESSAGE_ID=<done> _SYSTEMD_UNIT=vaultboot.service finds the boot run (native journal protocol)"
refuse $label '^vaultboot-warn .*done: ' "journalctl -p warning -u vaultboot: no info line ('done:')"
refuse $label 'client nonce mismatch' "no 'client nonce mismatch' in the guest"
expect $label "^pkg-before $VERSION\$" "package $VERSION installed (dpkg -i before the first boot)"
expect $label '^pkg-upgrade-rc 0$' "dpkg -i of the newer build in the running guest succeeded (no prompt)"
expect $label "^pkg-after $VERSION\\+1\$" "upgraded to $VERSION+1"
expect $label '^pkg-upgrade config-kept$' "upgrade: the instance's config.toml (written by write_files) kept"
expect $label '^pkg-upgrade nonce-kept$' "upgrade: nonce.json kept"
expect $label '^pkg-upgrade vaultboot-not-restarted$' "upgrade: vaultboot.service not restarted (same invocation)"
expect $label '^pkg-upgrade enabled enabled enabled $' "upgrade: vaultboot.service and the timer still enabled"
expect $label '^pkg-upgrade nginx active$' "upgrade: nginx still active"
refuse $label '^pkg-upgrade leftover' "upgrade: no .dpkg-new/.dpkg-old beside the config"
expect $label '^run-marker absent$' "first boot: no marker in /run yet"
expect $label '^run-marker-now boot-1$' "the report left its marker in /run (boot 2 must not find it)"
# The guest shut down cleanly (the reboot: qemu exits, -no-reboot): its disk as it will stay.
disk_scan $label "$work/ok.img" sim none
phase_end

if [ "$ARCH" = arm64 ]; then
    # What the Vault simulator saw of boot 1: the nonce bound once, then reused by its refreshes.
    if grep -q "^login instance=$INSTANCE_ID nonce=bound$" "$work/sim.err" &&
        grep -q "^login instance=$INSTANCE_ID nonce=reused$" "$work/sim.err" &&
        ! grep -qE 'nonce=(mismatch|generated|disabled|reauth-disabled)' "$work/sim.err"; then
        ok "simulator: nonce bound at the first login, reused by boot 1's refreshes, no mismatch"
    else
        bad "simulator: nonce bound at the first login, reused by boot 1's refreshes, no mismatch" "$(grep '^login' "$work/sim.err")"
    fi
    say "boots 2 and 3: SKIPPED on arm64 (nothing there is architecture-specific; tests/boot/run.sh --arch amd64 runs them)"
    end_run
    exit $((failed != 0))
fi

phase_start "boot 2: reboot (same disk)"
if [ "$b1" = 1 ] && boot boot2 "$work/ok.img" "$imds_port" "$vault_port"; then
    ok "boot2: guest reported (BOOTTEST-READY after ${ready_after}s)"
    tls_check boot2
    finish boot2 poweroff "$work/ok.img" 2
    label=boot2
    report1=$work/out/boot1/boottest/boot-1.txt
    expect $label '^boot 2$' "second boot of the same disk"
    expect $label '^prop vaultboot.service Result=success$' "vaultboot.service Result=success"
    expect $label '^prop nginx.service ActiveState=active$' "nginx.service active"
    order_checks $label
    file_checks $label
    served_is_file $label 2
    expect $label '^vaultboot-log .*nonce reused' "vaultboot: nonce reused"
    # The credentials were gone at boot (/run is tmpfs: boot 1's marker there is gone too) and
    # vaultboot wrote them again before their consumers started (file_checks: written during
    # this boot; nginx and boottest-apikey started after vaultboot finished).
    expect $label '^run-marker absent$' "/run was emptied by the reboot (boot 1's marker gone)"
    for c in nginx-tls.key api.key; do
        s1=$(sed -n "s/^cred $c fresh=[a-z]* sealed-sha256=//p" "$report1")
        s2=$(sed -n "s/^cred $c fresh=[a-z]* sealed-sha256=//p" "$report")
        if [ -n "$s1" ] && [ -n "$s2" ] && [ "$s1" != "$s2" ]; then
            ok "$label: credential $c sealed anew this boot (not boot 1's bytes)"
        else
            bad "$label: credential $c sealed anew this boot" "boot 1: ${s1:-none}; boot 2: ${s2:-none}"
        fi
    done
    n1=$(sed -n 's/^nonce-file-sha256 //p' "$report1")
    n2=$(sed -n 's/^nonce-file-sha256 //p' "$report")
    if [ -n "$n1" ] && [ "$n1" = "$n2" ]; then ok "$label: nonce.json unchanged since boot 1"; else bad "$label: nonce.json unchanged since boot 1" "$n1 / $n2"; fi
    if [ "$(grep -c '^realm argv: ' "$report")" = 1 ]; then
        ok "$label: realm not run again"
    else
        bad "$label: realm not run again" "$(grep '^realm argv' "$report")"
    fi
    expect $label '^prop vaultboot-ad-join.service Result=exec-condition$' "AD join skipped (already joined: ExecCondition)"
    expect $label '^runfiles 0$' "re-fetched AD password removed by ExecCondition"
    refuse $label 'client nonce mismatch' "no 'client nonce mismatch' in the guest"
    expect $label "^pkg-boot2-version $VERSION\\+1\$" "this boot ran the upgraded package ($VERSION+1)"
    expect $label '^pkg-purge-rc 0$' "dpkg -P vaultboot in the running guest succeeded"
    refuse $label '^pkg-purge left' "purge: binary, units, enablement links, state and config gone"
    refuse $label '^pkg-purge status .*ii' "purge: the package is gone from dpkg's database"
    expect $label '^pkg-purge nginx active$' "purge: nginx keeps serving (vaultboot.service is not stopped)"
else
    [ "$b1" = 1 ] && bad "boot2: guest reported within ${BOOT_READY_TIMEOUT}s" "$(tail -n 30 "$work/serial-boot2.log" 2>/dev/null)"
    [ "$b1" = 1 ] || bad "boot2: skipped (boot 1 did not report)"
    stop_qemu
    [ "$b1" = 1 ] && finish boot2 poweroff "$work/ok.img" 2
fi

# What the Vault simulator saw: one login per run, the same client nonce every time.
logins=$(grep -c "^login instance=$INSTANCE_ID " "$work/sim.err")
echo "      simulator: $(grep '^login ' "$work/sim.err" | tr '\n' ';')"
if grep -q "^login instance=$INSTANCE_ID nonce=bound$" "$work/sim.err" &&
    [ "$(grep -c "^login instance=$INSTANCE_ID nonce=reused$" "$work/sim.err")" -ge 3 ]; then
    ok "simulator: nonce bound at the first login, then reused by every later login ($logins logins)"
else
    bad "simulator: nonce bound at the first login, then reused (boot 1 refresh, boot 2, boot 2 refresh)" "$(grep '^login' "$work/sim.err")"
fi
if grep -qE 'nonce=(mismatch|generated|disabled|reauth-disabled)' "$work/sim.err"; then
    bad "simulator: no client nonce mismatch" "$(grep -E 'nonce=' "$work/sim.err")"
else
    ok "simulator: no client nonce mismatch"
fi
phase_end

# =============================================================================================
phase_start "boot 3: Vault unreachable at boot, back later (fresh image, retry.deadline ${FAIL_DEADLINE}s)"
# vault_up: Vault comes back: a relay from the gate port to the simulator.
vault_up() {
    "$SOCAT" "TCP-LISTEN:$gate_port,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$vault3_port" 2>>"$work/gate.err" &
    gate_pid=$!
}
# copy_has EXIT ERE: the report's line about the unit copy failing with EXIT matches ERE.
copy_has() { grep -E -- "^restart-copy exit$1 .*$2" "$report" >/dev/null 2>&1; }
journal_count() { grep -c -E -- "$1" "$journal" 2>/dev/null; }
b3=0
pki_ca=$work/sim3/pki-ca.pem vault_ca=$work/sim3/vault-ca.pem
if boot boot3 "$work/fail.img" "$imds3_port" "$gate_port"; then
    ok "boot3: guest reported (BOOTTEST-READY after ${ready_after}s: the boot run failed, and so did its first retry)"
    out=$(timeout 20 openssl s_client -connect "127.0.0.1:$https_port" -servername "$LOCAL_HOSTNAME" </dev/null 2>&1)
    if grep -q 'BEGIN CERTIFICATE\|Server certificate' <<<"$out"; then
        bad "boot3: nothing serves TLS on the guest's 443 while Vault is unreachable" "$(head -n 5 <<<"$out")"
    else
        ok "boot3: nothing serves TLS on the guest's 443 while Vault is unreachable (no handshake from the host)"
    fi
    # Vault is back. From here on nothing is done in the guest: the host only watches nginx.
    vault_up
    up_t=$SECONDS
    printf 'go-1 recover\n' >"$work/ctl"
    served=no
    while [ $((SECONDS - up_t)) -lt "$RECOVERY_TIMEOUT" ] && kill -0 "$qemu_pid" 2>/dev/null; do
        if timeout 20 openssl s_client -connect "127.0.0.1:$https_port" -servername "$LOCAL_HOSTNAME" \
            -CAfile "$pki_ca" -verify_return_error -verify_hostname "$LOCAL_HOSTNAME" </dev/null 2>&1 |
            grep -q 'Verify return code: 0 (ok)'; then
            served=yes
            break
        fi
        sleep 2
    done
    recovery_s=$((SECONDS - up_t))
    timings+=("boot3: nginx served the Vault-issued certificate ${recovery_s}s after Vault came back")
    if [ "$served" = yes ]; then
        ok "boot3: with nobody acting, nginx serves a certificate issued by Vault's PKI ${recovery_s}s after Vault came back (bound ${RECOVERY_TIMEOUT}s; RestartSec ${RESTART_SEC}s)"
    else
        bad "boot3: with nobody acting, nginx serves a Vault-issued certificate within ${RECOVERY_TIMEOUT}s of Vault's return"
    fi
    end=$((SECONDS + 240))
    while [ "$SECONDS" -lt "$end" ] && kill -0 "$qemu_pid" 2>/dev/null &&
        ! grep -q "BOOTTEST-RECOVERED 1" "$work/serial-boot3.log" 2>/dev/null; do sleep 1; done
    if grep -q "BOOTTEST-RECOVERED 1" "$work/serial-boot3.log" 2>/dev/null; then
        b3=1
        tls_check boot3
    else
        bad "boot3: the guest reported the recovery" "$(tail -n 30 "$work/serial-boot3.log" 2>/dev/null)"
    fi
    finish boot3 poweroff "$work/fail.img" 1
    # The control: the plain-file configuration, its disk after a clean poweroff.
    disk_scan boot3 "$work/fail.img" sim3 all
    kill "$gate_pid" 2>/dev/null
    wait "$gate_pid" 2>/dev/null
    gate_pid=

    # --- before Vault came back (the first report) ---
    label=boot3
    expect $label '^prop vaultboot.service Result=exit-code$' "vaultboot.service failed (Result=exit-code, not a timeout)"
    expect $label '^prop vaultboot.service ExecMainStatus=69$' "vaultboot exited 69 (unavailable until the deadline)"
    expect $label "^prop vaultboot.service TimeoutStartUSec=${FAIL_TIMEOUT}s\$" "TimeoutStartSec=${FAIL_TIMEOUT}s from the drop-in"
    s=$(prop vaultboot.service ExecMainStartTimestampMonotonic)
    e=$(prop vaultboot.service ExecMainExitTimestampMonotonic)
    d=$(((${e:-0} - ${s:-0}) / 1000000))
    if [ "${s:-0}" -gt 0 ] && [ "$d" -ge $((FAIL_DEADLINE - 1)) ] && [ "$d" -lt "$FAIL_TIMEOUT" ]; then
        ok "boot3: vaultboot gave up after ${d}s (deadline ${FAIL_DEADLINE}s, TimeoutStartSec ${FAIL_TIMEOUT}s)"
    else
        bad "boot3: vaultboot gave up after its deadline" "ran ${d}s (deadline ${FAIL_DEADLINE}s, timeout ${FAIL_TIMEOUT}s)"
    fi
    expect $label '^prop vaultboot.service Restart=on-failure$' "vaultboot.service: Restart=on-failure"
    expect $label "^prop vaultboot.service RestartUSec=${RESTART_SEC}s\$" "vaultboot.service: RestartSec=${RESTART_SEC}s"
    expect $label '^prop vaultboot.service NRestarts=[1-9]' "a retry ran and failed too (NRestarts >= 1)"
    expect $label '^prop vaultboot.service SubState=auto-restart$' "and another is scheduled (auto-restart): it does not give up"
    expect $label '^prop nginx.service ActiveState=inactive$' "nginx.service inactive"
    expect $label '^prop nginx.service ExecMainStartTimestampMonotonic=0$' "nginx never started"
    nd=$(journal_count 'Dependency failed for nginx\.service')
    if [ "${nd:-0}" -eq 1 ]; then
        ok "$label: journal: 'Dependency failed for nginx.service' once (the first run); failed retries leave it alone"
    else
        bad "$label: journal: 'Dependency failed for nginx.service' once" "found ${nd:-0}"
    fi
    expect $label '^prop vaultboot-ad-join.service ExecMainStartTimestampMonotonic=0$' "AD join never started"
    expect $label '^file /etc/nginx/tls/server.key absent$' "no key written"
    if R_ '^vaultboot-log .*exit 69' || [ "$(journal_line 'vaultboot\[[0-9]+\]: .*failed after .*exit 69')" -gt 0 ]; then
        ok "$label: vaultboot's summary names exit 69"
    else
        bad "$label: vaultboot's summary names exit 69" "neither in the unit's log nor in the boot's journal"
    fi
    expect $label '^vaultboot-warn .*failed after .*exit 69' "journalctl -p warning -u vaultboot: the 'failed after ... (exit 69)' error"
    expect $label '^msgid-69 .*vaultboot: error: failed after .*exit 69' \
        "journalctl -u vaultboot MESSAGE_ID=<unavailable> finds the failed run"
    expect $label '^msgid-69 .*Subject: vaultboot failed: Vault or IMDS stayed unavailable' \
        "journalctl -x shows the catalog's explanation of the exit-69 failure"
    expect $label '^msgid-69 .*a later attempt succeeds without anyone' \
        "journalctl -x: the catalog's text says what happens next"
    expect $label '^vaultboot-log .*start: vault ' "vaultboot logged its 'start:' line (info)"
    refuse $label '^vaultboot-warn .*start: vault ' "journalctl -p warning -u vaultboot: no info line ('start:')"
    # The refresh timer fired while the boot run was failing, and the refresh ran (no Requisite=).
    if [ "$(journal_line 'vaultboot-refresh\.service: Main process exited, code=exited, status=69')" -gt 0 ]; then
        ok "$label: the refresh timer fired during the outage and vaultboot-refresh ran (exit 69: Vault down), not refused"
    else
        bad "$label: the refresh timer fired during the outage and vaultboot-refresh ran" \
            "$(grep -E 'vaultboot-refresh' "$journal" | head -n 8)"
    fi
    refuse $label '^prop vaultboot-refresh.service Result=dependency$' "vaultboot-refresh.service not failed by a dependency"
    # Copies of the shipped unit: 78 and 64 are not retried; 69 (the control) is.
    expect $label '^restart-copy unit .*RestartPreventExitStatus=64 65 73 75 77 78 ' "unit copies carry the shipped RestartPreventExitStatus="
    # (Its state is read mid-cycle: its exit status shows in the journal, not in its properties.)
    if copy_has 69 'NRestarts=[1-9]' &&
        [ "$(journal_count 'boottest-exit69\.service: Main process exited, code=exited, status=69')" -ge 2 ]; then
        ok "$label: control: the copy failing with 69 was retried ($(grep -o 'NRestarts=[0-9]*' <<<"$(grep '^restart-copy exit69' "$report")"))"
    else
        bad "$label: control: the copy failing with 69 was retried" "$(grep '^restart-copy' "$report")"
    fi
    for x in 78 64; do
        if copy_has $x "ExecMainStatus=$x" && copy_has $x 'NRestarts=0' && copy_has $x 'ActiveState=failed' && copy_has $x 'runs=1$'; then
            ok "$label: exit $x is not retried (the copy stays failed, NRestarts=0, one run)"
        else
            bad "$label: exit $x is not retried" "$(grep "^restart-copy exit$x" "$report")"
        fi
    done

    # --- after Vault came back (the second report), nobody acting ---
    report=$work/out/boot3/boottest/boot-1-recovered.txt
    journal=$work/out/boot3/boottest/journal-1-recovered.txt
    [ -f "$report" ] || report=/dev/null
    if [ "$b3" = 1 ]; then
        echo "      the guest saw vaultboot and nginx active $(sed -n 's/^recovered-after //p' "$report")s after the host's go-ahead"
        expect $label '^prop vaultboot.service ActiveState=active$' "recovered: vaultboot.service active"
        expect $label '^prop vaultboot.service Result=success$' "recovered: vaultboot.service Result=success"
        expect $label '^prop vaultboot.service ExecMainStatus=0$' "recovered: the last run exited 0"
        expect $label '^prop vaultboot.service NRestarts=([2-9]|[1-9][0-9])' "recovered: by an automatic retry (NRestarts >= 2)"
        sr=$(journal_count 'vaultboot\.service: Scheduled restart job')
        if [ "${sr:-0}" -ge 2 ] && [ "$(journal_count 'Finished vaultboot\.service')" -eq 1 ]; then
            ok "$label: recovered: $sr restarts scheduled by systemd, one successful run"
        else
            bad "$label: recovered: restarts scheduled by systemd, one successful run" \
                "$(grep -E 'vaultboot\.service: (Scheduled|Main)|Finished vaultboot' "$journal" | head -n 10)"
        fi
        expect $label '^prop nginx.service ActiveState=active$' "recovered: nginx.service active"
        vb_active=$(prop vaultboot.service ActiveEnterTimestampMonotonic)
        ng_start=$(prop nginx.service ExecMainStartTimestampMonotonic)
        if [ "${vb_active:-0}" -gt 0 ] && [ "${ng_start:-0}" -ge "$vb_active" ]; then
            ok "$label: recovered: nginx started after vaultboot succeeded"
        else
            bad "$label: recovered: nginx started after vaultboot succeeded" "vaultboot active=$vb_active nginx main=$ng_start"
        fi
        expect $label '^file /etc/nginx/tls/server.key 600 root root regular file$' "recovered: server.key written 0600"
        served_is_file $label 1-recovered
        expect $label '^prop vaultboot-ad-join.service Result=success$' "recovered: the AD join ran (its vaultboot.service drop-in)"
        expect $label "^realm argv: join -U svc-join $AD_DOMAIN\$" "recovered: realm got user and domain on argv"
        expect $label '^vaultboot-log .*done: ' "recovered: vaultboot logged its 'done:' line (info)"
        refuse $label '^vaultboot-warn .*done: ' "journalctl -p warning -u vaultboot: no info line ('done:')"
        expect $label '^vaultboot-warn .*exit 69' "journalctl -p warning -u vaultboot: the failed runs' errors"
        if grep -q "^login instance=$INSTANCE_ID3 nonce=bound$" "$work/sim3.err" &&
            ! grep -qE 'nonce=(mismatch|generated|disabled|reauth-disabled)' "$work/sim3.err"; then
            ok "$label: simulator: the instance bound its nonce at its first login once Vault was back, no mismatch"
        else
            bad "$label: simulator: the instance bound its nonce once Vault was back, no mismatch" "$(grep '^login' "$work/sim3.err")"
        fi
        rs=$(journal_count 'Starting vaultboot-refresh\.service')
        first_refresh=$(journal_line 'Starting vaultboot-refresh\.service')
        vb_done=$(journal_line 'Finished vaultboot\.service')
        if [ "${rs:-0}" -ge 2 ] && [ "$first_refresh" -gt 0 ] && [ "$first_refresh" -lt "$vb_done" ]; then
            ok "$label: the refresh timer fired $rs times, the first before the boot run succeeded (not blocked by the failure)"
        else
            bad "$label: the refresh timer fired at least twice, the first before the boot run succeeded" \
                "starts: ${rs:-0}, first at journal line $first_refresh, vaultboot finished at line $vb_done"
        fi
    fi
else
    bad "boot3: guest reported within ${BOOT_READY_TIMEOUT}s" "$(tail -n 30 "$work/serial-boot3.log" 2>/dev/null)"
    stop_qemu
    finish boot3 poweroff "$work/fail.img" 1
fi
phase_end

end_run
((failed == 0))
