/* What the AES files share: the context, and what hp_cipher.c (lifecycle,
 * init, the token operation and its lease, common parameters) and
 * hp_cipher_key.c (the key) give the mode files, hp_cipher_aes_block.c and
 * hp_cipher_aes_gcm.c. */
#ifndef HP_CIPHER_LOCAL_H
#define HP_CIPHER_LOCAL_H

#include "hp_provider.h"

#include "p11_secret.h"

#include <openssl/core_dispatch.h>
#include <openssl/evp.h>

/* Context parameters of our own (documented in README.md). */
#define HP_CIPHER_PARAM_KEY_URI "pkcs11-key-uri"
#define HP_CIPHER_PARAM_TOKEN_URI "pkcs11-token-uri"

#define AES_BLOCK 16
#define GCM_IV_MAX 128 /* OpenSSL's GCM_IV_MAX_SIZE */
#define GCM_TAG_MAX 16
#define UNSET ((size_t)-1)

/* What OpenSSL's AES implementations report for each mode. */
struct mode_info {
    const char *name;
    unsigned int mode; /* EVP_CIPH_*_MODE */
    CK_MECHANISM_TYPE mech;
    size_t ivlen;     /* default IV length */
    size_t blocksize; /* as EVP sees it: 1 for the stream modes */
    int aead, custom_iv;
};

enum { IV_UNSET, IV_SET, IV_USED, IV_DONE }; /* GCM IV states, as OpenSSL's */

typedef struct cipher_ctx {
    hp_provctx *pctx;
    const struct mode_info *mi;
    size_t keylen;
    int enc;
    unsigned int pad; /* ECB/CBC: PKCS#7 padding (on by default) */

    /* The key and where raw keys go. */
    p11_secret *key;
    p11_token *tok;  /* token for raw keys; NULL: choose at the next raw key */
    char *token_uri; /* pkcs11-token-uri as given (may hold a PIN: wiped) */

    /* The token operation. Its lease is held from the first data that
     * reaches the token until final, re-init, re-key or free. */
    p11_op op;

    /* IV. oiv is the IV as given; iv is the running value: the CBC chaining
     * block, or the CTR counter of the block the next byte falls in. */
    unsigned char oiv[GCM_IV_MAX];
    size_t ivlen;
    unsigned char iv[AES_BLOCK];
    unsigned int num; /* CTR: bytes of the current keystream block used */

    /* ECB/CBC: input not yet given to the token (a partial block, or the
     * last block of a padded decryption). */
    unsigned char buf[AES_BLOCK];
    size_t bufsz;

    /* GCM */
    int iv_state;
    unsigned char *aad;
    size_t aadlen, aadcap;
    unsigned char tag[GCM_TAG_MAX];
    size_t taglen;     /* decryption: length of the tag set; UNSET if none */
    int tag_ready;     /* encryption: the tag of the last message is known */
    unsigned char *ct; /* decryption: the ciphertext, checked at final;
                          encryption in one part: the plaintext so far */
    size_t ctlen, ctcap;
    /* The token refused GCM in parts (NSS's softokn does it in one call
     * only): each update runs the whole message so far in one call. */
    int gcm_one_part;

    /* Made inside a module call: everything goes to this default provider
     * context instead (see the top of the file). */
    EVP_CIPHER_CTX *soft;
    EVP_CIPHER *soft_cipher;
} cipher_ctx;

/* hp_cipher.c */
void *cipher_newctx(void *provctx, const struct mode_info *mi, size_t keylen);
int cipher_get_params(OSSL_PARAM params[], const struct mode_info *mi, size_t keylen);
OSSL_FUNC_cipher_freectx_fn cipher_freectx;
OSSL_FUNC_cipher_dupctx_fn cipher_dupctx;
OSSL_FUNC_cipher_encrypt_init_fn cipher_encrypt_init;
OSSL_FUNC_cipher_decrypt_init_fn cipher_decrypt_init;
OSSL_FUNC_cipher_update_fn cipher_update;
OSSL_FUNC_cipher_final_fn cipher_final;
OSSL_FUNC_cipher_cipher_fn cipher_cipher;
OSSL_FUNC_cipher_gettable_params_fn cipher_gettable_params;
OSSL_FUNC_cipher_get_ctx_params_fn cipher_get_ctx_params;
OSSL_FUNC_cipher_set_ctx_params_fn cipher_set_ctx_params;
/* A buffer grown to hold need bytes; 0 if out of memory. */
int cipher_grow(unsigned char **p, size_t *cap, size_t need);
/* Raises the failure src/ recorded; returns 0. */
int cipher_raise_rv(cipher_ctx *c, CK_RV rv);
/* Starts the token operation for the data that follows (takes the lease). */
int cipher_start(cipher_ctx *c);
/* len bytes through the token, all of them out again. */
int cipher_through(cipher_ctx *c, const unsigned char *in, size_t len,
                   unsigned char *out);
/* Ends the operation; a token that still had output for us is an error. */
int cipher_finish(cipher_ctx *c);
int cipher_out_room(cipher_ctx *c, size_t need, size_t outsize);
int cipher_set_octets(OSSL_PARAM *p, const unsigned char *v, size_t len);

/* hp_cipher_key.c */
int cipher_set_raw_key(cipher_ctx *c, const unsigned char *key, size_t keylen);
/* pkcs11-key-uri (is_key) or pkcs11-token-uri. */
int cipher_set_uri_param(cipher_ctx *c, const OSSL_PARAM *p, int is_key);

/* hp_cipher_aes_block.c: ECB, CBC and CTR */
int block_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
                 const unsigned char *in, size_t inl);
int block_final(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize);
int block_cipher(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
                 const unsigned char *in, size_t inl);
int ctr_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
               const unsigned char *in, size_t inl);
int ctr_final(cipher_ctx *c, size_t *outl);
int block_get_ctx_params(cipher_ctx *c, OSSL_PARAM params[]);
int block_set_ctx_params(cipher_ctx *c, const OSSL_PARAM params[]);

/* hp_cipher_aes_gcm.c */
int gcm_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
               const unsigned char *in, size_t inl);
int gcm_final(cipher_ctx *c, size_t *outl);
int gcm_get_ctx_params(cipher_ctx *c, OSSL_PARAM params[]);
int gcm_set_ctx_params(cipher_ctx *c, const OSSL_PARAM params[]);

/* newctx and get_params of one algorithm, and its dispatch table. */
#define AES_CIPHER(bits, lmode, kind)                                                    \
    static OSSL_FUNC_cipher_newctx_fn aes_##bits##_##lmode##_newctx;                     \
    static OSSL_FUNC_cipher_get_params_fn aes_##bits##_##lmode##_get_params;             \
    static void *aes_##bits##_##lmode##_newctx(void *provctx)                            \
    {                                                                                    \
        return cipher_newctx(provctx, &mode_##lmode, (bits) / 8);                        \
    }                                                                                    \
    static int aes_##bits##_##lmode##_get_params(OSSL_PARAM params[])                    \
    {                                                                                    \
        return cipher_get_params(params, &mode_##lmode, (bits) / 8);                     \
    }                                                                                    \
    const OSSL_DISPATCH hp_aes_##bits##_##lmode##_functions[] = {                        \
        {OSSL_FUNC_CIPHER_NEWCTX, (void (*)(void))aes_##bits##_##lmode##_newctx},        \
        {OSSL_FUNC_CIPHER_FREECTX, (void (*)(void))cipher_freectx},                      \
        {OSSL_FUNC_CIPHER_DUPCTX, (void (*)(void))cipher_dupctx},                        \
        {OSSL_FUNC_CIPHER_ENCRYPT_INIT, (void (*)(void))cipher_encrypt_init},            \
        {OSSL_FUNC_CIPHER_DECRYPT_INIT, (void (*)(void))cipher_decrypt_init},            \
        {OSSL_FUNC_CIPHER_UPDATE, (void (*)(void))cipher_update},                        \
        {OSSL_FUNC_CIPHER_FINAL, (void (*)(void))cipher_final},                          \
        {OSSL_FUNC_CIPHER_CIPHER, (void (*)(void))cipher_cipher},                        \
        {OSSL_FUNC_CIPHER_GET_PARAMS,                                                    \
         (void (*)(void))aes_##bits##_##lmode##_get_params},                             \
        {OSSL_FUNC_CIPHER_GETTABLE_PARAMS, (void (*)(void))cipher_gettable_params},      \
        {OSSL_FUNC_CIPHER_GET_CTX_PARAMS, (void (*)(void))cipher_get_ctx_params},        \
        {OSSL_FUNC_CIPHER_SET_CTX_PARAMS, (void (*)(void))cipher_set_ctx_params},        \
        {OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS,                                           \
         (void (*)(void))kind##_gettable_ctx_params},                                    \
        {OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS,                                           \
         (void (*)(void))kind##_settable_ctx_params},                                    \
        {0, NULL},                                                                       \
    }

extern const OSSL_DISPATCH hp_aes_128_gcm_functions[];
extern const OSSL_DISPATCH hp_aes_192_gcm_functions[];
extern const OSSL_DISPATCH hp_aes_256_gcm_functions[];
extern const OSSL_DISPATCH hp_aes_128_cbc_functions[];
extern const OSSL_DISPATCH hp_aes_192_cbc_functions[];
extern const OSSL_DISPATCH hp_aes_256_cbc_functions[];
extern const OSSL_DISPATCH hp_aes_128_ctr_functions[];
extern const OSSL_DISPATCH hp_aes_192_ctr_functions[];
extern const OSSL_DISPATCH hp_aes_256_ctr_functions[];
extern const OSSL_DISPATCH hp_aes_128_ecb_functions[];
extern const OSSL_DISPATCH hp_aes_192_ecb_functions[];
extern const OSSL_DISPATCH hp_aes_256_ecb_functions[];

#endif
