/* ECDH with token keys: the shared secret is computed in the token
 * (CKM_ECDH1_DERIVE, p11_derive.c). Keys made in memory (hp_keymgmt_gen.c:
 * TLS key shares under a preference for hsmprov) derive in software, in our
 * library context, and never cause a token call.
 *
 * OpenSSL fetches the key exchange from the provider of the key's keymgmt,
 * by the name the keymgmt gives (hp_keymgmt.c: HSMPROV-ECDH for our EC
 * keys). A software key's keymgmt is the default provider's, which asks for
 * its own "ECDH": TLS ephemeral keys and PEM keys never come here. Should
 * hsmprov's "ECDH" win that fetch (hsmprov listed before default), OpenSSL
 * first moves the software key to our keymgmt, which refuses private
 * material, and falls back to the default provider's ECDH; a public-only
 * software key that does land here is refused by init.
 *
 * The peer arrives as a key of our keymgmt (OpenSSL exports it to the
 * exchange's provider): a public key from software, or a token public key.
 * Its point is checked on the token key's curve here, before the token sees
 * it: a point off the curve must never reach a token's arithmetic. */
#include "hp_provider.h"

#include "p11_derive.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_keyexch_newctx_fn ecdh_newctx;
static OSSL_FUNC_keyexch_init_fn ecdh_init;
static OSSL_FUNC_keyexch_set_peer_fn ecdh_set_peer;
static OSSL_FUNC_keyexch_derive_fn ecdh_derive;
static OSSL_FUNC_keyexch_freectx_fn ecdh_freectx;
static OSSL_FUNC_keyexch_dupctx_fn ecdh_dupctx;
static OSSL_FUNC_keyexch_set_ctx_params_fn ecdh_set_ctx_params;
static OSSL_FUNC_keyexch_settable_ctx_params_fn ecdh_settable_ctx_params;
static OSSL_FUNC_keyexch_get_ctx_params_fn ecdh_get_ctx_params;
static OSSL_FUNC_keyexch_gettable_ctx_params_fn ecdh_gettable_ctx_params;

/* An uncompressed point of the largest curve (P-521). */
#define POINT_MAX (1 + 2 * P11_ECDH_SECRET_MAX)

typedef struct ecdh_ctx {
    hp_provctx *pctx;
    hp_key *key;       /* owned by the EVP_PKEY, which outlives the context */
    size_t secret_len; /* the key's field size */
    /* The peer's point, checked and re-encoded uncompressed: the context
     * keeps its own copy, so the peer key may go. */
    unsigned char peer[POINT_MAX];
    size_t peer_len;
    int cofactor_mode; /* -1 (the key's), 0 or 1: the same for our curves */
} ecdh_ctx;

static void *ecdh_newctx(void *provctx)
{
    ecdh_ctx *c = calloc(1, sizeof(*c));

    if (c != NULL) {
        c->pctx = provctx;
        c->cofactor_mode = -1;
    }
    return c;
}

static void ecdh_freectx(void *vctx)
{
    free(vctx);
}

static void *ecdh_dupctx(void *vctx)
{
    ecdh_ctx *d = malloc(sizeof(*d));

    if (d != NULL)
        memcpy(d, vctx, sizeof(*d));
    return d;
}

static EC_GROUP *group_of(const hp_key *k)
{
    int nid = OBJ_sn2nid(k->group);

    return nid != NID_undef ? EC_GROUP_new_by_curve_name_ex(k->pctx->libctx, NULL, nid)
                            : NULL;
}

static int ecdh_init(void *vctx, void *provkey, const OSSL_PARAM params[])
{
    ecdh_ctx *c = vctx;
    hp_key *k = provkey;
    EC_GROUP *g;

    if (k == NULL || k->kind != HP_KEY_EC) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "ECDH takes an EC key");
        return 0;
    }
    if (k->p11 == NULL && k->soft == NULL) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "hsmprov does key exchange only with keys on a token or made by it in "
                 "memory; this key was imported from software");
        return 0;
    }
    if (k->p11 != NULL && (k->public_only || k->p11->priv == CK_INVALID_HANDLE)) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "C_DeriveKey: %s is a public key: ECDH needs the private key",
                 k->p11->name);
        return 0;
    }
    g = group_of(k);
    if (g == NULL) {
        hp_raise(c->pctx, HP_R_UNSUPPORTED, "%s: curve %s is not known to OpenSSL",
                 hp_key_name(k), k->group);
        return 0;
    }
    c->secret_len = ((size_t)EC_GROUP_get_degree(g) + 7) / 8;
    EC_GROUP_free(g);
    if (c->secret_len > P11_ECDH_SECRET_MAX) {
        hp_raise(c->pctx, HP_R_UNSUPPORTED,
                 "%s: curve %s is too large for hsmprov's ECDH", hp_key_name(k),
                 k->group);
        return 0;
    }
    c->key = k;
    c->peer_len = 0;
    return ecdh_set_ctx_params(c, params);
}

static int ecdh_set_peer(void *vctx, void *provkey)
{
    ecdh_ctx *c = vctx;
    hp_key *peer = provkey;
    EC_GROUP *g = NULL;
    EC_POINT *pt = NULL;
    size_t len;
    int ok = 0;

    if (c->key == NULL) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "no key given: call init before set_peer");
        return 0;
    }
    if (peer == NULL || peer->kind != HP_KEY_EC || peer->point == NULL) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "the peer key of ECDH must be an EC public key");
        return 0;
    }
    if (strcmp(peer->group, c->key->group) != 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "the peer key is on curve %s, %s on curve %s: ECDH needs both on one "
                 "curve",
                 peer->group[0] != '\0' ? peer->group : "(none)", hp_key_name(c->key),
                 c->key->group);
        return 0;
    }
    g = group_of(c->key);
    pt = g != NULL ? EC_POINT_new(g) : NULL;
    if (pt == NULL) {
        hp_raise(c->pctx, HP_R_INTERNAL, "cannot make an EC point on %s", c->key->group);
        goto end;
    }
    /* oct2point refuses a point that is not on the curve; the point at
     * infinity is no public key either. */
    if (!EC_POINT_oct2point(g, pt, peer->point, peer->point_len, NULL) ||
        EC_POINT_is_at_infinity(g, pt)) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "the peer's public key is not a point on curve %s: refused before it "
                 "reaches the token",
                 c->key->group);
        goto end;
    }
    len = EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, c->peer,
                             sizeof(c->peer), NULL);
    if (len == 0) {
        hp_raise(c->pctx, HP_R_INTERNAL, "cannot encode the peer's point");
        goto end;
    }
    c->peer_len = len;
    ok = 1;
end:
    EC_POINT_free(pt);
    EC_GROUP_free(g);
    return ok;
}

/* The secret of a key made in memory, by the default provider of our
 * library context. */
static int derive_in_memory(ecdh_ctx *c, unsigned char *buf, size_t *len)
{
    OSSL_PARAM params[3];
    EVP_PKEY *peer = NULL;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(c->pctx->libctx, "EC", NULL);
    EVP_PKEY_CTX *dc = NULL;
    int ok;

    params[0] =
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, c->key->group, 0);
    params[1] =
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, c->peer, c->peer_len);
    params[2] = OSSL_PARAM_construct_end();
    ok = pc != NULL && EVP_PKEY_fromdata_init(pc) > 0 &&
         EVP_PKEY_fromdata(pc, &peer, EVP_PKEY_PUBLIC_KEY, params) > 0 &&
         (dc = EVP_PKEY_CTX_new_from_pkey(c->pctx->libctx, c->key->soft, NULL)) != NULL &&
         EVP_PKEY_derive_init(dc) > 0 && EVP_PKEY_derive_set_peer(dc, peer) > 0 &&
         EVP_PKEY_derive(dc, buf, len) > 0;
    if (!ok)
        hp_raise(c->pctx, HP_R_INTERNAL, "ECDH on %s with %s failed", c->key->group,
                 hp_key_name(c->key));
    EVP_PKEY_CTX_free(dc);
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(peer);
    return ok;
}

static int ecdh_derive(void *vctx, unsigned char *secret, size_t *secretlen,
                       size_t outlen)
{
    ecdh_ctx *c = vctx;
    unsigned char buf[P11_ECDH_SECRET_MAX];
    CK_RV rv;

    if (c->key == NULL) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "no key given: call init before derive");
        return 0;
    }
    if (secret == NULL) {
        *secretlen = c->secret_len;
        return 1;
    }
    if (c->peer_len == 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "no peer key given: set one before derive");
        return 0;
    }
    if (c->key->soft != NULL) {
        size_t len = sizeof(buf);

        if (!derive_in_memory(c, buf, &len))
            return 0;
        if (len != c->secret_len) {
            OPENSSL_cleanse(buf, sizeof(buf));
            hp_raise(c->pctx, HP_R_INTERNAL, "ECDH on %s gave %zu bytes, not %zu",
                     c->key->group, len, c->secret_len);
            return 0;
        }
    } else if ((rv = p11_ecdh_derive(c->key->p11, c->peer, c->peer_len, c->secret_len,
                                     buf)) != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    /* As OpenSSL's ECDH: a shorter buffer takes the secret's first bytes. */
    *secretlen = outlen < c->secret_len ? outlen : c->secret_len;
    memcpy(secret, buf, *secretlen);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 1;
}

static int ecdh_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    ecdh_ctx *c = vctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE);
    if (p != NULL) {
        int mode;

        if (!OSSL_PARAM_get_int(p, &mode) || mode < -1 || mode > 1) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "ECDH cofactor mode must be -1, 0 or 1");
            return 0;
        }
        /* The curves hsmprov handles have cofactor 1: both modes give the
         * same secret, that of CKM_ECDH1_DERIVE. */
        c->cofactor_mode = mode;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_TYPE);
    if (p != NULL) {
        const char *kdf = NULL;

        if (!OSSL_PARAM_get_utf8_string_ptr(p, &kdf)) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "the ECDH KDF type must be a string");
            return 0;
        }
        if (kdf[0] != '\0') {
            /* Not echoed: a name from the caller could be anything. */
            hp_raise(c->pctx, HP_R_UNSUPPORTED,
                     "hsmprov's ECDH returns the shared secret itself and applies no KDF "
                     "(only the KDF type \"\", none, is accepted): derive, then apply "
                     "the KDF with EVP_KDF");
            return 0;
        }
    }
    return 1;
}

static const OSSL_PARAM *ecdh_settable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
        OSSL_PARAM_END,
    };

    return settable;
}

static int ecdh_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    ecdh_ctx *c = vctx;
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE);
    if (p != NULL && !OSSL_PARAM_set_int(p, c->cofactor_mode))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_EXCHANGE_PARAM_KDF_TYPE);
    if (p != NULL && !OSSL_PARAM_set_utf8_string(p, ""))
        return 0;
    return 1;
}

static const OSSL_PARAM *ecdh_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
        OSSL_PARAM_END,
    };

    return gettable;
}

const OSSL_DISPATCH hp_ecdh_exchange_functions[] = {
    {OSSL_FUNC_KEYEXCH_NEWCTX, (void (*)(void))ecdh_newctx},
    {OSSL_FUNC_KEYEXCH_INIT, (void (*)(void))ecdh_init},
    {OSSL_FUNC_KEYEXCH_SET_PEER, (void (*)(void))ecdh_set_peer},
    {OSSL_FUNC_KEYEXCH_DERIVE, (void (*)(void))ecdh_derive},
    {OSSL_FUNC_KEYEXCH_FREECTX, (void (*)(void))ecdh_freectx},
    {OSSL_FUNC_KEYEXCH_DUPCTX, (void (*)(void))ecdh_dupctx},
    {OSSL_FUNC_KEYEXCH_SET_CTX_PARAMS, (void (*)(void))ecdh_set_ctx_params},
    {OSSL_FUNC_KEYEXCH_SETTABLE_CTX_PARAMS, (void (*)(void))ecdh_settable_ctx_params},
    {OSSL_FUNC_KEYEXCH_GET_CTX_PARAMS, (void (*)(void))ecdh_get_ctx_params},
    {OSSL_FUNC_KEYEXCH_GETTABLE_CTX_PARAMS, (void (*)(void))ecdh_gettable_ctx_params},
    {0, NULL},
};
