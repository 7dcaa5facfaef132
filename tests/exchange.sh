#!/usr/bin/env bash
# ECDH with token keys (CKM_ECDH1_DERIVE in the token) from the openssl CLI,
# and software keys that stay with the default provider.
#
#   exchange.sh CASE
#     p256 | p384 | p521   `pkeyutl -derive -inkey pkcs11:… -peerkey peer.pem`
#                          equals the software answer (peer's private key with
#                          the token key's public half), computed by C_DeriveKey
#     other_curve          a peer key on another curve: refused, naming both curves
#     no_derive_attr       a token key whose CKA_DERIVE is false: a clear error
#                          naming the key and the attribute
#     software_tls         TLS 1.3 with software keys and ECDHE over P-256, hsmprov
#                          loaded: no C_DeriveKey, the module not even loaded
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup

# derive_check OBJECT CURVE: the token's secret equals the software one.
derive_check() {
    local obj=$1 curve=$2 key="pkcs11:token=demo;object=$1;type=private"
    hp_step "a software $curve peer key; the token key's public half"
    hp_ok openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$curve" -out "$T/peer.pem"
    hp_ok openssl pkey -in "$T/peer.pem" -pubout -out "$T/peer.pub"
    hp_pubout "pkcs11:token=demo;object=$obj;type=public" "$T/tok.pub"

    hp_step "pkeyutl -derive with $key: the token computes the secret"
    HSMPROV_DEBUG=1 hp_ok openssl pkeyutl -derive -inkey "$key" -peerkey "$T/peer.pub" \
        -out "$T/secret.tok"
    hp_out_has "C_DeriveKey -> CKR_OK"
    hp_step "every secret object made in the token is destroyed again"
    [ "$(grep -c 'C_DeriveKey -> CKR_OK' <<<"$HP_OUT")" -le \
        "$(grep -c 'C_DestroyObject -> CKR_OK' <<<"$HP_OUT")" ] ||
        hp_fail "fewer C_DestroyObject than C_DeriveKey"

    hp_step "the software answer, in the default provider alone"
    hp_ok env OPENSSL_CONF=/dev/null openssl pkeyutl -derive -inkey "$T/peer.pem" \
        -peerkey "$T/tok.pub" -out "$T/secret.soft"
    cmp "$T/secret.tok" "$T/secret.soft" || hp_fail "the token's secret differs from the software one"
    [ -s "$T/secret.tok" ] || hp_fail "empty secret"
    echo "secret: $(stat -c %s "$T/secret.tok") bytes, equal"
}

case $case in
p256) derive_check ec P-256 ;;
p384) derive_check ec384 P-384 ;;
p521) derive_check ec521 P-521 ;;
other_curve)
    hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$T/peer.pem"
    hp_ok openssl pkey -in "$T/peer.pem" -pubout -out "$T/peer.pub"
    hp_step "a P-256 token key with a P-384 peer key: refused before the token"
    HSMPROV_DEBUG=1 hp_fails openssl pkeyutl -derive \
        -inkey "pkcs11:token=demo;object=ec;type=private" -peerkey "$T/peer.pub" -out "$T/s"
    hp_out_has "the peer key is on curve secp384r1" "object=ec;" "on curve prime256v1"
    hp_out_lacks "C_DeriveKey"
    hp_no_pin
    ;;
no_derive_attr)
    hp_step "an EC key made for signing only (CKA_DERIVE false)"
    hp_p11tool --token-label demo --login --pin "$HP_PIN" --keypairgen \
        --key-type EC:prime256v1 --label signonly --id 20 --usage-sign >/dev/null
    hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/peer.pem"
    hp_ok openssl pkey -in "$T/peer.pem" -pubout -out "$T/peer.pub"
    hp_fails openssl pkeyutl -derive -inkey "pkcs11:token=demo;object=signonly;type=private" \
        -peerkey "$T/peer.pub" -out "$T/s"
    hp_out_has "C_DeriveKey failed with CKR_KEY_FUNCTION_NOT_PERMITTED" "object=signonly" \
        "CKA_DERIVE is false"
    hp_no_pin
    ;;
software_tls)
    hp_ok openssl req -new -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$T/soft.key" -subj /CN=localhost -days 30 -out "$T/soft.pem"
    printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"
    # default listed before hsmprov, as the README asks (with hsmprov first,
    # OpenSSL's own generator would fetch hsmprov's AES).
    hp_step "providers: $(sed -n '/^\[provider_sect\]/,/^$/p' "$OPENSSL_CONF" | tr '\n' ' ')"
    HSMPROV_DEBUG=1 hp_start_server "$T/server.out" -key "$T/soft.key" -cert "$T/soft.pem" \
        -tls1_3 -groups P-256 -www -naccept 1
    hp_step "TLS 1.3, ECDHE over P-256, software keys on both sides"
    HSMPROV_DEBUG=1 hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" \
        -tls1_3 -groups P-256 -CAfile "$T/soft.pem" -verify_return_error -ign_eof \
        <"$T/request"
    hp_out_has "Verify return code: 0 (ok)" "Server Temp Key: ECDH, prime256v1" \
        "HTTP/1.0 200 ok"
    hp_out_lacks "C_DeriveKey" "hsmprov: loaded"
    for _ in $(seq 50); do
        kill -0 "${HP_PIDS[0]}" 2>/dev/null || break
        sleep 0.1
    done
    HP_OUT=$(cat "$T/server.out")
    HP_CMD="s_server"
    hp_check_sane
    hp_step "the server did its ECDHE without hsmprov: it never even loaded the module"
    hp_out_lacks "C_DeriveKey" "hsmprov: loaded"
    hp_out_has "1 server accepts that finished"
    hp_step "the same configuration derives with a token key in the token"
    hp_ok openssl pkey -in "$T/soft.key" -pubout -out "$T/soft.pub"
    HSMPROV_DEBUG=1 hp_ok openssl pkeyutl -derive -inkey "pkcs11:token=demo;object=ec;type=private" \
        -peerkey "$T/soft.pub" -out "$T/s"
    hp_out_has "C_DeriveKey -> CKR_OK"
    ;;
*) hp_fail "unknown case $case" ;;
esac

echo "PASS: exchange $case"
