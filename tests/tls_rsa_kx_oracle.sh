#!/usr/bin/env bash
# TLS 1.2 RSA key exchange without a padding oracle: `openssl s_server` with
# an RSA key serves a client (tls_cke_tamper) whose ClientKeyExchange is
# replaced by a forged one. A well-formed premaster secret that is not the
# client's fails the handshake at the Finished message; every malformed one
# (bad header, short padding, wrong length, wrong version) must fail in
# exactly the same way, at the client and in the server's log: no other
# alert, no earlier alert, no other server error.
#
#   tls_rsa_kx_oracle.sh TAMPER_PROGRAM token|software|refused
#   token: the key is the token's "rsa" (hsmprov decrypts); software: a PEM
#   key of the default provider, the reference behaviour; refused: a token
#   that refuses raw RSA (the fault-injection shim answers C_DecryptInit with
#   CKR_MECHANISM_INVALID): the handshake fails with a clear refusal.
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

tamper=${1:?tamper program}
# One s_server for every handshake of the test (slow in sanitizer builds).
export HP_SERVER_TIMEOUT=240
which=${2:?token or software}

if [ "$which" = refused ]; then
    hp_setup "pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
    export P11SHIM_TARGET=$SOFTHSM2_MODULE
else
    hp_setup
fi
case $which in
token | refused) key="pkcs11:token=demo;object=rsa;type=private" ;;
software)
    key=$T/soft.key
    hp_ok openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" ;;
*) hp_fail "unknown key kind $which" ;;
esac

hp_step "certificate for $key"
hp_ok openssl req -new -x509 -key "$key" -subj "/CN=localhost" -days 30 -out "$T/cert.pem"

if [ "$which" = refused ]; then
    hp_step "a token without raw RSA: the RSA key exchange is refused, by name"
    P11SHIM_FAIL=C_DecryptInit:1:CKR_MECHANISM_INVALID \
        hp_start_server "$T/server.out" -key "$key" -cert "$T/cert.pem" -tls1_2 \
        -cipher AES128-GCM-SHA256 -www
    hp_run env OPENSSL_CONF=/dev/null "$tamper" 127.0.0.1 "$HP_PORT" "$T/cert.pem" none
    [ "$HP_RC" -eq 1 ] || { printf '%s\n' "$HP_OUT" >&2; hp_fail "exit status $HP_RC, not a failed handshake"; }
    sleep 0.2
    HP_OUT=$(cat "$T/server.out")
    HP_CMD=s_server
    hp_check_sane
    hp_out_has "CKM_RSA_X_509" "CKR_MECHANISM_INVALID" "use ECDHE cipher suites"
    grep 'CKM_RSA_X_509' "$T/server.out"
    echo "PASS: tls_rsa_kx_oracle refused"
    exit 0
fi

hp_step "s_server -tls1_2 with the RSA key exchange allowed"
hp_start_server "$T/server.out" -key "$key" -cert "$T/cert.pem" -tls1_2 \
    -cipher AES128-GCM-SHA256 -www
echo "server listening on 127.0.0.1:$HP_PORT"

# The client is a plain OpenSSL client: no hsmprov in it.
client() {
    hp_run env OPENSSL_CONF=/dev/null "$tamper" 127.0.0.1 "$HP_PORT" "$T/cert.pem" "$1"
    [ "$HP_RC" -le 1 ] || { printf '%s\n' "$HP_OUT" >&2; hp_fail "tls_cke_tamper $1: exit status $HP_RC"; }
}

# The server's error lines since the last call, without the parts that
# differ between two connections of one process (addresses, file lines).
server_errors_since() {
    tail -n +"$(($1 + 1))" "$T/server.out" | grep -iE 'error|alert' |
        sed -E 's/^[0-9A-F]+:error:/error:/; s/:[^:]*\.c:[0-9]+:/:/' | sort -u
}

hp_step "the client's own ClientKeyExchange: the handshake completes"
client none
[ "$HP_RC" -eq 0 ] || { printf '%s\n' "$HP_OUT" >&2; hp_fail "a genuine RSA key exchange failed"; }
hp_out_has "handshake ok: TLSv1.2 AES128-GCM-SHA256"

hp_step "a well-formed premaster secret that is not the client's"
lines=$(wc -l <"$T/server.out")
client wrong_secret
[ "$HP_RC" -eq 1 ] || hp_fail "a forged premaster secret was accepted"
ref_client=$HP_OUT
sleep 0.2
ref_server=$(server_errors_since "$lines")
echo "client: $ref_client"
echo "server: $ref_server"
[ -n "$ref_server" ] || { cat "$T/server.out" >&2; hp_fail "the server logged no error for a wrong secret"; }

for m in bad_head zero_in_ps no_separator bad_version; do
    hp_step "malformed premaster secret ($m): the same failure as a well-formed wrong one"
    lines=$(wc -l <"$T/server.out")
    client "$m"
    [ "$HP_OUT" = "$ref_client" ] ||
        hp_fail "$m: the client saw '$HP_OUT', a wrong secret gives '$ref_client'"
    sleep 0.2
    got=$(server_errors_since "$lines")
    [ "$got" = "$ref_server" ] ||
        hp_fail "$m: the server logged '$got', a wrong secret gives '$ref_server'"
done

hp_step "the server still serves after the forged handshakes"
client none
[ "$HP_RC" -eq 0 ] || { printf '%s\n' "$HP_OUT" >&2; hp_fail "the server broke"; }
kill -0 "${HP_PIDS[0]}" 2>/dev/null || { cat "$T/server.out" >&2; hp_fail "s_server died"; }
HP_OUT=$(cat "$T/server.out") HP_CMD=s_server hp_check_sane

echo "PASS: tls_rsa_kx_oracle $which"
