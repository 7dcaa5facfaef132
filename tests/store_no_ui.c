/*
 * A program that loads a private key through OSSL_STORE and gives no way to
 * ask for a PIN (no UI_METHOD, no passphrase callback), as many do, then
 * signs with it and checks the signature with the key's public half in
 * software.
 *
 *   store_no_ui URI
 *
 * Prints "signed and verified" and exits 0, or prints OpenSSL's errors and
 * exits 1.
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/store.h>
#include <stdio.h>
#include <string.h>

static int sign_verify(EVP_PKEY *key)
{
    static const unsigned char msg[] = "message signed by a token key";
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) == 1;

    EVP_MD_CTX_free(md);
    if (!ok)
        return 0;
    /* The same key object verifies through the default provider's public
     * key: the token is not asked whether its own signature is good. */
    {
        unsigned char *der = NULL;
        const unsigned char *p;
        int len = i2d_PUBKEY(key, &der);
        EVP_PKEY *pub;

        if (len <= 0)
            return 0;
        p = der;
        pub = d2i_PUBKEY_ex(NULL, &p, len, NULL, "provider=default");
        OPENSSL_free(der);
        md = EVP_MD_CTX_new();
        ok = pub != NULL && md != NULL &&
             EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, "provider=default", pub,
                                     NULL) == 1 &&
             EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) == 1;
        EVP_MD_CTX_free(md);
        EVP_PKEY_free(pub);
    }
    return ok;
}

int main(int argc, char **argv)
{
    OSSL_STORE_CTX *store;
    EVP_PKEY *key = NULL;

    if (argc != 2) {
        fprintf(stderr, "usage: store_no_ui URI\n");
        return 2;
    }
    store = OSSL_STORE_open_ex(argv[1], NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    if (store == NULL || !OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY))
        goto err;
    while (key == NULL && !OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);

        if (info != NULL && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            key = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    store = NULL;
    if (key == NULL) {
        fprintf(stderr, "no private key loaded\n");
        goto err;
    }
    if (!sign_verify(key))
        goto err;
    EVP_PKEY_free(key);
    printf("signed and verified\n");
    return 0;
err:
    ERR_print_errors_fp(stderr);
    OSSL_STORE_close(store);
    EVP_PKEY_free(key);
    return 1;
}
