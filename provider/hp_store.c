/* OSSL_STORE loader for pkcs11: URIs: keys (as opaque token keys) and
 * certificates (as DER for OpenSSL to decode). */
#include "hp_provider.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_store_open_fn store_open;
static OSSL_FUNC_store_settable_ctx_params_fn store_settable;
static OSSL_FUNC_store_set_ctx_params_fn store_set_params;
static OSSL_FUNC_store_load_fn store_load;
static OSSL_FUNC_store_eof_fn store_eof;
static OSSL_FUNC_store_close_fn store_close;

struct found {
    p11_token *tok;
    CK_OBJECT_HANDLE h;
    CK_OBJECT_CLASS cls;
};

typedef struct store_ctx {
    hp_provctx *pctx;
    p11_uri *uri;
    int expect; /* OSSL_STORE_INFO_* or 0 for anything */
    int started, failed;
    struct found *items;
    size_t n, next;
    CK_ATTRIBUTE *find_attrs;
    /* OSSL_STORE_find: by subject name (certificates' CKA_SUBJECT, DER) and
     * by alias (CKA_LABEL). */
    unsigned char *subject;
    size_t subject_len;
    char *alias;
} store_ctx;

static void *store_open(void *provctx, const char *uri)
{
    store_ctx *sc;
    CK_RV rv;

    /* Refused before the URI is even parsed: the bad directive is what the
     * user must hear about. */
    if (!hp_config_usable(provctx))
        return NULL;
    if ((sc = calloc(1, sizeof(*sc))) == NULL)
        return NULL;
    sc->pctx = provctx;
    rv = p11_uri_parse(uri, &sc->uri);
    if (rv != CKR_OK) {
        hp_raise_p11(provctx, rv);
        free(sc);
        return NULL;
    }
    return sc;
}

static const OSSL_PARAM *store_settable(void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
        OSSL_PARAM_octet_string(OSSL_STORE_PARAM_SUBJECT, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_ALIAS, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

/* The search criteria, kept for start(). A NUL in an alias would cut it
 * short without the user noticing: refused. */
static int set_search(store_ctx *sc, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_SUBJECT);
    const void *v;
    size_t len;

    if (p != NULL) {
        if (!OSSL_PARAM_get_octet_string_ptr(p, &v, &len) || len == 0)
            return 0;
        free(sc->subject);
        if ((sc->subject = malloc(len)) == NULL)
            return 0;
        memcpy(sc->subject, v, len);
        sc->subject_len = len;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_ALIAS);
    if (p != NULL) {
        const char *a;

        if (!OSSL_PARAM_get_utf8_string_ptr(p, &a) || *a == '\0')
            return 0;
        free(sc->alias);
        if ((sc->alias = strdup(a)) == NULL)
            return 0;
    }
    return 1;
}

static int store_set_params(void *loaderctx, const OSSL_PARAM params[])
{
    store_ctx *sc = loaderctx;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);

    if (p != NULL && !OSSL_PARAM_get_int(p, &sc->expect))
        return 0;
    return set_search(sc, params);
}

static int class_rank(CK_OBJECT_CLASS c)
{
    return c == CKO_PRIVATE_KEY ? 0 : c == CKO_PUBLIC_KEY ? 1 : 2;
}

static int by_class(const void *a, const void *b)
{
    const struct found *x = a, *y = b;

    return class_rank(x->cls) - class_rank(y->cls);
}

static int wanted(const store_ctx *sc, CK_OBJECT_CLASS c)
{
    /* A search by name is one for certificates (as OpenSSL's file store's). */
    if (sc->subject != NULL && c != CKO_CERTIFICATE)
        return 0;
    switch (sc->expect) {
    case OSSL_STORE_INFO_PKEY:
        return c == CKO_PRIVATE_KEY;
    case OSSL_STORE_INFO_PUBKEY:
        return c == CKO_PUBLIC_KEY || c == CKO_PRIVATE_KEY;
    case OSSL_STORE_INFO_CERT:
        return c == CKO_CERTIFICATE;
    case 0:
        return c == CKO_PRIVATE_KEY || c == CKO_PUBLIC_KEY || c == CKO_CERTIFICATE;
    }
    return 0;
}

static int needs_private(const store_ctx *sc)
{
    if (sc->uri->has_class)
        return sc->uri->cls == CKO_PRIVATE_KEY || sc->uri->cls == CKO_SECRET_KEY;
    return sc->expect == 0 || sc->expect == OSSL_STORE_INFO_PKEY;
}

/* The OSSL_STORE_find criteria as attributes: they narrow what the URI
 * names (a URI's own object= and a search alias both must match). */
static CK_ULONG add_search_attrs(const store_ctx *sc, CK_ATTRIBUTE *attrs, CK_ULONG n)
{
    if (sc->subject != NULL)
        attrs[n++] = (CK_ATTRIBUTE){CKA_SUBJECT, sc->subject, sc->subject_len};
    if (sc->alias != NULL)
        attrs[n++] = (CK_ATTRIBUTE){CKA_LABEL, sc->alias, strlen(sc->alias)};
    return n;
}

/* The search criteria for a message: the subject as parsed (escaped by
 * X509_NAME_oneline), the alias not repeated. */
static void search_text(const store_ctx *sc, char *out, size_t outlen)
{
    const unsigned char *p = sc->subject;
    X509_NAME *name = p != NULL ? d2i_X509_NAME(NULL, &p, (long)sc->subject_len) : NULL;
    char buf[200];

    out[0] = '\0';
    if (sc->subject != NULL)
        snprintf(out, outlen, " with subject %s",
                 name != NULL && X509_NAME_oneline(name, buf, sizeof(buf)) != NULL
                     ? buf
                     : "(not a DER name)");
    if (sc->alias != NULL)
        snprintf(out + strlen(out), outlen - strlen(out), " with the alias searched for");
    X509_NAME_free(name);
}

/* Finds the token(s) and the objects the URI names, logging in if private
 * objects are wanted. */
static int start(store_ctx *sc, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    p11_module *m = hp_module(sc->pctx);
    p11_token **toks = NULL;
    size_t ntok = 0;
    static CK_BBOOL on_token = CK_TRUE;
    CK_ATTRIBUTE *attrs;
    CK_ULONG nattrs;
    CK_RV rv;

    if (m == NULL)
        return 0;
    rv = p11_token_list_matching(m, sc->uri, &toks, &ntok);
    if (rv != CKR_OK)
        goto p11err;
    attrs = p11_uri_object_attrs(sc->uri, &nattrs);
    /* Token objects only: session objects of this process are key copies
     * and cipher keys of ours, not something to list or load. */
    {
        CK_ATTRIBUTE *with_token = calloc(nattrs + 3, sizeof(*with_token));

        if (with_token == NULL) {
            free(toks);
            return 0;
        }
        if (nattrs > 0)
            memcpy(with_token, attrs, nattrs * sizeof(*attrs));
        with_token[nattrs++] = (CK_ATTRIBUTE){CKA_TOKEN, &on_token, sizeof(on_token)};
        nattrs = add_search_attrs(sc, with_token, nattrs);
        sc->find_attrs = with_token;
        attrs = with_token;
    }
    for (size_t i = 0; i < ntok; i++) {
        p11_token *t = toks[i];
        CK_OBJECT_HANDLE *hs;
        CK_ULONG nh;

        if (needs_private(sc)) {
            rv = hp_login(sc->pctx, t, sc->uri, pw_cb, pw_cbarg);
            if (rv != CKR_OK)
                goto p11err;
        }
        rv = p11_find_objects(t, attrs, nattrs, &hs, &nh);
        if (rv != CKR_OK)
            goto p11err;
        for (CK_ULONG j = 0; j < nh; j++) {
            CK_OBJECT_CLASS cls;
            struct found *v;

            if (p11_read_ulong(t, hs[j], CKA_CLASS, &cls) != CKR_OK || !wanted(sc, cls))
                continue;
            v = realloc(sc->items, (sc->n + 1) * sizeof(*v));
            if (v == NULL) {
                free(hs);
                free(toks);
                return 0;
            }
            sc->items = v;
            sc->items[sc->n++] = (struct found){t, hs[j], cls};
        }
        free(hs);
    }
    free(toks);
    if (sc->n == 0) {
        const char *what = sc->expect == OSSL_STORE_INFO_PKEY     ? "private key"
                           : sc->expect == OSSL_STORE_INFO_PUBKEY ? "key"
                           : sc->expect == OSSL_STORE_INFO_CERT   ? "certificate"
                                                                  : "key or certificate";
        char crit[256];

        search_text(sc, crit, sizeof(crit));
        hp_raise_p11(sc->pctx,
                     p11_fail(P11_RV_NOT_FOUND, "C_FindObjects", "no %s matches %s%s",
                              what, sc->uri->shown, crit));
        return 0;
    }
    qsort(sc->items, sc->n, sizeof(*sc->items), by_class);
    return 1;
p11err:
    free(toks);
    hp_raise_p11(sc->pctx, rv);
    return 0;
}

static int load_key(store_ctx *sc, struct found *f, OSSL_CALLBACK *cb, void *cbarg)
{
    int type = OSSL_OBJECT_PKEY;
    p11_key *k;
    void *ref[3];
    const char *tname;
    CK_RV rv;
    int ok;

    rv = p11_key_load(f->tok, f->h, &k);
    if (rv != CKR_OK) {
        hp_raise_p11(sc->pctx, rv);
        return 0;
    }
    tname = hp_key_type_name(k);
    if (tname == NULL) {
        /* A key type OpenSSL cannot use through us: pass over it. */
        p11_key_free(k);
        return 1;
    }
    /* The reference is only valid during the callback: keymgmt's load takes
     * its own reference to k. */
    ref[0] = k;
    ref[1] = sc->pctx;
    /* Asked for a public key: a private object is offered as its public
     * half, which OpenSSL then files as a public key. */
    ref[2] = (void *)(intptr_t)(sc->expect == OSSL_STORE_INFO_PUBKEY);
    {
        OSSL_PARAM params[] = {
            OSSL_PARAM_int(OSSL_OBJECT_PARAM_TYPE, &type),
            OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)tname, 0),
            OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_REFERENCE, ref, sizeof(ref)),
            OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DESC, k->name, 0),
            OSSL_PARAM_END,
        };
        params[1].data_size = strlen(tname);
        params[3].data_size = strlen(k->name);
        ok = cb(params, cbarg);
    }
    p11_key_free(k);
    return ok;
}

static int load_cert(store_ctx *sc, struct found *f, OSSL_CALLBACK *cb, void *cbarg)
{
    int type = OSSL_OBJECT_CERT;
    unsigned char *der;
    CK_ULONG len;
    CK_RV rv;
    int ok;

    rv = p11_read_attr(f->tok, f->h, CKA_VALUE, &der, &len);
    if (rv != CKR_OK) {
        hp_raise_p11(sc->pctx, p11_fail(rv, "C_GetAttributeValue",
                                        "CKA_VALUE of a certificate on token \"%s\"",
                                        f->tok->label));
        return 0;
    }
    {
        OSSL_PARAM params[] = {
            OSSL_PARAM_int(OSSL_OBJECT_PARAM_TYPE, &type),
            OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_DATA, der, len),
            OSSL_PARAM_END,
        };
        ok = cb(params, cbarg);
    }
    free(der);
    return ok;
}

static int store_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    store_ctx *sc = loaderctx;
    struct found *f;

    if (sc->failed)
        return 0;
    if (!sc->started) {
        sc->started = 1;
        if (!start(sc, pw_cb, pw_cbarg)) {
            sc->failed = 1;
            return 0;
        }
    }
    if (sc->next >= sc->n)
        return 0;
    f = &sc->items[sc->next++];
    if (f->cls == CKO_CERTIFICATE)
        return load_cert(sc, f, object_cb, object_cbarg);
    return load_key(sc, f, object_cb, object_cbarg);
}

static int store_eof(void *loaderctx)
{
    store_ctx *sc = loaderctx;

    return sc->failed || (sc->started && sc->next >= sc->n);
}

static int store_close(void *loaderctx)
{
    store_ctx *sc = loaderctx;

    p11_uri_free(sc->uri);
    free(sc->find_attrs);
    free(sc->subject);
    free(sc->alias);
    free(sc->items);
    free(sc);
    return 1;
}

const OSSL_DISPATCH hp_store_functions[] = {
    {OSSL_FUNC_STORE_OPEN, (void (*)(void))store_open},
    {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))store_settable},
    {OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))store_set_params},
    {OSSL_FUNC_STORE_LOAD, (void (*)(void))store_load},
    {OSSL_FUNC_STORE_EOF, (void (*)(void))store_eof},
    {OSSL_FUNC_STORE_CLOSE, (void (*)(void))store_close},
    {0, NULL},
};
