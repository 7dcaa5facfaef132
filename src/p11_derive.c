#include "p11_derive.h"

#include "p11_crypt.h"
#include "p11_failure.h"
#include "p11_recover.h"

#include <openssl/crypto.h>
#include <string.h>

/* One attempt, on the lease l (acquired here if not held): derive, read the
 * value, destroy the object. A failure is recorded; the lease is left to
 * p11_recover. */
static CK_RV derive_once(p11_key *k, CK_MECHANISM *mech, CK_ULONG secret_len,
                         unsigned char *out, p11_lease *l, p11_recovery *r)
{
    p11_token *t = k->tok;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_TOKEN, &no, sizeof(no)},
        /* Not sensitive and extractable: the secret is what OpenSSL asked
         * for, so it must be readable; it lives in the token only for the
         * few calls below. */
        {CKA_SENSITIVE, &no, sizeof(no)},
        {CKA_EXTRACTABLE, &yes, sizeof(yes)},
        {CKA_VALUE_LEN, &secret_len, sizeof(secret_len)},
    };
    unsigned char value[P11_ECDH_SECRET_MAX];
    CK_ATTRIBUTE a = {CKA_VALUE, value, sizeof(value)};
    CK_OBJECT_HANDLE h, secret = CK_INVALID_HANDLE;
    CK_RV rv;

    p11_recovery_start(r, t);
    rv = p11_key_current(k);
    r->stale = p11_key_stale;
    r->obj = k;
    r->h = k->priv;
    if (rv != CKR_OK)
        return rv;
    h = p11_key_private_handle(k);
    r->h = h;
    if (h == CK_INVALID_HANDLE)
        return p11_fail(CKR_KEY_HANDLE_INVALID, "C_DeriveKey",
                        "%s has no private key object on the token", k->name);
    if (l->pool == NULL) {
        rv = p11_lease_acquire(t->pool, l);
        if (rv != CKR_OK)
            return rv;
    }
    /* A handle from before a loss may name another object now. */
    if (!p11_key_fresh(k))
        return p11_fail(CKR_OBJECT_HANDLE_INVALID, "C_DeriveKey",
                        "%s: the token lost its sessions since the key was found",
                        k->name);
    rv = p11_key_check(k, l->h);
    if (rv != CKR_OK)
        return rv;
    rv = P11_CALL(t->m, C_DeriveKey, l->h, mech, h, tmpl, sizeof(tmpl) / sizeof(tmpl[0]),
                  &secret);
    if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED)
        return p11_fail(rv, "C_DeriveKey",
                        "%s with CKM_ECDH1_DERIVE: the key's CKA_DERIVE is false, so the "
                        "token does not allow key exchange with it",
                        k->name);
    if (rv != CKR_OK)
        return p11_fail_mech(rv, "C_DeriveKey", mech, k->name);
    rv = P11_CALL(t->m, C_GetAttributeValue, l->h, secret, &a, 1);
    /* The secret object goes whatever the read answered. */
    P11_CALL(t->m, C_DestroyObject, l->h, secret);
    if (rv == CKR_OK && a.ulValueLen != secret_len)
        rv = p11_fail(CKR_KEY_SIZE_RANGE, "C_DeriveKey",
                      "%s: the token derived a secret of %lu bytes, not %lu", k->name,
                      (unsigned long)a.ulValueLen, (unsigned long)secret_len);
    else if (rv != CKR_OK)
        p11_fail(rv, "C_GetAttributeValue", "CKA_VALUE of the secret derived with %s",
                 k->name);
    else
        memcpy(out, value, secret_len);
    OPENSSL_cleanse(value, sizeof(value));
    return rv;
}

CK_RV p11_ecdh_derive(p11_key *k, const unsigned char *peer, CK_ULONG peer_len,
                      CK_ULONG secret_len, unsigned char *out)
{
    CK_ECDH1_DERIVE_PARAMS params = {CKD_NULL, 0, NULL, peer_len, (CK_BYTE *)peer};
    CK_MECHANISM mech = {CKM_ECDH1_DERIVE, &params, sizeof(params)};
    p11_recovery r = P11_RECOVERY_INIT;
    p11_lease l = P11_LEASE_INIT;
    CK_RV rv;

    if (secret_len == 0 || secret_len > P11_ECDH_SECRET_MAX)
        return p11_fail(CKR_KEY_SIZE_RANGE, "C_DeriveKey",
                        "%s: a shared secret of %lu bytes is not one of ECDH", k->name,
                        (unsigned long)secret_len);
    rv = p11_module_ready(k->tok->m);
    if (rv != CKR_OK)
        return rv;
    do
        rv = derive_once(k, &mech, secret_len, out, &l, &r);
    while (p11_recover(&r, k->tok, &l, rv) == P11_RETRY);
    p11_lease_release(&l);
    /* Found deleted while this ran: its copy was destroyed under it. */
    if (rv != CKR_OK && atomic_load(&k->gone))
        return p11_key_fail_gone(k);
    return rv;
}
