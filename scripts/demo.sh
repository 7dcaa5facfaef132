#!/usr/bin/env bash
# The hsmprov demo: keys that never leave a PKCS#11 token, used from the
# plain openssl command line and from a TLS server.
#
#   1. makes a SoftHSM2 token "demo" in ./demo/ with an RSA-2048 and an EC
#      P-256 key pair (generated inside the token);
#   2. writes ./demo/openssl.cnf, loading hsmprov beside the default provider;
#   3. makes a self-signed certificate for each key, signed by the token, and
#      stores both certificates in the token too;
#   4. signs a file with each token key from the openssl CLI and verifies
#      the signatures in software (the default provider alone);
#   5. serves TLS 1.3 with `openssl s_server -key "pkcs11:..."` and connects
#      with `openssl s_client`, for the EC and the RSA key.
#
# Needs a build (cmake -B build && cmake --build build). Environment:
#   HSMPROV_MODULE     hsmprov.so (default: build/provider/hsmprov.so)
#   SOFTHSM2_MODULE    libsofthsm2.so (default: /usr/lib/softhsm/libsofthsm2.so)
#   HSMPROV_DEMO_DIR   where to work (default: ./demo in the source tree;
#                      emptied first)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${HSMPROV_MODULE:=$root/build/provider/hsmprov.so}"
export HSMPROV_MODULE
if [ ! -f "$HSMPROV_MODULE" ]; then
    echo "demo: $HSMPROV_MODULE not found: build first (cmake -B build && cmake --build build)" >&2
    exit 1
fi
D=${HSMPROV_DEMO_DIR:-$root/demo}

# shellcheck source=tests/lib/testlib.sh
. "$root/tests/lib/testlib.sh"
trap hp_cleanup EXIT # stops the TLS server if we leave early; keeps $D

n=0
step() {
    n=$((n + 1))
    printf '\nStep %d: %s\n' "$n" "$*"
}
say() { printf '  %s\n' "$@"; }
quote() { # a shell-ready rendering of the arguments, for display
    local a out=()
    for a in "$@"; do
        case $a in
        *[\ \;\&\|\<\>\(\)\$\*\?\'\"]*) out+=("\"$a\"") ;;
        *) out+=("$a") ;;
        esac
    done
    printf '%s' "${out[*]}"
}
show() { # show CMD...: print the command, run it, indent its output
    local line
    printf '  $ %s\n' "$(quote "$@")"
    hp_ok "$@"
    [ -z "$HP_OUT" ] || while IFS= read -r line; do printf '      %s\n' "$line"; done <<<"$HP_OUT"
}

# Start afresh, but only ever empty a directory an earlier demo made.
if [ -d "$D" ] && [ -n "$(ls -A "$D")" ] && [ ! -f "$D/.hsmprov-demo" ]; then
    echo "demo: $D exists and was not made by this demo; not touching it" >&2
    exit 1
fi
rm -rf "$D"
mkdir -p "$D"
touch "$D/.hsmprov-demo"
cd "$D"

step "a SoftHSM2 token \"demo\" in $D/tokens, keys generated inside it"
hp_make_token "$D"
hp_keygen rsa:2048 rsa 01
hp_keygen EC:prime256v1 ec 02
say "token \"demo\", user PIN in $D/pin (SoftHSM2 config: $SOFTHSM2_CONF)" \
    "rsa  RSA-2048     id 01  (private key: sensitive, never extractable)" \
    "ec   EC P-256     id 02  (private key: sensitive, never extractable)"

step "openssl.cnf loading hsmprov beside the default provider"
hp_write_cnf "$D"
say "OPENSSL_CONF=$OPENSSL_CONF; its hsmprov section:"
sed -n '/^\[hsmprov_sect\]/,$p' "$OPENSSL_CONF" | sed '/^$/d; s/^/      /'
show openssl list -providers

step "the token's keys, through OSSL_STORE"
show openssl storeutl -noout "pkcs11:token=demo"
show openssl pkey -in "pkcs11:token=demo;object=ec;type=private" -pubout -out ec-pub.pem
show openssl pkey -in "pkcs11:token=demo;object=rsa;type=private" -pubout -out rsa-pub.pem
say "public keys exported to ec-pub.pem and rsa-pub.pem (the private keys stay in the token)"

step "a self-signed certificate for each key, signed by the token, stored in the token too"
for k in rsa ec; do
    id=01
    [ "$k" = ec ] && id=02
    show openssl req -new -x509 -key "pkcs11:token=demo;object=$k;type=private" \
        -subj "/CN=hsmprov demo $k" -days 365 -out "$k-cert.pem"
    show openssl verify -CAfile "$k-cert.pem" "$k-cert.pem"
    openssl x509 -in "$k-cert.pem" -outform DER -out "$k-cert.der"
    hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" \
        --write-object "$k-cert.der" --type cert --id "$id" --label "$k"
    say "stored $k-cert.der in the token (label $k, id $id)"
done
show openssl storeutl -noout "pkcs11:token=demo"

step "sign a file with each token key from the openssl CLI; verify in software"
printf 'Hello from hsmprov: this file was signed inside a PKCS#11 token.\n' >hello.txt
for k in rsa ec; do
    show openssl dgst -sha256 -sign "pkcs11:token=demo;object=$k;type=private" \
        -out "hello.txt.$k.sig" hello.txt
    say "verifying with the default provider only (OPENSSL_CONF=/dev/null: no hsmprov, no token):"
    show env OPENSSL_CONF=/dev/null openssl dgst -sha256 -verify "$k-pub.pem" \
        -signature "hello.txt.$k.sig" hello.txt
done

step "TLS 1.3: openssl s_server with the token keys, openssl s_client connects"
printf 'GET / HTTP/1.0\r\n\r\n' >request
for k in ec rsa; do
    hp_start_server "server-$k.out" -key "pkcs11:token=demo;object=$k;type=private" \
        -cert "$k-cert.pem" -tls1_3 -www -naccept 1
    say "\$ openssl s_server -accept 127.0.0.1:$HP_PORT -key \"pkcs11:token=demo;object=$k;type=private\" -cert $k-cert.pem -tls1_3 -www -naccept 1 &" \
        "  (listening; the private key stays in the token)"
    say "\$ openssl s_client -connect 127.0.0.1:$HP_PORT -tls1_3 -CAfile $k-cert.pem -verify_return_error -ign_eof < request"
    hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
        -CAfile "$k-cert.pem" -verify_return_error -ign_eof <request
    printf '%s\n' "$HP_OUT" >"client-$k.out"
    for pat in '^New, ' '^Peer signature type' '^Verify return code' '^HTTP/'; do
        grep -m1 -E "$pat" <<<"$HP_OUT" | sed 's/^/      /'
    done
    grep -q 'HTTP/1.0 200 ok' <<<"$HP_OUT" || hp_fail "no HTTP answer over TLS"
    grep -q 'Protocol  : TLSv1.3' <<<"$HP_OUT" || hp_fail "not TLS 1.3"
    wait "${HP_PIDS[-1]}" 2>/dev/null || true
    say "the handshake's CertificateVerify was signed by the token's $k key; full logs: $D/client-$k.out, $D/server-$k.out"
done

printf '\nDone. Everything is in %s:\n' "$D"
say "tokens/          the SoftHSM2 token (keys rsa and ec, their certificates)" \
    "openssl.cnf      loads hsmprov beside the default provider" \
    "*-cert.pem       the certificates; *-pub.pem the public keys" \
    "hello.txt*.sig   the file and its signatures"
say "" "To use it yourself:" \
    "  export SOFTHSM2_CONF=$SOFTHSM2_CONF OPENSSL_CONF=$OPENSSL_CONF" \
    "  openssl dgst -sha256 -sign 'pkcs11:token=demo;object=ec;type=private' -out FILE.sig FILE"
