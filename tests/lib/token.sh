# shellcheck shell=bash
# Sourced by tests and by the demo: makes a private SoftHSM2 token and an
# openssl.cnf that loads hsmprov beside the default provider.
#
#   hp_make_token DIR [LABEL]   token LABEL (default "demo") in DIR/tokens,
#                               user PIN 1234, SO PIN 12345678; sets
#                               SOFTHSM2_CONF and writes DIR/pin (the PIN file)
#   hp_add_keys                 RSA-2048 "rsa" (id 01), EC P-256 "ec" (id 02),
#                               P-384 "ec384" (id 03), P-521 "ec521" (id 04)
#   hp_write_cnf DIR [EXTRA]    DIR/openssl.cnf loading hsmprov with the PIN from
#                               DIR/pin; EXTRA lines go into the hsmprov section;
#                               sets OPENSSL_CONF. If HP_CNF_PIN is set (even to
#                               ""), that line replaces the PIN directive: set it
#                               empty for a config without a PIN. Lines in
#                               HP_CNF_EXTRA (if set) are added too: a test's
#                               variant in another configuration.
#
# HP_PIN may be set before sourcing to use another user PIN (default 1234).
#
# Needs: HSMPROV_MODULE (path of hsmprov.so), SOFTHSM2_MODULE (libsofthsm2.so).

: "${SOFTHSM2_MODULE:=/usr/lib/softhsm/libsofthsm2.so}"
HP_PIN=${HP_PIN:-1234}
HP_SO_PIN=12345678

# pkcs11-tool links libcrypto: keep it away from the test's openssl.cnf, which
# would load hsmprov into it (and an ASan build of hsmprov cannot load there).
hp_p11tool() {
    env -u OPENSSL_CONF pkcs11-tool --module "$SOFTHSM2_MODULE" "$@"
}

hp_make_token() {
    local dir=$1 label=${2:-demo}
    mkdir -p "$dir/tokens"
    cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
    export SOFTHSM2_CONF=$dir/softhsm2.conf
    HP_TOKEN_LABEL=$label
    env -u OPENSSL_CONF softhsm2-util --init-token --free --label "$label" --so-pin "$HP_SO_PIN" \
        --pin "$HP_PIN" >/dev/null
    printf '%s' "$HP_PIN" >"$dir/pin"
    chmod 600 "$dir/pin"
}

# hp_keygen TYPE LABEL ID   TYPE as pkcs11-tool's --key-type (rsa:2048, EC:prime256v1)
hp_keygen() {
    hp_p11tool --token-label "$HP_TOKEN_LABEL" --login --pin "$HP_PIN" \
        --keypairgen --key-type "$1" --label "$2" --id "$3" >/dev/null
}

hp_add_keys() {
    hp_keygen rsa:2048 rsa 01
    hp_keygen EC:prime256v1 ec 02
    hp_keygen EC:secp384r1 ec384 03
    hp_keygen EC:secp521r1 ec521 04
}

hp_write_cnf() {
    local dir=$1 extra=${2:-}
    cat >"$dir/openssl.cnf" <<CNF
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
hsmprov = hsmprov_sect

[default_sect]
activate = 1

[hsmprov_sect]
module = $HSMPROV_MODULE
pkcs11-module-path = $SOFTHSM2_MODULE
${HP_CNF_PIN-pkcs11-module-token-pin = file:$dir/pin}
$extra
${HP_CNF_EXTRA:-}
activate = 1
CNF
    export OPENSSL_CONF=$dir/openssl.cnf
}
