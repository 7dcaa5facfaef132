#include "p11_crypt.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <stdio.h>

struct op_calls {
    const char *init_name, *op_name;
};

static const struct op_calls calls[] = {
    [P11_SIGN] = {"C_SignInit", "C_Sign"},
    [P11_VERIFY] = {"C_VerifyInit", "C_Verify"},
    [P11_ENCRYPT] = {"C_EncryptInit", "C_Encrypt"},
    [P11_DECRYPT] = {"C_DecryptInit", "C_Decrypt"},
};

CK_RV p11_call_init(p11_module *m, p11_op_kind kind, CK_SESSION_HANDLE h,
                    CK_MECHANISM *mech, CK_OBJECT_HANDLE o)
{
    switch (kind) {
    case P11_SIGN:
        return P11_CALL(m, C_SignInit, h, mech, o);
    case P11_VERIFY:
        return P11_CALL(m, C_VerifyInit, h, mech, o);
    case P11_ENCRYPT:
        return P11_CALL(m, C_EncryptInit, h, mech, o);
    case P11_DECRYPT:
        return P11_CALL(m, C_DecryptInit, h, mech, o);
    case P11_DIGEST:
        return P11_CALL(m, C_DigestInit, h, mech);
    }
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV op_run(p11_module *m, p11_op_kind kind, CK_SESSION_HANDLE h,
                    const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                    CK_ULONG *outlen)
{
    switch (kind) {
    case P11_SIGN:
        return P11_CALL(m, C_Sign, h, (CK_BYTE *)in, inlen, out, outlen);
    case P11_VERIFY:
        return P11_CALL(m, C_Verify, h, (CK_BYTE *)in, inlen, out, *outlen);
    case P11_ENCRYPT:
        return P11_CALL(m, C_Encrypt, h, (CK_BYTE *)in, inlen, out, outlen);
    case P11_DECRYPT:
        return P11_CALL(m, C_Decrypt, h, (CK_BYTE *)in, inlen, out, outlen);
    case P11_DIGEST:
        break;
    }
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV p11_fail_mech(CK_RV rv, const char *call, CK_MECHANISM *mech, const char *name)
{
    const char *mn = p11_mech_name(mech->mechanism);

    if (mn != NULL)
        return p11_fail(rv, call, "%s with %s", name, mn);
    return p11_fail(rv, call, "%s with mechanism 0x%lx", name,
                    (unsigned long)mech->mechanism);
}

CK_RV p11_oneshot(p11_key *k, p11_op_kind kind, CK_MECHANISM *mech,
                  const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                  CK_ULONG *outlen)
{
    int uses_private = kind == P11_SIGN || kind == P11_DECRYPT;
    p11_token *t = k->tok;
    CK_ULONG cap = *outlen;

    if (kind == P11_DIGEST)
        return CKR_FUNCTION_NOT_SUPPORTED;

    /* Each kind of recovery once per loss. They chain: a lost session takes
     * the login and the key copy with it, so the retry on a fresh session
     * meets CKR_USER_NOT_LOGGED_IN or CKR_OBJECT_HANDLE_INVALID next, and
     * must recover from that too. A further loss while recovering (a new
     * token epoch) earns a new round, up to a bound. */
    int session_retried = 0, login_retried = 0, object_retried = 0, stale_retries = 0;
    int rounds = 0;
    unsigned epoch_seen = atomic_load(&t->epoch);

    for (;;) {
        p11_lease l = P11_LEASE_INIT;
        const char *call;
        CK_OBJECT_HANDLE o;
        CK_RV rv;

        if (atomic_load(&t->epoch) != epoch_seen && rounds++ < 4) {
            epoch_seen = atomic_load(&t->epoch);
            session_retried = login_retried = object_retried = 0;
        }
        rv = p11_key_current(k);
        if (rv == CKR_OBJECT_HANDLE_INVALID && atomic_load(&t->epoch) != epoch_seen &&
            rounds < 4)
            continue; /* lost again while finding the key: a new round */
        if (rv != CKR_OK)
            return rv;
        o = uses_private ? p11_key_private_handle(k) : k->pub;
        if (o == CK_INVALID_HANDLE)
            return p11_fail(CKR_KEY_HANDLE_INVALID, calls[kind].init_name,
                            "%s has no %s key object on the token", k->name,
                            uses_private ? "private" : "public");
        rv = p11_lease_acquire(t->pool, &l);
        if (rv != CKR_OK)
            return rv;
        if (!p11_key_fresh(k) && stale_retries++ < 8) {
            /* The token lost sessions or login between our look-up and
             * this lease: o may now name another object. */
            p11_lease_release(&l);
            continue;
        }
        call = calls[kind].init_name;
        /* A copy outlives its token object: confirm now and then that the
         * key was not deleted (cheap when not due). */
        rv = uses_private ? p11_key_check(k, l.h) : CKR_OK;
        if (rv != CKR_OK && atomic_load(&k->gone)) {
            p11_lease_release(&l);
            return rv;
        }
        if (rv == CKR_OK)
            rv = p11_call_init(t->m, kind, l.h, mech, o);
        if (rv == CKR_OK) {
            call = calls[kind].op_name;
            *outlen = cap;
            rv = op_run(t->m, kind, l.h, in, inlen, out, outlen);
        }
        if (rv == CKR_OK || (kind == P11_VERIFY && (rv == CKR_SIGNATURE_INVALID ||
                                                    rv == CKR_SIGNATURE_LEN_RANGE))) {
            p11_lease_release(&l);
            return rv;
        }
        switch (rv) {
        case CKR_BUFFER_TOO_SMALL:
        case CKR_FUNCTION_NOT_SUPPORTED:
            /* The operation is still active on the session (after a short
             * buffer, or when the module lacks the step after the init):
             * closing the session is the one sure way to end it. */
            p11_lease_discard(&l);
            break;
        case CKR_SESSION_HANDLE_INVALID:
        case CKR_SESSION_CLOSED:
            /* Sessions seldom die alone: reopen them all before use. */
            p11_token_lost(t, 1);
            p11_lease_discard(&l);
            if (!session_retried++)
                continue;
            break;
        case CKR_USER_NOT_LOGGED_IN:
            p11_lease_release(&l);
            /* Tokens may renumber private objects when the login goes. */
            p11_token_lost(t, 0);
            if (!login_retried++ && p11_token_relogin(t) == CKR_OK)
                continue;
            break;
        case CKR_OBJECT_HANDLE_INVALID:
        case CKR_KEY_HANDLE_INVALID:
        case CKR_KEY_FUNCTION_NOT_PERMITTED:
        case CKR_KEY_TYPE_INCONSISTENT:
            /* A handle of ours that is invalid, or names a key unfit for
             * this, is most likely stale: the token renumbered its objects. */
            p11_lease_release(&l);
            if (!object_retried++) {
                /* The copy died with its session, or the token renumbered
                 * its objects: find them again. */
                p11_key_handle_failed(k, o);
                continue;
            }
            break;
        case CKR_DEVICE_REMOVED:
        case CKR_TOKEN_NOT_PRESENT:
        case CKR_DEVICE_ERROR:
            /* Fail now; when the token is back, fresh sessions, a fresh
             * login and the objects found again make it work (no restart). */
            p11_token_lost(t, 1);
            p11_lease_discard(&l);
            break;
        default:
            /* Any other error ends the operation (PKCS#11 §5.2). */
            p11_lease_release(&l);
            break;
        }
        /* Found deleted while this operation ran: its copy was destroyed
         * under it, and the token's complaint is beside the point. */
        if (uses_private && atomic_load(&k->gone))
            return p11_key_fail_gone(k);
        return p11_fail_mech(rv, call, mech, k->name);
    }
}
