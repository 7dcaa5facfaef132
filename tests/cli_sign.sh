#!/usr/bin/env bash
# Sign with a token key from the openssl CLI (pkeyutl on a pre-hashed input,
# dgst on the message), verify every signature with the default provider
# (public key exported to a PEM file) and with hsmprov (the token's public
# key object, and the private key's URI), and check that a changed message
# fails to verify. "Verified by hsmprov" is checked in HSMPROV_DEBUG's log:
# the token must have been asked (C_VerifyInit).
#
#   cli_sign.sh CASE     CASE: rsa_pkcs1 | rsa_pss_saltlen_digest |
#                        rsa_pss_saltlen_max_mgf1_sha384 | rsa_pss_saltlen_20 |
#                        ec_p256 | ec_p384 | ec_p521
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

case=${1:?case}
opts=()
case $case in
rsa_pkcs1)
    obj=rsa md=sha256 opts=(rsa_padding_mode:pkcs1) ;;
rsa_pss_saltlen_digest)
    obj=rsa md=sha256
    opts=(rsa_padding_mode:pss rsa_pss_saltlen:digest rsa_mgf1_md:sha256) ;;
rsa_pss_saltlen_max_mgf1_sha384)
    obj=rsa md=sha384
    opts=(rsa_padding_mode:pss rsa_pss_saltlen:max rsa_mgf1_md:sha384) ;;
rsa_pss_saltlen_20)
    # SoftHSM2 wants the MGF1 digest to be the signature's digest
    obj=rsa md=sha256
    opts=(rsa_padding_mode:pss rsa_pss_saltlen:20 rsa_mgf1_md:sha256) ;;
ec_p256) obj=ec md=sha256 ;;
ec_p384) obj=ec384 md=sha384 ;;
ec_p521) obj=ec521 md=sha512 ;;
*) hp_fail "unknown case $case" ;;
esac

hp_setup
priv="pkcs11:token=demo;object=$obj;type=private"
pub="pkcs11:token=demo;object=$obj;type=public"

pkeyopts=(-pkeyopt "digest:$md")
sigopts=()
for o in "${opts[@]}"; do
    pkeyopts+=(-pkeyopt "$o")
    sigopts+=(-sigopt "$o")
done
# For PSS, "auto" on the verifying side accepts any salt length: one more way
# to check that the signer used the salt length it was asked for.
autoopts=()
case $case in
rsa_pss_*)
    autoopts=(-pkeyopt "digest:$md")
    for o in "${opts[@]}"; do
        case $o in
        rsa_pss_saltlen:*) autoopts+=(-pkeyopt rsa_pss_saltlen:auto) ;;
        *) autoopts+=(-pkeyopt "$o") ;;
        esac
    done
    ;;
esac

head -c 5000 /dev/urandom >"$T/msg"
printf 'something else' >"$T/other"
openssl dgst "-$md" -binary -out "$T/msg.hash" "$T/msg"
openssl dgst "-$md" -binary -out "$T/other.hash" "$T/other"

hp_step "export the public key of $priv"
hp_pubout "$priv" "$T/pub.pem"
hp_ok openssl pkey -pubin -in "$T/pub.pem" -noout -text
case $obj in
rsa) hp_out_has "2048 bit" ;;
ec) hp_out_has "prime256v1" ;;
ec384) hp_out_has "secp384r1" ;;
ec521) hp_out_has "secp521r1" ;;
esac
# The token's public key object gives the same key.
hp_pubout "$pub" "$T/pub2.pem"
cmp -s "$T/pub.pem" "$T/pub2.pem" || hp_fail "public key of $pub differs from that of $priv"

hp_step "pkeyutl -sign ($case) with $priv"
hp_ok openssl pkeyutl -sign -inkey "$priv" "${pkeyopts[@]}" -in "$T/msg.hash" -out "$T/sig1"
[ -s "$T/sig1" ] || hp_fail "empty signature"

hp_step "verify the pkeyutl signature with the default provider"
hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" "${pkeyopts[@]}" \
    -in "$T/msg.hash" -sigfile "$T/sig1"
hp_out_has "Signature Verified Successfully"
if [ ${#autoopts[@]} -gt 0 ]; then
    hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" "${autoopts[@]}" \
        -in "$T/msg.hash" -sigfile "$T/sig1"
fi
hp_fails openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" "${pkeyopts[@]}" \
    -in "$T/other.hash" -sigfile "$T/sig1"
hp_out_has "Signature Verification Failure"

hp_step "verify the pkeyutl signature with hsmprov ($pub)"
HSMPROV_DEBUG=1 hp_ok openssl pkeyutl -verify -pubin -inkey "$pub" -propquery provider=hsmprov \
    "${pkeyopts[@]}" -in "$T/msg.hash" -sigfile "$T/sig1"
hp_out_has "Signature Verified Successfully" "C_VerifyInit"
HSMPROV_DEBUG=1 hp_fails openssl pkeyutl -verify -pubin -inkey "$pub" -propquery provider=hsmprov \
    "${pkeyopts[@]}" -in "$T/other.hash" -sigfile "$T/sig1"
hp_out_has "Signature Verification Failure" "C_VerifyInit"

hp_step "dgst -$md -sign ($case) with $priv"
hp_ok openssl dgst "-$md" -sign "$priv" "${sigopts[@]}" -out "$T/sig2" "$T/msg"
[ -s "$T/sig2" ] || hp_fail "empty signature"

hp_step "verify the dgst signature with the default provider"
hp_ok openssl dgst "-$md" -verify "$T/pub.pem" "${sigopts[@]}" -signature "$T/sig2" "$T/msg"
hp_out_has "Verified OK"
hp_fails openssl dgst "-$md" -verify "$T/pub.pem" "${sigopts[@]}" -signature "$T/sig2" "$T/other"
hp_out_has "Verification failure"
# A dgst signature is a signature of the hash: pkeyutl must agree.
hp_ok openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" "${pkeyopts[@]}" \
    -in "$T/msg.hash" -sigfile "$T/sig2"

# "?provider=hsmprov" prefers hsmprov for the signature while the digest
# itself still comes from the default provider.
hp_step "verify the dgst signature with hsmprov ($pub, and $priv with -prverify)"
HSMPROV_DEBUG=1 hp_ok openssl dgst "-$md" -verify "$pub" -propquery "?provider=hsmprov" \
    "${sigopts[@]}" -signature "$T/sig2" "$T/msg"
hp_out_has "Verified OK" "C_VerifyInit"
HSMPROV_DEBUG=1 hp_ok openssl dgst "-$md" -prverify "$priv" -propquery "?provider=hsmprov" \
    "${sigopts[@]}" -signature "$T/sig2" "$T/msg"
hp_out_has "Verified OK" "C_VerifyInit"
HSMPROV_DEBUG=1 hp_fails openssl dgst "-$md" -prverify "$priv" -propquery "?provider=hsmprov" \
    "${sigopts[@]}" -signature "$T/sig2" "$T/other"
hp_out_has "Verification failure" "C_VerifyInit"

hp_step "signature format: RSA as long as the modulus, ECDSA a DER SEQUENCE of two INTEGERs"
case $obj in
rsa) [ "$(stat -c %s "$T/sig1")" -eq 256 ] || hp_fail "RSA-2048 signature is not 256 bytes" ;;
*) hp_ok openssl asn1parse -inform DER -in "$T/sig1"
   hp_out_has "INTEGER" ;;
esac

echo "PASS: cli_sign $case"
