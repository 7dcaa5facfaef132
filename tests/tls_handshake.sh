#!/usr/bin/env bash
# `openssl s_server -key pkcs11:...` serves TLS with a token key; an
# `openssl s_client` completes the handshake, checks the certificate, sees the
# expected signature scheme and gets an HTTP answer back.
#
#   tls_handshake.sh CASE   CASE: tls13_ecdsa_p256 | tls13_ecdsa_p384 |
#                           tls13_rsa_pss | tls12_ecdsa_p256 | tls12_rsa_pss |
#                           tls12_rsa_pkcs1 | tls12_rsa_key_exchange
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
client_opts=()
case $case in
tls13_ecdsa_p256) ver=-tls1_3 proto=TLSv1.3 obj=ec sigtype=ECDSA ;;
tls13_ecdsa_p384) ver=-tls1_3 proto=TLSv1.3 obj=ec384 sigtype=ECDSA ;;
tls13_rsa_pss) ver=-tls1_3 proto=TLSv1.3 obj=rsa sigtype=RSA-PSS ;;
tls12_ecdsa_p256) ver=-tls1_2 proto=TLSv1.2 obj=ec sigtype=ECDSA ;;
tls12_rsa_pss) ver=-tls1_2 proto=TLSv1.2 obj=rsa sigtype=RSA-PSS ;;
tls12_rsa_pkcs1)
    # The client offers only PKCS#1 v1.5 signatures (allowed in TLS 1.2).
    ver=-tls1_2 proto=TLSv1.2 obj=rsa sigtype=RSA client_opts=(-sigalgs RSA+SHA256) ;;
tls12_rsa_key_exchange)
    # A legacy client: RSA key exchange, no ServerKeyExchange signature. The
    # token decrypts the premaster secret (raw RSA, TLS padding checked by
    # hsmprov).
    ver=-tls1_2 proto=TLSv1.2 obj=rsa sigtype= client_opts=(-cipher AES128-GCM-SHA256) ;;
*) hp_fail "unknown case $case" ;;
esac

hp_setup
key="pkcs11:token=demo;object=$obj;type=private"

hp_step "certificate for the token key ($key)"
hp_ok openssl req -new -x509 -key "$key" -subj "/CN=localhost" -days 30 -out "$T/cert.pem"

hp_step "s_server $ver -key $key"
hp_start_server "$T/server.out" -key "$key" -cert "$T/cert.pem" "$ver" -www -naccept 2
echo "server listening on 127.0.0.1:$HP_PORT"

printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"
for round in 1 2; do
    hp_step "s_client $ver ${client_opts[*]} (connection $round): GET /"
    hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" "$ver" \
        "${client_opts[@]}" -CAfile "$T/cert.pem" -verify_return_error -ign_eof <"$T/request"
    hp_out_has "Verify return code: 0 (ok)" "Protocol  : $proto" "HTTP/1.0 200 ok"
    if [ -n "$sigtype" ]; then
        hp_out_has "Peer signature type: $sigtype"
    else
        hp_out_has "Cipher    : AES128-GCM-SHA256"
        hp_out_lacks "Peer signature type"
    fi
done

hp_step "the server exits by itself after its connections"
for _ in $(seq 50); do
    kill -0 "${HP_PIDS[0]}" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "${HP_PIDS[0]}" 2>/dev/null; then
    cat "$T/server.out" >&2
    hp_fail "s_server still running after -naccept 2"
fi
wait "${HP_PIDS[0]}" || { cat "$T/server.out" >&2; hp_fail "s_server exit status $?"; }
HP_OUT=$(cat "$T/server.out") HP_CMD=s_server hp_check_sane
grep -q "2 server accepts that finished" "$T/server.out" || {
    cat "$T/server.out" >&2
    hp_fail "s_server did not finish 2 handshakes"
}

echo "PASS: tls_handshake $case"
