#!/usr/bin/env bash
# A preference for hsmprov ("-propquery ?provider=hsmprov") keeps the EC TLS
# groups: s_server and s_client with `-groups secp256r1` (or secp384r1) start,
# and TLS 1.3 and TLS 1.2 handshakes complete, with a software server key and
# with a token server key. The key shares are made and used in memory: the
# module sees no C_GenerateKeyPair and no C_DeriveKey (shim call log).
#
#   tls_groups.sh CASE   CASE: software | token
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup "pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
export P11SHIM_TARGET=$SOFTHSM2_MODULE P11SHIM_LOG=$T/shim.log

case $case in
software)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$T/srv.key" -out "$T/srv.crt" -subj /CN=localhost 2>/dev/null ||
        hp_fail "could not make the software certificate"
    key=$T/srv.key
    ;;
token)
    key="pkcs11:token=demo;object=ec;type=private"
    hp_ok openssl req -new -x509 -key "$key" -subj /CN=localhost -days 30 -out "$T/srv.crt"
    ;;
*) hp_fail "unknown case $case" ;;
esac

printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"
for group in secp256r1 secp384r1; do
    hp_step "s_server -propquery ?provider=hsmprov -groups $group ($case key) starts"
    : >"$T/shim.log"
    HSMPROV_DEBUG=1 hp_start_server "$T/srv-$group.log" -cert "$T/srv.crt" -key "$key" \
        -propquery '?provider=hsmprov' -groups "$group" -www
    # TLS 1.2 with ChaCha20-Poly1305: hsmprov's AES-GCM (in the token) would
    # win that fetch too, and it does not do TLS 1.2 record protection. A
    # TLS 1.2 client must also list the certificate's curve (P-256); the
    # server's -groups still makes the key exchange use $group.
    cgroups=$group
    [ "$group" = secp256r1 ] || cgroups+=:secp256r1
    for ver in -tls1_3 "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305 -groups $cgroups"; do
        hp_step "s_client $ver -propquery ?provider=hsmprov -groups $group"
        # shellcheck disable=SC2086
        HSMPROV_DEBUG=1 hp_ok hp_timeout 120 openssl s_client -connect "127.0.0.1:$HP_PORT" \
            -groups "$group" $ver -propquery '?provider=hsmprov' -CAfile "$T/srv.crt" \
            -verify_return_error -ign_eof <"$T/request"
        hp_out_has "Verify return code: 0 (ok)" "HTTP/1.0 200 ok" \
            "Server Temp Key: ECDH, ${group/secp256r1/prime256v1}"
        hp_out_lacks "C_DeriveKey" "C_GenerateKeyPair"
        hp_out_has "Protocol  : TLSv1.${ver:6:1}"
    done
    hp_step "the key shares never reached the token"
    if grep -E "C_DeriveKey|C_GenerateKeyPair" "$T/shim.log" "$T/srv-$group.log" >&2; then
        hp_fail "a key share reached the token"
    fi
    kill "${HP_PIDS[-1]}" 2>/dev/null || true
done
