#include "p11_object.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_recover.h"
#include "p11_uri.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

CK_RV p11_find_objects(p11_token *t, const CK_ATTRIBUTE *tmpl, CK_ULONG n,
                       CK_OBJECT_HANDLE **out, CK_ULONG *count)
{
    p11_module *m = t->m;
    p11_recovery r = P11_RECOVERY_INIT;
    p11_lease l = P11_LEASE_INIT;
    CK_OBJECT_HANDLE *v = NULL;
    CK_ULONG have = 0, cap = 0;
    CK_RV rv;

    *out = NULL;
    *count = 0;
    do {
        rv = p11_lease_acquire(t->pool, &l);
        if (rv == CKR_OK) {
            rv = p11_token_find_init(t, l.h, (CK_ATTRIBUTE *)tmpl, n);
            if (rv != CKR_OK)
                p11_fail(rv, "C_FindObjectsInit", "token \"%s\"", t->label);
        }
    } while (p11_recover(&r, t, &l, rv) == P11_RETRY);
    if (rv != CKR_OK)
        return rv;
    for (;;) {
        CK_ULONG got = 0;

        if (have == cap) {
            CK_OBJECT_HANDLE *nv;

            cap = cap ? cap * 2 : 16;
            nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                rv = CKR_HOST_MEMORY;
                break;
            }
            v = nv;
        }
        rv = P11_CALL(m, C_FindObjects, l.h, v + have, cap - have, &got);
        if (rv != CKR_OK || got == 0)
            break;
        have += got;
    }
    /* Ends the search whatever happened, so the session is clean. */
    P11_CALL(m, C_FindObjectsFinal, l.h);
    p11_lease_release(&l);
    if (rv != CKR_OK) {
        free(v);
        return p11_fail(rv, "C_FindObjects", "token \"%s\"", t->label);
    }
    *out = v;
    *count = have;
    return CKR_OK;
}

CK_RV p11_read_attr(p11_token *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                    unsigned char **val, CK_ULONG *len)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_lease l = P11_LEASE_INIT;
    CK_ATTRIBUTE a = {type, NULL, 0};
    CK_RV rv;

    *val = NULL;
    *len = 0;
    /* The session and the login only: o is the caller's handle, which the
     * caller finds again. */
    r.allow = P11_ALLOW(P11_ACT_SESSION) | P11_ALLOW(P11_ACT_LOGIN);
    do {
        free(a.pValue);
        a.pValue = NULL;
        rv = p11_lease_acquire(t->pool, &l);
        if (rv != CKR_OK)
            break; /* no lease, nothing to recover */
        rv = P11_CALL(t->m, C_GetAttributeValue, l.h, o, &a, 1);
        if (rv == CKR_OK && a.ulValueLen != CK_UNAVAILABLE_INFORMATION) {
            a.pValue = malloc(a.ulValueLen + 1);
            if (a.pValue == NULL)
                rv = CKR_HOST_MEMORY;
            else
                rv = P11_CALL(t->m, C_GetAttributeValue, l.h, o, &a, 1);
        } else if (rv == CKR_OK) {
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
        }
    } while (p11_recover(&r, t, &l, rv) == P11_RETRY);
    p11_lease_release(&l);
    if (rv != CKR_OK) {
        free(a.pValue);
        return rv;
    }
    ((unsigned char *)a.pValue)[a.ulValueLen] = '\0';
    *val = a.pValue;
    *len = a.ulValueLen;
    return CKR_OK;
}

CK_RV p11_read_ulong(p11_token *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                     CK_ULONG *val)
{
    unsigned char *v;
    CK_ULONG len;
    CK_RV rv = p11_read_attr(t, o, type, &v, &len);

    if (rv != CKR_OK)
        return rv;
    if (len != sizeof(CK_ULONG)) {
        free(v);
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    memcpy(val, v, sizeof(*val));
    free(v);
    return CKR_OK;
}

/* The key's URI for messages, percent-encoded by p11-kit: a label read
 * from the token may hold anything, control characters included. */
static char *key_name(const p11_key *k)
{
    return p11_uri_format_object(k->tok->info.label, k->label, k->id, k->id_len, k->cls);
}

/* The public object belonging to a private key: same CKA_ID and key type. */
static CK_OBJECT_HANDLE find_public(p11_key *k)
{
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_BBOOL yes = CK_TRUE;
    /* CKA_TOKEN: never our own session objects (key copies), which a
     * concurrent search may even see half-made. */
    CK_ATTRIBUTE tmpl[4] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &k->type, sizeof(k->type)},
        {CKA_ID, k->id, k->id_len},
        {CKA_TOKEN, &yes, sizeof(yes)},
    };
    CK_OBJECT_HANDLE *v, h = CK_INVALID_HANDLE;
    CK_ULONG n;

    if (k->id_len == 0)
        return CK_INVALID_HANDLE;
    if (p11_find_objects(k->tok, tmpl, 4, &v, &n) != CKR_OK)
        return CK_INVALID_HANDLE;
    if (n > 0)
        h = v[0];
    free(v);
    return h;
}

static CK_ULONG bit_length(const unsigned char *be, CK_ULONG len)
{
    CK_ULONG i = 0;
    unsigned char top;
    CK_ULONG bits;

    while (i < len && be[i] == 0)
        i++;
    if (i == len)
        return 0;
    top = be[i];
    bits = (len - i - 1) * 8;
    while (top) {
        bits++;
        top >>= 1;
    }
    return bits;
}

/* value as a DER OCTET STRING, as CKA_EC_POINT holds it; NULL on failure. */
static unsigned char *der_octet_string(const unsigned char *v, size_t len, CK_ULONG *out)
{
    unsigned char *d = len < 0x10000 ? malloc(len + 4) : NULL;
    size_t h = 0;

    if (d == NULL)
        return NULL;
    d[h++] = 0x04;
    if (len < 0x80) {
        d[h++] = (unsigned char)len;
    } else if (len < 0x100) {
        d[h++] = 0x81;
        d[h++] = (unsigned char)len;
    } else {
        d[h++] = 0x82;
        d[h++] = (unsigned char)(len >> 8);
        d[h++] = (unsigned char)len;
    }
    memcpy(d + h, v, len);
    *out = (CK_ULONG)(h + len);
    return d;
}

/* The public point of an EC or EdDSA key without a public-key object (smart
 * cards often hold only the private key and the certificate): from the
 * certificate with the same CKA_ID, if its key is of k's type. */
static void point_from_certificate(p11_key *k)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[3] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_ID, k->id, k->id_len},
        {CKA_TOKEN, &yes, sizeof(yes)},
    };
    CK_OBJECT_HANDLE *v;
    CK_ULONG n, len;
    unsigned char *der = NULL, pt[256];
    const unsigned char *p;
    X509 *x = NULL;
    EVP_PKEY *pk;
    size_t ptlen = 0;
    int ok = 0;

    if (k->id_len == 0 || p11_find_objects(k->tok, tmpl, 3, &v, &n) != CKR_OK)
        return;
    if (n > 0 && p11_read_attr(k->tok, v[0], CKA_VALUE, &der, &len) == CKR_OK) {
        p = der;
        x = d2i_X509(NULL, &p, (long)len);
    }
    free(v);
    free(der);
    pk = x != NULL ? X509_get0_pubkey(x) : NULL;
    if (pk != NULL && k->type == CKK_EC && EVP_PKEY_is_a(pk, "EC"))
        ok = EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt,
                                             sizeof(pt), &ptlen);
    else if (pk != NULL && k->type == CKK_EC_EDWARDS &&
             (EVP_PKEY_is_a(pk, "ED25519") || EVP_PKEY_is_a(pk, "ED448")))
        ok = EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt),
                                             &ptlen);
    if (ok)
        k->ec_point = der_octet_string(pt, ptlen, &k->ec_point_len);
    else if (x != NULL)
        p11_debug("%s: the certificate with its CKA_ID holds another type of key",
                  k->name);
    X509_free(x);
}

static CK_RV read_public_parts(p11_key *k)
{
    CK_OBJECT_HANDLE src;

    if (k->type == CKK_RSA) {
        /* RSA private objects carry the modulus and public exponent too. */
        src = k->pub != CK_INVALID_HANDLE ? k->pub : k->priv;
        if (p11_read_attr(k->tok, src, CKA_MODULUS, &k->modulus, &k->modulus_len) !=
                CKR_OK ||
            p11_read_attr(k->tok, src, CKA_PUBLIC_EXPONENT, &k->exponent,
                          &k->exponent_len) != CKR_OK) {
            if (src == k->pub || p11_read_attr(k->tok, k->priv, CKA_MODULUS, &k->modulus,
                                               &k->modulus_len) != CKR_OK)
                return p11_fail(CKR_ATTRIBUTE_TYPE_INVALID, "C_GetAttributeValue",
                                "CKA_MODULUS of %s", k->name);
        }
        k->bits = bit_length(k->modulus, k->modulus_len);
        return CKR_OK;
    }
    if (k->type == CKK_EC || k->type == CKK_EC_EDWARDS) {
        src = k->pub != CK_INVALID_HANDLE ? k->pub : k->priv;
        if (p11_read_attr(k->tok, src, CKA_EC_PARAMS, &k->ec_params, &k->ec_params_len) !=
            CKR_OK)
            return p11_fail(CKR_ATTRIBUTE_TYPE_INVALID, "C_GetAttributeValue",
                            "CKA_EC_PARAMS of %s", k->name);
        /* The point is on the public object; without one, some tokens give
         * it on the private object too, else the certificate has it. Without
         * any the key can still sign. */
        if (p11_read_attr(k->tok, src, CKA_EC_POINT, &k->ec_point, &k->ec_point_len) !=
                CKR_OK &&
            src == k->priv)
            point_from_certificate(k);
        p11_failure_clear();
        return CKR_OK;
    }
    return p11_fail(CKR_KEY_TYPE_INCONSISTENT, "C_GetAttributeValue",
                    "%s has key type 0x%lx, which hsmprov does not handle", k->name,
                    (unsigned long)k->type);
}

/* The private object's restrictions (see p11_key in p11_object.h). A token
 * that does not know the attributes restricts nothing. */
static void read_restrictions(p11_key *k)
{
    unsigned char *v;
    CK_ULONG len;

    if (p11_read_attr(k->tok, k->priv, CKA_ALWAYS_AUTHENTICATE, &v, &len) == CKR_OK) {
        k->always_auth = len == sizeof(CK_BBOOL) && v[0] == CK_TRUE;
        free(v);
    }
    if (p11_read_attr(k->tok, k->priv, CKA_ALLOWED_MECHANISMS, &v, &len) == CKR_OK) {
        /* An empty list is no restriction (PKCS#11 3.0 §4.4 leaves it
         * undefined; tokens write one when nothing was given). */
        if (len >= sizeof(CK_MECHANISM_TYPE) && len % sizeof(CK_MECHANISM_TYPE) == 0) {
            k->allowed = (CK_MECHANISM_TYPE *)v;
            k->n_allowed = len / sizeof(CK_MECHANISM_TYPE);
        } else {
            free(v);
        }
    }
    p11_failure_clear();
}

int p11_key_allows(const p11_key *k, CK_MECHANISM_TYPE mech)
{
    if (k->allowed == NULL)
        return 1;
    for (CK_ULONG i = 0; i < k->n_allowed; i++)
        if (k->allowed[i] == mech)
            return 1;
    return 0;
}

CK_RV p11_key_load(p11_token *t, CK_OBJECT_HANDLE o, p11_key **out)
{
    return p11_key_load_pair(t, o, CK_INVALID_HANDLE, out);
}

CK_RV p11_key_load_pair(p11_token *t, CK_OBJECT_HANDLE o, CK_OBJECT_HANDLE pub,
                        p11_key **out)
{
    p11_key *k = calloc(1, sizeof(*k));
    CK_ULONG len;
    CK_RV rv;

    *out = NULL;
    if (k == NULL)
        return CKR_HOST_MEMORY;
    atomic_init(&k->refs, 1);
    pthread_mutex_init(&k->refind_lock, NULL);
    k->tok = t;
    atomic_init(&k->gen, atomic_load(&t->m->gen));
    atomic_init(&k->epoch, atomic_load(&t->epoch));
    atomic_init(&k->checked_ms, monotonic_ms()); /* read from the token just now */
    atomic_init(&k->gone, 0);
    atomic_init(&k->uses, 0);
    rv = p11_read_ulong(t, o, CKA_CLASS, &k->cls);
    if (rv == CKR_OK)
        rv = p11_read_ulong(t, o, CKA_KEY_TYPE, &k->type);
    if (rv != CKR_OK) {
        free(k);
        return p11_fail(rv, "C_GetAttributeValue", "CKA_CLASS/CKA_KEY_TYPE of object %lu",
                        (unsigned long)o);
    }
    p11_read_attr(t, o, CKA_ID, &k->id, &k->id_len);
    p11_read_attr(t, o, CKA_LABEL, (unsigned char **)&k->label, &len);
    k->name = key_name(k);
    if (k->name == NULL) {
        p11_key_free(k);
        return CKR_HOST_MEMORY;
    }
    if (k->cls == CKO_PRIVATE_KEY) {
        k->priv = o;
        k->pub = pub != CK_INVALID_HANDLE ? pub : find_public(k);
        read_restrictions(k);
    } else {
        k->priv = CK_INVALID_HANDLE;
        k->pub = o;
    }
    rv = read_public_parts(k);
    if (rv != CKR_OK) {
        p11_key_free(k);
        return rv;
    }
    *out = k;
    return CKR_OK;
}

CK_OBJECT_HANDLE p11_key_private_handle(p11_key *k)
{
    p11_token *t = k->tok;
    unsigned gen = atomic_load(&t->m->gen), epoch = atomic_load(&t->epoch);
    CK_OBJECT_HANDLE h;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof(no)}};
    unsigned copy_gen;

    if (atomic_load(&k->copy_gen) == gen && atomic_load(&k->copy_epoch) == epoch)
        return atomic_load(&k->copy);
    if (!t->m->cache_keys || atomic_load(&k->copy_refused) ||
        k->priv == CK_INVALID_HANDLE)
        return k->priv;
    /* The first use is with the token object (p11_key.uses). */
    if (atomic_fetch_add(&k->uses, 1) == 0)
        return k->priv;
    pthread_mutex_lock(&k->refind_lock);
    /* Never a copy of a deleted key's handle, which may name another object. */
    if (atomic_load(&k->gone)) {
        pthread_mutex_unlock(&k->refind_lock);
        return CK_INVALID_HANDLE;
    }
    if (atomic_load(&k->copy_gen) != gen || atomic_load(&k->copy_epoch) != epoch) {
        CK_RV rv = p11_token_copy_object(t, k->priv, tmpl, 1, &h, &copy_gen);

        if (rv == CKR_OK) {
            atomic_store(&k->copy, h);
            atomic_store(&k->copy_epoch, epoch);
            atomic_store(&k->copy_gen, copy_gen);
        } else if (rv != CKR_SESSION_HANDLE_INVALID && rv != CKR_SESSION_CLOSED &&
                   rv != CKR_OBJECT_HANDLE_INVALID && rv != CKR_DEVICE_REMOVED &&
                   rv != CKR_TOKEN_NOT_PRESENT && rv != CKR_USER_NOT_LOGGED_IN) {
            /* The token will not copy this key (CKA_COPYABLE false, ...):
             * use the token object from now on. */
            atomic_store(&k->copy_refused, 1);
        }
        p11_failure_clear();
    }
    pthread_mutex_unlock(&k->refind_lock);
    return atomic_load(&k->copy_gen) == gen && atomic_load(&k->copy_epoch) == epoch
               ? atomic_load(&k->copy)
               : k->priv;
}

void p11_key_handle_failed(p11_key *k, CK_OBJECT_HANDLE h)
{
    pthread_mutex_lock(&k->refind_lock);
    if (atomic_load(&k->copy_gen) != 0 && atomic_load(&k->copy) == h)
        atomic_store(&k->copy_gen, 0);
    else if (k->priv == h || k->pub == h)
        atomic_store(&k->gen, 0); /* find the objects again */
    pthread_mutex_unlock(&k->refind_lock);
}

int p11_key_stale(void *obj, CK_OBJECT_HANDLE h)
{
    p11_key *k = obj;

    if (h == CK_INVALID_HANDLE || atomic_load(&k->gone))
        return 0;
    p11_key_handle_failed(k, h);
    return 1;
}

int p11_key_fresh(p11_key *k)
{
    return atomic_load(&k->epoch) == atomic_load(&k->tok->epoch) &&
           atomic_load(&k->gen) == atomic_load(&k->tok->m->gen);
}

void p11_key_up(p11_key *k)
{
    atomic_fetch_add(&k->refs, 1);
}

void p11_key_free(p11_key *k)
{
    if (k == NULL || atomic_fetch_sub(&k->refs, 1) > 1)
        return;
    if (atomic_load(&k->copy_gen) != 0 &&
        atomic_load(&k->copy_epoch) == atomic_load(&k->tok->epoch))
        p11_token_destroy_object(k->tok, atomic_load(&k->copy),
                                 atomic_load(&k->copy_gen));
    free(k->id);
    free(k->label);
    free(k->name);
    free(k->modulus);
    free(k->exponent);
    free(k->ec_params);
    free(k->ec_point);
    free(k->allowed);
    pthread_mutex_destroy(&k->refind_lock);
    free(k);
}

CK_RV p11_key_fail_gone(const p11_key *k)
{
    return p11_fail(CKR_OBJECT_HANDLE_INVALID, "C_GetAttributeValue",
                    "%s is gone: its private key object was deleted from the token, "
                    "and the key cannot be used any more",
                    k->name);
}

/* The identity a key is found again by (refind): class, key type, CKA_ID,
 * CKA_LABEL, token object. */
#define KEY_IDENTITY(k, cls, yes)                                                        \
    {                                                                                    \
        {CKA_CLASS, &(cls), sizeof(cls)}, {CKA_KEY_TYPE, &(k)->type, sizeof((k)->type)}, \
            {CKA_ID, (k)->id, (k)->id_len},                                              \
            {CKA_LABEL, (k)->label, (k)->label ? strlen((k)->label) : 0},                \
            {CKA_TOKEN, &(yes), sizeof(yes)},                                            \
    }

/* Whether o is k's private object: the attributes of its identity are k's.
 * *same is 0 for another object; rv is the call's answer otherwise. */
static CK_RV is_private_of(p11_key *k, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, int *same)
{
    CK_OBJECT_CLASS cls = CK_UNAVAILABLE_INFORMATION;
    CK_KEY_TYPE type = CK_UNAVAILABLE_INFORMATION;
    unsigned char *id = malloc(k->id_len + 1);
    CK_ATTRIBUTE a[3] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_ID, id, k->id_len},
    };
    CK_RV rv;

    *same = 0;
    if (id == NULL)
        return CKR_HOST_MEMORY;
    rv = P11_CALL(k->tok->m, C_GetAttributeValue, h, o, a, 3);
    if (rv == CKR_OK)
        *same = cls == CKO_PRIVATE_KEY && type == k->type &&
                a[2].ulValueLen == k->id_len && memcmp(id, k->id, k->id_len) == 0;
    else if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
             rv == CKR_ATTRIBUTE_SENSITIVE)
        rv = CKR_OK; /* a CKA_ID longer than ours, or no key at all */
    free(id);
    return rv;
}

/* k's private object looked up by identity on session h; CK_INVALID_HANDLE
 * in *found when there is none. */
static CK_RV find_private_on(p11_key *k, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE *found)
{
    p11_module *m = k->tok->m;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[5] = KEY_IDENTITY(k, cls, yes);
    CK_ULONG got = 0;
    CK_RV rv;

    *found = CK_INVALID_HANDLE;
    rv = p11_token_find_init(k->tok, h, tmpl, 5);
    if (rv != CKR_OK)
        return rv;
    rv = P11_CALL(m, C_FindObjects, h, found, 1, &got);
    P11_CALL(m, C_FindObjectsFinal, h);
    if (rv == CKR_OK && got == 0)
        *found = CK_INVALID_HANDLE;
    return rv;
}

/* Whether session h is logged in as the user, or the token needs no login:
 * only then does an empty search prove that a private object is gone. */
static int sees_private_objects(p11_key *k, CK_SESSION_HANDLE h)
{
    CK_SESSION_INFO si;

    if (!(k->tok->info.flags & CKF_LOGIN_REQUIRED))
        return 1;
    return P11_CALL(k->tok->m, C_GetSessionInfo, h, &si) == CKR_OK &&
           (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS);
}

/* Destroys k's copy, if it is of the current generation and epoch, and
 * forgets it. Called with refind_lock held. */
static void drop_copy(p11_key *k)
{
    unsigned copy_gen = atomic_load(&k->copy_gen);

    if (copy_gen != 0 && copy_gen == atomic_load(&k->tok->m->gen) &&
        atomic_load(&k->copy_epoch) == atomic_load(&k->tok->epoch))
        p11_token_destroy_object(k->tok, atomic_load(&k->copy), copy_gen);
    atomic_store(&k->copy_gen, 0);
}

CK_RV p11_key_check(p11_key *k, CK_SESSION_HANDLE h)
{
    long long now, last;
    CK_OBJECT_HANDLE o = atomic_load(&k->priv), found;
    int same;
    CK_RV rv;

    if (atomic_load(&k->gone))
        return p11_key_fail_gone(k);
    now = monotonic_ms();
    last = atomic_load(&k->checked_ms);
    if (now - last < (long long)k->tok->m->key_check_ms || o == CK_INVALID_HANDLE)
        return CKR_OK;
    /* One thread checks; the others go on with the key meanwhile. */
    if (!atomic_compare_exchange_strong(&k->checked_ms, &last, now))
        return CKR_OK;
    rv = is_private_of(k, h, o, &same);
    if (rv == CKR_OK && same)
        return CKR_OK;
    /* The handle is dead or names another object (tokens reuse handle
     * numbers): is the key still there under another handle? */
    if ((rv == CKR_OK || rv == CKR_OBJECT_HANDLE_INVALID) &&
        find_private_on(k, h, &found) == CKR_OK &&
        (found != CK_INVALID_HANDLE || sees_private_objects(k, h))) {
        pthread_mutex_lock(&k->refind_lock);
        if (found == CK_INVALID_HANDLE) {
            atomic_store(&k->gone, 1);
            drop_copy(k);
            pthread_mutex_unlock(&k->refind_lock);
            p11_debug("%s: private key object deleted from the token", k->name);
            return p11_key_fail_gone(k);
        }
        /* Deleted and made again with the same identity: another key, which
         * the copy is not. Find it again and copy it anew. */
        if (atomic_load(&k->priv) == o) {
            drop_copy(k);
            atomic_store(&k->gen, 0);
        }
        pthread_mutex_unlock(&k->refind_lock);
        return CKR_OBJECT_HANDLE_INVALID; /* no failure: the caller retries */
    }
    /* Not decidable now (session or login lost, token removed): the
     * operation meets that itself; the next use checks again. */
    atomic_store(&k->checked_ms, last);
    p11_failure_clear();
    return CKR_OK;
}

static CK_OBJECT_HANDLE refind(p11_key *k, CK_OBJECT_CLASS cls)
{
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[5] = KEY_IDENTITY(k, cls, yes);
    CK_OBJECT_HANDLE *v, h = CK_INVALID_HANDLE;
    CK_ULONG n;

    if (p11_find_objects(k->tok, tmpl, 5, &v, &n) != CKR_OK)
        return CK_INVALID_HANDLE;
    if (n > 0)
        h = v[0];
    free(v);
    return h;
}

static CK_RV refind_both(p11_key *k, unsigned gen);

CK_RV p11_key_current(p11_key *k)
{
    p11_module *m = k->tok->m;
    unsigned gen;
    CK_RV rv;

    if (atomic_load(&k->gone))
        return p11_key_fail_gone(k);
    rv = p11_module_ready(m);
    if (rv != CKR_OK)
        return rv;
    gen = atomic_load(&m->gen);
    if (p11_key_fresh(k))
        return CKR_OK;
    pthread_mutex_lock(&k->refind_lock);
    rv = p11_key_fresh(k) ? CKR_OK : refind_both(k, gen);
    pthread_mutex_unlock(&k->refind_lock);
    return rv;
}

/* Called with refind_lock held. */
static CK_RV refind_both(p11_key *k, unsigned gen)
{
    unsigned epoch = atomic_load(&k->tok->epoch);
    CK_OBJECT_HANDLE priv, pub;
    CK_RV rv;

    /* Private objects are invisible until we are logged in again. */
    if (k->priv != CK_INVALID_HANDLE && p11_token_needs_login(k->tok)) {
        rv = p11_token_relogin(k->tok);
        if (rv != CKR_OK)
            return rv;
    }
    priv = k->priv != CK_INVALID_HANDLE ? refind(k, CKO_PRIVATE_KEY) : CK_INVALID_HANDLE;
    if (k->priv != CK_INVALID_HANDLE && priv == CK_INVALID_HANDLE &&
        (k->tok->info.flags & CKF_LOGIN_REQUIRED)) {
        /* The token may have forgotten our login (removed and back):
         * private objects are invisible until we log in again. */
        if (p11_token_relogin(k->tok) == CKR_OK)
            priv = refind(k, CKO_PRIVATE_KEY);
    }
    pub = k->pub != CK_INVALID_HANDLE ? refind(k, CKO_PUBLIC_KEY) : CK_INVALID_HANDLE;
    if ((k->priv != CK_INVALID_HANDLE && priv == CK_INVALID_HANDLE) ||
        (k->priv == CK_INVALID_HANDLE && pub == CK_INVALID_HANDLE))
        return p11_fail(CKR_OBJECT_HANDLE_INVALID, "C_FindObjects",
                        "%s is no longer on the token", k->name);
    k->priv = priv;
    k->pub = pub;
    atomic_store(&k->epoch, epoch);
    atomic_store(&k->gen, gen);
    return CKR_OK;
}
