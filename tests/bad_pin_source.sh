#!/usr/bin/env bash
# A PIN source that is not a plain file holding one PIN is refused before any
# C_Login, so that no PIN try of the token is spent on it, with an error that
# names the path and what is wrong with it; nothing hangs. Each case is tried
# as pkcs11-module-token-pin = file:PATH and as the URI's pin-source=file:PATH,
# with HSMPROV_DEBUG=1, whose log has a line "hsmprov: C_Login -> CKR_..." for
# every C_Login made.
#
#   bad_pin_source.sh CASE
#     fifo          a FIFO nobody writes to (under a timeout: must not hang)
#     directory     a directory
#     empty         an empty file, and a file whose first line is empty
#     dev_zero      /dev/zero (a character device: never opened)
#     long_line     a 300-byte first line; also a 300-byte pin-value= and
#                   pkcs11-module-token-pin: refused, not cut to 256 bytes
#     nul_byte      a NUL byte inside the first line
#     multi_line    the right PIN on the first line, more lines after it (\n
#                   and \r\n): works, one C_Login; a 256-byte line is taken
#     symlink       a symbolic link to the PIN file works (secrets are mounted
#                   that way); one to a FIFO is refused
#     escaped_path  a path with a newline in it (percent-encoded in the URI)
#                   is shown escaped in the error
HP_PIN=hp-pin-4711
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
hp_tmpdir
hp_make_token "$T"
hp_keygen EC:prime256v1 ec 02
hp_write_cnf "$T"
hp_openssl_argv
key="pkcs11:token=demo;object=ec;type=private"
printf 'data\n' >"$T/msg"
openssl dgst -sha256 -binary -out "$T/msg.hash" "$T/msg"

# config_pin SPEC: the config's PIN directive becomes SPEC (empty: none).
config_pin() {
    if [ -n "$1" ]; then
        HP_CNF_PIN="pkcs11-module-token-pin = $1" hp_write_cnf "$T"
    else
        HP_CNF_PIN="" hp_write_cnf "$T"
    fi
}

# sign: sign with $uri, HSMPROV_DEBUG=1, under a timeout.
sign() {
    HSMPROV_DEBUG=1 hp_timeout 30 openssl pkeyutl -sign -inkey "$uri" \
        -in "$T/msg.hash" -out "$T/sig"
}

# refused_uri URI WHAT...: signing with URI fails without a C_Login, and the
# error says each WHAT.
refused_uri() {
    local uri=$1
    shift
    rm -f "$T/sig"
    hp_fails sign
    printf '%s\n' "$HP_OUT"
    if grep -q '^hsmprov: C_Login' <<<"$HP_OUT"; then
        hp_fail "C_Login was called"
    fi
    hp_out_has "no login was attempted" "demo" "$@"
    hp_no_pin
    [ ! -s "$T/sig" ] || hp_fail "a signature was written"
}

# refused PATH WHAT...: refused both as the config's PIN file and as the
# URI's pin-source.
refused() {
    local path=$1
    shift
    hp_step "pkcs11-module-token-pin = file:$path"
    config_pin "file:$path"
    refused_uri "$key" "$@"
    hp_step "pin-source=file:$path in the URI"
    config_pin ""
    refused_uri "$key;pin-source=file:$path" "$@"
}

# works URI: signing with URI works, with exactly one C_Login.
works() {
    local uri=$1 n
    rm -f "$T/sig"
    HP_OUT=$(sign 2>&1) || hp_fail "signing failed: $HP_OUT"
    n=$(grep -c '^hsmprov: C_Login -> CKR_OK' <<<"$HP_OUT" || true)
    [ "$n" -eq 1 ] || { printf '%s\n' "$HP_OUT"; hp_fail "$n successful C_Login, not 1"; }
    hp_no_pin
    [ -s "$T/sig" ] || hp_fail "no signature written"
}

long=$(printf 'x%.0s' $(seq 300))

case $case in
fifo)
    mkfifo "$T/fifo"
    refused "$T/fifo" "$T/fifo" "is a FIFO, not a regular file"
    ;;
directory)
    mkdir "$T/dir"
    refused "$T/dir" "$T/dir" "is a directory, not a regular file"
    ;;
empty)
    : >"$T/empty"
    refused "$T/empty" "the first line of the PIN file $T/empty is empty"
    printf '\n%s\n' "$HP_PIN" >"$T/blank1"
    refused "$T/blank1" "the first line of the PIN file $T/blank1 is empty"
    ;;
dev_zero)
    refused /dev/zero "/dev/zero is a character device, not a regular file"
    ;;
long_line)
    printf '%s\n' "$long" >"$T/long"
    refused "$T/long" "the PIN in $T/long is longer than 256 bytes"
    hp_step "a 300-byte pin-value= in the URI"
    config_pin ""
    refused_uri "$key;pin-value=$long" "the PIN in the URI's pin-value is longer than 256 bytes"
    hp_step "a 300-byte pkcs11-module-token-pin"
    config_pin "$long"
    refused_uri "$key" "the PIN in pkcs11-module-token-pin is longer than 256 bytes"
    ;;
nul_byte)
    printf 'hp-pin\0-4711\n' >"$T/nul"
    refused "$T/nul" "the PIN in $T/nul contains a NUL byte"
    ;;
multi_line)
    printf '%s\nsecond line\nthird\n' "$HP_PIN" >"$T/lines"
    printf '%s\r\nsecond line\r\n' "$HP_PIN" >"$T/crlf"
    for f in lines crlf; do
        hp_step "pkcs11-module-token-pin = file:$T/$f (first line: the PIN)"
        config_pin "file:$T/$f"
        works "$key"
        hp_step "pin-source=file:$T/$f"
        config_pin ""
        works "$key;pin-source=file:$T/$f"
    done
    hp_step "a 256-byte PIN is not too long (the token says whether it is right)"
    printf '%s\n' "${long:0:256}" >"$T/max"
    config_pin "file:$T/max"
    uri=$key
    hp_fails sign
    hp_out_has "hsmprov: C_Login -> CKR_PIN_"
    hp_out_lacks "longer than 256 bytes"
    ;;
symlink)
    ln -s "$T/pin" "$T/pin-link"
    hp_step "pkcs11-module-token-pin = file:$T/pin-link (a link to the PIN file)"
    config_pin "file:$T/pin-link"
    works "$key"
    mkfifo "$T/fifo"
    ln -s "$T/fifo" "$T/fifo-link"
    refused "$T/fifo-link" "$T/fifo-link" "is a FIFO, not a regular file"
    ;;
escaped_path)
    mkdir "$T/new"$'\n'"line"
    hp_step "pin-source=file:$T/new%0Aline (a directory whose name has a newline)"
    config_pin ""
    refused_uri "$key;pin-source=file:$T/new%0Aline" "$T/new\\x0aline is a directory"
    ;;
*) hp_fail "unknown case $case" ;;
esac

echo "PASS: bad_pin_source $case"
