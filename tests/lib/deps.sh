# shellcheck shell=bash
# Installing what a test stage needs, on a Debian machine whose image may carry packages
# from a suite that is not in its apt sources (today's image: qemu-utils 10 from
# bookworm-backports, which Breaks Debian 12's qemu-system-common 7.2).
#
#   source tests/lib/deps.sh
#   require PACKAGE COMMAND [ARG...]   # PACKAGE provides a COMMAND that must run (exit 0)
#   ensure_required "the boot test" || exit 1
#
# A requirement counts as met when its command runs, not when a package name is installed.
# Only packages whose command fails are installed. Before installing, every installed package
# built from the same source as something apt would install, whose installed version no
# configured source offers (it came from another suite), is aligned to the version of the suite
# that the new packages come from: with qemu that is a downgrade of qemu-utils, said out loud.
# apt never removes a package here (--no-remove); a conflict it cannot solve ends in one line
# naming it. Everything installed or changed is printed.

_deps_pkgs=()
_deps_cmds=()

require() {
    local pkg=$1
    shift
    _deps_pkgs+=("$pkg")
    _deps_cmds+=("$(printf '%q ' "$@")")
}

_deps_say() { printf 'deps: %s\n' "$*"; }

# The requirements whose command does not run now, as package names (each once).
_deps_unmet() {
    local i pkg seen=" "
    for i in "${!_deps_pkgs[@]}"; do
        pkg=${_deps_pkgs[i]}
        if ! eval "${_deps_cmds[i]}" </dev/null >/dev/null 2>&1; then
            case $seen in *" $pkg "*) ;; *) seen+="$pkg " && printf '%s\n' "$pkg" ;; esac
        fi
    done
}

# _deps_simulate ARGS...: apt-get's plan (Inst/Remv lines) for installing ARGS; its full output on failure.
_deps_simulate() {
    LC_ALL=C apt-get -s -q -o DPkg::Lock::Timeout=300 install --no-install-recommends --allow-downgrades "$@" 2>&1
}

# _deps_source PACKAGE: the source package the candidate of PACKAGE is built from.
_deps_source() {
    LC_ALL=C apt-cache show --no-all-versions "$1" 2>/dev/null |
        awk -v p="$1" '/^Source:/ { print $2; found = 1; exit } /^$/ { exit } END { if (!found) print p }'
}

# _deps_suite PACKAGE: the archive (suite codename) that PACKAGE's candidate comes from.
_deps_suite() {
    LC_ALL=C apt-cache policy "$1" 2>/dev/null | awk '
        /^  Candidate:/ { cand = $2 }
        cand != "" && !found && ($1 == cand || ($1 == "***" && $2 == cand)) { found = 1; next }
        found == 1 && $1 ~ /^[0-9]+$/ && $2 ~ /:\/\// { split($3, s, "/"); print s[1]; exit }'
}

# _deps_offered PACKAGE VERSION: does any configured apt source offer this version?
_deps_offered() {
    LC_ALL=C apt-cache madison "$1" 2>/dev/null | awk -F'|' -v v="$2" '
        { gsub(/ /, "", $2) } $2 == v { found = 1 } END { exit !found }'
}

# _deps_foreign_siblings NEW_PACKAGE...: "pkg/suite" for each installed package that shares a
# source with one of NEW_PACKAGE, is not itself among them, and whose installed version no
# configured source offers. Also prints a line per package on fd 3 for the announcement.
_deps_foreign_siblings() {
    local -A source_suite=()
    local p src suite
    for p in "$@"; do
        src=$(_deps_source "$p")
        [ -n "${source_suite[$src]:-}" ] && continue
        suite=$(_deps_suite "$p")
        [ -n "$suite" ] && source_suite[$src]="$suite|$p"
    done
    local -A installing=()
    for p in "$@"; do installing[$p]=1; done
    local name src_name version status
    while IFS=' ' read -r name src_name version status; do
        [ "$status" = installed ] || continue
        [ -n "${source_suite[$src_name]:-}" ] || continue
        [ -z "${installing[$name]:-}" ] || continue
        _deps_offered "$name" "$version" && continue
        suite=${source_suite[$src_name]%%|*}
        printf '%s/%s %s %s %s\n' "$name" "$suite" "$version" "${source_suite[$src_name]#*|}" "$src_name"
    done < <(dpkg-query -W -f='${Package} ${source:Package} ${Version} ${db:Status-Status}\n' 2>/dev/null)
}

# ensure_required WHAT: install what the requirements need; 0 when every command then runs.
ensure_required() {
    local what=$1
    local missing=()
    mapfile -t missing < <(_deps_unmet)
    if ((${#missing[@]} == 0)); then
        _deps_say "$what: every tool it needs is present and runs; nothing installed"
        return 0
    fi
    _deps_say "$what: to install: ${missing[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "deps: cannot install ${missing[*]}: no apt-get on this machine" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: cannot install ${missing[*]}: not root (run as root, or: sudo apt-get install ${missing[*]})" >&2
        return 1
    fi
    if ! LC_ALL=C apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1; then
        echo "deps: apt-get update failed; installing from the lists this machine has"
    fi

    # What apt would install (dependencies included), so that siblings of those are seen too.
    local plan new=()
    plan=$(_deps_simulate "${missing[@]}")
    mapfile -t new < <(printf '%s\n' "$plan" | awk '$1 == "Inst" { print $2 }')
    ((${#new[@]})) || new=("${missing[@]}")

    local targets=() target installed because src
    while read -r target installed because src; do
        [ -n "$target" ] || continue
        if apt-mark showhold 2>/dev/null | grep -qx "${target%/*}"; then
            echo "deps: cannot install ${missing[*]}: ${target%/*} $installed is held (apt-mark hold) and $because (source $src) needs the ${target#*/} build beside it; unhold it or install a matching $because" >&2
            return 1
        fi
        targets+=("$target")
        _deps_say "will change ${target%/*} $installed -> the ${target#*/} version: it was installed from a suite this machine has no apt source for, and $because (source $src) must match it"
    done < <(_deps_foreign_siblings "${missing[@]}" "${new[@]}")

    plan=$(_deps_simulate "${missing[@]}" "${targets[@]}")
    local conflict
    conflict=$(printf '%s\n' "$plan" | grep -E ' : (Breaks|Depends|Conflicts|PreDepends): |^E: ' | head -n 1)
    if [ -n "$conflict" ]; then
        echo "deps: cannot install ${missing[*]} ${targets[*]}: apt: $(printf '%s' "$conflict" | sed 's/  */ /g')" >&2
        return 1
    fi
    local removals
    removals=$(printf '%s\n' "$plan" | awk '$1 == "Remv" { printf "%s%s %s", sep, $2, $3; sep = ", " }')
    if [ -n "$removals" ]; then
        echo "deps: cannot install ${missing[*]}: apt would remove $removals (refused: a test never removes a package)" >&2
        return 1
    fi
    printf '%s\n' "$plan" | awk '
        $1 == "Inst" && $3 ~ /^\[/ { old = substr($3, 2, length($3) - 2); new = substr($4, 2)
            cmd = "dpkg --compare-versions \"" new "\" lt \"" old "\""
            verb = (system(cmd) == 0) ? "DOWNGRADE" : "upgrade"
            printf "deps: %s %s %s -> %s\n", verb, $2, old, new; next }
        $1 == "Inst" { installs = installs " " $2 "=" substr($3, 2); n++ }
        END { if (n) printf "deps: install %d new packages:%s\n", n, installs }'

    local log
    log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends \
        --allow-downgrades --no-remove "${missing[@]}" "${targets[@]}" >"$log" 2>&1; then
        conflict=$(grep -E ' : (Breaks|Depends|Conflicts|PreDepends): |^E: ' "$log" | head -n 1)
        echo "deps: apt-get install ${missing[*]} ${targets[*]} failed: ${conflict:-$(tail -n 1 "$log")}" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"

    local still=()
    mapfile -t still < <(_deps_unmet)
    if ((${#still[@]})); then
        local i
        for i in "${!_deps_pkgs[@]}"; do
            case " ${still[*]} " in
                *" ${_deps_pkgs[i]} "*) echo "deps: ${_deps_pkgs[i]} is installed but does not run: ${_deps_cmds[i]}" >&2 ;;
            esac
        done
        return 1
    fi
    _deps_say "$what: installed ${missing[*]}${targets[*]:+ and changed ${targets[*]}}; every tool runs"
}
