#!/usr/bin/env bash
# nginx with its key named through a variable, so that it reads the key file
# (a token key's URI, PEM "PKCS#11 PROVIDER URI") at every handshake: one
# worker, N fresh handshakes (default 10,000; 16 at a time, EC over TLS 1.3
# and RSA over TLS 1.2 by name, each checking the certificate and the
# status), and the worker's resident set (ps -o rss)
# every 1,000. Also the same with the keys named as files (the example as
# written, loaded once by the master), for comparison.
#
#   bench/servers_rss.sh [BUILD_DIR [N]]     (as root; nginx installed)
#
# BUILD_DIR (default build/) gives hsmprov.so. The configuration is
# conf/servers/nginx.conf with one worker and, for the variable run,
#   ssl_certificate     /etc/hsmprov/$ssl_server_name-cert.pem;
#   ssl_certificate_key /etc/hsmprov/$ssl_server_name-key.pem;
# (files named after the SNI name: ec.test-key.pem, rsa.test-key.pem). Not a
# CTest: it takes minutes. Prints one table per run; the figures are the
# machine's of the moment (others share it), growth is what to read.
set -euo pipefail

export HS_TIMEOUT=7200 # the server's own limit (tests/lib/servers.sh)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
n=${2:-10000}
step=1000
[ "$n" -ge "$step" ] || step=$n

export HSMPROV_TESTS_DIR=$root/tests
export HSMPROV_MODULE=$build/provider/hsmprov.so
: "${SOFTHSM2_MODULE:=/usr/lib/softhsm/libsofthsm2.so}"
export SOFTHSM2_MODULE
# shellcheck source=tests/lib/servers.sh
. "$root/tests/lib/servers.sh"
set +e # hs_load's failures are counted, not fatal here

hs_require nginx nginx
nginx=$(command -v nginx || echo /usr/sbin/nginx)
hs_setup www-data
for obj in ec rsa; do
    hs_uri_pem "pkcs11:token=tls;object=$obj;type=private" "$T/etc/$obj-key.pem"
    # The names the variable gives.
    cp "$T/etc/$obj-key.pem" "$T/etc/$obj.test-key.pem"
    cp "$T/etc/$obj-cert.pem" "$T/etc/$obj.test-cert.pem"
done
chmod 644 "$T"/etc/*.pem
# With the key named through a variable, the master loads no key at start:
# it never logs in, and each worker logs in itself at its first handshake,
# as www-data, reading the PIN file. So the workers' group reads it (0640);
# with fixed key files it may stay root's alone.
chgrp www-data "$T/etc/pin"
chmod 640 "$T/etc/pin"
log=$T/log/nginx-error.log

# burst N TAG: N fresh handshakes from two curl processes (so that the
# client's process starts cost nothing per handshake), 8 at a time each:
# ec.test over TLS 1.3, rsa.test over TLS 1.2; no session resumption
# (--no-sessionid), a new connection each (Connection: close); each checks
# the certificate against the CA and the name, and gets the page (200).
burst() {
    local n=$1 tag=$2 half=$(($1 / 2)) ec
    OPENSSL_CONF=/dev/null curl -sS -Z --parallel-max 8 --no-sessionid -H 'Connection: close' \
        --cacert "$T/etc/ca.pem" --resolve "ec.test:$HS_PORT:127.0.0.1" --tlsv1.3 \
        -w '%{http_code} %{ssl_verify_result}\n' -o /dev/null \
        "https://ec.test:$HS_PORT/hello.txt?[1-$half]" >"$T/burst-$tag-ec.txt" 2>"$T/burst-$tag.err" &
    ec=$!
    OPENSSL_CONF=/dev/null curl -sS -Z --parallel-max 8 --no-sessionid -H 'Connection: close' \
        --cacert "$T/etc/ca.pem" --resolve "rsa.test:$HS_PORT:127.0.0.1" --tlsv1.2 --tls-max 1.2 \
        -w '%{http_code} %{ssl_verify_result}\n' -o /dev/null \
        "https://rsa.test:$HS_PORT/hello.txt?[1-$((n - half))]" >"$T/burst-$tag-rsa.txt" 2>>"$T/burst-$tag.err"
    wait "$ec"
    BURST_FAILED=$((n - $(cat "$T/burst-$tag-ec.txt" "$T/burst-$tag-rsa.txt" | grep -c '^200 0$')))
}

# run MODE: MODE "variable" (key read per handshake) or "file" (loaded once).
run() {
    local mode=$1 conf worker rss first first_step failed=0 done_=0 t0 saved
    conf=$T/etc/nginx-$mode.conf
    cp "$HS_EXAMPLES/nginx.conf" "$T/nginx-$mode.example"
    sed -i 's|^worker_processes .*|worker_processes 1;|' "$T/nginx-$mode.example"
    if [ "$mode" = variable ]; then
        # shellcheck disable=SC2016 # nginx's variable
        sed -i -e 's#^\(\s*ssl_certificate\) .*/\(ec\|rsa\)-cert\.pem;#\1 /etc/hsmprov/$ssl_server_name-cert.pem;#' \
            -e 's#^\(\s*ssl_certificate_key\) .*/\(ec\|rsa\)-key\.pem;#\1 /etc/hsmprov/$ssl_server_name-key.pem;#' \
            "$T/nginx-$mode.example"
        [ "$(grep -c 'ssl_server_name' "$T/nginx-$mode.example")" -eq 4 ] ||
            hp_fail "conf/servers/nginx.conf: the certificate lines were not found"
    fi
    saved=$HS_EXAMPLES
    HS_EXAMPLES=$T
    hs_start "nginx-$mode.example" "$conf" "$T/run/nginx.pid" \
        "${HS_ENV[@]}" "$nginx" -e "$log" -c "$conf" -g 'daemon off;' >/dev/null
    HS_EXAMPLES=$saved
    worker=$(ps -o pid= --ppid "$HS_PID" | tr -d ' ' | head -1)
    [ -n "$worker" ] || hp_fail "no nginx worker"
    echo "== $mode: $(grep -E '^\s*ssl_certificate_key' "$conf" | sed 's/^\s*//' | sort -u | tr '\n' ' ')"
    echo "   worker pid $worker; RSS (kB, ps -o rss) every $step handshakes"
    printf '%10s %10s %10s %8s\n' handshakes "RSS kB" "growth kB" failed
    first=$(ps -o rss= -p "$worker" | tr -d ' ')
    printf '%10d %10d %10s %8d\n' 0 "$first" - 0
    t0=$SECONDS
    while [ "$done_" -lt "$n" ]; do
        burst "$step" "$mode-$done_"
        failed=$((failed + BURST_FAILED))
        done_=$((done_ + step))
        rss=$(ps -o rss= -p "$worker" | tr -d ' ')
        [ -n "$rss" ] || hp_fail "the worker $worker is gone (crashed?)"
        [ "$done_" -eq "$step" ] && first_step=$rss
        printf '%10d %10d %10d %8d\n' "$done_" "$rss" $((rss - first_step)) "$failed"
    done
    echo "   $mode: $n handshakes in $((SECONDS - t0)) s, $failed failed; RSS after the first" \
        "$step: $first_step kB, after all: $rss kB ($((rss - first_step)) kB)"
    hs_stop "$HS_PID"
    wait "${HP_PIDS[-1]}" 2>/dev/null || true
    unset 'HP_PIDS[-1]'
    hs_no_crash "$log"
}

echo "hsmprov: $HSMPROV_MODULE; $($nginx -v 2>&1)"
run variable
[ -n "${RSS_ONLY_VARIABLE:-}" ] || run file
