#!/usr/bin/env bash
# exit() while other threads sign ends the process cleanly (DESIGN §6): runs
# tests/exit_sign.c RUNS times, exit() at a different moment each time, and
# requires exit status 0 from every run: no signal, no sanitizer report.
#
#   exit_sign.sh PROGRAM CASE [RUNS]
#     token   4 threads with the token's EC P-256 and RSA-2048 keys
#     pem     4 threads with software EC and RSA keys from PEM files
#             (hsmprov loaded, its module initialised, but not signing)
#     mixed   both kinds of keys at once
# OpenSSL's own exit handler is off in these runs (exit_sign -a): it frees
# libcrypto under any thread that is inside OpenSSL at that moment, with or
# without hsmprov loaded (software keys alone: 7 of 30 runs crash there), so
# with it on no run count could be required. What is left is what hsmprov
# and its module do at exit, which must never crash.
# shellcheck source=lib/testlib.sh
HP_PIN=hp-exit-pin-5150 # a PIN that no count or timing in the output can contain
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

prog=${1:?program}
case=${2:?case}
runs=${3:-20}

# The module is initialised at provider load, as a server configures it, so
# that exit() finds it initialised in every case.
hp_setup "pkcs11-module-load-behavior = early"
if [ -n "${TSAN_OPTIONS:-}" ]; then
    export TSAN_OPTIONS="$TSAN_OPTIONS:suppressions=$HSMPROV_TESTS_DIR/tsan.supp"
fi

ec="pkcs11:token=demo;object=ec;type=private"
rsa="pkcs11:token=demo;object=rsa;type=private"
case $case in
token) keys=("$ec" "$rsa") ;;
pem | mixed)
    hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ec.pem"
    hp_ok openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rsa.pem"
    keys=("$T/ec.pem" "$T/rsa.pem")
    [ "$case" = mixed ] && keys+=("$ec" "$rsa")
    ;;
*) hp_fail "unknown case $case" ;;
esac

opts=(-a)
if [ -n "${TSAN_OPTIONS:-}" ]; then
    # Nothing tears the provider down without OpenSSL's exit handler, so its
    # finished early-load thread is never joined: not a leak of ours.
    export TSAN_OPTIONS="$TSAN_OPTIONS:report_thread_leaks=0"
fi
bad=0
for ((i = 0; i < runs; i++)); do
    # 0 to about 100 ms after every thread signed once, spread over the runs;
    # the odd microseconds vary where in a signature the exit lands.
    delay=$((i * 5000 + (i * 7919) % 1000))
    HP_CMD="$(basename "$prog") -t 4 -d $delay ${opts[*]} ${keys[*]}"
    rc=0
    out=$(timeout 120 "$prog" -t 4 -d "$delay" "${opts[@]}" "${keys[@]}" 2>&1) || rc=$?
    HP_OUT=$out
    verdict="exit status $rc"
    if [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
        verdict="killed by signal $((rc - 128))"
    elif [ "$rc" -eq 124 ]; then
        verdict="timed out (a hang at exit)"
    fi
    if [ "$rc" -ne 0 ] ||
        grep -qE 'Sanitizer|runtime error:|FAIL|Segmentation fault|Aborted' <<<"$out"; then
        bad=$((bad + 1))
        echo "run $i: delay $delay us: $verdict: FAILED"
        printf '%s\n' "$out" | head -40
    else
        echo "run $i: delay $delay us: $verdict: $(head -1 <<<"$out")"
    fi
    hp_no_pin
done
echo "$bad of $runs runs did not end cleanly"
[ "$bad" -eq 0 ] || hp_fail "$bad of $runs runs of exit() while signing did not end cleanly"
echo "PASS"
