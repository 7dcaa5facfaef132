#!/usr/bin/env bash
# Hostile pkcs11: URIs: no crash, no PIN in hsmprov's messages, no attribute
# that silently changes which key is meant, no raw control characters in
# error text.
#
#   bad_input_uri.sh CASE
#     many_pin_values    ;pin-value= given 4 and 40 times, empty (a heap
#                        overflow once): a clear error, no crash (ASan build)
#     pin_never_shown    the right PIN, a missing object: pin-value after a
#                        space, first after pkcs11:, in the query part, and
#                        under a percent-encoded name: never in hsmprov's text
#     duplicates         object=, id=, type= (and its aliases), token=,
#                        pin-value= given twice: refused, naming the attribute
#     unknown_or_bad     an unknown path attribute, an unknown type=, a token
#                        label too long for its field: refused, naming it
#     slot_attributes    slot-id, slot-description, slot-manufacturer and
#                        library-* choose the slot (right value: the key;
#                        wrong value: no token), for pkey and storeutl
#     module_attributes  module-name / module-path naming the configured
#                        module work; naming another one is an error naming both
#     control_chars      ESC in a URI and a newline in a key's label are
#                        escaped in hsmprov's error text (no forged log line)
HP_PIN=hp-pin-4711
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup
printf 'data\n' >"$T/msg"
openssl dgst -sha256 -binary -out "$T/msg.hash" "$T/msg"

# hsmprov's own error lines (openssl's "Could not read key from ARG" repeats
# the command line argument as given, which is not ours to change).
hp_lines() {
    grep -F ':hsmprov:' <<<"$HP_OUT" || true
}

pub_ok() {
    hp_ok openssl pkey -pubout -in "$1" -out "$T/pub.pem"
    grep -q 'BEGIN PUBLIC KEY' "$T/pub.pem" || hp_fail "no public key from $1"
}

pub_fails() {
    hp_fails hp_timeout 60 openssl pkey -pubout -in "$1" -out "$T/pub.pem"
    printf '%s\n' "$HP_OUT"
    [ -n "$(hp_lines)" ] || hp_fail "no error from hsmprov"
    if hp_lines | grep -qF "$HP_PIN"; then
        hp_fail "hsmprov's error text holds the PIN"
    fi
}

case $case in
many_pin_values)
    for n in 4 40; do
        uri="pkcs11:token=demo;object=ec;type=private"
        for ((i = 0; i < n; i++)); do uri+=";pin-value="; done
        hp_step "$n empty pin-values"
        pub_fails "$uri"
        hp_out_has "pin-value given more than once"
    done
    hp_step "one empty pin-value is a URI like any other (then the token says no)"
    hp_fails hp_timeout 60 openssl pkey -pubout -in "pkcs11:token=demo;object=ec;type=private;pin-value=" \
        -out "$T/pub.pem"
    ;;
pin_never_shown)
    for uri in "pkcs11:token=demo;object=nope;type=private; pin-value=$HP_PIN" \
        "pkcs11:pin-value=$HP_PIN;token=demo;object=nope;type=private" \
        "pkcs11:token=demo;object=nope;type=private?pin-value=$HP_PIN" \
        "pkcs11:token=demo;object=nope;type=private;pin-value=%68p-pin-4711" \
        "pkcs11:token=demo;object=nope;type=private;pin-v%61lue=$HP_PIN" \
        "pkcs11:token=demo;object=nope;type=private?pin-v%61lue=$HP_PIN" \
        "pkcs11:token=demo;object=nope;type=private?x-vendor=$HP_PIN"; do
        hp_step "$uri"
        hp_fails hp_timeout 60 openssl pkey -pubout -in "$uri" -out "$T/pub.pem"
        printf '%s\n' "$HP_OUT"
        [ -n "$(hp_lines)" ] || hp_fail "no error from hsmprov"
        if hp_lines | grep -qF -e "$HP_PIN" -e "%68p-pin"; then
            hp_fail "hsmprov's error text holds the PIN"
        fi
    done
    hp_step "the URI in messages is formatted from the parsed URI"
    hp_fails hp_timeout 60 openssl pkey -pubout \
        -in "pkcs11:token=demo;object=nope;type=private; pin-value=$HP_PIN" -out "$T/pub.pem"
    hp_out_has "no private key matches pkcs11:token=demo;object=nope;type=private"
    ;;
duplicates)
    for pair in "object:object=rsa;object=ec;type=private" \
        "id:id=%01;id=%02;type=private" \
        "type:object=ec;type=private;type=public" \
        "type:object=ec;type=private;object-type=public" \
        "token:token=demo;object=ec;token=other;type=private" \
        "pin-value:object=ec;type=private;pin-value=$HP_PIN?pin-value=$HP_PIN" \
        "pin-source:object=ec;type=private?pin-source=/a&pinfile=/b"; do
        name=${pair%%:*}
        uri="pkcs11:${pair#*:}"
        hp_step "$uri"
        pub_fails "$uri"
        hp_out_has "attribute $name given more than once"
        hp_step "... and storeutl too"
        hp_run hp_timeout 60 openssl storeutl "$uri"
        hp_out_has "attribute $name given more than once"
    done
    ;;
unknown_or_bad)
    hp_step "an unknown path attribute (a typo)"
    pub_fails "pkcs11:token=demo;objct=ec;type=private"
    hp_out_has 'path attribute 2 is none of id, object, type'
    hp_step "an unknown name is not echoed: it could be anything, a PIN too"
    pub_fails "pkcs11:token=demo;object=ec;type=private;$HP_PIN=1"
    hp_out_has "path attribute 4 is none of"
    hp_step "an unknown type"
    pub_fails "pkcs11:token=demo;object=ec;type=privat"
    hp_out_has "the value of type is not valid"
    hp_step "a token label longer than a token label can be"
    pub_fails "pkcs11:token=$(printf 'd%.0s' {1..40});object=ec;type=private"
    hp_out_has "the value of token is not valid"
    hp_step "a vendor's query attribute is ignored"
    pub_ok "pkcs11:token=demo;object=ec;type=private?x-vendor=1"
    ;;
slot_attributes)
    slot=$(hp_p11tool -L | sed -n 's/^Slot [0-9]* (\(0x[0-9a-f]*\)):.*/\1/p' | head -n 1)
    [ -n "$slot" ] || hp_fail "no slot id from pkcs11-tool -L"
    slot=$((slot))
    desc=$(hp_p11tool -L | sed -n 's/^Slot [0-9]* (0x[0-9a-f]*): \(.*[^ ]\) *$/\1/p' | head -n 1)
    desc=${desc// /%20}
    key="token=demo;object=ec;type=private"
    for good in "slot-id=$slot" "slot-description=$desc" "slot-manufacturer=SoftHSM%20project" \
        "library-manufacturer=SoftHSM" "library-description=Implementation%20of%20PKCS11"; do
        hp_step "pkcs11:$good;$key"
        pub_ok "pkcs11:$good;$key"
    done
    for bad in "slot-id=$((slot + 1))" "slot-description=nope" "slot-manufacturer=nope" \
        "library-manufacturer=nope" "library-version=99.1"; do
        hp_step "pkcs11:$bad;$key"
        pub_fails "pkcs11:$bad;$key"
        hp_out_has "CKR_TOKEN_NOT_PRESENT" "${bad%%=*}="
        hp_step "storeutl pkcs11:$bad;token=demo"
        # (storeutl's exit status after such an error is another matter.)
        hp_run hp_timeout 60 openssl storeutl "pkcs11:$bad;token=demo"
        hp_out_has "CKR_TOKEN_NOT_PRESENT" "Total found: 0"
        hp_ok openssl storeutl "pkcs11:token=demo"
    done
    hp_step "storeutl with the right slot-id lists the keys"
    hp_ok openssl storeutl "pkcs11:slot-id=$slot;token=demo"
    hp_out_has "Total found: 8"
    ;;
module_attributes)
    key="pkcs11:token=demo;object=ec;type=private"
    for good in "module-name=softhsm2" "module-name=libsofthsm2.so" "module-path=$SOFTHSM2_MODULE"; do
        hp_step "$key?$good"
        pub_ok "$key?$good"
    done
    hp_step "another module's name"
    pub_fails "$key?module-name=opensc-pkcs11"
    hp_out_has "module-name=opensc-pkcs11: module-name names another module" "$SOFTHSM2_MODULE"
    hp_step "another module's path"
    pub_fails "$key?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
    hp_out_has "opensc-pkcs11.so: module-path names another module" "$SOFTHSM2_MODULE"
    hp_step "storeutl too"
    hp_run hp_timeout 60 openssl storeutl "pkcs11:token=demo?module-name=opensc-pkcs11"
    hp_out_has "module-name names another module" "Total found: 0"
    ;;
control_chars)
    esc=$(printf '\033')
    hp_step "ESC in a URI's object name"
    pub_fails "pkcs11:token=demo;object=no${esc}[2Jpe;type=private"
    hp_lines | grep -qF 'object=no%1B' || hp_fail "the ESC is not shown escaped"
    if hp_lines | grep -qF "$esc"; then
        hp_fail "a raw ESC in hsmprov's error text"
    fi
    hp_step "a key whose label holds a newline and a forged log line"
    hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" --keypairgen \
        --key-type rsa:2048 --id 0a --label "$(printf 'evil\nhsmprov: C_Login -> CKR_OK')"
    hp_fails hp_timeout 60 openssl pkeyutl -sign -inkey "pkcs11:token=demo;id=%0a;type=private" \
        -in "$T/msg.hash" -out "$T/sig" -pkeyopt rsa_padding_mode:x931 -pkeyopt digest:sha256
    printf '%s\n' "$HP_OUT"
    hp_out_has "CKR_MECHANISM_INVALID" "object=evil%0A"
    if grep -q '^hsmprov: C_Login' <<<"$HP_OUT"; then
        hp_fail "a label from the token forged a line of output"
    fi
    hp_step "the debug log escapes it too (HSMPROV_DEBUG=1)"
    HSMPROV_DEBUG=1 hp_fails hp_timeout 60 openssl pkey -pubout \
        -in "pkcs11:token=demo;object=no${esc}pe;type=private" -out "$T/pub.pem"
    if grep -v '^Could not' <<<"$HP_OUT" | grep -qF "$esc"; then
        printf '%s\n' "$HP_OUT"
        hp_fail "a raw ESC in the output"
    fi
    ;;
*) hp_fail "unknown case $case" ;;
esac

echo "PASS: bad_input_uri $case"
