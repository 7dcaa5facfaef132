#!/usr/bin/env bash
# Ed25519 keys in the token (CKM_EDDSA): the public key exports, a one-shot
# signature made in the token verifies with the default provider and in the
# token, `req -x509` makes a certificate with it, and s_server serves TLS 1.3
# with it.
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

hp_setup
hp_step "generate an Ed25519 key in the token"
hp_keygen EC:edwards25519 ed25519 05
priv="pkcs11:token=demo;object=ed25519;type=private"
pub="pkcs11:token=demo;object=ed25519;type=public"
head -c 1000 /dev/urandom >"$T/msg"

hp_step "public key"
hp_pubout "$priv" "$T/pub.pem"
hp_ok openssl pkey -pubin -in "$T/pub.pem" -noout -text
hp_out_has "ED25519 Public-Key"

hp_step "sign in the token, verify with the default provider"
hp_ok openssl pkeyutl -sign -rawin -inkey "$priv" -in "$T/msg" -out "$T/sig"
[ "$(stat -c %s "$T/sig")" = 64 ] || hp_fail "an Ed25519 signature is 64 bytes"
OPENSSL_CONF=/dev/null hp_ok openssl pkeyutl -verify -rawin -pubin -inkey "$T/pub.pem" \
    -in "$T/msg" -sigfile "$T/sig"
hp_out_has "Signature Verified Successfully"

hp_step "verify in the token; a changed message fails"
hp_ok openssl pkeyutl -verify -rawin -pubin -inkey "$pub" -propquery provider=hsmprov \
    -in "$T/msg" -sigfile "$T/sig"
hp_out_has "Signature Verified Successfully"
printf x >>"$T/msg"
hp_fails openssl pkeyutl -verify -rawin -pubin -inkey "$pub" -propquery provider=hsmprov \
    -in "$T/msg" -sigfile "$T/sig"

hp_step "req -x509 with the token key"
hp_ok openssl req -new -x509 -key "$priv" -subj "/CN=localhost" -days 30 -out "$T/cert.pem"
hp_ok openssl verify -CAfile "$T/cert.pem" "$T/cert.pem"

hp_step "TLS 1.3 with the Ed25519 token key"
hp_start_server "$T/server.out" -key "$priv" -cert "$T/cert.pem" -tls1_3 -www -naccept 1
printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"
hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
    -CAfile "$T/cert.pem" -verify_return_error -ign_eof <"$T/request"
hp_out_has "Peer signature type: ed25519"
hp_out_has "HTTP/1.0 200 ok"

echo "PASS: cli_ed25519"
