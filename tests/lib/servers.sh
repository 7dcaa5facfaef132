# shellcheck shell=bash
# Sourced by the TLS server tests (tests/server_*.sh): a real server (Apache
# httpd, nginx, haproxy) started from its conf/servers/ example, as root,
# forking its workers (which switch user where the server does that), under
# `timeout`; then fresh handshakes with curl, 16 at a time.
#
#   hs_require BINARY NAME   skip the test (exit 77) when BINARY is absent
#   hs_setup GROUP           temp dir $T readable by GROUP's workers; token
#                            "tls" with "rsa" (RSA-2048), "ec" (P-256) and
#                            "ca" (P-256, the test CA's key); certificates
#                            for ec.test and rsa.test signed through hsmprov
#                            by that CA; $T/etc is the example's /etc/hsmprov
#                            (openssl.cnf from conf/openssl.cnf, the PIN file,
#                            certificates, key files); $T/www, $T/run, $T/log;
#                            HS_ENV: the `env ...` prefix that runs the server
#   hs_cert KEY NAME OUT     OUT: a certificate for NAME with KEY (URI or
#                            key file), issued by the test CA
#   hs_uri_pem URI FILE      FILE: the URI as a key file (PEM "PKCS#11
#                            PROVIDER URI") for servers that only read files
#   hs_example FILE OUT      the conf/servers/ example FILE (from
#                            $HS_EXAMPLES) with this test's paths and port
#                            ($HS_PORT, a free port)
#   hs_start FILE OUT PIDFILE CMD...   start the server (see below)
#   hs_load N [TAG]          N fresh handshakes, 16 at a time: TLS 1.3 and 1.2
#                            alternately, to ec.test and rsa.test by name
#                            (SNI), each checking the certificate against the
#                            CA and the name, and the body; failures counted
#                            in HS_FAILED, results in $T/load-TAG.txt
#   hs_load_start N TAG / hs_load_wait   the same in the background
#   hs_no_crash LOG          no worker crash reported in LOG
#   hs_stop PID              SIGTERM; fail unless every process of the server
#                            is gone within 15 s
#
# The server processes are found by their configuration path (inside $T) and
# killed on exit if anything is left: no server outlives its test.
#
# HS_DIR (default $T) is where hs_example and hs_start put the instance's
# etc/, www/, run/ and log/: a directory inside $T holds a second instance of
# a server beside the first (bench/servers.sh). The token, its softhsm2.conf
# and HS_ENV stay those of $T.

. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

HS_EXAMPLES=$HSMPROV_TESTS_DIR/../conf/servers
HS_BODY="hsmprov TLS test page"

hs_require() {
    local bin=$1 name=$2
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
        echo "SKIP: $name ($bin) is not installed (scripts/install-deps.sh installs it)"
        exit 77
    fi
}

# The server's processes: those whose command line names this test's
# directory, and their descendants (nginx renames its workers).
hs_server_pids() {
    [ -n "$T" ] || return 0
    ps -eo pid=,ppid=,args= | awk -v t="$T" -v self="$$" '
        { pid[NR] = $1; ppid[NR] = $2; if (index($0, t) && $0 !~ /awk/ && $1 != self) mine[$1] = 1 }
        END {
            do {
                more = 0
                for (i = 1; i <= NR; i++)
                    if (!(pid[i] in mine) && (ppid[i] in mine)) { mine[pid[i]] = 1; more = 1 }
            } while (more)
            for (p in mine) print p
        }' | sort -n
}

hs_cleanup() {
    local pids
    pids=$(hs_server_pids)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    hp_cleanup
}

hs_setup() {
    local group=$1
    hp_tmpdir
    trap hs_cleanup EXIT
    # Workers that switch user must reach the token, its config and the
    # document root through $T.
    chmod 755 "$T"
    hp_make_token "$T" tls
    hp_keygen rsa:2048 rsa 01
    hp_keygen EC:prime256v1 ec 02
    hp_keygen EC:prime256v1 ca 0a
    # SoftHSM2 in a worker opens the token's files read-write and takes
    # their locks: the workers' group gets read and write, nobody else.
    chgrp -R "$group" "$T/tokens"
    chmod -R g+rwX,o-rwx "$T/tokens"
    chmod 644 "$T/softhsm2.conf"
    mkdir -p "$T/etc" "$T/www" "$T/run" "$T/log"
    mv "$T/pin" "$T/etc/pin" # root:root 0600: only the server's root parent reads it
    printf '%s\n' "$HS_BODY" >"$T/www/hello.txt"
    chmod 755 "$T/etc" "$T/www" "$T/run"
    chmod 644 "$T/www/hello.txt"
    sed -e "s|^#module = .*|module = $HSMPROV_MODULE|" \
        -e "s|^pkcs11-module-path = .*|pkcs11-module-path = $SOFTHSM2_MODULE|" \
        -e "s|/etc/hsmprov/|$T/etc/|g" \
        "$HSMPROV_TESTS_DIR/../conf/openssl.cnf" >"$T/etc/openssl.cnf"
    if [ -n "${HP_CNF_EXTRA:-}" ]; then
        sed -i "s|^activate = 1\$|$HP_CNF_EXTRA\nactivate = 1|" "$T/etc/openssl.cnf"
    fi
    export OPENSSL_CONF=$T/etc/openssl.cnf
    # The environment a systemd unit (or /etc/apache2/envvars,
    # /etc/default/haproxy) gives the server. The servers are not built with
    # a sanitizer: in a sanitizer build of hsmprov they get its runtime
    # preloaded, without leak checks (their own allocations at exit are not
    # ours to judge).
    # HP_SERVER_DEBUG=1 (by hand, when a server test fails) gives them
    # HSMPROV_DEBUG=1: their logs then hold every call, with each worker's pid.
    HS_ENV=(env "OPENSSL_CONF=$OPENSSL_CONF" "SOFTHSM2_CONF=$T/softhsm2.conf" ${HP_SERVER_DEBUG:+HSMPROV_DEBUG=1})
    if [ -n "${HSMPROV_SANITIZER_PRELOAD:-}" ]; then
        HS_ENV+=("LD_PRELOAD=$HSMPROV_SANITIZER_PRELOAD"
            "ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:detect_odr_violation=0")
    fi

    local obj
    hp_step "test CA (key in the token) and certificates for ec.test and rsa.test"
    hp_ok openssl req -new -x509 -key "$HS_CA_KEY" -subj "/CN=hsmprov test CA" -days 30 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$T/etc/ca.pem"
    for obj in ec rsa; do
        hs_cert "pkcs11:token=tls;object=$obj;type=private" "$obj.test" "$T/etc/$obj-cert.pem"
    done
    chmod 644 "$T"/etc/*.pem
}

HS_CA_KEY="pkcs11:token=tls;object=ca;type=private"

# hs_cert KEY NAME OUT: OUT, a server certificate for NAME (subject and DNS
# name) with KEY (a pkcs11: URI or a key file), issued by the test CA.
hs_cert() {
    local key=$1 name=$2 out=$3
    hp_ok openssl req -new -key "$key" -subj "/CN=$name" -out "$out.csr"
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$name" >"$out.ext"
    hp_ok openssl x509 -req -in "$out.csr" -CA "$T/etc/ca.pem" -CAkey "$HS_CA_KEY" \
        -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -days 30 \
        -extfile "$out.ext" -out "$out"
    rm -f "$out.csr" "$out.ext"
    hp_ok openssl verify -CAfile "$T/etc/ca.pem" "$out"
}

hs_uri_pem() {
    local uri=$1 out=$2 gen=$T/uri-pem.genconf
    # (# starts a comment in the -genconf file: escaped)
    printf 'asn1 = SEQUENCE:uri_seq\n[uri_seq]\ndesc = VISIBLESTRING:PKCS\\#11 Provider URI v1.0\nuri = UTF8:%s\n' \
        "$uri" >"$gen"
    env OPENSSL_CONF=/dev/null openssl asn1parse -genconf "$gen" -noout -out "$gen.der" >/dev/null ||
        hp_fail "cannot encode $uri"
    {
        echo "-----BEGIN PKCS#11 PROVIDER URI-----"
        base64 -w 64 "$gen.der"
        echo "-----END PKCS#11 PROVIDER URI-----"
    } >"$out"
}

# A port nobody listens on; the server's start is the real test of it.
hs_free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            HS_PORT=$p
            return 0
        fi
    done
    hp_fail "no free port"
}

hs_example() {
    local file=$1 out=$2 d=${HS_DIR:-$T}
    [ -f "$HS_EXAMPLES/$file" ] || hp_fail "no example $HS_EXAMPLES/$file"
    sed -e "s|/etc/hsmprov/|$d/etc/|g" \
        -e "s|/var/www/hsmprov|$d/www|g" \
        -e "s|/run/hsmprov|$d/run|g" \
        -e "s|/var/log/hsmprov|$d/log|g" \
        -e "s|/etc/softhsm/softhsm2.conf|$T/softhsm2.conf|g" \
        -e "s|/usr/lib/softhsm/libsofthsm2.so|$SOFTHSM2_MODULE|g" \
        -e "s|443|$HS_PORT|g" \
        "$HS_EXAMPLES/$file" >"$out"
}

# One handshake (run by xargs in a fresh bash): I picks version and name.
hs_one() {
    local i=$1 name ver out kx=() what
    case $((i % 4)) in
    0) name=ec.test ver=1.3 ;;
    1) name=rsa.test ver=1.3 ;;
    2) name=ec.test ver=1.2 ;;
    3) name=rsa.test ver=1.2 ;;
    esac
    what="$name TLSv$ver"
    # One in eight: a legacy client with the RSA key exchange (the token
    # decrypts the premaster secret) instead of ECDHE.
    if [ $((i % 8)) -eq 7 ]; then
        kx=(--ciphers AES128-GCM-SHA256)
        what="$name RSA-key-exchange TLSv$ver"
    fi
    # The client is plain OpenSSL: no hsmprov in curl.
    if out=$(OPENSSL_CONF=/dev/null curl -sS --max-time 20 --cacert "$T/etc/ca.pem" \
        --resolve "$name:$HS_PORT:127.0.0.1" "--tlsv$ver" --tls-max "$ver" "${kx[@]}" \
        -w '%{ssl_verify_result} %{http_code}' "https://$name:$HS_PORT/hello.txt" 2>&1) &&
        [ "$out" = "$HS_BODY"$'\n'"0 200" ]; then
        echo "ok $i $what"
    else
        echo "FAIL $i $what: ${out//$'\n'/ | }"
    fi
}

hs_load_start() {
    local n=$1 tag=$2
    export -f hs_one
    export T HS_PORT HS_BODY
    seq 0 $((n - 1)) | xargs -P16 -n1 bash -c 'hs_one "$1"' _ >"$T/load-$tag.txt" 2>&1 &
    HS_LOAD_PID=$!
    HS_LOAD_TAG=$tag
    HS_LOAD_N=$n
    HS_LOAD_START=$SECONDS
}

hs_load_wait() {
    local f=$T/load-$HS_LOAD_TAG.txt ok
    wait "$HS_LOAD_PID" || true
    HS_LOAD_SECS=$((SECONDS - HS_LOAD_START))
    ok=$(grep -c '^ok ' "$f" || true)
    HS_FAILED=$((HS_LOAD_N - ok))
    echo "$HS_LOAD_TAG: $ok of $HS_LOAD_N handshakes ok" \
        "($(grep -c 'TLSv1.3$' "$f" || true) TLS 1.3, $(grep -c 'TLSv1.2$' "$f" || true) TLS 1.2," \
        "$(grep -c 'RSA-key-exchange' "$f" || true) of them with the RSA key exchange) in ${HS_LOAD_SECS}s"
    if [ "$HS_FAILED" -ne 0 ]; then
        grep -v '^ok ' "$f" | head -20 >&2
        tail -n 30 "$T"/log/* >&2 2>/dev/null || true
        return 1
    fi
}

hs_load() {
    hs_load_start "$1" "${2:-load}"
    hs_load_wait
}

hs_no_crash() {
    local log=$1
    if grep -nE 'exit signal|exited on signal|Segmentation fault|core dumped|Aborted|AddressSanitizer|runtime error:|exited with code (13[2456]|139)' "$log"; then
        hp_fail "a worker crashed (in $log)"
    fi
}

# SIGTERM to the server's main process; all of its processes gone in 15 s.
hs_stop() {
    local pid=$1 left
    kill -TERM "$pid" 2>/dev/null || hp_fail "the server (pid $pid) is not running"
    for _ in $(seq 150); do
        left=$(hs_server_pids)
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    ps -o pid,user,args -p "$(echo "$left" | tr '\n' ',' | sed 's/,$//')" >&2 || true
    hp_fail "the server did not stop within 15 s of SIGTERM"
}

# hs_start EXAMPLE CONF PIDFILE COMMAND...: CONF made from EXAMPLE for a
# free port, then COMMAND (the server in the foreground) under `timeout`
# (HS_TIMEOUT seconds, default 400),
# output in $HS_DIR/log/stdout; returns once the pid file names a live process
# ($HS_PID) and the port answers. A port taken meanwhile by someone else
# (the server cannot bind it) means another port, up to 5 times.
hs_start() {
    local example=$1 conf=$2 pidfile=$3 try wrapper d=${HS_DIR:-$T}
    shift 3
    for try in 1 2 3 4 5; do
        hs_free_port
        hs_example "$example" "$conf"
        rm -f "$pidfile"
        timeout "${HS_TIMEOUT:-400}" "$@" >"$d/log/stdout" 2>&1 </dev/null &
        wrapper=$!
        if hs_wait_pidfile "$pidfile" "$wrapper" && hs_wait_port; then
            HP_PIDS+=("$wrapper")
            echo "server up on port $HS_PORT (try $try), main pid $HS_PID"
            return 0
        fi
        kill "$wrapper" 2>/dev/null || true
        wait "$wrapper" 2>/dev/null || true
        cat "$d"/log/* >&2 2>/dev/null || true
        grep -qiE 'already in use|could not bind|cannot bind|bind\(\)' "$d"/log/* 2>/dev/null ||
            hp_fail "the server did not start"
        echo "port $HS_PORT taken meanwhile; another"
        rm -f "$d"/log/*
    done
    hp_fail "the server did not start: no free port"
}

hs_wait_pidfile() {
    local file=$1 wrapper=$2
    for _ in $(seq 300); do
        if [ -s "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then
            HS_PID=$(cat "$file")
            return 0
        fi
        kill -0 "$wrapper" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Wait until the server answers on its port.
hs_wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$HS_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $HS_PORT" >&2
    return 1
}
