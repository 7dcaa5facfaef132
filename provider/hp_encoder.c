/* Encoders for token keys.
 *
 * The public half (SubjectPublicKeyInfo, DER and PEM): OpenSSL 3.0 moves a
 * key to another provider's encoder by exporting everything, which token
 * private keys refuse (see hp_keymgmt.c), so `openssl pkey -pubout`,
 * `req -x509` and friends need our own. The bytes are made by the default
 * provider in our private library context.
 *
 * The private half never leaves the token, so "writing the private key"
 * (`openssl pkey -out`, `genpkey -out`, PEM_write_bio_PrivateKey,
 * i2d_PrivateKey) writes a file that refers to it: the URI-in-PEM format of
 * hp_uri_pem.h, for the PrivateKeyInfo structure that those ask for. Such a
 * file holds no secret, so there is nothing to encrypt: asked for
 * encryption (a cipher, or EncryptedPrivateKeyInfo) the encoder refuses,
 * saying why, rather than write a file the user believes is protected. */
#include "hp_provider.h"
#include "hp_uri_pem.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/params.h>
#include <openssl/x509.h>
#include <stdlib.h>

static OSSL_FUNC_encoder_newctx_fn enc_newctx;
static OSSL_FUNC_encoder_freectx_fn enc_freectx;
static OSSL_FUNC_encoder_does_selection_fn enc_does_selection;
static OSSL_FUNC_encoder_encode_fn enc_der, enc_pem;
static OSSL_FUNC_encoder_newctx_fn enc_priv_newctx;
static OSSL_FUNC_encoder_freectx_fn enc_priv_freectx;
static OSSL_FUNC_encoder_settable_ctx_params_fn enc_priv_settable;
static OSSL_FUNC_encoder_set_ctx_params_fn enc_priv_set_params;
static OSSL_FUNC_encoder_does_selection_fn enc_priv_does_selection;
static OSSL_FUNC_encoder_encode_fn enc_priv_der, enc_priv_pem, enc_priv_encrypted;

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

int hp_core_write(hp_provctx *pctx, OSSL_CORE_BIO *out, const void *data, size_t len)
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
            ok = len > 0 && hp_core_write(pctx, out, data, (size_t)len);
        }
        BIO_free(mem);
    } else {
        unsigned char *der = NULL;
        int len = i2d_PUBKEY(pkey, &der);

        ok = len > 0 && hp_core_write(pctx, out, der, (size_t)len);
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

/* Private key output keeps its own context: whether a cipher was set. */
typedef struct priv_ctx {
    hp_provctx *pctx;
    int cipher_set;
} priv_ctx;

static void *enc_priv_newctx(void *provctx)
{
    priv_ctx *c = calloc(1, sizeof(*c));

    if (c != NULL)
        c->pctx = provctx;
    return c;
}

static void enc_priv_freectx(void *vctx)
{
    free(vctx);
}

static const OSSL_PARAM *enc_priv_settable(void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_utf8_string(OSSL_ENCODER_PARAM_CIPHER, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

static int enc_priv_set_params(void *vctx, const OSSL_PARAM params[])
{
    priv_ctx *c = vctx;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_ENCODER_PARAM_CIPHER);
    const char *name = NULL;

    /* OpenSSL sets a NULL or empty name to mean "no cipher". */
    if (p != NULL) {
        if (p->data_type != OSSL_PARAM_UTF8_STRING)
            return 0;
        name = p->data;
        c->cipher_set = name != NULL && *name != '\0';
    }
    return 1;
}

static int enc_priv_does_selection(void *vctx, int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

/* The URI a key file holds: formatted from the key's attributes as read
 * from the token, with the token's whole identity and type=private. */
static char *kept_uri(hp_provctx *pctx, const hp_key *k)
{
    const p11_key *pk = k->p11;
    char *uri;

    if ((pk->label == NULL || *pk->label == '\0') && pk->id_len == 0) {
        hp_raise(pctx, HP_R_UNSUPPORTED,
                 "%s has neither CKA_LABEL nor CKA_ID: no URI can name it alone, so no "
                 "key file can refer to it",
                 pk->name);
        return NULL;
    }
    uri = p11_uri_format_kept(&pk->tok->info, pk->label, pk->id, pk->id_len,
                              CKO_PRIVATE_KEY);
    if (uri == NULL)
        hp_raise(pctx, HP_R_INTERNAL, "could not format the URI of %s", pk->name);
    return uri;
}

static int encode_priv(void *vctx, OSSL_CORE_BIO *out, const void *obj_raw, int selection,
                       int pem, int encrypted)
{
    priv_ctx *c = vctx;
    const hp_key *k = obj_raw;
    char *uri;
    int ok = 0;

    if (k != NULL && k->soft != NULL) {
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "the EC key was made in memory, not in a token, because no pkcs11_uri "
                 "was given, and hsmprov does not write it out: give -pkeyopt "
                 "pkcs11_uri:pkcs11:token=...;object=... to make it in the token");
        return 0;
    }
    if (k == NULL || k->p11 == NULL || k->public_only) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "no private key to write: this is a public key");
        return 0;
    }
    if (encrypted || c->cipher_set) {
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "the private key of %s stays in the token: its key file holds only the "
                 "URI, which is not encrypted; write it without a cipher",
                 k->p11->name);
        return 0;
    }
    if ((uri = kept_uri(c->pctx, k)) == NULL)
        return 0;
    if (pem) {
        BIO *mem = BIO_new(BIO_s_mem());
        char *data;
        long len;

        if (mem != NULL && hp_uri_file_pem(mem, uri)) {
            len = BIO_get_mem_data(mem, &data);
            ok = len > 0 && hp_core_write(c->pctx, out, data, (size_t)len);
        }
        BIO_free(mem);
    } else {
        unsigned char *der;
        size_t len;

        if (hp_uri_file_der(uri, &der, &len)) {
            ok = hp_core_write(c->pctx, out, der, len);
            OPENSSL_free(der);
        }
    }
    free(uri);
    if (!ok)
        hp_raise(c->pctx, HP_R_INTERNAL, "could not write the key file of %s",
                 k->p11->name);
    return ok;
}

#define PRIV_ENCODE_FN(fn, pem, encrypted)                                               \
    static int fn(void *vctx, OSSL_CORE_BIO *out, const void *obj_raw,                   \
                  const OSSL_PARAM obj_abstract[], int selection,                        \
                  OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)                             \
    {                                                                                    \
        return encode_priv(vctx, out, obj_raw, selection, pem, encrypted);               \
    }
PRIV_ENCODE_FN(enc_priv_der, 0, 0)
PRIV_ENCODE_FN(enc_priv_pem, 1, 0)
PRIV_ENCODE_FN(enc_priv_encrypted, 0, 1)

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

#define PRIV_ENCODER(name, fn)                                                           \
    const OSSL_DISPATCH name[] = {                                                       \
        {OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))enc_priv_newctx},                     \
        {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))enc_priv_freectx},                   \
        {OSSL_FUNC_ENCODER_SETTABLE_CTX_PARAMS, (void (*)(void))enc_priv_settable},      \
        {OSSL_FUNC_ENCODER_SET_CTX_PARAMS, (void (*)(void))enc_priv_set_params},         \
        {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))enc_priv_does_selection},     \
        {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))fn},                                  \
        {0, NULL},                                                                       \
    }

/* Private key output: a key file that refers to the key (PrivateKeyInfo),
 * or a refusal (EncryptedPrivateKeyInfo). */
PRIV_ENCODER(hp_private_key_der_encoder_functions, enc_priv_der);
PRIV_ENCODER(hp_private_key_pem_encoder_functions, enc_priv_pem);
PRIV_ENCODER(hp_private_key_encrypted_encoder_functions, enc_priv_encrypted);
