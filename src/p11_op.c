#include "p11_op.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_recover.h"

#include <openssl/crypto.h>
#include <stdio.h>

/* Indexed by p11_op_kind: P11_DIGEST included. */
static const char *const init_names[] = {"C_SignInit", "C_VerifyInit", "C_EncryptInit",
                                         "C_DecryptInit", "C_DigestInit"};
static const char *const update_names[] = {"C_SignUpdate", "C_VerifyUpdate",
                                           "C_EncryptUpdate", "C_DecryptUpdate",
                                           "C_DigestUpdate"};
static const char *const final_names[] = {
    "C_SignFinal", "C_VerifyFinal", "C_EncryptFinal", "C_DecryptFinal", "C_DigestFinal"};
static const char *const oneshot_names[] = {"C_Sign", "C_Verify", "C_Encrypt",
                                            "C_Decrypt", "C_Digest"};

/* The operation ended (or never started): give the session back, unless
 * the context keeps it for a next step (p11_op_keep). */
static void done(p11_op *op)
{
    op->active = 0;
    if (!op->keep)
        p11_lease_release(&op->lease);
}

/* One attempt at C_<kind>Init with object o on a leased session of t, for a
 * p11_recover loop: a failure is recorded, and the lease left to p11_recover.
 * o was valid in token epoch `epoch` (and, for a key k, in its module
 * generation): a handle from an older one may name another object now, so
 * rather than use it, answer CKR_OBJECT_HANDLE_INVALID and have it found (or
 * made) again. */
static CK_RV init_once(p11_op *op, p11_token *t, p11_key *k, p11_op_kind kind,
                       CK_MECHANISM *mech, CK_OBJECT_HANDLE o, const char *name,
                       unsigned epoch)
{
    CK_RV rv;

    /* Re-init: whatever ran on our session is ended first. (On a retry
     * there is nothing: p11_recover gave the lease back.) */
    if (op->active)
        p11_op_abort(op);
    p11_lease_forget_stale(&op->lease);
    if (op->lease.pool != NULL && op->tok != t)
        p11_lease_release(&op->lease);
    /* After fork, the child's first use re-initialises the module (and
     * resets the pool) before any session is leased: a session from the
     * parent is never used. Cheap when the module is ready. */
    rv = p11_module_ready(t->m);
    if (rv != CKR_OK)
        return rv;
    op->tok = t;
    op->kind = kind;
    op->key = k != NULL && (kind == P11_SIGN || kind == P11_DECRYPT) ? k : NULL;
    if (op->lease.pool == NULL) {
        rv = p11_lease_acquire(t->pool, &op->lease);
        if (rv != CKR_OK)
            return rv;
    } else {
        p11_lease_touch(&op->lease);
    }
    if (o != CK_INVALID_HANDLE &&
        (atomic_load(&t->epoch) != epoch || (k != NULL && !p11_key_fresh(k))))
        return p11_fail(CKR_OBJECT_HANDLE_INVALID, init_names[kind],
                        "%s: the token lost its sessions since the key was found", name);
    /* A copy outlives its token object: confirm now and then that the key
     * was not deleted (cheap when not due). */
    if (op->key != NULL) {
        rv = p11_key_check(k, op->lease.h);
        if (rv != CKR_OK)
            return rv;
    }
    rv = p11_call_init(t->m, kind, op->lease.h, mech, o);
    if (rv != CKR_OK)
        return p11_fail_mech(rv, init_names[kind], mech, name);
    op->active = 1;
    /* A key that wants the PIN for each use: the login belongs to this
     * operation, so it follows its Init on the same session. */
    if (op->key != NULL && k->always_auth) {
        rv = p11_token_context_login(t, op->lease.h, name);
        if (rv != CKR_OK) {
            /* The operation waits for a login that will not come: only
             * closing the session surely ends it. */
            op->active = 0;
            op->keep = 0;
            p11_lease_discard(&op->lease);
            return rv;
        }
    }
    return CKR_OK;
}

CK_RV p11_op_init_obj_once(p11_op *op, p11_token *t, p11_op_kind kind, CK_MECHANISM *mech,
                           CK_OBJECT_HANDLE o, const char *name, p11_recovery *r)
{
    p11_recovery_start(r, t);
    r->h = o;
    return init_once(op, t, NULL, kind, mech, o, name, p11_recovery_epoch(r, t));
}

CK_RV p11_op_init_obj(p11_op *op, p11_token *t, p11_op_kind kind, CK_MECHANISM *mech,
                      CK_OBJECT_HANDLE o, const char *name)
{
    p11_recovery r = P11_RECOVERY_INIT;
    CK_RV rv;

    do
        rv = p11_op_init_obj_once(op, t, kind, mech, o, name, &r);
    while (p11_recover(&r, t, &op->lease, rv) == P11_RETRY);
    return rv;
}

CK_RV p11_op_digest_init(p11_op *op, p11_token *t, CK_MECHANISM *mech)
{
    return p11_op_init_obj(op, t, P11_DIGEST, mech, CK_INVALID_HANDLE, t->label);
}

CK_RV p11_op_init_key_once(p11_op *op, p11_key *k, p11_op_kind kind, CK_MECHANISM *mech,
                           p11_recovery *r)
{
    int priv = kind == P11_SIGN || kind == P11_DECRYPT;
    CK_RV rv;

    p11_recovery_start(r, k->tok);
    rv = p11_key_current(k);
    r->stale = p11_key_stale;
    r->obj = k;
    /* Not found again: the search may have met a further loss (the token
     * forgot the login while we searched), so it is worth another look;
     * the budget decides whether it gets one. */
    r->h = priv ? k->priv : k->pub;
    if (rv != CKR_OK)
        return rv;
    r->h = priv ? p11_key_private_handle(k) : k->pub;
    if (r->h == CK_INVALID_HANDLE)
        return p11_fail(CKR_KEY_HANDLE_INVALID, init_names[kind],
                        "%s has no %s key object on the token", k->name,
                        priv ? "private" : "public");
    return init_once(op, k->tok, k, kind, mech, r->h, k->name, atomic_load(&k->epoch));
}

CK_RV p11_op_init(p11_op *op, p11_key *k, p11_op_kind kind, CK_MECHANISM *mech)
{
    p11_recovery r = P11_RECOVERY_INIT;
    CK_RV rv;

    do
        rv = p11_op_init_key_once(op, k, kind, mech, &r);
    while (p11_recover(&r, k->tok, &op->lease, rv) == P11_RETRY);
    return rv;
}

/* A step failed: PKCS#11 §5.2 says that ended the operation, but modules
 * differ (NSS's softokn refuses C_EncryptUpdate for AES-GCM and keeps the
 * operation), and a session that goes back to the pool with an operation
 * running fails the next, unrelated user with CKR_OPERATION_ACTIVE. So the
 * session goes back only once nothing can run on it: cancelled where the
 * module has C_SessionCancel (which ends nothing that already ended),
 * otherwise closed. Failures are rare; a closed session costs one
 * C_OpenSession at the next lease. */
static void end_or_discard(p11_op *op)
{
    op->active = 0;
    if (op->lease.pool != NULL &&
        p11_session_cancel(op->tok->m, op->lease.h, op->kind) == CKR_OK) {
        done(op);
        return;
    }
    op->keep = 0;
    p11_lease_discard(&op->lease);
}

static CK_RV op_failed(p11_op *op, CK_RV rv, const char *call)
{
    /* A step the module lacks was never called: the operation is still
     * active, and only closing the session surely ends it. */
    p11_action act = p11_recover_action(op->tok, rv, atomic_load(&op->tok->m->gen));

    if (rv == CKR_BUFFER_TOO_SMALL) {
        p11_op_abort(op); /* still active: cancel it as for any abandoned one */
    } else if (act == P11_ACT_SESSION || act == P11_ACT_TOKEN_GONE ||
               act == P11_ACT_MODULE) {
        /* No retry mid-stream (the data given so far is gone with the
         * session), but the loss is declared as the policy would. */
        p11_token_lost(op->tok, 1);
        p11_lease_discard(&op->lease);
        op->active = 0;
    } else if (p11_recover_discards_session(rv)) {
        p11_lease_discard(&op->lease);
        op->active = 0;
    } else {
        end_or_discard(op);
    }
    /* As in p11_oneshot: the key was found deleted while this ran. */
    if (op->key != NULL && atomic_load(&op->key->gone))
        return p11_key_fail_gone(op->key);
    return p11_fail(rv, call, "token \"%s\"", op->tok->label);
}

/* The checks every step of a running operation makes first: one is
 * running, its session is not from before fork or re-initialisation, and the
 * lease now counts as the calling thread's (a context may change threads). */
static CK_RV op_enter(p11_op *op, const char *call)
{
    if (!op->active)
        return p11_fail(CKR_OPERATION_NOT_INITIALIZED, call,
                        "no operation is running on this context");
    if (p11_lease_forget_stale(&op->lease)) {
        op->active = 0;
        op->keep = 0;
        return p11_fail(CKR_SESSION_HANDLE_INVALID, call,
                        "the operation began before fork() or before the module was "
                        "re-initialised; its token session is gone: start it again");
    }
    p11_lease_touch(&op->lease);
    return CKR_OK;
}

CK_RV p11_op_update(p11_op *op, const unsigned char *in, CK_ULONG inlen,
                    unsigned char *out, CK_ULONG *outlen)
{
    p11_module *m;
    CK_SESSION_HANDLE h;
    CK_RV rv;

    rv = op_enter(op, update_names[op->kind]);
    if (rv != CKR_OK)
        return rv;
    m = op->tok->m;
    h = op->lease.h;
    switch (op->kind) {
    case P11_SIGN:
        rv = P11_CALL(m, C_SignUpdate, h, (CK_BYTE *)in, inlen);
        break;
    case P11_VERIFY:
        rv = P11_CALL(m, C_VerifyUpdate, h, (CK_BYTE *)in, inlen);
        break;
    case P11_ENCRYPT:
        rv = P11_CALL(m, C_EncryptUpdate, h, (CK_BYTE *)in, inlen, out, outlen);
        break;
    case P11_DECRYPT:
        rv = P11_CALL(m, C_DecryptUpdate, h, (CK_BYTE *)in, inlen, out, outlen);
        break;
    case P11_DIGEST:
        rv = P11_CALL(m, C_DigestUpdate, h, (CK_BYTE *)in, inlen);
        break;
    default:
        rv = CKR_FUNCTION_NOT_SUPPORTED;
    }
    if (rv != CKR_OK)
        return op_failed(op, rv, update_names[op->kind]);
    return CKR_OK;
}

CK_RV p11_op_final(p11_op *op, unsigned char *out, CK_ULONG *outlen)
{
    p11_module *m;
    CK_SESSION_HANDLE h;
    CK_RV rv;

    rv = op_enter(op, final_names[op->kind]);
    if (rv != CKR_OK)
        return rv;
    m = op->tok->m;
    h = op->lease.h;
    switch (op->kind) {
    case P11_SIGN:
        rv = P11_CALL(m, C_SignFinal, h, out, outlen);
        break;
    case P11_VERIFY:
        rv = P11_CALL(m, C_VerifyFinal, h, out, *outlen);
        if (rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE) {
            done(op);
            return rv;
        }
        break;
    case P11_ENCRYPT:
        rv = P11_CALL(m, C_EncryptFinal, h, out, outlen);
        break;
    case P11_DECRYPT:
        rv = P11_CALL(m, C_DecryptFinal, h, out, outlen);
        break;
    case P11_DIGEST:
        rv = P11_CALL(m, C_DigestFinal, h, out, outlen);
        break;
    default:
        rv = CKR_FUNCTION_NOT_SUPPORTED;
    }
    if (rv != CKR_OK)
        return op_failed(op, rv, final_names[op->kind]);
    if (out != NULL || op->kind == P11_VERIFY)
        done(op); /* a size query (out == NULL) keeps the operation */
    return CKR_OK;
}

CK_RV p11_op_oneshot(p11_op *op, const unsigned char *in, CK_ULONG inlen,
                     unsigned char *out, CK_ULONG *outlen)
{
    p11_module *m;
    CK_SESSION_HANDLE h;
    CK_RV rv;

    rv = op_enter(op, oneshot_names[op->kind]);
    if (rv != CKR_OK)
        return rv;
    m = op->tok->m;
    h = op->lease.h;
    switch (op->kind) {
    case P11_SIGN:
        rv = P11_CALL(m, C_Sign, h, (CK_BYTE *)in, inlen, out, outlen);
        break;
    case P11_VERIFY:
        rv = P11_CALL(m, C_Verify, h, (CK_BYTE *)in, inlen, out, *outlen);
        if (rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE) {
            done(op);
            return rv;
        }
        break;
    case P11_ENCRYPT:
        rv = P11_CALL(m, C_Encrypt, h, (CK_BYTE *)in, inlen, out, outlen);
        break;
    case P11_DECRYPT:
        rv = P11_CALL(m, C_Decrypt, h, (CK_BYTE *)in, inlen, out, outlen);
        break;
    case P11_DIGEST:
        rv = P11_CALL(m, C_Digest, h, (CK_BYTE *)in, inlen, out, outlen);
        break;
    default:
        rv = CKR_FUNCTION_NOT_SUPPORTED;
    }
    if (rv != CKR_OK)
        return op_failed(op, rv, oneshot_names[op->kind]);
    if (out != NULL || op->kind == P11_VERIFY)
        done(op);
    return CKR_OK;
}

void p11_op_abort(p11_op *op)
{
    p11_module *m;
    CK_SESSION_HANDLE h;
    unsigned char scratch[1024];
    CK_ULONG len = sizeof(scratch);
    CK_RV rv;

    if (op->lease.pool == NULL || p11_lease_forget_stale(&op->lease)) {
        /* Nothing leased, or a session that is not ours (the parent's after
         * fork): nothing to end here. */
        op->active = 0;
        op->keep = 0;
        return;
    }
    op->keep = 0;
    if (!op->active) {
        p11_lease_release(&op->lease);
        return;
    }
    m = op->tok->m;
    h = op->lease.h;
    rv = p11_session_cancel(m, h, op->kind);
    if (rv != CKR_OK) {
        /* No C_SessionCancel: a final call ends the operation, whatever it
         * answers, unless the scratch buffer is too small. */
        switch (op->kind) {
        case P11_SIGN:
            rv = P11_CALL(m, C_SignFinal, h, scratch, &len);
            break;
        case P11_VERIFY:
            rv = P11_CALL(m, C_VerifyFinal, h, scratch, 1);
            break;
        case P11_ENCRYPT:
            rv = P11_CALL(m, C_EncryptFinal, h, scratch, &len);
            break;
        case P11_DECRYPT:
            rv = P11_CALL(m, C_DecryptFinal, h, scratch, &len);
            break;
        case P11_DIGEST:
            rv = P11_CALL(m, C_DigestFinal, h, scratch, &len);
            break;
        }
        OPENSSL_cleanse(scratch, sizeof(scratch));
        if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_SESSION_HANDLE_INVALID ||
            rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_REMOVED ||
            rv == CKR_FUNCTION_NOT_SUPPORTED) {
            /* Still active, or unknowable: the session goes, not back to the
             * pool. */
            op->active = 0;
            p11_lease_discard(&op->lease);
            return;
        }
    }
    done(op);
}

/* One-shot operations: an init and one call on an operation like any other. */
static const struct {
    const char *op_name;
} calls[] = {
    [P11_SIGN] = {"C_Sign"},
    [P11_VERIFY] = {"C_Verify"},
    [P11_ENCRYPT] = {"C_Encrypt"},
    [P11_DECRYPT] = {"C_Decrypt"},
};

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

CK_RV p11_oneshot(p11_key *k, p11_op_kind kind, CK_MECHANISM *mech,
                  const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                  CK_ULONG *outlen)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_op op = P11_OP_INIT;
    CK_ULONG cap = *outlen;
    CK_RV rv;

    if (kind == P11_DIGEST)
        return CKR_FUNCTION_NOT_SUPPORTED;
    /* An init and one call on an operation like any other, recovered as a
     * whole: a session lost at the call takes the init with it. */
    do {
        unsigned epoch = atomic_load(&k->tok->epoch);

        rv = p11_op_init_key_once(&op, k, kind, mech, &r);
        if (rv != CKR_OK)
            continue;
        *outlen = cap;
        rv = op_run(k->tok->m, kind, op.lease.h, in, inlen, out, outlen);
        /* The token lost its sessions while the call ran (another thread
         * met the loss and declared it): the key copy the operation used
         * may have gone with them, and a module then answers what it
         * likes (SoftHSM2: CKR_GENERAL_ERROR). The answer is about a
         * session that is gone: recover as from a lost session. */
        if (rv != CKR_OK && p11_recover_classify(rv) == P11_ACT_NONE &&
            atomic_load(&k->tok->epoch) != epoch &&
            !(kind == P11_VERIFY &&
              (rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE)))
            rv = CKR_SESSION_CLOSED;
        /* Ended, whatever the answer (PKCS#11 §5.2), or p11_recover closes
         * the session it still runs on. */
        op.active = 0;
        if (rv != CKR_OK && !(kind == P11_VERIFY && (rv == CKR_SIGNATURE_INVALID ||
                                                     rv == CKR_SIGNATURE_LEN_RANGE)))
            p11_fail_mech(rv, calls[kind].op_name, mech, k->name);
    } while (p11_recover(&r, k->tok, &op.lease, rv) == P11_RETRY);
    p11_lease_release(&op.lease);
    /* Found deleted while this operation ran: its copy was destroyed under
     * it, and the token's complaint is beside the point. */
    if (rv != CKR_OK && op.key != NULL && atomic_load(&k->gone))
        return p11_key_fail_gone(k);
    return rv;
}
