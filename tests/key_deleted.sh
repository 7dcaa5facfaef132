#!/usr/bin/env bash
# A key deleted from the token stops working in a process that is already
# using it, within pkcs11-key-check-interval seconds, although the process
# signs with a session-object copy (pkcs11-module-cache-keys, the default)
# that outlives the token object. The error names the key and says it is
# gone. Between checks a signature costs no extra PKCS#11 call.
#
#   key_deleted.sh CASE
#     tls_interval_1     pkcs11-key-check-interval = 1: s_server serves
#                        handshakes; after the key is deleted (pkcs11-tool
#                        --delete-object), handshakes fail within 1 s + margin
#     tls_default        no directive: the same within the default 5 s
#     steady_state       interval 2: many handshakes over ~5 s make at most
#                        one check (C_GetAttributeValue) per 2 s
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
key="pkcs11:token=demo;object=ec;type=private"
case $case in
tls_interval_1) hp_setup "pkcs11-key-check-interval = 1"; wait_after=2 ;;
tls_default) hp_setup; wait_after=6 ;;
steady_state) hp_setup "pkcs11-key-check-interval = 2" ;;
*) hp_fail "unknown case $case" ;;
esac

hp_step "certificate for the token key ($key)"
hp_ok openssl req -new -x509 -key "$key" -subj "/CN=localhost" -days 30 -out "$T/cert.pem"
printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"

handshake() {
    hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
        -CAfile "$T/cert.pem" -verify_return_error -ign_eof <"$T/request"
}

if [ "$case" = steady_state ]; then
    HSMPROV_DEBUG=1 hp_start_server "$T/server.out" -key "$key" -cert "$T/cert.pem" -www
    hp_step "handshakes for about 5 s"
    start=$SECONDS
    n=0
    while [ $((SECONDS - start)) -lt 5 ]; do
        hp_ok handshake
        hp_out_has "HTTP/1.0 200 ok"
        n=$((n + 1))
        sleep 0.1
    done
    # The calls after the first signature: signatures and checks only.
    signs=$(sed -n '/^hsmprov: C_Sign /,$p' "$T/server.out" | grep -c '^hsmprov: C_Sign ' || true)
    checks=$(sed -n '/^hsmprov: C_Sign /,$p' "$T/server.out" |
        grep -c '^hsmprov: C_GetAttributeValue ' || true)
    echo "$n handshakes, $signs C_Sign, $checks C_GetAttributeValue after the first C_Sign"
    [ "$signs" -ge "$n" ] || hp_fail "expected at least $n C_Sign calls, got $signs"
    [ "$checks" -ge 1 ] || hp_fail "no check of the key in $((SECONDS - start)) s"
    [ "$checks" -le 4 ] || hp_fail "$checks checks in about 5 s with an interval of 2 s"
    echo "PASS: key_deleted $case"
    exit 0
fi

hp_start_server "$T/server.out" -key "$key" -cert "$T/cert.pem" -www
hp_step "handshakes before the key is deleted succeed"
for _ in 1 2; do
    hp_ok handshake
    hp_out_has "Verify return code: 0 (ok)" "HTTP/1.0 200 ok"
done

hp_step "delete the private key object from the token (another process)"
hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" --delete-object --type privkey \
    --id 02

hp_step "after ${wait_after} s, handshakes fail"
sleep "$wait_after"
for _ in 1 2; do
    hp_fails handshake
done
HP_OUT=$(cat "$T/server.out")
HP_CMD=s_server
hp_check_sane
printf '%s\n' "$HP_OUT"
hp_out_has "CKR_OBJECT_HANDLE_INVALID" "id=%02;object=ec;type=private is gone" \
    "deleted from the token"
hp_no_pin

echo "PASS: key_deleted $case"
