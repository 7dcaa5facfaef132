#!/usr/bin/env bash
# `openssl list -providers` shows hsmprov, active, with its version, beside
# the default provider, and its signature algorithms are registered at init.
#
#   cli_providers.sh list    with the default load behaviour (late)
#   cli_providers.sh early   pkcs11-module-load-behavior = early: the module
#                            (SoftHSM2, itself an OpenSSL user) is loaded and
#                            initialised while OpenSSL reads its config; no
#                            deadlock, no recursion (DESIGN §2.11)
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

mode=${1:-list}
hp_setup
if [ "$mode" = early ]; then
    hp_write_cnf "$T" "pkcs11-module-load-behavior = early"
fi

hp_step "openssl list -providers ($mode)"
hp_ok hp_timeout 30 openssl list -providers
printf '%s\n' "$HP_OUT"
hp_out_has "hsmprov" "default"
# The hsmprov block: its name line, then version and status.
block=$(awk '/^  hsmprov$/{p=1; next} /^  [^ ]/{p=0} p' <<<"$HP_OUT")
[ -n "$block" ] || hp_fail "no hsmprov block in the provider list"
grep -qE 'version: [0-9]+\.[0-9]+' <<<"$block" || hp_fail "hsmprov lists no version: $block"
if [ -n "${HSMPROV_VERSION:-}" ]; then
    grep -qF "version: $HSMPROV_VERSION" <<<"$block" ||
        hp_fail "hsmprov version is not the project's $HSMPROV_VERSION: $block"
fi
grep -qF "status: active" <<<"$block" || hp_fail "hsmprov is not active: $block"

if [ "$mode" = list ]; then
    hp_step "late loading: listing the providers does not touch the token"
    HSMPROV_DEBUG=1 hp_ok hp_timeout 30 openssl list -providers
    hp_out_lacks "C_Initialize" "C_OpenSession"
fi

hp_step "the signature algorithms are registered at provider init"
hp_ok hp_timeout 30 openssl list -signature-algorithms
grep -q '@ hsmprov' <<<"$HP_OUT" || {
    printf '%s\n' "$HP_OUT" >&2
    hp_fail "no signature algorithm from hsmprov listed"
}

hp_step "a token key works ($mode)"
hp_ok hp_timeout 30 openssl pkey -in "pkcs11:token=demo;object=ec;type=private" -pubout
hp_out_has "BEGIN PUBLIC KEY"

echo "PASS: cli_providers $mode"
