#!/usr/bin/env bash
# Runs hsmbench against a SoftHSM2 token made for the run in a temporary
# directory, and writes OUTDIR/latest.txt (machine + table), OUTDIR/latest.csv
# and OUTDIR/latest.png (gnuplot).
#
#   bench/run.sh [--quick] [--remote] [OUTDIR] [-- HSMBENCH-OPTIONS...]
#
# --remote: the token is reached through p11-kit's RPC, as a remote HSM would
# be: `p11-kit server` serves the SoftHSM2 token on a unix socket and both the
# raw paths and hsmprov use p11-kit-client.so; the files are OUTDIR/remote.*.
#
# OUTDIR defaults to bench/results. Environment:
#   HSMBENCH        the program (default build-bench/bench/hsmbench)
#   HSMPROV_MODULE  hsmprov.so (default build-bench/provider/hsmprov.so)
#   SOFTHSM2_MODULE libsofthsm2.so (default /usr/lib/softhsm/libsofthsm2.so)
#   HSMBENCH_CNF    extra lines for hsmprov's openssl.cnf section, to measure
#                   a setting (e.g. "pkcs11-pool-size = 8")
#   P11KIT_CLIENT   p11-kit-client.so for --remote (default: found under
#                   /usr/lib*/ pkcs11/)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
: "${HSMBENCH:=$top/build-bench/bench/hsmbench}"
: "${HSMPROV_MODULE:=$top/build-bench/provider/hsmprov.so}"
export HSMPROV_MODULE

quick=() out=$here/results extra=() remote=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=(--quick) ;;
    --remote) remote=1 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1 ;;
    esac
    shift
done
[ -x "$HSMBENCH" ] || { echo "run.sh: $HSMBENCH not built" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

# shellcheck source=SCRIPTDIR/../tests/lib/token.sh
. "$top/tests/lib/token.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

hp_make_token "$tmp"
hp_add_keys
if ! hp_keygen EC:edwards25519 ed25519 05 2>/dev/null; then
    echo "run.sh: no Ed25519 key (pkcs11-tool or the token cannot make one)" >&2
fi
hp_p11tool --token-label "$HP_TOKEN_LABEL" --login --pin "$HP_PIN" \
    --keygen --key-type AES:32 --label aes --id 10 >/dev/null 2>&1

# The module every path of the run uses: SoftHSM2 itself, or p11-kit's RPC
# client talking to a `p11-kit server` that serves the same token.
module=$SOFTHSM2_MODULE name=latest cnf=${HSMBENCH_CNF:-}
if [ "$remote" = 1 ]; then
    : "${P11KIT_CLIENT:=$(ls /usr/lib/*/pkcs11/p11-kit-client.so /usr/lib/pkcs11/p11-kit-client.so 2>/dev/null | head -n1)}"
    [ -f "$P11KIT_CLIENT" ] || { echo "run.sh: no p11-kit-client.so (P11KIT_CLIENT)" >&2; exit 2; }
    sock=$tmp/p11-kit.sock
    p11-kit server -f -n "$sock" --provider "$SOFTHSM2_MODULE" "pkcs11:token=$HP_TOKEN_LABEL" \
        >"$tmp/server.log" 2>&1 &
    server_pid=$!
    trap 'kill "$server_pid" 2>/dev/null || :; wait "$server_pid" 2>/dev/null || :; rm -rf "$tmp"' EXIT
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
    [ -S "$sock" ] || { cat "$tmp/server.log" >&2; echo "run.sh: p11-kit server did not start" >&2; exit 2; }
    export P11_KIT_SERVER_ADDRESS=unix:path=$sock
    module=$P11KIT_CLIENT name=remote
    cnf="pkcs11-module-path = $module${cnf:+$'\n'$cnf}"
fi

# Does hsmprov load? Asked in a process of its own (hsmbench --probe, the same
# binary, so a sanitizer build needs no preloading): a provider that fails or
# crashes while loading must not take the raw and software figures with it.
# Then the run goes on without it, and says why.
unavailable=()
if [ ! -f "$HSMPROV_MODULE" ]; then
    unavailable=(--hsmprov-unavailable "$HSMPROV_MODULE does not exist")
else
    hp_write_cnf "$tmp" "$cnf"
    probe=$(timeout 60 "$HSMBENCH" --probe 2>/dev/null) && rc=0 || rc=$?
    if ! grep -qx 'hsmprov available' <<<"$probe"; then
        why=$(sed -n 's/^hsmprov unavailable: //p' <<<"$probe")
        unavailable=(--hsmprov-unavailable "${why:-probe exited with status $rc}")
        unset OPENSSL_CONF
    fi
fi
# For an ASan build of hsmbench (inert otherwise): SoftHSM2 2.6.1 leaks in
# C_SignInit, which bench/lsan.supp names; matching it needs full stacks through
# the uninstrumented libcrypto, hence the slow unwinder.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0
case ${LSAN_OPTIONS:-} in
*suppressions=*) ;;
*) export LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$here/lsan.supp:print_suppressions=0 ;;
esac

{
    echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "load:     $(cut -d" " -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"
    echo "machine:  $(nproc) CPUs, $(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //'), $(uname -sr)"
    echo "software: $(openssl version), SoftHSM $(softhsm2-util --version)"
    [ "$remote" = 0 ] || echo "remote:   $(p11-kit --version 2>/dev/null | head -n1 || echo p11-kit) server on a unix socket, $module"
    echo "command:  $(printf '%s ' bench/run.sh "${quick[@]}" $([ "$remote" = 0 ] || echo --remote) "${extra[@]}" | sed 's/ $//')"
    [ -z "${HSMBENCH_CNF:-}" ] || echo "hsmprov:  $HSMBENCH_CNF"
    echo
} >"$out/$name.txt"

"$HSMBENCH" --module "$module" --token "$HP_TOKEN_LABEL" --pin-file "$tmp/pin" \
    --csv "$out/$name.csv" "${unavailable[@]}" "${quick[@]}" "${extra[@]}" |
    tee -a "$out/$name.txt"

# Other work on the machine skews the figures: say how busy it was.
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) after the run" >>"$out/$name.txt"

if command -v gnuplot >/dev/null; then
    names=$(awk -F, 'NR > 1 && $1 != "pool" && $1 != "init" && $6 + 0 > 0 && !seen[$2]++ { printf "%s ", $2 }' "$out/$name.csv")
    title="hsmbench$([ "$remote" = 0 ] || echo " via p11-kit RPC"): $(nproc) CPUs, $(openssl version | cut -d' ' -f1-2), SoftHSM $(softhsm2-util --version)"
    gnuplot -e "csv='$out/$name.csv'; out='$out/$name.png'; names='$names'; ttl='$title'" \
        "$here/plot.gp"
    echo "results: $out/$name.txt $out/$name.csv $out/$name.png"
else
    echo "results: $out/$name.txt $out/$name.csv (no gnuplot: no plot)"
fi
