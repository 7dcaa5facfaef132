/* Session leases: the locking primitive of hsmprov (DESIGN §2).
 *
 * A token has a pool of open sessions. Whoever holds a session's lease is the
 * only caller of C_* functions on that session. A lease is a flag guarded by a
 * mutex and a condition variable, not a mutex held across calls, so it belongs
 * to whoever holds the p11_lease value (an OpenSSL context), not to a thread:
 * it may be released by another thread than the one that took it.
 *
 * Nothing outside this file touches the pool's internals. */
#ifndef P11_LEASE_H
#define P11_LEASE_H

#include "p11_pkcs11.h"

typedef struct p11_pool p11_pool;
typedef struct p11_module p11_module;

/* What a pool needs to know of the token it serves. The pool sits below the
 * token layer (p11_token.c owns pools, not the other way round): it opens
 * sessions on the module's slot and tells its owner of each new session
 * through `opened`, never reaching into the token itself. */
typedef struct p11_pool_owner {
    p11_module *m;
    CK_SLOT_ID slot;
    const char *label; /* for messages; outlives the pool */
    /* Called after a session was opened (login state check), or NULL. */
    void (*opened)(void *owner, CK_SESSION_HANDLE h);
    void *owner;
} p11_pool_owner;

typedef struct p11_lease {
    p11_pool *pool; /* NULL: no lease held */
    unsigned idx;
    unsigned epoch; /* pool epoch at acquire; a lease from before a reset is void */
    CK_SESSION_HANDLE h;
} p11_lease;

#define P11_LEASE_INIT                                                                   \
    {                                                                                    \
        NULL, 0, 0, CK_INVALID_HANDLE                                                    \
    }

/* How big a pool may grow, and how it shrinks. A lease asked for when no
 * session is free opens a new one, up to cap (fewer once the token answers
 * CKR_SESSION_COUNT: the pool then stops growing, and callers wait for a
 * session as in a full pool). A free session beyond the floor that idled
 * idle_ms is closed when a lease is next released (0: never). */
typedef struct p11_pool_bounds {
    unsigned floor;
    unsigned cap;        /* 0 is taken as 1 */
    unsigned timeout_ms; /* how long a waiter waits (0: forever) */
    unsigned idle_ms;
} p11_pool_bounds;

p11_pool *p11_pool_new_bounded(const p11_pool_owner *owner, const p11_pool_bounds *b);
/* A pool of a fixed size: up to size sessions, none closed for idling. */
p11_pool *p11_pool_new(const p11_pool_owner *owner, unsigned size, unsigned timeout_ms);
void p11_pool_free(p11_pool *p);
/* Forgets every session and lease without closing anything: used in a fork
 * child, where the sessions are the parent's, and after the module was
 * re-initialised. Leases taken before are void (their release is a no-op). */
void p11_pool_reset(p11_pool *p);
/* In a fork child's atfork handler only (one thread): fresh mutex and
 * condition variable, since a parent thread may have held them at fork. */
void p11_pool_reset_locks(p11_pool *p);
/* The token lost its sessions (removed, or a session handle turned out
 * invalid): every session is reopened before its next use. */
void p11_pool_invalidate(p11_pool *p);
/* The cap: the most sessions the pool may hold. */
unsigned p11_pool_size(const p11_pool *p);
/* Leases currently held (for tests and diagnostics). */
unsigned p11_pool_in_use(p11_pool *p);

typedef struct p11_pool_stat {
    unsigned sessions; /* open now (or being opened by a lease holder) */
    unsigned peak;     /* most sessions at once, ever */
    unsigned in_use;   /* leases held */
    unsigned limit;    /* the cap, or lower once the token refused a session */
    unsigned cap;
} p11_pool_stat;

void p11_pool_stats(p11_pool *p, p11_pool_stat *st);

/* Takes a free session, opening it if needed. When the pool is exhausted and
 * the calling thread itself already holds a lease from it, fails at once with
 * P11_RV_POOL_EXHAUSTED (waiting could never end); otherwise waits, up to the
 * pool's timeout (P11_RV_TIMEOUT). */
CK_RV p11_lease_acquire(p11_pool *p, p11_lease *l);
/* The calling thread now drives the lease's context (a context handed to
 * another thread mid-operation): the self-deadlock check of
 * p11_lease_acquire counts the lease as this thread's from now on. Cheap when
 * the thread did not change. */
void p11_lease_touch(p11_lease *l);
/* A lease taken before fork() (in the parent) or before the module was
 * re-initialised is void: forgets it without any call on its session or
 * change to the pool, and returns 1. Returns 0 for a live lease (or none). */
int p11_lease_forget_stale(p11_lease *l);
/* Returns the session to the pool. No operation may be active on it. */
void p11_lease_release(p11_lease *l);
/* The leased session is unusable (closed, invalid handle, or stuck in an
 * operation that cannot be ended): close it and open a new one in its place,
 * keeping the lease. */
CK_RV p11_lease_reopen(p11_lease *l);
/* Closes the leased session and releases the lease: the next user opens a
 * fresh one. */
void p11_lease_discard(p11_lease *l);

#endif
