/* Symmetric ciphers run by the token: AES-128/192/256 in GCM, CBC, CTR and
 * ECB, under OpenSSL's names, with property provider=hsmprov.
 *
 * The key. OpenSSL 3.0 hands a cipher raw key bytes; they become a
 * sensitive, non-extractable session object on the token (p11_secret),
 * destroyed when the context is freed or re-keyed. The token is the one
 * named by the context parameter "pkcs11-token-uri", else the first token
 * that offers the mode's mechanism. A key the token already holds is chosen
 * instead with the context parameter "pkcs11-key-uri" (a pkcs11: URI naming
 * a CKO_SECRET_KEY); then no key bytes are passed (EVP_CipherInit_ex2 with
 * key NULL). Login is hp_login's (PIN from the URI or the configuration): a
 * token key needs it when it is private; a raw key's session object is not
 * private (see p11_secret.c), so a PIN is used when configured and not
 * required otherwise.
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
 * Matching OpenSSL byte for byte, call for call:
 *  - ECB and CBC: whole blocks go to the token, the rest waits here, as in
 *    OpenSSL's own block ciphers (a padded decryption keeps its last block
 *    back until final). PKCS#7 padding is added and checked here, around
 *    CKM_AES_ECB / CKM_AES_CBC, so that update and final return exactly
 *    what OpenSSL returns whatever a token's CBC_PAD buffering does; the
 *    check does not branch on the padding bytes.
 *  - CTR: CKM_AES_CTR with a 128-bit counter (OpenSSL's counter is the
 *    whole block); the token streams partial blocks.
 *  - GCM encryption: CKM_AES_GCM with CK_GCM_PARAMS (the PKCS#11 2.40
 *    layout with ulIvBits, which 3.0 keeps); the tag is always 16 bytes in
 *    the token, and EVP_CTRL_AEAD_GET_TAG returns as many as asked.
 *  - GCM decryption: a token gives no plaintext before C_DecryptFinal has
 *    checked the tag, and PKCS#11 wants the tag appended to the ciphertext,
 *    but OpenSSL returns plaintext from update and takes the tag just
 *    before final. So update runs the GCM keystream in the token (a GCM
 *    encryption with the same key and IV: ciphertext in, plaintext out, as
 *    OpenSSL's own update releases it) and keeps the ciphertext here; final
 *    has the token decrypt ciphertext||tag with the AAD, which checks the
 *    tag, and wipes the result. The whole ciphertext is buffered until
 *    final, and the token works twice.
 *
 * A module that uses OpenSSL itself (SoftHSM2 encrypts its key store with
 * AES) gets hsmprov's AES when hsmprov wins its fetch, e.g. with
 * default_properties = ?provider=hsmprov. Calling the token from inside the
 * token's own call would deadlock (DESIGN §2.11), so a context made inside a
 * module call (p11_call_depth) is OpenSSL's default provider's AES, from our
 * own library context: what the module asked OpenSSL for, nothing more.
 */
#include "hp_provider.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_secret.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Context parameters of our own (documented in README.md). */
#define HP_CIPHER_PARAM_KEY_URI "pkcs11-key-uri"
#define HP_CIPHER_PARAM_TOKEN_URI "pkcs11-token-uri"

#define AES_BLOCK 16
#define GCM_IV_MAX 128 /* OpenSSL's GCM_IV_MAX_SIZE */
#define GCM_TAG_MAX 16
#define UNSET ((size_t)-1)

static OSSL_FUNC_cipher_freectx_fn cipher_freectx;
static OSSL_FUNC_cipher_dupctx_fn cipher_dupctx;
static OSSL_FUNC_cipher_encrypt_init_fn cipher_encrypt_init;
static OSSL_FUNC_cipher_decrypt_init_fn cipher_decrypt_init;
static OSSL_FUNC_cipher_update_fn cipher_update;
static OSSL_FUNC_cipher_final_fn cipher_final;
static OSSL_FUNC_cipher_cipher_fn cipher_cipher;
static OSSL_FUNC_cipher_gettable_params_fn cipher_gettable_params;
static OSSL_FUNC_cipher_get_ctx_params_fn cipher_get_ctx_params;
static OSSL_FUNC_cipher_set_ctx_params_fn cipher_set_ctx_params;
static OSSL_FUNC_cipher_gettable_ctx_params_fn block_gettable_ctx_params,
    gcm_gettable_ctx_params;
static OSSL_FUNC_cipher_settable_ctx_params_fn block_settable_ctx_params,
    gcm_settable_ctx_params;

/* What OpenSSL's AES implementations report for each mode. */
struct mode_info {
    const char *name;
    unsigned int mode; /* EVP_CIPH_*_MODE */
    CK_MECHANISM_TYPE mech;
    size_t ivlen;     /* default IV length */
    size_t blocksize; /* as EVP sees it: 1 for the stream modes */
    int aead, custom_iv;
};

static const struct mode_info mode_ecb = {"ECB", EVP_CIPH_ECB_MODE, CKM_AES_ECB, 0, 16, 0,
                                          0};
static const struct mode_info mode_cbc = {
    "CBC", EVP_CIPH_CBC_MODE, CKM_AES_CBC, 16, 16, 0, 0};
static const struct mode_info mode_ctr = {"CTR", EVP_CIPH_CTR_MODE, CKM_AES_CTR, 16, 1, 0,
                                          0};
static const struct mode_info mode_gcm = {"GCM", EVP_CIPH_GCM_MODE, CKM_AES_GCM, 12, 1, 1,
                                          1};

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
    unsigned char *ct; /* decryption: the ciphertext, checked at final */
    size_t ctlen, ctcap;

    /* Made inside a module call: everything goes to this default provider
     * context instead (see the top of the file). */
    EVP_CIPHER_CTX *soft;
    EVP_CIPHER *soft_cipher;
} cipher_ctx;

/* ---- lifecycle ------------------------------------------------------------- */

static void *newctx(void *provctx, const struct mode_info *mi, size_t keylen)
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

static void cipher_freectx(void *vctx)
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

static int grow(unsigned char **p, size_t *cap, size_t need)
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

static void *cipher_dupctx(void *vctx)
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
    if (c->op.active) {
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
        (c->aadlen > 0 && !grow(&d->aad, &d->aadcap, c->aadlen)) ||
        (c->ctlen > 0 && !grow(&d->ct, &d->ctcap, c->ctlen))) {
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

/* ---- keys ------------------------------------------------------------------ */

static int raise_rv(cipher_ctx *c, CK_RV rv)
{
    hp_raise_p11(c->pctx, rv);
    return 0;
}

/* The token raw keys go to: pkcs11-token-uri's, else the first token that
 * offers the mode's mechanism. Logged in. */
static p11_token *raw_key_token(cipher_ctx *c)
{
    p11_module *m;
    p11_uri *uri = NULL;
    p11_token *t = NULL, **v = NULL;
    size_t n = 0;
    CK_RV rv;

    if (c->tok != NULL)
        return c->tok;
    if ((m = hp_module(c->pctx)) == NULL)
        return NULL;
    if (c->token_uri != NULL) {
        rv = p11_uri_parse(c->token_uri, &uri);
        if (rv == CKR_OK)
            rv = p11_token_find(m, uri, &t);
    } else {
        rv = p11_token_list(m, &v, &n);
        for (size_t i = 0; rv == CKR_OK && i < n && t == NULL; i++)
            if ((v[i]->info.flags & CKF_TOKEN_INITIALIZED) &&
                p11_token_check_mech(v[i], c->mi->mech) == CKR_OK)
                t = v[i];
        if (rv == CKR_OK)
            p11_failure_clear(); /* the tokens that lack the mechanism */
        if (rv == CKR_OK && t == NULL)
            rv = n == 0 ? p11_fail(CKR_TOKEN_NOT_PRESENT, "C_GetSlotList",
                                   "module %s has no token to hold an AES key", m->path)
                        : p11_fail(CKR_MECHANISM_INVALID, "C_GetMechanismList",
                                   "no token of module %s offers %s", m->path,
                                   p11_mech_name(c->mi->mech));
        free(v);
    }
    /* Raw keys become public session objects (see p11_secret.c): a PIN is
     * used if one is configured (a token may want the login for any
     * operation), and not needed otherwise. */
    if (rv == CKR_OK && (rv = hp_login(c->pctx, t, uri, NULL, NULL)) == P11_RV_NEED_PIN) {
        p11_failure_clear();
        rv = CKR_OK;
    }
    p11_uri_free(uri);
    if (rv != CKR_OK) {
        raise_rv(c, rv);
        return NULL;
    }
    c->tok = t;
    return t;
}

/* A new key: whatever ran with the old one is cancelled. */
static void replace_key(cipher_ctx *c, p11_secret *s)
{
    p11_op_abort(&c->op);
    p11_secret_free(c->key);
    c->key = s;
}

static int set_raw_key(cipher_ctx *c, const unsigned char *key, size_t keylen)
{
    p11_token *t;
    p11_secret *s;
    CK_RV rv;

    if (keylen != c->keylen) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "invalid key length %zu: AES-%zu-%s takes %zu",
                 keylen, c->keylen * 8, c->mi->name, c->keylen);
        return 0;
    }
    if ((t = raw_key_token(c)) == NULL)
        return 0;
    /* The same key again (applications often pass it with every IV): keep
     * the object the token has. */
    if (c->key != NULL && c->key->tok == t && p11_secret_has_value(c->key, key, keylen))
        return 1;
    rv = p11_token_check_mech(t, c->mi->mech);
    if (rv == CKR_OK)
        rv = p11_secret_import(t, CKK_AES, key, keylen, &s);
    if (rv != CKR_OK)
        return raise_rv(c, rv);
    replace_key(c, s);
    return 1;
}

static int set_key_uri(cipher_ctx *c, const char *text)
{
    p11_module *m = hp_module(c->pctx);
    p11_uri *uri = NULL;
    p11_token *t = NULL;
    p11_secret *s = NULL;
    CK_RV rv;

    if (m == NULL)
        return 0;
    rv = p11_uri_parse(text, &uri);
    if (rv == CKR_OK)
        rv = p11_token_find(m, uri, &t);
    if (rv == CKR_OK)
        rv = hp_login(c->pctx, t, uri, NULL, NULL);
    if (rv == CKR_OK)
        rv = p11_token_check_mech(t, c->mi->mech);
    if (rv == CKR_OK)
        rv = p11_secret_find(t, uri, CKK_AES, &s);
    p11_uri_free(uri);
    if (rv != CKR_OK)
        return raise_rv(c, rv);
    if (s->len != c->keylen) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "%s is an AES-%lu key; AES-%zu-%s needs AES-%zu",
                 s->name, (unsigned long)s->len * 8, c->keylen * 8, c->mi->name,
                 c->keylen * 8);
        p11_secret_free(s);
        return 0;
    }
    replace_key(c, s);
    return 1;
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

/* ---- init ------------------------------------------------------------------ */

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
    if (key != NULL && !set_raw_key(c, key, keylen))
        return 0;
    return 1;
}

static int cipher_encrypt_init(void *vctx, const unsigned char *key, size_t keylen,
                               const unsigned char *iv, size_t ivlen,
                               const OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_init(c, key, iv, params, 1);
    return init(c, key, keylen, iv, ivlen, params, 1);
}

static int cipher_decrypt_init(void *vctx, const unsigned char *key, size_t keylen,
                               const unsigned char *iv, size_t ivlen,
                               const OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_init(c, key, iv, params, 0);
    return init(c, key, keylen, iv, ivlen, params, 0);
}

/* ---- the token operation ----------------------------------------------------- */

/* Starts the token operation for the data that follows (takes the lease). */
static int start(cipher_ctx *c)
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
        return raise_rv(c, rv);
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
            return raise_rv(c, rv);
    }
    return 1;
}

/* len bytes through the token, all of them out again (every mode we run
 * streams, given whole blocks for ECB/CBC). */
static int through(cipher_ctx *c, const unsigned char *in, size_t len, unsigned char *out)
{
    CK_ULONG olen = len;
    CK_RV rv;

    if (len == 0)
        return 1;
    if (!c->op.active && !start(c))
        return 0;
    rv = p11_op_update(&c->op, in, len, out, &olen);
    if (rv != CKR_OK)
        return raise_rv(c, rv);
    if (olen != len) {
        p11_op_abort(&c->op);
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "AES-%s: token \"%s\" returned %lu bytes for %zu: hsmprov needs a token "
                 "that does not hold data back in this mode",
                 c->mi->name, c->op.tok != NULL ? c->op.tok->label : "?",
                 (unsigned long)olen, len);
        return 0;
    }
    return 1;
}

/* Ends the operation; a token that still had output for us is an error
 * (nothing can be held back in the modes we run). */
static int finish(cipher_ctx *c)
{
    unsigned char scratch[AES_BLOCK];
    CK_ULONG len = sizeof(scratch);
    CK_RV rv;

    if (!c->op.active)
        return 1;
    rv = p11_op_final(&c->op, scratch, &len);
    OPENSSL_cleanse(scratch, sizeof(scratch));
    if (rv != CKR_OK)
        return raise_rv(c, rv);
    if (len != 0) {
        hp_raise(c->pctx, HP_R_INTERNAL, "AES-%s: token returned %lu bytes at the end",
                 c->mi->name, (unsigned long)len);
        return 0;
    }
    return 1;
}

static int out_room(cipher_ctx *c, size_t need, size_t outsize)
{
    if (need <= outsize)
        return 1;
    hp_raise(c->pctx, HP_R_BAD_PARAM, "output buffer too small: %zu bytes for %zu",
             outsize, need);
    return 0;
}

/* ---- ECB and CBC ------------------------------------------------------------- */

/* Whole blocks through the token, tracking the CBC chaining value. */
static int blocks(cipher_ctx *c, const unsigned char *in, size_t len, unsigned char *out)
{
    unsigned char last[AES_BLOCK];

    if (len == 0)
        return 1;
    /* Decryption chains on the ciphertext, which an in-place call overwrites. */
    memcpy(last, in + len - AES_BLOCK, AES_BLOCK);
    if (!through(c, in, len, out))
        return 0;
    if (c->mi->mode == EVP_CIPH_CBC_MODE)
        memcpy(c->iv, c->enc ? out + len - AES_BLOCK : last, AES_BLOCK);
    return 1;
}

static int overlap(const unsigned char *a, size_t alen, const unsigned char *b,
                   size_t blen)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;

    return x < y + blen && y < x + alen;
}

static int block_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
                        const unsigned char *in, size_t inl)
{
    size_t avail = c->bufsz + inl, keep, n, done = 0, inl0 = inl;
    unsigned char *copy = NULL;
    int ok = 0;

    /* OpenSSL's rule: whole blocks go through, the rest waits; a padded
     * decryption keeps its last block (whole or not) for final. */
    if (!c->enc && c->pad)
        keep = avail == 0 ? 0 : (avail - 1) % AES_BLOCK + 1;
    else
        keep = avail % AES_BLOCK;
    n = avail - keep;
    *outl = 0;
    if (n == 0) {
        memcpy(c->buf + c->bufsz, in, inl);
        c->bufsz += inl;
        return 1;
    }
    if (!out_room(c, n, outsize))
        return 0;
    if (c->bufsz > 0 && overlap(out, n, in, inl)) {
        /* Output runs ahead of input by the bytes held: read from a copy. */
        if ((copy = malloc(inl)) == NULL)
            return 0;
        memcpy(copy, in, inl);
        in = copy;
    }
    if (c->bufsz > 0) {
        size_t fill = AES_BLOCK - c->bufsz;

        memcpy(c->buf + c->bufsz, in, fill);
        in += fill;
        inl -= fill;
        if (!blocks(c, c->buf, AES_BLOCK, out))
            goto end;
        c->bufsz = 0;
        done = AES_BLOCK;
    }
    if (!blocks(c, in, n - done, out + done))
        goto end;
    in += n - done;
    inl -= n - done;
    memcpy(c->buf, in, inl);
    c->bufsz = inl;
    *outl = n;
    ok = 1;
end:
    if (copy != NULL)
        OPENSSL_clear_free(copy, inl0);
    return ok;
}

/* Mask helpers: all ones when the condition holds, else zero. */
static unsigned int ct_eq(unsigned int a, unsigned int b)
{
    unsigned int x = a ^ b;

    return 0U - (((x | (0U - x)) >> (sizeof(x) * 8 - 1)) ^ 1U);
}

static unsigned int ct_lt(unsigned int a, unsigned int b) /* a, b < 2^31 */
{
    return 0U - ((a - b) >> (sizeof(a) * 8 - 1));
}

/* PKCS#7 padding of the last block: the number of data bytes in it, or -1.
 * Every byte is looked at whatever the padding value. */
static int unpad(const unsigned char *blk)
{
    unsigned int pad = blk[AES_BLOCK - 1];
    unsigned int good = ~ct_eq(pad, 0) & ct_lt(pad, AES_BLOCK + 1);

    for (unsigned int i = 0; i < AES_BLOCK; i++) {
        unsigned int in_pad = ct_lt(i, pad);

        good &= ~in_pad | ct_eq(blk[AES_BLOCK - 1 - i], pad);
    }
    return good != 0 ? (int)(AES_BLOCK - pad) : -1;
}

static int block_final(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize)
{
    unsigned char blk[AES_BLOCK];
    int n, ok = 0;

    *outl = 0;
    if (c->enc && c->pad) {
        unsigned char v = (unsigned char)(AES_BLOCK - c->bufsz);

        if (!out_room(c, AES_BLOCK, outsize))
            goto abort;
        memset(c->buf + c->bufsz, v, v);
        if (!blocks(c, c->buf, AES_BLOCK, out) || !finish(c))
            goto abort;
        c->bufsz = 0;
        *outl = AES_BLOCK;
        return 1;
    }
    if (c->pad ? c->bufsz != AES_BLOCK : c->bufsz != 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "wrong final block length: %zu bytes left over; AES-%s %s data "
                 "must be a whole number of %d-byte blocks",
                 c->pad ? c->bufsz % AES_BLOCK : c->bufsz, c->mi->name,
                 c->pad ? "padded" : "unpadded", AES_BLOCK);
        goto abort;
    }
    if (!c->pad) {
        if (!finish(c))
            goto abort;
        return 1;
    }
    /* Padded decryption: the last block, then its padding checked here. */
    if (!blocks(c, c->buf, AES_BLOCK, blk) || !finish(c))
        goto abort;
    c->bufsz = 0;
    n = unpad(blk);
    if (n < 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "bad decrypt: AES-%s padding is invalid",
                 c->mi->name);
        goto end;
    }
    if (!out_room(c, (size_t)n, outsize))
        goto end;
    memcpy(out, blk, (size_t)n);
    *outl = (size_t)n;
    ok = 1;
    goto end;
abort:
    p11_op_abort(&c->op);
end:
    OPENSSL_cleanse(blk, sizeof(blk));
    return ok;
}

/* ---- CTR --------------------------------------------------------------------- */

static int ctr_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
                      const unsigned char *in, size_t inl)
{
    size_t total, blocks_done;

    *outl = 0;
    if (!out_room(c, inl, outsize) || !through(c, in, inl, out))
        return 0;
    /* Where the next byte's keystream comes from: for updated-iv and for a
     * restart after final. */
    total = c->num + inl;
    blocks_done = total / AES_BLOCK;
    for (int i = AES_BLOCK - 1; i >= 0 && blocks_done != 0; i--) {
        size_t sum = c->iv[i] + (blocks_done & 0xff);

        c->iv[i] = (unsigned char)sum;
        blocks_done = (blocks_done >> 8) + (sum >> 8);
    }
    c->num = (unsigned int)(total % AES_BLOCK);
    *outl = inl;
    return 1;
}

/* ---- GCM --------------------------------------------------------------------- */

static int gcm_iv_ready(cipher_ctx *c)
{
    if (c->iv_state == IV_SET || c->iv_state == IV_USED)
        return 1;
    hp_raise(c->pctx, HP_R_BAD_PARAM,
             c->iv_state == IV_DONE
                 ? "AES-GCM: this IV was used already; initialise with a new IV"
                 : "AES-GCM: no IV set");
    return 0;
}

static int gcm_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
                      const unsigned char *in, size_t inl)
{
    *outl = 0;
    if (!gcm_iv_ready(c))
        return 0;
    if (out == NULL) {
        /* AAD. PKCS#11 takes it in C_EncryptInit/C_DecryptInit's
         * parameters, so it must all come before the data (as in OpenSSL). */
        if (c->iv_state == IV_USED || c->op.active) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-GCM: AAD after data");
            return 0;
        }
        if (!grow(&c->aad, &c->aadcap, c->aadlen + inl))
            return 0;
        memcpy(c->aad + c->aadlen, in, inl);
        c->aadlen += inl;
        *outl = inl;
        return 1;
    }
    if (!out_room(c, inl, outsize))
        return 0;
    if (!c->enc) {
        /* Kept for the tag check at final; copied before an in-place call
         * overwrites it. */
        if (!grow(&c->ct, &c->ctcap, c->ctlen + inl + GCM_TAG_MAX))
            return 0;
        memcpy(c->ct + c->ctlen, in, inl);
        c->ctlen += inl;
    }
    if (!c->op.active && !start(c))
        return 0;
    if (!through(c, in, inl, out))
        return 0;
    *outl = inl;
    return 1;
}

static int gcm_encrypt_final(cipher_ctx *c)
{
    unsigned char scratch[GCM_TAG_MAX];
    CK_ULONG len = sizeof(scratch);
    CK_RV rv;

    if (!c->op.active && !start(c))
        return 0;
    rv = p11_op_final(&c->op, scratch, &len);
    if (rv != CKR_OK)
        return raise_rv(c, rv);
    if (len != GCM_TAG_MAX) {
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "AES-GCM: the token returned %lu bytes at C_EncryptFinal, not the "
                 "%d-byte tag: it held data back",
                 (unsigned long)len, GCM_TAG_MAX);
        return 0;
    }
    memcpy(c->tag, scratch, GCM_TAG_MAX);
    c->tag_ready = 1;
    return 1;
}

static int gcm_decrypt_final(cipher_ctx *c)
{
    CK_GCM_PARAMS gcm;
    CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
    CK_ULONG len;
    CK_RV rv;

    if (c->taglen == UNSET) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "AES-GCM: no tag set before final (EVP_CTRL_AEAD_SET_TAG)");
        return 0;
    }
    if (c->key == NULL)
        return start(c); /* raises "no key" */
    if (c->op.active) {
        /* End the keystream; its tag means nothing. The lease stays for the
         * check. */
        unsigned char scratch[GCM_TAG_MAX];

        len = sizeof(scratch);
        c->op.keep = 1;
        rv = p11_op_final(&c->op, scratch, &len);
        c->op.keep = 0;
        if (rv != CKR_OK) {
            p11_op_abort(&c->op);
            return raise_rv(c, rv);
        }
    }
    /* The check: ciphertext||tag decrypted by the token with the AAD, in
     * place; the plaintext is thrown away. */
    if (!grow(&c->ct, &c->ctcap, c->ctlen + GCM_TAG_MAX))
        return 0;
    memcpy(c->ct + c->ctlen, c->tag, c->taglen);
    memset(&gcm, 0, sizeof(gcm));
    gcm.pIv = c->oiv;
    gcm.ulIvLen = c->ivlen;
    gcm.ulIvBits = c->ivlen * 8;
    gcm.pAAD = c->aad;
    gcm.ulAADLen = c->aadlen;
    gcm.ulTagBits = c->taglen * 8;
    rv = p11_secret_op_init(&c->op, c->key, P11_DECRYPT, &mech);
    if (rv == CKR_OK) {
        len = c->ctcap;
        rv = p11_op_oneshot(&c->op, c->ct, c->ctlen + c->taglen, c->ct, &len);
    }
    p11_op_abort(&c->op); /* returns the lease whatever happened */
    OPENSSL_cleanse(c->ct, c->ctcap);
    c->ctlen = 0;
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "AES-GCM: decryption failed: wrong tag, or the ciphertext or AAD "
                 "was changed");
        return 0;
    }
    return 1;
}

static int gcm_final(cipher_ctx *c, size_t *outl)
{
    int ok;

    *outl = 0;
    if (!gcm_iv_ready(c))
        return 0;
    ok = c->enc ? gcm_encrypt_final(c) : gcm_decrypt_final(c);
    if (!ok)
        p11_op_abort(&c->op);
    c->iv_state = IV_DONE; /* OpenSSL too: no second message with this IV */
    return ok;
}

/* ---- update, final, cipher --------------------------------------------------- */

static int cipher_update(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
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

static int cipher_final(void *vctx, unsigned char *out, size_t *outl, size_t outsize)
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_final(c, out, outl);
    switch (c->mi->mode) {
    case EVP_CIPH_GCM_MODE:
        return gcm_final(c, outl);
    case EVP_CIPH_CTR_MODE:
        *outl = 0;
        if (finish(c))
            return 1;
        p11_op_abort(&c->op);
        return 0;
    }
    return block_final(c, out, outl, outsize);
}

/* EVP_Cipher(): whole blocks, no padding, no buffering (as OpenSSL's); for
 * GCM in == NULL is final. */
static int cipher_cipher(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
                         const unsigned char *in, size_t inl)
{
    cipher_ctx *c = vctx;

    if (c->soft != NULL)
        return soft_cipher(c, out, outl, in, inl);
    if (c->mi->mode == EVP_CIPH_GCM_MODE)
        return in == NULL ? gcm_final(c, outl)
                          : gcm_update(c, out, outl, outsize, in, inl);
    if (c->mi->mode == EVP_CIPH_CTR_MODE)
        return ctr_update(c, out, outl, outsize, in, inl);
    *outl = 0;
    if (inl % AES_BLOCK != 0 || c->bufsz != 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "EVP_Cipher with AES-%s takes whole blocks (%zu bytes given)",
                 c->mi->name, inl);
        return 0;
    }
    if (!out_room(c, inl, outsize) || !blocks(c, in, inl, out))
        return 0;
    *outl = inl;
    return 1;
}

/* ---- parameters -------------------------------------------------------------- */

static int get_params(OSSL_PARAM params[], const struct mode_info *mi, size_t keylen)
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

static const OSSL_PARAM *cipher_gettable_params(void *provctx)
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
static int set_octets(OSSL_PARAM *p, const unsigned char *v, size_t len)
{
    return OSSL_PARAM_set_octet_ptr(p, v, len) || OSSL_PARAM_set_octet_string(p, v, len);
}

static int cipher_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;
    int gcm = c->mi->mode == EVP_CIPH_GCM_MODE;
    OSSL_PARAM *p;

    if (c->soft != NULL)
        return EVP_CIPHER_CTX_get_params(c->soft, params);

    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->keylen))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->ivlen))
        return 0;
    if (!gcm) {
        unsigned char next[AES_BLOCK];

        if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_PADDING)) != NULL &&
            !OSSL_PARAM_set_uint(p, c->pad))
            return 0;
        if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_NUM)) != NULL &&
            !OSSL_PARAM_set_uint(p, c->num))
            return 0;
        if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IV)) != NULL &&
            !set_octets(p, c->oiv, c->ivlen))
            return 0;
        /* CTR: OpenSSL's running IV is the counter of the next keystream
         * block to make. */
        memcpy(next, c->iv, AES_BLOCK);
        if (c->mi->mode == EVP_CIPH_CTR_MODE && c->num != 0)
            for (int i = AES_BLOCK - 1; i >= 0 && ++next[i] == 0; i--)
                ;
        if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_UPDATED_IV)) != NULL &&
            !set_octets(p, next, c->ivlen))
            return 0;
        return 1;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_AEAD_TAGLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->taglen == UNSET ? GCM_TAG_MAX : c->taglen))
        return 0;
    /* GCM's IV does not change as data goes through: both are the IV. */
    for (p = params; p->key != NULL; p++) {
        if (strcmp(p->key, OSSL_CIPHER_PARAM_IV) != 0 &&
            strcmp(p->key, OSSL_CIPHER_PARAM_UPDATED_IV) != 0)
            continue;
        if (c->iv_state == IV_UNSET || !set_octets(p, c->oiv, c->ivlen)) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-GCM: no IV to return");
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_AEAD_TAG)) != NULL) {
        if (!c->enc || !c->tag_ready || p->data_size == 0 || p->data_size > GCM_TAG_MAX) {
            hp_raise(c->pctx, HP_R_BAD_PARAM,
                     "AES-GCM: the tag is known only after an encryption's final, and "
                     "is 1 to %d bytes",
                     GCM_TAG_MAX);
            return 0;
        }
        if (!OSSL_PARAM_set_octet_string(p, c->tag, p->data_size))
            return 0;
    }
    return 1;
}

static int set_uri_param(cipher_ctx *c, const OSSL_PARAM *p, int is_key)
{
    const char *text;

    if (!OSSL_PARAM_get_utf8_string_ptr(p, &text)) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "%s must be a UTF8 string", p->key);
        return 0;
    }
    if (is_key)
        return set_key_uri(c, text);
    if (c->token_uri != NULL)
        OPENSSL_clear_free(c->token_uri, strlen(c->token_uri));
    c->token_uri = *text != '\0' ? strdup(text) : NULL;
    c->tok = NULL;
    return *text == '\0' || c->token_uri != NULL;
}

static int cipher_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    cipher_ctx *c = vctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    if (c->soft != NULL)
        return EVP_CIPHER_CTX_set_params(c->soft, params);
    if ((p = OSSL_PARAM_locate_const(params, HP_CIPHER_PARAM_TOKEN_URI)) != NULL &&
        !set_uri_param(c, p, 0))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, HP_CIPHER_PARAM_KEY_URI)) != NULL &&
        !set_uri_param(c, p, 1))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL) {
        size_t keylen;

        if (!OSSL_PARAM_get_size_t(p, &keylen) || keylen != c->keylen) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-%zu-%s has a fixed key length",
                     c->keylen * 8, c->mi->name);
            return 0;
        }
    }
    if (c->mi->mode != EVP_CIPH_GCM_MODE) {
        if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_PADDING)) != NULL &&
            !OSSL_PARAM_get_uint(p, &c->pad))
            return 0;
        if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_NUM)) != NULL) {
            unsigned int num;

            if (!OSSL_PARAM_get_uint(p, &num))
                return 0;
            if (c->mi->mode == EVP_CIPH_CTR_MODE) {
                if (num >= AES_BLOCK) {
                    hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-CTR: num %u out of range",
                             num);
                    return 0;
                }
                if (num != c->num)
                    /* The token's keystream position changes: restart it
                     * there at the next update. */
                    p11_op_abort(&c->op);
            }
            c->num = num;
        }
        return 1;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_AEAD_IVLEN)) != NULL) {
        size_t sz;

        if (!OSSL_PARAM_get_size_t(p, &sz) || sz == 0 || sz > GCM_IV_MAX) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-GCM: IV length must be 1 to %d",
                     GCM_IV_MAX);
            return 0;
        }
        if (sz != c->ivlen) {
            c->ivlen = sz;
            c->iv_state = IV_UNSET;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_AEAD_TAG)) != NULL) {
        void *v = c->tag;
        size_t sz;

        if (c->enc || !OSSL_PARAM_get_octet_string(p, &v, GCM_TAG_MAX, &sz) || sz == 0) {
            hp_raise(c->pctx, HP_R_BAD_PARAM,
                     "AES-GCM: a tag of 1 to %d bytes is set for decryption only",
                     GCM_TAG_MAX);
            return 0;
        }
        c->taglen = sz;
    }
    if (OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_AEAD_TLS1_AAD) != NULL ||
        OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED) != NULL ||
        OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_AEAD_TLS1_SET_IV_INV) != NULL) {
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "AES-GCM in the token does not do TLS record protection");
        return 0;
    }
    return 1;
}

static const OSSL_PARAM *block_gettable_ctx_params(void *cctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_PADDING, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_NUM, NULL),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_IV, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_UPDATED_IV, NULL, 0),
        OSSL_PARAM_END,
    };
    return gettable;
}

static const OSSL_PARAM *gcm_gettable_ctx_params(void *cctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_AEAD_TAGLEN, NULL),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_IV, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_UPDATED_IV, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, NULL, 0),
        OSSL_PARAM_END,
    };
    return gettable;
}

static const OSSL_PARAM *block_settable_ctx_params(void *cctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_PADDING, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_NUM, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_utf8_string(HP_CIPHER_PARAM_KEY_URI, NULL, 0),
        OSSL_PARAM_utf8_string(HP_CIPHER_PARAM_TOKEN_URI, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

static const OSSL_PARAM *gcm_settable_ctx_params(void *cctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, NULL),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, NULL, 0),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_utf8_string(HP_CIPHER_PARAM_KEY_URI, NULL, 0),
        OSSL_PARAM_utf8_string(HP_CIPHER_PARAM_TOKEN_URI, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

/* ---- the algorithms ---------------------------------------------------------- */

/* newctx and get_params of one algorithm, and its dispatch table. */
#define AES_CIPHER(bits, lmode, kind)                                                    \
    static OSSL_FUNC_cipher_newctx_fn aes_##bits##_##lmode##_newctx;                     \
    static OSSL_FUNC_cipher_get_params_fn aes_##bits##_##lmode##_get_params;             \
    static void *aes_##bits##_##lmode##_newctx(void *provctx)                            \
    {                                                                                    \
        return newctx(provctx, &mode_##lmode, (bits) / 8);                               \
    }                                                                                    \
    static int aes_##bits##_##lmode##_get_params(OSSL_PARAM params[])                    \
    {                                                                                    \
        return get_params(params, &mode_##lmode, (bits) / 8);                            \
    }                                                                                    \
    static const OSSL_DISPATCH aes_##bits##_##lmode##_functions[] = {                    \
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

AES_CIPHER(128, gcm, gcm);
AES_CIPHER(192, gcm, gcm);
AES_CIPHER(256, gcm, gcm);
AES_CIPHER(128, cbc, block);
AES_CIPHER(192, cbc, block);
AES_CIPHER(256, cbc, block);
AES_CIPHER(128, ctr, block);
AES_CIPHER(192, ctr, block);
AES_CIPHER(256, ctr, block);
AES_CIPHER(128, ecb, block);
AES_CIPHER(192, ecb, block);
AES_CIPHER(256, ecb, block);

/* Names as OpenSSL's default provider registers them. */
const OSSL_ALGORITHM hp_cipher_algs[] = {
    {"AES-256-GCM:id-aes256-GCM:2.16.840.1.101.3.4.1.46", HP_PROPS, aes_256_gcm_functions,
     "AES-256-GCM in the token"},
    {"AES-192-GCM:id-aes192-GCM:2.16.840.1.101.3.4.1.26", HP_PROPS, aes_192_gcm_functions,
     "AES-192-GCM in the token"},
    {"AES-128-GCM:id-aes128-GCM:2.16.840.1.101.3.4.1.6", HP_PROPS, aes_128_gcm_functions,
     "AES-128-GCM in the token"},
    {"AES-256-CBC:AES256:2.16.840.1.101.3.4.1.42", HP_PROPS, aes_256_cbc_functions,
     "AES-256-CBC in the token"},
    {"AES-192-CBC:AES192:2.16.840.1.101.3.4.1.22", HP_PROPS, aes_192_cbc_functions,
     "AES-192-CBC in the token"},
    {"AES-128-CBC:AES128:2.16.840.1.101.3.4.1.2", HP_PROPS, aes_128_cbc_functions,
     "AES-128-CBC in the token"},
    {"AES-256-CTR", HP_PROPS, aes_256_ctr_functions, "AES-256-CTR in the token"},
    {"AES-192-CTR", HP_PROPS, aes_192_ctr_functions, "AES-192-CTR in the token"},
    {"AES-128-CTR", HP_PROPS, aes_128_ctr_functions, "AES-128-CTR in the token"},
    {"AES-256-ECB:2.16.840.1.101.3.4.1.41", HP_PROPS, aes_256_ecb_functions,
     "AES-256-ECB in the token"},
    {"AES-192-ECB:2.16.840.1.101.3.4.1.21", HP_PROPS, aes_192_ecb_functions,
     "AES-192-ECB in the token"},
    {"AES-128-ECB:2.16.840.1.101.3.4.1.1", HP_PROPS, aes_128_ecb_functions,
     "AES-128-ECB in the token"},
    {NULL, NULL, NULL, NULL},
};
