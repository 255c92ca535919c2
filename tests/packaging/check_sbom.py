#!/usr/bin/env python3
"""Checks a release's SBOM against what its binary links and against Cargo.lock.

usage: tests/packaging/check_sbom.py SBOM CARGO_LOCK TARGET BINARY

  SBOM        vaultboot-VERSION-ARCH.cdx.json (CycloneDX JSON, cargo-cyclonedx)
  CARGO_LOCK  the Cargo.lock the release was built from (its workspace is asked)
  TARGET      the release's Rust target for that architecture (x86_64-unknown-linux-musl, ...)
  BINARY      the release's binary for that architecture (from its tarball)

The crates the binary links are what cargo resolves for the agent on that target: its normal
dependencies, transitively (`cargo tree -e normal`; no build or dev dependency; the proc-macro
crates it names run in the compiler, and the SBOM lists them too). Each of them must be in the
SBOM as a required component with its version, a licence, and, for a crates.io crate, the
sha256 that Cargo.lock records; and no dev-dependency of Cargo.toml (beside Cargo.lock), nor
the simulator, may be in it. The SBOM may list more than the binary links: the proc-macro crates
(serde_derive, ...) run in the compiler, and the build-only crates are marked scope "excluded".

The binary carries its own dependency list (cargo auditable: ELF section .dep-v0,
zlib-compressed JSON, what syft, trivy and `cargo audit bin` read): it must be there, and every
crate it names must be a required component of the SBOM at the same version, so that a scanner
reading either finds the same crates. (Both tools take features from `cargo metadata` over the
whole workspace, so both may name a few crates the agent alone does not link: toml_writer,
which only the simulator's toml features pull in, for one.)
Prints one line per problem; exit 1 when there is any, 0 with a summary otherwise.
"""

import json
import os
import struct
import subprocess
import sys
import tomllib
import zlib


def elf_section(path, wanted):
    """The bytes of section WANTED of a 64-bit little-endian ELF file, or None."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("%s: not a 64-bit little-endian ELF file" % path)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][4]
    for name_off, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", names_off + name_off)
        if data[names_off + name_off:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def embedded_crates(binary):
    """{(name, version)} of the runtime crates the binary's cargo auditable list names, itself
    excluded; None when it carries no list."""
    raw = elf_section(binary, ".dep-v0")
    if raw is None:
        return None
    audit = json.loads(zlib.decompress(raw))
    return {(p["name"], p["version"]) for p in audit["packages"]
            if p.get("kind", "runtime") == "runtime" and not p.get("root")}


def linked_crates(workspace, target):
    """{(name, version): source} of the agent's normal dependencies on TARGET, itself excluded."""
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-p", "vaultboot", "-e", "normal", "--target", target,
         "--prefix", "none", "--format", "{p}"],
        cwd=workspace, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.replace(" (*)", "").split()
        if len(parts) < 2 or parts[0] == "vaultboot":
            continue
        source = "path" if len(parts) > 2 and parts[2].startswith("(/") else "crates.io"
        found[(parts[0], parts[1].lstrip("v"))] = source
    return found


def lock_checksums(path):
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    return {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}


def components(sbom):
    out = {}
    for c in sbom.get("components", []):
        sha = [h["content"] for h in c.get("hashes", []) if h.get("alg") == "SHA-256"]
        lic = [l.get("expression") or l.get("license", {}).get("id") or l.get("license", {}).get("name")
               for l in c.get("licenses", [])]
        out[(c["name"], c["version"])] = {
            "scope": c.get("scope", "required"), "sha256": sha, "licences": [x for x in lic if x]}
    return out


def problems(sbom, lock, linked, dev_only):
    found = []
    if sbom.get("bomFormat") != "CycloneDX":
        found.append("bomFormat is %r, not CycloneDX" % sbom.get("bomFormat"))
    listed = components(sbom)
    required = {k for k, v in listed.items() if v["scope"] == "required"}
    for key in sorted(linked):
        name = "%s %s" % key
        c = listed.get(key)
        if c is None or key not in required:
            found.append("%s: linked into the binary, not a required component of the SBOM" % name)
            continue
        if not c["licences"]:
            found.append("%s: no licence in the SBOM" % name)
        want = lock.get(key)
        if want and c["sha256"] != [want]:
            found.append("%s: SBOM sha256 %s, Cargo.lock %s" % (name, c["sha256"], want))
        if linked[key] == "crates.io" and not want:
            found.append("%s: a crates.io crate without a checksum in Cargo.lock" % name)
    for name, version in sorted(listed):
        if name in dev_only:
            found.append("%s %s: a dev-dependency (or the simulator) in the SBOM" % (name, version))
    return found


def dev_dependencies(cargo_toml):
    with open(cargo_toml, "rb") as f:
        manifest = tomllib.load(f)
    return set(manifest.get("dev-dependencies", {})) | {"vaultboot-sim"}


def embedded_problems(embedded, sbom, binary):
    if embedded is None:
        return ["%s: no .dep-v0 section (not built with cargo auditable)" % binary]
    required = {k for k, v in components(sbom).items() if v["scope"] == "required"}
    return ["%s %s: named by the binary's own list, not a required component of the SBOM" % key
            for key in sorted(embedded - required)]


def main(argv):
    if len(argv) != 5:
        raise SystemExit("usage: check_sbom.py SBOM CARGO_LOCK TARGET BINARY")
    with open(argv[1], encoding="utf-8") as f:
        sbom = json.load(f)
    linked = linked_crates(os.path.dirname(os.path.abspath(argv[2])), argv[3])
    dev_only = dev_dependencies(os.path.join(os.path.dirname(os.path.abspath(argv[2])), "Cargo.toml"))
    found = problems(sbom, lock_checksums(argv[2]), linked, dev_only)
    embedded = embedded_crates(argv[4])
    found += embedded_problems(embedded, sbom, argv[4])
    for line in found:
        print(line)
    if found:
        return 1
    print("%d linked crates, each in the SBOM with its version, licence and Cargo.lock's sha256;"
          " no dev-dependency; the binary's own list names %d, each in the SBOM"
          % (len(linked), len(embedded)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
