#!/usr/bin/env bash
# Keys and tokens shaped as other modules make them: keys that want the PIN
# for each use, keys restricted to some mechanisms, tokens without public-key
# objects or without combined mechanisms, and software keys while hsmprov is
# preferred by a property query. One mode per test (tests/CMakeLists.txt).
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

mode=${1:?mode}
hp_setup
printf 'keys of every shape\n' >"$T/msg"

# sign_verify URI [DGST OPTS...]: sign with the token key, verify in software
# with the public key exported from it.
sign_verify() {
    local uri=$1
    shift
    hp_ok openssl dgst -sha256 "$@" -sign "$uri" -out "$T/sig" "$T/msg"
    hp_ok openssl dgst -sha256 "$@" -verify "$T/pub.pem" -signature "$T/sig" "$T/msg"
    hp_out_has "Verified OK"
}

case $mode in
always_auth)
    hp_step "keys with CKA_ALWAYS_AUTHENTICATE: a context-specific login per use"
    hp_p11tool --token-label demo --login --pin "$HP_PIN" --keypairgen \
        --key-type EC:prime256v1 --label aa-ec --id 10 --always-auth >/dev/null
    hp_p11tool --token-label demo --login --pin "$HP_PIN" --keypairgen \
        --key-type rsa:2048 --label aa-rsa --id 11 --always-auth >/dev/null
    for k in aa-ec aa-rsa; do
        hp_pubout "pkcs11:token=demo;object=$k;type=public" "$T/pub.pem"
        sign_verify "pkcs11:token=demo;object=$k;type=private"
        hp_no_pin
        hp_step "twice in one process (a login for each operation): req -x509 signs twice"
        hp_ok openssl req -new -x509 -key "pkcs11:token=demo;object=$k;type=private" \
            -subj "/CN=$k" -out "$T/$k.crt"
        hp_ok openssl verify -CAfile "$T/$k.crt" "$T/$k.crt"
    done
    hp_step "RSA decryption with an always-authenticate key"
    openssl pkeyutl -encrypt -pubin -inkey "$T/pub.pem" -in "$T/msg" -out "$T/enc"
    hp_ok openssl pkeyutl -decrypt -inkey "pkcs11:token=demo;object=aa-rsa;type=private" \
        -in "$T/enc" -out "$T/dec"
    cmp "$T/msg" "$T/dec" || hp_fail "decrypted text differs"
    ;;
prefer_software)
    hp_step "?provider=hsmprov is a preference: software keys sign and verify as before"
    for alg in RSA EC ED25519; do
        case $alg in
        EC) hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/k.pem" ;;
        *) hp_ok openssl genpkey -algorithm $alg -out "$T/k.pem" ;;
        esac
        hp_ok openssl pkey -in "$T/k.pem" -pubout -out "$T/pub.pem"
        if [ $alg = ED25519 ]; then
            hp_ok openssl pkeyutl -sign -rawin -propquery '?provider=hsmprov' \
                -inkey "$T/k.pem" -in "$T/msg" -out "$T/sig"
            hp_ok openssl pkeyutl -verify -rawin -propquery '?provider=hsmprov' -pubin \
                -inkey "$T/pub.pem" -in "$T/msg" -sigfile "$T/sig"
            hp_out_has "Signature Verified Successfully"
            continue
        fi
        hp_ok openssl dgst -sha256 -propquery '?provider=hsmprov' -sign "$T/k.pem" \
            -out "$T/sig" "$T/msg"
        hp_ok openssl dgst -sha256 -propquery '?provider=hsmprov' -verify "$T/pub.pem" \
            -signature "$T/sig" "$T/msg"
        hp_out_has "Verified OK"
        hp_step "a bad signature is still refused"
        printf 'other\n' >"$T/msg2"
        hp_fails openssl dgst -sha256 -propquery '?provider=hsmprov' -verify "$T/pub.pem" \
            -signature "$T/sig" "$T/msg2"
        hp_out_has "Verification failure"
    done
    hp_step "RSA-PSS verification of a software key with the preference"
    openssl genpkey -algorithm RSA -out "$T/r.pem" 2>/dev/null
    openssl pkey -in "$T/r.pem" -pubout -out "$T/r.pub"
    hp_ok openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sign "$T/r.pem" -out "$T/sig" "$T/msg"
    hp_ok openssl dgst -sha256 -propquery '?provider=hsmprov' -sigopt rsa_padding_mode:pss \
        -verify "$T/r.pub" -signature "$T/sig" "$T/msg"
    hp_out_has "Verified OK"
    hp_step "a TLS client that prefers hsmprov verifies a software server's certificate"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/srv.key" -out "$T/srv.crt" \
        -subj /CN=localhost 2>/dev/null
    hp_start_server "$T/srv.log" -cert "$T/srv.crt" -key "$T/srv.key" -www
    hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" \
        -propquery '?provider=hsmprov' -CAfile "$T/srv.crt" -verify_return_error </dev/null
    hp_out_has "Verify return code: 0 (ok)"
    ;;
*)
    hp_fail "unknown mode $mode"
    ;;
esac
echo "PASS: key_shapes $mode"
