#!/bin/sh
# Installs a vaultboot release on the image being built (the Packer build runs it as
# root on the build instance; tests/packaging runs it in a Debian chroot).
#
# environment:
#   VAULTBOOT_PACKAGE         path or https:// URL of vaultboot_*.deb, vaultboot-*.rpm or
#                             vaultboot-*-linux.tar.gz (a URL is downloaded with curl/wget)
#   VAULTBOOT_PACKAGE_SHA256  its SHA-256 (from the verified SHA256SUMS): checked first
#   VAULTBOOT_CONFIG          the config to bake as /etc/vaultboot/config.toml (0600)
#   VAULT_CA_CERT             optional PEM, installed where the config's vault.ca_cert says
#   GATE_UNITS                units to gate on vaultboot (Requires= + After= drop-in, and a
#                             vaultboot.service drop-in that starts them once a retry succeeds)
#   ARCH                      x86_64 or arm64: must be this machine's
#
# Then checks, and fails the build otherwise: `vaultboot check` accepts the baked config
# (a ca_cert that does not exist on the image fails here), vaultboot.service and
# vaultboot-refresh.timer are enabled, and vaultboot has not run (installing never starts it).
set -eu
umask 022

prog=${0##*/}
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$prog" "$*"; }

pkg=${VAULTBOOT_PACKAGE:?VAULTBOOT_PACKAGE: path or https:// URL of the release artifact}
sum=${VAULTBOOT_PACKAGE_SHA256:?VAULTBOOT_PACKAGE_SHA256: its line of SHA256SUMS}
config=${VAULTBOOT_CONFIG:?VAULTBOOT_CONFIG: the config to bake}
ca=${VAULT_CA_CERT:-}
[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -f "$config" ] || die "config not found: $config"

case ${ARCH:-}:$(uname -m) in
    x86_64:x86_64 | arm64:aarch64 | :*) ;;
    *) die "ARCH=$ARCH but this machine is $(uname -m)" ;;
esac

work=$(mktemp -d /tmp/vaultboot-release.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- fetch and verify --------------------------------------------------------------------
name=${pkg##*/}
case $pkg in
    https://*)
        if command -v curl >/dev/null 2>&1; then
            curl --proto '=https' --tlsv1.2 -fsSL -o "$work/$name" "$pkg" || die "cannot download $pkg"
        elif command -v wget >/dev/null 2>&1; then
            wget -q -O "$work/$name" "$pkg" || die "cannot download $pkg"
        else
            die "neither curl nor wget to download $pkg"
        fi
        ;;
    *://*) die "only https:// URLs: $pkg" ;;
    *)
        [ -f "$pkg" ] || die "not found: $pkg"
        cp "$pkg" "$work/$name"
        ;;
esac
printf '%s  %s\n' "$sum" "$work/$name" | sha256sum -c - >/dev/null 2>&1 ||
    die "$name: SHA-256 is $(sha256sum "$work/$name" | cut -d' ' -f1), not $sum: refusing to install it"
say "$name: SHA-256 verified"

# --- install -------------------------------------------------------------------------------
case $name in
    *.deb)
        command -v dpkg >/dev/null 2>&1 || die "$name: no dpkg on this system (use the .rpm or the tarball)"
        DEBIAN_FRONTEND=noninteractive dpkg -i "$work/$name" || die "dpkg -i $name failed"
        ;;
    *.rpm)
        if command -v dnf >/dev/null 2>&1; then
            dnf install -y "$work/$name" || die "dnf install $name failed"
        elif command -v rpm >/dev/null 2>&1; then
            rpm -i "$work/$name" || die "rpm -i $name failed"
        else
            die "$name: no dnf or rpm on this system (use the .deb or the tarball)"
        fi
        ;;
    *.tar.gz)
        tar -xzf "$work/$name" -C "$work" || die "cannot unpack $name"
        dir="$work/${name%.tar.gz}"
        [ -f "$dir/install.sh" ] || die "$name: no install.sh inside"
        GATE_UNITS=${GATE_UNITS:-} sh "$dir/install.sh" "$dir/vaultboot" "$dir/dist" ||
            die "$name: install.sh failed"
        ;;
    *) die "$name: not a .deb, .rpm or .tar.gz" ;;
esac

if [ -x /usr/sbin/vaultboot ]; then
    bin=/usr/sbin/vaultboot
elif [ -x /usr/local/sbin/vaultboot ]; then
    bin=/usr/local/sbin/vaultboot
else
    die "no vaultboot binary after installing $name"
fi
"$bin" --version

# Gating drop-ins (the tarball's install.sh made its own).
case $name in
    *.tar.gz) ;;
    *)
        for u in ${GATE_UNITS:-}; do
            case $u in
                */* | .* | "") die "GATE_UNITS: bad unit name: $u" ;;
                *.service | *.socket | *.target | *.mount) ;;
                *) die "GATE_UNITS: not a unit name: $u" ;;
            esac
            mkdir -p "/etc/systemd/system/$u.d" /etc/systemd/system/vaultboot.service.d
            install -m 0644 /usr/share/doc/vaultboot/examples/nginx.service.d/10-vaultboot.conf \
                "/etc/systemd/system/$u.d/10-vaultboot.conf"
            # The other half (examples/vaultboot.service.d/10-nginx.conf, for this unit).
            printf '# GATE_UNITS (install-release.sh): see examples/vaultboot.service.d/10-nginx.conf.\n[Service]\nExecStartPost=-systemctl start --no-block %s\n' "$u" \
                >"/etc/systemd/system/vaultboot.service.d/10-${u%.service}.conf"
            chmod 0644 "/etc/systemd/system/vaultboot.service.d/10-${u%.service}.conf"
            say "gated $u on vaultboot.service"
        done
        ;;
esac

# --- configuration and the Vault CA ----------------------------------------------------------
# No step here changes the mode of a directory that exists: `install -d -m MODE` would (it
# once turned the package's 0700 /etc/vaultboot into 0755). New directories only.
[ -d /etc/vaultboot ] || install -d -m 0700 /etc/vaultboot
install -m 0600 "$config" /etc/vaultboot/config.toml
say "baked /etc/vaultboot/config.toml"

# vault.ca_cert of the config: the first `ca_cert = "..."` inside [vault].
ca_path=$(awk '
    /^[[:space:]]*\[/ { in_vault = ($0 ~ /^[[:space:]]*\[vault\][[:space:]]*(#.*)?$/) ; next }
    in_vault && /^[[:space:]]*ca_cert[[:space:]]*=/ {
        v = $0; sub(/^[^=]*=[[:space:]]*/, "", v)
        if (match(v, /^"[^"]*"/)) { print substr(v, 2, RLENGTH - 2); exit }
        if (match(v, /^'"'"'[^'"'"']*'"'"'/)) { print substr(v, 2, RLENGTH - 2); exit }
    }' /etc/vaultboot/config.toml)
if [ -n "$ca" ]; then
    [ -f "$ca" ] || die "VAULT_CA_CERT not found: $ca"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$ca" || die "VAULT_CA_CERT is not a PEM certificate: $ca"
    [ -n "$ca_path" ] ||
        die "a Vault CA was given (vault_ca_cert) but the config sets no vault.ca_cert: set ca_cert = \"/etc/vaultboot/vault-ca.pem\" in [vault]"
    case $ca_path in /*) ;; *) die "vault.ca_cert must be an absolute path: $ca_path" ;; esac
    # A missing directory is made 0755 (umask 022), like its missing parents; an existing one
    # (/etc/vaultboot, 0700) keeps its mode. The CA is public: 0644.
    mkdir -p "$(dirname "$ca_path")"
    install -m 0644 "$ca" "$ca_path"
    say "installed the Vault CA as $ca_path"
elif [ -n "$ca_path" ] && [ ! -f "$ca_path" ]; then
    die "the config's vault.ca_cert $ca_path does not exist on the image: pass its PEM as vault_ca_cert"
fi

# --- checks ----------------------------------------------------------------------------------
"$bin" check --config /etc/vaultboot/config.toml || die "vaultboot check refused the baked config"
if command -v systemctl >/dev/null 2>&1; then
    systemctl is-enabled vaultboot.service vaultboot-refresh.timer || die "units not enabled"
    if [ -d /run/systemd/system ] && systemctl is-active --quiet vaultboot.service; then
        die "vaultboot.service is active: installing must never start it"
    fi
fi
if [ -n "$(ls -A /var/lib/vaultboot 2>/dev/null)" ]; then
    die "/var/lib/vaultboot is not empty: vaultboot ran during the install"
fi
say "done: $name installed, config checked, units enabled, nothing started"
