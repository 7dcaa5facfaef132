#!/usr/bin/env bash
# Drives the concurrency tests (tests/conc_*.c): a token with an RSA-2048 key
# "rsa" and an EC P-256 key "ec", and a config that loads hsmprov with the
# fault-injection shim (HSMPROV_SHIM, tests/shim) over SoftHSM2 as its module.
#
#   conc.sh PROGRAM [DIRECTIVE...] -- [PROGRAM ARGS...]
#
# Each DIRECTIVE is a line for the hsmprov section ("pkcs11-pool-size = 2");
# later lines override earlier ones, so "pkcs11-module-token-pin = 0000" gives
# a wrong PIN. The shim checks every session for interleaved operations
# (P11SHIM_CHECK) and logs every call; each process that used it writes a
# verdict, and any FAILED verdict (a fork child's too) fails the test.
# Set P11SHIM_DELAY_US / P11SHIM_FAIL in the environment to use them.
# HP_SHIM_AS_SOFTHSM2=1 loads a copy of the shim named as SoftHSM2's library,
# so that hsmprov treats it as the local software token it wraps.
# shellcheck source=lib/testlib.sh
HP_PIN=48151623 # a PIN that no count or timing in the output can contain
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

prog=${1:?program}
shift
hp_tmpdir
if [ -n "${HP_SHIM_AS_SOFTHSM2:-}" ]; then
    cp "${HSMPROV_SHIM:?}" "$T/libsofthsm2.shim.so"
    export HSMPROV_SHIM=$T/libsofthsm2.shim.so
fi
extra="pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    extra+=$'\n'"$1"
    shift
done
[ $# -gt 0 ] && shift

hp_make_token "$T"
hp_keygen rsa:2048 rsa 01
hp_keygen EC:prime256v1 ec 02
hp_write_cnf "$T" "$extra"

export P11SHIM_TARGET=$SOFTHSM2_MODULE P11SHIM_CHECK=1 P11SHIM_LOG=$T/shim.log
if [ -n "${TSAN_OPTIONS:-}" ]; then
    # SoftHSM2 is not instrumented: tests/tsan.supp names what TSan cannot
    # see through there, and only that.
    export TSAN_OPTIONS="$TSAN_OPTIONS:suppressions=$HSMPROV_TESTS_DIR/tsan.supp"
fi

hp_step "$(basename "$prog") $* with:"
while IFS= read -r line; do printf '    %s\n' "$line"; done <<<"$extra"
rc=0
"$prog" "$@" >"$T/out" 2>&1 || rc=$?
HP_OUT=$(cat "$T/out")
HP_CMD="$(basename "$prog") $*"
printf '%s\n' "$HP_OUT"
hp_check_sane
if grep -q 'ThreadSanitizer' <<<"$HP_OUT"; then
    hp_fail "ThreadSanitizer report in: $HP_CMD"
fi
[ "$rc" -eq 0 ] || hp_fail "exit status $rc from: $HP_CMD"
hp_out_has "PASS"
hp_out_lacks "FAIL"
hp_no_pin

# The shim's own verdicts, written at C_Finalize and at exit by every process.
[ -s "$T/shim.log.verdict" ] || hp_fail "the shim wrote no verdict (was it used?)"
cat "$T/shim.log.verdict"
if grep -q 'FAILED' "$T/shim.log.verdict"; then
    hp_fail "the shim saw interleaved operations"
fi
