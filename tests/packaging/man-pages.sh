#!/usr/bin/env bash
# Checks the man pages vaultboot(8) and vaultboot.toml(5) against the docs they are made from:
#   - each renders with `MANWIDTH=80 man --warnings -l` with nothing at all on stderr
#   - each has its whatis entry (lexgrog, as mandb and lintian read it)
#   - every row of every table in the source page (docs/command-line.md, docs/configuration.md:
#     each configuration key, template, command, option, exit status, signal, file) is a term
#     of the same section of the rendered page: a key missing from the page fails here
#   - vaultboot(8) has the sections NAME, SYNOPSIS, COMMANDS, OPTIONS, EXIT STATUS, SIGNALS,
#     FILES, EXAMPLES
# Prints one line per check and "N passed, M failed".
#
# usage: tests/packaging/man-pages.sh [DIR]
#   DIR  holds vaultboot.8 and vaultboot.toml.5 (each may be .gz), e.g. extracted from a
#        package; without DIR, dist/man.sh makes them here first (needs lowdown)
set -u
export LC_ALL=C.UTF-8

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/lib/checks.sh
. "$repo/tests/lib/checks.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/vaultboot-man.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

dir=${1:-}
if [ -z "$dir" ]; then
    dir=$work/made
    mkdir -p "$dir"
    if o=$("$repo/dist/man.sh" 0.0.0 "$dir" 2>&1); then
        ok "dist/man.sh made the pages"
    else
        bad "dist/man.sh made the pages" "$o"
        finish
    fi
fi

# page_file NAME: the page's file in DIR (plain or .gz), or nothing.
page_file() {
    if [ -f "$dir/$1" ]; then echo "$dir/$1"; elif [ -f "$dir/$1.gz" ]; then echo "$dir/$1.gz"; fi
}

# sections_and_terms RENDERED: "section<TAB>term" for every term of a definition list (a line
# at the body's indent whose next non-empty line is indented deeper), section in lower case.
sections_and_terms() {
    awk '
        NR == 1 { next }
        /^[^ ]/ { section = tolower($0); next }
        { sub(/[ \t]+$/, "") }
        $0 == "" { next }
        pending != "" && /^            / { print section "\t" pending }
        { pending = "" }
        /^       [^ ]/ { pending = substr($0, 8) }
    ' "$1"
}

# table_rows DOC: "section<TAB>first cell" for every table row of DOC, under its ## heading,
# without backquotes, in lower case.
table_rows() {
    awk '
        /^```/ { fenced = !fenced }
        fenced { next }
        /^## / { section = tolower(substr($0, 4)); gsub(/`/, "", section); table = 0; next }
        /^\|/ {
            if (table++ < 2) next
            cell = $0
            sub(/^\| */, "", cell)
            sub(/ +\|.*$/, "", cell)
            gsub(/`/, "", cell)
            print section "\t" tolower(cell)
            next
        }
        { table = 0 }
    ' "$1"
}

# check_page NAME SOURCE_DOC: the checks of one page.
check_page() {
    local name=$1 doc=$2 file err rendered
    file=$(page_file "$name")
    if [ -z "$file" ]; then
        bad "$name: present in $dir"
        return
    fi
    rendered=$work/$name.txt
    err=$(MANWIDTH=80 man --warnings -l "$file" 2>&1 >"$rendered")
    local rc=$? lines
    lines=$(wc -l <"$rendered")
    if [ "$rc" -eq 0 ] && [ -z "$err" ] && [ "$lines" -gt 20 ]; then
        ok "$name: MANWIDTH=80 man --warnings -l: $lines lines, nothing on stderr"
    else
        bad "$name: MANWIDTH=80 man --warnings -l without a warning" "exit $rc, $lines lines: $err"
    fi
    local whatis
    whatis=$(lexgrog "$file" 2>&1)
    case $whatis in
        *": \"${name%.*} - "*) ok "$name: whatis entry: ${whatis#*: }" ;;
        *) bad "$name: whatis entry (lexgrog)" "$whatis" ;;
    esac
    # Case-insensitive: the pages' section headings are upper case.
    MANWIDTH=200 man -l "$file" 2>/dev/null | sed 's/\xe2\x80\x90/-/g' >"$work/$name.wide"
    sections_and_terms "$work/$name.wide" | tr '[:upper:]' '[:lower:]' | sort -u >"$work/$name.terms"
    table_rows "$repo/$doc" | sort -u >"$work/$name.rows"
    local missing count
    missing=$(comm -23 "$work/$name.rows" "$work/$name.terms")
    count=$(wc -l <"$work/$name.rows")
    if [ "$count" -gt 0 ] && [ -z "$missing" ]; then
        ok "$name: every one of the $count table rows of $doc is a term of its section"
    else
        bad "$name: every table row of $doc is a term of its section" \
            "$count rows; not in the page (section, term):"$'\n'"$missing"
    fi
}

check_page vaultboot.toml.5 docs/configuration.md
check_page vaultboot.8 docs/command-line.md

if [ -f "$work/vaultboot.8.wide" ]; then
    missing=""
    for s in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS "EXIT STATUS" SIGNALS FILES ENVIRONMENT EXAMPLES "SEE ALSO"; do
        grep -qx "$s" "$work/vaultboot.8.wide" || missing+="$s; "
    done
    if [ -z "$missing" ]; then ok "vaultboot.8: its sections"; else bad "vaultboot.8: its sections" "missing: $missing"; fi
fi

finish
