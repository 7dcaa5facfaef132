/* Signatures with token keys: RSA PKCS#1 v1.5, RSA-PSS, ECDSA.
 *
 * Digest-sign hashes on the host by default (DESIGN §2.9): the message is
 * hashed here in software and the token signs the hash with the raw mechanism
 * (CKM_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_ECDSA) in one leased call. No lease is
 * held while the application streams data, so duplicating a context is just
 * copying the digest state.
 *
 * When the token lacks the raw mechanism, or pkcs11-digest-in-token = yes,
 * the stream runs in the token with the combined mechanism (CKM_SHA256_RSA_PKCS,
 * ...): the context leases a session at its first update and holds it until
 * final, re-init or free (p11_op). Such a running operation cannot be copied;
 * duplicating the context moves it to the duplicate (OpenSSL's
 * EVP_DigestSignFinal finishes on a duplicate), and the original refuses
 * further use with a clear error. */
#include "hp_provider.h"

#include "hp_digest.h"
#include "p11_op.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_signature_newctx_fn sig_rsa_newctx, sig_ec_newctx;
static OSSL_FUNC_signature_freectx_fn sig_freectx;
static OSSL_FUNC_signature_dupctx_fn sig_dupctx;
static OSSL_FUNC_signature_sign_init_fn sig_sign_init;
static OSSL_FUNC_signature_sign_fn sig_sign;
static OSSL_FUNC_signature_verify_init_fn sig_verify_init;
static OSSL_FUNC_signature_verify_fn sig_verify;
static OSSL_FUNC_signature_digest_sign_init_fn sig_digest_sign_init;
static OSSL_FUNC_signature_digest_sign_update_fn sig_digest_update;
static OSSL_FUNC_signature_digest_sign_final_fn sig_digest_sign_final;
static OSSL_FUNC_signature_digest_verify_init_fn sig_digest_verify_init;
static OSSL_FUNC_signature_digest_verify_final_fn sig_digest_verify_final;
static OSSL_FUNC_signature_get_ctx_params_fn sig_get_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn sig_gettable_ctx_params;
static OSSL_FUNC_signature_set_ctx_params_fn sig_set_ctx_params;
static OSSL_FUNC_signature_settable_ctx_params_fn sig_rsa_settable, sig_ec_settable;

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
    int stream;           /* this digest operation runs in the token */
    int sign;             /* 1: signing, 0: verifying */
    int moved;            /* its running token operation went to a duplicate */
    int digest_then_sign; /* C_Digest* in the token, then the raw mechanism */
    CK_RSA_PKCS_PSS_PARAMS pss;
    p11_op op; /* holds the lease from the first update to final/free */
} sig_ctx;

static void *newctx(void *provctx, int is_rsa)
{
    sig_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->pctx = provctx;
    c->is_rsa = is_rsa;
    c->pad = RSA_PKCS1_PADDING;
    c->saltlen = RSA_PSS_SALTLEN_AUTO;
    return c;
}

static void *sig_rsa_newctx(void *provctx, const char *propq)
{
    return newctx(provctx, 1);
}

static void *sig_ec_newctx(void *provctx, const char *propq)
{
    return newctx(provctx, 0);
}

static void sig_freectx(void *vctx)
{
    sig_ctx *c = vctx;

    if (c == NULL)
        return;
    /* A context freed mid-stream ends its token operation and returns the
     * session to the pool. */
    p11_op_abort(&c->op);
    EVP_MD_free(c->md);
    EVP_MD_free(c->mgf1);
    EVP_MD_CTX_free(c->mdctx);
    free(c);
}

static void *sig_dupctx(void *vctx)
{
    sig_ctx *c = vctx, *d = malloc(sizeof(*d));

    if (d == NULL)
        return NULL;
    *d = *c;
    d->mdctx = NULL;
    if (c->op.active) {
        /* Move the running token operation (and its lease) to the copy. */
        c->op = (p11_op)P11_OP_INIT;
        c->moved = 1;
    } else {
        d->op = (p11_op)P11_OP_INIT;
    }
    if ((d->md != NULL && !EVP_MD_up_ref(d->md)) ||
        (d->mgf1 != NULL && !EVP_MD_up_ref(d->mgf1))) {
        free(d);
        return NULL;
    }
    if (c->mdctx != NULL) {
        d->mdctx = EVP_MD_CTX_new();
        if (d->mdctx == NULL || !EVP_MD_CTX_copy_ex(d->mdctx, c->mdctx)) {
            sig_freectx(d);
            return NULL;
        }
    }
    return d;
}

static int set_md(sig_ctx *c, const char *name, EVP_MD **slot)
{
    EVP_MD *md = hp_md_fetch(c->pctx, name);

    if (md == NULL) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "unknown digest \"%s\"", name);
        return 0;
    }
    EVP_MD_free(*slot);
    *slot = md;
    return 1;
}

static int init(sig_ctx *c, void *key, const OSSL_PARAM params[], int sign)
{
    hp_key *k = key;

    /* Re-init ends what the context was doing in the token. */
    p11_op_abort(&c->op);
    c->stream = 0;
    c->moved = 0;
    c->sign = sign;

    if (k == NULL) {
        if (c->key == NULL) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "no key given");
            return 0;
        }
    } else {
        if ((k->kind == HP_KEY_EC) == c->is_rsa) {
            hp_raise(c->pctx, HP_R_KEY_TYPE,
                     "key type does not match the signature "
                     "algorithm");
            return 0;
        }
        c->key = k;
    }
    if (c->key->p11 == NULL) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "hsmprov signs and verifies only with keys on a "
                 "token; this key was imported from software");
        return 0;
    }
    if (sign && (c->key->public_only || c->key->p11->priv == CK_INVALID_HANDLE)) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "C_SignInit: %s is a public key: it cannot sign",
                 c->key->p11->name);
        return 0;
    }
    if (c->key->kind == HP_KEY_RSA_PSS)
        c->pad = RSA_PKCS1_PSS_PADDING;
    return sig_set_ctx_params(c, params);
}

static int sig_sign_init(void *vctx, void *key, const OSSL_PARAM params[])
{
    return init(vctx, key, params, 1);
}

static int sig_verify_init(void *vctx, void *key, const OSSL_PARAM params[])
{
    return init(vctx, key, params, 0);
}

/* The salt length a PSS signature uses, special values resolved. */
static int pss_saltlen(const sig_ctx *c, int for_verify_auto_max)
{
    int hlen = EVP_MD_get_size(c->md);
    int emlen = (c->key->bits - 1 + 7) / 8;

    switch (c->saltlen) {
    case RSA_PSS_SALTLEN_DIGEST:
        return hlen;
    case RSA_PSS_SALTLEN_AUTO:
    case RSA_PSS_SALTLEN_MAX:
        return emlen - hlen - 2;
    }
    (void)for_verify_auto_max;
    return c->saltlen;
}

static int md_nid(const EVP_MD *md)
{
    return md != NULL ? EVP_MD_get_type(md) : NID_undef;
}

/* Builds the token's input (tbs possibly prefixed) and the mechanism. */
struct prepared {
    CK_MECHANISM mech;
    CK_RSA_PKCS_PSS_PARAMS pss;
    unsigned char buf[19 + EVP_MAX_MD_SIZE];
    const unsigned char *in;
    CK_ULONG inlen;
};

static int prepare(sig_ctx *c, const unsigned char *tbs, size_t tbslen,
                   struct prepared *p)
{
    memset(&p->mech, 0, sizeof(p->mech));
    p->in = tbs;
    p->inlen = tbslen;
    if (c->md != NULL && tbslen != (size_t)EVP_MD_get_size(c->md)) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "input is %zu bytes, but a %s digest is %d bytes", tbslen,
                 EVP_MD_get0_name(c->md), EVP_MD_get_size(c->md));
        return 0;
    }
    if (!c->is_rsa) {
        p->mech.mechanism = CKM_ECDSA;
        return 1;
    }
    switch (c->pad) {
    case RSA_PKCS1_PADDING:
        p->mech.mechanism = CKM_RSA_PKCS;
        if (c->md != NULL) {
            const hp_digest *d = hp_digest_by_nid(md_nid(c->md));

            if (d == NULL) {
                hp_raise(c->pctx, HP_R_UNSUPPORTED, "RSA PKCS#1 v1.5 with digest %s",
                         EVP_MD_get0_name(c->md));
                return 0;
            }
            memcpy(p->buf, d->info, d->info_len);
            memcpy(p->buf + d->info_len, tbs, tbslen);
            p->in = p->buf;
            p->inlen = d->info_len + tbslen;
        }
        return 1;
    case RSA_PKCS1_PSS_PADDING: {
        const EVP_MD *mgf = c->mgf1 != NULL ? c->mgf1 : c->md;

        if (c->md == NULL) {
            hp_raise(c->pctx, HP_R_BAD_PARAM,
                     "RSA-PSS needs a digest (-pkeyopt digest:...)");
            return 0;
        }
        p->pss.hashAlg = hp_digest_mech(md_nid(c->md));
        p->pss.mgf = hp_digest_mgf1(md_nid(mgf));
        if (p->pss.hashAlg == CK_UNAVAILABLE_INFORMATION ||
            p->pss.mgf == CK_UNAVAILABLE_INFORMATION) {
            hp_raise(c->pctx, HP_R_UNSUPPORTED,
                     "RSA-PSS with digest %s and MGF1 digest %s", EVP_MD_get0_name(c->md),
                     EVP_MD_get0_name(mgf));
            return 0;
        }
        p->pss.sLen = (CK_ULONG)pss_saltlen(c, 0);
        if ((int)p->pss.sLen < 0) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "PSS salt length %d", (int)p->pss.sLen);
            return 0;
        }
        p->mech.mechanism = CKM_RSA_PKCS_PSS;
        p->mech.pParameter = &p->pss;
        p->mech.ulParameterLen = sizeof(p->pss);
        return 1;
    }
    case RSA_NO_PADDING:
        p->mech.mechanism = CKM_RSA_X_509;
        return 1;
    case RSA_X931_PADDING:
        p->mech.mechanism = CKM_RSA_X9_31;
        return 1;
    }
    hp_raise(c->pctx, HP_R_UNSUPPORTED, "RSA padding mode %d", c->pad);
    return 0;
}

/* r||s from the token → DER ECDSA-Sig-Value. */
static int ecdsa_to_der(const unsigned char *rs, size_t rslen, unsigned char *out,
                        size_t *outlen, size_t outsize)
{
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(rs, (int)(rslen / 2), NULL);
    BIGNUM *ss = BN_bin2bn(rs + rslen / 2, (int)(rslen / 2), NULL);
    unsigned char *p = out;
    int len, ok = 0;

    if (s == NULL || r == NULL || ss == NULL || !ECDSA_SIG_set0(s, r, ss))
        goto end;
    r = ss = NULL;
    len = i2d_ECDSA_SIG(s, NULL);
    if (len > 0 && (size_t)len <= outsize && i2d_ECDSA_SIG(s, &p) == len) {
        *outlen = (size_t)len;
        ok = 1;
    }
end:
    BN_free(r);
    BN_free(ss);
    ECDSA_SIG_free(s);
    return ok;
}

static int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen)
{
    sig_ctx *c = vctx;
    size_t need = hp_key_size(c->key);
    struct prepared p;
    unsigned char rs[2 * 66];
    CK_ULONG outlen;
    CK_RV rv;

    if (sig == NULL) {
        *siglen = need;
        return 1;
    }
    if (c->is_rsa && c->pad == RSA_NO_PADDING &&
        !hp_rsa_raw_input_ok(c->key, tbs, tbslen, 1))
        return 0;
    if (!prepare(c, tbs, tbslen, &p))
        return 0;
    if (c->is_rsa) {
        if (sigsize < need) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "signature buffer of %zu bytes, need %zu",
                     sigsize, need);
            return 0;
        }
        outlen = (CK_ULONG)sigsize;
        rv = p11_oneshot(c->key->p11, P11_SIGN, &p.mech, p.in, p.inlen, sig, &outlen);
        if (rv != CKR_OK) {
            hp_raise_p11(c->pctx, rv);
            return 0;
        }
        *siglen = outlen;
        return 1;
    }
    outlen = sizeof(rs);
    rv = p11_oneshot(c->key->p11, P11_SIGN, &p.mech, p.in, p.inlen, rs, &outlen);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    if (!ecdsa_to_der(rs, outlen, sig, siglen, sigsize)) {
        hp_raise(c->pctx, HP_R_INTERNAL, "cannot encode the ECDSA signature");
        return 0;
    }
    return 1;
}

/* DER ECDSA-Sig-Value → r||s of the key's size; 0 if malformed. */
static int der_to_ecdsa(const sig_ctx *c, const unsigned char *der, size_t len,
                        unsigned char *rs, size_t *rslen)
{
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)len);
    size_t n = (size_t)(c->key->bits + 7) / 8;
    const BIGNUM *r, *ss;
    int ok;

    if (s == NULL || p != der + len) {
        ECDSA_SIG_free(s);
        return 0;
    }
    ECDSA_SIG_get0(s, &r, &ss);
    ok = BN_bn2binpad(r, rs, (int)n) == (int)n &&
         BN_bn2binpad(ss, rs + n, (int)n) == (int)n;
    ECDSA_SIG_free(s);
    *rslen = 2 * n;
    return ok;
}

static int verify_with(sig_ctx *c, struct prepared *p, const unsigned char *sig,
                       size_t siglen)
{
    CK_ULONG sl = (CK_ULONG)siglen;
    CK_RV rv = p11_oneshot(c->key->p11, P11_VERIFY, &p->mech, p->in, p->inlen,
                           (unsigned char *)sig, &sl);

    if (rv == CKR_OK)
        return 1;
    if (rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE)
        return 0;
    hp_raise_p11(c->pctx, rv);
    return -1;
}

static int sig_verify(void *vctx, const unsigned char *sig, size_t siglen,
                      const unsigned char *tbs, size_t tbslen)
{
    sig_ctx *c = vctx;
    struct prepared p;
    unsigned char rs[2 * 66];
    size_t rslen;
    int r;

    /* Like OpenSSL's RSA: the recovered number, in the modulus' length,
     * is compared with tbs; other input never matches (no error either). */
    if (c->is_rsa && c->pad == RSA_NO_PADDING &&
        !hp_rsa_raw_input_ok(c->key, tbs, tbslen, 0))
        return 0;
    if (!prepare(c, tbs, tbslen, &p))
        return 0;
    if (!c->is_rsa) {
        if (!der_to_ecdsa(c, sig, siglen, rs, &rslen))
            return 0;
        return verify_with(c, &p, rs, rslen) == 1;
    }
    r = verify_with(c, &p, sig, siglen);
    if (r == 0 && c->pad == RSA_PKCS1_PSS_PADDING && c->saltlen == RSA_PSS_SALTLEN_AUTO) {
        /* The token needs the salt length; "auto" accepts a signature made
         * with the digest length as well as with the maximum. */
        p.pss.sLen = (CK_ULONG)EVP_MD_get_size(c->md);
        r = verify_with(c, &p, sig, siglen);
    }
    return r == 1;
}

/* Whether digest-sign streams in the token: asked for, or the token lacks the
 * raw mechanism. The mechanism check is made once per key. */
static int wants_stream(sig_ctx *c)
{
    hp_key *k = c->key;
    int lacks = atomic_load(&k->lacks_raw_mech);

    if (c->pctx->digest_in_token)
        return 1;
    if (lacks < 0) {
        CK_MECHANISM_TYPE raw = c->is_rsa ? CKM_RSA_PKCS : CKM_ECDSA;

        lacks = p11_token_check_mech(k->p11->tok, raw) != CKR_OK;
        atomic_store(&k->lacks_raw_mech, lacks);
    }
    return lacks;
}

static CK_MECHANISM_TYPE combined_mech(const sig_ctx *c)
{
    const hp_digest *d = hp_digest_by_nid(md_nid(c->md));

    if (d == NULL)
        return CK_UNAVAILABLE_INFORMATION;
    if (!c->is_rsa)
        return d->ecdsa;
    return c->pad == RSA_PKCS1_PSS_PADDING ? d->rsa_pss : d->rsa_pkcs;
}

/* Starts the token operation at the first update or final: TLS sets the
 * padding only after DigestSignInit. Takes the context's lease. */
static int stream_start(sig_ctx *c)
{
    CK_MECHANISM mech = {combined_mech(c), NULL, 0};
    CK_RV rv;

    if (c->moved) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "this context's token operation was moved to a "
                 "duplicate of the context; re-initialise it");
        return 0;
    }
    if (c->op.active)
        return 1;
    c->digest_then_sign = 0;
    if (!c->is_rsa && mech.mechanism != CK_UNAVAILABLE_INFORMATION &&
        p11_token_check_mech(c->key->p11->tok, mech.mechanism) != CKR_OK) {
        /* No combined ECDSA mechanism (SoftHSM2 has none): hash in the
         * token on our leased session, then sign the hash with CKM_ECDSA on
         * that same session. */
        CK_MECHANISM dm = {hp_digest_mech(md_nid(c->md)), NULL, 0};

        /* Find the key again now if it must be (after fork or session
         * loss): that needs a session of its own, which is not to be had
         * once this context holds its lease and the pool is exhausted. */
        rv = p11_key_current(c->key->p11);
        if (rv != CKR_OK) {
            hp_raise_p11(c->pctx, rv);
            return 0;
        }
        c->digest_then_sign = 1;
        c->op.keep = 1;
        rv = p11_op_digest_init(&c->op, c->key->p11->tok, &dm);
        if (rv != CKR_OK) {
            p11_op_abort(&c->op);
            hp_raise_p11(c->pctx, rv);
            return 0;
        }
        return 1;
    }
    if (mech.mechanism == CK_UNAVAILABLE_INFORMATION ||
        (c->is_rsa && c->pad != RSA_PKCS1_PADDING && c->pad != RSA_PKCS1_PSS_PADDING)) {
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "no combined token mechanism for %s with this padding",
                 EVP_MD_get0_name(c->md));
        return 0;
    }
    if (c->is_rsa && c->pad == RSA_PKCS1_PSS_PADDING) {
        const EVP_MD *mgf = c->mgf1 != NULL ? c->mgf1 : c->md;

        c->pss.hashAlg = hp_digest_mech(md_nid(c->md));
        c->pss.mgf = hp_digest_mgf1(md_nid(mgf));
        c->pss.sLen = (CK_ULONG)pss_saltlen(c, 0);
        mech.pParameter = &c->pss;
        mech.ulParameterLen = sizeof(c->pss);
    }
    rv = p11_op_init(&c->op, c->key->p11, c->sign ? P11_SIGN : P11_VERIFY, &mech);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    return 1;
}

static int digest_init(sig_ctx *c, const char *mdname, void *key,
                       const OSSL_PARAM params[], int sign)
{
    if (!init(c, key, params, sign))
        return 0;
    if (!set_md(c, mdname != NULL && *mdname != '\0' ? mdname : "SHA256", &c->md))
        return 0;
    if (wants_stream(c)) {
        c->stream = 1;
        return 1;
    }
    if (c->mdctx == NULL && (c->mdctx = EVP_MD_CTX_new()) == NULL)
        return 0;
    return EVP_DigestInit_ex2(c->mdctx, c->md, NULL);
}

static int sig_digest_sign_init(void *vctx, const char *mdname, void *key,
                                const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, key, params, 1);
}

static int sig_digest_verify_init(void *vctx, const char *mdname, void *key,
                                  const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, key, params, 0);
}

static int sig_digest_update(void *vctx, const unsigned char *data, size_t len)
{
    sig_ctx *c = vctx;
    CK_RV rv;

    if (!c->stream)
        return c->mdctx != NULL && EVP_DigestUpdate(c->mdctx, data, len);
    if (!stream_start(c))
        return 0;
    rv = p11_op_update(&c->op, data, (CK_ULONG)len, NULL, NULL);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    return 1;
}

/* Ends the in-token digest and starts the raw signature operation on the
 * same leased session. */
static CK_RV digest_then(sig_ctx *c, p11_op_kind kind, unsigned char *h, CK_ULONG *hlen)
{
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_RV rv = p11_op_final(&c->op, h, hlen);

    c->op.keep = 0;
    if (rv == CKR_OK && !p11_key_fresh(c->key->p11))
        /* The token lost our sessions meanwhile: finding the key again
         * needs a session of the pool, so ours goes back first. */
        p11_op_abort(&c->op);
    if (rv == CKR_OK)
        rv = p11_op_init(&c->op, c->key->p11, kind, &mech);
    if (rv != CKR_OK)
        p11_op_abort(&c->op);
    return rv;
}

static int stream_sign_final(sig_ctx *c, unsigned char *sig, size_t *siglen,
                             size_t sigsize)
{
    unsigned char rs[2 * 66], h[EVP_MAX_MD_SIZE];
    CK_ULONG outlen, hlen = sizeof(h);
    CK_RV rv;

    if (!stream_start(c))
        return 0;
    outlen = c->is_rsa ? (CK_ULONG)sigsize : sizeof(rs);
    if (c->digest_then_sign) {
        rv = digest_then(c, P11_SIGN, h, &hlen);
        if (rv == CKR_OK)
            rv = p11_op_oneshot(&c->op, h, hlen, rs, &outlen);
    } else {
        rv = p11_op_final(&c->op, c->is_rsa ? sig : rs, &outlen);
    }
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    if (c->is_rsa) {
        *siglen = outlen;
        return 1;
    }
    if (!ecdsa_to_der(rs, outlen, sig, siglen, sigsize)) {
        hp_raise(c->pctx, HP_R_INTERNAL, "cannot encode the ECDSA signature");
        return 0;
    }
    return 1;
}

static int stream_verify_final(sig_ctx *c, const unsigned char *sig, size_t siglen)
{
    unsigned char rs[2 * 66], h[EVP_MAX_MD_SIZE];
    size_t rslen = siglen;
    CK_ULONG sl, hlen = sizeof(h);
    CK_RV rv;

    if (!stream_start(c))
        return 0;
    if (!c->is_rsa) {
        if (!der_to_ecdsa(c, sig, siglen, rs, &rslen)) {
            p11_op_abort(&c->op);
            return 0;
        }
        sig = rs;
    }
    sl = (CK_ULONG)rslen;
    if (c->digest_then_sign) {
        rv = digest_then(c, P11_VERIFY, h, &hlen);
        if (rv == CKR_OK)
            rv = p11_op_oneshot(&c->op, h, hlen, (unsigned char *)sig, &sl);
    } else {
        rv = p11_op_final(&c->op, (unsigned char *)sig, &sl);
    }
    if (rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE)
        return 0;
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    return 1;
}

static int sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen,
                                 size_t sigsize)
{
    sig_ctx *c = vctx;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen;

    if (sig == NULL) {
        *siglen = hp_key_size(c->key);
        return 1;
    }
    if (c->stream)
        return stream_sign_final(c, sig, siglen, sigsize);
    if (c->mdctx == NULL || !EVP_DigestFinal_ex(c->mdctx, h, &hlen))
        return 0;
    return sig_sign(c, sig, siglen, sigsize, h, hlen);
}

static int sig_digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
    sig_ctx *c = vctx;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen;

    if (c->stream)
        return stream_verify_final(c, sig, siglen);
    if (c->mdctx == NULL || !EVP_DigestFinal_ex(c->mdctx, h, &hlen))
        return 0;
    return sig_verify(c, sig, siglen, h, hlen);
}

/* AlgorithmIdentifier of the signature, for X.509 and CMS. */
static int algorithm_id(sig_ctx *c, unsigned char **der)
{
    X509_ALGOR *alg = X509_ALGOR_new();
    int sig_nid, len = -1;

    if (alg == NULL || c->md == NULL)
        goto end;
    if (c->is_rsa && c->pad == RSA_PKCS1_PSS_PADDING) {
        RSA_PSS_PARAMS *pss = RSA_PSS_PARAMS_new();
        const EVP_MD *mgf = c->mgf1 != NULL ? c->mgf1 : c->md;
        ASN1_STRING *os = NULL;
        int salt = pss_saltlen(c, 0);

        if (pss == NULL)
            goto end;
        if (md_nid(c->md) != NID_sha1) {
            pss->hashAlgorithm = X509_ALGOR_new();
            if (pss->hashAlgorithm != NULL)
                X509_ALGOR_set_md(pss->hashAlgorithm, c->md);
        }
        if (md_nid(mgf) != NID_sha1) {
            X509_ALGOR *mgfmd = X509_ALGOR_new();
            ASN1_STRING *packed = NULL;

            if (mgfmd != NULL) {
                X509_ALGOR_set_md(mgfmd, mgf);
                packed = ASN1_item_pack(mgfmd, ASN1_ITEM_rptr(X509_ALGOR), NULL);
                X509_ALGOR_free(mgfmd);
            }
            pss->maskGenAlgorithm = X509_ALGOR_new();
            if (packed != NULL && pss->maskGenAlgorithm != NULL)
                X509_ALGOR_set0(pss->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1),
                                V_ASN1_SEQUENCE, packed);
            else
                ASN1_STRING_free(packed);
        }
        if (salt != 20) {
            pss->saltLength = ASN1_INTEGER_new();
            if (pss->saltLength != NULL)
                ASN1_INTEGER_set(pss->saltLength, salt);
        }
        os = ASN1_item_pack(pss, ASN1_ITEM_rptr(RSA_PSS_PARAMS), NULL);
        RSA_PSS_PARAMS_free(pss);
        if (os == NULL)
            goto end;
        X509_ALGOR_set0(alg, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, os);
    } else if (c->is_rsa && c->pad == RSA_PKCS1_PADDING) {
        if (!OBJ_find_sigid_by_algs(&sig_nid, md_nid(c->md), NID_rsaEncryption))
            goto end;
        X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), V_ASN1_NULL, NULL);
    } else if (!c->is_rsa) {
        if (!OBJ_find_sigid_by_algs(&sig_nid, md_nid(c->md), NID_X9_62_id_ecPublicKey))
            goto end;
        X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), V_ASN1_UNDEF, NULL);
    } else {
        goto end;
    }
    *der = NULL;
    len = i2d_X509_ALGOR(alg, der);
end:
    X509_ALGOR_free(alg);
    return len;
}

static int sig_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    sig_ctx *c = vctx;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) != NULL) {
        unsigned char *der = NULL;
        int len = algorithm_id(c, &der);
        int ok = len > 0 && OSSL_PARAM_set_octet_string(p, der, (size_t)len);

        OPENSSL_free(der);
        if (!ok)
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, c->md != NULL ? EVP_MD_get0_name(c->md) : ""))
        return 0;
    if (!c->is_rsa)
        return 1;
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
        if (p->data_type == OSSL_PARAM_INTEGER
                ? !OSSL_PARAM_set_int(p, c->pad)
                : !OSSL_PARAM_set_utf8_string(p, hp_rsa_pad_name(c->pad, HP_PAD_SIGN)))
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
        if (p->data_type == OSSL_PARAM_INTEGER) {
            if (!OSSL_PARAM_set_int(p, c->saltlen))
                return 0;
        } else {
            const char *s =
                c->saltlen == RSA_PSS_SALTLEN_DIGEST ? OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST
                : c->saltlen == RSA_PSS_SALTLEN_MAX  ? OSSL_PKEY_RSA_PSS_SALT_LEN_MAX
                : c->saltlen == RSA_PSS_SALTLEN_AUTO ? OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO
                                                     : NULL;
            char num[16];

            if (s == NULL) {
                snprintf(num, sizeof(num), "%d", c->saltlen);
                s = num;
            }
            if (!OSSL_PARAM_set_utf8_string(p, s))
                return 0;
        }
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        const EVP_MD *mgf = c->mgf1 != NULL ? c->mgf1 : c->md;

        if (!OSSL_PARAM_set_utf8_string(p, mgf != NULL ? EVP_MD_get0_name(mgf) : ""))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM *sig_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_END,
    };
    return gettable;
}

static int parse_pad(sig_ctx *c, const OSSL_PARAM *p)
{
    int pad;

    if (p->data_type == OSSL_PARAM_INTEGER)
        return OSSL_PARAM_get_int(p, &c->pad);
    if (p->data_type == OSSL_PARAM_UTF8_STRING &&
        (pad = hp_rsa_pad_by_name(p->data, HP_PAD_SIGN)) >= 0) {
        c->pad = pad;
        return 1;
    }
    hp_raise(c->pctx, HP_R_BAD_PARAM, "unknown RSA padding mode");
    return 0;
}

static int parse_saltlen(sig_ctx *c, const OSSL_PARAM *p)
{
    const char *s;
    char *end;
    long v;

    if (p->data_type == OSSL_PARAM_INTEGER)
        return OSSL_PARAM_get_int(p, &c->saltlen);
    if (p->data_type != OSSL_PARAM_UTF8_STRING)
        return 0;
    s = p->data;
    if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0) {
        c->saltlen = RSA_PSS_SALTLEN_DIGEST;
    } else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0) {
        c->saltlen = RSA_PSS_SALTLEN_MAX;
    } else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0) {
        c->saltlen = RSA_PSS_SALTLEN_AUTO;
    } else {
        v = strtol(s, &end, 10);
        if (*s == '\0' || *end != '\0' || v < RSA_PSS_SALTLEN_MAX || v > 1024) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "PSS salt length \"%s\"", s);
            return 0;
        }
        c->saltlen = (int)v;
    }
    return 1;
}

static int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    sig_ctx *c = vctx;
    const OSSL_PARAM *p;
    const char *name;

    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) || !set_md(c, name, &c->md))
            return 0;
    }
    if (!c->is_rsa)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL &&
        !parse_pad(c, p))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL &&
        !parse_saltlen(c, p))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) || !set_md(c, name, &c->mgf1))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM *sig_rsa_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

static const OSSL_PARAM *sig_ec_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

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
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT,                                         \
         (void (*)(void))sig_digest_verify_init},                                        \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))sig_digest_update},   \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL,                                        \
         (void (*)(void))sig_digest_verify_final},                                       \
        {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))sig_get_ctx_params},        \
        {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS,                                        \
         (void (*)(void))sig_gettable_ctx_params},                                       \
    {                                                                                    \
        OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))sig_set_ctx_params           \
    }

const OSSL_DISPATCH hp_rsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))sig_rsa_newctx},
    SIGNATURE_COMMON,
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))sig_rsa_settable},
    {0, NULL},
};

const OSSL_DISPATCH hp_ecdsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))sig_ec_newctx},
    SIGNATURE_COMMON,
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))sig_ec_settable},
    {0, NULL},
};
