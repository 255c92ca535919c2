#!/usr/bin/env bash
# The man pages, generated from the repository's own docs, so that their text is written once:
#
#   vaultboot(8)       from docs/command-line.md
#   vaultboot.toml(5)  from docs/configuration.md
#
# usage: dist/man.sh VERSION OUTDIR
#   writes OUTDIR/vaultboot.8 and OUTDIR/vaultboot.toml.5 (roff, uncompressed: the packages
#   compress them). dist/release.sh runs it.
# environment:
#   SOURCE_DATE_EPOCH  the pages' date (default: the commit time of HEAD), never the clock's
#
# What changes on the way from markdown to man(7), so that the pages render at 80 columns
# without a warning from man --warnings: the document's title (# heading) gives way to NAME;
# ## headings become sections (upper case but for `code`), ### subsections; a table becomes a
# definition list (a row's first cell the term, its middle cells "Header: value.", its last
# cell the text), since a four-column table cannot fit a terminal; links show their text only.
# Needs lowdown (Debian 12: apt-get install lowdown).
set -euo pipefail
export LC_ALL=C TZ=UTC

prog=man.sh
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

[ $# -eq 2 ] || die "usage: dist/man.sh VERSION OUTDIR"
version=$1
outdir=$2
repo=$(cd "$(dirname "$0")/.." && pwd -P)
command -v lowdown >/dev/null 2>&1 || die "lowdown not found (Debian package lowdown)"
[ -d "$outdir" ] || die "OUTDIR $outdir is not a directory"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null) ||
        die "not a git checkout: set SOURCE_DATE_EPOCH"
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH is not a number: $SOURCE_DATE_EPOCH"
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)

# to_man_markdown < DOC.md: the markdown that lowdown turns into the page's body (see above).
to_man_markdown() {
    awk '
        function upper_outside_code(s,    n, parts, i, r) {
            n = split(s, parts, "`")
            r = ""
            for (i = 1; i <= n; i++) r = r (i > 1 ? "`" : "") (i % 2 ? toupper(parts[i]) : parts[i])
            return r
        }
        function cells(line, out,    n) {
            sub(/^\| */, "", line)
            sub(/ *\|$/, "", line)
            return split(line, out, / +\| +/)
        }
        function row(line,    c, n, i, def) {
            n = cells(line, c)
            if (n != ncols) {
                printf "%s: a table row has %d cells, its header %d: %s\n", FILENAME, n, ncols, line > "/dev/stderr"
                bad = 1
            }
            def = ""
            for (i = 2; i < n; i++) def = def "*" toupper(substr(head[i], 1, 1)) substr(head[i], 2) ":* " c[i] ". "
            printf "%s\n: %s%s\n\n", c[1], def, c[n]
        }
        NR == 1 && /^# / { title = 1; next }
        /^```/ { fenced = !fenced }
        fenced { print; next }
        /^\|/ {
            if (!intable) { ncols = cells($0, head); intable = 1; seprow = 1; next }
            if (seprow) { seprow = 0; next }
            row($0)
            next
        }
        { intable = 0 }
        /^## / { sections = 1; print "# " upper_outside_code(substr($0, 4)); next }
        /^###+ / { print substr($0, 2); next }
        !sections && !described && NF { print "# DESCRIPTION\n"; described = 1 }
        { print }
        END { exit bad }
    '
}

# page NAME SECTION SOURCE WHATIS SEEALSO [SYNOPSIS]: writes OUTDIR/NAME.SECTION.
page() {
    local name=$1 section=$2 src=$3 whatis=$4 seealso=$5 synopsis=${6:-}
    local body
    body=$(to_man_markdown <"$repo/$src") || die "$src: cannot turn it into a man page"
    {
        printf '# NAME\n\n%s - %s\n\n' "$name" "$whatis"
        if [ -n "$synopsis" ]; then printf '# SYNOPSIS\n\n%s\n\n' "$synopsis"; fi
        printf '%s\n\n# SEE ALSO\n\n%s\n' "$body" "$seealso"
    } | lowdown -s -Tman --nroff-nolinks --parse-no-super \
        -M "title=$name" -M "section=$section" -M "date=$date" \
        -M "source=vaultboot $version" -M "volume=vaultboot manual" \
        -o "$outdir/$name.$section" - || die "lowdown failed on $src"
}

page vaultboot 8 docs/command-line.md \
    "fetch secrets from HashiCorp Vault at boot into root-only files, all or nothing" \
    "vaultboot.toml(5), systemd.service(5), sysexits(3); /usr/share/doc/vaultboot/README.md"
page vaultboot.toml 5 docs/configuration.md \
    "vaultboot's configuration file" \
    "vaultboot(8); /usr/share/doc/vaultboot/examples/config.toml, an annotated example" \
    "\`/etc/vaultboot/config.toml\`"
