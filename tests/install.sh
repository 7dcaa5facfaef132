#!/usr/bin/env bash
# `cmake --install` puts hsmprov.so where `openssl version -m` says modules
# live, and OpenSSL then finds it by name: a config without a `module =` line
# loads it (OPENSSL_MODULES points OpenSSL at the staged copy).
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

hp_setup
: "${HSMPROV_BUILD_DIR:?}"
modulesdir=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"$/\1/p')
[ -n "$modulesdir" ] || hp_fail "openssl version -m names no MODULESDIR"

hp_step "DESTDIR=$T/root cmake --install (modules dir: $modulesdir)"
hp_ok env DESTDIR="$T/root" cmake --install "$HSMPROV_BUILD_DIR"
[ -f "$T/root$modulesdir/hsmprov.so" ] || {
    printf '%s\n' "$HP_OUT" >&2
    hp_fail "hsmprov.so not installed in $modulesdir"
}

hp_step "OpenSSL finds the installed module by name"
sed -i '/^module = /d' "$OPENSSL_CONF"
export OPENSSL_MODULES=$T/root$modulesdir
hp_ok openssl list -providers
hp_out_has "hsmprov" "status: active"
hp_ok openssl pkey -in "pkcs11:token=demo;object=ec;type=private" -pubout
hp_out_has "BEGIN PUBLIC KEY"

echo "PASS: install"
