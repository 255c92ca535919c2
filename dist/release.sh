#!/usr/bin/env bash
# Build a vaultboot release, for x86_64 and arm64 (Graviton):
#
#   vaultboot-VERSION-ARCH-linux.tar.gz   ARCH = x86_64 | arm64 (EC2's names)
#   vaultboot_VERSION_DEBARCH.deb         DEBARCH = amd64 | arm64
#   vaultboot-VERSION-1.RPMARCH.rpm       RPMARCH = x86_64 | aarch64
#   vaultboot-VERSION-ARCH.cdx.json       the binary's SBOM (CycloneDX 1.5 JSON: every crate
#                                         linked into it, version, licence, sha256)
#   vaultboot-VERSION.intoto.json         the provenance: an in-toto statement, SLSA v1
#                                         predicate, over every file above (dist/provenance.py)
#   SHA256SUMS                            over all of the above
#   SHA256SUMS.minisig, vaultboot-VERSION.intoto.json.minisig
#                                         when VAULTBOOT_MINISIGN_KEY is set
#
# usage: dist/release.sh VERSION [OUTDIR]
#   VERSION  Cargo.toml's version, optionally followed by ~PRERELEASE or +BUILD
#            (0.1.0, 0.1.0~rc1, 0.1.0+2: both dpkg and rpm order them
#            0.1.0~rc1 < 0.1.0 < 0.1.0+2). `vaultboot --version` prints
#            Cargo.toml's version.
#   OUTDIR   where the artifacts go (default: $CARGO_TARGET_DIR/dist/VERSION,
#            i.e. target/dist/VERSION); must be empty or absent.
# environment:
#   VAULTBOOT_ARCHES        "x86_64 arm64" (default) or one of them
#   CARGO_TARGET_DIR        cargo's target directory (default: target/)
#   SOURCE_DATE_EPOCH       every timestamp in the artifacts (default: the
#                           commit time of HEAD)
#   VAULTBOOT_MINISIGN_KEY  a minisign secret key: signs SHA256SUMS (minisign
#                           asks for its password on the terminal, if it has one)
#   VAULTBOOT_MAINTAINER    the packages' maintainer ("Name <address>")
#   VAULTBOOT_COMMIT        the commit the provenance names (default: git rev-parse HEAD;
#                           a copy without .git must set it)
#   VAULTBOOT_BUILDER_ID    the provenance's builder id (default: urn:vaultboot:builder:dist-release-sh)
#
# Reproducible: the same commit gives byte-identical binaries, tarballs and
# packages, wherever it is checked out and whatever CARGO_TARGET_DIR is
# (tests/packaging/reproducible.sh builds twice and compares). What makes it
# so: SOURCE_DATE_EPOCH for every timestamp; paths of the checkout, of cargo's
# home and of the target directory remapped in rustc's and the C compiler's
# output; tar with sorted names, fixed owners and mtimes; gzip -n; dpkg-deb
# with one compressor thread; rpmbuild with a fixed build host and build time.
#
# Needs (Debian 12): rustup targets x86_64-unknown-linux-musl and
# aarch64-unknown-linux-musl, musl-tools, gcc-aarch64-linux-gnu, dpkg-dev's
# dpkg-deb (dpkg), rpm (rpmbuild), qemu-user-static (to run the arm64 binary
# once on an x86_64 host), lowdown (the man pages: dist/man.sh), minisign (to
# sign), python3 (the provenance), cargo-cyclonedx and cargo-auditable (cargo
# install --locked: tests/lib/cargo-tools.sh pins their versions).
# tests/run-all.sh installs them.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC

prog=release.sh
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$prog" "$*"; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: dist/release.sh VERSION [OUTDIR]"; fi
version=$1
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"

cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([~+][A-Za-z0-9.]+)?$ ]] ||
    die "VERSION '$version': want MAJOR.MINOR.PATCH, optionally ~PRERELEASE or +BUILD (letters, digits, dots)"
case $version in
    "$cargo_version" | "$cargo_version"[~+]*) ;;
    *) die "VERSION $version does not start with Cargo.toml's version $cargo_version" ;;
esac

mkdir -p "${CARGO_TARGET_DIR:-target}"
target_dir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd -P)
export CARGO_TARGET_DIR=$target_dir
cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)

out=${2:-$target_dir/dist/$version}
if [ -z "${2:-}" ]; then
    rm -rf "$out"
elif [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
    die "OUTDIR $out is not empty"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd -P)

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null) ||
        die "not a git checkout: set SOURCE_DATE_EPOCH"
    if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        say "warning: the work tree has uncommitted changes: this is not the release of commit $(git -C "$repo" rev-parse --short HEAD)"
    fi
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH is not a number: $SOURCE_DATE_EPOCH"
commit=${VAULTBOOT_COMMIT:-$(git -C "$repo" rev-parse HEAD 2>/dev/null)} ||
    die "not a git checkout: set VAULTBOOT_COMMIT (the commit this source is)"
[[ $commit =~ ^[0-9a-f]{40}$ ]] || die "VAULTBOOT_COMMIT is not a 40-digit commit: $commit"
export SOURCE_DATE_EPOCH
maintainer=${VAULTBOOT_MAINTAINER:-vaultboot maintainers <vaultboot@example.com>}
arches=${VAULTBOOT_ARCHES:-x86_64 arm64}

need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (Debian package $2)"
}
need cargo "rustup"
need dpkg-deb dpkg
need rpmbuild rpm
need sha256sum coreutils
need gzip gzip
need lowdown lowdown
need python3 python3
cargo cyclonedx --version >/dev/null 2>&1 ||
    die "cargo cyclonedx not found (cargo install --locked cargo-cyclonedx: tests/lib/cargo-tools.sh)"
cargo auditable --version >/dev/null 2>&1 ||
    die "cargo auditable not found (cargo install --locked cargo-auditable: tests/lib/cargo-tools.sh)"
tar --sort=name --version >/dev/null 2>&1 || die "GNU tar >= 1.28 needed (--sort=name)"

work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-release.XXXXXX")
# The SBOM tool's documents (make_sbom) are written in the checkout: gone with the run too.
trap 'rm -rf "$work"; rm -f "$repo"/.release-sbom-*-$$.json "$repo"/sim/.release-sbom-*-$$.json' EXIT

# --- per architecture ------------------------------------------------------------------------
triple_of() { case $1 in x86_64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; esac; }
debarch_of() { case $1 in x86_64) echo amd64 ;; arm64) echo arm64 ;; esac; }
rpmarch_of() { case $1 in x86_64) echo x86_64 ;; arm64) echo aarch64 ;; esac; }

# runner_for ARCH: how to run that architecture's binary here (empty: natively).
runner_for() {
    case $1:$(uname -m) in
        x86_64:x86_64 | arm64:aarch64) ;;
        arm64:*) echo qemu-aarch64-static ;;
        x86_64:*) echo qemu-x86_64-static ;;
    esac
}

# Paths that differ between checkouts and machines never reach the binary.
prefix_maps() { # prefix_maps FLAG: one FLAG=OLD=NEW per line, most specific last
    printf '%s\n' "$1=$repo=/vaultboot" "$1=$cargo_home=/cargo" "$1=$target_dir=/target"
}

build() { # build ARCH: the static binary, path printed
    local arch=$1 triple
    triple=$(triple_of "$arch")
    rustup target list --installed 2>/dev/null | grep -qx "$triple" ||
        die "rustup target $triple is not installed (rustup target add $triple)"
    local tvar=${triple//-/_}
    local rustflags cflags
    # dist/link-flags.sh: rust-lld, RELR relocations, no unwind tables (341 KB less on x86_64,
    # 254 KB on arm64; docs/performance.md has what each saves).
    rustflags=$({ prefix_maps --remap-path-prefix && dist/link-flags.sh; } | paste -sd $'\037') ||
        die "the link flags (dist/link-flags.sh) failed"
    cflags=$(prefix_maps -ffile-prefix-map | tr '\n' ' ')
    local env=(
        "CARGO_ENCODED_RUSTFLAGS=$rustflags"
        "CFLAGS_$tvar=$cflags"
        "RUSTFLAGS="
    )
    case $arch in
        x86_64) need musl-gcc musl-tools ;;
        arm64)
            need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
            env+=(
                "CC_$tvar=aarch64-linux-gnu-gcc"
                "AR_$tvar=aarch64-linux-gnu-ar"
                # A static-pie, as on x86_64 (rustc's aarch64 musl target links a
                # fixed-address binary): see dist/static-pie-cc.
                "CARGO_TARGET_${tvar^^}_LINKER=$repo/dist/static-pie-cc"
                "VAULTBOOT_LINK_CC=aarch64-linux-gnu-gcc"
            )
            ;;
    esac
    say "building $triple" >&2
    # cargo auditable: the binary carries its dependency list (section .dep-v0, compressed
    # JSON, about 1.5 KB), which syft, trivy and `cargo audit bin` read from the binary itself.
    env "${env[@]}" cargo auditable build --release --locked --target "$triple" --bin vaultboot >&2 ||
        die "cargo build for $triple failed"
    echo "$target_dir/$triple/release/vaultboot"
}

# touch_tree DIR: every entry's mtime = SOURCE_DATE_EPOCH.
touch_tree() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }

# The example configuration as an inert conffile: commented out, so an image
# that installs the package without configuring it gets `vaultboot run` exit 78
# at once rather than five minutes of retries against a Vault that is not there.
inert_config() {
    cat <<'EOF'
# /etc/vaultboot/config.toml: vaultboot's configuration.
#
# As shipped, nothing below is active: `vaultboot run` stops at once with
# status 78 (configuration error) and the units gated on vaultboot.service
# stay down. Uncomment and adapt it, bake your own into the image (packer/),
# or let cloud-init write it from user-data (write_files; see
# README.cloud-init.md). Check it with `vaultboot check`. Package upgrades keep your
# version (a dpkg conffile, an rpm %config(noreplace)).
#
EOF
    sed -e 's/^/# /' -e 's/ *$//' examples/config.toml
}

# stage_common ROOT SYSTEMDDIR DOCDIR BINARY: the files both packages carry.
stage_common() {
    local root=$1 unitdir=$2 docdir=$3 bin=$4
    install -D -m 0755 "$bin" "$root/usr/sbin/vaultboot"
    for f in vaultboot.service vaultboot-refresh.service vaultboot-refresh.timer; do
        install -D -m 0644 "dist/systemd/$f" "$root$unitdir/system/$f"
    done
    install -D -m 0644 dist/systemd/80-vaultboot.preset "$root$unitdir/system-preset/80-vaultboot.preset"
    # journald's catalog directory is /usr/lib/systemd/catalog on both (not the units' /lib).
    install -D -m 0644 dist/systemd/vaultboot.catalog "$root/usr/lib/systemd/catalog/vaultboot.catalog"
    install -d -m 0700 "$root/etc/vaultboot" "$root/var/lib/vaultboot"
    inert_config >"$root/etc/vaultboot/config.toml"
    chmod 0600 "$root/etc/vaultboot/config.toml"
    install -d -m 0755 "$root$docdir/examples/nginx.service.d" "$root$docdir/examples/vaultboot.service.d"
    install -m 0644 examples/config.toml "$root$docdir/examples/config.toml"
    install -m 0644 dist/systemd/examples/vaultboot-ad-join.service "$root$docdir/examples/"
    install -m 0644 dist/systemd/examples/nginx.service.d/10-vaultboot.conf "$root$docdir/examples/nginx.service.d/"
    install -m 0644 dist/systemd/examples/vaultboot.service.d/10-nginx.conf "$root$docdir/examples/vaultboot.service.d/"
    install -m 0644 cloud-init/examples/*.yaml "$root$docdir/examples/"
    install -m 0644 README.md "$root$docdir/README.md"
    install -m 0644 dist/README.md "$root$docdir/README.systemd.md"
    install -m 0644 cloud-init/README.md "$root$docdir/README.cloud-init.md"
    install -D -m 0644 "$work/man/vaultboot.8.gz" "$root/usr/share/man/man8/vaultboot.8.gz"
    install -D -m 0644 "$work/man/vaultboot.toml.5.gz" "$root/usr/share/man/man5/vaultboot.toml.5.gz"
}

# make_man: the man pages, once for every architecture, from the docs (dist/man.sh), compressed
# without a name or a time in the gzip header (reproducible; Debian's gzip -9n).
make_man() {
    install -d -m 0755 "$work/man"
    dist/man.sh "$version" "$work/man" || die "dist/man.sh could not make the man pages"
    gzip -9n "$work/man/vaultboot.8" "$work/man/vaultboot.toml.5"
    say "man pages: vaultboot(8), vaultboot.toml(5)"
}

make_tarball() { # make_tarball ARCH BINARY
    local arch=$1 bin=$2 name="vaultboot-$version-$1-linux"
    local d="$work/tar-$arch/$name"
    install -d -m 0755 "$d/dist/systemd/examples/nginx.service.d" "$d/dist/systemd/examples/vaultboot.service.d" \
        "$d/cloud-init/examples" "$d/examples" "$d/dist/man"
    install -m 0644 "$work/man/vaultboot.8.gz" "$work/man/vaultboot.toml.5.gz" "$d/dist/man/"
    install -m 0755 "$bin" "$d/vaultboot"
    install -m 0755 packer/install.sh "$d/install.sh"
    install -m 0644 README.md LICENSE "$d/"
    install -m 0644 examples/config.toml "$d/examples/config.toml"
    install -m 0644 dist/README.md "$d/dist/"
    install -m 0644 dist/systemd/vaultboot.service dist/systemd/vaultboot-refresh.service \
        dist/systemd/vaultboot-refresh.timer dist/systemd/80-vaultboot.preset \
        dist/systemd/vaultboot.catalog "$d/dist/systemd/"
    install -m 0644 dist/systemd/examples/vaultboot-ad-join.service "$d/dist/systemd/examples/"
    install -m 0644 dist/systemd/examples/nginx.service.d/10-vaultboot.conf "$d/dist/systemd/examples/nginx.service.d/"
    install -m 0644 dist/systemd/examples/vaultboot.service.d/10-nginx.conf "$d/dist/systemd/examples/vaultboot.service.d/"
    install -m 0644 cloud-init/README.md "$d/cloud-init/"
    install -m 0644 cloud-init/examples/*.yaml "$d/cloud-init/examples/"
    touch_tree "$d"
    (cd "$work/tar-$arch" && tar --sort=name --format=gnu --mtime="@$SOURCE_DATE_EPOCH" \
        --owner=0 --group=0 --numeric-owner -cf - "$name") | gzip -9n >"$out/$name.tar.gz"
    say "built $name.tar.gz"
}

# installed_size ROOT: dpkg-gencontrol's measure (KiB per file, rounded up, 1 per other entry).
installed_size() {
    find "$1" -mindepth 1 -path "$1/DEBIAN" -prune -o \( -type f -printf '%s\n' -o -printf '0\n' \) |
        awk '{ t += ($1 > 0) ? int(($1 + 1023) / 1024) : 1 } END { print t }'
}

make_deb() { # make_deb ARCH BINARY
    local arch=$1 bin=$2 debarch
    debarch=$(debarch_of "$arch")
    local root="$work/deb-$arch"
    local doc=/usr/share/doc/vaultboot
    # Debian 12's lintian wants units in /lib/systemd/system (merged /usr: the same directory).
    stage_common "$root" /lib/systemd "$doc" "$bin"
    local year
    year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
    cat >"$root$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vaultboot

Files: *
Copyright: $year the vaultboot authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License.
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in the file /usr/share/common-licenses/Apache-2.0.
EOF
    chmod 0644 "$root$doc/copyright"
    {
        printf 'vaultboot (%s) unstable; urgency=medium\n\n' "$version"
        printf '  * Release %s, built by dist/release.sh.\n\n' "$version"
        printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
    } | gzip -9n >"$root$doc/changelog.gz"
    chmod 0644 "$root$doc/changelog.gz"
    install -d -m 0755 "$root/usr/share/lintian/overrides"
    cat >"$root/usr/share/lintian/overrides/vaultboot" <<'EOF'
# Enabling by preset on first installation is the point (80-vaultboot.preset);
# a site preset that disables the units wins.
vaultboot: maintainer-script-calls-systemctl *
# Root-only on purpose: the configuration names Vault roles and output paths,
# the state directory holds the nonce that proves this instance to Vault.
vaultboot: non-standard-dir-perm 0700 != 0755 [etc/vaultboot/]
vaultboot: non-standard-dir-perm 0700 != 0755 [var/lib/vaultboot/]
vaultboot: non-standard-file-perm 0600 != 0644 [etc/vaultboot/config.toml]
# One static musl binary is the product: it must run before anything else on any
# distribution, with no shared library to load or to be swapped under it.
vaultboot: statically-linked-binary [usr/sbin/vaultboot]
EOF
    chmod 0644 "$root/usr/share/lintian/overrides/vaultboot"

    install -d -m 0755 "$root/DEBIAN"
    local size
    size=$(installed_size "$root")
    cat >"$root/DEBIAN/control" <<EOF
Package: vaultboot
Version: $version
Architecture: $debarch
Maintainer: $maintainer
Installed-Size: $size
Suggests: cloud-init
Section: admin
Priority: optional
Description: EC2 boot-time agent: IMDSv2, Vault aws auth, secrets in files
 vaultboot runs once per boot before the services that need secrets: it
 proves the instance's identity to HashiCorp Vault (aws auth, ec2 or iam
 method) with an IMDSv2 token, writes certificates, keys and credentials
 into root-only files, all of them or none, revokes its token and exits.
 .
 Installing enables vaultboot.service and vaultboot-refresh.timer (systemd
 presets) but starts nothing: the next boot runs it. Instances get
 /etc/vaultboot/config.toml from cloud-init's write_files user-data.
EOF
    echo /etc/vaultboot/config.toml >"$root/DEBIAN/conffiles"
    install -m 0755 dist/deb/postinst dist/deb/prerm dist/deb/postrm "$root/DEBIAN/"
    (cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\n' |
        sort | xargs -d '\n' md5sum) >"$root/DEBIAN/md5sums"
    chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
    touch_tree "$root"
    local deb="vaultboot_${version}_$debarch.deb"
    dpkg-deb --root-owner-group --threads-max=1 -Zxz -z9 --build "$root" "$out/$deb" >/dev/null
    say "built $deb"
}

make_rpm() { # make_rpm ARCH BINARY
    local arch=$1 bin=$2 rpmarch
    rpmarch=$(rpmarch_of "$arch")
    local root="$work/rpm-$arch/root" top="$work/rpm-$arch/top"
    stage_common "$root" /usr/lib/systemd /usr/share/doc/vaultboot "$bin"
    install -D -m 0644 LICENSE "$root/usr/share/licenses/vaultboot/LICENSE"
    touch_tree "$root"
    mkdir -p "$top"
    local spec="$work/rpm-$arch/vaultboot.spec"
    {
        cat dist/rpm/vaultboot.spec
        printf '\n%%changelog\n* %s %s - %s-1\n- Release %s, built by dist/release.sh.\n' \
            "$(date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y')" "$maintainer" "$version" "$version"
    } >"$spec"
    rpmbuild -bb --quiet --target "$rpmarch-linux" \
        --define "_topdir $top" \
        --define "_rpmdir $out" \
        --define "_rpmfilename %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm" \
        --define "vb_version $version" \
        --define "vb_stage $root" \
        --define "packager $maintainer" \
        --define "_buildhost reproducible" \
        --define "source_date_epoch_from_changelog 0" \
        --define "use_source_date_epoch_as_buildtime 1" \
        --define "clamp_mtime_to_source_date_epoch 1" \
        --define "_binary_payload w9.gzdio" \
        --define "_binary_filedigest_algorithm 8" \
        "$spec" >"$work/rpmbuild-$arch.log" 2>&1 || {
        cat "$work/rpmbuild-$arch.log" >&2
        die "rpmbuild for $rpmarch failed"
    }
    say "built vaultboot-$version-1.$rpmarch.rpm"
}

# make_sbom ARCH: vaultboot-VERSION-ARCH.cdx.json, by cargo-cyclonedx for that target: every
# crate the binary is built from (Cargo.lock's resolution, dev-dependencies left out), its
# version, licence, crates.io sha256 (from Cargo.lock) and package URL; the crates only the
# build runs (cc for ring's C code, ...) are listed with scope "excluded". With
# SOURCE_DATE_EPOCH set, the tool writes it as the timestamp and leaves out the random serial
# number (CycloneDX makes it optional): the document is reproducible.
make_sbom() {
    local arch=$1 triple name="vaultboot-$version-$1.cdx.json" tmp=".release-sbom-$1-$$"
    triple=$(triple_of "$arch")
    # The tool writes next to each workspace member's Cargo.toml (there is no output path):
    # named after this process, so that releases running side by side (CI's boot tests) do
    # not take each other's document.
    rm -f "$tmp.json" "sim/$tmp.json"
    cargo cyclonedx --quiet --format json --spec-version 1.5 --target "$triple" \
        --override-filename "$tmp" >&2 || die "cargo cyclonedx for $triple failed"
    [ -s "$tmp.json" ] || die "cargo cyclonedx wrote no $tmp.json"
    rm -f "sim/$tmp.json"
    # Its bom-refs are cargo's package ids, which name the checkout's path, and spell the root
    # package path+file:///DIR#0.1.0 when DIR is called vaultboot, DIR#vaultboot@0.1.0 otherwise:
    # written as path+file:///vaultboot#vaultboot@V (the path as remapped in the binary), so
    # that the document is the same wherever the source was checked out. Nothing else changes.
    python3 -c 'import re, sys
sys.stdout.write(re.sub("path\\+file://" + re.escape(sys.argv[1]) + "#(vaultboot@)?",
                        "path+file:///vaultboot#vaultboot@", sys.stdin.read()))' \
        "$repo" <"$tmp.json" >"$work/$name" || die "could not write $name"
    rm -f "$tmp.json"
    grep -qF "file://$repo/" "$work/$name" && die "$name names a path inside the checkout $repo"
    install -m 0644 "$work/$name" "$out/$name"
    say "SBOM: $name"
}

# sign FILE COMMENT: FILE.minisig, with a fixed trusted comment (minisign's default carries the
# signing time: not reproducible).
sign() {
    minisign -S -s "$VAULTBOOT_MINISIGN_KEY" -m "$out/$1" -x "$out/$1.minisig" -t "$2" >/dev/null ||
        die "minisign could not sign $1"
    say "signed: $1.minisig"
}

# tool_versions: "NAME<TAB>its --version line" for what made the artifacts (the provenance's
# resolvedDependencies). Only versions: no path of this machine.
tool_versions() {
    local host gcc_ld
    host=$(rustc -vV | sed -n 's/^host: //p')
    gcc_ld="$(rustc --print sysroot)/lib/rustlib/$host/bin/gcc-ld"
    printf 'rustc\t%s\n' "$(rustc --version)"
    printf 'cargo\t%s\n' "$(cargo --version)"
    printf 'rust-lld\t%s\n' "$("$gcc_ld/ld.lld" --version | head -n 1 | sed 's/ (\/[^)]*)//')"
    case " $arches " in *" x86_64 "*) printf 'musl-gcc\t%s\n' "$(musl-gcc --version | head -n 1)" ;; esac
    case " $arches " in *" arm64 "*) printf 'aarch64-linux-gnu-gcc\t%s\n' "$(aarch64-linux-gnu-gcc --version | head -n 1)" ;; esac
    printf 'cargo-auditable\t%s\n' "$(cargo install --list | sed -n 's/^cargo-auditable v\(.*\):$/cargo-auditable \1/p')"
    printf 'cargo-cyclonedx\t%s\n' "$(cargo cyclonedx --version)"
    printf 'dpkg-deb\t%s\n' "$(dpkg-deb --version | head -n 1)"
    printf 'rpmbuild\t%s\n' "$(rpmbuild --version)"
    printf 'tar\t%s\n' "$(tar --version | head -n 1)"
    printf 'gzip\t%s\n' "$(gzip --version | head -n 1)"
}

# make_provenance: vaultboot-VERSION.intoto.json over every artifact (dist/provenance.py).
make_provenance() {
    local name="vaultboot-$version.intoto.json" artifacts=()
    tool_versions >"$work/tools" || die "could not ask the tools for their versions"
    mapfile -t artifacts < <(cd "$out" && ls -- vaultboot-*.tar.gz vaultboot_*.deb vaultboot-*.rpm vaultboot-*.cdx.json)
    VAULTBOOT_VERSION=$version VAULTBOOT_COMMIT=$commit VAULTBOOT_ARCHES=$arches \
        VAULTBOOT_CARGO_LOCK_SHA256=$(sha256sum <Cargo.lock | cut -d' ' -f1) \
        python3 dist/provenance.py "$out" "$work/tools" "${artifacts[@]}" >"$out/$name" ||
        die "dist/provenance.py could not write the provenance"
    say "provenance: $name (${#artifacts[@]} subjects, commit $commit)"
}

say "vaultboot $version for: $arches (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH, $(date -u -d "@$SOURCE_DATE_EPOCH" +%FT%TZ))"
make_man
for arch in $arches; do
    [ -n "$(triple_of "$arch")" ] || die "unknown architecture '$arch' (x86_64, arm64)"
    bin=$(build "$arch")
    runner=$(runner_for "$arch")
    if [ -n "$runner" ]; then need "$runner" qemu-user-static; fi
    got=$($runner "$bin" --version) || die "$bin --version failed"
    case $got in *"$cargo_version"*) ;; *) die "$bin --version says '$got', not $cargo_version" ;; esac
    say "$arch: $(stat -c %s "$bin") bytes, $got"
    make_tarball "$arch" "$bin"
    make_deb "$arch" "$bin"
    make_rpm "$arch" "$bin"
    make_sbom "$arch"
done

make_provenance
(cd "$out" && sha256sum -- vaultboot-*.tar.gz vaultboot_*.deb vaultboot-*.rpm vaultboot-*.cdx.json \
    "vaultboot-$version.intoto.json" >SHA256SUMS)
say "SHA256SUMS over $(wc -l <"$out/SHA256SUMS") files"
if [ -n "${VAULTBOOT_MINISIGN_KEY:-}" ]; then
    need minisign minisign
    sign SHA256SUMS "vaultboot $version SHA256SUMS"
    sign "vaultboot-$version.intoto.json" "vaultboot $version provenance"
fi
touch -d "@$SOURCE_DATE_EPOCH" "$out"/*
say "release $version in $out:"
(cd "$out" && ls -l --time-style=+ -- *)
