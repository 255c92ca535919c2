#!/bin/sh
# Install vaultboot into a system image, with the right owners and modes.
#
# Used by the Packer build (on the build instance, as root, DESTDIR unset) and
# by the VM boot test (into a debootstrap root, DESTDIR=/path/to/root, no
# chroot needed: nothing here runs a program of the target).
#
# usage: install.sh BINARY DIST_DIR CLOUD_INIT_DIR [CONFIG]
#   BINARY          the static vaultboot binary
#   DIST_DIR        the repository's dist/ (dist/systemd/*.service, *.timer)
#   CLOUD_INIT_DIR  the repository's cloud-init/ (cc_vaultboot.py, cloud.cfg.d/)
#   CONFIG          optional vaultboot config to bake as /etc/vaultboot/config.toml
# environment:
#   DESTDIR         root of the target file system (default: this system)
#   GATE_UNITS      units to gate on vaultboot, e.g. "nginx.service": each gets
#                   the Requires=/After= drop-in <unit>.d/10-vaultboot.conf
#   PYTHON          python3 with PyYAML, used to rebuild cloud_init_modules
#                   (default /usr/bin/python3, else python3 from PATH)
#   VAULTBOOT_STATIC_CLOUD_CFG=1  install cloud.cfg.d/99_vaultboot.cfg as
#                   shipped (Debian 12's module list) when no PyYAML is found
#
# Installs:
#   /usr/local/sbin/vaultboot                      0755 root:root
#   /etc/systemd/system/vaultboot.service          0644, enabled (multi-user.target)
#   /etc/systemd/system/vaultboot-refresh.service  0644
#   /etc/systemd/system/vaultboot-refresh.timer    0644, enabled (timers.target)
#   <cloudinit package>/config/cc_vaultboot.py     0644 (when cloud-init is present)
#   /etc/cloud/cloud.cfg.d/99_vaultboot.cfg        0644 (idem)
#   /etc/vaultboot/                                0700, config.toml 0600
#   /var/lib/vaultboot/                            0700 (vaultboot's state)
#   /usr/local/share/doc/vaultboot/examples/       the example units, 0644
set -eu
umask 022

prog=${0##*/}
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$prog" "$*"; }

[ $# -ge 3 ] || die "usage: $prog BINARY DIST_DIR CLOUD_INIT_DIR [CONFIG]"
[ $# -le 4 ] ||
    die "usage: $prog BINARY DIST_DIR CLOUD_INIT_DIR [CONFIG]  (env DESTDIR=ROOT, GATE_UNITS=...)"

bin=$1
dist=${2%/}
ci=${3%/}
config=${4:-}
root=${DESTDIR:-}
root=${root%/}

[ -f "$bin" ] || die "binary not found: $bin"
for f in vaultboot.service vaultboot-refresh.service vaultboot-refresh.timer; do
    [ -f "$dist/systemd/$f" ] || die "missing unit: $dist/systemd/$f"
done
[ -f "$ci/cc_vaultboot.py" ] || die "missing cloud-init module: $ci/cc_vaultboot.py"
[ -f "$ci/cloud.cfg.d/99_vaultboot.cfg" ] || die "missing: $ci/cloud.cfg.d/99_vaultboot.cfg"
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

# own_dir MODE PATH: create PATH (parents 0755) and enforce its owner and mode;
# for vaultboot's own directories only. System directories get plain mkdir -p.
own_dir() {
    mkdir -p "$2"
    if [ "$as_root" -eq 1 ]; then chown 0:0 "$2"; fi
    chmod "$1" "$2"
}

# --- binary ---------------------------------------------------------------
mkdir -p "$root/usr/local/sbin"
put_mode 0755 "$bin" "$root/usr/local/sbin/vaultboot"
say "installed /usr/local/sbin/vaultboot"

# --- systemd units --------------------------------------------------------
unitdir="$root/etc/systemd/system"
mkdir -p "$unitdir"
for f in vaultboot.service vaultboot-refresh.service vaultboot-refresh.timer; do
    put_mode 0644 "$dist/systemd/$f" "$unitdir/$f"
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
    mkdir -p "$unitdir/$u.d"
    put_mode 0644 "$dist/systemd/examples/nginx.service.d/10-vaultboot.conf" "$unitdir/$u.d/10-vaultboot.conf"
    say "gated $u on vaultboot.service ($u.d/10-vaultboot.conf)"
done

docdir="$root/usr/local/share/doc/vaultboot/examples"
mkdir -p "$docdir/nginx.service.d"
put_mode 0644 "$dist/systemd/examples/vaultboot-ad-join.service" "$docdir/vaultboot-ad-join.service"
put_mode 0644 "$dist/systemd/examples/nginx.service.d/10-vaultboot.conf" "$docdir/nginx.service.d/10-vaultboot.conf"

# --- cloud-init module and its registration ----------------------------------
find_cloudinit_config_dir() {
    if [ -n "${CLOUDINIT_CONFIG_DIR:-}" ]; then
        printf '%s\n' "$root$CLOUDINIT_CONFIG_DIR"
        return 0
    fi
    for d in "$root"/usr/lib/python3/dist-packages/cloudinit/config \
        "$root"/usr/lib/python3*/site-packages/cloudinit/config \
        "$root"/usr/lib/python3*/dist-packages/cloudinit/config \
        "$root"/usr/local/lib/python3*/dist-packages/cloudinit/config \
        "$root"/usr/local/lib/python3*/site-packages/cloudinit/config; do
        if [ -f "$d/modules.py" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

# Rebuild cloud_init_modules from the target's effective list plus vaultboot
# (see the comment at the top of cloud.cfg.d/99_vaultboot.cfg).
gen_modules_cfg() { # gen_modules_cfg OUTPUT
    "$python" - "$root" "$ci/cloud.cfg.d/99_vaultboot.cfg" >"$1" <<'PY'
import os
import sys

import yaml

root, shipped = sys.argv[1] or "/", sys.argv[2]
etc = os.path.join(root, "etc/cloud")
ours = "99_vaultboot.cfg"
files = [os.path.join(etc, "cloud.cfg")]
confd = os.path.join(etc, "cloud.cfg.d")
if os.path.isdir(confd):
    files += [
        os.path.join(confd, f)
        for f in sorted(os.listdir(confd))
        if f.endswith(".cfg") and f != ours
    ]
modules, source = None, None
for path in files:
    if not os.path.isfile(path):
        continue
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if isinstance(data, dict) and data.get("cloud_init_modules") is not None:
        modules, source = data["cloud_init_modules"], path
if not isinstance(modules, list):
    sys.exit("no cloud_init_modules list in %s" % ", ".join(files))


def norm(entry):
    if isinstance(entry, list) and entry:
        entry = entry[0]
    elif isinstance(entry, dict):
        entry = entry.get("name", "")
    name = str(entry).strip().replace("-", "_")
    if name.endswith(".py"):
        name = name[:-3]
    return name[3:] if name.startswith("cc_") else name


names = [norm(m) for m in modules]
if "vaultboot" not in names:
    at = names.index("write_files") + 1 if "write_files" in names else len(names)
    # The [name, frequency] form: cloud-init 22.4's schema accepts it, while a
    # bare name that is not one of its own modules makes every boot log
    # "Invalid cloud-config provided".
    modules.insert(at, ["vaultboot", "once-per-instance"])
with open(shipped, encoding="utf-8") as f:
    for line in f:
        if not line.startswith("#"):
            break
        sys.stdout.write(line)
sys.stdout.write("#\n# Generated by install.sh from %s.\n" % source[len(root.rstrip("/")):])
sys.stdout.write("cloud_init_modules:\n")
for m in modules:
    text = yaml.safe_dump(m, default_flow_style=True, width=1000)
    if text.endswith("\n...\n"):
        text = text[: -len("...\n")]
    sys.stdout.write("- " + text.strip() + "\n")
PY
}

if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
elif [ -x /usr/bin/python3 ]; then
    python=/usr/bin/python3
else
    python=python3
fi

if ccdir=$(find_cloudinit_config_dir) && [ -f "$root/etc/cloud/cloud.cfg" ]; then
    put_mode 0644 "$ci/cc_vaultboot.py" "$ccdir/cc_vaultboot.py"
    say "installed ${ccdir#"$root"}/cc_vaultboot.py"
    mkdir -p "$root/etc/cloud/cloud.cfg.d"
    cfg="$root/etc/cloud/cloud.cfg.d/99_vaultboot.cfg"
    gen="$cfg.vaultboot-gen.$$"
    if "$python" -c 'import yaml' 2>/dev/null; then
        if ! gen_modules_cfg "$gen"; then
            rm -f "$gen"
            die "could not rebuild cloud_init_modules (see above); vaultboot not registered"
        fi
        put_mode 0644 "$gen" "$cfg"
        rm -f "$gen"
        say "registered vaultboot in cloud_init_modules (/etc/cloud/cloud.cfg.d/99_vaultboot.cfg)"
    elif [ "${VAULTBOOT_STATIC_CLOUD_CFG:-0}" = 1 ]; then
        put_mode 0644 "$ci/cloud.cfg.d/99_vaultboot.cfg" "$cfg"
        say "warning: no PyYAML for $python: installed the shipped Debian 12 module list as is"
    else
        die "$python cannot import yaml, so the image's cloud_init_modules cannot be extended safely; install python3-yaml, set PYTHON=, or VAULTBOOT_STATIC_CLOUD_CFG=1 for Debian 12's list"
    fi
else
    say "warning: cloud-init not found under '${root:-/}': module not installed (use write_files user-data)"
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
