#!/bin/sh
# Remove from an image everything that must not be baked into it; the last
# step of the Packer build. Also usable on a DESTDIR root (VM tests).
#
# usage: cleanup.sh            (environment: DESTDIR=ROOT, default this system)
#
# Removes:
#   - vaultboot's state (/var/lib/vaultboot/*, e.g. nonce.json: a baked nonce
#     would be shared by every instance; vaultboot also ignores a state file
#     whose instance id is not its own, this is the second line of defence)
#   - every output file named in /etc/vaultboot/config.toml ([[secret.file]]
#     path = "/...") and /run/vaultboot/*, in case vaultboot ran during the build
#   - cloud-init's per-instance state and logs (what `cloud-init clean --logs`
#     removes), so the first boot of each instance is a first boot
#   - /etc/machine-id (emptied: systemd makes a new one at first boot; an
#     empty file rather than none keeps a read-only /etc bootable)
#   - SSH host keys (cloud-init's ssh module makes new ones per instance) and
#     /etc/krb5.keytab (a domain-joined build machine's identity)
# Keeps: the baked config, the binary, the units, /var/lib/vaultboot itself.
# Not hooked into /etc/cloud/clean.d on purpose: `cloud-init clean --reboot`
# on a running instance would then drop the nonce Vault has bound to that
# instance, and its next login would fail with "client nonce mismatch".
set -eu
umask 022

prog=${0##*/}
say() { printf '%s: %s\n' "$prog" "$*"; }

root=${DESTDIR:-}
root=${root%/}
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    printf '%s: error: must run as root (or set DESTDIR)\n' "$prog" >&2
    exit 1
fi

# --- vaultboot ----------------------------------------------------------------
config="$root/etc/vaultboot/config.toml"
if [ -f "$config" ]; then
    # Output paths are the only absolute `path = "/..."` values in the config
    # (a secret's own path is relative to /v1/). Templated paths
    # ({{ instance-id }}, ...) are per instance and cannot exist on the
    # build machine's image under a guessable name: they are reported only.
    sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\(\/[^"]*\)".*$/\1/p' "$config" |
        while IFS= read -r out; do
            case $out in
                *'{{'*) say "templated output path left alone: $out" ;;
                *)
                    if [ -e "$root$out" ] || [ -L "$root$out" ]; then
                        rm -f "$root$out"
                        say "removed output $out"
                    fi
                    ;;
            esac
        done
fi
if [ -d "$root/var/lib/vaultboot" ]; then
    find "$root/var/lib/vaultboot" -mindepth 1 -delete
    chmod 0700 "$root/var/lib/vaultboot"
fi
if [ -d "$root/run/vaultboot" ]; then
    find "$root/run/vaultboot" -mindepth 1 -delete
fi
say "vaultboot state cleared"

# --- cloud-init -------------------------------------------------------------------
if [ -z "$root" ] && command -v cloud-init >/dev/null 2>&1; then
    cloud-init clean --logs
elif [ -d "$root/var/lib/cloud" ]; then
    # What `cloud-init clean --logs` does, without running the target's cloud-init.
    find "$root/var/lib/cloud" -mindepth 1 -maxdepth 1 ! -name seed -exec rm -rf {} +
    rm -f "$root/var/log/cloud-init.log" "$root/var/log/cloud-init-output.log"
fi
say "cloud-init instance state cleared"

# --- machine identity -------------------------------------------------------------
if [ -e "$root/etc/machine-id" ]; then
    : >"$root/etc/machine-id"
fi
if [ -f "$root/var/lib/dbus/machine-id" ] && [ ! -L "$root/var/lib/dbus/machine-id" ]; then
    rm -f "$root/var/lib/dbus/machine-id"
fi
# Only with cloud-init in the image: its ssh module makes new host keys at
# each instance's first boot; without it sshd would have none.
if [ -x "$root/usr/bin/cloud-init" ]; then
    rm -f "$root"/etc/ssh/ssh_host_*_key "$root"/etc/ssh/ssh_host_*_key.pub
fi
rm -f "$root/etc/krb5.keytab"
rm -f "$root/root/.bash_history"
say "machine identity cleared (machine-id, host keys, keytab)"
