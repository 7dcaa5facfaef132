/* ECDSA signatures with token keys (CKM_ECDSA, or CKM_ECDSA_SHA* when the
 * stream runs in the token). The token speaks r||s; OpenSSL and X.509 speak
 * DER ECDSA-Sig-Value: the conversions both ways are here. The digest-sign
 * machinery is hp_signature.c's. */
#include "hp_signature_local.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <string.h>

static OSSL_FUNC_signature_newctx_fn sig_ec_newctx;
static OSSL_FUNC_signature_settable_ctx_params_fn sig_ec_settable;

static void *sig_ec_newctx(void *provctx, const char *propq)
{
    return sig_newctx(provctx, 0);
}

/* One DER INTEGER of the unsigned big-endian v (n bytes): minimal, with a
 * 0x00 first when the top bit is set, so that it stays positive. */
static size_t der_uint(unsigned char *out, const unsigned char *v, size_t n)
{
    size_t pad;

    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    pad = (v[0] & 0x80) != 0;
    if (out != NULL) {
        out[0] = 0x02;
        out[1] = (unsigned char)(n + pad);
        out[2] = 0x00;
        memcpy(out + 2 + pad, v, n);
    }
    return 2 + pad + n;
}

/* r||s from the token → DER ECDSA-Sig-Value, the bytes i2d_ECDSA_SIG writes.
 * Written here rather than through ECDSA_SIG and two BIGNUMs: those cost
 * six allocations per signature, a tenth of what the provider itself spends
 * on an ECDSA signature. */
int sig_ecdsa_to_der(const unsigned char *rs, size_t rslen, unsigned char *out,
                     size_t *outlen, size_t outsize)
{
    size_t n = rslen / 2, body, head;

    /* Lengths in one byte each (P-521 needs 66 + 1, 2 * 69 in all). */
    if (n == 0 || rslen % 2 != 0 || n > 120)
        return 0;
    body = der_uint(NULL, rs, n) + der_uint(NULL, rs + n, n);
    head = body < 0x80 ? 2 : 3;
    if (head + body > outsize)
        return 0;
    out[0] = 0x30;
    if (head == 2) {
        out[1] = (unsigned char)body;
    } else {
        out[1] = 0x81;
        out[2] = (unsigned char)body;
    }
    body = der_uint(out + head, rs, n);
    der_uint(out + head + body, rs + n, n);
    *outlen = head + body + der_uint(NULL, rs + n, n);
    return 1;
}

/* DER ECDSA-Sig-Value → r||s of the key's size; 0 if malformed. */
int sig_ecdsa_from_der(const sig_ctx *c, const unsigned char *der, size_t len,
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

/* AlgorithmIdentifier of the signature, for X.509 and CMS. */
int sig_ecdsa_algorithm_id(sig_ctx *c, X509_ALGOR *alg)
{
    int sig_nid;

    if (!OBJ_find_sigid_by_algs(&sig_nid, sig_md_nid(c->md), NID_X9_62_id_ecPublicKey))
        return 0;
    X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), V_ASN1_UNDEF, NULL);
    return 1;
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

const OSSL_DISPATCH hp_ecdsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))sig_ec_newctx},
    SIGNATURE_COMMON,
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))sig_ec_settable},
    {0, NULL},
};
