#include "p11_random.h"

#include "p11_failure.h"
#include "p11_recover.h"

#include <stdlib.h>

CK_RV p11_token_with_rng(p11_module *m, p11_token **out)
{
    p11_token **v = NULL;
    size_t n = 0;
    CK_RV rv = p11_token_list(m, &v, &n);

    *out = NULL;
    for (size_t i = 0; rv == CKR_OK && i < n && *out == NULL; i++)
        if ((v[i]->info.flags & CKF_TOKEN_INITIALIZED) && (v[i]->info.flags & CKF_RNG))
            *out = v[i];
    free(v);
    if (rv != CKR_OK)
        return rv;
    if (*out != NULL)
        return CKR_OK;
    return n == 0 ? p11_fail(CKR_TOKEN_NOT_PRESENT, "C_GetSlotList",
                             "module %s has no token", m->path)
                  : p11_fail(CKR_RANDOM_NO_RNG, "C_GetTokenInfo",
                             "no token of module %s has a random number generator "
                             "(CKF_RNG)",
                             m->path);
}

CK_RV p11_random(p11_token *t, unsigned char *out, size_t len)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_lease l = P11_LEASE_INIT;
    CK_RV rv;

    rv = p11_module_ready(t->m);
    if (rv != CKR_OK)
        return rv;
    /* No object, no login needed: only a lost session is worth a retry. */
    r.allow = P11_ALLOW(P11_ACT_SESSION);
    do {
        rv = p11_lease_acquire(t->pool, &l);
        if (rv != CKR_OK)
            break; /* no lease, nothing to recover */
        rv = P11_CALL(t->m, C_GenerateRandom, l.h, out, (CK_ULONG)len);
        if (rv != CKR_OK)
            p11_fail(rv, "C_GenerateRandom", "token \"%s\": %zu random bytes", t->label,
                     len);
    } while (p11_recover(&r, t, &l, rv) == P11_RETRY);
    p11_lease_release(&l);
    return rv;
}
