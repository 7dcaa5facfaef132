/* Encoders for the public half of token keys (SubjectPublicKeyInfo, DER and
 * PEM). OpenSSL 3.0 moves a key to another provider's encoder by exporting
 * everything, which token private keys refuse (see hp_keymgmt.c), so
 * `openssl pkey -pubout`, `req -x509` and friends need our own. The bytes are
 * made by the default provider in our private library context.
 *
 * Private key output (PrivateKeyInfo, EncryptedPrivateKeyInfo) has
 * encoders too, which only refuse, saying why:
 * without them OpenSSL tries the default provider's, whose export the key
 * refuses without a word, and `openssl pkey -out` fails silently. OpenSSL
 * tries the key's own provider's encoders first. */
#include "hp_provider.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static OSSL_FUNC_encoder_newctx_fn enc_newctx;
static OSSL_FUNC_encoder_freectx_fn enc_freectx;
static OSSL_FUNC_encoder_does_selection_fn enc_does_selection;
static OSSL_FUNC_encoder_encode_fn enc_der, enc_pem;
static OSSL_FUNC_encoder_does_selection_fn enc_priv_does_selection;
static OSSL_FUNC_encoder_encode_fn enc_priv;

static void *enc_newctx(void *provctx)
{
    return provctx;
}

static void enc_freectx(void *vctx)
{
}

static int enc_does_selection(void *vctx, int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0;
}

static int write_all(hp_provctx *pctx, OSSL_CORE_BIO *out, const void *data, size_t len)
{
    size_t written = 0;

    return pctx->core_bio_write_ex != NULL &&
           pctx->core_bio_write_ex(out, data, len, &written) && written == len;
}

static int encode(void *vctx, OSSL_CORE_BIO *out, const void *obj, int selection, int pem)
{
    hp_provctx *pctx = vctx;
    const hp_key *k = obj;
    EVP_PKEY *pkey;
    int ok = 0;

    if (k == NULL || !(selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY))
        return 0;
    pkey = hp_key_public_pkey(k);
    if (pkey == NULL) {
        hp_raise(pctx, HP_R_NOT_FOUND,
                 "the public half of %s is not known (no public "
                 "key object on the token)",
                 k->p11 != NULL ? k->p11->name : "the key");
        return 0;
    }
    if (pem) {
        BIO *mem = BIO_new(BIO_s_mem());
        char *data;
        long len;

        if (mem != NULL && PEM_write_bio_PUBKEY(mem, pkey)) {
            len = BIO_get_mem_data(mem, &data);
            ok = len > 0 && write_all(pctx, out, data, (size_t)len);
        }
        BIO_free(mem);
    } else {
        unsigned char *der = NULL;
        int len = i2d_PUBKEY(pkey, &der);

        ok = len > 0 && write_all(pctx, out, der, (size_t)len);
        OPENSSL_free(der);
    }
    EVP_PKEY_free(pkey);
    return ok;
}

static int enc_der(void *vctx, OSSL_CORE_BIO *out, const void *obj_raw,
                   const OSSL_PARAM obj_abstract[], int selection,
                   OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)
{
    return encode(vctx, out, obj_raw, selection, 0);
}

static int enc_pem(void *vctx, OSSL_CORE_BIO *out, const void *obj_raw,
                   const OSSL_PARAM obj_abstract[], int selection,
                   OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)
{
    return encode(vctx, out, obj_raw, selection, 1);
}

static int enc_priv_does_selection(void *vctx, int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

static int enc_priv(void *vctx, OSSL_CORE_BIO *out, const void *obj_raw,
                    const OSSL_PARAM obj_abstract[], int selection,
                    OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)
{
    hp_provctx *pctx = vctx;
    const hp_key *k = obj_raw;

    if (k == NULL || k->p11 == NULL || k->public_only)
        hp_raise(pctx, HP_R_KEY_TYPE, "no private key to write: this is a public key");
    else
        hp_raise(pctx, HP_R_UNSUPPORTED,
                 "the private key of %s stays in the token: it cannot be exported; use "
                 "-pubout for the public key",
                 k->p11->name);
    return 0;
}

#define ENCODER(name, fn)                                                                \
    const OSSL_DISPATCH name[] = {                                                       \
        {OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))enc_newctx},                          \
        {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))enc_freectx},                        \
        {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))enc_does_selection},          \
        {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))fn},                                  \
        {0, NULL},                                                                       \
    }

ENCODER(hp_rsa_spki_der_encoder_functions, enc_der);
ENCODER(hp_rsa_spki_pem_encoder_functions, enc_pem);
ENCODER(hp_ec_spki_der_encoder_functions, enc_der);
ENCODER(hp_ec_spki_pem_encoder_functions, enc_pem);
ENCODER(hp_ed25519_spki_der_encoder_functions, enc_der);
ENCODER(hp_ed25519_spki_pem_encoder_functions, enc_pem);

/* Private key output: refused with a message (see the head of this file). */
const OSSL_DISPATCH hp_private_key_encoder_functions[] = {
    {OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))enc_newctx},
    {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))enc_freectx},
    {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))enc_priv_does_selection},
    {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))enc_priv},
    {0, NULL},
};
