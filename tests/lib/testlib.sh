# shellcheck shell=bash
# Sourced by the shell tests. Each test makes its own token in its own
# temporary directory and removes it on exit:
#
#   hp_setup [EXTRA]         temp dir $T, token "demo" with the four keys of
#                            token.sh, $T/openssl.cnf (EXTRA lines go into the
#                            hsmprov section), OPENSSL_CONF exported
#                            A test run with HP_CNF_EXTRA set (token.sh) is
#                            the same test with that directive added, e.g.
#                            HP_CNF_EXTRA="pkcs11-digest-in-token = yes"
#   hp_step TEXT             say what the test does next
#   hp_ok CMD...             run CMD; fail (showing its output) unless it exits 0
#   hp_fails CMD...          run CMD; fail unless it exits non-zero without a
#                            crash (signal, abort, sanitizer report)
#   hp_out_has STR...        the last command's output contains every STR
#   hp_out_lacks STR...      ... and none of these
#   hp_no_pin [PIN...]       the last output does not contain the PIN(s)
#   hp_pubout URI FILE       export the public key of URI (a private key, or a
#                            public one: type=public) to a PEM file
#   hp_timeout SECS CMD...   `timeout SECS CMD` (with the sanitizer runtime for
#                            openssl, see below)
#   hp_start_server FILE ARGS...  (s_server stops after HP_SERVER_TIMEOUT s, 60)
#                            start `openssl s_server -accept 127.0.0.1:PORT ARGS`
#                            on a free port (sets $HP_PORT), output in FILE;
#                            killed on exit
#
# The output of the last hp_ok / hp_fails is in $HP_OUT (stdout and stderr
# together) and its exit status in $HP_RC.
#
# Sanitizer builds: when HSMPROV_SANITIZER_PRELOAD is set (tests/CMakeLists.txt
# sets it for HSMPROV_SANITIZE=address), `openssl` runs with that runtime
# preloaded, since /usr/bin/openssl is not instrumented but hsmprov.so is.
# Other tools (pkcs11-tool, softhsm2-util) run without it.

set -euo pipefail

HP_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/token.sh
. "$HP_LIB_DIR/token.sh"

: "${HSMPROV_MODULE:?HSMPROV_MODULE must name hsmprov.so (run the tests through ctest)}"
[ -f "$HSMPROV_MODULE" ] || { echo "FAIL: $HSMPROV_MODULE not built" >&2; exit 1; }

# Keep OpenSSL's own config and environment out of the tests.
unset PKCS11_PROVIDER_MODULE OPENSSL_MODULES HSMPROV_DEBUG || true
export LC_ALL=C

HP_PIDS=()
T=

hp_cleanup() {
    local pid
    for pid in "${HP_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$T" ] && [ -d "$T" ]; then
        if [ -n "${HSMPROV_KEEP_TMP:-}" ]; then
            echo "kept $T" >&2
        else
            rm -rf "$T"
        fi
    fi
}

hp_fail() {
    echo "FAIL: $*" >&2
    exit 1
}

hp_step() {
    echo "== $*"
}

hp_tmpdir() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/hsmprov-test.XXXXXX")
    trap hp_cleanup EXIT
}

hp_setup() {
    hp_tmpdir
    hp_make_token "$T"
    hp_add_keys
    hp_write_cnf "$T" "${1:-}"
}


openssl() {
    if [ -n "${HSMPROV_SANITIZER_PRELOAD:-}" ]; then
        LD_PRELOAD="$HSMPROV_SANITIZER_PRELOAD${LD_PRELOAD:+:$LD_PRELOAD}" command openssl "$@"
    else
        command openssl "$@"
    fi
}

# The argv prefix that runs openssl (with the sanitizer runtime if needed).
hp_openssl_argv() {
    if [ -n "${HSMPROV_SANITIZER_PRELOAD:-}" ]; then
        HP_OPENSSL=(env "LD_PRELOAD=$HSMPROV_SANITIZER_PRELOAD${LD_PRELOAD:+:$LD_PRELOAD}" openssl)
    else
        HP_OPENSSL=(openssl)
    fi
}

hp_timeout() {
    local secs=$1
    shift
    if [ "$1" = openssl ]; then
        hp_openssl_argv
        shift
        timeout "$secs" "${HP_OPENSSL[@]}" "$@"
    else
        timeout "$secs" "$@"
    fi
}

# A sanitizer report or a crash message anywhere in the output fails the test,
# whatever the exit status: a sanitizer's exit status alone can look like an
# ordinary error exit.
hp_check_sane() {
    if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer|Segmentation fault|Aborted|core dumped' <<<"$HP_OUT"; then
        printf '%s\n' "$HP_OUT" >&2
        hp_fail "sanitizer report or crash in: $HP_CMD"
    fi
}

hp_run() {
    HP_CMD="$*"
    HP_RC=0
    HP_OUT=$("$@" 2>&1) || HP_RC=$?
    hp_check_sane
}

hp_ok() {
    hp_run "$@"
    if [ "$HP_RC" -ne 0 ]; then
        printf '%s\n' "$HP_OUT" >&2
        hp_fail "exit status $HP_RC from: $HP_CMD"
    fi
}

hp_fails() {
    hp_run "$@"
    if [ "$HP_RC" -eq 0 ]; then
        printf '%s\n' "$HP_OUT" >&2
        hp_fail "expected a failure, got exit status 0 from: $HP_CMD"
    fi
    if [ "$HP_RC" -ge 124 ]; then
        printf '%s\n' "$HP_OUT" >&2
        hp_fail "crash, signal or timeout (exit status $HP_RC) from: $HP_CMD"
    fi
}

hp_out_has() {
    local s
    for s in "$@"; do
        if ! grep -qF -- "$s" <<<"$HP_OUT"; then
            printf '%s\n' "$HP_OUT" >&2
            hp_fail "output of '$HP_CMD' lacks '$s'"
        fi
    done
}

hp_out_lacks() {
    local s
    for s in "$@"; do
        if grep -qF -- "$s" <<<"$HP_OUT"; then
            printf '%s\n' "$HP_OUT" >&2
            hp_fail "output of '$HP_CMD' contains '$s'"
        fi
    done
}

hp_no_pin() {
    local pin
    for pin in "${@:-$HP_PIN}"; do
        if grep -qF -- "$pin" <<<"$HP_OUT"; then
            printf '%s\n' "$HP_OUT" >&2
            hp_fail "the PIN appears in the output of: $HP_CMD"
        fi
    done
}

hp_pubout() {
    local pubin=()
    case $1 in *type=public*) pubin=(-pubin) ;; esac
    hp_ok openssl pkey "${pubin[@]}" -in "$1" -pubout -out "$2"
    grep -q 'BEGIN PUBLIC KEY' "$2" || hp_fail "no public key from $1"
}

# Ports are picked at random and taken only if s_server binds them: the
# server itself is the test of whether a port is free, so there is no race
# between choosing a port and using it.
hp_start_server() {
    local out=$1 tries port pid
    shift
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 40000))
        : >"$out"
        hp_openssl_argv
        # A simple command in the background: $! is timeout itself, which
        # passes our kill on to s_server.
        # Generous limits: an instrumented openssl on a loaded machine takes
        # tens of seconds to start (the loop ends as soon as it is ready).
        timeout "${HP_SERVER_TIMEOUT:-300}" "${HP_OPENSSL[@]}" s_server -accept "127.0.0.1:$port" "$@" >"$out" 2>&1 </dev/null &
        pid=$!
        # Up to 60 s: an instrumented openssl on a loaded machine (NSS, a
        # remote token) can take tens of seconds to start; a started server
        # ends the wait at once.
        for _ in $(seq 600); do
            if grep -q '^ACCEPT' "$out"; then
                HP_PIDS+=("$pid")
                export HP_PORT=$port
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if ! grep -qiE 'Address already in use|bind' "$out"; then
            cat "$out" >&2
            hp_fail "s_server did not start (try $tries, port $port)"
        fi
    done
    hp_fail "no free port found for s_server"
}
