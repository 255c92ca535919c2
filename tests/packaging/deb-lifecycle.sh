#!/usr/bin/env bash
# The .deb's whole life, with Debian 12's own dpkg, systemctl and cloud-init, in a chroot of
# a real Debian 12 tree (no VM: nothing is booted, so nothing may start either):
#   install     -> units enabled by preset, /etc/cloud untouched, nothing ran
#                  (/var/lib/vaultboot empty)
#   first boot  -> (simulated) the admin's config, a nonce in /var/lib/vaultboot, the timer
#                  disabled by the admin
#   upgrade     -> to a newer build: config and nonce kept, the admin's disable respected
#   remove      -> binary and units gone; config and nonce kept
#   purge       -> state, config directory and enablement links gone
#   packer      -> packer/install-release.sh installs the .deb with a config and a Vault CA,
#                  refuses a wrong checksum and a config whose ca_cert is missing
#
# usage: tests/packaging/deb-lifecycle.sh OLD.deb NEW.deb
# The tree: the boot test's cache (/var/cache/vaultboot-boot/bookworm-<hex>.tar.zst, or
# VAULTBOOT_BOOT_CACHE) when there is one, else a minbase debootstrap with cloud-init, cached
# there as lifecycle-*.tar.zst (about 100 s cold).
set -u
export LC_ALL=C

old_deb=$(readlink -f "${1:?usage: deb-lifecycle.sh OLD.deb NEW.deb}")
new_deb=$(readlink -f "${2:?usage: deb-lifecycle.sh OLD.deb NEW.deb}")
repo=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${VAULTBOOT_BOOT_CACHE:-/var/cache/vaultboot-boot}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# shellcheck source=tests/lib/checks.sh
. "$repo/tests/lib/checks.sh"

[ "$(id -u)" -eq 0 ] || {
    echo "deb-lifecycle.sh: needs root (chroot)" >&2
    exit 2
}
work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-deb-life.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
R=$work/root
mkdir "$R"

# The x86_64 tree only (bookworm-<16 hex>.tar.zst): the arm64 boot test's bookworm-arm64-<hex>
# sits beside it, and its programs do not run here.
# shellcheck disable=SC2012,SC2010 # the cache's names are ours
tree=$(ls -t "$CACHE"/bookworm-*.tar.zst 2>/dev/null | grep -E '/bookworm-[0-9a-f]{16}\.tar\.zst$' | head -n 1)
if [ -z "$tree" ]; then
    tree=$CACHE/lifecycle-bookworm-v1.tar.zst
    if [ ! -f "$tree" ]; then
        echo "debootstrap bookworm (minbase, cloud-init) into a cache: $tree"
        if ! debootstrap --variant=minbase --include=systemd-sysv,cloud-init,python3-cffi-backend \
            bookworm "$R" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
            bad "debootstrap a Debian 12 tree" "$(tail -n 20 "$work/debootstrap.log")"
            finish
        fi
        rm -rf "$R/var/cache/apt/archives/"*.deb
        mkdir -p "$CACHE" && tar -C "$R" --zstd -cf "$tree.tmp.$$" . && mv "$tree.tmp.$$" "$tree"
        rm -rf "$R" && mkdir "$R"
    fi
fi
if tar -C "$R" --zstd -xf "$tree"; then
    # shellcheck disable=SC2016 # ${Version} is dpkg-query's, not the shell's
    ok "Debian 12 tree from $tree ($(chroot "$R" dpkg-query -W -f '${Version}' cloud-init) cloud-init)"
else
    bad "unpack $tree"
    finish
fi

in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
cp "$old_deb" "$R/tmp/old.deb"
cp "$new_deb" "$R/tmp/new.deb"
old_version=$(dpkg-deb -f "$old_deb" Version)
new_version=$(dpkg-deb -f "$new_deb" Version)
wants_boot=$R/etc/systemd/system/multi-user.target.wants/vaultboot.service
wants_timer=$R/etc/systemd/system/timers.target.wants/vaultboot-refresh.timer
cloud_tree() { # every file of cloud-init's configuration with its checksum
    (cd "$R/etc/cloud" && find . -type f -exec sha256sum {} + | sort)
}

# --- install -------------------------------------------------------------------------------
before=$(cloud_tree)
if o=$(in_root dpkg -i /tmp/old.deb 2>&1); then ok "dpkg -i vaultboot $old_version"; else
    bad "dpkg -i vaultboot $old_version" "$o"
    finish
fi
if [ -L "$wants_boot" ] && [ -L "$wants_timer" ] &&
    [ "$(in_root systemctl is-enabled vaultboot.service vaultboot-refresh.timer | tr '\n' ' ')" = "enabled enabled " ]; then
    ok "install: vaultboot.service and vaultboot-refresh.timer enabled (preset): $(readlink "$wants_boot")"
else
    bad "install: units enabled by preset" "$(ls -l "$R/etc/systemd/system/"*.wants 2>&1)"
fi
if [ "$(cloud_tree)" = "$before" ]; then
    ok "install: /etc/cloud is as cloud-init shipped it (no drop-in, module lists untouched)"
else
    bad "install: /etc/cloud untouched" "$(diff <(printf '%s\n' "$before") <(cloud_tree))"
fi
if [ -z "$(ls -A "$R/var/lib/vaultboot")" ] && [ ! -e "$R/run/vaultboot" ]; then
    ok "install: nothing ran (/var/lib/vaultboot empty, no /run/vaultboot)"
else
    bad "install: nothing ran" "$(ls -la "$R/var/lib/vaultboot" "$R/run/vaultboot" 2>&1)"
fi
st=$(stat -c '%a %U:%G' "$R/usr/sbin/vaultboot" "$R/etc/vaultboot" "$R/etc/vaultboot/config.toml" "$R/var/lib/vaultboot" | tr '\n' ',')
if [ "$st" = "755 root:root,700 root:root,600 root:root,700 root:root," ]; then
    ok "install: /usr/sbin/vaultboot 755, /etc/vaultboot 700, config.toml 600, /var/lib/vaultboot 700 (root)"
else
    bad "install: modes and owners" "$st"
fi

# --- a first boot, simulated: the admin's config, a nonce, the timer disabled -----------------
printf '[vault]\naddress = "https://vault.example:8200"\n[auth]\nrole = "web"\n' >"$R/etc/vaultboot/config.toml"
printf '{"instance_id":"i-0123","nonce":"kept"}\n' >"$R/var/lib/vaultboot/nonce.json"
chmod 0600 "$R/var/lib/vaultboot/nonce.json"
config_sum=$(sha256sum <"$R/etc/vaultboot/config.toml")
in_root systemctl disable vaultboot-refresh.timer >/dev/null 2>&1

# --- upgrade -------------------------------------------------------------------------------
if o=$(in_root dpkg -i /tmp/new.deb </dev/null 2>&1); then
    ok "upgrade $old_version -> $new_version (dpkg -i, no terminal, no prompt)"
else
    bad "upgrade $old_version -> $new_version" "$o"
fi
if [ "$(sha256sum <"$R/etc/vaultboot/config.toml")" = "$config_sum" ] &&
    [ -f "$R/var/lib/vaultboot/nonce.json" ] && [ ! -e "$R/etc/vaultboot/config.toml.dpkg-new" ]; then
    ok "upgrade: the changed config.toml and the nonce are kept"
else
    bad "upgrade: config and nonce kept" "$(ls -la "$R/etc/vaultboot" "$R/var/lib/vaultboot" 2>&1)"
fi
if [ -L "$wants_boot" ] && [ ! -e "$wants_timer" ]; then
    ok "upgrade: the admin's choice stands (boot job enabled, timer still disabled)"
else
    bad "upgrade: enablement unchanged" "$(ls -l "$R/etc/systemd/system/"*.wants 2>&1)"
fi
in_root systemctl enable vaultboot-refresh.timer >/dev/null 2>&1

# --- remove --------------------------------------------------------------------------------
if o=$(in_root dpkg -r vaultboot 2>&1); then ok "dpkg -r vaultboot"; else bad "dpkg -r vaultboot" "$o"; fi
gone=""
for p in /usr/sbin/vaultboot /lib/systemd/system/vaultboot.service /lib/systemd/system/vaultboot-refresh.timer; do
    [ ! -e "$R$p" ] || gone+="$p still there; "
done
if [ -z "$gone" ] && [ -f "$R/etc/vaultboot/config.toml" ] && [ -f "$R/var/lib/vaultboot/nonce.json" ]; then
    ok "remove: binary and units gone; config and nonce kept"
else
    bad "remove: what goes and what stays" "$gone $(ls -la "$R/etc/vaultboot" "$R/var/lib/vaultboot" 2>&1)"
fi
if [ "$(cloud_tree)" = "$before" ]; then
    ok "remove: /etc/cloud still as cloud-init shipped it"
else
    bad "remove: /etc/cloud untouched" "$(diff <(printf '%s\n' "$before") <(cloud_tree))"
fi

# --- purge ---------------------------------------------------------------------------------
if o=$(in_root dpkg -P vaultboot 2>&1); then ok "dpkg -P vaultboot"; else bad "dpkg -P vaultboot" "$o"; fi
left=""
for p in /var/lib/vaultboot /etc/vaultboot "${wants_boot#"$R"}" "${wants_timer#"$R"}"; do
    [ ! -e "$R$p" ] && [ ! -L "$R$p" ] || left+="$p "
done
if [ -z "$left" ] && ! in_root dpkg -s vaultboot >/dev/null 2>&1; then
    ok "purge: state, /etc/vaultboot and enablement links gone"
else
    bad "purge: what the package created is gone" "left: $left"
fi

# --- packer/install-release.sh, as the Packer build runs it ----------------------------------
cp "$repo/packer/install-release.sh" "$R/tmp/"
printf '[vault]\naddress = "https://vault.internal:8200"\nca_cert = "/etc/vaultboot/vault-ca.pem"\n[auth]\nrole = "web"\n' \
    >"$R/tmp/config.toml"
printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' >"$R/tmp/ca.pem"
sum=$(sha256sum "$new_deb" | cut -d' ' -f1)
release() { # release SHA256 CA: run install-release.sh in the tree
    in_root env VAULTBOOT_PACKAGE=/tmp/new.deb VAULTBOOT_PACKAGE_SHA256="$1" VAULTBOOT_CONFIG=/tmp/config.toml \
        VAULT_CA_CERT="$2" GATE_UNITS=nginx.service sh /tmp/install-release.sh 2>&1
}
if o=$(release "$(printf '%064d' 0)" /tmp/ca.pem); then
    bad "install-release.sh refuses a wrong SHA-256" "$o"
elif in_root dpkg -s vaultboot >/dev/null 2>&1; then
    bad "install-release.sh refuses a wrong SHA-256 before installing" "$o"
else
    ok "install-release.sh refuses a wrong SHA-256, nothing installed: $(printf '%s\n' "$o" | tail -n 1)"
fi
if o=$(release "$sum" ""); then
    bad "install-release.sh refuses a config whose ca_cert is not on the image" "$o"
else
    ok "install-release.sh refuses a config whose ca_cert is not on the image: $(printf '%s\n' "$o" | tail -n 1)"
fi
in_root dpkg -P vaultboot >/dev/null 2>&1
# An admin's drop-in directory that exists with its own mode: installing must keep it.
mkdir -p "$R/etc/systemd/system/nginx.service.d" && chmod 0750 "$R/etc/systemd/system/nginx.service.d"
dir_modes() { # every directory of the tree: "path mode owner"
    (cd "$R" && find . -xdev -type d ! -path './proc/*' ! -path './tmp/*' -printf '%p %m %u:%g\n' | sort)
}
dirs_before=$(dir_modes)
if o=$(release "$sum" /tmp/ca.pem) && cmp -s "$R/tmp/ca.pem" "$R/etc/vaultboot/vault-ca.pem" &&
    cmp -s "$R/tmp/config.toml" "$R/etc/vaultboot/config.toml" &&
    [ -f "$R/etc/systemd/system/nginx.service.d/10-vaultboot.conf" ]; then
    ok "install-release.sh: .deb installed, config baked, Vault CA at the config's ca_cert, nginx gated"
else
    bad "install-release.sh installs the release" "$o"
fi
# Every path install-release.sh made or wrote, with its mode and owner (the CA sits in the
# documented place, /etc/vaultboot: installing it must not loosen that directory).
wrong=""
while read -r path want; do
    got=$(stat -c '%a %U:%G' "$R$path" 2>&1)
    [ "$got" = "$want" ] || wrong+="$path: want $want, got $got"$'\n'
done <<'EOF'
/usr/sbin/vaultboot 755 root:root
/etc/vaultboot 700 root:root
/etc/vaultboot/config.toml 600 root:root
/etc/vaultboot/vault-ca.pem 644 root:root
/var/lib/vaultboot 700 root:root
/lib/systemd/system/vaultboot.service 644 root:root
/lib/systemd/system/vaultboot-refresh.service 644 root:root
/lib/systemd/system/vaultboot-refresh.timer 644 root:root
/etc/systemd/system/nginx.service.d 750 root:root
/etc/systemd/system/nginx.service.d/10-vaultboot.conf 644 root:root
/etc/systemd/system/vaultboot.service.d 755 root:root
/etc/systemd/system/vaultboot.service.d/10-nginx.conf 644 root:root
EOF
if [ -z "$wrong" ]; then
    ok "install-release.sh: every path it made or wrote has its mode and owner (/etc/vaultboot still 0700)"
else
    bad "install-release.sh: modes and owners of what it made or wrote" "$wrong"
fi
# No directory that existed before install-release.sh changed its mode or owner.
changed=$(comm -23 <(printf '%s\n' "$dirs_before") <(dir_modes))
if [ -n "$dirs_before" ] && [ -z "$changed" ]; then
    ok "install-release.sh: none of the $(printf '%s\n' "$dirs_before" | wc -l) directories that existed changed mode or owner"
else
    bad "install-release.sh: no existing directory changed mode or owner" "before (now different or gone): $changed"
fi

finish
