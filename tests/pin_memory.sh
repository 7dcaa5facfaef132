#!/usr/bin/env bash
# Drives tests/pin_memory.c: a token with an EC key, a config whose PIN file
# holds the right PIN (good) or a wrong one (bad).
#
#   pin_memory.sh PROGRAM good|bad
HP_PIN=hp-pin-4711
WRONG_PIN=hp-wrong-0815
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

prog=${1:?program}
mode=${2:?mode}
hp_tmpdir
hp_make_token "$T"
hp_keygen EC:prime256v1 ec 02
hp_write_cnf "$T"
pin=$HP_PIN
if [ "$mode" = bad ]; then
    pin=$WRONG_PIN
    printf '%s\n' "$pin" >"$T/pin"
fi
hp_step "$(basename "$prog") $mode (RLIMIT_MEMLOCK: $(ulimit -l))"
hp_run "$prog" "$mode" "$(rev <<<"$pin")"
printf '%s\n' "$HP_OUT"
[ "$HP_RC" -eq 0 ] || hp_fail "exit status $HP_RC from: $HP_CMD"
hp_out_has "PASS"
hp_no_pin "$HP_PIN" "$WRONG_PIN"
