#!/usr/bin/env bash
# Drives tests/thread_sign.c: makes the token and the config, then runs it.
#
#   thread_sign.sh PROGRAM MODE OBJECT [thread_sign options...]
#   e.g. thread_sign.sh build/tests/thread_sign threads ec -t 8 -n 100
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

prog=${1:?program}
mode=${2:?threads or dup}
obj=${3:?object}
shift 3

hp_setup
# Enough sessions for every thread, and a bound on waiting: a lost lease shows
# up as a timeout error instead of a hang. reuse: one session, so that a
# session kept by a failed call stalls the next signature.
extra="pkcs11-pool-wait-timeout-ms = 20000"
[ "$mode" = reuse ] && extra+=$'\n'"pkcs11-pool-size = 1"
hp_write_cnf "$T" "$extra"

hp_step "$prog $* $mode pkcs11:token=demo;object=$obj;type=private"
rc=0
"$prog" "$@" "$mode" "pkcs11:token=demo;object=$obj;type=private" >"$T/out" 2>&1 || rc=$?
HP_OUT=$(cat "$T/out")
HP_CMD="thread_sign $mode $obj"
printf '%s\n' "$HP_OUT"
hp_check_sane
[ "$rc" -eq 0 ] || hp_fail "thread_sign exit status $rc"
hp_no_pin
hp_out_has "PASS"
