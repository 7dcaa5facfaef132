#!/usr/bin/env bash
# Drives the cipher tests (tests/cipher_aes.c, tests/cipher_rsa.c): a token
# with the keys of tests/lib/cipher_keys.sh, and a config that loads hsmprov
# over the fault-injection shim (HSMPROV_SHIM) in front of SoftHSM2, which
# checks that no two operations ever interleave on a session.
#
#   cipher.sh PROGRAM [DIRECTIVE...] -- [PROGRAM ARGS...]
#
# Each DIRECTIVE is a line for the hsmprov section ("pkcs11-pool-size = 2").
# The program gets HSMPROV_TEST_TMP=$T (where rsaimp.pem is).
# shellcheck source=lib/testlib.sh
HP_PIN=48151623 # a PIN that no count or length in the output can contain
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

prog=${1:?program}
shift
extra="pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    extra+=$'\n'"$1"
    shift
done
[ $# -gt 0 ] && shift

# shellcheck source=lib/cipher_keys.sh
. "$HSMPROV_TESTS_DIR/lib/cipher_keys.sh"

hp_tmpdir
hp_make_token "$T"
hp_cipher_keys
hp_write_cnf "$T" "$extra"
export P11SHIM_TARGET=$SOFTHSM2_MODULE P11SHIM_CHECK=1 P11SHIM_LOG=$T/shim.log
export HSMPROV_TEST_TMP=$T
if [ -n "${TSAN_OPTIONS:-}" ]; then
    # SoftHSM2 is not instrumented: tests/tsan.supp names what TSan cannot
    # see through there, and only that.
    export TSAN_OPTIONS="$TSAN_OPTIONS:suppressions=$HSMPROV_TESTS_DIR/tsan.supp"
fi

hp_step "$(basename "$prog") $* with:"
printf '    %s\n' "${extra//$'\n'/$'\n'    }"
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

# The shim's verdicts, written at C_Finalize and at exit by every process.
[ -s "$T/shim.log.verdict" ] || hp_fail "the shim wrote no verdict (was it used?)"
cat "$T/shim.log.verdict"
if grep -q 'FAILED' "$T/shim.log.verdict"; then
    hp_fail "the shim saw interleaved operations"
fi
