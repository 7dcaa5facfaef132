#!/usr/bin/env bash
# Modules with several tokens, blank tokens, tokens that fail, and which
# token a PIN belongs to (README: "Which token gets the PIN").
#
#   tokens.sh blank_slot          SoftHSM2's blank token beside "demo": a URI
#                                 that names no token lists demo's objects
#   pin_not_spent_elsewhere       a second token "beta" with another PIN: the
#                                 configured PIN goes only to a token the URI
#                                 selects alone; a listing over both shows
#                                 public objects, with no C_Login and no PIN
#                                 try of beta spent
#   proxy_one_token               p11-kit's proxy (the default module), demo
#                                 its only token that takes a PIN: a URI that
#                                 names no token logs in there and signs
#   pin_for                       pkcs11-token-pin-for binds the configured PIN
#                                 to demo: listings log in there only; bad
#                                 values are refused without showing a PIN
#   exit_status                   storeutl fails (exit status 1) when loading
#                                 fails: no such token, a token whose search
#                                 fails, alone or among others that list
#   vendor_code                   a module's vendor-defined return code is
#                                 named as CKR_VENDOR_DEFINED+0x..., through
#                                 the shim and from NSS's softokn
#   remote_unreachable            p11-kit-client.so with no server: the error
#                                 says the module reached no token at all
#   prompt_without_ui PROGRAM     a program that gives OSSL_STORE no UI method
#                                 is prompted on the terminal for the PIN;
#                                 without a terminal it fails, without a hang
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

mode=${1:?mode}
BETA_PIN=hp-beta-5678
count() { grep -cE "^[0-9]+: $1\$" <<<"$HP_OUT" || true; }

# A second token, "beta", in the same SoftHSM2 directory, with a key.
add_beta() {
    env -u OPENSSL_CONF softhsm2-util --init-token --free --label beta --so-pin "$HP_SO_PIN" \
        --pin "$BETA_PIN" >/dev/null
    hp_p11tool --token-label beta --login --pin "$BETA_PIN" \
        --keypairgen --key-type EC:prime256v1 --label beta-ec --id 11 >/dev/null
}

# No PIN try of beta was spent: SoftHSM2 sets "user PIN count low" after a
# wrong one.
beta_untouched() {
    local flags
    flags=$(hp_p11tool --token-label beta -T 2>&1 | grep -A12 'label *: beta' | grep -m1 flags)
    case $flags in
    *"count low"* | *"final try"* | *locked*) hp_fail "a PIN try of beta was spent: $flags" ;;
    esac
}

# Runs openssl without a controlling terminal: nothing may wait for a prompt.
no_tty() {
    hp_openssl_argv
    timeout 60 setsid -w "${HP_OPENSSL[@]}" "$@" </dev/null
}

case $mode in
blank_slot)
    hp_setup
    hp_step "SoftHSM2 offers a blank token beside demo"
    hp_ok hp_p11tool -L
    hp_out_has "token state:   uninitialized"
    hp_step "storeutl pkcs11: lists demo's keys; the blank token is passed over"
    hp_ok no_tty storeutl -noout "pkcs11:"
    printf '%s\n' "$HP_OUT"
    hp_out_lacks "CKR_TOKEN_NOT_RECOGNIZED" "error"
    [ "$(count Pkey)" -eq 4 ] || hp_fail "expected demo's 4 private keys"
    hp_step "by object label alone"
    hp_ok no_tty storeutl -noout "pkcs11:object=ec;type=private"
    hp_out_has "Total found: 1"
    ;;
pin_not_spent_elsewhere)
    hp_setup
    add_beta
    hp_step "storeutl pkcs11: over demo and beta: public objects, no login anywhere"
    HSMPROV_DEBUG=1 hp_ok no_tty storeutl -noout "pkcs11:"
    printf '%s\n' "$HP_OUT" | grep -v '^hsmprov: C_'
    hp_out_lacks "C_Login" "CKR_PIN_INCORRECT"
    [ "$(count Pkey)" -eq 0 ] || hp_fail "private keys listed without a login"
    [ "$(count 'Public key')" -eq 5 ] || hp_fail "expected 5 public keys (4 of demo, 1 of beta)"
    beta_untouched
    hp_step "a private key by label alone: not found, and the message says why"
    hp_fails no_tty pkey -in "pkcs11:object=ec;type=private" -pubout
    printf '%s\n' "$HP_OUT"
    hp_out_has "selects 2 tokens that take one" "pkcs11-token-pin-for" "no login was attempted"
    hp_no_pin "$HP_PIN" "$BETA_PIN"
    beta_untouched
    hp_step "token=demo: the configured PIN is demo's"
    hp_ok no_tty storeutl -noout "pkcs11:token=demo"
    [ "$(count Pkey)" -eq 4 ] || hp_fail "expected demo's 4 private keys"
    hp_step "token=beta with beta's own pin-value"
    hp_ok no_tty storeutl -noout "pkcs11:token=beta;type=private?pin-value=$BETA_PIN"
    [ "$(count Pkey)" -eq 1 ] || hp_fail "expected beta's private key"
    hp_step "a pin-value belongs to every token its URI selects: demo refuses it, beta lists"
    hp_fails no_tty storeutl -noout "pkcs11:type=private?pin-value=$BETA_PIN"
    printf '%s\n' "$HP_OUT"
    hp_out_has 'C_Login failed with CKR_PIN_INCORRECT: token "demo"'
    [ "$(count Pkey)" -eq 1 ] || hp_fail "expected beta's private key"
    hp_no_pin "$HP_PIN" "$BETA_PIN"
    beta_untouched
    ;;
proxy_one_token)
    hp_setup
    sed -i '/^pkcs11-module-path/d' "$OPENSSL_CONF"
    printf 'through the proxy\n' >"$T/msg"
    hp_step "sign with pkcs11:object=ec;type=private through p11-kit's proxy"
    hp_ok no_tty dgst -sha256 -sign "pkcs11:object=ec;type=private" -out "$T/sig" "$T/msg"
    hp_pubout "pkcs11:object=ec;type=public" "$T/pub.pem"
    hp_ok openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig" "$T/msg"
    hp_out_has "Verified OK"
    ;;
pin_for)
    hp_setup "pkcs11-token-pin-for = pkcs11:token=demo"
    add_beta
    hp_step "storeutl pkcs11: logs in to demo only"
    HSMPROV_DEBUG=1 hp_ok no_tty storeutl -noout "pkcs11:"
    [ "$(grep -c 'C_Login ->' <<<"$HP_OUT")" -eq 1 ] || hp_fail "expected one C_Login"
    [ "$(count Pkey)" -eq 4 ] || hp_fail "expected demo's 4 private keys"
    [ "$(count 'Public key')" -eq 5 ] || hp_fail "expected 5 public keys"
    beta_untouched
    hp_step "token=beta: demo's PIN is not tried there"
    hp_fails no_tty pkey -in "pkcs11:token=beta;type=private" -pubout
    printf '%s\n' "$HP_OUT"
    hp_out_has 'token "beta"'
    hp_out_lacks "CKR_PIN_INCORRECT"
    beta_untouched
    hp_step "a PIN in pkcs11-token-pin-for is refused and not shown"
    hp_write_cnf "$T" "pkcs11-token-pin-for = pkcs11:token=demo?pin-value=$BETA_PIN"
    hp_fails no_tty storeutl -noout "pkcs11:token=demo"
    hp_out_has "pkcs11-token-pin-for" "a PIN has no place in it"
    hp_no_pin "$BETA_PIN"
    hp_step "an object in it is refused"
    hp_write_cnf "$T" "pkcs11-token-pin-for = pkcs11:token=demo;object=ec"
    hp_fails no_tty storeutl -noout "pkcs11:token=demo"
    hp_out_has "pkcs11-token-pin-for" "token attributes only"
    hp_step "not a URI: refused, value not shown"
    hp_write_cnf "$T" "pkcs11-token-pin-for = token=demo"
    hp_fails no_tty storeutl -noout "pkcs11:token=demo"
    hp_out_has "pkcs11-token-pin-for" "value not shown"
    hp_step "without pkcs11-module-token-pin there is nothing to bind"
    HP_CNF_PIN="" hp_write_cnf "$T" "pkcs11-token-pin-for = pkcs11:token=demo"
    hp_fails no_tty storeutl -noout "pkcs11:token=demo"
    hp_out_has "no pkcs11-module-token-pin to bind"
    ;;
exit_status)
    hp_setup "pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
    export P11SHIM_TARGET=$SOFTHSM2_MODULE
    hp_step "storeutl pkcs11:token=nope fails"
    hp_fails no_tty storeutl -noout "pkcs11:token=nope"
    hp_out_has "CKR_TOKEN_NOT_PRESENT" "token=nope"
    hp_step "the token's search fails: storeutl fails"
    P11SHIM_FAIL=C_FindObjectsInit:1:CKR_FUNCTION_FAILED \
        hp_fails no_tty storeutl -noout "pkcs11:token=demo"
    hp_out_has "C_FindObjectsInit failed with CKR_FUNCTION_FAILED" 'token "demo"'
    add_beta
    hp_step "one of two tokens fails its search: the other is listed, and storeutl fails"
    P11SHIM_FAIL=C_FindObjectsInit:1:CKR_FUNCTION_FAILED \
        hp_fails no_tty storeutl -noout "pkcs11:"
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_FindObjectsInit failed with CKR_FUNCTION_FAILED"
    [ "$(count 'Public key')" -ge 1 ] || hp_fail "the other token was not listed"
    hp_step "and without a failure the same listing succeeds"
    hp_ok no_tty storeutl -noout "pkcs11:"
    [ "$(count 'Public key')" -eq 5 ] || hp_fail "expected 5 public keys"
    ;;
vendor_code)
    hp_setup "pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
    export P11SHIM_TARGET=$SOFTHSM2_MODULE
    hp_step "C_Initialize returns NSS's CKR_NSS_CERTDB_FAILED (0xCE534351)"
    # (pkey, not storeutl: this failure is about the message, not the exit status)
    key="pkcs11:token=demo;object=ec;type=public"
    P11SHIM_FAIL=C_Initialize:1:0xCE534351 hp_fails no_tty pkey -pubin -in "$key"
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_Initialize failed with CKR_VENDOR_DEFINED+0x4e534351 (0xce534351)" \
        "$HSMPROV_SHIM"
    hp_step "an unnamed, non-vendor code is shown in hex"
    P11SHIM_FAIL=C_Initialize:1:0x7777 hp_fails no_tty pkey -pubin -in "$key"
    hp_out_has "C_Initialize failed with CKR 0x7777"
    softokn=$(find /usr/lib /usr/lib64 -name libsoftokn3.so 2>/dev/null | head -1 || true)
    if [ -n "$softokn" ]; then
        hp_step "NSS softokn with a configdir that does not exist"
        hp_write_cnf "$T" "pkcs11-module-path = $softokn
pkcs11-module-init-args = configdir='sql:$T/no-such-dir' certPrefix='' keyPrefix='' secmod='secmod.db'"
        hp_fails no_tty pkey -pubin -in "$key"
        printf '%s\n' "$HP_OUT"
        hp_out_has "C_Initialize failed with CKR_VENDOR_DEFINED+0x" "$softokn"
    else
        echo "libsoftokn3.so not installed: NSS not tested"
    fi
    ;;
remote_unreachable)
    client=$(find /usr/lib /usr/lib64 -name p11-kit-client.so 2>/dev/null | head -1 || true)
    [ -n "$client" ] || hp_fail "p11-kit-client.so not installed (p11-kit-modules)"
    hp_setup "pkcs11-module-path = $client"
    export P11_KIT_SERVER_ADDRESS=unix:path=$T/nobody-serves-this.sock
    hp_step "no server behind $P11_KIT_SERVER_ADDRESS"
    hp_fails no_tty pkey -pubin -in "pkcs11:token=demo;object=ec;type=public"
    printf '%s\n' "$HP_OUT"
    hp_out_has "CKR_TOKEN_NOT_PRESENT" "$client" "reached no token at all" \
        "server cannot be reached"
    ;;
prompt_without_ui)
    prog=${2:?program}
    HP_CNF_PIN="" hp_setup
    key="pkcs11:token=demo;object=ec;type=private"
    command -v script >/dev/null || hp_fail "script(1) not installed (bsdutils)"
    hp_step "a program without a UI method, on a terminal: asked for the PIN there"
    cmd=$(printf '%q ' env ${HSMPROV_SANITIZER_PRELOAD:+LD_PRELOAD=$HSMPROV_SANITIZER_PRELOAD} \
        "$prog" "$key")
    hp_ok timeout 60 script -qec "$cmd" /dev/null < <(sleep 2; printf '%s\n' "$HP_PIN"; sleep 5)
    printf '%s\n' "$HP_OUT"
    hp_out_has 'Enter PIN for PKCS#11 token "demo"' "signed and verified"
    hp_no_pin
    hp_step "without a terminal: a clean failure, no hang"
    hp_fails timeout 60 setsid -w env ${HSMPROV_SANITIZER_PRELOAD:+LD_PRELOAD=$HSMPROV_SANITIZER_PRELOAD} \
        "$prog" "$key" </dev/null
    printf '%s\n' "$HP_OUT"
    hp_out_has "C_Login" 'token "demo" needs a PIN'
    ;;
*) hp_fail "unknown mode $mode" ;;
esac

echo "PASS: tokens $mode"
