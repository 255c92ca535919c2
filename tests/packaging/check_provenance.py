#!/usr/bin/env python3
"""Checks a release's provenance (vaultboot-VERSION.intoto.json).

usage: tests/packaging/check_provenance.py OUTDIR VERSION COMMIT

The statement parses as an in-toto Statement v1 with a SLSA v1 provenance predicate; its
subjects are exactly the release's artifacts (every file of OUTDIR but SHA256SUMS, the
signatures and the statement itself), each with the sha256 of the file; it names COMMIT (the
checkout's `git rev-parse HEAD`), the build command, the toolchain and the timestamps of
SOURCE_DATE_EPOCH. Prints one line per problem; exit 1 when there is any.
"""

import hashlib
import json
import os
import sys
from datetime import datetime, timezone

TOOLS = {"rustc", "cargo", "rust-lld", "cargo-auditable", "cargo-cyclonedx"}


def artifacts(outdir, statement_name):
    return sorted(n for n in os.listdir(outdir)
                  if n not in ("SHA256SUMS", statement_name) and not n.endswith(".minisig"))


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def subject_problems(doc, outdir, names):
    found = []
    subjects = {s.get("name"): s.get("digest", {}).get("sha256") for s in doc.get("subject", [])}
    for name in names:
        if name not in subjects:
            found.append("%s: an artifact that is not a subject" % name)
        elif subjects[name] != sha256_of(os.path.join(outdir, name)):
            found.append("%s: subject sha256 %s, the file's %s" % (
                name, subjects[name], sha256_of(os.path.join(outdir, name))))
    for name in sorted(set(subjects) - set(names)):
        found.append("%s: a subject that is not in the release" % name)
    return found


def predicate_problems(doc, version, commit):
    found = []
    pred = doc.get("predicate", {})
    build = pred.get("buildDefinition", {})
    ext = build.get("externalParameters", {})
    if ext.get("source", {}).get("digest", {}).get("gitCommit") != commit:
        found.append("externalParameters.source names commit %r, HEAD is %s" % (ext.get("source"), commit))
    if ext.get("command") != ["dist/release.sh", version]:
        found.append("externalParameters.command is %r" % ext.get("command"))
    if not build.get("buildType"):
        found.append("no buildType")
    tools = {d.get("name") for d in build.get("resolvedDependencies", [])}
    if not TOOLS <= tools:
        found.append("resolvedDependencies lack %s" % sorted(TOOLS - tools))
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    meta = pred.get("runDetails", {}).get("metadata", {})
    if epoch:
        when = datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if meta.get("startedOn") != when or meta.get("finishedOn") != when:
            found.append("metadata timestamps %r, SOURCE_DATE_EPOCH is %s" % (meta, when))
    if not pred.get("runDetails", {}).get("builder", {}).get("id"):
        found.append("no runDetails.builder.id")
    return found


def main(argv):
    if len(argv) != 4:
        raise SystemExit("usage: check_provenance.py OUTDIR VERSION COMMIT")
    outdir, version, commit = argv[1:]
    name = "vaultboot-%s.intoto.json" % version
    with open(os.path.join(outdir, name), encoding="utf-8") as f:
        doc = json.load(f)
    found = []
    if doc.get("_type") != "https://in-toto.io/Statement/v1":
        found.append("_type is %r" % doc.get("_type"))
    if doc.get("predicateType") != "https://slsa.dev/provenance/v1":
        found.append("predicateType is %r" % doc.get("predicateType"))
    names = artifacts(outdir, name)
    found += subject_problems(doc, outdir, names)
    found += predicate_problems(doc, version, commit)
    for line in found:
        print(line)
    if found:
        return 1
    print("%d subjects with their sha256, commit %s" % (len(names), commit[:12]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
