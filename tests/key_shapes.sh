#!/usr/bin/env bash
# Keys and tokens shaped as other modules make them: keys that want the PIN
# for each use, keys restricted to some mechanisms, tokens without public-key
# objects or without combined mechanisms, and software keys while hsmprov is
# preferred by a property query. One mode per test (tests/CMakeLists.txt).
# shellcheck source=lib/testlib.sh
. "$HSMPROV_TESTS_DIR/lib/testlib.sh"

mode=${1:?mode}
case $mode in
hidden_*)
    # A module that lacks mechanisms SoftHSM2 has: the shim over SoftHSM2.
    hp_setup "pkcs11-module-path = ${HSMPROV_SHIM:?HSMPROV_SHIM must name p11shim.so}"
    export P11SHIM_TARGET=$SOFTHSM2_MODULE
    ;;
*) hp_setup ;;
esac
printf 'keys of every shape\n' >"$T/msg"

# sign_verify URI [DGST OPTS...]: sign with the token key, verify in software
# with the public key exported from it.
sign_verify() {
    local uri=$1
    shift
    hp_ok openssl dgst -sha256 "$@" -sign "$uri" -out "$T/sig" "$T/msg"
    hp_ok openssl dgst -sha256 "$@" -verify "$T/pub.pem" -signature "$T/sig" "$T/msg"
    hp_out_has "Verified OK"
}

case $mode in
always_auth)
    hp_step "keys with CKA_ALWAYS_AUTHENTICATE: a context-specific login per use"
    hp_p11tool --token-label demo --login --pin "$HP_PIN" --keypairgen \
        --key-type EC:prime256v1 --label aa-ec --id 10 --always-auth >/dev/null
    hp_p11tool --token-label demo --login --pin "$HP_PIN" --keypairgen \
        --key-type rsa:2048 --label aa-rsa --id 11 --always-auth >/dev/null
    for k in aa-ec aa-rsa; do
        hp_pubout "pkcs11:token=demo;object=$k;type=public" "$T/pub.pem"
        sign_verify "pkcs11:token=demo;object=$k;type=private"
        hp_no_pin
        hp_step "twice in one process (a login for each operation): req -x509 signs twice"
        hp_ok openssl req -new -x509 -key "pkcs11:token=demo;object=$k;type=private" \
            -subj "/CN=$k" -out "$T/$k.crt"
        hp_ok openssl verify -CAfile "$T/$k.crt" "$T/$k.crt"
    done
    hp_step "RSA decryption with an always-authenticate key"
    openssl pkeyutl -encrypt -pubin -inkey "$T/pub.pem" -in "$T/msg" -out "$T/enc"
    hp_ok openssl pkeyutl -decrypt -inkey "pkcs11:token=demo;object=aa-rsa;type=private" \
        -in "$T/enc" -out "$T/dec"
    cmp "$T/msg" "$T/dec" || hp_fail "decrypted text differs"
    ;;
prefer_software)
    hp_step "?provider=hsmprov is a preference: software keys sign and verify as before"
    for alg in RSA EC ED25519; do
        case $alg in
        EC) hp_ok openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/k.pem" ;;
        *) hp_ok openssl genpkey -algorithm $alg -out "$T/k.pem" ;;
        esac
        hp_ok openssl pkey -in "$T/k.pem" -pubout -out "$T/pub.pem"
        if [ $alg = ED25519 ]; then
            hp_ok openssl pkeyutl -sign -rawin -propquery '?provider=hsmprov' \
                -inkey "$T/k.pem" -in "$T/msg" -out "$T/sig"
            hp_ok openssl pkeyutl -verify -rawin -propquery '?provider=hsmprov' -pubin \
                -inkey "$T/pub.pem" -in "$T/msg" -sigfile "$T/sig"
            hp_out_has "Signature Verified Successfully"
            continue
        fi
        hp_ok openssl dgst -sha256 -propquery '?provider=hsmprov' -sign "$T/k.pem" \
            -out "$T/sig" "$T/msg"
        hp_ok openssl dgst -sha256 -propquery '?provider=hsmprov' -verify "$T/pub.pem" \
            -signature "$T/sig" "$T/msg"
        hp_out_has "Verified OK"
        hp_step "a bad signature is still refused"
        printf 'other\n' >"$T/msg2"
        hp_fails openssl dgst -sha256 -propquery '?provider=hsmprov' -verify "$T/pub.pem" \
            -signature "$T/sig" "$T/msg2"
        hp_out_has "Verification failure"
    done
    hp_step "RSA-PSS verification of a software key with the preference"
    openssl genpkey -algorithm RSA -out "$T/r.pem" 2>/dev/null
    openssl pkey -in "$T/r.pem" -pubout -out "$T/r.pub"
    hp_ok openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sign "$T/r.pem" -out "$T/sig" "$T/msg"
    hp_ok openssl dgst -sha256 -propquery '?provider=hsmprov' -sigopt rsa_padding_mode:pss \
        -verify "$T/r.pub" -signature "$T/sig" "$T/msg"
    hp_out_has "Verified OK"
    hp_step "a TLS client that prefers hsmprov verifies a software server's certificate"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/srv.key" -out "$T/srv.crt" \
        -subj /CN=localhost 2>/dev/null
    hp_start_server "$T/srv.log" -cert "$T/srv.crt" -key "$T/srv.key" -www
    hp_ok hp_timeout 120 openssl s_client -connect "127.0.0.1:$HP_PORT" \
        -propquery '?provider=hsmprov' -CAfile "$T/srv.crt" -verify_return_error </dev/null
    hp_out_has "Verify return code: 0 (ok)"
    hp_step "a TLS 1.3 server and client that both prefer hsmprov, with software keys"
    hp_start_server "$T/srv2.log" -cert "$T/srv.crt" -key "$T/srv.key" \
        -propquery '?provider=hsmprov' -www
    hp_ok hp_timeout 120 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
        -propquery '?provider=hsmprov' -CAfile "$T/srv.crt" -verify_return_error </dev/null
    hp_out_has "Verify return code: 0 (ok)" "TLSv1.3"
    ;;
hidden_*)
    # hidden_combined_rsa: no CKM_SHA*_RSA_PKCS(_PSS) (opencryptoki);
    # hidden_combined_pss: no CKM_SHA*_RSA_PKCS_PSS (a remote token);
    # hidden_raw: no raw CKM_RSA_PKCS_PSS (only hash-and-sign PSS).
    case $mode in
    hidden_combined_rsa) hidden=CKM_SHA1_RSA_PKCS,CKM_SHA224_RSA_PKCS,CKM_SHA256_RSA_PKCS,CKM_SHA384_RSA_PKCS,CKM_SHA512_RSA_PKCS ;;
    hidden_combined_pss) hidden= ;;
    hidden_raw) hidden=CKM_RSA_PKCS_PSS ;;
    *) hp_fail "unknown mode $mode" ;;
    esac
    case $mode in
    hidden_combined_*) hidden=${hidden:+$hidden,}CKM_SHA1_RSA_PKCS_PSS,CKM_SHA224_RSA_PKCS_PSS,CKM_SHA256_RSA_PKCS_PSS,CKM_SHA384_RSA_PKCS_PSS,CKM_SHA512_RSA_PKCS_PSS ;;
    esac
    export P11SHIM_HIDE_MECHS=$hidden
    rsa="pkcs11:token=demo;object=rsa;type=private"
    ec="pkcs11:token=demo;object=ec;type=private"
    hp_step "the module lacks $hidden: RSA PKCS#1 v1.5, RSA-PSS and ECDSA still sign"
    hp_pubout "pkcs11:token=demo;object=rsa;type=public" "$T/pub.pem"
    sign_verify "$rsa"
    sign_verify "$rsa" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest
    hp_pubout "pkcs11:token=demo;object=ec;type=public" "$T/pub.pem"
    sign_verify "$ec"
    hp_step "a certificate and TLS 1.2 (PKCS#1 v1.5 and PSS) and TLS 1.3 with the RSA key"
    hp_ok openssl req -new -x509 -key "$rsa" -subj /CN=localhost -out "$T/rsa.crt"
    hp_start_server "$T/srv.log" -cert "$T/rsa.crt" -key "$rsa" -www
    for v in "-tls1_2 -sigalgs RSA+SHA256" "-tls1_2 -sigalgs rsa_pss_rsae_sha256" -tls1_3; do
        # shellcheck disable=SC2086
        hp_ok hp_timeout 120 openssl s_client -connect "127.0.0.1:$HP_PORT" $v \
            -CAfile "$T/rsa.crt" -verify_return_error </dev/null
        hp_out_has "Verify return code: 0 (ok)"
    done
    ;;
pss_only)
    hp_step "a key allowed only CKM_SHA256_RSA_PKCS_PSS is an RSA-PSS key bound to SHA-256"
    hp_p11tool --token-label demo --login --pin "$HP_PIN" --keypairgen --key-type rsa:2048 \
        --label pss --id 20 --allowed-mechanisms SHA256-RSA-PKCS-PSS >/dev/null
    key="pkcs11:token=demo;object=pss;type=private"
    hp_ok openssl pkey -in "$key" -pubout -out "$T/pub.pem"
    hp_ok openssl asn1parse -in "$T/pub.pem"
    hp_out_has rsassaPss
    sign_verify "$key" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest
    hp_step "a digest the key forbids is refused at init, naming the key and mechanisms"
    hp_fails openssl dgst -sha384 -sigopt rsa_padding_mode:pss -sign "$key" -out "$T/sig" "$T/msg"
    hp_out_has "object=pss" "CKM_SHA384_RSA_PKCS_PSS" "CKA_ALLOWED_MECHANISMS"
    hp_no_pin
    hp_step "a certificate for it, and TLS 1.2 with clients that prefer PKCS#1 v1.5 or SHA-384"
    hp_ok openssl req -new -x509 -key "$key" -subj /CN=localhost -out "$T/pss.crt"
    hp_start_server "$T/srv.log" -cert "$T/pss.crt" -key "$key" -www
    for sa in RSA+SHA256:rsa_pss_pss_sha256:rsa_pss_rsae_sha256 \
        rsa_pss_pss_sha384:rsa_pss_rsae_sha384:rsa_pss_pss_sha256:rsa_pss_rsae_sha256; do
        hp_ok hp_timeout 120 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_2 \
            -sigalgs "$sa" -CAfile "$T/pss.crt" -verify_return_error </dev/null
        hp_out_has "Verify return code: 0 (ok)" "Peer signature type: RSA-PSS"
    done
    hp_ok hp_timeout 120 openssl s_client -connect "127.0.0.1:$HP_PORT" -tls1_3 \
        -CAfile "$T/pss.crt" -verify_return_error </dev/null
    hp_out_has "Verify return code: 0 (ok)"
    ;;
no_public_object)
    hp_step "a token with the private key and the certificate only (no public-key object)"
    for k in ec:02 ec384:03 rsa:01; do
        label=${k%:*} id=${k#*:}
        key="pkcs11:token=demo;object=$label;type=private"
        hp_pubout "pkcs11:token=demo;object=$label;type=public" "$T/$label.pub"
        hp_ok openssl req -new -x509 -key "$key" -subj "/CN=$label" -outform DER \
            -out "$T/$label.der"
        hp_p11tool --token-label demo --login --pin "$HP_PIN" --write-object "$T/$label.der" \
            --type cert --id "$id" --label "$label" >/dev/null
        hp_p11tool --token-label demo --login --pin "$HP_PIN" --delete-object --type pubkey \
            --id "$id" >/dev/null
        hp_step "$label: the public key comes from the certificate, and the key signs and serves"
        hp_ok openssl pkey -in "$key" -pubout -out "$T/$label.from-cert.pub"
        cmp "$T/$label.pub" "$T/$label.from-cert.pub" ||
            hp_fail "$label: public key from the certificate differs from the token's"
        cp "$T/$label.pub" "$T/pub.pem"
        sign_verify "$key"
        openssl x509 -inform DER -in "$T/$label.der" -out "$T/$label.crt"
        hp_start_server "$T/srv-$label.log" -cert "$T/$label.crt" -key "$key" -www
        hp_ok hp_timeout 120 openssl s_client -connect "127.0.0.1:$HP_PORT" \
            -CAfile "$T/$label.crt" -verify_return_error </dev/null
        hp_out_has "Verify return code: 0 (ok)"
    done
    ;;
*)
    hp_fail "unknown mode $mode"
    ;;
esac
echo "PASS: key_shapes $mode"
