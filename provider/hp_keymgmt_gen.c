/* Key generation in the token: the OSSL_FUNC_KEYMGMT_GEN_* functions of the
 * RSA, EC and Ed25519 key managements (their tables are in hp_keymgmt.c).
 *
 *   openssl genpkey -propquery provider=hsmprov -algorithm EC \
 *       -pkeyopt ec_paramgen_curve:P-256 \
 *       -pkeyopt "pkcs11_uri:pkcs11:token=demo;object=web"
 *
 * hsmprov makes token keys only when told where: without a pkcs11_uri
 * parameter nothing reaches the token (the module is not even loaded), so
 * that no token object is ever made behind an application's back. TLS makes
 * its ephemeral key shares through whichever key management a property query
 * prefers, with the same calls as `openssl genpkey`: an EC key asked for
 * without pkcs11_uri is therefore made in memory, in software, in hsmprov's
 * own library context, and hsmprov's encoders refuse to write it out (so
 * `genpkey` without pkcs11_uri still fails, with nothing in the token).
 * RSA and Ed25519 keys without pkcs11_uri are refused here: TLS makes none.
 * A token key returned is the same kind of key the store returns. */
#include "hp_provider.h"

#include "p11_keygen.h"
#include "p11_names.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

/* The pkeyopt names of the peer provider (latchset pkcs11-provider). */
#define HP_PARAM_URI "pkcs11_uri"
#define HP_PARAM_KEY_USAGE "pkcs11_key_usage"

#define MAX_RSA_E 16 /* bytes; a public exponent is small */

typedef struct gen_ctx {
    hp_provctx *pctx;
    int kind; /* HP_KEY_RSA, HP_KEY_EC, HP_KEY_ED25519 */
    p11_uri *uri;
    unsigned usage; /* 0: the default of the kind */
    size_t rsa_bits;
    unsigned char rsa_e[MAX_RSA_E];
    size_t rsa_e_len; /* 0: 65537 */
    unsigned char *ec_params;
    size_t ec_params_len;
    int ec_nid;    /* the curve of ec_params */
    int selection; /* OSSL_KEYMGMT_SELECT_*: the curve alone, or a key pair */
} gen_ctx;

/* The X.509 key usage names the peer provider takes in pkcs11_key_usage,
 * and what each allows here. keyEncipherment also allows decryption: an
 * RSA key that transports keys (TLS 1.2's RSA key exchange, CMS) is asked
 * to decrypt them, which the peer's unwrap alone would refuse. */
static const struct {
    const char *name;
    unsigned usage;
} usage_names[] = {
    {"digitalSignature", P11_USE_SIGN},
    {"dataEncipherment", P11_USE_DECRYPT},
    {"keyEncipherment", P11_USE_DECRYPT | P11_USE_UNWRAP},
    {"keyAgreement", P11_USE_DERIVE},
};

static const char *kind_name(int kind)
{
    return kind == HP_KEY_RSA ? "RSA" : kind == HP_KEY_EC ? "EC" : "Ed25519";
}

/* What each kind of key can do, and does when no usage is given. */
static unsigned usage_possible(int kind)
{
    return kind == HP_KEY_RSA  ? P11_USE_SIGN | P11_USE_DECRYPT | P11_USE_UNWRAP
           : kind == HP_KEY_EC ? P11_USE_SIGN | P11_USE_DERIVE
                               : P11_USE_SIGN;
}

static unsigned usage_default(int kind)
{
    return kind == HP_KEY_RSA  ? P11_USE_SIGN | P11_USE_DECRYPT
           : kind == HP_KEY_EC ? P11_USE_SIGN | P11_USE_DERIVE
                               : P11_USE_SIGN;
}

static void *gen_init(void *provctx, int selection, const OSSL_PARAM params[], int kind)
{
    hp_provctx *pctx = provctx;
    gen_ctx *g;

    /* Domain parameters alone are a software object; for EC, libssl makes
     * the holder of the peer's key share so (ssl_generate_param_group). */
    if (!(selection & OSSL_KEYMGMT_SELECT_KEYPAIR) && kind != HP_KEY_EC) {
        hp_raise(pctx, HP_R_UNSUPPORTED,
                 "hsmprov generates %s key pairs in a token, not parameters alone",
                 kind_name(kind));
        return NULL;
    }
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->pctx = pctx;
    g->kind = kind;
    g->selection = selection;
    g->rsa_bits = 2048;
    if (!hp_km_gen_set_params(g, params)) {
        hp_km_gen_cleanup(g);
        return NULL;
    }
    return g;
}

void *hp_km_rsa_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
    return gen_init(provctx, selection, params, HP_KEY_RSA);
}

void *hp_km_ec_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
    return gen_init(provctx, selection, params, HP_KEY_EC);
}

void *hp_km_ed25519_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
    static const unsigned char ed25519_oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
    gen_ctx *g = gen_init(provctx, selection, params, HP_KEY_ED25519);

    if (g != NULL) {
        g->ec_params = malloc(sizeof(ed25519_oid));
        if (g->ec_params == NULL) {
            hp_km_gen_cleanup(g);
            return NULL;
        }
        memcpy(g->ec_params, ed25519_oid, sizeof(ed25519_oid));
        g->ec_params_len = sizeof(ed25519_oid);
    }
    return g;
}

/* A space or comma separated list of the names above. Words are counted, not
 * repeated, in messages: the text is the caller's. */
static int set_usage(gen_ctx *g, const OSSL_PARAM *p)
{
    const char *s;
    unsigned usage = 0, possible = usage_possible(g->kind);
    int word = 0;

    if (!OSSL_PARAM_get_utf8_string_ptr(p, &s)) {
        hp_raise(g->pctx, HP_R_BAD_PARAM, "%s must be a string", HP_PARAM_KEY_USAGE);
        return 0;
    }
    for (;;) {
        size_t len, i, n = sizeof(usage_names) / sizeof(usage_names[0]);

        s += strspn(s, " ,\t");
        if (*s == '\0')
            break;
        word++;
        len = strcspn(s, " ,\t");
        for (i = 0; i < n; i++)
            if (strlen(usage_names[i].name) == len &&
                memcmp(usage_names[i].name, s, len) == 0)
                break;
        if (i == n) {
            hp_raise(g->pctx, HP_R_BAD_PARAM,
                     "%s: word %d is none of digitalSignature, dataEncipherment, "
                     "keyEncipherment, keyAgreement",
                     HP_PARAM_KEY_USAGE, word);
            return 0;
        }
        if ((usage_names[i].usage & possible) != usage_names[i].usage) {
            hp_raise(g->pctx, HP_R_BAD_PARAM,
                     "%s: %s does not apply to %s keys (they take %s)",
                     HP_PARAM_KEY_USAGE, usage_names[i].name, kind_name(g->kind),
                     g->kind == HP_KEY_RSA  ? "digitalSignature, dataEncipherment, "
                                              "keyEncipherment"
                     : g->kind == HP_KEY_EC ? "digitalSignature, keyAgreement"
                                            : "digitalSignature");
            return 0;
        }
        usage |= usage_names[i].usage;
        s += len;
    }
    if (usage == 0) {
        hp_raise(g->pctx, HP_R_BAD_PARAM, "%s names no usage", HP_PARAM_KEY_USAGE);
        return 0;
    }
    g->usage = usage;
    return 1;
}

static int set_uri(gen_ctx *g, const OSSL_PARAM *p)
{
    const char *s;
    p11_uri *u;
    CK_ATTRIBUTE *a;
    CK_ULONG n;
    CK_RV rv;

    if (!OSSL_PARAM_get_utf8_string_ptr(p, &s)) {
        hp_raise(g->pctx, HP_R_BAD_PARAM, "%s must be a string", HP_PARAM_URI);
        return 0;
    }
    rv = p11_uri_parse(s, &u);
    if (rv != CKR_OK) {
        hp_raise_p11(g->pctx, rv);
        return 0;
    }
    /* type= may name either half of the pair; nothing else is made here. */
    if (u->has_class && u->cls != CKO_PRIVATE_KEY && u->cls != CKO_PUBLIC_KEY) {
        hp_raise(g->pctx, HP_R_URI,
                 "%s: a key pair is generated; type= may only be private or public",
                 u->shown);
        p11_uri_free(u);
        return 0;
    }
    a = p11_uri_object_attrs(u, &n);
    for (CK_ULONG i = 0; i < n; i++)
        if (a[i].type == CKA_LABEL &&
            memchr(a[i].pValue, '\0', a[i].ulValueLen) != NULL) {
            hp_raise(g->pctx, HP_R_URI, "%s: the label (object=) holds a NUL byte",
                     u->shown);
            p11_uri_free(u);
            return 0;
        }
    p11_uri_free(g->uri);
    g->uri = u;
    return 1;
}

static int set_rsa_e(gen_ctx *g, const OSSL_PARAM *p)
{
    BIGNUM *e = NULL;
    int ok;

    if (!OSSL_PARAM_get_BN(p, &e)) {
        hp_raise(g->pctx, HP_R_BAD_PARAM, "the RSA public exponent must be a number");
        return 0;
    }
    ok = BN_is_odd(e) && !BN_is_one(e) && BN_num_bytes(e) <= MAX_RSA_E;
    if (ok)
        g->rsa_e_len = (size_t)BN_bn2bin(e, g->rsa_e);
    else
        hp_raise(g->pctx, HP_R_BAD_PARAM,
                 "the RSA public exponent must be odd, above 1 and at most %d bits",
                 MAX_RSA_E * 8);
    BN_free(e);
    return ok;
}

/* A named curve OpenSSL knows, as its OID in DER (CKA_EC_PARAMS). */
static int set_group_name(gen_ctx *g, const char *name)
{
    int nid, len;
    EC_GROUP *grp;
    unsigned char *der = NULL;

    nid = EC_curve_nist2nid(name);
    if (nid == NID_undef)
        nid = OBJ_sn2nid(name);
    if (nid == NID_undef)
        nid = OBJ_ln2nid(name);
    grp = nid != NID_undef ? EC_GROUP_new_by_curve_name_ex(g->pctx->libctx, NULL, nid)
                           : NULL;
    if (grp == NULL) {
        hp_raise(
            g->pctx, HP_R_BAD_PARAM,
            "the curve given (ec_paramgen_curve, group) is not a named curve known to "
            "OpenSSL; for example P-256, P-384 or P-521");
        return 0;
    }
    EC_GROUP_free(grp);
    len = i2d_ASN1_OBJECT(OBJ_nid2obj(nid), &der);
    if (len <= 0)
        return 0;
    free(g->ec_params);
    g->ec_params = malloc((size_t)len);
    if (g->ec_params != NULL)
        memcpy(g->ec_params, der, (size_t)len);
    g->ec_params_len = (size_t)len;
    g->ec_nid = nid;
    OPENSSL_free(der);
    return g->ec_params != NULL;
}

static int set_group(gen_ctx *g, const OSSL_PARAM *p)
{
    const char *name;

    if (!OSSL_PARAM_get_utf8_string_ptr(p, &name)) {
        hp_raise(g->pctx, HP_R_BAD_PARAM, "the curve name must be a string");
        return 0;
    }
    return set_group_name(g, name);
}

/* A key made from another's curve (EVP_PKEY_CTX_new_from_pkey, as libssl
 * makes a TLS 1.2 client's key share for the server's). */
int hp_km_gen_set_template(void *genctx, void *templ)
{
    gen_ctx *g = genctx;
    const hp_key *t = templ;

    if (g == NULL || t == NULL)
        return 0;
    if (g->kind != HP_KEY_EC || t->kind != HP_KEY_EC || t->group[0] == '\0') {
        hp_raise(g->pctx, HP_R_BAD_PARAM, "the template key names no EC curve");
        return 0;
    }
    return set_group_name(g, t->group);
}

/* An EC key pair in memory, in our library context: see the head of this
 * file. */
static void *gen_in_memory(gen_ctx *g)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(g->pctx->libctx, "EC", NULL);
    EVP_PKEY *pkey = NULL;
    hp_key *k = NULL;

    if (ctx != NULL && EVP_PKEY_keygen_init(ctx) > 0 &&
        EVP_PKEY_CTX_set_group_name(ctx, OBJ_nid2sn(g->ec_nid)) > 0 &&
        EVP_PKEY_keygen(ctx, &pkey) > 0) {
        k = hp_key_ec_software(g->pctx, g->ec_nid, pkey);
        if (k == NULL)
            EVP_PKEY_free(pkey);
    }
    EVP_PKEY_CTX_free(ctx);
    if (k == NULL)
        hp_raise(g->pctx, HP_R_INTERNAL,
                 "could not make an EC key on %s in memory (no pkcs11_uri was given)",
                 OBJ_nid2sn(g->ec_nid));
    return k;
}

int hp_km_gen_set_params(void *genctx, const OSSL_PARAM params[])
{
    gen_ctx *g = genctx;
    const OSSL_PARAM *p;
    size_t primes;

    if (g == NULL)
        return 0;
    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, HP_PARAM_URI)) != NULL && !set_uri(g, p))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, HP_PARAM_KEY_USAGE)) != NULL &&
        !set_usage(g, p))
        return 0;
    if (g->kind == HP_KEY_RSA) {
        if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_BITS)) != NULL &&
            !OSSL_PARAM_get_size_t(p, &g->rsa_bits)) {
            hp_raise(g->pctx, HP_R_BAD_PARAM, "the RSA key size must be a number");
            return 0;
        }
        if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_E)) != NULL &&
            !set_rsa_e(g, p))
            return 0;
        /* Refused rather than ignored: PKCS#11 makes two-prime keys only. */
        if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_PRIMES)) != NULL &&
            (!OSSL_PARAM_get_size_t(p, &primes) || primes != 2)) {
            hp_raise(g->pctx, HP_R_UNSUPPORTED,
                     "the token makes RSA keys of two primes only (rsa_keygen_primes)");
            return 0;
        }
    }
    if (g->kind == HP_KEY_EC) {
        const char *enc;

        if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL &&
            !set_group(g, p))
            return 0;
        /* Token keys name their curve (DESIGN §5): explicit parameters
         * break certificates. */
        if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_EC_ENCODING)) != NULL &&
            (!OSSL_PARAM_get_utf8_string_ptr(p, &enc) ||
             strcmp(enc, OSSL_PKEY_EC_ENCODING_GROUP) != 0)) {
            hp_raise(g->pctx, HP_R_UNSUPPORTED,
                     "EC keys in the token name their curve: ec_param_enc may only be "
                     "named_curve");
            return 0;
        }
    }
    return 1;
}

#define COMMON_SETTABLE                                                                  \
    OSSL_PARAM_utf8_string(HP_PARAM_URI, NULL, 0),                                       \
        OSSL_PARAM_utf8_string(HP_PARAM_KEY_USAGE, NULL, 0)

const OSSL_PARAM *hp_km_rsa_gen_settable(void *genctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        COMMON_SETTABLE,
        OSSL_PARAM_size_t(OSSL_PKEY_PARAM_RSA_BITS, NULL),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_size_t(OSSL_PKEY_PARAM_RSA_PRIMES, NULL),
        OSSL_PARAM_END,
    };
    return settable;
}

const OSSL_PARAM *hp_km_ec_gen_settable(void *genctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        COMMON_SETTABLE,
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

const OSSL_PARAM *hp_km_ed25519_gen_settable(void *genctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        COMMON_SETTABLE,
        OSSL_PARAM_END,
    };
    return settable;
}

/* The label and id the URI gives the new key (either may be absent). */
static void uri_names(const p11_uri *u, p11_keygen_spec *s)
{
    CK_ULONG n;
    CK_ATTRIBUTE *a = p11_uri_object_attrs(u, &n);

    for (CK_ULONG i = 0; i < n; i++) {
        if (a[i].type == CKA_LABEL) {
            s->label = a[i].pValue;
            s->label_len = a[i].ulValueLen;
        } else if (a[i].type == CKA_ID && a[i].ulValueLen > 0) {
            s->id = a[i].pValue;
            s->id_len = a[i].ulValueLen;
        }
    }
}

void *hp_km_gen(void *genctx, OSSL_CALLBACK *cb, void *cbarg)
{
    gen_ctx *g = genctx;
    p11_keygen_spec s = {0};
    p11_module *m;
    p11_token *t;
    p11_key *pk;
    hp_key *k;
    CK_RV rv;

    if (g == NULL)
        return NULL;
    if (g->kind == HP_KEY_EC &&
        (g->uri == NULL || !(g->selection & OSSL_KEYMGMT_SELECT_KEYPAIR))) {
        if (g->ec_params == NULL) {
            hp_raise(
                g->pctx, HP_R_BAD_PARAM,
                "an EC key needs its curve: give -pkeyopt ec_paramgen_curve:P-256 (or "
                "P-384, P-521)");
            return NULL;
        }
        if (!(g->selection & OSSL_KEYMGMT_SELECT_KEYPAIR))
            return hp_key_ec_software(g->pctx, g->ec_nid, NULL);
        return gen_in_memory(g);
    }
    /* Before the module is even loaded: see the head of this file. */
    if (g->uri == NULL) {
        hp_raise(g->pctx, HP_R_BAD_PARAM,
                 "hsmprov generates keys only in a token: give -pkeyopt "
                 "pkcs11_uri:pkcs11:token=...;object=... (the \"%s\" parameter)",
                 HP_PARAM_URI);
        return NULL;
    }
    if (g->kind == HP_KEY_EC && g->ec_params == NULL) {
        hp_raise(g->pctx, HP_R_BAD_PARAM,
                 "an EC key needs its curve: give -pkeyopt ec_paramgen_curve:P-256 (or "
                 "P-384, P-521)");
        return NULL;
    }
    s.type = g->kind == HP_KEY_RSA  ? CKK_RSA
             : g->kind == HP_KEY_EC ? CKK_EC
                                    : CKK_EC_EDWARDS;
    s.rsa_bits = (CK_ULONG)g->rsa_bits;
    s.rsa_e = g->rsa_e_len > 0 ? g->rsa_e : NULL;
    s.rsa_e_len = g->rsa_e_len;
    s.ec_params = g->ec_params;
    s.ec_params_len = g->ec_params_len;
    s.usage = g->usage != 0 ? g->usage : usage_default(g->kind);
    uri_names(g->uri, &s);
    m = hp_module(g->pctx);
    if (m == NULL)
        return NULL;
    rv = p11_keygen_token(m, g->uri, &t);
    if (rv == CKR_OK)
        rv = hp_login(g->pctx, t, g->uri, NULL, NULL);
    if (rv == CKR_OK)
        rv = p11_keygen(t, &s, &pk);
    if (rv != CKR_OK) {
        hp_raise_p11(g->pctx, rv);
        return NULL;
    }
    k = hp_key_from_p11(g->pctx, pk);
    if (k == NULL)
        p11_keygen_undo(pk);
    p11_key_free(pk);
    return k;
}

void hp_km_gen_cleanup(void *genctx)
{
    gen_ctx *g = genctx;

    if (g == NULL)
        return;
    p11_uri_free(g->uri);
    free(g->ec_params);
    free(g);
}
