#!/usr/bin/env bash
# With hsmprov loaded, keys in PEM files stay with the default provider: they
# sign and verify as before, and the token is never asked to sign them.
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

hp_setup
printf 'software keys still work\n' >"$T/msg"

for alg in rsa ec; do
    hp_step "generate a software $alg key and sign with it while hsmprov is loaded"
    case $alg in
    rsa) hp_ok openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/$alg.pem" ;;
    ec) hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/$alg.pem" ;;
    esac
    hp_ok openssl pkey -in "$T/$alg.pem" -pubout -out "$T/$alg.pub"
    HSMPROV_DEBUG=1 hp_ok openssl dgst -sha256 -sign "$T/$alg.pem" -out "$T/$alg.sig" "$T/msg"
    hp_out_lacks "C_Sign" "C_Login" "C_OpenSession"
    hp_ok openssl dgst -sha256 -verify "$T/$alg.pub" -signature "$T/$alg.sig" "$T/msg"
    hp_out_has "Verified OK"
    hp_step "verify with the default provider alone (hsmprov not loaded): the same answer"
    hp_ok env OPENSSL_CONF=/dev/null openssl dgst -sha256 -verify "$T/$alg.pub" \
        -signature "$T/$alg.sig" "$T/msg"
    hp_out_has "Verified OK"
    hp_step "pkeyutl -sign with the software $alg key"
    openssl dgst -sha256 -binary -out "$T/msg.hash" "$T/msg"
    HSMPROV_DEBUG=1 hp_ok openssl pkeyutl -sign -inkey "$T/$alg.pem" -pkeyopt digest:sha256 \
        -in "$T/msg.hash" -out "$T/$alg.sig2"
    hp_out_lacks "C_Sign"
    hp_ok openssl pkeyutl -verify -pubin -inkey "$T/$alg.pub" -pkeyopt digest:sha256 \
        -in "$T/msg.hash" -sigfile "$T/$alg.sig2"
done

hp_step "a self-signed software certificate and req -x509 still work"
hp_ok openssl req -new -x509 -key "$T/ec.pem" -subj /CN=soft -out "$T/soft.pem"
hp_ok openssl verify -CAfile "$T/soft.pem" "$T/soft.pem"

hp_step "token keys still sign in the same process configuration"
hp_ok openssl dgst -sha256 -sign "pkcs11:token=demo;object=ec;type=private" -out "$T/tok.sig" "$T/msg"
hp_pubout "pkcs11:token=demo;object=ec;type=public" "$T/tok.pub"
hp_ok openssl dgst -sha256 -verify "$T/tok.pub" -signature "$T/tok.sig" "$T/msg"

echo "PASS: cli_software_keys"
