#include "p11_recover.h"

#include "p11_failure.h"

#include <string.h>

p11_action p11_recover_classify(CK_RV rv)
{
    switch (rv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
        /* Sessions seldom die alone: all of them are reopened before use. */
        return P11_ACT_SESSION;
    case CKR_USER_NOT_LOGGED_IN:
        return P11_ACT_LOGIN;
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_KEY_TYPE_INCONSISTENT:
        /* A handle of ours that is invalid, or names a key unfit for this, is
         * most likely stale: the token renumbered its objects. */
        return P11_ACT_OBJECT;
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_DEVICE_ERROR:
        return P11_ACT_TOKEN_GONE;
    case CKR_GENERAL_ERROR:
        /* Seen as a passing fault: SoftHSM2 answers it when it reads its
         * token file while another process rewrites it (workers of a TLS
         * server logging in at once after fork). Not a PIN verdict, so a
         * repeated C_Login spends no PIN try. */
        return P11_ACT_TRANSIENT;
    /* A new kind of failure is one more case here, and if it needs a new
     * remedy, one more p11_action, its repair in p11_recover() and its bit
     * in P11_ALLOW_ALL. Nothing else changes. A lost connection to a remote
     * token answers these same codes (and CKR_GENERAL_ERROR):
     * p11_recover_action() tells it apart by asking the module. */
    default:
        /* CKR_OK, CKR_PIN_INCORRECT (never retried: repeats lock tokens),
         * and any other error, vendor codes included: the answer stands. */
        return P11_ACT_NONE;
    }
}

int p11_recover_discards_session(CK_RV rv)
{
    switch (rv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_DEVICE_ERROR:
    /* The operation is still active on the session (after a short buffer,
     * when the module lacks the step after the init, or never expected: an
     * operation that went back to the pool running): closing the session is
     * the one sure way to end it. */
    case CKR_BUFFER_TOO_SMALL:
    case CKR_FUNCTION_NOT_SUPPORTED:
    case CKR_OPERATION_ACTIVE:
        return 1;
    default:
        return 0;
    }
}

p11_action p11_recover_action(p11_token *t, CK_RV rv, unsigned mgen)
{
    p11_action a = p11_recover_classify(rv);

    /* A local module fixes its slots when it starts: SoftHSM2 leaves out a
     * token whose files another process was rewriting, and such a start is
     * caught and made again when the module starts (p11_module.c). A slot
     * still invalid afterwards stays so until the next start: the answer
     * stands, retrying would only delay it. */
    if (rv == CKR_SLOT_ID_INVALID && t != NULL && t->m != NULL && t->m->local)
        return P11_ACT_NONE;
    /* The same file race seen from C_Login: SoftHSM2 read the token file
     * while another process's login rewrote its flags, and found no user
     * PIN in it. A token that said when it was found that its user PIN is
     * set gets the passing fault's retries; one that said otherwise gets its
     * answer at once. */
    if (rv == CKR_USER_PIN_NOT_INITIALIZED && t != NULL &&
        (t->info.flags & CKF_USER_PIN_INITIALIZED))
        return P11_ACT_TRANSIENT;

    if (t == NULL || t->m == NULL || t->m->fl == NULL ||
        (a != P11_ACT_TOKEN_GONE && rv != CKR_GENERAL_ERROR && rv != CKR_SLOT_ID_INVALID))
        return a;
    /* Started again by another thread since the step began: its sessions
     * were of the dead connection, and a retry finds the new one. */
    if (atomic_load(&t->m->gen) != mgen || p11_module_lost(t->m, t->slot, mgen))
        return P11_ACT_MODULE;
    return a;
}

static p11_next plan(p11_recovery *r, p11_action a, unsigned epoch)
{
    if (a == P11_ACT_NONE || a == P11_ACT_TOKEN_GONE)
        return P11_DONE;
    /* Each recovery once per loss. They chain: a lost session takes the
     * login and the objects with it, so the retry meets
     * CKR_USER_NOT_LOGGED_IN or CKR_OBJECT_HANDLE_INVALID next and recovers
     * from that too. A further loss (a new token epoch) earns a new round. */
    if (!r->started) {
        r->started = 1;
        r->epoch = epoch;
    } else if (epoch != r->epoch && r->rounds < P11_RECOVER_ROUNDS) {
        r->rounds++;
        r->epoch = epoch;
        memset(r->spent, 0, sizeof(r->spent));
    }
    /* A key has two handles that can go stale in one epoch, its session
     * copy and its token object: an object recovery may come twice. A
     * passing fault gets three retries, each after a longer pause. */
    if (!(r->allow & P11_ALLOW(a)) ||
        r->spent[a] >= (a == P11_ACT_OBJECT      ? 2
                        : a == P11_ACT_TRANSIENT ? P11_TRANSIENT_RETRIES
                                                 : 1) ||
        r->retries >= P11_RECOVER_MAX_RETRIES)
        return P11_DONE;
    r->spent[a]++;
    r->retries++;
    return P11_RETRY;
}

p11_next p11_recover_plan(p11_recovery *r, CK_RV rv, unsigned epoch, p11_action *act)
{
    *act = p11_recover_classify(rv);
    return plan(r, *act, epoch);
}

p11_next p11_recover(p11_recovery *r, p11_token *t, p11_lease *l, CK_RV rv)
{
    const p11_failure *f;
    p11_failure saved;
    p11_action a;
    p11_next next;

    if (rv == CKR_OK) {
        /* The attempts before this one recorded failures that are no more. */
        if (r->retries > 0)
            p11_failure_clear();
        return P11_DONE;
    }
    if (!r->started && t != NULL)
        r->mgen = atomic_load(&t->m->gen);
    a = p11_recover_action(t, rv, r->mgen);
    next = a == P11_ACT_NONE || t == NULL ? plan(r, a, 0)
                                          : plan(r, a, atomic_load(&t->epoch));
    /* The loss is declared before the session goes back, so that whoever
     * takes it next sees the new epoch. */
    switch (a) {
    case P11_ACT_SESSION:
    case P11_ACT_TOKEN_GONE:
    case P11_ACT_MODULE:
        p11_token_lost(t, 1);
        break;
    case P11_ACT_LOGIN:
        /* Tokens may renumber private objects when the login goes. Only
         * where the login is made again here: elsewhere (a key copy, C_Login
         * itself) a new epoch would only churn, and whoever needs the login
         * next meets CKR_USER_NOT_LOGGED_IN and recovers it. */
        if (r->allow & P11_ALLOW(P11_ACT_LOGIN))
            p11_token_lost(t, 0);
        break;
    case P11_ACT_OBJECT:
    case P11_ACT_TRANSIENT:
    case P11_ACT_NONE:
    case P11_ACT_COUNT:
        break;
    }
    if (l != NULL) {
        if (p11_recover_discards_session(rv))
            p11_lease_discard(l);
        else
            p11_lease_release(l);
    }
    if (next != P11_RETRY)
        return P11_DONE;
    /* The repair a retry needs. If it fails, the step's failure stands. */
    f = p11_last_failure();
    if (f != NULL)
        saved = *f;
    switch (a) {
    case P11_ACT_LOGIN:
        if (r->relogin == NULL || r->relogin(t) != CKR_OK)
            next = P11_DONE;
        break;
    case P11_ACT_OBJECT:
        if (r->stale == NULL || !r->stale(r->obj, r->h))
            next = P11_DONE;
        else
            r->obj_epoch_set = 0;
        break;
    case P11_ACT_MODULE:
        /* Started again here, not by the retry's step: some steps lease a
         * session without asking the module first. Its own failure (the
         * server still away, or the back-off) is the one to report. */
        if (p11_module_ready(t->m) != CKR_OK)
            return P11_DONE;
        r->mgen = atomic_load(&t->m->gen);
        break;
    case P11_ACT_TRANSIENT:
        p11_transient_pause(r->spent[P11_ACT_TRANSIENT]);
        break;
    default:
        break;
    }
    if (next != P11_RETRY)
        p11_failure_restore(f != NULL ? &saved : NULL);
    return next;
}

void p11_recovery_start(p11_recovery *r, p11_token *t)
{
    if (!r->started) {
        r->started = 1;
        r->epoch = atomic_load(&t->epoch);
        r->mgen = atomic_load(&t->m->gen);
    }
}

unsigned p11_recovery_epoch(p11_recovery *r, p11_token *t)
{
    if (!r->obj_epoch_set) {
        r->obj_epoch = atomic_load(&t->epoch);
        r->obj_epoch_set = 1;
    }
    return r->obj_epoch;
}
