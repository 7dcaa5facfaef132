/*
 * A key file that refers to a token key, read by the library calls that read
 * private keys, gives the token key: it signs, and the signature verifies in
 * software (default provider) with the public key.
 *
 *   urifile_read pem|decoder|der KEYFILE PUBKEY.pem
 *
 * pem: PEM_read_bio_PrivateKey; decoder: OSSL_DECODER_CTX_new_for_pkey with
 * input "PEM"; der: d2i_PrivateKey_bio on a DER key file. The provider comes
 * from OPENSSL_CONF (tests/urifile.sh writes it).
 */
#include <openssl/bio.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what)
{
    fprintf(stderr, "FAIL: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

int main(int argc, char **argv)
{
    static const unsigned char msg[] = "a message signed in the token";
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_PKEY *key = NULL, *pub = NULL;
    EVP_MD_CTX *m = NULL;
    BIO *in = NULL, *pubin = NULL;
    const OSSL_PROVIDER *prov;
    int rc = 1;

    if (argc != 4)
        return fail("usage: urifile_read pem|decoder|der KEYFILE PUBKEY.pem");
    in = BIO_new_file(argv[2], "rb");
    if (in == NULL) {
        fail("cannot open the key file");
        goto end;
    }
    if (strcmp(argv[1], "pem") == 0) {
        key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    } else if (strcmp(argv[1], "decoder") == 0) {
        OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(&key, "PEM", NULL, NULL,
                                                            EVP_PKEY_KEYPAIR, NULL, NULL);

        if (d == NULL || !OSSL_DECODER_from_bio(d, in)) {
            EVP_PKEY_free(key);
            key = NULL;
        }
        OSSL_DECODER_CTX_free(d);
    } else if (strcmp(argv[1], "der") == 0) {
        key = d2i_PrivateKey_bio(in, NULL);
    }
    if (key == NULL) {
        fail("the key file was not read");
        goto end;
    }
    prov = EVP_PKEY_get0_provider(key);
    if (prov == NULL || strcmp(OSSL_PROVIDER_get0_name(prov), "hsmprov") != 0) {
        fail("the key read is not a token key of hsmprov");
        goto end;
    }

    m = EVP_MD_CTX_new();
    if (m == NULL || !EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, key, NULL) ||
        !EVP_DigestSign(m, sig, &siglen, msg, sizeof(msg))) {
        fail("signing with the key read");
        goto end;
    }
    EVP_MD_CTX_free(m);

    /* Verified by the default provider alone: no token involved. */
    pubin = BIO_new_file(argv[3], "r");
    pub = pubin != NULL
              ? PEM_read_bio_PUBKEY_ex(pubin, NULL, NULL, NULL, NULL, "provider=default")
              : NULL;
    m = EVP_MD_CTX_new();
    if (pub == NULL || m == NULL ||
        !EVP_DigestVerifyInit_ex(m, NULL, "SHA256", NULL, "provider=default", pub,
                                 NULL) ||
        EVP_DigestVerify(m, sig, siglen, msg, sizeof(msg)) != 1) {
        fail("the signature does not verify in software");
        goto end;
    }
    printf("PASS: %s %s\n", argv[1], argv[2]);
    rc = 0;
end:
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(key);
    EVP_PKEY_free(pub);
    BIO_free(in);
    BIO_free(pubin);
    return rc;
}
