/* Symmetric ciphers run by the token: AES-128/192/256 in GCM, CBC, CTR and
 * ECB, under OpenSSL's names, with property provider=hsmprov.
 *
 * The key (hp_cipher_key.c): raw key bytes become a session object on the
 * token, or the context parameter "pkcs11-key-uri" names a key the token
 * holds.
 *
 * The lease (DESIGN §2.3). The token operation (C_EncryptInit or
 * C_DecryptInit) starts when the first data must reach the token: GCM takes
 * its AAD in C_EncryptInit's parameters, and OpenSSL passes AAD after init,
 * so the operation cannot start earlier; starting late also means that a
 * context re-initialised for every message (new IV, same key) costs no
 * extra calls. From then on the context holds its session lease until
 * final; re-init, re-key or free before final cancel the operation
 * (p11_op_abort) and return the lease. dupctx works on an idle context and,
 * mid-operation, only where the token can save operation state
 * (C_GetOperationState; SoftHSM2 cannot): otherwise it fails with an error
 * that says so.
 *
 * Matching OpenSSL byte for byte, call for call, is the mode files' part:
 * hp_cipher_aes_block.c (ECB, CBC, CTR) and hp_cipher_aes_gcm.c.
 *
 * A module that uses OpenSSL itself (SoftHSM2 encrypts its key store with
 * AES) gets hsmprov's AES when hsmprov wins its fetch, e.g. with
 * default_properties = ?provider=hsmprov. Calling the token from inside the
 * token's own call would deadlock (DESIGN §2.11), so a context made inside a
 * module call (p11_call_depth) is OpenSSL's default provider's AES, from our
 * own library context: what the module asked OpenSSL for, nothing more.
 */
#include "hp_cipher_local.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- lifecycle ------------------------------------------------------------- */

void *cipher_newctx(void *provctx, const struct mode_info *mi, size_t keylen)
{
    cipher_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->pctx = provctx;
    c->mi = mi;
    c->keylen = keylen;
    c->pad = 1;
    c->ivlen = mi->ivlen;
    c->op = (p11_op)P11_OP_INIT;
    c->taglen = UNSET;
    if (p11_call_depth > 0) {
        char name[32];

        snprintf(name, sizeof(name), "AES-%zu-%s", keylen * 8, mi->name);
        p11_debug("%s inside a module call: the default provider's", name);
        c->soft_cipher = EVP_CIPHER_fetch(c->pctx->libctx, name, NULL);
        c->soft = EVP_CIPHER_CTX_new();
        if (c->soft_cipher == NULL || c->soft == NULL) {
            EVP_CIPHER_free(c->soft_cipher);
            EVP_CIPHER_CTX_free(c->soft);
            free(c);
            return NULL;
        }
    }
    return c;
}

void cipher_freectx(void *vctx)
{
    cipher_ctx *c = vctx;

    if (c == NULL)
        return;
    /* Cancels a running operation and returns the lease. At exit the module
     * is finalised already and its sessions are gone. */
    if (!p11_process_exiting())
        p11_op_abort(&c->op);
    p11_secret_free(c->key);
    if (c->token_uri != NULL)
        OPENSSL_clear_free(c->token_uri, strlen(c->token_uri));
    free(c->aad);
    if (c->ct != NULL)
        OPENSSL_clear_free(c->ct, c->ctcap);
    EVP_CIPHER_CTX_free(c->soft);
    EVP_CIPHER_free(c->soft_cipher);
    OPENSSL_clear_free(c, sizeof(*c));
}

int cipher_grow(unsigned char **p, size_t *cap, size_t need)
{
    unsigned char *np;
    size_t ncap;

    if (need <= *cap)
        return 1;
    ncap = *cap > 0 ? *cap : 256;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return 0;
        ncap *= 2;
    }
    np = realloc(*p, ncap);
    if (np == NULL)
        return 0;
    *p = np;
    *cap = ncap;
    return 1;
}

void *cipher_dupctx(void *vctx)
{
    cipher_ctx *c = vctx, *d = malloc(sizeof(*d));

    if (d == NULL)
        return NULL;
    *d = *c;
    d->op = (p11_op)P11_OP_INIT;
    d->token_uri = NULL;
    d->aad = d->ct = NULL;
    d->aadcap = d->ctcap = 0;
    if (c->soft != NULL) {
        d->soft = EVP_CIPHER_CTX_new();
        if (d->soft == NULL || !EVP_CIPHER_up_ref(c->soft_cipher)) {
            EVP_CIPHER_CTX_free(d->soft);
            free(d);
            return NULL;
        }
        if (!EVP_CIPHER_CTX_copy(d->soft, c->soft)) {
            d->key = NULL;
            cipher_freectx(d);
            return NULL;
        }
        return d;
    }
    if (p11_op_running(&c->op)) {
        /* The operation's state is in the token's session: a copy needs
         * the token to hand it over. */
        CK_RV rv = p11_secret_op_dup(&d->op, &c->op, c->key);

        if (rv != CKR_OK) {
            hp_raise_p11(c->pctx, rv);
            hp_raise(c->pctx, HP_R_UNSUPPORTED,
                     "AES-%s: a context cannot be duplicated while its operation runs "
                     "in the token (between the first update and final) unless the "
                     "token can save operation state; duplicate it before the first "
                     "update or after final",
                     c->mi->name);
            OPENSSL_clear_free(d, sizeof(*d));
            return NULL;
        }
    }
    if ((c->token_uri != NULL && (d->token_uri = strdup(c->token_uri)) == NULL) ||
        (c->aadlen > 0 && !cipher_grow(&d->aad, &d->aadcap, c->aadlen)) ||
        (c->ctlen > 0 && !cipher_grow(&d->ct, &d->ctcap, c->ctlen))) {
        d->key = NULL;
        cipher_freectx(d);
        return NULL;
    }
    if (c->aadlen > 0)
        memcpy(d->aad, c->aad, c->aadlen);
    if (c->ctlen > 0)
        memcpy(d->ct, c->ct, c->ctlen);
    if (d->key != NULL)
        p11_secret_up(d->key);
    return d;
}

int cipher_raise_rv(cipher_ctx *c, CK_RV rv)
{
    hp_raise_p11(c->pctx, rv);
    return 0;
}

/* ---- nested use inside a module call: the default provider's AES ---------- */

static int soft_init(cipher_ctx *c, const unsigned char *key, const unsigned char *iv,
                     const OSSL_PARAM params[], int enc)
{
    /* The cipher at the first init only: later ones keep the context's
     * state (IV length, padding) as EVP does. */
    const EVP_CIPHER *ci =
        EVP_CIPHER_CTX_get0_cipher(c->soft) == NULL ? c->soft_cipher : NULL;

    return EVP_CipherInit_ex2(c->soft, ci, key, iv, enc, params);
}

static int soft_update(cipher_ctx *c, unsigned char *out, size_t *outl,
                       const unsigned char *in, size_t inl)
{
    int l = 0;

    if (inl > INT_MAX || !EVP_CipherUpdate(c->soft, out, &l, in, (int)inl))
        return 0;
    *outl = (size_t)l;
    return 1;
}

static int soft_final(cipher_ctx *c, unsigned char *out, size_t *outl)
{
    int l = 0;

    if (!EVP_CipherFinal_ex(c->soft, out, &l))
        return 0;
    *outl = (size_t)l;
    return 1;
}

static int soft_cipher(cipher_ctx *c, unsigned char *out, size_t *outl,
                       const unsigned char *in, size_t inl)
{
    int r;

    if (inl > INT_MAX || (r = EVP_Cipher(c->soft, out, in, (unsigned int)inl)) < 0)
        return 0;
    *outl = (size_t)r;
    return 1;
}

static int init(cipher_ctx *c, const unsigned char *key, size_t keylen,
                const unsigned char *iv, size_t ivlen, const OSSL_PARAM params[], int enc)
{
    /* Re-init ends the running operation and returns its lease. */
    p11_op_abort(&c->op);
    c->enc = enc;
    c->bufsz = 0;
    c->aadlen = 0;
    c->tag_ready = 0;
    if (c->ct != NULL)
        OPENSSL_cleanse(c->ct, c->ctlen);
    c->ctlen = 0;
    if (c->mi->mode == EVP_CIPH_CTR_MODE && c->num != 0)
        /* OpenSSL keeps the counter and drops the rest of the block. */
        for (int i = AES_BLOCK - 1; i >= 0 && ++c->iv[i] == 0; i--)
            ;
    c->num = 0;
    if (c->mi->mode == EVP_CIPH_GCM_MODE && c->iv_state == IV_USED)
        c->iv_state = IV_DONE; /* the IV went into a message that was not finished */
    /* Parameters first: pkcs11-token-uri decides where the key below goes. */
    if (!cipher_set_ctx_params(c, params))
        return 0;
    if (iv != NULL && c->mi->mode != EVP_CIPH_ECB_MODE) {
        size_t max = c->mi->mode == EVP_CIPH_GCM_MODE ? GCM_IV_MAX : AES_BLOCK;

        if (ivlen == 0 || ivlen > max ||
            (c->mi->mode != EVP_CIPH_GCM_MODE && ivlen != AES_BLOCK)) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "invalid IV length %zu for AES-%s", ivlen,
                     c->mi->name);
            return 0;
        }
        c->ivlen = ivlen;
        memcpy(c->oiv, iv, ivlen);
        if (c->mi->mode == EVP_CIPH_GCM_MODE)
            c->iv_state = IV_SET;
        else
            memcpy(c->iv, iv, AES_BLOCK);
    } else if (c->mi->mode == EVP_CIPH_CBC_MODE) {
        memcpy(c->iv, c->oiv, AES_BLOCK); /* back to the IV given last, as OpenSSL */
    }
    if (key != NULL && !cipher_set_raw_key(c, key, keylen))
        return 0;
    return 1;
}

int cipher_encrypt_init(void *vctx, const unsigned char *key, size_t keylen,
                        const unsigned char *iv, size_t ivlen, const OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_init(c, key, iv, params, 1);
    return init(c, key, keylen, iv, ivlen, params, 1);
}

int cipher_decrypt_init(void *vctx, const unsigned char *key, size_t keylen,
                        const unsigned char *iv, size_t ivlen, const OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_init(c, key, iv, params, 0);
    return init(c, key, keylen, iv, ivlen, params, 0);
}

/* ---- the token operation ----------------------------------------------------- */

int cipher_start(cipher_ctx *c)
{
    CK_MECHANISM mech = {c->mi->mech, NULL, 0};
    p11_op_kind kind = c->enc ? P11_ENCRYPT : P11_DECRYPT;
    CK_AES_CTR_PARAMS ctr;
    CK_GCM_PARAMS gcm;
    CK_RV rv;

    if (c->key == NULL) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "AES-%s: no key: pass key bytes at init or set " HP_CIPHER_PARAM_KEY_URI,
                 c->mi->name);
        return 0;
    }
    switch (c->mi->mode) {
    case EVP_CIPH_CBC_MODE:
        mech.pParameter = c->iv;
        mech.ulParameterLen = AES_BLOCK;
        break;
    case EVP_CIPH_CTR_MODE:
        memset(&ctr, 0, sizeof(ctr));
        ctr.ulCounterBits = 128;
        memcpy(ctr.cb, c->iv, AES_BLOCK);
        mech.pParameter = &ctr;
        mech.ulParameterLen = sizeof(ctr);
        break;
    case EVP_CIPH_GCM_MODE:
        memset(&gcm, 0, sizeof(gcm));
        gcm.pIv = c->oiv;
        gcm.ulIvLen = c->ivlen;
        gcm.ulIvBits = c->ivlen * 8;
        gcm.ulTagBits = GCM_TAG_MAX * 8;
        if (c->enc) {
            gcm.pAAD = c->aad;
            gcm.ulAADLen = c->aadlen;
        } else {
            /* The keystream for decryption: see the top of the file. */
            kind = P11_ENCRYPT;
        }
        mech.pParameter = &gcm;
        mech.ulParameterLen = sizeof(gcm);
        break;
    }
    rv = p11_secret_op_init(&c->op, c->key, kind, &mech);
    if (rv != CKR_OK)
        return cipher_raise_rv(c, rv);
    if (c->mi->mode == EVP_CIPH_GCM_MODE)
        c->iv_state = IV_USED;
    if (c->mi->mode == EVP_CIPH_CTR_MODE && c->num != 0) {
        /* Resume mid-block (EVP_CIPHER_CTX_set_num, or data after final):
         * the first num bytes of this block's keystream are used up. */
        unsigned char zero[AES_BLOCK] = {0}, skip[AES_BLOCK];
        CK_ULONG len = sizeof(skip);

        rv = p11_op_update(&c->op, zero, c->num, skip, &len);
        OPENSSL_cleanse(skip, sizeof(skip));
        if (rv != CKR_OK)
            return cipher_raise_rv(c, rv);
    }
    return 1;
}

/* len bytes through the token, all of them out again (every mode we run
 * streams, given whole blocks for ECB/CBC). */
int cipher_through(cipher_ctx *c, const unsigned char *in, size_t len, unsigned char *out)
{
    CK_ULONG olen = len;
    CK_RV rv;

    if (len == 0)
        return 1;
    if (!p11_op_running(&c->op) && !cipher_start(c))
        return 0;
    rv = p11_op_update(&c->op, in, len, out, &olen);
    if (rv != CKR_OK)
        return cipher_raise_rv(c, rv);
    if (olen != len) {
        p11_op_abort(&c->op);
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "AES-%s: token \"%s\" returned %lu bytes for %zu: hsmprov needs a token "
                 "that does not hold data back in this mode",
                 c->mi->name, p11_op_token_label(&c->op), (unsigned long)olen, len);
        return 0;
    }
    return 1;
}

/* Ends the operation; a token that still had output for us is an error
 * (nothing can be held back in the modes we run). */
int cipher_finish(cipher_ctx *c)
{
    unsigned char scratch[AES_BLOCK];
    CK_ULONG len = sizeof(scratch);
    CK_RV rv;

    if (!p11_op_running(&c->op))
        return 1;
    rv = p11_op_final(&c->op, scratch, &len);
    OPENSSL_cleanse(scratch, sizeof(scratch));
    if (rv != CKR_OK)
        return cipher_raise_rv(c, rv);
    if (len != 0) {
        hp_raise(c->pctx, HP_R_INTERNAL, "AES-%s: token returned %lu bytes at the end",
                 c->mi->name, (unsigned long)len);
        return 0;
    }
    return 1;
}

int cipher_out_room(cipher_ctx *c, size_t need, size_t outsize)
{
    if (need <= outsize)
        return 1;
    hp_raise(c->pctx, HP_R_BAD_PARAM, "output buffer too small: %zu bytes for %zu",
             outsize, need);
    return 0;
}

/* ---- update, final, cipher: the mode files' ------------------------------------ */

int cipher_update(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
                  const unsigned char *in, size_t inl)
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_update(c, out, outl, in, inl);
    switch (c->mi->mode) {
    case EVP_CIPH_GCM_MODE:
        return gcm_update(c, out, outl, outsize, in, inl);
    case EVP_CIPH_CTR_MODE:
        return ctr_update(c, out, outl, outsize, in, inl);
    }
    return block_update(c, out, outl, outsize, in, inl);
}

int cipher_final(void *vctx, unsigned char *out, size_t *outl, size_t outsize)
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_final(c, out, outl);
    switch (c->mi->mode) {
    case EVP_CIPH_GCM_MODE:
        return gcm_final(c, outl);
    case EVP_CIPH_CTR_MODE:
        return ctr_final(c, outl);
    }
    return block_final(c, out, outl, outsize);
}

/* EVP_Cipher(); for GCM in == NULL is final. */
int cipher_cipher(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
                  const unsigned char *in, size_t inl)
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_cipher(c, out, outl, in, inl);
    if (c->mi->mode == EVP_CIPH_GCM_MODE)
        return in == NULL ? gcm_final(c, outl)
                          : gcm_update(c, out, outl, outsize, in, inl);
    return block_cipher(c, out, outl, outsize, in, inl);
}

/* ---- parameters -------------------------------------------------------------- */

int cipher_get_params(OSSL_PARAM params[], const struct mode_info *mi, size_t keylen)
{
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_MODE)) != NULL &&
        !OSSL_PARAM_set_uint(p, mi->mode))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, keylen))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, mi->ivlen))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_BLOCK_SIZE)) != NULL &&
        !OSSL_PARAM_set_size_t(p, mi->blocksize))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_AEAD)) != NULL &&
        !OSSL_PARAM_set_int(p, mi->aead))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_CUSTOM_IV)) != NULL &&
        !OSSL_PARAM_set_int(p, mi->custom_iv))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_CTS)) != NULL &&
        !OSSL_PARAM_set_int(p, 0))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK)) != NULL &&
        !OSSL_PARAM_set_int(p, 0))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_HAS_RAND_KEY)) != NULL &&
        !OSSL_PARAM_set_int(p, 0))
        return 0;
    return 1;
}

const OSSL_PARAM *cipher_gettable_params(void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_MODE, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_BLOCK_SIZE, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_AEAD, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_CUSTOM_IV, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_CTS, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, NULL),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_HAS_RAND_KEY, NULL),
        OSSL_PARAM_END,
    };
    return gettable;
}

/* An IV as octet pointer or octet string, whichever the caller asked for. */
int cipher_set_octets(OSSL_PARAM *p, const unsigned char *v, size_t len)
{
    return OSSL_PARAM_set_octet_ptr(p, v, len) || OSSL_PARAM_set_octet_string(p, v, len);
}

int cipher_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;
    OSSL_PARAM *p;

    if (c->soft != NULL)
        return EVP_CIPHER_CTX_get_params(c->soft, params);

    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->keylen))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->ivlen))
        return 0;
    if (c->mi->mode == EVP_CIPH_GCM_MODE)
        return gcm_get_ctx_params(c, params);
    return block_get_ctx_params(c, params);
}

int cipher_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    if (c->soft != NULL)
        return EVP_CIPHER_CTX_set_params(c->soft, params);
    if ((p = OSSL_PARAM_locate_const(params, HP_CIPHER_PARAM_TOKEN_URI)) != NULL &&
        !cipher_set_uri_param(c, p, 0))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, HP_CIPHER_PARAM_KEY_URI)) != NULL &&
        !cipher_set_uri_param(c, p, 1))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL) {
        size_t keylen;

        if (!OSSL_PARAM_get_size_t(p, &keylen) || keylen != c->keylen) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-%zu-%s has a fixed key length",
                     c->keylen * 8, c->mi->name);
            return 0;
        }
    }
    if (c->mi->mode == EVP_CIPH_GCM_MODE)
        return gcm_set_ctx_params(c, params);
    return block_set_ctx_params(c, params);
}

/* ---- the algorithms ---------------------------------------------------------- */

/* Names as OpenSSL's default provider registers them. */
const OSSL_ALGORITHM hp_cipher_algs[] = {
    {"AES-256-GCM:id-aes256-GCM:2.16.840.1.101.3.4.1.46", HP_PROPS,
     hp_aes_256_gcm_functions, "AES-256-GCM in the token"},
    {"AES-192-GCM:id-aes192-GCM:2.16.840.1.101.3.4.1.26", HP_PROPS,
     hp_aes_192_gcm_functions, "AES-192-GCM in the token"},
    {"AES-128-GCM:id-aes128-GCM:2.16.840.1.101.3.4.1.6", HP_PROPS,
     hp_aes_128_gcm_functions, "AES-128-GCM in the token"},
    {"AES-256-CBC:AES256:2.16.840.1.101.3.4.1.42", HP_PROPS, hp_aes_256_cbc_functions,
     "AES-256-CBC in the token"},
    {"AES-192-CBC:AES192:2.16.840.1.101.3.4.1.22", HP_PROPS, hp_aes_192_cbc_functions,
     "AES-192-CBC in the token"},
    {"AES-128-CBC:AES128:2.16.840.1.101.3.4.1.2", HP_PROPS, hp_aes_128_cbc_functions,
     "AES-128-CBC in the token"},
    {"AES-256-CTR", HP_PROPS, hp_aes_256_ctr_functions, "AES-256-CTR in the token"},
    {"AES-192-CTR", HP_PROPS, hp_aes_192_ctr_functions, "AES-192-CTR in the token"},
    {"AES-128-CTR", HP_PROPS, hp_aes_128_ctr_functions, "AES-128-CTR in the token"},
    {"AES-256-ECB:2.16.840.1.101.3.4.1.41", HP_PROPS, hp_aes_256_ecb_functions,
     "AES-256-ECB in the token"},
    {"AES-192-ECB:2.16.840.1.101.3.4.1.21", HP_PROPS, hp_aes_192_ecb_functions,
     "AES-192-ECB in the token"},
    {"AES-128-ECB:2.16.840.1.101.3.4.1.1", HP_PROPS, hp_aes_128_ecb_functions,
     "AES-128-ECB in the token"},
    {NULL, NULL, NULL, NULL},
};
