#!/usr/bin/env bash
# nginx started from conf/servers/nginx.conf (4 workers as www-data) again
# and again: at each start, 16 fresh TLS 1.3 handshakes at once the moment
# the port accepts, so the workers, all just forked, reopen the token and log
# in together (SoftHSM2's file store rewrites the token file at each login;
# another process reading it then gets CKR_GENERAL_ERROR, which hsmprov takes
# as a passing fault). Then SIGTERM. Zero failed first handshakes over all
# starts, no worker crash in the log, each stop clean within 15 s.
#
#   server_nginx_restarts.sh [STARTS]   (default 50; 10 in a sanitizer build)
#
# In a sanitizer build, with the workers slowed, a worker's SoftHSM2 more
# often starts while another worker's login rewrites the token's files and
# leaves the token out (every call then answers CKR_SLOT_ID_INVALID): hsmprov
# must notice and start the module again before the first handshake.
#
# The example gets one test-local line per server block: a response header
# naming the worker (nginx's $pid), so that the test can say how many
# workers served each first burst. Nothing else changes.
# shellcheck source=lib/servers.sh
. "$HSMPROV_TESTS_DIR/lib/servers.sh"

hs_require nginx nginx
nginx=$(command -v nginx || echo /usr/sbin/nginx)

starts=${1:-50}
if [ -n "${HSMPROV_SANITIZER_PRELOAD:-}" ]; then
    starts=${1:-10}
fi
burst=16

hs_setup www-data
conf=$T/etc/nginx.conf
for obj in ec rsa; do
    hs_uri_pem "pkcs11:token=tls;object=$obj;type=private" "$T/etc/$obj-key.pem"
done
log=$T/log/nginx-error.log

# The example with the worker header (the sed after hs_example's own).
example="nginx-restarts.conf"
cp "$HS_EXAMPLES/nginx.conf" "$T/$example"
# shellcheck disable=SC2016 # $pid is nginx's
sed -i 's|^\(\s*\)ssl_certificate_key \(.*\)$|&\n\1add_header X-Hsmprov-Worker $pid always;|' \
    "$T/$example"
[ "$(grep -c 'X-Hsmprov-Worker' "$T/$example")" -eq 2 ] ||
    hp_fail "conf/servers/nginx.conf: expected two ssl_certificate_key lines"
HS_EXAMPLES=$T

# One first handshake (run by xargs in a fresh bash): TLS 1.3, EC and RSA
# names alternately, the certificate checked against the CA and the name,
# the body checked; prints the worker that served it.
first_one() {
    local i=$1 name out
    case $((i % 2)) in
    0) name=ec.test ;;
    1) name=rsa.test ;;
    esac
    if out=$(OPENSSL_CONF=/dev/null curl -sS --max-time 20 --cacert "$T/etc/ca.pem" \
        --resolve "$name:$HS_PORT:127.0.0.1" --tlsv1.3 -D "$T/hdr.$i" \
        -w '%{ssl_verify_result} %{http_code}' "https://$name:$HS_PORT/hello.txt" 2>&1) &&
        [ "$out" = "$HS_BODY"$'\n'"0 200" ]; then
        echo "ok $i $name worker=$(tr -d '\r' <"$T/hdr.$i" | awk -F': ' 'tolower($1) == "x-hsmprov-worker" {print $2}')"
    else
        echo "FAIL $i $name: ${out//$'\n'/ | }"
    fi
}
export -f first_one
export T HS_BODY

total=0
failed=0
all_workers=0
spread=""
began=$SECONDS
hp_step "$starts starts; at each, $burst first TLS 1.3 handshakes at once"
for n in $(seq "$starts"); do
    hs_start "$example" "$conf" "$T/run/nginx.pid" \
        "${HS_ENV[@]}" "$nginx" -e "$log" -c "$conf" -g 'daemon off;' >/dev/null
    export HS_PORT
    # shellcheck disable=SC2016
    seq 0 $((burst - 1)) | xargs -P"$burst" -n1 bash -c 'first_one "$1"' _ >"$T/first-$n.txt" 2>&1
    ok=$(grep -c '^ok ' "$T/first-$n.txt" || true)
    workers=$(sed -n 's/^ok .* worker=\([0-9]*\)$/\1/p' "$T/first-$n.txt" | sort -u | wc -l)
    total=$((total + burst))
    failed=$((failed + burst - ok))
    all_workers=$((all_workers + workers))
    spread+=" $workers"
    if [ "$ok" -ne "$burst" ]; then
        echo "start $n: $((burst - ok)) of $burst first handshakes failed:"
        grep -v '^ok ' "$T/first-$n.txt" | head -5
    fi
    hs_stop "$HS_PID"
    # The `timeout` wrapper has ended with nginx: no stale pid for the cleanup.
    wait "${HP_PIDS[-1]}" 2>/dev/null || true
    unset 'HP_PIDS[-1]'
    rm -f "$T"/hdr.*
done
echo "workers that served each start's first burst (of 4):$spread"
echo "$starts starts, $total first handshakes, $failed failed ($((SECONDS - began)) s)"
hs_no_crash "$log"
if [ "$failed" -ne 0 ]; then
    grep -E '\[(crit|alert|emerg|error)\]' "$log" | head -20 >&2 || true
    hp_fail "$failed of $total first handshakes failed over $starts starts"
fi
echo "PASS: server_nginx_restarts"
