#!/usr/bin/env bash
# `openssl req -new -x509 -key pkcs11:...` makes a self-signed certificate
# with a token key; `openssl verify` accepts it and its public key is the
# token key's.
#
#   cli_req_x509.sh rsa|ec
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

obj=${1:?rsa or ec}
hp_setup
priv="pkcs11:token=demo;object=$obj;type=private"

hp_step "req -new -x509 -key $priv"
hp_ok openssl req -new -x509 -key "$priv" -subj "/CN=hsmprov test $obj" -days 30 \
    -out "$T/cert.pem"

hp_step "verify -CAfile cert.pem cert.pem"
hp_ok openssl verify -CAfile "$T/cert.pem" "$T/cert.pem"
hp_out_has "$T/cert.pem: OK"

hp_step "the certificate carries the token's public key"
hp_pubout "$priv" "$T/pub.pem"
hp_ok openssl x509 -in "$T/cert.pem" -noout -pubkey
[ "$HP_OUT" = "$(cat "$T/pub.pem")" ] || hp_fail "certificate key differs from the token key"
hp_ok openssl x509 -in "$T/cert.pem" -noout -text
case $obj in
rsa) hp_out_has "sha256WithRSAEncryption" ;;
ec) hp_out_has "ecdsa-with-SHA256" ;;
esac

hp_step "a certificate request signed by the token verifies"
hp_ok openssl req -new -key "$priv" -subj "/CN=csr $obj" -out "$T/req.pem"
hp_ok openssl req -in "$T/req.pem" -verify -noout
hp_out_has "verify OK"

echo "PASS: cli_req_x509 $obj"
