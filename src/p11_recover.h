/* The one recovery policy of the core: what to do when a token call fails
 * because the token lost something of ours (DESIGN §2.7, §2.8).
 *
 * Every call that may meet a lost session, a lost login, a removed token or a
 * stale object handle has the same shape:
 *
 *     p11_recovery r = P11_RECOVERY_INIT;
 *     do {
 *         rv = step(...);            // one attempt; records its own failure
 *     } while (p11_recover(&r, tok, &lease, rv) == P11_RETRY);
 *
 * p11_recover() declares the loss to the token (new epoch, sessions reopened,
 * login forgotten), gives the step's lease back (released, or discarded when
 * the session is dead or an operation may still run on it), repairs what a
 * retry needs (logs in again, has the object found or made again) and says
 * whether to run the step once more. The budget lives in r, on the caller's
 * stack: each kind of recovery once per token epoch (a stale object twice: a key
 * has a copy and a token object), a few epochs, a hard cap.
 * When a retried step finally succeeds, the failures recorded by the attempts
 * before it are cleared, here and nowhere else. When the recovery itself fails
 * (no PIN to log in again), the step's own failure is what the caller reports.
 */
#ifndef P11_RECOVER_H
#define P11_RECOVER_H

#include "p11_token.h"

typedef enum { P11_DONE = 0, P11_RETRY = 1 } p11_next;

/* What a CK_RV asks for (p11_recover_classify). */
typedef enum {
    P11_ACT_NONE,       /* success, or an error no recovery mends: rv is the answer */
    P11_ACT_SESSION,    /* the token lost our sessions (and with them the login and
                           session objects): new epoch, reopen them, retry */
    P11_ACT_LOGIN,      /* the token forgot our login: new epoch, log in, retry */
    P11_ACT_OBJECT,     /* the object handle is stale: find or make it again, retry */
    P11_ACT_TOKEN_GONE, /* removed or failing: declare everything lost, fail now;
                           the next call, with the token back, recovers */
    P11_ACT_MODULE,     /* the module lost its connection to the token (a remote
                           token's server died; p11_recover finds it out, never
                           p11_recover_classify): re-initialise it as after fork,
                           retry; a further attempt only after a back-off */
    P11_ACT_TRANSIENT,  /* CKR_GENERAL_ERROR from a module that still answers for
                           the slot, or CKR_USER_PIN_NOT_INITIALIZED from a token
                           whose user PIN is set: a passing fault (SoftHSM2's
                           file store read while another process rewrites it);
                           wait a moment, retry, up to P11_TRANSIENT_RETRIES
                           times */
    P11_ACT_COUNT
} p11_action;

/* Bits of p11_recovery.allow: which recoveries may lead to a retry here. */
#define P11_ALLOW(act) (1u << (act))
#define P11_ALLOW_ALL                                                                    \
    (P11_ALLOW(P11_ACT_SESSION) | P11_ALLOW(P11_ACT_LOGIN) | P11_ALLOW(P11_ACT_OBJECT) | \
     P11_ALLOW(P11_ACT_MODULE) | P11_ALLOW(P11_ACT_TRANSIENT))

/* New budget rounds begin when the token epoch moved (a further loss while
 * recovering, or another thread's); at most this many. */
#define P11_RECOVER_ROUNDS 8
/* Retries of one call, whatever happens. */
#define P11_RECOVER_MAX_RETRIES 16
/* Retries of a passing fault (P11_ACT_TRANSIENT) per epoch. */
#define P11_TRANSIENT_RETRIES 3

typedef struct p11_recovery {
    /* Set by the caller (P11_RECOVERY_INIT allows all, with no object). */
    unsigned allow;
    /* The object the step used is stale: forget handle h so that the next
     * attempt finds or makes it again. Returns 0 when that cannot help (the
     * key was deleted, there was no handle): then the call gives up. */
    int (*stale)(void *obj, CK_OBJECT_HANDLE h);
    /* How to log in again (P11_ACT_LOGIN): p11_token_relogin, set by
     * P11_RECOVERY_INIT. A repair handed in, like stale, so that the policy
     * does not depend on the token calls that themselves use it. */
    CK_RV (*relogin)(p11_token *t);
    void *obj;
    CK_OBJECT_HANDLE h; /* the handle the last attempt used (set by the step) */
    /* The token epoch the object handle is known good in (p11_recovery_epoch). */
    unsigned obj_epoch;
    unsigned char obj_epoch_set;
    /* The budget. */
    unsigned char started, rounds, retries;
    unsigned char spent[P11_ACT_COUNT];
    unsigned epoch; /* token epoch the current round began in */
    unsigned mgen;  /* module generation when the step began */
} p11_recovery;

#define P11_RECOVERY_INIT                                                                \
    {                                                                                    \
        .allow = P11_ALLOW_ALL, .h = CK_INVALID_HANDLE, .relogin = p11_token_relogin     \
    }

/* Which recovery rv calls for. The one switch of the policy. */
p11_action p11_recover_classify(CK_RV rv);

/* Whether a session that answered rv is unfit to go back to the pool: an
 * operation may still be active on it, or it is dead. */
int p11_recover_discards_session(CK_RV rv);

/* The decision alone, without touching a token: the action rv calls for and
 * whether the budget allows a retry after it (spending it). epoch is the
 * token's epoch now. Used by p11_recover(); exposed for unit tests. */
p11_next p11_recover_plan(p11_recovery *r, CK_RV rv, unsigned epoch, p11_action *act);

/* What rv calls for on token t: p11_recover_classify's answer, or
 * P11_ACT_MODULE when a device or general error comes from a module that
 * lost its connection (then marked lost: the next p11_module_ready() starts
 * it again), or one that was started again since generation mgen. */
p11_action p11_recover_action(p11_token *t, CK_RV rv, unsigned mgen);

/* After one attempt that answered rv: recover as the policy says and tell
 * whether to try again. l is the attempt's lease (NULL when the step uses
 * none): on success it is left alone, on failure it is always given back.
 * t may be NULL only for an rv that needs no recovery. */
p11_next p11_recover(p11_recovery *r, p11_token *t, p11_lease *l, CK_RV rv);

/* Starts the budget's first round in the token's epoch now. A step calls it
 * before its first token call, so that a loss from another thread during
 * the attempt already counts as a new round; without it the round starts at
 * the first failure. Does nothing after the first time. */
void p11_recovery_start(p11_recovery *r, p11_token *t);

/* For steps with an object handle: the token epoch the handle was found in.
 * The first attempt, and the first after the object was found again, take
 * the token's epoch now; a later attempt gets the older value, so that a
 * handle from before a loss is never used (tokens reuse handle numbers). */
unsigned p11_recovery_epoch(p11_recovery *r, p11_token *t);

#endif
