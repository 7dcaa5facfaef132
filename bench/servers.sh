#!/usr/bin/env bash
# Handshakes per second of real TLS servers (Apache httpd with the event MPM,
# nginx, haproxy: those installed) with the token keys, against the same
# server with software keys of the same kinds, in the same run; and how close
# the token figure comes to what the token's raw signing rate allows.
#
#   bench/servers.sh [--quick] [--seconds S] [--rounds N] [--servers LIST] [OUTDIR]
#
# Per server, two instances from its conf/servers/ example run at once on
# two ports: one with the keys in a SoftHSM2 token (set up as the tests
# server_* do, tests/lib/servers.sh), one with EC P-256 and RSA-2048 keys in
# plain PEM files, certificates for the same names from the same test CA.
# Per key kind (ec.test, rsa.test): a warm-up second on each instance, then N
# rounds (default 3) of S seconds (default 10) of `tlsload` (16 client
# threads, TLS 1.3, fresh handshakes, chain and name verified, one GET each),
# token and software instance taking turns round by round. hsmbench measures
# the token's signing rate at 16 threads in the same run (on a token made as
# bench/run.sh makes one) for the "allowed" column.
#
# --quick: 1 round of 2 s per instance and key kind, no warm-up (a smoke
# check). --servers: only these, comma-separated (apache, nginx, haproxy;
# default all three). Writes OUTDIR/servers.txt and OUTDIR/servers.csv
# (OUTDIR defaults to bench/results). Must run as root: the servers start as root and their
# workers switch user, as in the tests. Environment: HSMBENCH, TLSLOAD,
# HSMPROV_MODULE, SOFTHSM2_MODULE (defaults: build-bench/bench/hsmbench,
# build-bench/bench/tlsload, build-bench/provider/hsmprov.so,
# /usr/lib/softhsm/libsofthsm2.so).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
: "${HSMBENCH:=$top/build-bench/bench/hsmbench}"
: "${TLSLOAD:=$top/build-bench/bench/tlsload}"
: "${HSMPROV_MODULE:=$top/build-bench/provider/hsmprov.so}"
: "${SOFTHSM2_MODULE:=/usr/lib/softhsm/libsofthsm2.so}"
export HSMPROV_MODULE SOFTHSM2_MODULE
export HSMPROV_TESTS_DIR=$top/tests

die() {
    echo "servers.sh: $*" >&2
    exit 2
}

rounds=3 seconds=10 warm=1 quick=0 out=$here/results args=("$@") only=apache,nginx,haproxy
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    --seconds)
        [ $# -ge 2 ] || die "--seconds needs a value"
        seconds=$2
        shift
        ;;
    --rounds)
        [ $# -ge 2 ] || die "--rounds needs a value"
        rounds=$2
        shift
        ;;
    --servers)
        [ $# -ge 2 ] || die "--servers needs a value"
        [[ $2 =~ ^(apache|nginx|haproxy)(,(apache|nginx|haproxy))*$ ]] ||
            die "--servers takes apache, nginx and haproxy, comma-separated"
        only=$2
        shift
        ;;
    -h | --help)
        sed -n '2,27p' "$0"
        exit 0
        ;;
    -*) die "unknown option $1" ;;
    *) out=$1 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    rounds=1 seconds=2 warm=0
fi
[[ $rounds =~ ^[1-9][0-9]?$ ]] || die "--rounds must be 1 to 99: $rounds"
if ! [[ $seconds =~ ^[0-9]{1,4}(\.[0-9]{1,3})?$ ]] ||
    ! awk -v s="$seconds" 'BEGIN { exit !(s >= 0.1 && s <= 3600) }'; then
    die "--seconds must be 0.1 to 3600: $seconds"
fi
[ "$(id -u)" = 0 ] || die "run it as root: the servers start as root and switch user"
[ -x "$TLSLOAD" ] || die "$TLSLOAD not built (cmake --build build-bench)"
[ -x "$HSMBENCH" ] || die "$HSMBENCH not built (cmake --build build-bench)"
[ -f "$HSMPROV_MODULE" ] || die "$HSMPROV_MODULE not built (cmake --build build-bench)"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Progress to stderr; stdout (fd 3) gets the table only.
exec 3>&1 1>&2

# shellcheck source=tests/lib/servers.sh
. "$HSMPROV_TESTS_DIR/lib/servers.sh"

btmp=$(mktemp -d "${TMPDIR:-/tmp}/hsmprov-servers.XXXXXX")
bench_cleanup() {
    hs_cleanup
    rm -rf "$btmp"
}
trap bench_cleanup EXIT

# A server pair lives for both key kinds' rounds; `timeout` must not end it.
HS_TIMEOUT=$(awk -v n="$rounds" -v s="$seconds" -v w="$warm" \
    'BEGIN { printf "%d", 2 * 2 * (w + 2 + n * (s + 2)) + 180 }')

server_bin() {
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    elif [ -x "/usr/sbin/$1" ]; then
        echo "/usr/sbin/$1"
    fi
}

version_of() {
    case $1 in
    apache) "$2" -v 2>/dev/null | sed -n 's/^Server version: \([^ ]*\).*/\1/p' ;;
    nginx) "$2" -v 2>&1 | sed -n 's/^nginx version: //p' ;;
    haproxy) "$2" -v 2>/dev/null | sed -n '1s/^HAProxy version \([^ ]*\).*/HAProxy \1/p' ;;
    esac
}

# Other work on the machine skews the figures: say how busy it was.
date_start=$(date -u '+%Y-%m-%d %H:%M UTC')
uptime_before=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the token's signing rate at 16 threads -------------------------------
# On a token of its own, made as bench/run.sh makes one: the token's speed is
# what matters, and the servers' token stays untouched by another user.
sign_csv=$btmp/sign.csv
# shellcheck disable=SC2054 # (comma-separated lists are hsmbench's syntax)
sign_opts=(--only sign --algs ECDSA-P256,RSA-PSS --threads 16
    --paths raw-token,raw-session,software --csv "$sign_csv")
[ "$quick" = 0 ] || sign_opts+=(--quick)
hp_step "hsmbench ${sign_opts[*]}"
(
    hp_make_token "$btmp/token" demo
    hp_keygen rsa:2048 rsa 01
    hp_keygen EC:prime256v1 ec 02
    hp_write_cnf "$btmp/token"
    "$HSMBENCH" --module "$SOFTHSM2_MODULE" --token demo --pin-file "$btmp/token/pin" \
        "${sign_opts[@]}"
) >"$btmp/sign.txt" 2>&1 || {
    cat "$btmp/sign.txt"
    die "hsmbench failed"
}
cat "$btmp/sign.txt"

# sign_rate ALG PATH: median ops/s at 16 threads, or nothing.
sign_rate() {
    awk -F, -v a="$1" -v p="$2" \
        '$1 == "sign" && $2 == a && $3 == p && $4 == 16 && $6 ~ /^[0-9.]+$/ { print $6 }' \
        "$sign_csv"
}
for alg in ECDSA-P256 RSA-PSS; do
    for p in raw-token raw-session software; do
        [ -n "$(sign_rate "$alg" "$p")" ] || die "hsmbench gave no $alg $p figure (see above)"
    done
done

# ---- the servers ------------------------------------------------------------
results=$btmp/results # server key rate-lists and failures, one row per (server, key)
: >"$results"
skipped=() versions=() logs_kept=() failed_total=0
rm -f "$out"/servers-*-token.log "$out"/servers-*-software.log

# make_software_instance: $T/sw, the second instance's tree: the same page,
# software keys of the token keys' kinds, certificates for the same names
# from the same CA.
make_software_instance() {
    local sw=$T/sw
    mkdir -p "$sw/etc/haproxy" "$sw/www" "$sw/run" "$sw/log"
    chmod 755 "$sw" "$sw/etc" "$sw/www" "$sw/run"
    cp "$T/www/hello.txt" "$sw/www/hello.txt"
    chmod 644 "$sw/www/hello.txt"
    hp_step "software keys (EC P-256, RSA-2048) and their certificates from the test CA"
    # No hsmprov here: the keys are made by the default provider, in files.
    hp_ok env OPENSSL_CONF=/dev/null openssl genpkey -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -out "$sw/etc/ec-key.pem"
    hp_ok env OPENSSL_CONF=/dev/null openssl genpkey -algorithm RSA \
        -pkeyopt rsa_keygen_bits:2048 -out "$sw/etc/rsa-key.pem"
    chmod 600 "$sw/etc/ec-key.pem" "$sw/etc/rsa-key.pem"
    hs_cert "$sw/etc/ec-key.pem" ec.test "$sw/etc/ec-cert.pem"
    hs_cert "$sw/etc/rsa-key.pem" rsa.test "$sw/etc/rsa-cert.pem"
    chmod 644 "$sw/etc/ec-cert.pem" "$sw/etc/rsa-cert.pem"
}

# start_instance SERVER BIN DIR: the server's example with its keys in DIR
# ($T: the token's; $T/sw: the files), port in $HS_PORT, main pid in $HS_PID.
start_instance() {
    local server=$1 bin=$2 d=$3 obj
    HS_DIR=$d
    case $server in
    apache)
        if [ "$d" != "$T" ]; then
            # Apache names the token keys by URI in its configuration: the
            # software instance's copy names the key files instead.
            mkdir -p "$T/examples-sw"
            sed -E 's#"pkcs11:token=tls;object=(ec|rsa);type=private"#/etc/hsmprov/\1-key.pem#' \
                "$HS_EXAMPLES/apache2.conf" >"$T/examples-sw/apache2.conf"
            [ "$(grep -c 'hsmprov/\(ec\|rsa\)-key.pem' "$T/examples-sw/apache2.conf")" = 2 ] ||
                hp_fail "conf/servers/apache2.conf: no key URIs to replace"
            HS_EXAMPLES=$T/examples-sw
        fi
        hs_start apache2.conf "$d/etc/apache2.conf" "$d/run/apache2.pid" \
            "${HS_ENV[@]}" "$bin" -f "$d/etc/apache2.conf" -DFOREGROUND
        ;;
    nginx)
        if [ "$d" = "$T" ]; then
            for obj in ec rsa; do
                hs_uri_pem "pkcs11:token=tls;object=$obj;type=private" "$T/etc/$obj-key.pem"
            done
        fi
        hs_start nginx.conf "$d/etc/nginx.conf" "$d/run/nginx.pid" \
            "${HS_ENV[@]}" "$bin" -e "$d/log/nginx-error.log" -c "$d/etc/nginx.conf" \
            -g 'daemon off;'
        ;;
    haproxy)
        mkdir -p "$d/etc/haproxy"
        for obj in ec rsa; do
            [ "$d" != "$T" ] ||
                hs_uri_pem "pkcs11:token=tls;object=$obj;type=private" "$T/etc/$obj-key.pem"
            cat "$d/etc/$obj-cert.pem" "$d/etc/$obj-key.pem" >"$d/etc/haproxy/$obj.pem"
            chmod 600 "$d/etc/haproxy/$obj.pem"
        done
        hs_start haproxy.cfg "$d/etc/haproxy.cfg" "$d/run/haproxy.pid" \
            "${HS_ENV[@]}" "$bin" -W -f "$d/etc/haproxy.cfg"
        ;;
    esac
    HS_DIR=
    HS_EXAMPLES=$HSMPROV_TESTS_DIR/../conf/servers
}

server_log() {
    case $1 in
    apache) echo "$2/log/apache2-error.log" ;;
    nginx) echo "$2/log/nginx-error.log" ;;
    haproxy) echo "$2/log/stdout" ;;
    esac
}

# load INSTANCE PORT NAME SECONDS: one tlsload run; its rate in $rate,
# failures added to $failed. The client loads no provider of ours
# (OPENSSL_CONF=/dev/null).
load() {
    local inst=$1 port=$2 name=$3 secs=$4 line re
    line=$(env OPENSSL_CONF=/dev/null "$TLSLOAD" --port "$port" --sni "$name" \
        --ca "$T/etc/ca.pem" --threads 16 --seconds "$secs" --tls 1.3) ||
        hp_fail "tlsload did not run against $name on port $port"
    re='^handshakes ([0-9]+) failed ([0-9]+) seconds ([0-9.]+) rate ([0-9.]+)$'
    [[ $line =~ $re ]] || hp_fail "unexpected output from tlsload: $line"
    rate=${BASH_REMATCH[4]}
    failed=$((failed + BASH_REMATCH[2]))
    printf '  %-8s %-8s port %-5s %s\n' "$inst" "$name" "$port" "$line"
}

run_server() {
    local server=$1 bin=$2 group=$3 tport tpid sport spid kind name r inst
    local tok soft ftok fsoft rate failed fserver=0
    hs_setup "$group"
    trap bench_cleanup EXIT
    make_software_instance
    hp_step "$server: the token instance and the software instance"
    start_instance "$server" "$bin" "$T"
    tport=$HS_PORT tpid=$HS_PID
    start_instance "$server" "$bin" "$T/sw"
    sport=$HS_PORT spid=$HS_PID
    for kind in ec rsa; do
        name=$kind.test tok="" soft="" ftok=0 fsoft=0
        hp_step "$server $name: $rounds rounds of $seconds s, 16 threads, token and software in turn"
        if [ "$warm" != 0 ]; then
            failed=0
            load token "$tport" "$name" "$warm"
            ftok=$failed failed=0
            load software "$sport" "$name" "$warm"
            fsoft=$failed
        fi
        for r in $(seq "$rounds"); do
            # The first instance of a round alternates, so that neither
            # always follows the same one.
            for inst in $([ $((r % 2)) = 1 ] && echo "token software" || echo "software token"); do
                failed=0
                if [ "$inst" = token ]; then
                    load token "$tport" "$name" "$seconds"
                    tok+="$rate " ftok=$((ftok + failed))
                else
                    load software "$sport" "$name" "$seconds"
                    soft+="$rate " fsoft=$((fsoft + failed))
                fi
            done
        done
        echo "$server $kind $ftok $fsoft ${tok% };${soft% }" >>"$results"
        failed_total=$((failed_total + ftok + fsoft))
        fserver=$((fserver + ftok + fsoft))
    done
    hp_step "$server: SIGTERM to both instances, every process gone within 15 s"
    kill -TERM "$spid" 2>/dev/null || hp_fail "the software instance (pid $spid) is not running"
    hs_stop "$tpid"
    if [ "$fserver" != 0 ]; then
        # The servers' own account of the failures outlives their directory.
        cp "$(server_log "$server" "$T")" "$out/servers-$server-token.log"
        cp "$(server_log "$server" "$T/sw")" "$out/servers-$server-software.log"
        echo "$server: $fserver failed handshakes; server logs kept in" \
            "$out/servers-$server-{token,software}.log; their last lines:"
        tail -n 20 "$out/servers-$server-token.log" "$out/servers-$server-software.log"
        logs_kept+=("$out/servers-$server-token.log" "$out/servers-$server-software.log")
    fi
    hs_no_crash "$(server_log "$server" "$T")"
    hs_no_crash "$(server_log "$server" "$T/sw")"
    hs_cleanup
    T=''
    HP_PIDS=()
}

for spec in apache:apache2:www-data nginx:nginx:www-data haproxy:haproxy:haproxy; do
    IFS=: read -r server binname group <<<"$spec"
    [[ ,$only, == *,$server,* ]] || continue
    bin=$(server_bin "$binname")
    if [ -z "$bin" ]; then
        skipped+=("$server ($binname) is not installed: skipped")
        echo "SKIP: ${skipped[-1]}"
        continue
    fi
    versions+=("$(version_of "$server" "$bin")")
    run_server "$server" "$bin" "$group"
done
uptime_after=$(cut -d' ' -f1-3 /proc/loadavg)
# (the last server's configuration is gone with its directory)
unset OPENSSL_CONF SOFTHSM2_CONF

# ---- the table ----------------------------------------------------------------
s_raw_ec=$(awk -v a="$(sign_rate ECDSA-P256 raw-token)" -v b="$(sign_rate ECDSA-P256 raw-session)" \
    'BEGIN { print (a > b ? a : b) }')
s_raw_rsa=$(awk -v a="$(sign_rate RSA-PSS raw-token)" -v b="$(sign_rate RSA-PSS raw-session)" \
    'BEGIN { print (a > b ? a : b) }')
s_soft_ec=$(sign_rate ECDSA-P256 software)
s_soft_rsa=$(sign_rate RSA-PSS software)

cmd="bench/servers.sh${args[*]:+ ${args[*]}}"
{
    echo "date:     $date_start"
    echo "load:     $uptime_before (1, 5, 15 min) before the run"
    echo "load:     $uptime_after (1, 5, 15 min) after the run"
    echo "machine:  $(nproc) CPUs, $(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //'), $(uname -sr)"
    echo "software: $(openssl version), SoftHSM $(env -u OPENSSL_CONF softhsm2-util --version)"
    vs=$(IFS=,; echo "${versions[*]:-none}")
    echo "servers:  ${vs//,/, }"
    echo "command:  $cmd"
    echo
    echo "Median [min..max] of $rounds round(s) of $seconds s per instance; 16 client threads (tlsload),"
    echo "TLS 1.3, a full handshake per connection; both instances of a server running, in turns."
    printf 'Signing at 16 threads (hsmbench): ECDSA-P256 raw %.0f/s, software %.0f/s; RSA-PSS raw %.0f/s, software %.0f/s.\n' \
        "$s_raw_ec" "$s_soft_ec" "$s_raw_rsa" "$s_soft_rsa"
    echo "allowed = 1 / (1/software hs/s - 1/software sign/s + 1/raw sign/s)"
    echo
    printf '%-8s %-10s %4s  %-18s %-18s %-9s %-8s %-12s %s\n' server key thr "token hs/s" \
        "software hs/s" tok/soft allowed tok/allowed failed
} >"$btmp/table"

csv=$out/servers.csv
echo "server,key,threads,rounds,seconds,token_median,token_min,token_max,software_median,software_min,software_max,tok_soft,sign_software,sign_raw,allowed,tok_allowed,failed_token,failed_software,token_rounds,software_rounds" >"$csv"
while read -r server kind ftok fsoft lists; do
    if [ "$kind" = ec ]; then
        label="EC P-256" ssoft=$s_soft_ec sraw=$s_raw_ec
    else
        label="RSA-2048" ssoft=$s_soft_rsa sraw=$s_raw_rsa
    fi
    awk -v server="$server" -v label="$label" -v lists="$lists" -v ssoft="$ssoft" \
        -v sraw="$sraw" -v ftok="$ftok" -v fsoft="$fsoft" -v rounds="$rounds" \
        -v secs="$seconds" -v csv="$csv" '
        function stats(s, st,   a, n, i, j, t) {
            n = split(s, a, " ")
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            st["med"] = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            st["min"] = a[1]; st["max"] = a[n]
        }
        BEGIN {
            split(lists, l, ";")
            stats(l[1], t); stats(l[2], s)
            ratio = s["med"] > 0 ? sprintf("%.2f", t["med"] / s["med"]) : "n/a"
            den = s["med"] > 0 ? 1 / s["med"] - 1 / ssoft + 1 / sraw : 0
            allowed = den > 0 ? 1 / den : 0
            ta = allowed > 0 ? sprintf("%.2f", t["med"] / allowed) : "n/a"
            al = allowed > 0 ? sprintf("%.0f", allowed) : "n/a"
            printf "%-8s %-10s %4d  %-18s %-18s %-9s %-8s %-12s %d\n", server, label, 16,
                sprintf("%.0f [%.0f..%.0f]", t["med"], t["min"], t["max"]),
                sprintf("%.0f [%.0f..%.0f]", s["med"], s["min"], s["max"]), ratio, al, ta,
                ftok + fsoft
            gsub(/ /, ";", l[1]); gsub(/ /, ";", l[2])
            printf "%s,%s,16,%d,%s,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%s,%s,%s,%s,%s,%d,%d,%s,%s\n",
                server, label, rounds, secs, t["med"], t["min"], t["max"], s["med"], s["min"],
                s["max"], ratio, ssoft, sraw, (allowed > 0 ? sprintf("%.1f", allowed) : "n/a"),
                ta, ftok, fsoft, l[1], l[2] >> csv
        }'
done <"$results" >>"$btmp/table"
{
    for s in "${skipped[@]}"; do
        echo "$s"
    done
    echo
    if [ "$failed_total" = 0 ]; then
        echo "failed handshakes: 0"
    else
        echo "FAILED HANDSHAKES: $failed_total (see the tlsload messages above; every figure is suspect)"
        echo "server logs: ${logs_kept[*]}"
    fi
    echo
    echo "hsmbench, signing at 16 threads:"
    grep -E '^(hsmbench:|Median|signing |ECDSA-P256 |RSA-PSS )' "$btmp/sign.txt" || true
} >>"$btmp/table"

cp "$btmp/table" "$out/servers.txt"
cat "$btmp/table" >&3
echo "results: $out/servers.txt $out/servers.csv"
if [ "$failed_total" != 0 ]; then
    echo "servers.sh: FAILED HANDSHAKES: $failed_total" >&2
    exit 1
fi
