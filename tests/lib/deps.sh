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
# naming it. Everything installed or changed is printed. VAULTBOOT_DEPS_DRY_RUN=1 stops after
# printing the plan (ensure_required then returns 1): for timing the set-up on a new machine.

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

# The three questions below are asked of apt once for all packages (one apt-cache call each),
# not once per package: with some 200 packages to install on a new machine, a call per package
# took about 5 minutes before anything was installed.

# _deps_candidates PACKAGE...: "package source suite" per PACKAGE: the source package its
# candidate is built from (itself when apt names none) and the archive (suite codename) the
# candidate comes from (one apt-cache show, one apt-cache policy).
_deps_candidates() {
    local -A src=()
    local p s
    while read -r p s; do src[$p]=$s; done < <(LC_ALL=C apt-cache show --no-all-versions "$@" 2>/dev/null | awk '
        /^Package:/ { p = $2; s = $2 } /^Source:/ { s = $2 }
        /^$/ { if (p != "") print p, s; p = "" } END { if (p != "") print p, s }')
    while read -r p s; do
        printf '%s %s %s\n' "$p" "${src[$p]:-$p}" "$s"
    done < <(LC_ALL=C apt-cache policy "$@" 2>/dev/null | awk '
        /^[^ ].*:$/ { name = substr($0, 1, length($0) - 1); cand = ""; found = 0; next }
        /^  Candidate:/ { cand = $2; next }
        cand != "" && !found && ($1 == cand || ($1 == "***" && $2 == cand)) { found = 1; next }
        found == 1 && $1 ~ /^[0-9]+$/ && $2 ~ /:\/\// { split($3, s, "/"); print name, s[1]; found = 2 }')
}

# _deps_offered PACKAGE...: "package version" for every version any configured apt source
# offers of each PACKAGE (one apt-cache madison).
_deps_offered() {
    LC_ALL=C apt-cache madison "$@" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $1); gsub(/ /, "", $2); print $1, $2 }'
}

# _deps_foreign_siblings NEW_PACKAGE...: "pkg/suite version new_pkg source" for each installed
# package that shares a source with one of NEW_PACKAGE, is not itself among them, and whose
# installed version no configured source offers.
_deps_foreign_siblings() {
    local -A cand_src=() cand_suite=() source_suite=() installing=() offered=()
    local p src suite
    while read -r p src suite; do
        cand_src[$p]=$src
        cand_suite[$p]=$suite
    done < <(_deps_candidates "$@")
    # The first NEW_PACKAGE of a source (in argument order) names its suite.
    for p in "$@"; do
        installing[$p]=1
        src=${cand_src[$p]:-$p}
        suite=${cand_suite[$p]:-}
        [ -n "${source_suite[$src]:-}" ] && continue
        [ -n "$suite" ] && source_suite[$src]="$suite|$p"
    done
    local name src_name version status siblings=()
    while IFS=' ' read -r name src_name version status; do
        [ "$status" = installed ] || continue
        [ -n "${source_suite[$src_name]:-}" ] || continue
        [ -z "${installing[$name]:-}" ] || continue
        siblings+=("$name $src_name $version")
    done < <(dpkg-query -W -f='${Package} ${source:Package} ${Version} ${db:Status-Status}\n' 2>/dev/null)
    ((${#siblings[@]})) || return 0
    local e
    while read -r name version; do offered["$name $version"]=1; done < <(_deps_offered "${siblings[@]%% *}")
    for e in "${siblings[@]}"; do
        read -r name src_name version <<<"$e"
        [ -z "${offered[$name $version]:-}" ] || continue
        suite=${source_suite[$src_name]%%|*}
        printf '%s/%s %s %s %s\n' "$name" "$suite" "$version" "${source_suite[$src_name]#*|}" "$src_name"
    done
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

    if [ "${VAULTBOOT_DEPS_DRY_RUN:-}" = 1 ]; then
        _deps_say "$what: dry run (VAULTBOOT_DEPS_DRY_RUN=1): the plan above, nothing installed"
        return 1
    fi
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
