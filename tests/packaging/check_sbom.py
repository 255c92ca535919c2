#!/usr/bin/env python3
"""Checks a release's SBOM against what its binary links and against Cargo.lock.

usage: tests/packaging/check_sbom.py SBOM CARGO_LOCK BINARY

  SBOM        vaultboot-VERSION-ARCH.cdx.json (CycloneDX JSON, cargo-cyclonedx)
  CARGO_LOCK  the Cargo.lock the release was built from
  BINARY      the release's binary for that architecture (from its tarball)

The crates the binary links are read from the binary itself: the dependency list that
cargo auditable embeds (ELF section .dep-v0, zlib-compressed JSON). Each of them must be in the
SBOM as a required component with its version, a licence, and, for a crates.io crate, the
sha256 that Cargo.lock records; and no dev-dependency of Cargo.toml (beside Cargo.lock), nor
the simulator, may be in it. The SBOM may list more than the binary links: the proc-macro crates
(serde_derive, ...) run in the compiler, and the build-only crates are marked scope "excluded".
Prints one line per problem; exit 1 when there is any, 0 with a summary otherwise.
"""

import json
import os
import struct
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


def linked_crates(binary):
    """{(name, version): source} of the crates compiled into BINARY, the root excluded."""
    raw = elf_section(binary, ".dep-v0")
    if raw is None:
        raise SystemExit("%s: no .dep-v0 section (not built with cargo auditable)" % binary)
    audit = json.loads(zlib.decompress(raw))
    return {
        (p["name"], p["version"]): p.get("source", "")
        for p in audit["packages"]
        if p.get("kind", "runtime") == "runtime" and not p.get("root")
    }


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


def main(argv):
    if len(argv) != 4:
        raise SystemExit("usage: check_sbom.py SBOM CARGO_LOCK BINARY")
    with open(argv[1], encoding="utf-8") as f:
        sbom = json.load(f)
    linked = linked_crates(argv[3])
    dev_only = dev_dependencies(os.path.join(os.path.dirname(os.path.abspath(argv[2])), "Cargo.toml"))
    found = problems(sbom, lock_checksums(argv[2]), linked, dev_only)
    for line in found:
        print(line)
    if found:
        return 1
    print("%d linked crates, each in the SBOM with its version, licence and Cargo.lock's sha256;"
          " no dev-dependency" % len(linked))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
