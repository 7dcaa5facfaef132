# shellcheck shell=bash
# Sourced by the cipher tests (tests/cipher.sh, tests/cipher_cli.sh), after
# hp_make_token: the keys they use.
#
#   hp_cipher_keys   AES keys of known value, imported as software would have
#                    them: NIST SP 800-38A's as "kat128/192/256" (id 11-13),
#                    the GCM specification's as "gcm128/192/256" (id 14-16);
#                    an AES-256 key made by the token, "aes" (id 10); RSA-2048
#                    made by the token, "rsa" (id 01); and RSA-2048 "rsaimp"
#                    (id 05) imported from $T/rsaimp.pem, so that software
#                    holds its private half too.

# hp_import_aes LABEL ID HEX
hp_import_aes() {
    printf '%s' "$3" | xxd -r -p >"$T/$1.bin"
    hp_p11tool --token-label "$HP_TOKEN_LABEL" --login --pin "$HP_PIN" --write-object \
        "$T/$1.bin" --type secrkey --key-type "AES:$((${#3} / 2))" --label "$1" \
        --id "$2" >/dev/null 2>&1 || hp_fail "cannot import AES key $1"
    rm -f "$T/$1.bin"
}

hp_cipher_keys() {
    local t
    hp_keygen rsa:2048 rsa 01
    hp_import_aes kat128 11 2b7e151628aed2a6abf7158809cf4f3c
    hp_import_aes kat192 12 8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b
    hp_import_aes kat256 13 603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4
    hp_import_aes gcm128 14 feffe9928665731c6d6a8f9467308308
    hp_import_aes gcm192 15 feffe9928665731c6d6a8f9467308308feffe9928665731c
    hp_import_aes gcm256 16 feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308
    hp_p11tool --token-label "$HP_TOKEN_LABEL" --login --pin "$HP_PIN" --keygen \
        --key-type AES:32 --label aes --id 10 >/dev/null 2>&1 || hp_fail "cannot make AES key"
    command openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
        -out "$T/rsaimp.pem" 2>/dev/null
    command openssl pkey -in "$T/rsaimp.pem" -outform DER -out "$T/rsaimp.der"
    command openssl pkey -in "$T/rsaimp.pem" -pubout -outform DER -out "$T/rsaimp.pub.der"
    for t in privkey:rsaimp.der pubkey:rsaimp.pub.der; do
        hp_p11tool --token-label "$HP_TOKEN_LABEL" --login --pin "$HP_PIN" --write-object \
            "$T/${t#*:}" --type "${t%%:*}" --id 05 --label rsaimp >/dev/null 2>&1 ||
            hp_fail "cannot import the RSA key (${t%%:*})"
    done
    rm -f "$T/rsaimp.der"
}
