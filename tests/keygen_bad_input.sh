#!/usr/bin/env bash
# Bad input to key generation in the token: each gets a clear error (checked
# word for word where it matters), no crash, no PIN in the output, and leaves
# the token as it was (pkcs11-tool's object list unchanged).
#
#   keygen_bad_input.sh CASE
#     no_uri          no pkcs11_uri: the module is not even loaded; an EC key made in
#                     memory is refused when written out
#     unknown_curve   ec_paramgen_curve:P-999
#     rsa_bits        rsa_keygen_bits:20000, more than the token makes
#     several_tokens  a URI without token= on a module with two tokens
#     label_exists    a label a key already has (also only as a public key)
#     id_exists       an id a key already has
#     usage           unknown usage word, usage the key type cannot have
#     bad_params      even public exponent, three primes, malformed URI, type=cert, no curve,
#                     explicit EC parameters, no PIN, unknown token
#     token_fails     the token fails C_GenerateKeyPair (shim): its error named
#     fails_after_made  the token made the pair, then a read of it fails (shim):
#                     both objects are destroyed, the failure is what is reported
# shellcheck source=lib/testlib.sh
HP_PIN=kg-pin-58213 # a PIN that no count or timing in the output can contain
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
extra=
case $case in
token_fails | fails_after_made)
    extra="pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
    export P11SHIM_TARGET=$SOFTHSM2_MODULE
    ;;
esac
hp_setup "$extra"

# Every object of every token, private ones too, one line each.
snapshot() {
    local out="" tok
    for tok in "$@"; do
        out+=$(hp_p11tool --token-label "$tok" --login --pin "$HP_PIN" --list-objects 2>&1 |
            grep -E 'Object;|label:|ID:')
    done
    printf '%s\n' "$out"
}
before=$(snapshot demo)
[ "$(grep -c 'Object;' <<<"$before")" -ge 8 ] || hp_fail "pkcs11-tool did not list the token's keys"
unchanged() {
    local now
    now=$(snapshot "${@:-demo}")
    if [ "$now" != "$before" ]; then
        diff <(printf '%s\n' "$before") <(printf '%s\n' "$now") >&2 || true
        hp_fail "the token changed after: $HP_CMD"
    fi
}

gen() {
    hp_fails openssl genpkey -propquery provider=hsmprov "$@"
    printf '%s\n' "$HP_OUT"
    hp_no_pin
}
ec_uri() {
    printf 'pkcs11_uri:pkcs11:token=demo;object=%s' "$1"
}

case $case in
no_uri)
    hp_step "EC, RSA and Ed25519 without pkcs11_uri"
    # An EC key is made in memory (as TLS key shares are) and refused when
    # written out; RSA and Ed25519 are refused at once.
    for alg in "EC -pkeyopt ec_paramgen_curve:P-256" "EC -pkeyopt ec_paramgen_curve:P-384 -outform DER" \
        "EC -pkeyopt ec_paramgen_curve:P-521 -out $T/k.pem" RSA ED25519; do
        export HSMPROV_DEBUG=1
        # shellcheck disable=SC2086
        gen -algorithm $alg
        unset HSMPROV_DEBUG
        case $alg in
        EC*)
            hp_out_has "the EC key was made in memory, not in a token, because no pkcs11_uri was given" \
                "give -pkeyopt pkcs11_uri:pkcs11:token=...;object=... to make it in the token"
            [ ! -s "$T/k.pem" ] || hp_fail "a key file was written: $(cat "$T/k.pem")"
            ;;
        *) hp_out_has "hsmprov generates keys only in a token: give -pkeyopt pkcs11_uri:" ;;
        esac
        # Nothing reaches the module: no PKCS#11 call at all.
        hp_out_lacks "C_Initialize" "C_GetSlotList" "C_Login" "C_GenerateKeyPair"
    done
    unchanged
    ;;
unknown_curve)
    hp_step "ec_paramgen_curve:P-999"
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-999 -pkeyopt "$(ec_uri web)"
    hp_out_has "is not a named curve known to OpenSSL"
    hp_out_lacks "P-999 is" # the caller's text is not echoed by hsmprov
    unchanged
    ;;
rsa_bits)
    hp_step "rsa_keygen_bits:20000"
    gen -algorithm RSA -pkeyopt rsa_keygen_bits:20000 -pkeyopt "$(ec_uri big)"
    hp_out_has "CKR_KEY_SIZE_RANGE" 'token "demo" makes RSA keys of 512 to 16384 bits' \
        "not 20000; nothing was made"
    unchanged
    ;;
several_tokens)
    hp_step "one initialised token (beside SoftHSM2's empty one): no token= is needed"
    hp_ok openssl genpkey -propquery provider=hsmprov -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "pkcs11_uri:pkcs11:object=solo"
    [ "$(snapshot demo | grep -c 'label: *solo')" -eq 2 ] || hp_fail "no key pair solo in token demo"
    hp_step "a second token, and a URI without token="
    env -u OPENSSL_CONF softhsm2-util --init-token --free --label other --so-pin "$HP_SO_PIN" \
        --pin "$HP_PIN" >/dev/null
    before=$(snapshot demo other)
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "pkcs11_uri:pkcs11:object=web"
    hp_out_has "pkcs11:object=web matches 2 tokens" '"demo"' '"other"' \
        "name the one to generate the key in with token="
    unchanged demo other
    hp_step "with token= it works, in that token only"
    hp_ok openssl genpkey -propquery provider=hsmprov -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "pkcs11_uri:pkcs11:token=other;object=web"
    [ "$(snapshot other | grep -c 'label: *web')" -eq 2 ] || hp_fail "no key pair web in token other"
    [ "$(snapshot demo | grep -c 'label: *web')" -eq 0 ] || hp_fail "a key web in token demo"
    ;;
label_exists)
    hp_step "the label of an existing key (ec, made by pkcs11-tool)"
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "$(ec_uri ec)"
    hp_out_has 'token "demo" already has a private key with the same label as' \
        "pkcs11:token=demo;object=ec;type=private" "nothing was made"
    unchanged
    hp_step "a label only a public key has"
    hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" --delete-object \
        --type privkey --label ec384
    before=$(snapshot demo)
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -pkeyopt "$(ec_uri ec384)"
    hp_out_has 'already has a public key with the same label as' "object=ec384"
    unchanged
    hp_step "the label of a key just generated by hsmprov"
    hp_ok openssl genpkey -propquery provider=hsmprov -algorithm RSA \
        -pkeyopt "$(ec_uri twice)"
    before=$(snapshot demo)
    gen -algorithm RSA -pkeyopt "$(ec_uri twice)"
    hp_out_has "already has a private key with the same label as" "object=twice"
    unchanged
    ;;
id_exists)
    hp_step "the id of an existing key (rsa, id 01) under a new label"
    gen -algorithm RSA -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=new;id=%01"
    hp_out_has "already has a private key with the same id as" \
        "pkcs11:token=demo;id=%01;object=new;type=private" "or choose another id="
    unchanged
    ;;
usage)
    hp_step "an unknown usage word (not repeated in the message)"
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_key_usage:digitalSignature sign" -pkeyopt "$(ec_uri web)"
    hp_out_has "pkcs11_key_usage: word 2 is none of digitalSignature, dataEncipherment," \
        "keyEncipherment, keyAgreement"
    hp_step "usage the key type cannot have"
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_key_usage:keyEncipherment" -pkeyopt "$(ec_uri web)"
    hp_out_has "keyEncipherment does not apply to EC keys"
    gen -algorithm RSA -pkeyopt "pkcs11_key_usage:keyAgreement" -pkeyopt "$(ec_uri web)"
    hp_out_has "keyAgreement does not apply to RSA keys"
    gen -algorithm ED25519 -pkeyopt "pkcs11_key_usage:dataEncipherment" \
        -pkeyopt "$(ec_uri web)"
    hp_out_has "dataEncipherment does not apply to Ed25519 keys"
    hp_step "an empty usage"
    gen -algorithm RSA -pkeyopt "pkcs11_key_usage: , " -pkeyopt "$(ec_uri web)"
    hp_out_has "pkcs11_key_usage names no usage"
    unchanged
    ;;
bad_params)
    hp_step "an even RSA public exponent"
    gen -algorithm RSA -pkeyopt rsa_keygen_pubexp:65536 -pkeyopt "$(ec_uri web)"
    hp_out_has "the RSA public exponent must be odd"
    hp_step "three RSA primes"
    gen -algorithm RSA -pkeyopt rsa_keygen_primes:3 -pkeyopt "$(ec_uri web)"
    hp_out_has "the token makes RSA keys of two primes only"
    hp_step "a malformed URI"
    gen -algorithm RSA -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=%zz"
    hp_out_has "malformed pkcs11 URI"
    hp_step "type=cert"
    gen -algorithm RSA -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web;type=cert"
    hp_out_has "a key pair is generated; type= may only be private or public"
    hp_step "EC without a curve"
    gen -algorithm EC -pkeyopt "$(ec_uri web)"
    hp_out_has "an EC key needs its curve"
    hp_step "explicit EC parameters"
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:explicit \
        -pkeyopt "$(ec_uri web)"
    hp_out_has "ec_param_enc may only be named_curve"
    hp_step "an unknown token"
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_uri:pkcs11:token=nope;object=web"
    hp_out_has "CKR_TOKEN_NOT_PRESENT" "pkcs11:token=nope;object=web"
    hp_step "no PIN anywhere"
    HP_CNF_PIN="" hp_write_cnf "$T"
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "$(ec_uri web)"
    hp_out_has 'token "demo" needs a PIN'
    unchanged
    ;;
token_fails)
    hp_step "the token fails C_GenerateKeyPair"
    export P11SHIM_FAIL=C_GenerateKeyPair:0:CKR_FUNCTION_FAILED
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web;id=%77"
    hp_out_has "C_GenerateKeyPair failed with CKR_FUNCTION_FAILED: EC key" \
        "pkcs11:token=demo;id=%77;object=web;type=private" "CKM_EC_KEY_PAIR_GEN" 'token "demo"'
    unchanged
    hp_step "the token refuses the curve"
    export P11SHIM_FAIL=C_GenerateKeyPair:0:CKR_CURVE_NOT_SUPPORTED
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web"
    unset P11SHIM_FAIL
    hp_out_has "CKR_CURVE_NOT_SUPPORTED" "the token does not offer this curve"
    unchanged
    hp_step "CKR_GENERAL_ERROR every time: tried 4 times, reported, nothing made"
    export P11SHIM_FAIL=C_GenerateKeyPair:0:CKR_GENERAL_ERROR
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=passing"
    hp_out_has "C_GenerateKeyPair failed with CKR_GENERAL_ERROR"
    unchanged
    hp_step "CKR_GENERAL_ERROR once (a passing fault): retried, one pair made"
    export P11SHIM_FAIL=C_GenerateKeyPair:1:CKR_GENERAL_ERROR
    hp_ok openssl genpkey -propquery provider=hsmprov -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=passing"
    unset P11SHIM_FAIL
    n=$(snapshot demo | grep -c 'passing' || true)
    [ "$n" -eq 2 ] || hp_fail "expected one pair labelled passing (2 objects), saw $n"
    ;;
fails_after_made)
    # The first C_GetAttributeValue of the run is the one that reads the new
    # private key (the checks before it search, they read nothing).
    hp_step "the token makes the pair, then reading it fails"
    export P11SHIM_FAIL=C_GetAttributeValue:1:CKR_FUNCTION_FAILED
    gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web"
    unset P11SHIM_FAIL
    hp_out_has "C_GetAttributeValue failed with CKR_FUNCTION_FAILED"
    unchanged
    hp_step "and the same label is free for the next try, which works"
    hp_ok openssl genpkey -propquery provider=hsmprov -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web"
    [ "$(snapshot demo | grep -c 'label: *web')" -eq 2 ] || hp_fail "no key pair web"
    ;;
*) hp_fail "unknown case $case" ;;
esac
echo "PASS: keygen_bad_input $case"
