#!/usr/bin/env bash
# Key files that refer to a token key, made here from the format itself (not
# by hsmprov): DER of SEQUENCE { VisibleString "PKCS#11 Provider URI v1.0",
# UTF8String uri } from `openssl asn1parse -genconf`, in base64 between
# "PKCS#11 PROVIDER URI" lines. Anything that reads a private key reads them
# as the token key.
#
#   urifile_read.sh CASE
#     cli            pkey -pubout, dgst -sign, pkeyutl -sign, req -x509 with
#                    -key FILE; signatures verify in software
#     c_api          PEM_read_bio_PrivateKey, OSSL_DECODER, d2i_PrivateKey_bio
#                    (tests/urifile_read.c): the token key signs
#     peer_files     files as pkcs11-provider and p11sak write them (the
#                    token's whole identity, percent-encoded id) load unchanged
#     round_trip     a file written by `openssl pkey -out` reads back
#     other_version  another version string: refused, naming the version read
#     pin_value      a URI with a pin-value: refused, the PIN never shown
#     missing_key    a key that is not on the token: the error names the URI
#     software_keys  ordinary PEM and DER keys still load in the default provider
#     tls13          s_server -key FILE serves a TLS 1.3 handshake
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_setup

# uri_file VERSION URI OUT: the key file, made without hsmprov. '#' starts a
# comment in -genconf's syntax, hence the escape.
uri_file() {
    printf 'asn1=SEQUENCE:file\n[file]\nversion=VISIBLESTRING:%s\nuri=UTF8:%s\n' \
        "${1//#/\\#}" "$2" >"$T/genconf"
    env -u OPENSSL_CONF openssl asn1parse -genconf "$T/genconf" -out "$3.der" -noout >/dev/null ||
        hp_fail "asn1parse -genconf failed for $2"
    {
        echo "-----BEGIN PKCS#11 PROVIDER URI-----"
        base64 -w 64 "$3.der"
        echo "-----END PKCS#11 PROVIDER URI-----"
    } >"$3"
}
V1="PKCS#11 Provider URI v1.0"
printf 'a message for the token key\n' >"$T/msg"

# sign_verify KEYFILE PUB: dgst -sign with the file, verified in software.
sign_verify() {
    hp_ok openssl dgst -sha256 -sign "$1" -out "$T/sig" "$T/msg"
    hp_ok env -u OPENSSL_CONF openssl dgst -sha256 -verify "$2" -signature "$T/sig" "$T/msg"
    hp_out_has "Verified OK"
}

case $case in
cli)
    for obj in rsa ec; do
        uri="pkcs11:token=demo;object=$obj;type=private"
        hp_pubout "$uri" "$T/$obj.pub"
        uri_file "$V1" "$uri" "$T/$obj.pem"
        hp_step "pkey -in $obj key file -pubout: the token key's public half"
        hp_ok openssl pkey -in "$T/$obj.pem" -pubout -out "$T/$obj.file.pub"
        cmp -s "$T/$obj.pub" "$T/$obj.file.pub" || hp_fail "public keys differ"
        hp_step "dgst -sign with the $obj key file"
        sign_verify "$T/$obj.pem" "$T/$obj.pub"
        hp_step "pkeyutl -sign with the $obj key file"
        hp_ok openssl pkeyutl -sign -inkey "$T/$obj.pem" -rawin -digest sha256 \
            -in "$T/msg" -out "$T/sig2"
        hp_ok env -u OPENSSL_CONF openssl pkeyutl -verify -pubin -inkey "$T/$obj.pub" \
            -rawin -digest sha256 -in "$T/msg" -sigfile "$T/sig2"
        hp_step "req -x509 -key with the $obj key file"
        hp_ok openssl req -new -x509 -key "$T/$obj.pem" -subj "/CN=key file $obj" -days 1 \
            -out "$T/$obj.crt"
        hp_ok env -u OPENSSL_CONF openssl verify -CAfile "$T/$obj.crt" "$T/$obj.crt"
    done
    ;;
c_api)
    hp_pubout "pkcs11:token=demo;object=ec;type=private" "$T/ec.pub"
    hp_pubout "pkcs11:token=demo;object=rsa;type=private" "$T/rsa.pub"
    uri_file "$V1" "pkcs11:token=demo;object=ec;type=private" "$T/ec.pem"
    uri_file "$V1" "pkcs11:token=demo;object=rsa;type=private" "$T/rsa.pem"
    for api in pem decoder; do
        hp_step "$api: EC and RSA key files"
        hp_ok "$HSMPROV_BUILD_DIR/tests/urifile_read" "$api" "$T/ec.pem" "$T/ec.pub"
        hp_ok "$HSMPROV_BUILD_DIR/tests/urifile_read" "$api" "$T/rsa.pem" "$T/rsa.pub"
    done
    hp_step "d2i_PrivateKey_bio: a DER key file"
    hp_ok "$HSMPROV_BUILD_DIR/tests/urifile_read" der "$T/rsa.pem.der" "$T/rsa.pub"
    ;;
peer_files)
    serial=$(env -u OPENSSL_CONF softhsm2-util --show-slots |
        awk '/Serial number:/ && $3 != "" {s=$3} END {print s}')
    hp_pubout "pkcs11:token=demo;object=ec384;type=private" "$T/ec384.pub"
    # pkcs11-provider: model, manufacturer, serial, token, id, object, type.
    uri_file "$V1" "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=$serial;token=demo;id=%03;object=ec384;type=private" "$T/peer.pem"
    # p11sak: token identity and the key by id alone.
    uri_file "$V1" "pkcs11:token=demo;manufacturer=SoftHSM%20project;serial=$serial;model=SoftHSM%20v2;id=%03;type=private" "$T/p11sak.pem"
    for f in peer p11sak; do
        hp_step "a key file as $f writes it"
        sign_verify "$T/$f.pem" "$T/ec384.pub"
    done
    hp_step "another token serial: the key is not found there"
    uri_file "$V1" "pkcs11:token=demo;serial=0000000000000000;id=%03;type=private" "$T/other.pem"
    hp_fails openssl pkey -in "$T/other.pem" -pubout
    hp_out_has "serial=0000000000000000"
    ;;
round_trip)
    hp_pubout "pkcs11:token=demo;object=ec521;type=private" "$T/ec521.pub"
    hp_ok openssl pkey -in "pkcs11:token=demo;object=ec521;type=private" -out "$T/w.pem"
    sign_verify "$T/w.pem" "$T/ec521.pub"
    hp_ok openssl pkey -in "pkcs11:token=demo;object=ec521;type=private" -outform DER \
        -out "$T/w.der"
    hp_ok openssl pkey -inform DER -in "$T/w.der" -pubout -out "$T/w.der.pub"
    cmp -s "$T/ec521.pub" "$T/w.der.pub" || hp_fail "DER key file: public keys differ"
    ;;
other_version)
    uri_file "PKCS#11 Provider URI v2.0" "pkcs11:token=demo;object=rsa;type=private" "$T/v2.pem"
    hp_fails openssl dgst -sha256 -sign "$T/v2.pem" -out "$T/sig" "$T/msg"
    hp_out_has "another version" "\"PKCS#11 Provider URI v1.0\" only"
    hp_out_lacks "v2.0"
    hp_fails "$HSMPROV_BUILD_DIR/tests/urifile_read" pem "$T/v2.pem" /dev/null
    hp_out_has "another version" "\"PKCS#11 Provider URI v1.0\" only"
    ;;
pin_value)
    uri_file "$V1" "pkcs11:token=demo;object=rsa;type=private?pin-value=$HP_PIN" "$T/pin.pem"
    hp_fails openssl dgst -sha256 -sign "$T/pin.pem" -out "$T/sig" "$T/msg"
    hp_out_has "holds a pin-value" "must not carry a PIN" \
        "pkcs11:token=demo;object=rsa;type=private"
    hp_no_pin
    hp_fails "$HSMPROV_BUILD_DIR/tests/urifile_read" decoder "$T/pin.pem" /dev/null
    hp_out_has "holds a pin-value"
    hp_no_pin
    ;;
missing_key)
    uri_file "$V1" "pkcs11:token=demo;object=gone%0a%1b;type=private" "$T/gone.pem"
    hp_fails openssl pkey -in "$T/gone.pem" -pubout
    hp_out_has "the key file names pkcs11:token=demo;object=gone%0A%1B;type=private" \
        "no private key"
    hp_fails "$HSMPROV_BUILD_DIR/tests/urifile_read" pem "$T/gone.pem" /dev/null
    hp_out_has "object=gone%0A%1B"
    ;;
software_keys)
    hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/sw.pem"
    hp_ok openssl pkey -in "$T/sw.pem" -traditional -out "$T/sw-trad.pem"
    hp_ok openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -outform DER \
        -out "$T/sw.der"
    hp_ok env -u OPENSSL_CONF openssl pkey -in "$T/sw.pem" -pubout -out "$T/sw.pub"
    for f in sw.pem sw-trad.pem; do
        hp_step "software key $f"
        hp_ok openssl pkey -in "$T/$f" -text -noout
        hp_out_has "priv:" "ASN1 OID: prime256v1"
        sign_verify "$T/$f" "$T/sw.pub"
    done
    hp_ok openssl pkey -inform DER -in "$T/sw.der" -text -noout
    hp_out_has "privateExponent:"
    ;;
tls13)
    uri_file "$V1" "pkcs11:token=demo;object=ec;type=private" "$T/ec.pem"
    hp_ok openssl req -new -x509 -key "$T/ec.pem" -subj "/CN=localhost" -days 30 \
        -out "$T/cert.pem"
    hp_start_server "$T/server.out" -key "$T/ec.pem" -cert "$T/cert.pem" -tls1_3 -www \
        -naccept 1
    printf 'GET / HTTP/1.0\r\n\r\n' >"$T/request"
    hp_ok hp_timeout 30 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
        -CAfile "$T/cert.pem" -verify_return_error -ign_eof <"$T/request"
    hp_out_has "Verify return code: 0 (ok)" "Protocol  : TLSv1.3" \
        "Peer signature type: ECDSA" "HTTP/1.0 200 ok"
    ;;
*) hp_fail "unknown case $case" ;;
esac

echo "PASS: urifile_read $case"
