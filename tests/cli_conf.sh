#!/usr/bin/env bash
# A bad value in hsmprov's section of openssl.cnf is named, with its value, to
# the user: `openssl list -providers` shows hsmprov as inactive with the
# directive and its value, and every use of a pkcs11: URI fails with them
# (never "No store loader found", which is what OpenSSL says when the
# provider is not there). An unknown pkcs11-* directive is named in a warning
# and the provider works.
#
#   cli_conf.sh bad DIRECTIVE VALUE SHOWN
#                         DIRECTIVE = VALUE; SHOWN is how the value must appear
#                         (quoted, escaped)
#   cli_conf.sh escaped   control characters escaped, a long value cut short
#   cli_conf.sh pin       a literal PIN beside a bad directive, and a mistyped
#                         PIN directive: the PIN is never shown
#   cli_conf.sh unknown   pkcs11-pool-sise = 4: warned about, provider works
HP_PIN=hp-pin-4711
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup
printf 'data\n' >"$T/msg"
openssl dgst -sha256 -binary -out "$T/msg.hash" "$T/msg"
KEY="pkcs11:token=demo;object=ec;type=private"

# The hsmprov block of `openssl list -providers`.
list_block() {
    hp_ok hp_timeout 30 openssl list -providers
    printf '%s\n' "$HP_OUT"
    BLOCK=$(awk '/^  hsmprov$/{p=1; next} /^  [^ ]/{p=0} p' <<<"$HP_OUT")
    [ -n "$BLOCK" ] || hp_fail "hsmprov is not listed at all"
}

# listed_misconfigured TEXT...: listed, inactive, its name line holds TEXTs.
listed_misconfigured() {
    local s
    list_block
    grep -qF "status: inactive" <<<"$BLOCK" || hp_fail "hsmprov not shown inactive: $BLOCK"
    for s in "configuration error:" "$@"; do
        grep -qF -- "$s" <<<"$BLOCK" || hp_fail "the provider list lacks '$s': $BLOCK"
    done
}

# uses_fail TEXT...: signing and listing with a pkcs11: URI fail, naming TEXTs.
uses_fail() {
    hp_fails hp_timeout 60 openssl pkeyutl -sign -inkey "$KEY" -in "$T/msg.hash" -out "$T/sig"
    printf '%s\n' "$HP_OUT"
    hp_out_has "bad configuration" "$@"
    hp_out_lacks "No store loader found"
    hp_no_pin
    hp_fails hp_timeout 60 openssl storeutl "pkcs11:token=demo"
    printf '%s\n' "$HP_OUT"
    hp_out_has "bad configuration" "$@"
    hp_out_lacks "No store loader found"
    hp_no_pin
}

case $case in
bad)
    directive=${2:?directive} value=${3?value} shown=${4:?shown}
    hp_write_cnf "$T" "$directive = $value"
    hp_step "$directive = $value: listed, inactive, named with its value"
    listed_misconfigured "$directive = $shown"
    hp_step "$directive = $value: every use of a pkcs11: URI names it"
    uses_fail "$directive = $shown"
    ;;
escaped)
    long=$(printf '9%.0s' $(seq 200))
    hp_write_cnf "$T" $'pkcs11-pool-size = 1\x1b[31m2\t3\x01'"
pkcs11-pool-wait-timeout-ms = $long"
    hp_step "control characters escaped, a 200-digit value cut short"
    listed_misconfigured 'pkcs11-pool-size = "1\x1b[31m2\x093\x01"' \
        "pkcs11-pool-wait-timeout-ms = \"$(printf '9%.0s' $(seq 48))...\""
    if LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f]' <<<"$HP_OUT"; then
        hp_fail "a control character reached the output"
    fi
    hp_out_lacks "$long"
    uses_fail 'pkcs11-pool-size = "1\x1b[31m2\x093\x01"'
    ;;
pin)
    HP_CNF_PIN="pkcs11-module-token-pin = $HP_PIN" hp_write_cnf "$T" \
        "pkcs11-module-token-pn = $HP_PIN
pkcs11-digest-in-token = maybe"
    hp_step "a literal PIN beside a bad directive, and a mistyped PIN directive"
    listed_misconfigured 'pkcs11-digest-in-token = "maybe"'
    grep -qF "unknown directive pkcs11-module-token-pn" <<<"$BLOCK" ||
        hp_fail "the mistyped PIN directive is not named: $BLOCK"
    hp_no_pin
    uses_fail 'pkcs11-digest-in-token = "maybe"'
    ;;
unknown)
    hp_write_cnf "$T" "pkcs11-pool-sise = 4"
    hp_step "pkcs11-pool-sise = 4: named in a warning"
    list_block
    grep -qF "status: active" <<<"$BLOCK" || hp_fail "hsmprov is not active: $BLOCK"
    grep -qF "configuration warning: unknown directive pkcs11-pool-sise" <<<"$BLOCK" ||
        hp_fail "no warning naming pkcs11-pool-sise: $BLOCK"
    hp_step "the provider still works, says the warning on stderr, leaves no error queued"
    hp_ok hp_timeout 60 openssl pkeyutl -sign -inkey "$KEY" -in "$T/msg.hash" -out "$T/sig"
    hp_out_has "hsmprov: configuration warning: unknown directive pkcs11-pool-sise"
    hp_out_lacks ":error:"
    hp_pubout "$KEY" "$T/ec.pub"
    hp_ok openssl pkeyutl -verify -pubin -inkey "$T/ec.pub" -in "$T/msg.hash" -sigfile "$T/sig"
    ;;
*)
    hp_fail "unknown case $case"
    ;;
esac
echo "PASS: cli_conf $*"
