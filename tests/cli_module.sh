#!/usr/bin/env bash
# Which PKCS#11 module hsmprov loads:
#
#   cli_module.sh p11kit_proxy   no pkcs11-module-path: p11-kit's proxy, which
#                                reaches SoftHSM2 as a registered module
#   cli_module.sh env_override   PKCS11_PROVIDER_MODULE names SoftHSM2 while the
#                                config names a module that does not exist
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

mode=${1:?mode}
hp_setup
key="pkcs11:token=demo;object=ec;type=private"
printf 'which module?\n' >"$T/msg"

case $mode in
p11kit_proxy)
    command -v p11-kit >/dev/null || hp_fail "p11-kit not installed"
    hp_step "p11-kit sees the test token through SoftHSM2's registration"
    hp_ok env -u OPENSSL_CONF p11-kit list-modules
    hp_out_has "token: demo"
    sed -i '/^pkcs11-module-path/d' "$OPENSSL_CONF"
    ;;
env_override)
    sed -i "s|^pkcs11-module-path = .*|pkcs11-module-path = $T/not/here.so|" "$OPENSSL_CONF"
    export PKCS11_PROVIDER_MODULE=$SOFTHSM2_MODULE
    ;;
*) hp_fail "unknown mode $mode" ;;
esac
grep -n 'pkcs11-module' "$OPENSSL_CONF"

hp_step "sign through the module chosen ($mode), verify in software"
hp_ok openssl dgst -sha256 -sign "$key" -out "$T/sig" "$T/msg"
hp_pubout "$key" "$T/pub.pem"
hp_ok openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig" "$T/msg"
hp_out_has "Verified OK"

echo "PASS: cli_module $mode"
