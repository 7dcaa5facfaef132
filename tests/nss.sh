#!/usr/bin/env bash
# NSS's softokn (libsoftokn3.so) as hsmprov's module: a second, real PKCS#11
# module beside SoftHSM2. The keys and certificates are made by NSS's own
# certutil in a database of the test's directory, opened through
# pkcs11-module-init-args as NSS wants; keys are found by their CKA_ID
# (NSS derives it from the public key: certutil -K lists it).
#
#   nss.sh sign     RSA and EC: `openssl dgst -sign pkcs11:...;id=...` in
#                   software-verifiable signatures (public key exported by
#                   hsmprov, certificate made by certutil)
#   nss.sh tls13    s_server with the NSS key and certutil's certificate, RSA
#                   (RSA-PSS) and EC: TLS 1.3 handshakes verified by s_client
#   nss.sh oaep     software's RSA-OAEP ciphertext decrypted by the NSS key
#   nss.sh aes      `openssl enc` AES-CBC/CTR in softokn gives the default
#                   provider's bytes
#   nss.sh gcm_pool CIPHER_AES
#                   AES-GCM, which softokn does in one call only, works, and
#                   the session whose C_EncryptUpdate it refused never goes
#                   back to the pool with the operation running (pool of 1:
#                   the next cipher would meet CKR_OPERATION_ACTIVE)
#
# Needs libnss3-tools (certutil) and libsoftokn3.so (libnss3).
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
NSS_MODULE=${NSS_MODULE:-/usr/lib/x86_64-linux-gnu/libsoftokn3.so}
NSS_PIN=nss-48151623
TOKEN="token=NSS%20Certificate%20DB"

[ -f "$NSS_MODULE" ] || hp_fail "$NSS_MODULE missing (install libnss3)"
command -v certutil >/dev/null || hp_fail "certutil missing (install libnss3-tools)"

hp_tmpdir
mkdir "$T/db"
printf '%s\n' "$NSS_PIN" >"$T/pwfile"
printf '%s' "$NSS_PIN" >"$T/pin"
chmod 600 "$T/pwfile" "$T/pin"
head -c 64 /dev/urandom >"$T/noise"

hp_step "NSS database with an RSA and an EC key (certutil)"
# certutil links NSS, not OpenSSL: the test's openssl.cnf is nothing to it.
hp_ok certutil -N -d "sql:$T/db" -f "$T/pwfile"
hp_ok certutil -S -d "sql:$T/db" -f "$T/pwfile" -z "$T/noise" -n rsa -s "CN=localhost,O=hsmprov rsa" \
    -k rsa -g 2048 -x -t "CT,," -v 12 -8 localhost
hp_ok certutil -S -d "sql:$T/db" -f "$T/pwfile" -z "$T/noise" -n ec -s "CN=localhost,O=hsmprov ec" \
    -k ec -q nistp256 -x -t "CT,," -v 12 -8 localhost
hp_ok certutil -K -d "sql:$T/db" -f "$T/pwfile"
printf '%s\n' "$HP_OUT"

# "< 0> rsa      7df1...bbce   NSS Certificate DB:rsa" -> pkcs11 URI id=%7d%f1...
nss_uri() {
    local hex
    hex=$(awk -v n="NSS Certificate DB:$1" '$0 ~ n"$" {print $4}' <<<"$HP_OUT")
    [ -n "$hex" ] || hp_fail "certutil -K lists no key for $1"
    printf 'pkcs11:%s;id=%s;type=private' "$TOKEN" "$(sed 's/../%&/g' <<<"$hex")"
}
RSA=$(nss_uri rsa)
EC=$(nss_uri ec)
echo "RSA key: $RSA"
echo "EC key:  $EC"
certutil -L -d "sql:$T/db" -n rsa -a >"$T/rsa.crt"
certutil -L -d "sql:$T/db" -n ec -a >"$T/ec.crt"

# NSS's module string: the database, no prefixes, no secmod of its own.
hp_write_cnf "$T" "pkcs11-module-path = $NSS_MODULE
pkcs11-module-init-args = configdir='sql:$T/db' certPrefix='' keyPrefix='' secmod='secmod.db' flags=optimizeSpace"

pubkey_of_cert() {
    openssl x509 -in "$1" -pubkey -noout >"$2"
}

case $case in
sign)
    head -c 5000 /dev/urandom >"$T/msg"
    for k in rsa ec; do
        uri=$RSA
        [ $k = ec ] && uri=$EC
        hp_step "$k: sign with $uri"
        hp_ok openssl dgst -sha256 -sign "$uri" -out "$T/$k.sig" "$T/msg"
        hp_no_pin "$NSS_PIN"
        hp_step "$k: the public key hsmprov exports is the certificate's"
        hp_pubout "$uri" "$T/$k.pub"
        pubkey_of_cert "$T/$k.crt" "$T/$k.certpub"
        cmp -s "$T/$k.pub" "$T/$k.certpub" || hp_fail "$k: public key differs from the certificate's"
        hp_step "$k: verified in software"
        hp_ok openssl dgst -sha256 -verify "$T/$k.certpub" -signature "$T/$k.sig" "$T/msg"
        hp_out_has "Verified OK"
        { cat "$T/msg"; printf 'x'; } >"$T/msg.bad"
        hp_fails openssl dgst -sha256 -verify "$T/$k.certpub" -signature "$T/$k.sig" "$T/msg.bad"
    done
    ;;
tls13)
    printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"
    for k in rsa ec; do
        uri=$RSA sigtype=RSA-PSS
        [ $k = ec ] && uri=$EC sigtype=ECDSA
        hp_step "$k: s_server -tls1_3 with $uri and certutil's certificate"
        hp_start_server "$T/server-$k.out" -key "$uri" -cert "$T/$k.crt" -tls1_3 -www -naccept 1
        hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
            -CAfile "$T/$k.crt" -verify_return_error -ign_eof <"$T/request"
        hp_out_has "Verify return code: 0 (ok)" "Protocol  : TLSv1.3" \
            "Peer signature type: $sigtype" "HTTP/1.0 200 ok"
    done
    ;;
oaep)
    pubkey_of_cert "$T/rsa.crt" "$T/rsa.pub"
    head -c 100 /dev/urandom >"$T/secret"
    for md in sha1 sha256; do
        hp_step "RSA-OAEP ($md) of software, decrypted by softokn"
        openssl pkeyutl -encrypt -pubin -inkey "$T/rsa.pub" -pkeyopt rsa_padding_mode:oaep \
            -pkeyopt "rsa_oaep_md:$md" -pkeyopt "rsa_mgf1_md:$md" -in "$T/secret" -out "$T/ct"
        hp_ok openssl pkeyutl -decrypt -inkey "$RSA" -pkeyopt rsa_padding_mode:oaep \
            -pkeyopt "rsa_oaep_md:$md" -pkeyopt "rsa_mgf1_md:$md" -in "$T/ct" -out "$T/pt"
        cmp -s "$T/pt" "$T/secret" || hp_fail "OAEP ($md): wrong plaintext"
    done
    ;;
aes)
    head -c 5000 /dev/urandom >"$T/msg"
    for m in cbc ctr; do
        args=(-aes-256-$m -K "$(openssl rand -hex 32)" -iv "$(openssl rand -hex 16)")
        hp_step "openssl enc -aes-256-$m in softokn"
        HSMPROV_DEBUG=1 hp_ok openssl enc -e "${args[@]}" -in "$T/msg" -out "$T/h.enc" \
            -propquery provider=hsmprov
        hp_out_has "C_EncryptInit -> CKR_OK"
        hp_ok openssl enc -e "${args[@]}" -in "$T/msg" -out "$T/s.enc" -propquery provider=default
        cmp -s "$T/h.enc" "$T/s.enc" || hp_fail "aes-256-$m: softokn's bytes differ"
        hp_ok openssl enc -d "${args[@]}" -in "$T/s.enc" -out "$T/h.dec" -propquery provider=hsmprov
        cmp -s "$T/h.dec" "$T/msg" || hp_fail "aes-256-$m: softokn's decryption differs"
    done
    ;;
gcm_pool)
    hp_write_cnf "$T" "pkcs11-module-path = $NSS_MODULE
pkcs11-module-init-args = configdir='sql:$T/db' certPrefix='' keyPrefix='' secmod='secmod.db' flags=optimizeSpace
pkcs11-pool-size = 1"
    hp_step "AES-GCM in softokn, then CBC on the same one-session pool"
    HSMPROV_DEBUG=1 hp_ok hp_timeout 60 "${2:?the cipher_aes program}" gcm_one_part
    hp_out_has "PASS" "C_EncryptUpdate -> CKR_OPERATION_NOT_INITIALIZED"
    hp_out_lacks "FAIL" "CKR_OPERATION_ACTIVE"
    ;;
*) hp_fail "unknown case $case" ;;
esac
echo "PASS: nss $case"
