/* Ed25519 signatures with token keys (CKM_EDDSA).
 *
 * EdDSA hashes inside the signature algorithm, so there is no host hashing:
 * the message goes to the token in one leased C_Sign (a one-shot
 * EVP_DigestSign, as OpenSSL's own Ed25519 requires). */
#include "hp_provider.h"

#include "p11_op.h"

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_signature_newctx_fn ed_newctx;
static OSSL_FUNC_signature_freectx_fn ed_freectx;
static OSSL_FUNC_signature_dupctx_fn ed_dupctx;
static OSSL_FUNC_signature_digest_sign_init_fn ed_sign_init;
static OSSL_FUNC_signature_digest_sign_fn ed_sign;
static OSSL_FUNC_signature_digest_verify_init_fn ed_verify_init;
static OSSL_FUNC_signature_digest_verify_fn ed_verify;
static OSSL_FUNC_signature_get_ctx_params_fn ed_get_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn ed_gettable_ctx_params;

typedef struct ed_ctx {
    hp_provctx *pctx;
    hp_key *key; /* owned by the EVP_PKEY, which outlives the context */
} ed_ctx;

static void *ed_newctx(void *provctx, const char *propq)
{
    ed_ctx *c = calloc(1, sizeof(*c));

    if (c != NULL)
        c->pctx = provctx;
    return c;
}

static void ed_freectx(void *vctx)
{
    free(vctx);
}

static void *ed_dupctx(void *vctx)
{
    ed_ctx *d = malloc(sizeof(*d));

    if (d != NULL)
        *d = *(ed_ctx *)vctx;
    return d;
}

static int init(ed_ctx *c, const char *mdname, hp_key *k, int sign)
{
    if (mdname != NULL && *mdname != '\0') {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "Ed25519 takes no digest (got \"%s\")", mdname);
        return 0;
    }
    if (k == NULL || k->kind != HP_KEY_ED25519 || (k->p11 == NULL && sign)) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "not an Ed25519 key on a token");
        return 0;
    }
    /* A public key imported from software verifies in software (ed_verify). */
    if (sign && (k->public_only || k->p11->priv == CK_INVALID_HANDLE)) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "C_SignInit: %s is a public key: it cannot sign",
                 k->p11->name);
        return 0;
    }
    c->key = k;
    return 1;
}

static int ed_sign_init(void *vctx, const char *mdname, void *key,
                        const OSSL_PARAM params[])
{
    return init(vctx, mdname, key, 1);
}

static int ed_verify_init(void *vctx, const char *mdname, void *key,
                          const OSSL_PARAM params[])
{
    return init(vctx, mdname, key, 0);
}

static int ed_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                   const unsigned char *tbs, size_t tbslen)
{
    ed_ctx *c = vctx;
    CK_MECHANISM mech = {CKM_EDDSA, NULL, 0};
    CK_ULONG outlen = (CK_ULONG)sigsize;
    CK_RV rv;

    if (sig == NULL) {
        *siglen = 64;
        return 1;
    }
    if (sigsize < 64) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "signature buffer of %zu bytes, need 64",
                 sigsize);
        return 0;
    }
    rv = p11_oneshot(c->key->p11, P11_SIGN, &mech, tbs, (CK_ULONG)tbslen, sig, &outlen);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    *siglen = outlen;
    return 1;
}

/* A public key imported from software (hsmprov preferred by a property
 * query): the default provider of our library context checks it. */
static int soft_verify(ed_ctx *c, const unsigned char *sig, size_t siglen,
                       const unsigned char *tbs, size_t tbslen)
{
    EVP_PKEY *pk = hp_key_public_pkey(c->key);
    EVP_MD_CTX *md = pk != NULL ? EVP_MD_CTX_new() : NULL;
    int r =
        md != NULL &&
        EVP_DigestVerifyInit_ex(md, NULL, NULL, c->pctx->libctx, NULL, pk, NULL) == 1 &&
        EVP_DigestVerify(md, sig, siglen, tbs, tbslen) == 1;

    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    return r;
}

static int ed_verify(void *vctx, const unsigned char *sig, size_t siglen,
                     const unsigned char *tbs, size_t tbslen)
{
    ed_ctx *c = vctx;
    CK_MECHANISM mech = {CKM_EDDSA, NULL, 0};
    CK_ULONG sl = (CK_ULONG)siglen;
    CK_RV rv;

    if (c->key->p11 == NULL)
        return soft_verify(c, sig, siglen, tbs, tbslen);
    rv = p11_oneshot(c->key->p11, P11_VERIFY, &mech, tbs, (CK_ULONG)tbslen,
                     (unsigned char *)sig, &sl);

    if (rv == CKR_OK)
        return 1;
    if (rv != CKR_SIGNATURE_INVALID && rv != CKR_SIGNATURE_LEN_RANGE)
        hp_raise_p11(c->pctx, rv);
    return 0;
}

static int ed_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    /* AlgorithmIdentifier id-Ed25519 (1.3.101.112), no parameters. */
    static const unsigned char algid[] = {0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70};
    OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID);

    return p == NULL || OSSL_PARAM_set_octet_string(p, algid, sizeof(algid));
}

static const OSSL_PARAM *ed_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_END,
    };
    return gettable;
}

const OSSL_DISPATCH hp_ed25519_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))ed_newctx},
    {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))ed_freectx},
    {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))ed_dupctx},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))ed_sign_init},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))ed_sign},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))ed_verify_init},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))ed_verify},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))ed_get_ctx_params},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))ed_gettable_ctx_params},
    {0, NULL},
};
