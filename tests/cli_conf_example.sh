#!/usr/bin/env bash
# conf/openssl.cnf, the documented example, works as written: with every
# commented directive switched on at its documented value, hsmprov loads and
# a token key signs.
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

hp_setup
example=$HSMPROV_TESTS_DIR/../conf/openssl.cnf
[ -f "$example" ] || hp_fail "no $example"

hp_step "conf/openssl.cnf with this build's paths and every directive uncommented"
sed -e "s|^#module = .*|module = $HSMPROV_MODULE|" \
    -e "s|^pkcs11-module-path = .*|pkcs11-module-path = $SOFTHSM2_MODULE|" \
    -e "s|^pkcs11-module-token-pin = file:.*|pkcs11-module-token-pin = file:$T/pin|" \
    -e 's|^#\(pkcs11-[a-z0-9-]* =.*\)$|\1|' \
    "$example" >"$T/example.cnf"
grep -E '^(module|pkcs11-)' "$T/example.cnf"
n=$(grep -cE '^pkcs11-' "$T/example.cnf")
[ "$n" -ge 8 ] || hp_fail "only $n pkcs11- directives in the example"
export OPENSSL_CONF=$T/example.cnf

hp_ok openssl list -providers
hp_out_has "hsmprov" "status: active"
printf 'example\n' >"$T/msg"
hp_ok openssl dgst -sha256 -sign "pkcs11:token=demo;object=ec;type=private" -out "$T/sig" "$T/msg"
hp_pubout "pkcs11:token=demo;object=ec;type=private" "$T/pub.pem"
hp_ok openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig" "$T/msg"
hp_out_has "Verified OK"

echo "PASS: cli_conf_example"
