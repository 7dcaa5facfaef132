/* What the signature files share: the context of RSA and ECDSA signatures
 * and the digest-sign machinery of hp_signature.c, which calls into
 * hp_signature_rsa.c and hp_signature_ecdsa.c for what differs. */
#ifndef HP_SIGNATURE_LOCAL_H
#define HP_SIGNATURE_LOCAL_H

#include "hp_provider.h"

#include "p11_mech.h"
#include "p11_op.h"

#include <openssl/core_dispatch.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

typedef struct sig_ctx {
    hp_provctx *pctx;
    hp_key *key; /* owned by the EVP_PKEY, which outlives the context */
    int is_rsa;
    int pad;    /* RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING, RSA_NO_PADDING, ... */
    EVP_MD *md; /* NULL: sign the input as given */
    EVP_MD *mgf1;
    int saltlen;       /* RSA_PSS_SALTLEN_* or a length */
    EVP_MD_CTX *mdctx; /* digest-sign: the host-side hash */

    /* Streaming in the token. */
    int stream;  /* this digest operation runs in the token */
    int sign;    /* 1: signing, 0: verifying */
    int moved;   /* its running token operation went to a duplicate */
    int decided; /* digest-sign: c->via is chosen (first update or final) */
    p11_via via;
    CK_RSA_PKCS_PSS_PARAMS pss;
    p11_op op; /* holds the lease from the first update to final/free */
} sig_ctx;

/* Builds the token's input (tbs possibly prefixed) and the mechanism. */
struct prepared {
    CK_MECHANISM mech;
    CK_RSA_PKCS_PSS_PARAMS pss;
    unsigned char buf[19 + EVP_MAX_MD_SIZE];
    const unsigned char *in;
    CK_ULONG inlen;
};

/* hp_signature.c: lifecycle, sign/verify, digest-sign, common params. */
void *sig_newctx(void *provctx, int is_rsa);
int sig_md_nid(const EVP_MD *md);
int sig_set_md(sig_ctx *c, const char *name, EVP_MD **slot);
OSSL_FUNC_signature_freectx_fn sig_freectx;
OSSL_FUNC_signature_dupctx_fn sig_dupctx;
OSSL_FUNC_signature_sign_init_fn sig_sign_init;
OSSL_FUNC_signature_sign_fn sig_sign;
OSSL_FUNC_signature_verify_init_fn sig_verify_init;
OSSL_FUNC_signature_verify_fn sig_verify;
OSSL_FUNC_signature_digest_sign_init_fn sig_digest_sign_init;
OSSL_FUNC_signature_digest_sign_update_fn sig_digest_update;
OSSL_FUNC_signature_digest_sign_final_fn sig_digest_sign_final;
OSSL_FUNC_signature_digest_sign_fn sig_digest_sign;
OSSL_FUNC_signature_digest_verify_init_fn sig_digest_verify_init;
OSSL_FUNC_signature_digest_verify_final_fn sig_digest_verify_final;
OSSL_FUNC_signature_digest_verify_fn sig_digest_verify;
OSSL_FUNC_signature_get_ctx_params_fn sig_get_ctx_params;
OSSL_FUNC_signature_gettable_ctx_params_fn sig_gettable_ctx_params;
OSSL_FUNC_signature_set_ctx_params_fn sig_set_ctx_params;

/* hp_signature_rsa.c */
/* The mechanism and token input for c->pad, digest length already checked. */
int sig_rsa_prepare(sig_ctx *c, const unsigned char *tbs, size_t tbslen,
                    struct prepared *p);
/* The PSS parameters of c's digest, MGF1 digest and salt length. */
void sig_rsa_pss_params(const sig_ctx *c, CK_RSA_PKCS_PSS_PARAMS *pss);
int sig_rsa_algorithm_id(sig_ctx *c, X509_ALGOR *alg);
int sig_rsa_get_ctx_params(sig_ctx *c, OSSL_PARAM params[]);
int sig_rsa_set_ctx_params(sig_ctx *c, const OSSL_PARAM params[]);

/* hp_signature_ecdsa.c */
int sig_ecdsa_to_der(const unsigned char *rs, size_t rslen, unsigned char *out,
                     size_t *outlen, size_t outsize);
int sig_ecdsa_from_der(const sig_ctx *c, const unsigned char *der, size_t len,
                       unsigned char *rs, size_t *rslen);
int sig_ecdsa_algorithm_id(sig_ctx *c, X509_ALGOR *alg);

/* The dispatch entries all our digest signatures share; each family adds
 * newctx and settable_ctx_params. */
#define SIGNATURE_COMMON                                                                 \
    {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))sig_freectx},                          \
        {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))sig_dupctx},                        \
        {OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))sig_sign_init},                  \
        {OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))sig_sign},                            \
        {OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))sig_verify_init},              \
        {OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))sig_verify},                        \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))sig_digest_sign_init},    \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))sig_digest_update},     \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))sig_digest_sign_final},  \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))sig_digest_sign},              \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT,                                         \
         (void (*)(void))sig_digest_verify_init},                                        \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))sig_digest_update},   \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL,                                        \
         (void (*)(void))sig_digest_verify_final},                                       \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))sig_digest_verify},          \
        {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))sig_get_ctx_params},        \
        {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS,                                        \
         (void (*)(void))sig_gettable_ctx_params},                                       \
    {                                                                                    \
        OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))sig_set_ctx_params           \
    }

#endif
