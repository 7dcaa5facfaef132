#!/usr/bin/env bash
# Drives tests/key_reload_memory.c: a token with an EC and an RSA key, a key
# file holding each key's URI (PEM "PKCS#11 PROVIDER URI"), the public key in
# a PEM file; then the program loads the key file again and again, as nginx
# does per handshake when its key is named through a variable.
#
#   key_reload_memory.sh PROGRAM ec|rsa [LOADS WARMUP BOUND]
#
# Default: 10,000 loads, measured every 1,000, bound 64 kB (the program says
# why). In a sanitizer build 1,000 loads every 250, bound 16 kB (a bound of
# 7 bytes a load, as in the plain build, would be 5 kB: the sanitizer
# counts the bytes asked for, without chunk rounding, and LeakSanitizer checks
# at exit besides).
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

prog=${1:?program}
obj=${2:?ec or rsa}
shift 2
if [ $# -eq 0 ]; then
    if [ -n "${HSMPROV_SANITIZER_PRELOAD:-}" ]; then
        set -- 1000 250 16384
    else
        set -- 10000 1000 65536
    fi
fi

hp_setup
uri="pkcs11:token=demo;object=$obj;type=private"
hp_pubout "$uri" "$T/$obj.pub"
printf 'asn1=SEQUENCE:file\n[file]\nversion=VISIBLESTRING:PKCS\\#11 Provider URI v1.0\nuri=UTF8:%s\n' \
    "$uri" >"$T/genconf"
env -u OPENSSL_CONF openssl asn1parse -genconf "$T/genconf" -out "$T/$obj.der" -noout >/dev/null ||
    hp_fail "asn1parse -genconf failed for $uri"
{
    echo "-----BEGIN PKCS#11 PROVIDER URI-----"
    base64 -w 64 "$T/$obj.der"
    echo "-----END PKCS#11 PROVIDER URI-----"
} >"$T/$obj-key.pem"

hp_step "key_reload_memory $obj-key.pem $*"
rc=0
"$prog" "$T/$obj-key.pem" "$T/$obj.pub" "$@" >"$T/out" 2>&1 || rc=$?
HP_OUT=$(cat "$T/out")
HP_CMD="key_reload_memory $obj"
printf '%s\n' "$HP_OUT"
hp_check_sane
[ "$rc" -eq 0 ] || hp_fail "key_reload_memory exit status $rc"
hp_no_pin
hp_out_has "PASS"
