#!/usr/bin/env python3
"""The release's provenance: an in-toto Statement v1 with a SLSA v1 provenance predicate.

usage: dist/provenance.py OUTDIR TOOLS_FILE ARTIFACT...   (dist/release.sh calls it)

  OUTDIR      the release directory; every ARTIFACT is read from it (its sha256 is a subject)
  TOOLS_FILE  one "NAME<TAB>VERSION LINE" per line: the toolchain and the tools that made the
              artifacts, as they answered --version (resolvedDependencies)
environment (all set by dist/release.sh):
  VAULTBOOT_VERSION, VAULTBOOT_COMMIT (40 hex digits), VAULTBOOT_ARCHES,
  VAULTBOOT_CARGO_LOCK_SHA256, SOURCE_DATE_EPOCH, VAULTBOOT_BUILDER_ID (optional)

Reproducible: nothing here depends on the machine, the checkout's path or the time: the same
commit, tools and artifacts give the same bytes (keys sorted, two-space indent, final newline).
The document goes to stdout.
"""

import hashlib
import json
import os
import re
import sys
from datetime import datetime, timezone

BUILD_TYPE = "urn:vaultboot:buildtype:dist-release-sh:v1"
DEFAULT_BUILDER = "urn:vaultboot:builder:dist-release-sh"


def fail(msg):
    sys.stderr.write("provenance.py: error: %s\n" % msg)
    sys.exit(1)


def env(name):
    value = os.environ.get(name, "")
    if not value:
        fail("%s is not set" % name)
    return value


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def subjects(outdir, names):
    if not names:
        fail("no artifact given")
    return [{"name": n, "digest": {"sha256": sha256_of(os.path.join(outdir, n))}} for n in sorted(names)]


def tools(path):
    """resolvedDependencies for the tools: a package URL with the version, and the whole line."""
    deps = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            name, sep, line_text = line.rstrip("\n").partition("\t")
            m = re.search(r"\d+\.\d+(?:\.\d+)?[^\s,()]*", line_text)
            if not sep or not m:
                fail("%s line %d: want NAME<TAB>a version line, got %r" % (path, lineno, line))
            deps.append({
                "name": name,
                "uri": "pkg:generic/%s@%s" % (name, m.group(0)),
                "annotations": {"version": line_text},
            })
    return deps


def statement(outdir, tools_file, artifacts):
    commit = env("VAULTBOOT_COMMIT")
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        fail("VAULTBOOT_COMMIT %r is not a 40-digit git commit" % commit)
    version = env("VAULTBOOT_VERSION")
    epoch = int(env("SOURCE_DATE_EPOCH"))
    when = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = {"name": "vaultboot", "digest": {"gitCommit": commit}}
    lock = {"name": "Cargo.lock", "digest": {"sha256": env("VAULTBOOT_CARGO_LOCK_SHA256")}}
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects(outdir, artifacts),
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "source": source,
                    "command": ["dist/release.sh", version],
                    "version": version,
                    "arches": env("VAULTBOOT_ARCHES").split(),
                    "sourceDateEpoch": epoch,
                },
                "internalParameters": {
                    "cargo": "cargo auditable build --release --locked --bin vaultboot, per target, static-pie "
                    "(dist/link-flags.sh)",
                },
                "resolvedDependencies": [source, lock] + tools(tools_file),
            },
            "runDetails": {
                "builder": {"id": os.environ.get("VAULTBOOT_BUILDER_ID") or DEFAULT_BUILDER},
                "metadata": {"startedOn": when, "finishedOn": when},
            },
        },
    }


def main(argv):
    if len(argv) < 4:
        fail("usage: provenance.py OUTDIR TOOLS_FILE ARTIFACT...")
    doc = statement(argv[1], argv[2], argv[3:])
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv)
