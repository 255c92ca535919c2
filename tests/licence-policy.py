#!/usr/bin/env python3
"""The licence and bans policy: every crate the workspace builds (the agent, its tests, the
simulator) for the platforms vaultboot is built and tested on must be licensed under an allowed
licence (for "A OR B", one of them is enough; for "A AND B", both), and no banned crate may be
among them. Reads `cargo metadata --locked` only (Cargo.lock and the crates' manifests): no
tool to build, no advisory database.

usage: tests/licence-policy.py            (from anywhere in the repository)
Prints one line per crate that breaks the policy; exit 1 when there is any, 0 with a summary.
"""

import json
import os
import re
import subprocess
import sys

PLATFORMS = [
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
    # the host the tests and the simulator run on
    "x86_64-unknown-linux-gnu",
]

# Every one is permissive and compatible with vaultboot's Apache-2.0: shipping the static
# binary asks for notices, never for source or relicensing. No copyleft (GPL, LGPL, MPL,
# EUPL...): a crate under one fails here until someone decides.
ALLOWED = {
    "Apache-2.0": "most crates (usually as MIT OR Apache-2.0); vaultboot itself",
    "MIT": "most crates",
    "ISC": "rustls-webpki, untrusted, ring (Apache-2.0 AND ISC): MIT's equivalent",
    "BSD-3-Clause": "subtle (constant-time comparisons, through rustls)",
    "Unicode-3.0": "unicode-ident's Unicode tables",
    "CDLA-Permissive-2.0": "webpki-roots (Mozilla's CA list as data): simulator and tests only",
}

# TLS is rustls with ring, one audited stack: no second TLS library, no C OpenSSL (a static
# musl binary must not depend on the system's).
BANNED = {
    "openssl": "TLS is rustls only",
    "openssl-sys": "TLS is rustls only",
    "native-tls": "TLS is rustls only",
}

# Packages of this workspace that are never distributed (publish = false, no licence).
UNPUBLISHED = {"vaultboot-sim"}


def allowed(expression):
    """Whether an SPDX expression (OR, AND, WITH, parentheses; `/` as old crates write OR)
    is satisfied by the allowed licences."""
    tokens = re.findall(r"\(|\)|[A-Za-z0-9.+-]+", expression.replace("/", " OR "))
    pos = 0

    def term():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("ends too early")
        token = tokens[pos]
        pos += 1
        if token == "(":
            value = disjunction()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise ValueError("no closing parenthesis")
            pos += 1
            return value
        value = token in ALLOWED
        if pos < len(tokens) and tokens[pos] == "WITH":
            pos += 2  # an exception only ever grants more (LLVM-exception, ...)
        return value

    def conjunction():
        nonlocal pos
        value = term()
        while pos < len(tokens) and tokens[pos] == "AND":
            pos += 1
            value = term() and value
        return value

    def disjunction():
        nonlocal pos
        value = conjunction()
        while pos < len(tokens) and tokens[pos] == "OR":
            pos += 1
            value = conjunction() or value
        return value

    result = disjunction()
    if pos != len(tokens):
        raise ValueError("unexpected %r" % tokens[pos])
    return result


def crates():
    """(name, version, licence) of every package reachable for PLATFORMS."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = {}
    for platform in PLATFORMS:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", platform],
            cwd=repo, check=True, capture_output=True, text=True).stdout
        meta = json.loads(out)
        packages = {p["id"]: p for p in meta["packages"]}
        for node in meta["resolve"]["nodes"]:
            p = packages[node["id"]]
            found[(p["name"], p["version"])] = p.get("license")
    return found


def main():
    problems = []
    found = crates()
    for (name, version), licence in sorted(found.items()):
        where = "%s %s" % (name, version)
        if name in BANNED:
            problems.append("%s: banned (%s)" % (where, BANNED[name]))
        if name in UNPUBLISHED:
            continue
        if not licence:
            problems.append("%s: no licence expression in its manifest" % where)
            continue
        try:
            if not allowed(licence):
                problems.append("%s: %r is not allowed (allowed: %s)"
                                % (where, licence, ", ".join(sorted(ALLOWED))))
        except ValueError as e:
            problems.append("%s: cannot read the licence %r: %s" % (where, licence, e))
    for p in problems:
        print("licence-policy: " + p)
    if problems:
        return 1
    print("licence-policy: %d crates for %s: every licence allowed, no banned crate"
          % (len(found), ", ".join(PLATFORMS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
