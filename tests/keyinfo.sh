#!/usr/bin/env bash
# Looking at token keys.
#
#   keyinfo.sh CASE
#     pkey_text      pkey -text -noout prints the public part (modulus and
#                    exponent; curve and point), says the private part is in
#                    the token, with its URI, and prints no private value;
#                    -pubout still works
#     storeutl_text  storeutl -text prints each key's URI
#     storeutl_search  storeutl -certs -subject finds a certificate by its
#                    subject; -alias finds objects by label
#     copy_params    EVP_PKEY_copy_parameters from token EC and RSA keys
#     verifyrecover  pkeyutl -verifyrecover with a token RSA public key
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup
serial=$(env -u OPENSSL_CONF softhsm2-util --show-slots |
    awk '/Serial number:/ && $3 != "" {s=$3} END {print s}')
ident="model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=$serial;token=demo"

case $case in
pkey_text)
    hp_step "pkey -text -noout of the RSA key"
    hp_ok openssl pkey -in "pkcs11:token=demo;object=rsa;type=private" -text -noout
    printf '%s\n' "$HP_OUT"
    hp_out_has "Private-Key: (2048 bit), in the token: the private part is not shown" \
        "URI: pkcs11:$ident;id=%01;object=rsa;type=private" "Public-Key: (2048 bit)" \
        "Modulus:" "Exponent: 65537 (0x10001)"
    hp_out_lacks "privateExponent" "prime1" "coefficient"
    hp_step "pkey -text -noout of the EC key"
    hp_ok openssl pkey -in "pkcs11:token=demo;object=ec;type=private" -text -noout
    printf '%s\n' "$HP_OUT"
    hp_out_has "Private-Key: (256 bit), in the token" \
        "URI: pkcs11:$ident;id=%02;object=ec;type=private" "pub:" \
        "ASN1 OID: prime256v1" "NIST CURVE: P-256"
    hp_out_lacks "priv:"
    hp_step "the point printed is the public key's"
    hp_pubout "pkcs11:token=demo;object=ec;type=private" "$T/ec.pub"
    hp_ok env -u OPENSSL_CONF openssl pkey -pubin -in "$T/ec.pub" -text -noout
    point=$(sed -n '/^pub:/,/^ASN1/p' <<<"$HP_OUT")
    hp_ok openssl pkey -in "pkcs11:token=demo;object=ec;type=private" -text -noout
    hp_out_has "$point"
    hp_step "a public key from the token: its URI and public part"
    hp_ok openssl pkey -pubin -in "pkcs11:token=demo;object=ec384;type=public" -text -noout
    hp_out_has "URI: pkcs11:$ident;id=%03;object=ec384;type=public" "Public-Key: (384 bit)"
    hp_out_lacks "Private-Key"
    ;;
storeutl_text)
    hp_ok openssl storeutl -text -noout "pkcs11:token=demo"
    for o in "id=%01;object=rsa" "id=%02;object=ec" "id=%03;object=ec384" \
        "id=%04;object=ec521"; do
        hp_out_has "URI: pkcs11:$ident;$o;type=private" "URI: pkcs11:$ident;$o;type=public"
    done
    hp_out_lacks "priv:" "privateExponent"
    hp_step "a URI printed names its key"
    uri=$(grep -m1 -o 'pkcs11:[^ ]*object=ec521;type=private' <<<"$HP_OUT")
    hp_ok openssl storeutl -noout "$uri"
    hp_out_has "Total found: 1"
    ;;
storeutl_search)
    for obj in ec rsa; do
        hp_ok openssl req -new -x509 -key "pkcs11:token=demo;object=$obj;type=private" \
            -subj "/CN=$obj in token/O=hsmprov tests" -days 30 -outform DER -out "$T/$obj.der"
    done
    hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" \
        --write-object "$T/ec.der" --type cert --id 02 --label ec-cert
    hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" \
        --write-object "$T/rsa.der" --type cert --id 01 --label rsa-cert
    hp_step "storeutl -certs -subject finds the certificate with that subject"
    hp_ok openssl storeutl -certs -subject "/CN=ec in token/O=hsmprov tests" "pkcs11:token=demo"
    hp_out_has "Total found: 1"
    awk '/BEGIN CERTIFICATE/,/END CERTIFICATE/' <<<"$HP_OUT" >"$T/found.pem"
    hp_ok openssl x509 -in "$T/found.pem" -noout -subject
    hp_out_has "CN = ec in token"
    hp_step "storeutl -subject of no certificate: nothing found, the subject named"
    hp_run openssl storeutl -certs -subject "/CN=nobody" "pkcs11:token=demo"
    hp_out_has "Total found: 0" "with subject /CN=nobody"
    hp_step "storeutl -alias finds objects by label"
    hp_ok openssl storeutl -alias rsa-cert "pkcs11:token=demo"
    hp_out_has "Total found: 1" "0: Certificate"
    hp_ok openssl x509 -in <(awk '/BEGIN CERTIFICATE/,/END CERTIFICATE/' <<<"$HP_OUT") \
        -noout -subject
    hp_out_has "CN = rsa in token"
    hp_ok openssl storeutl -noout -alias ec384 "pkcs11:token=demo"
    hp_out_has "Total found: 2" "0: Pkey" "1: Public key"
    ;;
copy_params)
    hp_ok "$HSMPROV_BUILD_DIR/tests/keyinfo_params" "pkcs11:token=demo;object=ec;type=private" prime256v1
    hp_ok "$HSMPROV_BUILD_DIR/tests/keyinfo_params" "pkcs11:token=demo;object=ec521;type=private" secp521r1
    hp_ok "$HSMPROV_BUILD_DIR/tests/keyinfo_params" "pkcs11:token=demo;object=rsa;type=private"
    ;;
verifyrecover)
    printf '0123456789abcdef0123456789abcdef' >"$T/data"
    hp_ok openssl pkeyutl -sign -inkey "pkcs11:token=demo;object=rsa;type=private" \
        -in "$T/data" -out "$T/sig"
    for key in "-pubin -inkey pkcs11:token=demo;object=rsa;type=public" \
        "-inkey pkcs11:token=demo;object=rsa;type=private"; do
        hp_step "pkeyutl -verifyrecover $key"
        # shellcheck disable=SC2086
        hp_ok openssl pkeyutl -verifyrecover $key -in "$T/sig" -out "$T/rec"
        cmp -s "$T/data" "$T/rec" || hp_fail "recovered data differs"
    done
    hp_step "with a digest: the DigestInfo is checked and taken off"
    openssl dgst -sha256 -binary "$T/data" >"$T/hash"
    hp_ok openssl pkeyutl -sign -inkey "pkcs11:token=demo;object=rsa;type=private" \
        -pkeyopt digest:sha256 -in "$T/hash" -out "$T/sig2"
    hp_ok openssl pkeyutl -verifyrecover -pubin \
        -inkey "pkcs11:token=demo;object=rsa;type=public" -pkeyopt digest:sha256 \
        -in "$T/sig2" -out "$T/rec2"
    cmp -s "$T/hash" "$T/rec2" || hp_fail "recovered digest differs"
    hp_step "a signature by another key does not recover"
    hp_ok env -u OPENSSL_CONF openssl genpkey -algorithm RSA -out "$T/other.pem"
    hp_ok env -u OPENSSL_CONF openssl pkeyutl -sign -inkey "$T/other.pem" -in "$T/data" \
        -out "$T/sig3"
    hp_fails openssl pkeyutl -verifyrecover -pubin \
        -inkey "pkcs11:token=demo;object=rsa;type=public" -in "$T/sig3"
    ;;
*) hp_fail "unknown case $case" ;;
esac

echo "PASS: keyinfo $case"
