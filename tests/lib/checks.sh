# shellcheck shell=bash
# One line per check and a closing "N passed, N failed", for the bash test scripts.
#   ok NAME | bad NAME [DETAIL] | check NAME CMD... | finish (prints the count, exits 0 or 1)

passed=0
failed=0

ok() {
    passed=$((passed + 1))
    printf 'ok    %s\n' "$1"
}

bad() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/      /'; fi
}

check() { # check NAME CMD...: passes when CMD exits 0; its output is shown when it fails
    local name=$1 o
    shift
    if o=$("$@" 2>&1); then ok "$name"; else bad "$name" "$o"; fi
}

finish() {
    printf '%s passed, %s failed\n' "$passed" "$failed"
    [ "$failed" -eq 0 ]
    exit
}
