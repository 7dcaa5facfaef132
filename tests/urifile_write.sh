#!/usr/bin/env bash
# Writing a token private key (`openssl pkey -out`) writes a key file that
# refers to it: PEM "PKCS#11 PROVIDER URI" around SEQUENCE { VisibleString
# "PKCS#11 Provider URI v1.0", UTF8String uri }. The URI names the token by
# its whole identity and the key by label, id and type=private; it is made
# from what the token says, never copied from the URI the user typed, and
# never holds a PIN. Asked to encrypt the file, openssl is refused.
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

hp_setup
serial=$(env -u OPENSSL_CONF softhsm2-util --show-slots | awk '/Serial number:/ && $3 != "" {s=$3} END {print s}')

hp_step "pkey -out writes a URI file for the EC key"
hp_ok openssl pkey -in "pkcs11:token=demo;object=ec;type=private" -out "$T/ec.pem"
head -1 "$T/ec.pem" | grep -qx -- '-----BEGIN PKCS#11 PROVIDER URI-----' ||
    hp_fail "not a PKCS#11 PROVIDER URI PEM: $(head -1 "$T/ec.pem")"
hp_ok openssl asn1parse -in "$T/ec.pem"
printf '%s\n' "$HP_OUT"
hp_out_has "VISIBLESTRING     :PKCS#11 Provider URI v1.0" "UTF8STRING        :pkcs11:" \
    "token=demo" "manufacturer=SoftHSM%20project" "model=SoftHSM%20v2" \
    "serial=$serial" "object=ec" "id=%02" "type=private"
[ "$(grep -c 'prim:' <<<"$HP_OUT")" -eq 2 ] || hp_fail "the file holds more than version and URI"

hp_step "a pin-value in the URI given never reaches the file"
hp_ok openssl pkey -in "pkcs11:token=demo;object=rsa;type=private?pin-value=$HP_PIN" \
    -out "$T/rsa.pem"
hp_ok openssl asn1parse -in "$T/rsa.pem"
hp_out_has "object=rsa" "id=%01" "type=private"
hp_out_lacks "pin-value" "pin-source"
grep -qF "$HP_PIN" "$T/rsa.pem" && hp_fail "the PIN is in the file"

hp_step "-outform DER writes the bare structure"
hp_ok openssl pkey -in "pkcs11:token=demo;object=ec384;type=private" -outform DER \
    -out "$T/ec384.der"
hp_ok openssl asn1parse -inform DER -in "$T/ec384.der"
hp_out_has "PKCS#11 Provider URI v1.0" "object=ec384" "type=private"

hp_step "an encrypted key file is refused, saying why"
hp_fails openssl pkey -in "pkcs11:token=demo;object=ec;type=private" -aes256 \
    -passout pass:secret -out "$T/enc.pem"
hp_out_has "stays in the token" "not encrypted"

hp_step "software keys are still written as PKCS#8 by the default provider"
hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/sw.pem"
head -1 "$T/sw.pem" | grep -qx -- '-----BEGIN PRIVATE KEY-----' || hp_fail "software key not PKCS#8"

echo "PASS: urifile_write"
