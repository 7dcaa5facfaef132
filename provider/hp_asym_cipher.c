/* RSA encryption with token keys: decryption with the private key,
 * encryption with the public object, in PKCS#1 v1.5 (CKM_RSA_PKCS), OAEP
 * and no padding (CKM_RSA_X_509). One leased call each (p11_oneshot).
 *
 * OAEP goes to the token as CKM_RSA_PKCS_OAEP with CK_RSA_PKCS_OAEP_PARAMS
 * when the token takes the parameters. Many tokens take fewer than OpenSSL
 * offers (SoftHSM2 2.6: SHA-1 with MGF1-SHA1 and no label only; it refuses
 * the rest with CKR_ARGUMENTS_BAD). Then the RSA operation itself still runs
 * in the token (CKM_RSA_X_509, the private key never leaves it) and the OAEP
 * encoding is done here with OpenSSL's constant-time code, exactly as
 * OpenSSL's own RSA decryption does it on top of the raw RSA operation.
 * With a label that raw way is tried first: SoftHSM2 2.6 ignores the label
 * when decrypting (it decrypts a ciphertext with any label), and a label
 * that is not checked is worse than none.
 *
 * A public key imported from software (an EVP_PKEY of the default provider
 * that OpenSSL exported to us because our RSA won its fetch) encrypts with
 * the default provider, in our own library context: software keys stay in
 * software (DESIGN §2.12); it cannot decrypt here.
 *
 * A padding failure is an error (no plaintext, of any length). Our code does
 * not branch on the padding: the token or OpenSSL's constant-time decoder
 * decides, and the plaintext is copied out only after. PKCS#1 v1.5 implicit
 * rejection is OpenSSL 3.2+; on 3.0 an error is right.
 *
 * The TLS variant (RSA_PKCS1_WITH_TLS_PADDING: the TLS 1.2 RSA key exchange
 * of legacy clients, cipher suites such as AES128-GCM-SHA256) is never an
 * error on bad padding: a token's CKM_RSA_PKCS would answer
 * CKR_ENCRYPTED_DATA_INVALID for a bad premaster secret, a padding oracle.
 * The token decrypts without padding (CKM_RSA_X_509) and the padding and
 * version check runs here in constant time (hp_rsa_tls_pad.c), with a random
 * secret made before the decryption standing in for a bad one, as OpenSSL's
 * default provider does. A token without raw RSA gets a clear refusal.
 */
/* RSA_padding_add/check_PKCS1_OAEP_mgf1 are deprecated in 3.0 and have no
 * replacement that works on top of a raw RSA operation done elsewhere. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "hp_provider.h"

#include "hp_digest.h"
#include "hp_rsa_tls_pad.h"
#include "p11_failure.h"
#include "p11_mech.h"
#include "p11_op.h"
#include "p11_names.h"

#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_asym_cipher_newctx_fn asym_newctx;
static OSSL_FUNC_asym_cipher_freectx_fn asym_freectx;
static OSSL_FUNC_asym_cipher_dupctx_fn asym_dupctx;
static OSSL_FUNC_asym_cipher_encrypt_init_fn asym_encrypt_init;
static OSSL_FUNC_asym_cipher_encrypt_fn asym_encrypt;
static OSSL_FUNC_asym_cipher_decrypt_init_fn asym_decrypt_init;
static OSSL_FUNC_asym_cipher_decrypt_fn asym_decrypt;
static OSSL_FUNC_asym_cipher_get_ctx_params_fn asym_get_ctx_params;
static OSSL_FUNC_asym_cipher_gettable_ctx_params_fn asym_gettable_ctx_params;
static OSSL_FUNC_asym_cipher_set_ctx_params_fn asym_set_ctx_params;
static OSSL_FUNC_asym_cipher_settable_ctx_params_fn asym_settable_ctx_params;

typedef struct asym_ctx {
    hp_provctx *pctx;
    hp_key *key;  /* owned by the EVP_PKEY, which outlives the context */
    int pad;      /* RSA_PKCS1_PADDING, RSA_PKCS1_OAEP_PADDING, RSA_NO_PADDING */
    EVP_MD *md;   /* OAEP digest; NULL: SHA-1, OpenSSL's default */
    EVP_MD *mgf1; /* NULL: the OAEP digest */
    unsigned char *label;
    size_t label_len;
    int raw_oaep; /* the token refused these OAEP parameters: encode here */
    unsigned int tls_client_version, tls_alt_version; /* kept, for get_params */
} asym_ctx;

static void *asym_newctx(void *provctx)
{
    asym_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->pctx = provctx;
    c->pad = RSA_PKCS1_PADDING;
    return c;
}

static void asym_freectx(void *vctx)
{
    asym_ctx *c = vctx;

    if (c == NULL)
        return;
    EVP_MD_free(c->md);
    EVP_MD_free(c->mgf1);
    free(c->label);
    free(c);
}

static void *asym_dupctx(void *vctx)
{
    asym_ctx *c = vctx, *d = malloc(sizeof(*d));

    if (d == NULL)
        return NULL;
    *d = *c;
    d->label = NULL;
    if ((d->md != NULL && !EVP_MD_up_ref(d->md)) ||
        (d->mgf1 != NULL && !EVP_MD_up_ref(d->mgf1))) {
        free(d);
        return NULL;
    }
    if (c->label != NULL) {
        d->label = malloc(c->label_len > 0 ? c->label_len : 1);
        if (d->label == NULL) {
            asym_freectx(d);
            return NULL;
        }
        memcpy(d->label, c->label, c->label_len);
    }
    return d;
}

static int init(asym_ctx *c, void *key, const OSSL_PARAM params[], int decrypt)
{
    hp_key *k = key;

    if (k == NULL || k->kind != HP_KEY_RSA) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 k == NULL ? "no key given"
                           : "RSA encryption needs an RSA key (not RSA-PSS)");
        return 0;
    }
    if (k->p11 == NULL && decrypt) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "hsmprov decrypts only with keys on a token; this key was imported "
                 "from software");
        return 0;
    }
    if (decrypt && (k->public_only || k->p11->priv == CK_INVALID_HANDLE)) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "C_DecryptInit: %s is a public key: it cannot decrypt", k->p11->name);
        return 0;
    }
    c->key = k;
    c->pad = RSA_PKCS1_PADDING;
    c->raw_oaep = 0;
    return asym_set_ctx_params(c, params);
}

static int asym_encrypt_init(void *vctx, void *key, const OSSL_PARAM params[])
{
    return init(vctx, key, params, 0);
}

static int asym_decrypt_init(void *vctx, void *key, const OSSL_PARAM params[])
{
    return init(vctx, key, params, 1);
}

static size_t modulus_bytes(const asym_ctx *c)
{
    return (size_t)(c->key->bits + 7) / 8;
}

/* A digest's nid, NULL standing for OpenSSL's default OAEP digest. */
static int oaep_nid(const EVP_MD *md)
{
    return md != NULL ? EVP_MD_get_type(md) : NID_sha1;
}

static const EVP_MD *mgf1_md(const asym_ctx *c)
{
    return c->mgf1 != NULL ? c->mgf1 : c->md;
}

/* The token's answer to mechanism parameters it does not take. */
static int refused(CK_RV rv)
{
    return rv == CKR_MECHANISM_INVALID || rv == CKR_MECHANISM_PARAM_INVALID ||
           rv == CKR_ARGUMENTS_BAD;
}

/* Which way OAEP goes first: 1 the RSA primitive with encoding here, 0 the
 * token's CKM_RSA_PKCS_OAEP. Decided on the parameters only. */
static int oaep_raw_first(asym_ctx *c, CK_RSA_PKCS_OAEP_PARAMS *o)
{
    memset(o, 0, sizeof(*o));
    o->hashAlg = hp_digest_mech(oaep_nid(c->md));
    o->mgf = hp_digest_mgf1(oaep_nid(mgf1_md(c)));
    o->source = CKZ_DATA_SPECIFIED;
    o->pSourceData = c->label_len > 0 ? c->label : NULL;
    o->ulSourceDataLen = c->label_len;
    if (c->raw_oaep || o->hashAlg == CK_UNAVAILABLE_INFORMATION ||
        o->mgf == CK_UNAVAILABLE_INFORMATION)
        return 1;
    /* The token, or the key's CKA_ALLOWED_MECHANISMS, may offer the raw
     * primitive and not CKM_RSA_PKCS_OAEP. */
    if ((c->label_len > 0 || !p11_mech_usable(c->key->p11, CKM_RSA_PKCS_OAEP)) &&
        p11_mech_usable(c->key->p11, CKM_RSA_X_509))
        return 1;
    return 0;
}

/* One token call with mechanism mech; raises nothing. */
static CK_RV run(asym_ctx *c, p11_op_kind kind, CK_MECHANISM_TYPE mech, void *param,
                 CK_ULONG param_len, const unsigned char *in, size_t inlen,
                 unsigned char *out, size_t *outlen)
{
    CK_MECHANISM m = {mech, param, param_len};
    CK_ULONG len = *outlen;
    CK_RV rv;

    /* The private key's CKA_ALLOWED_MECHANISMS: a refusal that names them
     * rather than the token's bare CKR_MECHANISM_INVALID. */
    if (kind == P11_DECRYPT && (rv = p11_mech_require(c->key->p11, mech)) != CKR_OK)
        return rv;
    rv = p11_oneshot(c->key->p11, kind, &m, in, inlen, out, &len);
    *outlen = len;
    return rv;
}

/* Encryption with a public key imported from software: the default
 * provider's, with the same parameters. */
static int soft_encrypt(asym_ctx *c, unsigned char *out, size_t *outlen, size_t outsize,
                        const unsigned char *in, size_t inlen)
{
    EVP_PKEY *pk = hp_key_public_pkey(c->key);
    EVP_PKEY_CTX *pc =
        pk != NULL ? EVP_PKEY_CTX_new_from_pkey(c->pctx->libctx, pk, NULL) : NULL;
    unsigned char *label = NULL;
    int ok = pc != NULL && EVP_PKEY_encrypt_init(pc) > 0 &&
             EVP_PKEY_CTX_set_rsa_padding(pc, c->pad) > 0;

    if (ok && c->pad == RSA_PKCS1_OAEP_PADDING) {
        ok = (c->md == NULL ||
              EVP_PKEY_CTX_set_rsa_oaep_md_name(pc, EVP_MD_get0_name(c->md), NULL) > 0) &&
             (mgf1_md(c) == NULL || EVP_PKEY_CTX_set_rsa_mgf1_md_name(
                                        pc, EVP_MD_get0_name(mgf1_md(c)), NULL) > 0);
        if (ok && c->label_len > 0) {
            label = OPENSSL_memdup(c->label, c->label_len);
            ok = label != NULL &&
                 EVP_PKEY_CTX_set0_rsa_oaep_label(pc, label, (int)c->label_len) > 0;
            if (!ok)
                OPENSSL_free(label);
        }
    }
    *outlen = outsize;
    ok = ok && EVP_PKEY_encrypt(pc, out, outlen, in, inlen) > 0;
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pk);
    return ok;
}

static int asym_encrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize,
                        const unsigned char *in, size_t inlen)
{
    asym_ctx *c = vctx;
    size_t k = modulus_bytes(c), len = outsize;
    CK_RSA_PKCS_OAEP_PARAMS o;
    unsigned char *em = NULL;
    CK_RV rv;

    if (out == NULL) {
        *outlen = k;
        return 1;
    }
    if (outsize < k) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "output buffer too small: %zu bytes for %zu",
                 outsize, k);
        return 0;
    }
    if (c->key->p11 == NULL)
        return soft_encrypt(c, out, outlen, outsize, in, inlen);
    switch (c->pad) {
    case RSA_PKCS1_PADDING:
        rv = run(c, P11_ENCRYPT, CKM_RSA_PKCS, NULL, 0, in, inlen, out, &len);
        break;
    case RSA_NO_PADDING:
        if (!hp_rsa_raw_input_ok(c->key, in, inlen, 1))
            return 0;
        rv = run(c, P11_ENCRYPT, CKM_RSA_X_509, NULL, 0, in, inlen, out, &len);
        break;
    case RSA_PKCS1_OAEP_PADDING:
        rv = CKR_MECHANISM_INVALID;
        if (!oaep_raw_first(c, &o)) {
            rv = run(c, P11_ENCRYPT, CKM_RSA_PKCS_OAEP, &o, sizeof(o), in, inlen, out,
                     &len);
            if (!refused(rv))
                break;
            c->raw_oaep = 1;
            p11_failure_clear();
        }
        if ((em = malloc(k)) == NULL)
            return 0;
        if (inlen > INT_MAX ||
            RSA_padding_add_PKCS1_OAEP_mgf1(em, (int)k, in, (int)inlen, c->label,
                                            (int)c->label_len, c->md, c->mgf1) != 1) {
            hp_raise(c->pctx, HP_R_BAD_PARAM,
                     "RSA-OAEP: %zu bytes do not fit a %zu-byte modulus with this digest",
                     inlen, k);
            free(em);
            return 0;
        }
        len = outsize;
        rv = run(c, P11_ENCRYPT, CKM_RSA_X_509, NULL, 0, em, k, out, &len);
        free(em);
        break;
    default:
        hp_raise(c->pctx, HP_R_UNSUPPORTED, "RSA encryption with padding mode %d",
                 c->pad);
        return 0;
    }
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    *outlen = len;
    return 1;
}

/* The raw RSA result, left-padded to the modulus size (a token may drop
 * leading zeros). */
static void left_pad(unsigned char *buf, size_t len, size_t k)
{
    if (len < k) {
        memmove(buf + (k - len), buf, len);
        memset(buf, 0, k - len);
    }
}

/* The one refusal of the TLS key exchange that the caller can act on. */
static void tls_refuse(asym_ctx *c, CK_RV rv)
{
    const char *name = p11_rv_name(rv);
    char hex[32];

    if (name == NULL) {
        snprintf(hex, sizeof(hex), "CKR 0x%lx", (unsigned long)rv);
        name = hex;
    }
    p11_failure_clear();
    hp_raise(c->pctx, HP_R_UNSUPPORTED,
             "RSA key exchange for TLS 1.2 (RSA_PKCS1_WITH_TLS_PADDING) needs raw RSA "
             "decryption (CKM_RSA_X_509) in the token, which refuses it for %s (%s); use "
             "ECDHE cipher suites",
             c->key->p11->name, name);
}

/* TLS 1.2 RSA key exchange: the token's raw RSA result, checked here. buf
 * holds k bytes. A failure of the token call depends only on the ciphertext
 * as a number (too long, not below the modulus), which the client knows: it
 * is an error, as it is with OpenSSL's own RSA. Past the decryption nothing
 * fails, whatever the plaintext. */
static int tls_decrypt(asym_ctx *c, unsigned char *out, size_t *outlen, size_t outsize,
                       const unsigned char *in, size_t inlen, unsigned char *buf,
                       size_t k)
{
    unsigned char fallback[HP_TLS_PREMASTER_LEN], *padded = NULL;
    size_t len = k;
    int ok = 0;
    CK_RV rv;

    if (outsize < HP_TLS_PREMASTER_LEN) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "output buffer too small for a TLS premaster secret: %zu bytes for %d",
                 outsize, HP_TLS_PREMASTER_LEN);
        return 0;
    }
    if ((rv = p11_token_check_mech(c->key->p11->tok, CKM_RSA_X_509)) != CKR_OK) {
        tls_refuse(c, rv);
        return 0;
    }
    if (k < 2 + 8 + 1 + HP_TLS_PREMASTER_LEN) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "%s: a %zu-byte RSA modulus is too small for a TLS premaster secret",
                 c->key->p11->name, k);
        return 0;
    }
    /* Before the decryption: nothing after it may take a path that depends
     * on the plaintext, and a failing random generator would be one. */
    if (RAND_priv_bytes_ex(c->pctx->libctx, fallback, sizeof(fallback), 0) != 1) {
        hp_raise(c->pctx, HP_R_INTERNAL,
                 "no random bytes for the TLS premaster secret stand-in");
        return 0;
    }
    if (inlen < k) {
        /* A short ciphertext is the smaller number it is (OpenSSL's RSA
         * takes it so); the token wants the modulus' length. */
        if ((padded = OPENSSL_zalloc(k)) == NULL)
            goto end;
        memcpy(padded + (k - inlen), in, inlen);
        in = padded;
        inlen = k;
    }
    if (!hp_rsa_raw_input_ok(c->key, in, inlen, 1))
        goto end;
    rv = run(c, P11_DECRYPT, CKM_RSA_X_509, NULL, 0, in, inlen, buf, &len);
    if (refused(rv)) {
        tls_refuse(c, rv);
        goto end;
    }
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        goto end;
    }
    left_pad(buf, len, k);
    ok = hp_rsa_tls_premaster(out, buf, k, c->tls_client_version, c->tls_alt_version,
                              fallback) == HP_TLS_PREMASTER_LEN;
    if (ok)
        *outlen = HP_TLS_PREMASTER_LEN;
end:
    OPENSSL_cleanse(fallback, sizeof(fallback));
    OPENSSL_free(padded);
    return ok;
}

static int asym_decrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize,
                        const unsigned char *in, size_t inlen)
{
    asym_ctx *c = vctx;
    size_t k = modulus_bytes(c), len = k;
    CK_RSA_PKCS_OAEP_PARAMS o;
    unsigned char *buf, *padded = NULL;
    int n = -1, ok = 0;
    CK_RV rv;

    if (out == NULL) {
        *outlen = c->pad == RSA_PKCS1_WITH_TLS_PADDING ? HP_TLS_PREMASTER_LEN : k;
        return 1;
    }
    /* The token writes a whole modulus' worth; the caller's buffer may be
     * just big enough for the plaintext. */
    if ((buf = OPENSSL_malloc(k)) == NULL)
        return 0;
    switch (c->pad) {
    case RSA_PKCS1_PADDING:
        rv = run(c, P11_DECRYPT, CKM_RSA_PKCS, NULL, 0, in, inlen, buf, &len);
        break;
    case RSA_NO_PADDING:
        /* OpenSSL's RSA takes a short ciphertext as the smaller number it
         * is; tokens refuse it (SoftHSM2: CKR_GENERAL_ERROR). So it goes to
         * the token in the modulus' length, with the same checks. */
        if (inlen > k) {
            hp_raise(c->pctx, HP_R_BAD_PARAM,
                     "data greater than mod len: %zu bytes for a %zu-byte modulus (%s)",
                     inlen, k, c->key->p11 != NULL ? c->key->p11->name : "the key");
            goto end;
        }
        if (inlen < k) {
            if ((padded = OPENSSL_zalloc(k)) == NULL)
                goto end;
            memcpy(padded + (k - inlen), in, inlen);
            in = padded;
            inlen = k;
        }
        if (!hp_rsa_raw_input_ok(c->key, in, inlen, 1))
            goto end;
        rv = run(c, P11_DECRYPT, CKM_RSA_X_509, NULL, 0, in, inlen, buf, &len);
        if (rv == CKR_OK) {
            left_pad(buf, len, k);
            len = k;
        }
        break;
    case RSA_PKCS1_OAEP_PADDING:
        if (!oaep_raw_first(c, &o)) {
            rv = run(c, P11_DECRYPT, CKM_RSA_PKCS_OAEP, &o, sizeof(o), in, inlen, buf,
                     &len);
            if (!refused(rv))
                break;
            c->raw_oaep = 1;
            p11_failure_clear();
        }
        len = k;
        rv = run(c, P11_DECRYPT, CKM_RSA_X_509, NULL, 0, in, inlen, buf, &len);
        if (rv != CKR_OK)
            break;
        left_pad(buf, len, k);
        /* Constant time in the padding; -1 for any failure. */
        n = RSA_padding_check_PKCS1_OAEP_mgf1(
            out, outsize > INT_MAX ? INT_MAX : (int)outsize, buf, (int)k, (int)k,
            c->label, (int)c->label_len, c->md, c->mgf1);
        if (n < 0) {
            hp_raise(c->pctx, HP_R_BAD_PARAM,
                     "RSA-OAEP decoding error: %s (CKM_RSA_X_509 in the token, OAEP "
                     "checked by hsmprov): wrong key, digest or label, or a damaged "
                     "ciphertext",
                     c->key->p11->name);
            goto end;
        }
        *outlen = (size_t)n;
        ok = 1;
        goto end;
    case RSA_PKCS1_WITH_TLS_PADDING:
        ok = tls_decrypt(c, out, outlen, outsize, in, inlen, buf, k);
        goto end;
    default:
        hp_raise(c->pctx, HP_R_UNSUPPORTED, "RSA decryption with padding mode %d",
                 c->pad);
        goto end;
    }
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        goto end;
    }
    if (len > outsize) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "output buffer too small: %zu bytes for %zu",
                 outsize, len);
        goto end;
    }
    memcpy(out, buf, len);
    *outlen = len;
    ok = 1;
end:
    OPENSSL_clear_free(buf, k);
    OPENSSL_free(padded);
    return ok;
}

/* ---- parameters -------------------------------------------------------------- */

static int asym_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    asym_ctx *c = vctx;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE)) != NULL) {
        if (p->data_type == OSSL_PARAM_INTEGER
                ? !OSSL_PARAM_set_int(p, c->pad)
                : !OSSL_PARAM_set_utf8_string(p, hp_rsa_pad_name(c->pad, HP_PAD_ENCRYPT)))
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, c->md != NULL ? EVP_MD_get0_name(c->md) : "SHA1"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, mgf1_md(c) != NULL ? EVP_MD_get0_name(mgf1_md(c))
                                                          : "SHA1"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL)) != NULL &&
        !OSSL_PARAM_set_octet_ptr(p, c->label, c->label_len))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION)) !=
            NULL &&
        !OSSL_PARAM_set_uint(p, c->tls_client_version))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION)) !=
            NULL &&
        !OSSL_PARAM_set_uint(p, c->tls_alt_version))
        return 0;
    return 1;
}

static const OSSL_PARAM *asym_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, OSSL_PARAM_OCTET_PTR, NULL, 0),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, NULL),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, NULL),
        OSSL_PARAM_END,
    };
    return gettable;
}

static int set_md(asym_ctx *c, const OSSL_PARAM params[], const char *name_key,
                  const char *props_key, EVP_MD **slot)
{
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, name_key);
    const char *name, *props = NULL;
    EVP_MD *md;

    if (p == NULL)
        return 1;
    if (!OSSL_PARAM_get_utf8_string_ptr(p, &name))
        return 0;
    p = OSSL_PARAM_locate_const(params, props_key);
    if (p != NULL && !OSSL_PARAM_get_utf8_string_ptr(p, &props))
        return 0;
    /* Digests come from our own library context (the default provider):
     * nothing here recurses into hsmprov. */
    md = EVP_MD_fetch(c->pctx->libctx, name, props);
    if (md == NULL || (EVP_MD_get_flags(md) & EVP_MD_FLAG_XOF) != 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "unknown or unusable digest \"%s\"", name);
        EVP_MD_free(md);
        return 0;
    }
    EVP_MD_free(*slot);
    *slot = md;
    c->raw_oaep = 0;
    return 1;
}

static int parse_pad(asym_ctx *c, const OSSL_PARAM *p)
{
    int pad = -1;

    if (p->data_type == OSSL_PARAM_INTEGER) {
        if (!OSSL_PARAM_get_int(p, &pad))
            pad = -1;
    } else if (p->data_type == OSSL_PARAM_UTF8_STRING) {
        pad = hp_rsa_pad_by_name(p->data, HP_PAD_ENCRYPT);
    }
    switch (pad) {
    case RSA_PKCS1_PADDING:
    case RSA_PKCS1_OAEP_PADDING:
    case RSA_NO_PADDING:
    case RSA_PKCS1_WITH_TLS_PADDING:
        c->pad = pad;
        c->raw_oaep = 0;
        return 1;
    }
    hp_raise(c->pctx, HP_R_BAD_PARAM, "RSA encryption padding mode not supported");
    return 0;
}

static int asym_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    asym_ctx *c = vctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE)) != NULL &&
        !parse_pad(c, p))
        return 0;
    if (!set_md(c, params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST,
                OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST_PROPS, &c->md) ||
        !set_md(c, params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST,
                OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST_PROPS, &c->mgf1))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL)) !=
        NULL) {
        void *v = NULL;
        size_t len = 0;

        if (!OSSL_PARAM_get_octet_string(p, &v, 0, &len))
            return 0;
        free(c->label);
        /* Our own copy: freed with free(). */
        c->label = len > 0 ? malloc(len) : NULL;
        if (len > 0 && c->label == NULL) {
            OPENSSL_free(v);
            c->label_len = 0;
            return 0;
        }
        if (len > 0)
            memcpy(c->label, v, len);
        c->label_len = len;
        OPENSSL_free(v);
        c->raw_oaep = 0;
    }
    if ((p = OSSL_PARAM_locate_const(
             params, OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION)) != NULL &&
        !OSSL_PARAM_get_uint(p, &c->tls_client_version))
        return 0;
    if ((p = OSSL_PARAM_locate_const(
             params, OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION)) != NULL &&
        !OSSL_PARAM_get_uint(p, &c->tls_alt_version))
        return 0;
    return 1;
}

static const OSSL_PARAM *asym_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST_PROPS, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST_PROPS, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, NULL),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, NULL),
        OSSL_PARAM_END,
    };
    return settable;
}

static const OSSL_DISPATCH rsa_asym_cipher_functions[] = {
    {OSSL_FUNC_ASYM_CIPHER_NEWCTX, (void (*)(void))asym_newctx},
    {OSSL_FUNC_ASYM_CIPHER_FREECTX, (void (*)(void))asym_freectx},
    {OSSL_FUNC_ASYM_CIPHER_DUPCTX, (void (*)(void))asym_dupctx},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, (void (*)(void))asym_encrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT, (void (*)(void))asym_encrypt},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, (void (*)(void))asym_decrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT, (void (*)(void))asym_decrypt},
    {OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, (void (*)(void))asym_get_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, (void (*)(void))asym_gettable_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, (void (*)(void))asym_set_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, (void (*)(void))asym_settable_ctx_params},
    {0, NULL},
};

const OSSL_ALGORITHM hp_asym_cipher_algs[] = {
    {"RSA:rsaEncryption:1.2.840.113549.1.1.1", HP_PROPS, rsa_asym_cipher_functions,
     "RSA encryption with token keys"},
    /* The name our RSA keys ask for (hp_keymgmt.c). */
    {HP_OPNAME_RSA, HP_PROPS, rsa_asym_cipher_functions,
     "RSA encryption with token keys"},
    {NULL, NULL, NULL, NULL},
};
