#!/bin/sh
# Install vaultboot into a system image, with the right owners and modes.
#
# Used by the Packer build (on the build instance, as root, DESTDIR unset) and
# by the VM boot test (into a debootstrap root, DESTDIR=/path/to/root, no
# chroot needed: nothing here runs a program of the target).
#
# usage: install.sh BINARY DIST_DIR [CONFIG]
#        install.sh            (in an unpacked release tarball: its vaultboot
#                               and dist/, no config)
#   BINARY          the static vaultboot binary
#   DIST_DIR        the repository's dist/ (dist/systemd/*.service, *.timer)
#   CONFIG          optional vaultboot config to bake as /etc/vaultboot/config.toml
#
# This is the tarball's way in, under /usr/local and /etc/systemd/system (the
# administrator's places); the .deb and .rpm install under /usr instead. The
# units in dist/ start /usr/sbin/vaultboot (the packages' path): the copies
# installed here are rewritten to start /usr/local/sbin/vaultboot.
# environment:
#   DESTDIR         root of the target file system (default: this system)
#   GATE_UNITS      units to gate on vaultboot, e.g. "nginx.service": each gets
#                   the Requires=/After= drop-in <unit>.d/10-vaultboot.conf, and
#                   vaultboot.service.d/10-<name>.conf (<name>: the unit without
#                   .service), whose ExecStartPost= starts it once one of
#                   vaultboot's automatic retries succeeds
#
# Installs:
#   /usr/local/sbin/vaultboot                      0755 root:root
#   /etc/systemd/system/vaultboot.service          0644, enabled (multi-user.target)
#   /etc/systemd/system/vaultboot-refresh.service  0644
#   /etc/systemd/system/vaultboot-refresh.timer    0644, enabled (timers.target)
#   /etc/vaultboot/                                0700, config.toml 0600
#   /var/lib/vaultboot/                            0700 (vaultboot's state)
#   /usr/local/share/doc/vaultboot/examples/       the example units, 0644
#   /usr/local/share/man/man8/vaultboot.8.gz       the man pages, 0644, when DIST_DIR/man
#   /usr/local/share/man/man5/vaultboot.toml.5.gz  has them (a release tarball does)
#   /usr/local/lib/systemd/catalog/vaultboot.catalog  the journal catalog, 0644 (then
#                   journalctl --update-catalog, when installing into this system)
# cloud-init is left as the distribution ships it: instances get their config from plain
# write_files user-data (cloud-init/README.md says why there is no vaultboot module).
set -eu
umask 022

prog=${0##*/}
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$prog" "$*"; }

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -eq 0 ] && [ -f "$here/vaultboot" ] && [ -d "$here/dist" ]; then
    set -- "$here/vaultboot" "$here/dist"
fi
[ $# -ge 2 ] || die "usage: $prog BINARY DIST_DIR [CONFIG]"
[ $# -le 3 ] ||
    die "usage: $prog BINARY DIST_DIR [CONFIG]  (env DESTDIR=ROOT, GATE_UNITS=...)"

bin=$1
dist=${2%/}
config=${3:-}
root=${DESTDIR:-}
root=${root%/}

[ -f "$bin" ] || die "binary not found: $bin"
for f in vaultboot.service vaultboot-refresh.service vaultboot-refresh.timer; do
    [ -f "$dist/systemd/$f" ] || die "missing unit: $dist/systemd/$f"
done
[ -z "$config" ] || [ -f "$config" ] || die "config not found: $config"
[ -z "$root" ] || [ -d "$root" ] || die "DESTDIR is not a directory: $root"

if [ "$(id -u)" -eq 0 ]; then as_root=1; else as_root=0; fi
[ -n "$root" ] || [ "$as_root" -eq 1 ] || die "must run as root (or set DESTDIR)"
[ "$as_root" -eq 1 ] || say "warning: not root: files keep your uid; run as root for a bootable image"

# put MODE SRC DST: copy to a temp name beside DST, set owner and mode, rename.
put() {
    _tmp="$2.vaultboot-install.$$"
    rm -f "$_tmp"
    cp "$1" "$_tmp"
    if [ "$as_root" -eq 1 ]; then chown 0:0 "$_tmp"; fi
    chmod "$3" "$_tmp"
    mv -f "$_tmp" "$2"
}
put_mode() { put "$2" "$3" "$1"; }

# own_dir MODE PATH: create PATH (parents 0755) with its owner and mode; for
# vaultboot's own directories only. System directories get plain mkdir -p.
# A directory that exists keeps its mode and owner: installing never changes
# them (a warning says when it is looser than MODE or not root's).
own_dir() {
    if [ -d "$2" ]; then
        _have=$(stat -c '%a %u' "$2")
        if [ $((0${_have% *} & ~0$1)) -ne 0 ] || { [ "$as_root" -eq 1 ] && [ "${_have#* }" != 0 ]; }; then
            say "warning: ${2#"$root"} exists with mode ${_have% *}, owner uid ${_have#* }: left as it is (vaultboot expects $1, root)"
        fi
        return 0
    fi
    mkdir -p "$(dirname "$2")"
    mkdir -m "$1" "$2"
    if [ "$as_root" -eq 1 ]; then chown 0:0 "$2"; fi
}

# --- binary ---------------------------------------------------------------
mkdir -p "$root/usr/local/sbin"
put_mode 0755 "$bin" "$root/usr/local/sbin/vaultboot"
say "installed /usr/local/sbin/vaultboot"

# --- systemd units --------------------------------------------------------
unitdir="$root/etc/systemd/system"
mkdir -p "$unitdir"
for f in vaultboot.service vaultboot-refresh.service vaultboot-refresh.timer; do
    # The units start the packages' /usr/sbin/vaultboot; this install's is in /usr/local/sbin.
    sed 's|^\(ExecStart=\)/usr/sbin/vaultboot |\1/usr/local/sbin/vaultboot |' \
        "$dist/systemd/$f" >"$unitdir/$f.vaultboot-unit.$$"
    put_mode 0644 "$unitdir/$f.vaultboot-unit.$$" "$unitdir/$f"
    rm -f "$unitdir/$f.vaultboot-unit.$$"
done
# Enable with symlinks, as `systemctl enable` would from the [Install]
# sections (WantedBy=multi-user.target / timers.target): systemctl may not
# work in a chroot or on a DESTDIR, a symlink always does.
enable_unit() { # enable_unit UNIT TARGET
    mkdir -p "$unitdir/$2.wants"
    ln -sfn "/etc/systemd/system/$1" "$unitdir/$2.wants/$1"
}
enable_unit vaultboot.service multi-user.target
enable_unit vaultboot-refresh.timer timers.target
say "installed and enabled vaultboot.service, vaultboot-refresh.timer"

for u in ${GATE_UNITS:-}; do
    case $u in
        */* | .* | "") die "GATE_UNITS: bad unit name: $u" ;;
        *.service | *.socket | *.target | *.mount) ;;
        *) die "GATE_UNITS: not a unit name: $u" ;;
    esac
    mkdir -p "$unitdir/$u.d" "$unitdir/vaultboot.service.d"
    back="$unitdir/vaultboot.service.d/10-${u%.service}.conf"
    put_mode 0644 "$dist/systemd/examples/nginx.service.d/10-vaultboot.conf" "$unitdir/$u.d/10-vaultboot.conf"
    # The other half (examples/vaultboot.service.d/10-nginx.conf, for this unit): $u comes
    # up once one of vaultboot.service's automatic retries succeeds.
    printf '# GATE_UNITS (install.sh): see examples/vaultboot.service.d/10-nginx.conf.\n[Service]\nExecStartPost=-systemctl start --no-block %s\n' "$u" \
        >"$back.vaultboot-unit.$$"
    put_mode 0644 "$back.vaultboot-unit.$$" "$back"
    rm -f "$back.vaultboot-unit.$$"
    say "gated $u on vaultboot.service ($u.d/10-vaultboot.conf, vaultboot.service.d/${back##*/})"
done

docdir="$root/usr/local/share/doc/vaultboot/examples"
mkdir -p "$docdir/nginx.service.d" "$docdir/vaultboot.service.d"
put_mode 0644 "$dist/systemd/examples/vaultboot-ad-join.service" "$docdir/vaultboot-ad-join.service"
put_mode 0644 "$dist/systemd/examples/nginx.service.d/10-vaultboot.conf" "$docdir/nginx.service.d/10-vaultboot.conf"
put_mode 0644 "$dist/systemd/examples/vaultboot.service.d/10-nginx.conf" "$docdir/vaultboot.service.d/10-nginx.conf"

# --- man pages -------------------------------------------------------------
# dist/release.sh generates them from docs/ into the tarball's dist/man/; a checkout's dist/
# has none.
if [ -f "$dist/man/vaultboot.8.gz" ] || [ -f "$dist/man/vaultboot.toml.5.gz" ]; then
    for page in vaultboot.8.gz vaultboot.toml.5.gz; do
        [ -f "$dist/man/$page" ] || die "missing man page: $dist/man/$page"
    done
    mandir="$root/usr/local/share/man"
    mkdir -p "$mandir/man8" "$mandir/man5"
    put_mode 0644 "$dist/man/vaultboot.8.gz" "$mandir/man8/vaultboot.8.gz"
    put_mode 0644 "$dist/man/vaultboot.toml.5.gz" "$mandir/man5/vaultboot.toml.5.gz"
    say "installed the man pages vaultboot(8), vaultboot.toml(5) under /usr/local/share/man"
else
    say "no man pages in $dist/man (dist/release.sh makes them): none installed"
fi

# --- the journal catalog ---------------------------------------------------
# journalctl -x explains vaultboot's MESSAGE_IDs with it; /usr/local/lib/systemd/catalog is
# one of the two directories journalctl --update-catalog reads.
[ -f "$dist/systemd/vaultboot.catalog" ] || die "missing: $dist/systemd/vaultboot.catalog"
mkdir -p "$root/usr/local/lib/systemd/catalog"
put_mode 0644 "$dist/systemd/vaultboot.catalog" "$root/usr/local/lib/systemd/catalog/vaultboot.catalog"
if [ -z "$root" ] && command -v journalctl >/dev/null 2>&1; then
    journalctl --update-catalog || say "warning: journalctl --update-catalog failed"
fi

# --- configuration and state ----------------------------------------------
own_dir 0700 "$root/etc/vaultboot"
if [ -n "$config" ]; then
    put_mode 0600 "$config" "$root/etc/vaultboot/config.toml"
    say "installed /etc/vaultboot/config.toml (0600)"
fi
mkdir -p "$root/var/lib"
own_dir 0700 "$root/var/lib/vaultboot"

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
say "done"
