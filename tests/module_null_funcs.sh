#!/usr/bin/env bash
# A module whose function list has NULL entries (tests/shim: P11SHIM_NULL_FUNCS)
# never crashes the process: a function hsmprov needs makes the load fail,
# naming the module and the function; a missing optional one fails only what
# needs it, with CKR_FUNCTION_NOT_SUPPORTED naming the function and module.
#
#   module_null_funcs.sh CASE
#     required     each function hsmprov cannot work without, NULL in turn
#     copy_object  no C_CopyObject: signing works (without key copies)
#     sign         no C_Sign: signing fails cleanly, naming C_Sign
#     login        no C_Login, on a token that needs a login
# shellcheck source=lib/testlib.sh
HP_PIN=hp-null-pin-2718 # a PIN that no count or timing in the output can contain
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup "pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
export P11SHIM_TARGET=$SOFTHSM2_MODULE
hp_openssl_argv
printf 'data\n' >"$T/msg"
openssl dgst -sha256 -binary -out "$T/msg.hash" "$T/msg"
key="pkcs11:token=demo;object=ec;type=private"

sign() {
    hp_timeout 60 openssl pkeyutl -sign -inkey "$key" -in "$T/msg.hash" -out "$T/sig" "$@"
}

case $case in
required)
    for fn in C_Initialize C_Finalize C_GetInfo C_GetSlotList C_GetSlotInfo C_GetTokenInfo \
        C_OpenSession C_CloseSession C_FindObjectsInit C_FindObjects C_FindObjectsFinal \
        C_GetAttributeValue; do
        hp_step "$fn missing: the module is refused at load, by name"
        P11SHIM_NULL_FUNCS=$fn hp_fails sign
        printf '%s\n' "$HP_OUT"
        hp_out_has "$fn" "$HSMPROV_SHIM" "function list"
        hp_no_pin
    done
    ;;
copy_object)
    hp_step "C_CopyObject missing: signatures use the token object itself"
    # A key used once signs with the token object anyway: no copy asked for.
    P11SHIM_NULL_FUNCS=C_CopyObject HSMPROV_DEBUG=1 hp_ok sign
    hp_out_has "C_Sign -> CKR_OK"
    hp_out_lacks "C_CopyObject -> CKR_OK"
    # A key used again asks for its copy, is refused, and signs on.
    P11SHIM_NULL_FUNCS=C_CopyObject HSMPROV_DEBUG=1 hp_ok \
        "$HSMPROV_BUILD_DIR/tests/thread_sign" -t 1 -n 4 threads "$key"
    hp_out_has "C_CopyObject -> CKR_FUNCTION_NOT_SUPPORTED" "C_Sign -> CKR_OK" "PASS"
    hp_out_lacks "C_CopyObject -> CKR_OK"
    hp_pubout "pkcs11:token=demo;object=ec;type=public" "$T/ec.pub"
    hp_ok openssl pkeyutl -verify -pubin -inkey "$T/ec.pub" -in "$T/msg.hash" -sigfile "$T/sig"
    hp_out_has "Signature Verified Successfully"
    hp_step "and a digest-sign of a file works too"
    P11SHIM_NULL_FUNCS=C_CopyObject hp_ok openssl dgst -sha256 -sign "$key" -out "$T/sig2" "$T/msg"
    hp_ok openssl dgst -sha256 -verify "$T/ec.pub" -signature "$T/sig2" "$T/msg"
    hp_out_has "Verified OK"
    ;;
sign)
    hp_step "C_Sign missing: signing fails, naming C_Sign and the module"
    P11SHIM_NULL_FUNCS=C_Sign hp_fails sign
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_Sign" "CKR_FUNCTION_NOT_SUPPORTED" "$HSMPROV_SHIM"
    hp_no_pin
    hp_step "the same through openssl dgst (digest-sign)"
    P11SHIM_NULL_FUNCS=C_Sign hp_fails openssl dgst -sha256 -sign "$key" -out "$T/sig2" "$T/msg"
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_Sign" "CKR_FUNCTION_NOT_SUPPORTED"
    hp_step "C_SignInit missing: fails naming C_SignInit"
    P11SHIM_NULL_FUNCS=C_SignInit hp_fails sign
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_SignInit" "CKR_FUNCTION_NOT_SUPPORTED" "$HSMPROV_SHIM"
    hp_step "the same module with its whole list signs (the failures were no accident)"
    hp_ok sign
    ;;
login)
    hp_step "C_Login missing on a token that needs a login: fails naming C_Login"
    P11SHIM_NULL_FUNCS=C_Login hp_fails sign
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_Login" "CKR_FUNCTION_NOT_SUPPORTED" "$HSMPROV_SHIM"
    hp_no_pin
    ;;
*) hp_fail "unknown case $case" ;;
esac
echo "PASS: module_null_funcs $case"
