#!/usr/bin/env bash
# Ciphers in the token from the openssl command line.
#
#   cipher_cli.sh enc        `openssl enc -propquery provider=hsmprov` with
#                            AES-128/192/256 in CBC (padded and not), CTR and
#                            ECB gives the default provider's bytes, and
#                            decrypts them; the token did the work.
#   cipher_cli.sh pkeyutl    `openssl pkeyutl -decrypt -inkey pkcs11:...` of
#                            software's RSA ciphertexts, PKCS#1 v1.5 and OAEP
#                            with rsa_oaep_md / rsa_mgf1_md / rsa_oaep_label;
#                            `pkeyutl -encrypt` with the token key, decrypted
#                            by software.
#   cipher_cli.sh pkeyutl_bad
#                            a wrong label, a wrong digest, a tampered
#                            ciphertext: pkeyutl fails with a message, writes
#                            no plaintext.
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"
# shellcheck source=lib/cipher_keys.sh
. "$HSMPROV_TESTS_DIR/lib/cipher_keys.sh"

case=${1:?case}

hp_tmpdir
hp_make_token "$T"
hp_cipher_keys
hp_write_cnf "$T"

KEY="pkcs11:token=demo;object=rsaimp;type=private"

case $case in
enc)
    head -c 5000 /dev/urandom >"$T/msg"  # not a whole number of blocks
    head -c 4096 /dev/urandom >"$T/msg16" # whole blocks, for -nopad
    for bits in 128 192 256; do
        for mode in cbc cbc-nopad ctr ecb ecb-nopad; do
            m=${mode%-nopad}
            args=("-aes-$bits-$m" -K "$(openssl rand -hex $((bits / 8)))")
            [ "$m" = ecb ] || args+=(-iv "$(openssl rand -hex 16)")
            in=$T/msg
            if [ "$mode" != "$m" ]; then
                args+=(-nopad)
                in=$T/msg16
            fi
            hp_step "openssl enc -aes-$bits-$mode"
            hp_ok openssl enc -e "${args[@]}" -in "$in" -out "$T/h.enc" -propquery provider=hsmprov
            hp_ok openssl enc -e "${args[@]}" -in "$in" -out "$T/s.enc" -propquery provider=default
            cmp -s "$T/h.enc" "$T/s.enc" || hp_fail "aes-$bits-$mode: hsmprov's bytes differ"
            hp_ok openssl enc -d "${args[@]}" -in "$T/s.enc" -out "$T/h.dec" -propquery provider=hsmprov
            cmp -s "$T/h.dec" "$in" || hp_fail "aes-$bits-$mode: hsmprov's decryption differs"
        done
    done
    hp_step "the token did the work"
    HSMPROV_DEBUG=1 hp_ok openssl enc -e -aes-256-cbc -K "$(openssl rand -hex 32)" \
        -iv "$(openssl rand -hex 16)" -in "$T/msg" -out "$T/h.enc" -propquery provider=hsmprov
    hp_out_has "C_CreateObject -> CKR_OK" "C_EncryptInit -> CKR_OK" "C_EncryptFinal -> CKR_OK" \
        "C_DestroyObject -> CKR_OK"
    hp_no_pin
    hp_step "a raw key needs no PIN"
    HP_CNF_PIN="" hp_write_cnf "$T"
    args=(-aes-128-ctr -K "$(openssl rand -hex 16)" -iv "$(openssl rand -hex 16)")
    hp_ok openssl enc -e "${args[@]}" -in "$T/msg" -out "$T/h.enc" -propquery provider=hsmprov
    hp_ok openssl enc -e "${args[@]}" -in "$T/msg" -out "$T/s.enc" -propquery provider=default
    cmp -s "$T/h.enc" "$T/s.enc" || hp_fail "aes-128-ctr without a PIN: bytes differ"
    ;;
pkeyutl)
    head -c 32 /dev/urandom >"$T/msg"
    openssl pkey -in "$T/rsaimp.pem" -pubout -out "$T/pub.pem"
    oaep="-pkeyopt rsa_padding_mode:oaep"
    for opts in "" "$oaep" "$oaep -pkeyopt rsa_oaep_md:sha256" \
        "$oaep -pkeyopt rsa_oaep_md:sha512 -pkeyopt rsa_mgf1_md:sha256" \
        "$oaep -pkeyopt rsa_oaep_md:sha384 -pkeyopt rsa_oaep_label:0102030405060708" \
        "$oaep -pkeyopt rsa_oaep_label:6869"; do
        # shellcheck disable=SC2206 # the options are words
        o=($opts)
        hp_step "pkeyutl ${opts:-(PKCS#1 v1.5)}"
        hp_ok openssl pkeyutl -encrypt -pubin -inkey "$T/pub.pem" -in "$T/msg" -out "$T/ct" "${o[@]}"
        hp_ok openssl pkeyutl -decrypt -inkey "$KEY" -in "$T/ct" -out "$T/pt" "${o[@]}"
        cmp -s "$T/pt" "$T/msg" || hp_fail "token decryption ($opts) differs"
        hp_ok openssl pkeyutl -encrypt -inkey "$KEY" -in "$T/msg" -out "$T/ct2" "${o[@]}"
        hp_ok openssl pkeyutl -decrypt -inkey "$T/rsaimp.pem" -in "$T/ct2" -out "$T/pt2" "${o[@]}"
        cmp -s "$T/pt2" "$T/msg" || hp_fail "software decryption of the token's ($opts) differs"
    done
    hp_no_pin
    ;;
pkeyutl_bad)
    head -c 32 /dev/urandom >"$T/msg"
    openssl pkey -in "$T/rsaimp.pem" -pubout -out "$T/pub.pem"
    oaep=(-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256)
    hp_ok openssl pkeyutl -encrypt -pubin -inkey "$T/pub.pem" -in "$T/msg" -out "$T/ct" \
        "${oaep[@]}" -pkeyopt rsa_oaep_label:aabbcc
    hp_step "a wrong label"
    rm -f "$T/pt"
    hp_fails openssl pkeyutl -decrypt -inkey "$KEY" -in "$T/ct" -out "$T/pt" "${oaep[@]}" \
        -pkeyopt rsa_oaep_label:aabbcd
    hp_out_has "hsmprov" "OAEP"
    [ ! -s "$T/pt" ] || hp_fail "a plaintext was written"
    hp_step "no label"
    hp_fails openssl pkeyutl -decrypt -inkey "$KEY" -in "$T/ct" -out "$T/pt" "${oaep[@]}"
    [ ! -s "$T/pt" ] || hp_fail "a plaintext was written"
    hp_step "a wrong digest"
    hp_fails openssl pkeyutl -decrypt -inkey "$KEY" -in "$T/ct" -out "$T/pt" \
        -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_oaep_label:aabbcc
    [ ! -s "$T/pt" ] || hp_fail "a plaintext was written"
    hp_step "PKCS#1 v1.5, tampered"
    hp_ok openssl pkeyutl -encrypt -pubin -inkey "$T/pub.pem" -in "$T/msg" -out "$T/ct"
    printf '\x55' | dd of="$T/ct" bs=1 seek=100 conv=notrunc 2>/dev/null
    hp_fails openssl pkeyutl -decrypt -inkey "$KEY" -in "$T/ct" -out "$T/pt"
    hp_out_has "C_Decrypt"
    [ ! -s "$T/pt" ] || hp_fail "a plaintext was written"
    hp_no_pin
    ;;
*)
    hp_fail "unknown case $case"
    ;;
esac
echo "PASS"
