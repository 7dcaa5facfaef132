#!/usr/bin/env bash
# A CKR_GENERAL_ERROR from C_Login is a passing fault (SoftHSM2 answers it
# when it reads its token file while another process rewrites it, as when a
# TLS server's freshly forked workers log in at once): the login is retried
# up to three times after growing pauses (20, 60, 180 ms) and the signature
# is made. Four in a row are the answer, reported with the code; the
# wrong-PIN rule is untouched (one try only).
#
# Token discovery (C_GetSlotInfo, C_GetTokenInfo) gets the same single retry,
# and a slot that still fails is reported with the module's code, not as a
# token that is not present.
#
# CKR_USER_PIN_NOT_INITIALIZED from C_Login, for a token whose user PIN is
# set, is the same race seen from the login, and gets the same retries.
#
#   login_general_error.sh once|always|pin|discovery_once|discovery_always|
#                          discovery_slot_invalid_once|pin_missing_once|
#                          pin_missing_always
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

hp_setup "pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
export P11SHIM_TARGET=$SOFTHSM2_MODULE
export P11SHIM_LOG=$T/calls.log
key="pkcs11:token=demo;object=ec;type=private"
printf 'data to sign\n' >"$T/data"
hp_pubout "pkcs11:token=demo;object=ec;type=public" "$T/pub.pem"

# CKR_USER_PIN_NOT_INITIALIZED: SoftHSM2 reading its token file while
# another process's login rewrites it can find no user PIN there, for a
# token whose user PIN is set. The same passing fault, the same retries.
rv=CKR_GENERAL_ERROR
case $1 in pin_missing_*) rv=CKR_USER_PIN_NOT_INITIALIZED ;; esac

case ${1:?case} in
once | pin_missing_once)
    export P11SHIM_FAIL=C_Login:1:$rv
    hp_ok openssl pkeyutl -sign -inkey "$key" -rawin -digest sha256 -in "$T/data" -out "$T/sig"
    OPENSSL_CONF=/dev/null hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -rawin \
        -digest sha256 -in "$T/data" -sigfile "$T/sig"
    n=$(grep -c '^C_Login ' "$T/calls.log")
    [ "$n" -eq 2 ] || hp_fail "expected 2 C_Login calls (one failed, one retried), saw $n"
    ;;
always | pin_missing_always)
    export P11SHIM_FAIL=C_Login:0:$rv
    hp_fails openssl pkeyutl -sign -inkey "$key" -rawin -digest sha256 -in "$T/data" -out "$T/sig"
    hp_out_has "C_Login failed with $rv"
    hp_no_pin
    n=$(grep -c '^C_Login ' "$T/calls.log")
    [ "$n" -eq 4 ] || hp_fail "expected the login tried 4 times, saw $n"
    ;;
pin)
    export P11SHIM_FAIL=C_Login:1:CKR_PIN_INCORRECT
    hp_fails openssl pkeyutl -sign -inkey "$key" -rawin -digest sha256 -in "$T/data" -out "$T/sig"
    n=$(grep -c '^C_Login ' "$T/calls.log")
    [ "$n" -eq 1 ] || hp_fail "a rejected PIN offered $n times"
    ;;
discovery_once | discovery_slot_invalid_once)
    # A passing fault, or a slot listed a moment ago and then said invalid:
    # the slot is asked again and the signature is made.
    rv=CKR_GENERAL_ERROR
    [ "$1" = discovery_once ] || rv=CKR_SLOT_ID_INVALID
    export P11SHIM_FAIL=C_GetTokenInfo:1:$rv
    hp_ok openssl pkeyutl -sign -inkey "$key" -rawin -digest sha256 -in "$T/data" -out "$T/sig"
    OPENSSL_CONF=/dev/null hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -rawin \
        -digest sha256 -in "$T/data" -sigfile "$T/sig"
    grep -q "^C_GetTokenInfo .*$rv injected" "$T/calls.log" || hp_fail "no $rv was injected"
    ;;
discovery_always)
    export P11SHIM_FAIL=C_GetTokenInfo:0:CKR_GENERAL_ERROR
    hp_fails openssl pkeyutl -sign -inkey "$key" -rawin -digest sha256 -in "$T/data" -out "$T/sig"
    hp_out_has "C_GetTokenInfo failed with CKR_GENERAL_ERROR" "could not describe its token (asked twice)"
    hp_out_lacks "CKR_TOKEN_NOT_PRESENT"
    hp_fails openssl storeutl "pkcs11:token=demo"
    hp_out_has "C_GetTokenInfo failed with CKR_GENERAL_ERROR"
    ;;
esac
echo "PASS: login_general_error $1"
