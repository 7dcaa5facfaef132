/* RSA signatures with token keys: PKCS#1 v1.5 (the DigestInfo prefixed
 * here, CKM_RSA_PKCS), PSS (CKM_RSA_PKCS_PSS with CK_RSA_PKCS_PSS_PARAMS),
 * no padding (CKM_RSA_X_509) and X9.31; their parameters and the
 * AlgorithmIdentifier they put in certificates. The digest-sign machinery
 * is hp_signature.c's. */
#include "hp_signature_local.h"

#include "hp_digest.h"

#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_signature_newctx_fn sig_rsa_newctx;
static OSSL_FUNC_signature_settable_ctx_params_fn sig_rsa_settable;
static OSSL_FUNC_signature_verify_recover_init_fn sig_rsa_verify_recover_init;
static OSSL_FUNC_signature_verify_recover_fn sig_rsa_verify_recover;

static void *sig_rsa_newctx(void *provctx, const char *propq)
{
    return sig_newctx(provctx, 1);
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

void sig_rsa_pss_params(const sig_ctx *c, CK_RSA_PKCS_PSS_PARAMS *pss)
{
    const EVP_MD *mgf = c->mgf1 != NULL ? c->mgf1 : c->md;

    pss->hashAlg = hp_digest_mech(sig_md_nid(c->md));
    pss->mgf = hp_digest_mgf1(sig_md_nid(mgf));
    pss->sLen = (CK_ULONG)pss_saltlen(c, 0);
}

int sig_rsa_prepare(sig_ctx *c, const unsigned char *tbs, size_t tbslen,
                    struct prepared *p)
{
    switch (c->pad) {
    case RSA_PKCS1_PADDING:
        p->mech.mechanism = CKM_RSA_PKCS;
        if (c->md != NULL) {
            const hp_digest *d = hp_digest_by_nid(sig_md_nid(c->md));

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
        sig_rsa_pss_params(c, &p->pss);
        if (p->pss.hashAlg == CK_UNAVAILABLE_INFORMATION ||
            p->pss.mgf == CK_UNAVAILABLE_INFORMATION) {
            hp_raise(c->pctx, HP_R_UNSUPPORTED,
                     "RSA-PSS with digest %s and MGF1 digest %s", EVP_MD_get0_name(c->md),
                     EVP_MD_get0_name(mgf));
            return 0;
        }
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

/* AlgorithmIdentifier of the signature, for X.509 and CMS. */
int sig_rsa_algorithm_id(sig_ctx *c, X509_ALGOR *alg)
{
    int sig_nid;

    if (c->pad == RSA_PKCS1_PSS_PADDING) {
        RSA_PSS_PARAMS *pss = RSA_PSS_PARAMS_new();
        const EVP_MD *mgf = c->mgf1 != NULL ? c->mgf1 : c->md;
        ASN1_STRING *os = NULL;
        int salt = pss_saltlen(c, 0);

        if (pss == NULL)
            return 0;
        if (sig_md_nid(c->md) != NID_sha1) {
            pss->hashAlgorithm = X509_ALGOR_new();
            if (pss->hashAlgorithm != NULL)
                X509_ALGOR_set_md(pss->hashAlgorithm, c->md);
        }
        if (sig_md_nid(mgf) != NID_sha1) {
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
            return 0;
        X509_ALGOR_set0(alg, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, os);
        return 1;
    }
    if (c->pad == RSA_PKCS1_PADDING) {
        if (!OBJ_find_sigid_by_algs(&sig_nid, sig_md_nid(c->md), NID_rsaEncryption))
            return 0;
        X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), V_ASN1_NULL, NULL);
        return 1;
    }
    return 0;
}

int sig_rsa_get_ctx_params(sig_ctx *c, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

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

int sig_rsa_set_ctx_params(sig_ctx *c, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;
    const char *name;

    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL &&
        !parse_pad(c, p))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL &&
        !parse_saltlen(c, p))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) || !sig_set_md(c, name, &c->mgf1))
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

/* Verify-recover (`pkeyutl -verifyrecover`) needs only the public key, and
 * tokens seldom offer C_VerifyRecover: it is done on the host, by the
 * default provider in our library context, with the context's padding and
 * digest. */
static int sig_rsa_verify_recover_init(void *vctx, void *key, const OSSL_PARAM params[])
{
    return sig_verify_init(vctx, key, params);
}

static int sig_rsa_verify_recover(void *vctx, unsigned char *rout, size_t *routlen,
                                  size_t routsize, const unsigned char *sig,
                                  size_t siglen)
{
    sig_ctx *c = vctx;
    EVP_PKEY *pub;
    EVP_PKEY_CTX *pc = NULL;
    int ok = 0;

    if (rout == NULL) {
        *routlen = hp_key_size(c->key);
        return 1;
    }
    if ((pub = hp_key_public_pkey(c->key)) == NULL) {
        hp_raise(c->pctx, HP_R_NOT_FOUND, "the public key of %s is not known",
                 c->key->p11 != NULL ? c->key->p11->name : "the key");
        return 0;
    }
    *routlen = routsize;
    pc = EVP_PKEY_CTX_new_from_pkey(c->pctx->libctx, pub, NULL);
    ok = pc != NULL && EVP_PKEY_verify_recover_init(pc) > 0 &&
         EVP_PKEY_CTX_set_rsa_padding(pc, c->pad) > 0 &&
         (c->md == NULL || EVP_PKEY_CTX_set_signature_md(pc, c->md) > 0) &&
         EVP_PKEY_verify_recover(pc, rout, routlen, sig, siglen) > 0;
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pub);
    /* The default provider's reason ("padding check failed", ...) is on the
     * error queue already. */
    return ok;
}

const OSSL_DISPATCH hp_rsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))sig_rsa_newctx},
    SIGNATURE_COMMON,
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))sig_rsa_settable},
    {OSSL_FUNC_SIGNATURE_VERIFY_RECOVER_INIT,
     (void (*)(void))sig_rsa_verify_recover_init},
    {OSSL_FUNC_SIGNATURE_VERIFY_RECOVER, (void (*)(void))sig_rsa_verify_recover},
    {0, NULL},
};
