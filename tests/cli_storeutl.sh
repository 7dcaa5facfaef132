#!/usr/bin/env bash
# `openssl storeutl` lists the token's keys; a certificate written into the
# token with pkcs11-tool is listed with them, and alone with -certs.
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

hp_setup
count() { grep -cE "^[0-9]+: $1\$" <<<"$HP_OUT" || true; }

hp_step "storeutl pkcs11:token=demo (keys only so far)"
hp_ok openssl storeutl -noout "pkcs11:token=demo"
printf '%s\n' "$HP_OUT"
[ "$(count 'Pkey')" -ge 4 ] || hp_fail "fewer than 4 private keys listed"
[ "$(count 'Certificate')" -eq 0 ] || hp_fail "a certificate listed before one was written"
hp_out_has "Total found:"

hp_step "storeutl pkcs11:token=demo;object=ec;type=private: exactly one key"
hp_ok openssl storeutl -noout "pkcs11:token=demo;object=ec;type=private"
[ "$(count 'Pkey')" -eq 1 ] || hp_fail "expected exactly one private key"
hp_out_has "Total found: 1"

hp_step "write a certificate for the ec key into the token (id 02, label ec)"
hp_ok openssl req -new -x509 -key "pkcs11:token=demo;object=ec;type=private" \
    -subj "/CN=stored in token" -days 30 -outform DER -out "$T/cert.der"
hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" \
    --write-object "$T/cert.der" --type cert --id 02 --label ec

hp_step "storeutl lists keys and the certificate"
hp_ok openssl storeutl "pkcs11:token=demo"
[ "$(count 'Pkey')" -ge 4 ] || hp_fail "fewer than 4 private keys listed"
[ "$(count 'Certificate')" -eq 1 ] || hp_fail "expected one certificate"
hp_out_has "BEGIN CERTIFICATE"

hp_step "storeutl -certs lists only the certificate, and it is the one written"
hp_ok openssl storeutl -certs "pkcs11:token=demo"
[ "$(count 'Certificate')" -eq 1 ] || hp_fail "expected one certificate"
[ "$(count 'Pkey')" -eq 0 ] || hp_fail "-certs listed a private key"
awk '/BEGIN CERTIFICATE/,/END CERTIFICATE/' <<<"$HP_OUT" >"$T/listed.pem"
openssl x509 -inform DER -in "$T/cert.der" -out "$T/written.pem"
cmp -s "$T/listed.pem" "$T/written.pem" || hp_fail "listed certificate differs from the one written"

hp_step "storeutl -keys lists no certificate"
hp_ok openssl storeutl -noout -keys "pkcs11:token=demo"
[ "$(count 'Certificate')" -eq 0 ] || hp_fail "-keys listed a certificate"
[ "$(count 'Pkey')" -ge 4 ] || hp_fail "-keys listed fewer than 4 private keys"

hp_step "the certificate by URI: pkcs11:token=demo;object=ec;type=cert"
hp_ok openssl storeutl -certs "pkcs11:token=demo;object=ec;type=cert"
hp_out_has "Total found: 1" "BEGIN CERTIFICATE"
awk '/BEGIN CERTIFICATE/,/END CERTIFICATE/' <<<"$HP_OUT" >"$T/byuri.pem"
hp_ok openssl x509 -in "$T/byuri.pem" -noout -subject
hp_out_has "stored in token"

echo "PASS: cli_storeutl"
