/* Key management for token keys: RSA, RSA-PSS and EC.
 *
 * A token key is an opaque handle: its private half never leaves the token.
 * Its public half is exported so that `openssl pkey -pubout`, certificate
 * matching and verification work. A private key refuses export whenever the
 * private half is asked for: OpenSSL 3.0 asks for everything when it moves a
 * key to another provider, and a public-only copy in the default provider
 * would then be asked to sign and fail. Import accepts public keys only, for
 * comparison with a certificate's key. EC keys may also be made in memory
 * (hp_keymgmt_gen.c), or hold only a curve and then a peer's point (set_params):
 * libssl's key shares when hsmprov is preferred. */
#include "hp_provider.h"

#include "hp_digest.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_keymgmt_new_fn km_rsa_new, km_rsapss_new, km_ec_new, km_ed25519_new;
static OSSL_FUNC_keymgmt_free_fn km_free;
static OSSL_FUNC_keymgmt_load_fn km_load;
static OSSL_FUNC_keymgmt_has_fn km_has;
static OSSL_FUNC_keymgmt_match_fn km_match;
static OSSL_FUNC_keymgmt_import_fn km_import;
static OSSL_FUNC_keymgmt_import_types_fn km_rsa_types, km_ec_types;
static OSSL_FUNC_keymgmt_export_fn km_export;
static OSSL_FUNC_keymgmt_get_params_fn km_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn km_rsa_gettable, km_ec_gettable;
static OSSL_FUNC_keymgmt_query_operation_name_fn km_rsa_opname, km_ec_opname;
static OSSL_FUNC_keymgmt_set_params_fn km_ec_set_params;
static OSSL_FUNC_keymgmt_settable_params_fn km_ec_settable;

static hp_key *key_new(hp_provctx *pctx, int kind)
{
    hp_key *k = calloc(1, sizeof(*k));

    if (k != NULL) {
        k->pctx = pctx;
        k->kind = kind;
    }
    return k;
}

static void *km_rsa_new(void *provctx)
{
    return key_new(provctx, HP_KEY_RSA);
}

static void *km_rsapss_new(void *provctx)
{
    return key_new(provctx, HP_KEY_RSA_PSS);
}

static void *km_ec_new(void *provctx)
{
    return key_new(provctx, HP_KEY_EC);
}

static void *km_ed25519_new(void *provctx)
{
    return key_new(provctx, HP_KEY_ED25519);
}

/* EC and Ed25519 keys: the public half is a point (or a 32-byte string). */
static int has_point(const hp_key *k)
{
    return k->kind == HP_KEY_EC || k->kind == HP_KEY_ED25519;
}

/* CKA_EC_PARAMS of an Ed25519 key: the OID 1.3.101.112, or (PKCS#11 3.0
 * drafts, SoftHSM2) the printable string "edwards25519". */
static int is_ed25519_params(const unsigned char *p, size_t len)
{
    static const unsigned char oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
    static const unsigned char name[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
                                         'd',  's',  '2', '5', '5', '1', '9'};

    return (len == sizeof(oid) && memcmp(p, oid, len) == 0) ||
           (len == sizeof(name) && memcmp(p, name, len) == 0);
}

static void km_free(void *keydata)
{
    hp_key *k = keydata;

    if (k == NULL)
        return;
    p11_key_free(k->p11);
    EVP_PKEY_free(k->soft);
    free(k->n);
    free(k->e);
    free(k->point);
    free(k);
}

/* An RSA key whose CKA_ALLOWED_MECHANISMS has PSS signatures and no other
 * kind: OpenSSL must see an RSA-PSS key, or TLS picks PKCS#1 v1.5 for it. */
static int rsa_pss_only(const p11_key *k)
{
    int pss = 0;

    if (k->type != CKK_RSA || k->allowed == NULL)
        return 0;
    for (CK_ULONG i = 0; i < k->n_allowed; i++) {
        switch (k->allowed[i]) {
        case CKM_RSA_PKCS_PSS:
        case CKM_SHA1_RSA_PKCS_PSS:
        case CKM_SHA224_RSA_PKCS_PSS:
        case CKM_SHA256_RSA_PKCS_PSS:
        case CKM_SHA384_RSA_PKCS_PSS:
        case CKM_SHA512_RSA_PKCS_PSS:
            pss = 1;
            break;
        case CKM_RSA_PKCS:
        case CKM_RSA_X_509:
        case CKM_RSA_X9_31:
        case CKM_SHA1_RSA_PKCS:
        case CKM_SHA224_RSA_PKCS:
        case CKM_SHA256_RSA_PKCS:
        case CKM_SHA384_RSA_PKCS:
        case CKM_SHA512_RSA_PKCS:
            return 0;
        }
    }
    return pss;
}

/* The digest k's allowed mechanisms bind its signatures to, if one: no raw
 * signature mechanism is allowed, and the hash-and-sign ones all have the
 * same digest. */
static void bound_digest(const p11_key *pk, int kind, char *out, size_t len)
{
    static const int nids[] = {NID_sha1, NID_sha224, NID_sha256, NID_sha384, NID_sha512};
    const char *found = NULL;

    out[0] = '\0';
    if (pk->allowed == NULL || kind == HP_KEY_ED25519)
        return;
    if (kind == HP_KEY_EC ? p11_key_allows(pk, CKM_ECDSA)
                          : p11_key_allows(pk, CKM_RSA_PKCS_PSS) ||
                                (kind == HP_KEY_RSA && p11_key_allows(pk, CKM_RSA_PKCS)))
        return;
    for (size_t i = 0; i < sizeof(nids) / sizeof(nids[0]); i++) {
        const hp_digest *d = hp_digest_by_nid(nids[i]);

        if (d == NULL)
            continue;
        if (kind == HP_KEY_EC
                ? p11_key_allows(pk, d->ecdsa)
                : p11_key_allows(pk, d->rsa_pss) ||
                      (kind == HP_KEY_RSA && p11_key_allows(pk, d->rsa_pkcs))) {
            if (found != NULL)
                return;
            found = OBJ_nid2sn(nids[i]);
        }
    }
    if (found != NULL)
        snprintf(out, len, "%s", found);
}

const char *hp_key_type_name(const p11_key *k)
{
    switch (k->type) {
    case CKK_RSA:
        return rsa_pss_only(k) ? "RSA-PSS" : "RSA";
    case CKK_EC:
        return "EC";
    case CKK_EC_EDWARDS:
        return is_ed25519_params(k->ec_params, k->ec_params_len) ? "ED25519" : NULL;
    }
    return NULL;
}

static unsigned char *dup_bytes(const unsigned char *p, size_t n)
{
    unsigned char *d = malloc(n ? n : 1);

    if (d != NULL && n > 0)
        memcpy(d, p, n);
    return d;
}

/* CKA_EC_POINT is a DER OCTET STRING around the point; some tokens store the
 * bare point. Returns a pointer into der and the point's length. */
static const unsigned char *unwrap_point(const unsigned char *der, size_t len,
                                         size_t *plen)
{
    if (len >= 2 && der[0] == 0x04) {
        size_t hdr = 2, n = der[1];

        if (n == 0x81 && len >= 3) {
            n = der[2];
            hdr = 3;
        } else if (n == 0x82 && len >= 4) {
            n = ((size_t)der[2] << 8) | der[3];
            hdr = 4;
        } else if (n >= 0x80) {
            n = 0;
        }
        if (n > 0 && hdr + n == len) {
            *plen = n;
            return der + hdr;
        }
    }
    *plen = len;
    return der;
}

static int curve_from_params(hp_key *k, const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    ASN1_OBJECT *oid = d2i_ASN1_OBJECT(NULL, &p, (long)len);
    int nid = oid != NULL ? OBJ_obj2nid(oid) : NID_undef;
    EC_GROUP *g;

    ASN1_OBJECT_free(oid);
    if (nid == NID_undef)
        return 0;
    g = EC_GROUP_new_by_curve_name_ex(k->pctx->libctx, NULL, nid);
    if (g == NULL)
        return 0;
    k->bits = EC_GROUP_order_bits(g);
    EC_GROUP_free(g);
    snprintf(k->group, sizeof(k->group), "%s", OBJ_nid2sn(nid));
    return 1;
}

hp_key *hp_key_from_p11(hp_provctx *pctx, p11_key *pk)
{
    hp_key *k;

    if (hp_key_type_name(pk) == NULL) {
        hp_raise(pctx, HP_R_UNSUPPORTED, "%s: key type 0x%lx is not supported", pk->name,
                 (unsigned long)pk->type);
        return NULL;
    }
    k = key_new(pctx, pk->type == CKK_RSA
                          ? (rsa_pss_only(pk) ? HP_KEY_RSA_PSS : HP_KEY_RSA)
                      : pk->type == CKK_EC ? HP_KEY_EC
                                           : HP_KEY_ED25519);
    if (k == NULL)
        return NULL;
    bound_digest(pk, k->kind, k->mandatory_md, sizeof(k->mandatory_md));
    if (pk->type == CKK_RSA) {
        k->n = dup_bytes(pk->modulus, pk->modulus_len);
        k->n_len = pk->modulus_len;
        k->e = dup_bytes(pk->exponent, pk->exponent_len);
        k->e_len = pk->exponent_len;
        k->bits = (int)pk->bits;
        if (k->n == NULL || k->e == NULL)
            goto err;
    } else {
        if (k->kind == HP_KEY_ED25519) {
            k->bits = 256;
        } else if (!curve_from_params(k, pk->ec_params, pk->ec_params_len)) {
            hp_raise(pctx, HP_R_UNSUPPORTED,
                     "%s: CKA_EC_PARAMS is not a named curve known "
                     "to OpenSSL",
                     pk->name);
            goto err;
        }
        if (pk->ec_point != NULL) {
            size_t plen;
            const unsigned char *pt = unwrap_point(pk->ec_point, pk->ec_point_len, &plen);

            k->point = dup_bytes(pt, plen);
            k->point_len = plen;
            if (k->point == NULL)
                goto err;
        }
    }
    p11_key_up(pk);
    k->p11 = pk;
    return k;
err:
    km_free(k);
    return NULL;
}

hp_key *hp_key_ec_software(hp_provctx *pctx, int nid, EVP_PKEY *soft)
{
    hp_key *k = key_new(pctx, HP_KEY_EC);
    EC_GROUP *grp = EC_GROUP_new_by_curve_name_ex(pctx->libctx, NULL, nid);
    size_t len = 0;

    if (k == NULL || grp == NULL)
        goto err;
    k->bits = EC_GROUP_order_bits(grp);
    EC_GROUP_free(grp);
    grp = NULL;
    snprintf(k->group, sizeof(k->group), "%s", OBJ_nid2sn(nid));
    if (soft != NULL) {
        if (!EVP_PKEY_get_octet_string_param(soft, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                             NULL, 0, &len) ||
            (k->point = malloc(len)) == NULL ||
            !EVP_PKEY_get_octet_string_param(soft, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                             k->point, len, &k->point_len))
            goto err;
        k->soft = soft;
    }
    return k;
err:
    EC_GROUP_free(grp);
    km_free(k);
    return NULL;
}

const char *hp_key_name(const hp_key *k)
{
    if (k->p11 != NULL)
        return k->p11->name;
    return k->soft != NULL ? "an EC key made in memory (no pkcs11_uri)"
                           : "a public key from software";
}

static void *km_load(const void *reference, size_t reference_sz)
{
    void *ref[3];
    hp_key *k;

    /* The store passes {p11_key *, hp_provctx *, public only}: see hp_store.c. */
    if (reference == NULL || reference_sz != sizeof(ref))
        return NULL;
    memcpy(ref, reference, sizeof(ref));
    k = hp_key_from_p11(ref[1], ref[0]);
    if (k != NULL)
        k->public_only = ref[2] != NULL;
    return k;
}

static int has_public(const hp_key *k)
{
    return has_point(k) ? k->point != NULL : k->n != NULL;
}

static int has_private(const hp_key *k)
{
    return k->soft != NULL ||
           (k->p11 != NULL && !k->public_only && k->p11->priv != CK_INVALID_HANDLE);
}

static int km_has(const void *keydata, int selection)
{
    const hp_key *k = keydata;

    if (k == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !has_private(k))
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) && !has_public(k))
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) && k->kind == HP_KEY_EC &&
        k->group[0] == '\0')
        return 0;
    return 1;
}

static int bytes_eq(const unsigned char *a, size_t alen, const unsigned char *b,
                    size_t blen)
{
    /* Big-endian numbers from different sources may differ in leading zeros. */
    while (alen > 0 && *a == 0)
        a++, alen--;
    while (blen > 0 && *b == 0)
        b++, blen--;
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static int km_match(const void *keydata1, const void *keydata2, int selection)
{
    const hp_key *a = keydata1, *b = keydata2;

    /* RSA and RSA-PSS keys compare by their numbers; others by kind. */
    if (a->kind != b->kind && (has_point(a) || has_point(b)))
        return 0;
    if (a->kind == HP_KEY_EC &&
        (selection &
         (OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS | OSSL_KEYMGMT_SELECT_KEYPAIR)) &&
        strcmp(a->group, b->group) != 0)
        return 0;
    if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) {
        if (!has_public(a) || !has_public(b))
            return 0;
        if (has_point(a))
            return a->point_len == b->point_len &&
                   memcmp(a->point, b->point, a->point_len) == 0;
        return bytes_eq(a->n, a->n_len, b->n, b->n_len) &&
               bytes_eq(a->e, a->e_len, b->e, b->e_len);
    }
    return 1;
}

static int get_bn_bytes(const OSSL_PARAM *params, const char *name, unsigned char **out,
                        size_t *len)
{
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, name);
    BIGNUM *bn = NULL;
    int ok;

    if (p == NULL || !OSSL_PARAM_get_BN(p, &bn))
        return 0;
    *len = BN_num_bytes(bn);
    *out = malloc(*len ? *len : 1);
    ok = *out != NULL && BN_bn2bin(bn, *out) >= 0;
    BN_free(bn);
    return ok;
}

/* Domain parameters alone: EVP_PKEY_copy_parameters from a token key
 * makes a key of ours and imports them into it. Only EC keys have any (the
 * curve); for RSA and Ed25519 there is nothing to import. */
static int import_domain(hp_key *k, int selection, const OSSL_PARAM params[])
{
    const OSSL_PARAM *g;
    char *gp = k->group;
    int nid;
    EC_GROUP *grp;

    if (!(selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) || k->kind != HP_KEY_EC)
        return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0;
    g = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME);
    if (g == NULL || !OSSL_PARAM_get_utf8_string(g, &gp, sizeof(k->group)))
        return 0;
    nid = OBJ_sn2nid(k->group);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(k->group);
    grp = nid != NID_undef ? EC_GROUP_new_by_curve_name_ex(k->pctx->libctx, NULL, nid)
                           : NULL;
    if (grp == NULL) {
        k->group[0] = '\0';
        return 0;
    }
    k->bits = EC_GROUP_order_bits(grp);
    snprintf(k->group, sizeof(k->group), "%s", OBJ_nid2sn(nid));
    EC_GROUP_free(grp);
    return 1;
}

static int km_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    hp_key *k = keydata;

    if (k == NULL || k->p11 != NULL || k->soft != NULL)
        return 0;
    if (!(selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY))
        return import_domain(k, selection, params);
    /* Private material never enters hsmprov: software keys stay with the
     * default provider. */
    if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL ||
        OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL)
        return 0;
    if (k->kind == HP_KEY_ED25519) {
        const OSSL_PARAM *pub = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY);
        const void *pv;
        size_t plen;

        if (pub == NULL || !OSSL_PARAM_get_octet_string_ptr(pub, &pv, &plen) ||
            plen != 32)
            return 0;
        k->bits = 256;
        k->point = dup_bytes(pv, plen);
        k->point_len = plen;
        return k->point != NULL;
    }
    if (k->kind == HP_KEY_EC) {
        const OSSL_PARAM *g = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME);
        const OSSL_PARAM *pub = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY);
        char *gp = k->group;
        const void *pv;
        size_t plen;
        int nid;
        EC_GROUP *grp;

        if (g == NULL || pub == NULL ||
            !OSSL_PARAM_get_utf8_string(g, &gp, sizeof(k->group)))
            return 0;
        if (!OSSL_PARAM_get_octet_string_ptr(pub, &pv, &plen))
            return 0;
        nid = OBJ_sn2nid(k->group);
        if (nid == NID_undef)
            nid = EC_curve_nist2nid(k->group);
        grp = nid != NID_undef ? EC_GROUP_new_by_curve_name_ex(k->pctx->libctx, NULL, nid)
                               : NULL;
        if (grp == NULL)
            return 0;
        k->bits = EC_GROUP_order_bits(grp);
        snprintf(k->group, sizeof(k->group), "%s", OBJ_nid2sn(nid));
        EC_GROUP_free(grp);
        k->point = dup_bytes(pv, plen);
        k->point_len = plen;
        return k->point != NULL;
    }
    if (!get_bn_bytes(params, OSSL_PKEY_PARAM_RSA_N, &k->n, &k->n_len) ||
        !get_bn_bytes(params, OSSL_PKEY_PARAM_RSA_E, &k->e, &k->e_len))
        return 0;
    {
        BIGNUM *n = BN_bin2bn(k->n, (int)k->n_len, NULL);

        k->bits = n != NULL ? BN_num_bits(n) : 0;
        BN_free(n);
    }
    return 1;
}

static const OSSL_PARAM rsa_types[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM ec_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *km_rsa_types(int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) ? rsa_types : NULL;
}

static const OSSL_PARAM ec_domain_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *km_ec_types(int selection)
{
    if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
        return ec_types;
    return (selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) ? ec_domain_types : NULL;
}

static int km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    hp_key *k = keydata;
    OSSL_PARAM_BLD *bld;
    OSSL_PARAM *params = NULL;
    BIGNUM *n = NULL, *e = NULL;
    int ok = 0;

    if (k == NULL)
        return 0;
    /* See the head of this file: never a public-only copy of a private key. */
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && has_private(k))
        return 0;
    /* A key holding only domain parameters (EVP_PKEY_copy_parameters)
     * exports those. */
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
            ? !has_public(k)
            : k->kind == HP_KEY_EC && k->group[0] == '\0')
        return 0;
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL)
        return 0;
    if (k->kind == HP_KEY_ED25519) {
        if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) &&
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, k->point,
                                              k->point_len))
            goto end;
    } else if (k->kind == HP_KEY_EC) {
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, k->group,
                                             0))
            goto end;
        if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) &&
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, k->point,
                                              k->point_len))
            goto end;
    } else if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) {
        n = BN_bin2bn(k->n, (int)k->n_len, NULL);
        e = BN_bin2bn(k->e, (int)k->e_len, NULL);
        if (n == NULL || e == NULL ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            goto end;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    ok = params != NULL && cb(params, cbarg);
end:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return ok;
}

struct fromdata_arg {
    const hp_key *k;
    EVP_PKEY *pkey;
};

static int fromdata_cb(const OSSL_PARAM params[], void *arg)
{
    struct fromdata_arg *fa = arg;
    EVP_PKEY_CTX *ctx =
        EVP_PKEY_CTX_new_from_name(fa->k->pctx->libctx,
                                   fa->k->kind == HP_KEY_EC        ? "EC"
                                   : fa->k->kind == HP_KEY_ED25519 ? "ED25519"
                                   : fa->k->kind == HP_KEY_RSA_PSS ? "RSA-PSS"
                                                                   : "RSA",
                                   NULL);
    int ok =
        ctx != NULL && EVP_PKEY_fromdata_init(ctx) > 0 &&
        EVP_PKEY_fromdata(ctx, &fa->pkey, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) > 0;

    EVP_PKEY_CTX_free(ctx);
    return ok;
}

EVP_PKEY *hp_key_public_pkey(const hp_key *k)
{
    struct fromdata_arg fa = {k, NULL};

    /* Public half only, whatever the key holds: this is not an export of a
     * private key, so the rule at the head of this file does not apply. */
    if (!has_public(k))
        return NULL;
    if (!km_export((void *)k,
                   OSSL_KEYMGMT_SELECT_PUBLIC_KEY | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS,
                   fromdata_cb, &fa)) {
        EVP_PKEY_free(fa.pkey);
        return NULL;
    }
    return fa.pkey;
}

static int der_len_len(size_t n)
{
    return n < 128 ? 1 : n < 256 ? 2 : 3;
}

size_t hp_key_size(const hp_key *k)
{
    if (k->kind == HP_KEY_ED25519)
        return 64;
    if (k->kind == HP_KEY_EC) {
        /* DER ECDSA-Sig-Value of two integers of the order's size. */
        size_t i = (size_t)(k->bits + 7) / 8 + 1;
        size_t int_len = 1 + der_len_len(i) + i;
        size_t seq = 2 * int_len;

        return 1 + der_len_len(seq) + seq;
    }
    return (size_t)(k->bits + 7) / 8;
}

/* Whether the big-endian number in is below k's modulus; 1 when the
 * modulus is not known (the token decides then). */
static int below_modulus(const hp_key *k, const unsigned char *in, size_t len)
{
    const unsigned char *n = k->n;
    size_t n_len = k->n_len;

    if (n == NULL)
        return 1;
    while (len > 0 && *in == 0)
        in++, len--;
    while (n_len > 0 && *n == 0)
        n++, n_len--;
    if (len != n_len)
        return len < n_len;
    return memcmp(in, n, len) < 0;
}

int hp_rsa_raw_input_ok(const hp_key *k, const unsigned char *in, size_t inlen, int raise)
{
    size_t mlen = (size_t)(k->bits + 7) / 8;
    const char *why;

    /* The reasons are those of OpenSSL's RSA (RSA_padding_add_none, then the
     * range check of the RSA operation), so that a token key refuses what a
     * software key refuses, with the same words. */
    if (inlen > mlen)
        why = "data too large for key size";
    else if (inlen < mlen)
        why = "data too small for key size";
    else if (!below_modulus(k, in, inlen))
        why = "data too large for modulus";
    else
        return 1;
    if (!raise)
        return 0;
    if (inlen == mlen)
        hp_raise(k->pctx, HP_R_BAD_PARAM,
                 "%s: RSA without padding takes a number below the modulus (%s)", why,
                 k->p11 != NULL ? k->p11->name : "the key");
    else
        hp_raise(k->pctx, HP_R_BAD_PARAM,
                 "%s: RSA without padding takes exactly %zu bytes (the modulus' length), "
                 "got %zu (%s)",
                 why, mlen, inlen, k->p11 != NULL ? k->p11->name : "the key");
    return 0;
}

static int km_get_params(void *keydata, OSSL_PARAM params[])
{
    hp_key *k = keydata;
    OSSL_PARAM *p;

    if (k == NULL)
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_BITS)) != NULL &&
        !OSSL_PARAM_set_int(p, k->bits))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_SECURITY_BITS)) != NULL &&
        !OSSL_PARAM_set_int(p,
                            has_point(k) ? k->bits / 2 : BN_security_bits(k->bits, -1)))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE)) != NULL &&
        !OSSL_PARAM_set_int(p, (int)hp_key_size(k)))
        return 0;
    if (k->kind == HP_KEY_ED25519) {
        /* EdDSA hashes inside the signature: no digest may be chosen. */
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MANDATORY_DIGEST)) != NULL &&
            !OSSL_PARAM_set_utf8_string(p, ""))
            return 0;
        if (k->point != NULL &&
            (p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY)) != NULL &&
            !OSSL_PARAM_set_octet_string(p, k->point, k->point_len))
            return 0;
        if (k->point != NULL &&
            (p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PUB_KEY)) != NULL &&
            !OSSL_PARAM_set_octet_string(p, k->point, k->point_len))
            return 0;
        return 1;
    }
    /* A key its token binds to one digest says so: TLS then offers only
     * signature algorithms with that digest for it. */
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, k->mandatory_md[0] != '\0' ? k->mandatory_md
                                                                  : "SHA256"))
        return 0;
    if (k->mandatory_md[0] != '\0' &&
        (p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MANDATORY_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, k->mandatory_md))
        return 0;
    if (k->kind == HP_KEY_EC) {
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL &&
            !OSSL_PARAM_set_utf8_string(p, k->group))
            return 0;
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_EC_ENCODING)) != NULL &&
            !OSSL_PARAM_set_utf8_string(p, OSSL_PKEY_EC_ENCODING_GROUP))
            return 0;
        if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT)) !=
                NULL &&
            !OSSL_PARAM_set_utf8_string(
                p, OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED))
            return 0;
        if (k->point != NULL) {
            if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY)) !=
                    NULL &&
                !OSSL_PARAM_set_octet_string(p, k->point, k->point_len))
                return 0;
            if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PUB_KEY)) != NULL &&
                !OSSL_PARAM_set_octet_string(p, k->point, k->point_len))
                return 0;
        }
    } else {
        const char *names[2] = {OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E};
        const unsigned char *v[2] = {k->n, k->e};
        size_t l[2] = {k->n_len, k->e_len};

        for (int i = 0; i < 2; i++) {
            if ((p = OSSL_PARAM_locate(params, names[i])) != NULL) {
                BIGNUM *bn = BN_bin2bn(v[i], (int)l[i], NULL);
                int ok = bn != NULL && OSSL_PARAM_set_BN(p, bn);

                BN_free(bn);
                if (!ok)
                    return 0;
            }
        }
    }
    return 1;
}

/* The peer's share in TLS (EVP_PKEY_set1_encoded_public_key on a key that
 * holds only the curve): a public key in software, never a token object. */
static int km_ec_set_params(void *keydata, const OSSL_PARAM params[])
{
    hp_key *k = keydata;
    const OSSL_PARAM *p =
        OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY);
    const void *in;
    size_t in_len, len;
    unsigned char *out = NULL;
    EC_GROUP *g = NULL;
    EC_POINT *pt = NULL;
    int nid, ok = 0;

    if (k == NULL)
        return 0;
    if (p == NULL)
        return 1;
    if (k->p11 != NULL || k->soft != NULL) {
        hp_raise(k->pctx, HP_R_BAD_PARAM,
                 "%s: the public key of a key pair cannot be replaced", hp_key_name(k));
        return 0;
    }
    if (k->group[0] == '\0') {
        hp_raise(k->pctx, HP_R_BAD_PARAM,
                 "an encoded EC public key needs the key's curve first");
        return 0;
    }
    if (!OSSL_PARAM_get_octet_string_ptr(p, &in, &in_len)) {
        hp_raise(k->pctx, HP_R_BAD_PARAM,
                 "the encoded public key must be an octet string");
        return 0;
    }
    nid = OBJ_sn2nid(k->group);
    g = nid != NID_undef ? EC_GROUP_new_by_curve_name_ex(k->pctx->libctx, NULL, nid)
                         : NULL;
    pt = g != NULL ? EC_POINT_new(g) : NULL;
    if (pt == NULL) {
        hp_raise(k->pctx, HP_R_INTERNAL, "cannot make an EC point on %s", k->group);
        goto end;
    }
    /* Checked here, once, so that no point off the curve is ever kept. */
    if (!EC_POINT_oct2point(g, pt, in, in_len, NULL) || EC_POINT_is_at_infinity(g, pt)) {
        hp_raise(k->pctx, HP_R_BAD_PARAM,
                 "the encoded public key (%zu bytes) is not a point on curve %s", in_len,
                 k->group);
        goto end;
    }
    len = EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, NULL, 0, NULL);
    out = len > 0 ? malloc(len) : NULL;
    if (out == NULL ||
        EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, out, len, NULL) != len) {
        free(out);
        goto end;
    }
    free(k->point);
    k->point = out;
    k->point_len = len;
    ok = 1;
end:
    EC_POINT_free(pt);
    EC_GROUP_free(g);
    return ok;
}

static const OSSL_PARAM *km_ec_settable(void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
        OSSL_PARAM_END,
    };

    return settable;
}

#define COMMON_GETTABLE                                                                  \
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),                                          \
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),                             \
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),                                  \
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),                 \
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_MANDATORY_DIGEST, NULL, 0)

static const OSSL_PARAM rsa_gettable[] = {
    COMMON_GETTABLE,
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM ec_gettable[] = {
    COMMON_GETTABLE,
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM ed25519_gettable[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_MANDATORY_DIGEST, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM ed25519_types[] = {
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *km_ed25519_gettable(void *provctx)
{
    return ed25519_gettable;
}

static const OSSL_PARAM *km_ed25519_types(int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) ? ed25519_types : NULL;
}

static const char *km_ed25519_opname(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? HP_OPNAME_ED25519 : "ED25519";
}

static const OSSL_PARAM *km_rsa_gettable(void *provctx)
{
    return rsa_gettable;
}

static const OSSL_PARAM *km_ec_gettable(void *provctx)
{
    return ec_gettable;
}

/* The operation names OpenSSL fetches for our keys are our own: with the
 * common name ("RSA", "ECDSA") its first fetch finds the default provider's
 * implementation, tries to move the token key there (refused: see the head
 * of this file) and only then comes back to ours, costing allocations and a
 * failed export on every signature. */
static const char *km_rsa_opname(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE || operation_id == OSSL_OP_ASYM_CIPHER
               ? HP_OPNAME_RSA
               : "RSA";
}

static const char *km_ec_opname(int operation_id)
{
    switch (operation_id) {
    case OSSL_OP_SIGNATURE:
        return HP_OPNAME_ECDSA;
    case OSSL_OP_KEYEXCH:
        return HP_OPNAME_ECDH;
    }
    return "EC";
}

#define KEYMGMT_COMMON(newfn, types, gettable)                                           \
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))newfn},                                      \
        {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))km_free},                               \
        {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))km_load},                               \
        {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))km_has},                                 \
        {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))km_match},                             \
        {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))km_import},                           \
        {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))types},                         \
        {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))km_export},                           \
        {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))types},                         \
        {OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))km_get_params},                   \
    {                                                                                    \
        OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))gettable                      \
    }

/* Generation in the token (hp_keymgmt_gen.c); RSA-PSS keys are not generated. */
#define KEYMGMT_GEN(init, settable)                                                      \
    {OSSL_FUNC_KEYMGMT_GEN_INIT, (void (*)(void))init},                                  \
        {OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, (void (*)(void))hp_km_gen_set_params},        \
        {OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, (void (*)(void))settable},               \
        {OSSL_FUNC_KEYMGMT_GEN, (void (*)(void))hp_km_gen},                              \
    {                                                                                    \
        OSSL_FUNC_KEYMGMT_GEN_CLEANUP, (void (*)(void))hp_km_gen_cleanup                 \
    }

const OSSL_DISPATCH hp_rsa_keymgmt_functions[] = {
    KEYMGMT_COMMON(km_rsa_new, km_rsa_types, km_rsa_gettable),
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))km_rsa_opname},
    KEYMGMT_GEN(hp_km_rsa_gen_init, hp_km_rsa_gen_settable),
    {0, NULL},
};

const OSSL_DISPATCH hp_rsapss_keymgmt_functions[] = {
    KEYMGMT_COMMON(km_rsapss_new, km_rsa_types, km_rsa_gettable),
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))km_rsa_opname},
    {0, NULL},
};

const OSSL_DISPATCH hp_ec_keymgmt_functions[] = {
    KEYMGMT_COMMON(km_ec_new, km_ec_types, km_ec_gettable),
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))km_ec_opname},
    {OSSL_FUNC_KEYMGMT_SET_PARAMS, (void (*)(void))km_ec_set_params},
    {OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, (void (*)(void))km_ec_settable},
    KEYMGMT_GEN(hp_km_ec_gen_init, hp_km_ec_gen_settable),
    {OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, (void (*)(void))hp_km_gen_set_template},
    {0, NULL},
};

const OSSL_DISPATCH hp_ed25519_keymgmt_functions[] = {
    KEYMGMT_COMMON(km_ed25519_new, km_ed25519_types, km_ed25519_gettable),
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))km_ed25519_opname},
    KEYMGMT_GEN(hp_km_ed25519_gen_init, hp_km_ed25519_gen_settable),
    {0, NULL},
};
