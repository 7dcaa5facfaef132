#include "p11_secret.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static p11_secret *secret_new(p11_token *t, CK_KEY_TYPE type)
{
    p11_secret *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    s->tok = t;
    s->type = type;
    s->h = CK_INVALID_HANDLE;
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

/* Makes a session object from the raw bytes. Runs without s->lock (the
 * bytes never change): no lock is held across token calls, which may wait
 * for a lease.
 *
 * CKA_PRIVATE is false. A session object is reachable from this process's
 * sessions only, whatever CKA_PRIVATE says, and CKA_SENSITIVE with
 * CKA_EXTRACTABLE false keep its value in the token; but SoftHSM2 keeps a
 * private object's value encrypted and decrypts it under a token-wide lock
 * at every C_EncryptInit, so private session keys do not scale with threads
 * (2 threads: 1.1x the throughput of one, against 1.75x for public ones).
 * It also lets raw keys work without a PIN. */
static CK_RV make_value_object(p11_secret *s, CK_OBJECT_HANDLE *h, unsigned *gen)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    static const char label[] = "hsmprov cipher key";
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},     {CKA_KEY_TYPE, &s->type, sizeof(s->type)},
        {CKA_TOKEN, &no, sizeof(no)},       {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)}, {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_DECRYPT, &yes, sizeof(yes)},   {CKA_LABEL, (void *)label, sizeof(label) - 1},
        {CKA_PRIVATE, &no, sizeof(no)},     {CKA_VALUE, s->value, s->len},
    };

    /* After all sessions closed (token reset, session loss) the token may
     * want the login back first: make_object recovers that. */
    return p11_token_create_object(s->tok, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), h, gen);
}

CK_RV p11_secret_import(p11_token *t, CK_KEY_TYPE type, const unsigned char *v,
                        size_t len, p11_secret **out)
{
    p11_secret *s = secret_new(t, type);
    char name[96];
    CK_RV rv;

    *out = NULL;
    if (s == NULL)
        return CKR_HOST_MEMORY;
    snprintf(name, sizeof(name), "%s-%zu session key on token \"%s\"",
             type == CKK_AES ? "AES" : "secret", len * 8, t->label);
    s->len = (CK_ULONG)len;
    s->name = strdup(name);
    s->value = malloc(len > 0 ? len : 1);
    if (s->name == NULL || s->value == NULL) {
        p11_secret_free(s);
        return CKR_HOST_MEMORY;
    }
    memcpy(s->value, v, len);
    rv = p11_module_ready(t->m);
    if (rv == CKR_OK)
        rv = make_value_object(s, &s->h, &s->gen);
    if (rv != CKR_OK) {
        p11_secret_free(s);
        return rv;
    }
    *out = s;
    return CKR_OK;
}

/* The token object again, by identity (which never changes: no lock). */
static CK_RV refind(p11_secret *s, CK_OBJECT_HANDLE *h)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[5] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_KEY_TYPE, &s->type, sizeof(s->type)},
        {CKA_ID, s->id, s->id_len},
        {CKA_LABEL, s->label, s->label != NULL ? strlen(s->label) : 0},
    };
    CK_OBJECT_HANDLE *v;
    CK_ULONG n;
    CK_RV rv;

    /* Private objects are invisible until we are logged in again. */
    if (p11_token_needs_login(s->tok)) {
        rv = p11_token_relogin(s->tok);
        if (rv != CKR_OK)
            return rv;
    }
    rv = p11_find_objects(s->tok, tmpl, 5, &v, &n);
    if (rv != CKR_OK)
        return rv;
    *h = n > 0 ? v[0] : CK_INVALID_HANDLE;
    free(v);
    if (*h == CK_INVALID_HANDLE)
        return p11_fail(CKR_KEY_HANDLE_INVALID, "C_FindObjects",
                        "%s is no longer on the token", s->name);
    return CKR_OK;
}

CK_RV p11_secret_find(p11_token *t, const p11_uri *uri, CK_KEY_TYPE type,
                      p11_secret **out)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE *attrs, *tmpl;
    CK_OBJECT_HANDLE *v = NULL;
    CK_ULONG nattrs, n = 0, count;
    unsigned gen = atomic_load(&t->m->gen);
    p11_secret *s;
    CK_RV rv;

    *out = NULL;
    if (uri->has_class && uri->cls != CKO_SECRET_KEY)
        return p11_fail(P11_RV_NOT_FOUND, "C_FindObjects",
                        "%s names no secret key (a cipher key needs type=secret-key or "
                        "no type)",
                        uri->shown);
    attrs = p11_uri_object_attrs(uri, &nattrs);
    tmpl = calloc(nattrs + 3, sizeof(*tmpl));
    if (tmpl == NULL)
        return CKR_HOST_MEMORY;
    tmpl[n++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    /* A key URI names a token object, not some session object with the
     * same label and id. */
    tmpl[n++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    tmpl[n++] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &type, sizeof(type)};
    for (CK_ULONG i = 0; i < nattrs; i++)
        if (attrs[i].type != CKA_CLASS)
            tmpl[n++] = attrs[i];
    rv = p11_find_objects(t, tmpl, n, &v, &count);
    free(tmpl);
    if (rv != CKR_OK)
        return rv;
    if (count != 1) {
        free(v);
        if (count == 0)
            return p11_fail(P11_RV_NOT_FOUND, "C_FindObjects",
                            "no %s secret key on token \"%s\" matches %s",
                            type == CKK_AES ? "AES" : "such", t->label, uri->shown);
        return p11_fail(P11_RV_NOT_FOUND, "C_FindObjects",
                        "%lu secret keys on token \"%s\" match %s: name one with "
                        "object= or id=",
                        (unsigned long)count, t->label, uri->shown);
    }
    s = secret_new(t, type);
    if (s == NULL) {
        free(v);
        return CKR_HOST_MEMORY;
    }
    s->h = v[0];
    free(v);
    s->gen = gen;
    s->name = strdup(uri->shown);
    if (s->name == NULL) {
        p11_secret_free(s);
        return CKR_HOST_MEMORY;
    }
    rv = p11_read_ulong(t, s->h, CKA_VALUE_LEN, &s->len);
    if (rv != CKR_OK) {
        rv = p11_fail(rv, "C_GetAttributeValue", "CKA_VALUE_LEN of %s", s->name);
        p11_secret_free(s);
        return rv;
    }
    /* Identity, to find the key again after fork or session loss. */
    p11_read_attr(t, s->h, CKA_ID, &s->id, &s->id_len);
    {
        unsigned char *label = NULL;
        CK_ULONG len;

        p11_read_attr(t, s->h, CKA_LABEL, &label, &len);
        s->label = (char *)label;
    }
    *out = s;
    return CKR_OK;
}

int p11_secret_has_value(const p11_secret *s, const unsigned char *v, size_t len)
{
    return s->value != NULL && s->len == len && CRYPTO_memcmp(s->value, v, len) == 0;
}

void p11_secret_up(p11_secret *s)
{
    atomic_fetch_add(&s->refs, 1);
}

void p11_secret_free(p11_secret *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) > 1)
        return;
    if (s->value != NULL && s->gen != 0)
        p11_token_destroy_object(s->tok, s->h, s->gen);
    if (s->value != NULL)
        OPENSSL_clear_free(s->value, s->len > 0 ? s->len : 1);
    free(s->id);
    free(s->label);
    free(s->name);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* The handle to use now, made or found again if it is from an older module
 * generation (fork, re-initialisation) or was found dead. s->lock guards
 * the handle only: the token calls run without it, and when two threads
 * both make a new object the second one's is destroyed again. */
static CK_RV current(p11_secret *s, CK_OBJECT_HANDLE *h)
{
    p11_module *m = s->tok->m;
    CK_OBJECT_HANDLE nh;
    unsigned gen, ngen;
    CK_RV rv;

    rv = p11_module_ready(m);
    if (rv != CKR_OK)
        return rv;
    gen = atomic_load(&m->gen);
    pthread_mutex_lock(&s->lock);
    *h = s->h;
    rv = s->gen == gen ? CKR_OK : CKR_OBJECT_HANDLE_INVALID;
    pthread_mutex_unlock(&s->lock);
    if (rv == CKR_OK)
        return CKR_OK;
    if (s->value != NULL) {
        rv = make_value_object(s, &nh, &ngen);
    } else {
        rv = refind(s, &nh);
        ngen = gen;
    }
    if (rv != CKR_OK)
        return rv;
    pthread_mutex_lock(&s->lock);
    if (s->gen == ngen) {
        /* Another thread was faster: use its object, drop ours. */
        *h = s->h;
        pthread_mutex_unlock(&s->lock);
        if (s->value != NULL)
            p11_token_destroy_object(s->tok, nh, ngen);
        return CKR_OK;
    }
    s->h = *h = nh;
    s->gen = ngen;
    pthread_mutex_unlock(&s->lock);
    return CKR_OK;
}

/* A p11_recovery stale callback: the object died with its session (session
 * loss, token reset) although the module generation is the same: make or
 * find it again, unless another thread already did. */
static int secret_stale(void *obj, CK_OBJECT_HANDLE h)
{
    p11_secret *s = obj;

    pthread_mutex_lock(&s->lock);
    if (s->h == h)
        s->gen = 0;
    pthread_mutex_unlock(&s->lock);
    return 1;
}

CK_RV p11_secret_op_init(p11_op *op, p11_secret *s, p11_op_kind kind, CK_MECHANISM *mech)
{
    p11_recovery r = P11_RECOVERY_INIT;
    CK_OBJECT_HANDLE h;
    CK_RV rv;

    r.stale = secret_stale;
    r.obj = s;
    do {
        rv = current(s, &h);
        if (rv == CKR_OK)
            rv = p11_op_init_obj_once(op, s->tok, kind, mech, h, s->name, &r);
    } while (p11_recover(&r, s->tok, &op->lease, rv) == P11_RETRY);
    return rv;
}

CK_RV p11_secret_op_dup(p11_op *dst, p11_op *src, p11_secret *s)
{
    p11_module *m = src->tok->m;
    p11_lease l = P11_LEASE_INIT;
    unsigned char *state = NULL;
    CK_ULONG len = 0;
    CK_OBJECT_HANDLE h;
    CK_RV rv;

    if (!src->active)
        return p11_fail(CKR_OPERATION_NOT_INITIALIZED, "C_GetOperationState",
                        "no operation is running on this context");
    rv = P11_CALL(m, C_GetOperationState, src->lease.h, NULL, &len);
    if (rv == CKR_OK && (state = malloc(len > 0 ? len : 1)) == NULL)
        return CKR_HOST_MEMORY;
    if (rv == CKR_OK)
        rv = P11_CALL(m, C_GetOperationState, src->lease.h, state, &len);
    if (rv != CKR_OK) {
        free(state);
        return p11_fail(rv, "C_GetOperationState",
                        "token \"%s\" cannot save the state of the running operation",
                        src->tok->label);
    }
    rv = p11_lease_acquire(src->tok->pool, &l);
    if (rv == CKR_OK) {
        pthread_mutex_lock(&s->lock);
        h = s->h;
        pthread_mutex_unlock(&s->lock);
        rv = P11_CALL(m, C_SetOperationState, l.h, state, len, h, CK_INVALID_HANDLE);
        if (rv != CKR_OK) {
            /* Nothing runs on the new session: it goes back as it came. */
            p11_lease_release(&l);
            rv = p11_fail(rv, "C_SetOperationState", "token \"%s\", key %s",
                          src->tok->label, s->name);
        }
    }
    OPENSSL_clear_free(state, len > 0 ? len : 1);
    if (rv != CKR_OK)
        return rv;
    dst->lease = l;
    dst->tok = src->tok;
    dst->kind = src->kind;
    dst->active = 1;
    dst->keep = 0;
    return CKR_OK;
}
