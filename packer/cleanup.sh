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
#   - every output file of /etc/vaultboot/config.toml, as the binary lists them
#     (`vaultboot check --print-outputs`: however the TOML spells a path; a
#     templated part as a glob of its AWS format, e.g. i-* for instance-id), the
#     staged `.NAME.vaultboot.*` files beside each, and /run/vaultboot/* and
#     /run/vaultboot-status/*, in case vaultboot ran during the build. With
#     DESTDIR the image's own binary lists them in a chroot (root needed), so
#     that owner names and the CA path resolve in the image. A config with no
#     setting (the packages' commented-out one) names no output; a config the
#     binary refuses stops the cleanup: an output it cannot list could be
#     baked.
#   - cloud-init's per-instance state and logs (what `cloud-init clean --logs`
#     removes), so the first boot of each instance is a first boot
#   - /etc/machine-id (emptied: systemd makes a new one at first boot; an
#     empty file rather than none keeps a read-only /etc bootable)
#   - SSH host keys (cloud-init's ssh module makes new ones per instance),
#     /etc/krb5.keytab (a domain-joined build machine's identity) and systemd's
#     credential host key /var/lib/systemd/credential.secret (baked, it would be
#     every instance's: a credential sealed on one would open on all; the units'
#     `systemd-creds setup` makes a new one at each instance's first run)
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
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

# outputs: `vaultboot check --print-outputs` of the image's config, run by the image's binary
# (in a chroot of DESTDIR), one path or glob per line.
outputs() {
    bin=
    for b in /usr/sbin/vaultboot /usr/local/sbin/vaultboot; do
        if [ -x "$root$b" ]; then
            bin=$b
            break
        fi
    done
    [ -n "$bin" ] || die "no vaultboot binary in the image to list the outputs of /etc/vaultboot/config.toml"
    if [ -n "$root" ]; then
        [ "$(id -u)" -eq 0 ] ||
            die "listing the outputs of $root/etc/vaultboot/config.toml needs a chroot: run as root"
        chroot "$root" "$bin" check --print-outputs --config /etc/vaultboot/config.toml
    else
        "$bin" check --print-outputs --config /etc/vaultboot/config.toml
    fi
}

# scrub GLOB: removes what GLOB matches in the image, and the staged files beside it.
# IFS is empty: no word splitting of the paths; the globs are expanded.
scrub() {
    dir=${1%/*}
    name=${1##*/}
    old_ifs=$IFS
    IFS=
    # shellcheck disable=SC2086,SC2231 # the globs must expand (IFS is empty: no splitting)
    for f in "$root"$1 "$root"$dir/.$name.vaultboot.*; do
        if [ -e "$f" ] || [ -L "$f" ]; then
            rm -f -- "$f"
            say "removed ${f#"$root"}"
        fi
    done
    IFS=$old_ifs
}

config="$root/etc/vaultboot/config.toml"
if [ -f "$config" ] && grep -Eqv '^[[:space:]]*(#|$)' "$config"; then
    list=$(outputs) || die "vaultboot refused $config (above): cannot tell which outputs to remove"
    # Read from a here-document, not a pipe: a die inside the loop must end the script.
    while IFS= read -r out; do
        case $out in
            /*) scrub "$out" ;;
            "") ;;
            *) die "vaultboot listed an output that is not an absolute path: $out" ;;
        esac
    done <<EOF
$list
EOF
fi
if [ -d "$root/var/lib/vaultboot" ]; then
    find "$root/var/lib/vaultboot" -mindepth 1 -delete
    chmod 0700 "$root/var/lib/vaultboot"
fi
for d in "$root/run/vaultboot" "$root/run/vaultboot-status"; do
    if [ -d "$d" ]; then
        find "$d" -mindepth 1 -delete
    fi
done
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
rm -f "$root/var/lib/systemd/credential.secret"
rm -f "$root/root/.bash_history"
say "machine identity cleared (machine-id, host keys, keytab, credential host key)"
