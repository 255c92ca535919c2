#!/bin/sh
# The rustc flags that link the release binary small, one per line (dist/release.sh and
# bench/boot.sh pass them, so that the benchmark measures the release's size). What each saves
# is in docs/performance.md ("Binary size").
#
# usage: dist/link-flags.sh
#
#   rust-lld (the toolchain's own linker, found with -B through its gcc-ld/ld.lld), for both
#       architectures: it writes RELR relocations on aarch64, where Debian 12's GNU ld ignores
#       -z pack-relative-relocs, and it makes the link the same wherever the C toolchain comes from
#   -z pack-relative-relocs: a static-pie's relative relocations (one per pointer in its data,
#       applied by musl's start code when it is loaded at its random address) as a RELR bitmap
#       instead of 24 bytes each; the start code of the toolchain's musl applies them
#   no .eh_frame_hdr, .eh_frame nor .gcc_except_table (dist/no-eh-frame.ld): the unwind and
#       exception tables; with panic = "abort" nothing unwinds
set -eu
dist=$(cd "$(dirname "$0")" && pwd -P)
host=$(rustc -vV | sed -n 's/^host: //p')
gcc_ld="$(rustc --print sysroot)/lib/rustlib/$host/bin/gcc-ld"
if [ ! -x "$gcc_ld/ld.lld" ]; then
    echo "dist/link-flags.sh: $gcc_ld/ld.lld not found (rust-lld comes with rustup's toolchains)" >&2
    exit 69
fi
printf '%s\n' \
    "-Clink-arg=-B$gcc_ld" \
    "-Clink-arg=-fuse-ld=lld" \
    "-Clink-arg=-Wl,-z,pack-relative-relocs" \
    "-Clink-arg=-Wl,--no-eh-frame-hdr" \
    "-Clink-arg=-Wl,-T,$dist/no-eh-frame.ld"
