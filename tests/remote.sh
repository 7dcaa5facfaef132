#!/usr/bin/env bash
# A remote token over p11-kit's RPC (DESIGN §6a): `p11-kit server` exports
# the test's SoftHSM2 token on a unix socket in the test's directory, and
# hsmprov's module is p11-kit-client.so (P11_KIT_SERVER_ADDRESS names the
# socket), as on a TLS server whose HSM sits on another machine.
#
#   remote.sh sign                CLI signatures (EC, RSA-PSS) verified in
#                                 software
#   remote.sh tls13               s_server with the remote key: TLS 1.3
#   remote.sh threads THREAD_SIGN 8 threads x 50 signatures, every one
#                                 verified (tests/thread_sign.c)
#   remote.sh gone REMOTE_SIGN    8 threads sign while the serving
#                                 p11-kit-remote process is killed, then the
#                                 server, which is started again: the signing
#                                 process survives (SIGPIPE not ignored) and
#                                 signs again without a restart
#                                 (tests/remote_sign.c)
#   remote.sh hook DIR STEP       (for remote_sign) kill-remote, stop-server,
#                                 start-server on the server of test DIR
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

CLIENT=${P11KIT_CLIENT_MODULE:-/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so}

# The server in the foreground of a background job, pid in DIR/server.pid;
# ready once its socket exists.
start_server() {
    local dir=$1
    rm -f "$dir/p11.sock"
    # The server's SoftHSM2 uses OpenSSL: keep the test's openssl.cnf (which
    # loads hsmprov) away from it, as on the token's own machine.
    env -u OPENSSL_CONF p11-kit server -f --provider "$SOFTHSM2_MODULE" -n "$dir/p11.sock" "pkcs11:token=demo" \
        >>"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$dir/server.pid"
    for _ in $(seq 100); do
        [ -S "$dir/p11.sock" ] && return 0
        sleep 0.05
    done
    cat "$dir/server.log" >&2
    hp_fail "p11-kit server did not start"
}

# The server first stops accepting: a client that loses its serving process
# connects again at once, and a process the server forked after the list of
# its children was taken would serve on, orphaned, with the server gone.
stop_server() {
    local dir=$1 pid child
    pid=$(cat "$dir/server.pid" 2>/dev/null) || return 0
    kill -STOP "$pid" 2>/dev/null || true
    rm -f "$dir/p11.sock"
    for child in $(pgrep -P "$pid" || true); do
        kill "$child" 2>/dev/null || true
    done
    kill "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    rm -f "$dir/server.pid"
}

if [ "${1:-}" = hook ]; then
    dir=${2:?dir} step=${3:?step}
    case $step in
    kill-remote)
        # The server forks a p11-kit-remote for each connection: ours.
        children=$(pgrep -P "$(cat "$dir/server.pid")" || true)
        [ -n "$children" ] || { echo "hook: no serving process to kill" >&2; exit 1; }
        # shellcheck disable=SC2086
        kill -KILL $children
        echo "hook: killed serving process(es) $children"
        ;;
    stop-server) stop_server "$dir" && echo "hook: server stopped" ;;
    start-server) start_server "$dir" && echo "hook: server started again" ;;
    *) echo "hook: unknown step $step" >&2; exit 1 ;;
    esac
    exit 0
fi

case=${1:?case}
[ -f "$CLIENT" ] || hp_fail "$CLIENT missing (install p11-kit-modules)"

hp_setup "pkcs11-module-path = $CLIENT"
hp_cleanup_remote() {
    stop_server "$T"
    hp_cleanup
}
trap hp_cleanup_remote EXIT
start_server "$T"
export P11_KIT_SERVER_ADDRESS="unix:path=$T/p11.sock"
echo "p11-kit server (pid $(cat "$T/server.pid")) on $P11_KIT_SERVER_ADDRESS"

EC="pkcs11:token=demo;object=ec;type=private"
RSA="pkcs11:token=demo;object=rsa;type=private"

case $case in
sign)
    head -c 5000 /dev/urandom >"$T/msg"
    for k in ec rsa; do
        uri=$EC opts=()
        [ $k = rsa ] && uri=$RSA opts=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest)
        hp_step "$k: sign over p11-kit-client.so"
        HSMPROV_DEBUG=1 hp_ok openssl dgst -sha256 -sign "$uri" "${opts[@]}" -out "$T/$k.sig" "$T/msg"
        hp_out_has "loaded $CLIENT" "C_Sign -> CKR_OK"
        hp_no_pin
        hp_pubout "$uri" "$T/$k.pub"
        hp_ok openssl dgst -sha256 -verify "$T/$k.pub" "${opts[@]}" -signature "$T/$k.sig" "$T/msg"
        hp_out_has "Verified OK"
    done
    ;;
tls13)
    hp_ok openssl req -new -x509 -key "$EC" -subj "/CN=localhost" -days 30 -out "$T/cert.pem"
    printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"
    hp_step "s_server -tls1_3 with the remote key"
    hp_start_server "$T/server.out" -key "$EC" -cert "$T/cert.pem" -tls1_3 -www -naccept 2
    for round in 1 2; do
        hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
            -CAfile "$T/cert.pem" -verify_return_error -ign_eof <"$T/request"
        hp_out_has "Verify return code: 0 (ok)" "Protocol  : TLSv1.3" \
            "Peer signature type: ECDSA" "HTTP/1.0 200 ok"
    done
    ;;
threads)
    prog=${2:?the thread_sign program}
    for k in ec rsa; do
        uri=$EC
        [ $k = rsa ] && uri=$RSA
        hp_step "$k: 8 threads x 50 signatures over p11-kit-client.so"
        hp_ok hp_timeout 120 "$prog" -t 8 -n 50 threads "$uri"
        printf '%s\n' "$HP_OUT" | tail -3
    done
    ;;
gone)
    prog=${2:?the remote_sign program}
    hp_step "8 threads sign; the serving process, then the server, go away"
    hp_ok hp_timeout 120 "$prog" -t 8 "$EC" "bash $HSMPROV_TESTS_DIR/remote.sh hook $T"
    printf '%s\n' "$HP_OUT"
    hp_out_has "PASS" "serving process killed: signing again" "server started again: signing again"
    hp_out_lacks "FAIL"
    hp_no_pin
    ;;
*) hp_fail "unknown case $case" ;;
esac
echo "PASS: remote $case"
