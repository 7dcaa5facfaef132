/* AES-GCM in the token. The context, its lease and the key are
 * hp_cipher.c's.
 *
 * GCM encryption: CKM_AES_GCM with CK_GCM_PARAMS (the PKCS#11 2.40
 * layout with ulIvBits, which 3.0 keeps); the tag is always 16 bytes in
 * the token, and EVP_CTRL_AEAD_GET_TAG returns as many as asked.
 *
 * GCM decryption: a token gives no plaintext before C_DecryptFinal has
 * checked the tag, and PKCS#11 wants the tag appended to the ciphertext,
 * but OpenSSL returns plaintext from update and takes the tag just
 * before final. So update runs the GCM keystream in the token (a GCM
 * encryption with the same key and IV: ciphertext in, plaintext out, as
 * OpenSSL's own update releases it) and keeps the ciphertext here; final
 * has the token decrypt ciphertext||tag with the AAD, which checks the
 * tag, and wipes the result. The whole ciphertext is buffered until
 * final, and the token works twice.
 *
 * A token that does GCM in one call only (NSS's softokn refuses
 * C_EncryptUpdate with CKR_OPERATION_NOT_INITIALIZED): the first update
 * finds out, and from then on each update runs the whole message so far
 * through one C_Encrypt and releases the part that is new. GCM's keystream
 * depends only on key, IV and position, so the earlier part comes out as
 * before, and the last run's tag is the message's. Quadratic in the number
 * of updates, but an application that gives the message in one update (the
 * usual case) pays one token call, and one more at final only for an empty
 * message. EVP gives GCM's final no room for output, so buffering the
 * data until final is not an option. */
#include "hp_cipher_local.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <string.h>

static OSSL_FUNC_cipher_gettable_ctx_params_fn gcm_gettable_ctx_params;
static OSSL_FUNC_cipher_settable_ctx_params_fn gcm_settable_ctx_params;

static const struct mode_info mode_gcm = {"GCM", EVP_CIPH_GCM_MODE, CKM_AES_GCM, 12, 1, 1,
                                          1};

/* ---- data, AAD and tag ------------------------------------------------------- */

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

/* Whether rv, from the first update of a GCM operation that the token
 * began, says the token does GCM in one call only. */
static int refuses_parts(CK_RV rv)
{
    return rv == CKR_OPERATION_NOT_INITIALIZED || rv == CKR_FUNCTION_NOT_SUPPORTED ||
           rv == CKR_MECHANISM_INVALID;
}

/* One-part GCM: all len bytes (the message so far) through one C_Encrypt;
 * the bytes from `from` on go to out (NULL: none wanted). Encryption: with
 * the AAD, and the tag kept. Decryption: the keystream, as in parts. */
static int gcm_one_part_run(cipher_ctx *c, const unsigned char *all, size_t len,
                            size_t from, unsigned char *out)
{
    CK_GCM_PARAMS gcm;
    CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
    size_t cap = len + GCM_TAG_MAX;
    unsigned char *res = OPENSSL_malloc(cap);
    CK_ULONG rlen = cap;
    CK_RV rv;

    if (res == NULL)
        return 0;
    memset(&gcm, 0, sizeof(gcm));
    gcm.pIv = c->oiv;
    gcm.ulIvLen = c->ivlen;
    gcm.ulIvBits = c->ivlen * 8;
    gcm.ulTagBits = GCM_TAG_MAX * 8;
    if (c->enc) {
        gcm.pAAD = c->aad;
        gcm.ulAADLen = c->aadlen;
    }
    rv = p11_secret_op_init(&c->op, c->key, P11_ENCRYPT, &mech);
    if (rv == CKR_OK)
        /* Modules refuse a NULL buffer even for no data. */
        rv = p11_op_oneshot(&c->op, all != NULL ? all : res, len, res, &rlen);
    p11_op_abort(&c->op); /* the lease goes back whatever happened */
    if (rv == CKR_OK && rlen != len + GCM_TAG_MAX) {
        OPENSSL_clear_free(res, cap);
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "AES-GCM: token \"%s\" returned %lu bytes at C_Encrypt for %zu bytes "
                 "of data: not the data and a %d-byte tag",
                 c->key->tok->label, (unsigned long)rlen, len, GCM_TAG_MAX);
        return 0;
    }
    if (rv == CKR_OK) {
        if (out != NULL)
            memcpy(out, res + from, len - from);
        if (c->enc)
            memcpy(c->tag, res + len, GCM_TAG_MAX);
    }
    OPENSSL_clear_free(res, cap);
    if (rv != CKR_OK)
        return cipher_raise_rv(c, rv);
    c->iv_state = IV_USED;
    return 1;
}

/* The new data of an update, in one-part mode: appended to what came
 * before (c->ct: the plaintext when encrypting, the ciphertext when
 * decrypting, which final checks) and the whole run again. */
static int gcm_one_part_update(cipher_ctx *c, unsigned char *out, const unsigned char *in,
                               size_t inl)
{
    if (c->enc) {
        if (!cipher_grow(&c->ct, &c->ctcap, c->ctlen + inl + GCM_TAG_MAX))
            return 0;
        memcpy(c->ct + c->ctlen, in, inl);
        c->ctlen += inl;
    }
    return gcm_one_part_run(c, c->ct, c->ctlen, c->ctlen - inl, out);
}

int gcm_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
               const unsigned char *in, size_t inl)
{
    CK_ULONG olen = inl;
    CK_RV rv;

    *outl = 0;
    if (!gcm_iv_ready(c))
        return 0;
    if (out == NULL) {
        /* AAD. PKCS#11 takes it in C_EncryptInit/C_DecryptInit's
         * parameters, so it must all come before the data (as in OpenSSL). */
        if (c->iv_state == IV_USED || p11_op_running(&c->op)) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-GCM: AAD after data");
            return 0;
        }
        if (!cipher_grow(&c->aad, &c->aadcap, c->aadlen + inl))
            return 0;
        memcpy(c->aad + c->aadlen, in, inl);
        c->aadlen += inl;
        *outl = inl;
        return 1;
    }
    if (!cipher_out_room(c, inl, outsize))
        return 0;
    if (!c->enc) {
        /* Kept for the tag check at final; copied before an in-place call
         * overwrites it. */
        if (!cipher_grow(&c->ct, &c->ctcap, c->ctlen + inl + GCM_TAG_MAX))
            return 0;
        memcpy(c->ct + c->ctlen, in, inl);
        c->ctlen += inl;
    }
    if (inl == 0) {
        *outl = 0;
        return 1;
    }
    if (c->gcm_one_part) {
        if (!gcm_one_part_update(c, out, in, inl))
            return 0;
        *outl = inl;
        return 1;
    }
    if (!p11_op_running(&c->op)) {
        if (!cipher_start(c))
            return 0;
        rv = p11_op_update(&c->op, in, inl, out, &olen);
        if (refuses_parts(rv)) {
            /* The first data of this operation: nothing was released yet,
             * and the failed step gave the session back (its operation
             * ended or the session closed). */
            p11_failure_clear();
            c->gcm_one_part = 1;
            if (!gcm_one_part_update(c, out, in, inl))
                return 0;
            *outl = inl;
            return 1;
        }
        if (rv != CKR_OK)
            return cipher_raise_rv(c, rv);
        if (olen != inl) {
            p11_op_abort(&c->op);
            hp_raise(c->pctx, HP_R_UNSUPPORTED,
                     "AES-GCM: token \"%s\" returned %lu bytes for %zu: hsmprov needs a "
                     "token that does not hold data back in this mode",
                     c->key->tok->label, (unsigned long)olen, inl);
            return 0;
        }
    } else if (!cipher_through(c, in, inl, out)) {
        return 0;
    }
    *outl = inl;
    return 1;
}

static int gcm_encrypt_final(cipher_ctx *c)
{
    unsigned char scratch[GCM_TAG_MAX];
    CK_ULONG len = sizeof(scratch);
    int fresh;
    CK_RV rv;

    if (c->gcm_one_part) {
        /* The tag of the last run is the message's; an empty message has
         * had none. */
        if (c->iv_state != IV_USED && !gcm_one_part_run(c, c->ct, 0, 0, NULL))
            return 0;
        OPENSSL_cleanse(c->ct, c->ctcap);
        c->ctlen = 0;
        c->tag_ready = 1;
        return 1;
    }
    fresh = !p11_op_running(&c->op);
    if (fresh && !cipher_start(c))
        return 0;
    rv = p11_op_final(&c->op, scratch, &len);
    if (fresh && refuses_parts(rv)) {
        /* An empty message, on a token that does GCM in one call only. */
        p11_failure_clear();
        c->gcm_one_part = 1;
        if (!gcm_one_part_run(c, c->ct, 0, 0, NULL))
            return 0;
        c->tag_ready = 1;
        return 1;
    }
    if (rv != CKR_OK)
        return cipher_raise_rv(c, rv);
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
        return cipher_start(c); /* raises "no key" */
    if (p11_op_running(&c->op)) {
        /* End the keystream; its tag means nothing. The lease stays for the
         * check. */
        unsigned char scratch[GCM_TAG_MAX];

        len = sizeof(scratch);
        rv = p11_op_final_keep(&c->op, scratch, &len);
        if (rv != CKR_OK) {
            p11_op_abort(&c->op);
            return cipher_raise_rv(c, rv);
        }
    }
    /* The check: ciphertext||tag decrypted by the token with the AAD, in
     * place; the plaintext is thrown away. */
    if (!cipher_grow(&c->ct, &c->ctcap, c->ctlen + GCM_TAG_MAX))
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

int gcm_final(cipher_ctx *c, size_t *outl)
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

/* ---- parameters -------------------------------------------------------------- */

int gcm_get_ctx_params(cipher_ctx *c, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_AEAD_TAGLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->taglen == UNSET ? GCM_TAG_MAX : c->taglen))
        return 0;
    /* GCM's IV does not change as data goes through: both are the IV. */
    for (p = params; p->key != NULL; p++) {
        if (strcmp(p->key, OSSL_CIPHER_PARAM_IV) != 0 &&
            strcmp(p->key, OSSL_CIPHER_PARAM_UPDATED_IV) != 0)
            continue;
        if (c->iv_state == IV_UNSET || !cipher_set_octets(p, c->oiv, c->ivlen)) {
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

int gcm_set_ctx_params(cipher_ctx *c, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;

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

AES_CIPHER(128, gcm, gcm);
AES_CIPHER(192, gcm, gcm);
AES_CIPHER(256, gcm, gcm);
