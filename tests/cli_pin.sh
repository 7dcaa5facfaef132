#!/usr/bin/env bash
# The PIN reaches the token from each of its sources, and signing works:
#
#   cli_pin.sh config_file     pkcs11-module-token-pin = file:PATH
#   cli_pin.sh config_literal  pkcs11-module-token-pin = PIN
#   cli_pin.sh uri_pin_value   no PIN in the config; ;pin-value= in the URI
#   cli_pin.sh uri_pin_source  no PIN in the config; ;pin-source=file:PATH and
#                              ;pin-source=PATH in the URI
#   cli_pin.sh passin          no PIN in the config; OpenSSL's passphrase
#                              callback (-passin pass:, file:, stdin, and an
#                              interactive prompt on a terminal)
#   cli_pin.sh absent          no PIN anywhere and no terminal: a clean error,
#                              no hang, no crash
#
# The PIN is a distinctive string here so that "the PIN is never printed" can
# be checked without false alarms from hex dumps or line numbers.
HP_PIN=hp-pin-4711
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

mode=${1:?mode}
case $mode in
config_file) hp_setup ;;
config_literal) HP_CNF_PIN="pkcs11-module-token-pin = $HP_PIN" hp_setup ;;
uri_pin_value | uri_pin_source | passin | absent) HP_CNF_PIN="" hp_setup ;;
*) hp_fail "unknown mode $mode" ;;
esac
grep -q 'pkcs11-module-token-pin' "$OPENSSL_CONF" || [ "${mode#config_}" = "$mode" ] ||
    hp_fail "config has no PIN directive"

hp_openssl_argv
key="pkcs11:token=demo;object=ec;type=private"
printf 'message to sign\n' >"$T/msg"
openssl dgst -sha256 -binary -out "$T/msg.hash" "$T/msg"

hp_step "export the public key (a public object: no PIN needed)"
hp_pubout "pkcs11:token=demo;object=ec;type=public" "$T/pub.pem"

# sign_verify URI [pkeyutl args...]: sign with the token, verify in software.
sign_verify() {
    local uri=$1
    shift
    rm -f "$T/sig"
    hp_ok openssl pkeyutl -sign -inkey "$uri" "$@" -in "$T/msg.hash" -out "$T/sig"
    hp_no_pin
    hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$T/msg.hash" -sigfile "$T/sig"
    hp_out_has "Signature Verified Successfully"
}

case $mode in
config_file | config_literal)
    hp_step "sign with the PIN from the config ($mode)"
    sign_verify "$key"
    hp_step "dgst -sign too"
    hp_ok openssl dgst -sha256 -sign "$key" -out "$T/sig2" "$T/msg"
    hp_no_pin
    hp_ok openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig2" "$T/msg"
    hp_step "with HSMPROV_DEBUG=1 the PIN is not logged"
    HSMPROV_DEBUG=1 hp_ok openssl pkeyutl -sign -inkey "$key" -in "$T/msg.hash" -out "$T/sig3"
    hp_out_has "C_Login"
    hp_no_pin
    ;;
uri_pin_value)
    hp_step "sign with ;pin-value= in the URI"
    sign_verify "$key;pin-value=$HP_PIN"
    ;;
uri_pin_source)
    hp_step "sign with ;pin-source=file:$T/pin"
    sign_verify "$key;pin-source=file:$T/pin"
    hp_step "sign with ;pin-source=$T/pin (a plain path)"
    sign_verify "$key;pin-source=$T/pin"
    hp_step "with HSMPROV_DEBUG=1 the PIN is not logged"
    HSMPROV_DEBUG=1 hp_ok openssl pkeyutl -sign -inkey "$key;pin-source=file:$T/pin" \
        -in "$T/msg.hash" -out "$T/sig3"
    hp_no_pin
    ;;
passin)
    hp_step "sign with -passin pass:PIN (the passphrase callback)"
    sign_verify "$key" -passin "pass:$HP_PIN"
    hp_step "sign with -passin file:PATH"
    sign_verify "$key" -passin "file:$T/pin"
    hp_step "sign with -passin stdin"
    rm -f "$T/sig"
    # shellcheck disable=SC2016 # expanded by the inner bash
    hp_ok bash -c 'printf "%s\n" "$1" | "${@:2}"' _ "$HP_PIN" \
        "${HP_OPENSSL[@]}" pkeyutl -sign -inkey "$key" -passin stdin \
        -in "$T/msg.hash" -out "$T/sig"
    hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$T/msg.hash" -sigfile "$T/sig"
    hp_step "openssl prompts on the terminal when nothing else gives the PIN"
    if command -v script >/dev/null; then
        rm -f "$T/sig"
        cmd=$(printf '%q ' "${HP_OPENSSL[@]}" pkeyutl -sign -inkey "$key" \
            -in "$T/msg.hash" -out "$T/sig")
        # script(1) gives openssl a terminal; the PIN is typed into it after a
        # moment, when the prompt is up.
        hp_ok timeout 30 script -qec "$cmd" /dev/null \
            < <(sleep 2; printf '%s\n' "$HP_PIN"; sleep 5)
        hp_out_has "pass phrase"
        hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -in "$T/msg.hash" -sigfile "$T/sig"
        hp_out_has "Signature Verified Successfully"
    else
        echo "script(1) not installed: interactive prompt not tested"
    fi
    ;;
absent)
    hp_step "no PIN, no terminal: the signature fails cleanly"
    hp_fails timeout 30 setsid "${HP_OPENSSL[@]}" pkeyutl -sign -inkey "$key" \
        -in "$T/msg.hash" -out "$T/sig" </dev/null
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_Login" "demo"
    [ ! -s "$T/sig" ] || hp_fail "a signature was written without a PIN"
    ;;
esac

echo "PASS: cli_pin $mode"
