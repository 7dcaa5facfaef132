#!/usr/bin/env bash
# Keys generated in the token with `openssl genpkey -propquery provider=hsmprov
# -pkeyopt pkcs11_uri:…`: each one signs by URI in a new process, and the
# signature verifies with the public key in software (OPENSSL_CONF=/dev/null);
# pkcs11-tool shows the private key sensitive, never extractable, private,
# with the usage asked for, and the public key beside it under the same label
# and id. `-out` writes a key file holding the key's URI.
#
#   keygen.sh CASE
#     rsa2048 rsa3072 rsa4096 rsa_pubexp_3 ec_p256 ec_p384 ec_p521 ed25519
#     usage       pkcs11_key_usage sets CKA_SIGN / CKA_DECRYPT / CKA_DERIVE / CKA_UNWRAP
#     id_chosen   a URI without id=: a 16-byte id is chosen, and written in the key file
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup
head -c 3000 /dev/urandom >"$T/msg"

genpkey() {
    hp_ok openssl genpkey -propquery provider=hsmprov "$@"
}

# The token's objects with LABEL, as pkcs11-tool prints them (private ones too).
objects() {
    hp_ok hp_p11tool --token-label demo --login --pin "$HP_PIN" --list-objects
    HP_OBJS=$(awk -v l="$1" '
        /Object;/ { if (b != "" && lab == l) print b; b = $0; lab = ""; next }
        /label:/  { lab = $2 }
        { b = b "\n" $0 }
        END { if (b != "" && lab == l) print b }' <<<"$HP_OUT")
}

# Checks the private and public objects of LABEL: attributes and usage.
check_objects() {
    local label=$1 priv_usage=$2 pub_usage=$3 priv pub
    objects "$label"
    printf '%s\n' "$HP_OBJS"
    priv=$(awk '/^Private Key Object/ {p=1} /^Public Key Object/ {p=0} p' <<<"$HP_OBJS")
    pub=$(awk '/^Public Key Object/ {p=1} /^Private Key Object/ {p=0} p' <<<"$HP_OBJS")
    [ "$(grep -c '^Private Key Object' <<<"$HP_OBJS")" -eq 1 ] || hp_fail "not one private key $label"
    [ "$(grep -c '^Public Key Object' <<<"$HP_OBJS")" -eq 1 ] || hp_fail "not one public key $label"
    grep -q "Access: *sensitive, always sensitive, never extractable" <<<"$priv" ||
        hp_fail "private key $label is not sensitive and never extractable"
    grep -q "Usage: *$priv_usage\$" <<<"$priv" || hp_fail "private key $label: usage is not '$priv_usage'"
    grep -q "Usage: *$pub_usage\$" <<<"$pub" || hp_fail "public key $label: usage is not '$pub_usage'"
    # Same id on both.
    [ "$(grep 'ID:' <<<"$HP_OBJS" | sort -u | wc -l)" -eq 1 ] || hp_fail "$label: ids differ"
    # Only logged in does pkcs11-tool see the private key: CKA_PRIVATE.
    hp_ok hp_p11tool --token-label demo --list-objects
    awk '/^Private Key Object/ {p=1} p && /label:/ {print $2}' <<<"$HP_OUT" | grep -qx "$label" &&
        hp_fail "private key $label is visible without login (not CKA_PRIVATE)"
    return 0
}

# Signs the message with LABEL's private key by URI (a new process, after
# genpkey ended) and verifies in software with its public key.
sign_verify() {
    local label=$1 md=${2:-}
    local priv="pkcs11:token=demo;object=$label;type=private" mdopt=()
    [ -n "$md" ] && mdopt=(-digest "$md")
    hp_pubout "$priv" "$T/$label.pub.pem"
    hp_ok openssl pkeyutl -sign -rawin "${mdopt[@]}" -inkey "$priv" -in "$T/msg" \
        -out "$T/$label.sig"
    OPENSSL_CONF=/dev/null hp_ok openssl pkeyutl -verify -rawin "${mdopt[@]}" -pubin \
        -inkey "$T/$label.pub.pem" -in "$T/msg" -sigfile "$T/$label.sig"
    hp_out_has "Signature Verified Successfully"
}

# The key file genpkey wrote holds the key's URI with label and id.
check_key_file() {
    local file=$1 label=$2
    head -1 "$file" | grep -qx -- '-----BEGIN PKCS#11 PROVIDER URI-----' ||
        hp_fail "$file is not a PKCS#11 PROVIDER URI file"
    hp_ok openssl asn1parse -in "$file"
    hp_out_has "token=demo" "object=$label" "id=%" "type=private"
}

rsa() {
    local bits=$1 label=rsa$1
    hp_step "genpkey RSA $bits bits"
    genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$bits" \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=$label;id=%10%$((bits / 1024))0" \
        -out "$T/$label.pem"
    check_key_file "$T/$label.pem" "$label"
    check_objects "$label" "decrypt, sign" "encrypt, verify"
    sign_verify "$label" sha256
    OPENSSL_CONF=/dev/null hp_ok openssl pkey -pubin -in "$T/$label.pub.pem" -noout -text
    hp_out_has "Public-Key: ($bits bit)" "Exponent: 65537"
}

ec() {
    local curve=$1 md=$2 label
    label=ec-$(tr 'A-Z' 'a-z' <<<"${curve//-/}")
    hp_step "genpkey EC $curve"
    genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$curve" \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=$label" -out "$T/$label.pem"
    check_key_file "$T/$label.pem" "$label"
    check_objects "$label" "sign, derive" "verify, derive"
    sign_verify "$label" "$md"
    OPENSSL_CONF=/dev/null hp_ok openssl pkey -pubin -in "$T/$label.pub.pem" -noout -text
    hp_out_has "NIST CURVE: $curve"
}

case $case in
rsa2048 | rsa3072 | rsa4096) rsa "${case#rsa}" ;;
rsa_pubexp_3)
    hp_step "genpkey RSA with public exponent 3"
    genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -pkeyopt rsa_keygen_pubexp:3 \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=rsa-e3"
    sign_verify rsa-e3 sha256
    OPENSSL_CONF=/dev/null hp_ok openssl pkey -pubin -in "$T/rsa-e3.pub.pem" -noout -text
    hp_out_has "Exponent: 3 (0x3)"
    ;;
ec_p256) ec P-256 sha256 ;;
ec_p384) ec P-384 sha384 ;;
ec_p521) ec P-521 sha512 ;;
ed25519)
    hp_step "genpkey ED25519"
    genpkey -algorithm ED25519 -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=ed;id=%ed" \
        -out "$T/ed.pem"
    check_key_file "$T/ed.pem" ed
    check_objects ed sign verify
    sign_verify ed
    OPENSSL_CONF=/dev/null hp_ok openssl pkey -pubin -in "$T/ed.pub.pem" -noout -text
    hp_out_has "ED25519 Public-Key"
    ;;
usage)
    hp_step "RSA digitalSignature only"
    genpkey -algorithm RSA -pkeyopt "pkcs11_key_usage:digitalSignature" \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=rsa-sig"
    check_objects rsa-sig sign verify
    sign_verify rsa-sig sha256
    hp_step "RSA keyEncipherment (decrypt and unwrap), and a decryption"
    genpkey -algorithm RSA -pkeyopt "pkcs11_key_usage:keyEncipherment" \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=rsa-kex"
    check_objects rsa-kex "decrypt, unwrap" "encrypt, wrap"
    hp_pubout "pkcs11:token=demo;object=rsa-kex;type=private" "$T/kex.pub.pem"
    head -c 32 /dev/urandom >"$T/secret"
    OPENSSL_CONF=/dev/null hp_ok openssl pkeyutl -encrypt -pubin -inkey "$T/kex.pub.pem" \
        -pkeyopt rsa_padding_mode:oaep -in "$T/secret" -out "$T/secret.enc"
    hp_ok openssl pkeyutl -decrypt -inkey "pkcs11:token=demo;object=rsa-kex;type=private" \
        -pkeyopt rsa_padding_mode:oaep -in "$T/secret.enc" -out "$T/secret.dec"
    cmp -s "$T/secret" "$T/secret.dec" || hp_fail "decrypted secret differs"
    hp_step "RSA both, comma and space separated"
    genpkey -algorithm RSA -pkeyopt "pkcs11_key_usage:digitalSignature, dataEncipherment" \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=rsa-both"
    check_objects rsa-both "decrypt, sign" "encrypt, verify"
    hp_step "EC keyAgreement only"
    genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt "pkcs11_key_usage:keyAgreement" \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=ec-dh"
    check_objects ec-dh derive derive
    hp_step "EC digitalSignature only"
    genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_key_usage:digitalSignature" -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=ec-sig"
    check_objects ec-sig sign verify
    sign_verify ec-sig sha256
    ;;
id_chosen)
    hp_step "a URI without id=: the id is chosen (16 random bytes) and reported in the key file"
    genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web" -out "$T/web.pem"
    check_key_file "$T/web.pem" web
    uri=$(sed -n 's/.*UTF8STRING *://p' <<<"$HP_OUT")
    id=$(sed -n 's/.*;id=\([^;]*\).*/\1/p' <<<"$uri")
    hex=$(tr -d '%' <<<"$id" | tr 'A-F' 'a-f')
    [ "${#hex}" -eq 32 ] || hp_fail "the chosen id is not 16 bytes: $id"
    objects web
    [ "$(grep -c "ID: *$hex\$" <<<"$HP_OBJS")" -eq 2 ] ||
        hp_fail "private and public objects do not both have the id $hex"
    hp_step "the key is used by the reported id alone, in a new process"
    label_free="pkcs11:token=demo;id=$id;type=private"
    hp_pubout "$label_free" "$T/byid.pub.pem"
    hp_ok openssl pkeyutl -sign -rawin -digest sha256 -inkey "$label_free" -in "$T/msg" \
        -out "$T/byid.sig"
    OPENSSL_CONF=/dev/null hp_ok openssl pkeyutl -verify -rawin -digest sha256 -pubin \
        -inkey "$T/byid.pub.pem" -in "$T/msg" -sigfile "$T/byid.sig"
    hp_out_has "Signature Verified Successfully"
    hp_step "a second key without id= gets another id"
    genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web2" -out "$T/web2.pem"
    hp_ok openssl asn1parse -in "$T/web2.pem"
    hp_out_has "object=web2"
    hp_out_lacks "id=$id"
    ;;
*) hp_fail "unknown case $case" ;;
esac
hp_no_pin
echo "PASS: keygen $case"
