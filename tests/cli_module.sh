#!/usr/bin/env bash
# Which PKCS#11 module hsmprov loads:
#
#   cli_module.sh p11kit_proxy   no pkcs11-module-path: p11-kit's proxy, which
#                                reaches SoftHSM2 as a registered module
#   cli_module.sh env_override   PKCS11_PROVIDER_MODULE names SoftHSM2 while the
#                                config names a module that does not exist
#   cli_module.sh sigpipe_guard  SIGPIPE is blocked around the calls of every
#                                module that may write to a socket, not around
#                                SoftHSM2's (under any file name): the
#                                HSMPROV_DEBUG line of each load says which
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
sigpipe_guard)
    guard_of() { # module path: GUARD becomes the debug line's verdict
        sed -i "s|^pkcs11-module-path = .*|pkcs11-module-path = $1|" "$OPENSSL_CONF"
        HSMPROV_DEBUG=1 hp_ok openssl pkey -pubout -in "$key" -out "$T/pub.pem"
        GUARD=$(grep -o 'SIGPIPE guard [a-z]*' <<<"$HP_OUT" | head -n1)
    }
    ln -s "$SOFTHSM2_MODULE" "$T/vendor-hsm.so"
    hp_step "SoftHSM2, directly and through a link of another name: no guard"
    guard_of "$SOFTHSM2_MODULE"
    [ "$GUARD" = "SIGPIPE guard off" ] || hp_fail "SoftHSM2: $GUARD"
    hp_out_has "(a local software token)"
    guard_of "$T/vendor-hsm.so"
    [ "$GUARD" = "SIGPIPE guard off" ] || hp_fail "link to SoftHSM2: $GUARD"
    hp_step "any other module (the shim in front of SoftHSM2): guarded"
    guard_of "${HSMPROV_SHIM:?}"
    [ "$GUARD" = "SIGPIPE guard on" ] || hp_fail "shim: $GUARD"
    proxy=$(find /usr/lib/*/p11-kit-proxy.so 2>/dev/null | head -n1)
    if [ -n "$proxy" ]; then
        hp_step "p11-kit's proxy: guarded"
        guard_of "$proxy"
        [ "$GUARD" = "SIGPIPE guard on" ] || hp_fail "$proxy: $GUARD"
    fi
    sed -i "s|^pkcs11-module-path = .*|pkcs11-module-path = $SOFTHSM2_MODULE|" "$OPENSSL_CONF"
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
