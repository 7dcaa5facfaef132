#!/usr/bin/env bash
# Bad input gives a clear error and a non-zero exit, never a crash, and the
# PIN is never printed. Each case checks the message names the PKCS#11 call,
# the CKR_* code and the object or URI at fault.
#
#   bad_input.sh CASE
#     wrong_pin            config PIN file holds a wrong PIN
#     wrong_pin_uri        ;pin-value= with a wrong PIN
#     unknown_token        pkcs11:token=nope;object=ec
#     unknown_object       pkcs11:token=demo;object=nope;type=private
#     malformed_uri        pkcs11:token=demo;object=%zz and pkcs11:id=%
#     wrong_type_cert      signing with ...;object=ec;type=cert
#     wrong_type_public    signing with ...;object=ec;type=public
#     missing_module       pkcs11-module-path names a file that does not exist
#     env_module_override  PKCS11_PROVIDER_MODULE (missing file) beats the config
#     not_a_module         pkcs11-module-path names a library that is no PKCS#11 module
#     mechanism_missing    RSA X9.31 padding, which SoftHSM2 does not have
#     private_export_encrypted_refused_with_message
#                          openssl pkey -out -aes256 of a token private key:
#                          refused with a message that the key stays in the
#                          token and its key file (the URI) is not encrypted;
#                          -pubout still works
#
# The right and the wrong PIN are distinctive strings, so that a PIN in the
# output cannot be mistaken for a hex dump or a line number.
HP_PIN=hp-pin-4711
WRONG_PIN=hp-wrong-0815
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup
hp_openssl_argv
printf 'data\n' >"$T/msg"
openssl dgst -sha256 -binary -out "$T/msg.hash" "$T/msg"

# sign URI [extra args]: try to sign; must fail cleanly.
sign_fails() {
    local uri=$1
    shift
    hp_fails hp_timeout 60 openssl pkeyutl -sign -inkey "$uri" -in "$T/msg.hash" -out "$T/sig" "$@"
    printf '%s\n' "$HP_OUT"
    hp_no_pin "$HP_PIN" "$WRONG_PIN"
}

case $case in
wrong_pin)
    hp_step "config PIN file with a wrong PIN"
    printf '%s' "$WRONG_PIN" >"$T/pin"
    sign_fails "pkcs11:token=demo;object=ec;type=private"
    hp_out_has "C_Login" "CKR_PIN_INCORRECT" "demo"
    hp_step "the wrong PIN is tried once, not repeated (HSMPROV_DEBUG=1 log)"
    HSMPROV_DEBUG=1 sign_fails "pkcs11:token=demo;object=ec;type=private"
    # the debug log has one line per call: "hsmprov: C_Login -> CKR_..."
    n=$(grep -c '^hsmprov: C_Login' <<<"$HP_OUT" || true)
    [ "$n" -eq 1 ] || hp_fail "C_Login called $n times with a wrong PIN"
    hp_step "the token still accepts the right PIN afterwards (not locked)"
    printf '%s' "$HP_PIN" >"$T/pin"
    hp_ok openssl pkeyutl -sign -inkey "pkcs11:token=demo;object=ec;type=private" \
        -in "$T/msg.hash" -out "$T/sig"
    ;;
wrong_pin_uri)
    HP_CNF_PIN="" hp_write_cnf "$T"
    hp_step "pin-value= with a wrong PIN"
    hp_fails hp_timeout 60 openssl pkeyutl -sign \
        -inkey "pkcs11:token=demo;object=ec;type=private;pin-value=$WRONG_PIN" \
        -in "$T/msg.hash" -out "$T/sig"
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_Login" "CKR_PIN_INCORRECT" "demo"
    # The URI is on the command line and openssl's own "Could not read ...
    # from URI" line repeats it; the provider's error lines must not.
    hp_no_pin "$HP_PIN"
    if grep -v '^Could not' <<<"$HP_OUT" | grep -qF "$WRONG_PIN"; then
        hp_fail "the provider printed the URI's pin-value"
    fi
    ;;
unknown_token)
    hp_step "pkcs11:token=nope;object=ec"
    sign_fails "pkcs11:token=nope;object=ec"
    hp_out_has "CKR_TOKEN_NOT_PRESENT" "nope"
    ;;
unknown_object)
    hp_step "pkcs11:token=demo;object=nope;type=private"
    sign_fails "pkcs11:token=demo;object=nope;type=private"
    hp_out_has "C_FindObjects" "object=nope"
    ;;
malformed_uri)
    for uri in "pkcs11:token=demo;object=%zz" "pkcs11:id=%"; do
        hp_step "malformed URI $uri"
        sign_fails "$uri"
        hp_out_has "malformed pkcs11 URI"
        hp_step "storeutl $uri"
        hp_fails hp_timeout 60 openssl storeutl "$uri"
        hp_out_has "malformed pkcs11 URI"
    done
    ;;
wrong_type_cert)
    hp_step "write a certificate (id 02, label ec) into the token"
    hp_ok openssl req -new -x509 -key "pkcs11:token=demo;object=ec;type=private" \
        -subj /CN=ec -outform DER -out "$T/cert.der"
    hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" \
        --write-object "$T/cert.der" --type cert --id 02 --label ec
    hp_step "sign with pkcs11:token=demo;object=ec;type=cert"
    sign_fails "pkcs11:token=demo;object=ec;type=cert"
    # A signing key is a private key: the search for one finds none.
    hp_out_has "C_FindObjects" "no private key matches pkcs11:token=demo;object=ec;type=cert"
    ;;
wrong_type_public)
    hp_step "sign with pkcs11:token=demo;object=ec;type=public"
    sign_fails "pkcs11:token=demo;object=ec;type=public"
    # A signing key is a private key: the search for one finds none.
    hp_out_has "C_FindObjects" "no private key matches pkcs11:token=demo;object=ec;type=public"
    ;;
missing_module)
    path=$T/no/such/libpkcs11.so
    sed -i "s|^pkcs11-module-path = .*|pkcs11-module-path = $path|" "$OPENSSL_CONF"
    hp_step "pkcs11-module-path = $path"
    sign_fails "pkcs11:token=demo;object=ec;type=private"
    hp_out_has "dlopen" "$path"
    ;;
env_module_override)
    path=$T/env/libpkcs11.so
    hp_step "PKCS11_PROVIDER_MODULE=$path overrides the working module in the config"
    PKCS11_PROVIDER_MODULE=$path sign_fails "pkcs11:token=demo;object=ec;type=private"
    hp_out_has "dlopen" "$path"
    ;;
not_a_module)
    path=$(find /usr/lib /lib -name 'libz.so.1' 2>/dev/null | head -n 1)
    [ -n "$path" ] || hp_fail "no libz.so.1 found"
    sed -i "s|^pkcs11-module-path = .*|pkcs11-module-path = $path|" "$OPENSSL_CONF"
    hp_step "pkcs11-module-path = $path (not a PKCS#11 module)"
    sign_fails "pkcs11:token=demo;object=ec;type=private"
    hp_out_has "C_GetFunctionList" "$path"
    ;;
mechanism_missing)
    hp_step "RSA with X9.31 padding (SoftHSM2 lacks CKM_RSA_X9_31)"
    sign_fails "pkcs11:token=demo;object=rsa;type=private" \
        -pkeyopt rsa_padding_mode:x931 -pkeyopt digest:sha256
    hp_out_has "CKR_MECHANISM_INVALID" "CKM_"
    ;;
private_export_encrypted_refused_with_message)
    for obj in rsa ec; do
        uri="pkcs11:token=demo;object=$obj;type=private"
        for out in "-outform PEM -aes256 -passout pass:x" "-outform PEM -des3 -passout pass:x"; do
            hp_step "openssl pkey -in $uri $out -out FILE"
            rm -f "$T/out"
            # shellcheck disable=SC2086
            hp_fails openssl pkey -in "$uri" $out -out "$T/out"
            printf '%s\n' "$HP_OUT"
            hp_out_has "the private key of pkcs11:token=demo;id=" "object=$obj;type=private" \
                "stays in the token: its key file holds only the URI, which is not encrypted"
            hp_no_pin
            # openssl opens the output file before the key is encoded: it may
            # exist, but empty.
            [ ! -s "$T/out" ] || hp_fail "something was written to the output file"
        done
        hp_step "-pubout still writes the public key"
        hp_pubout "$uri" "$T/pub.pem"
        hp_ok openssl pkeyutl -sign -inkey "$uri" -in "$T/msg.hash" -out "$T/sig"
        hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$T/msg.hash" \
            -sigfile "$T/sig"
    done
    ;;
*) hp_fail "unknown case $case" ;;
esac

echo "PASS: bad_input $case"
