#include "p11_lease.h"

#include "p11_failure.h"
#include "p11_module.h"
#include "p11_names.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pool_session {
    CK_SESSION_HANDLE h;
    int open;
    int leased;
    unsigned gen;    /* module generation the session was opened in */
    unsigned sepoch; /* pool session epoch it was opened in */
    /* Thread that last used the lease (for the self-deadlock check): the one
     * that took it, then whichever thread drives the context (p11_lease_touch),
     * since a context may be finished in another thread than its first. */
    atomic_ulong holder;
    unsigned long idle_since_ms; /* when it last went back to the pool */
};

/* Every slot is in one of three states, and the pool's mutex guards which:
 * leased (its lease holder owns the slot and its session), free (a session
 * open and idle: on the free stack) or spare (no session: on the spare
 * list). The mutex is held only to move a slot between these; every C_*
 * call happens outside it, by the slot's lease holder. */
struct p11_pool {
    p11_pool_owner own;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned cap;   /* slots: the most sessions the pool may ever hold */
    unsigned floor; /* sessions kept open however long they idle */
    /* Sessions the pool may hold now: cap, lowered when the token refused
     * one (CKR_SESSION_COUNT) until the next reset. */
    unsigned limit;
    unsigned idle_ms; /* a free session beyond the floor idle this long is closed */
    unsigned timeout_ms;
    atomic_uint epoch;         /* bumped by p11_pool_reset: older leases are void */
    atomic_uint session_epoch; /* bumped when all sessions must be reopened */
    unsigned in_use;
    unsigned waiters;
    unsigned peak; /* most slots held (open, opening or leased) at once */
    /* Free sessions, most recently used on top: a lease takes the warmest
     * one, and the one at the bottom has idled longest. */
    unsigned *free_stk, nfree;
    unsigned *spare, nspare;
    struct pool_session *s;
};

static unsigned long now_ms(void)
{
    struct timespec ts;

    /* Coarse is enough to tell idle seconds, and costs no system call. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (unsigned long)ts.tv_sec * 1000UL + (unsigned long)ts.tv_nsec / 1000000UL;
}

/* With p->mu held: every slot spare, none free. */
static void all_spare(p11_pool *p)
{
    for (unsigned i = 0; i < p->cap; i++) {
        p->s[i].open = 0;
        p->s[i].leased = 0;
        /* Highest index on top: slots are used from 0 up, as before. */
        p->spare[i] = p->cap - 1 - i;
    }
    p->nspare = p->cap;
    p->nfree = 0;
    p->in_use = 0;
    p->limit = p->cap;
}

p11_pool *p11_pool_new_bounded(const p11_pool_owner *owner, const p11_pool_bounds *b)
{
    p11_pool *p = calloc(1, sizeof(*p));
    pthread_condattr_t ca;
    unsigned cap = b->cap != 0 ? b->cap : 1;

    if (p == NULL)
        return NULL;
    p->s = calloc(cap, sizeof(*p->s));
    p->free_stk = calloc(cap, sizeof(*p->free_stk));
    p->spare = calloc(cap, sizeof(*p->spare));
    if (p->s == NULL || p->free_stk == NULL || p->spare == NULL) {
        free(p->s);
        free(p->free_stk);
        free(p->spare);
        free(p);
        return NULL;
    }
    p->own = *owner;
    p->cap = cap;
    p->floor = b->floor < cap ? b->floor : cap;
    p->idle_ms = b->idle_ms;
    p->timeout_ms = b->timeout_ms;
    p->epoch = 1;
    all_spare(p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    return p;
}

p11_pool *p11_pool_new(const p11_pool_owner *owner, unsigned size, unsigned timeout_ms)
{
    const p11_pool_bounds b = {size, size, timeout_ms, 0};

    return p11_pool_new_bounded(owner, &b);
}

void p11_pool_free(p11_pool *p)
{
    p11_module *m;

    if (p == NULL)
        return;
    m = p->own.m;
    for (unsigned i = 0; i < p->cap && m->fl != NULL && atomic_load(&m->ready); i++)
        if (p->s[i].open && p->s[i].gen == atomic_load(&m->gen) &&
            atomic_load(&m->ready_fork_gen) == p11_fork_generation())
            P11_CALL(m, C_CloseSession, p->s[i].h);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->s);
    free(p->free_stk);
    free(p->spare);
    free(p);
}

void p11_pool_reset_locks(p11_pool *p)
{
    pthread_condattr_t ca;

    /* In a fork child (one thread, in the atfork handler) a thread of the
     * parent may have held the mutex at fork time; it will never unlock it
     * here, so start with fresh ones. Never while other threads may use
     * them: re-initialising a mutex in use is undefined. */
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->waiters = 0; /* the parent's waiters do not exist here */
}

void p11_pool_reset(p11_pool *p)
{
    pthread_mutex_lock(&p->mu);
    all_spare(p);
    p->epoch++;
    /* Waiters (none in a fresh fork child) find every session free. */
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void p11_pool_invalidate(p11_pool *p)
{
    atomic_fetch_add(&p->session_epoch, 1);
}

unsigned p11_pool_size(const p11_pool *p)
{
    return p->cap;
}

unsigned p11_pool_in_use(p11_pool *p)
{
    unsigned n;

    pthread_mutex_lock(&p->mu);
    n = p->in_use;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void p11_pool_stats(p11_pool *p, p11_pool_stat *st)
{
    pthread_mutex_lock(&p->mu);
    st->sessions = p->cap - p->nspare;
    st->peak = p->peak;
    st->in_use = p->in_use;
    st->limit = p->limit;
    st->cap = p->cap;
    pthread_mutex_unlock(&p->mu);
}

/* A number for the calling thread, never 0 (pthread_t cannot be atomic). */
static unsigned long self_id(void)
{
    static atomic_ulong next = 1;
    static _Thread_local unsigned long id;

    if (id == 0)
        id = atomic_fetch_add(&next, 1);
    return id;
}

static int self_holds_lease(p11_pool *p)
{
    unsigned long self = self_id();

    for (unsigned i = 0; i < p->cap; i++)
        if (p->s[i].leased && atomic_load(&p->s[i].holder) == self)
            return 1;
    return 0;
}

static CK_RV open_session(p11_pool *p, struct pool_session *s)
{
    p11_module *m = p->own.m;
    CK_RV rv;

    rv = P11_CALL(m, C_OpenSession, p->own.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                  NULL, NULL, &s->h);
    if (rv == CKR_SESSION_READ_WRITE_SO_EXISTS || rv == CKR_TOKEN_WRITE_PROTECTED)
        rv = P11_CALL(m, C_OpenSession, p->own.slot, CKF_SERIAL_SESSION, NULL, NULL,
                      &s->h);
    if (rv == CKR_SLOT_ID_INVALID)
        return p11_fail(rv, "C_OpenSession",
                        "token \"%s\": the module no longer has its slot %lu (for a "
                        "software token: it could not read the token's files when it "
                        "started)",
                        p->own.label, (unsigned long)p->own.slot);
    if (rv != CKR_OK)
        return p11_fail(rv, "C_OpenSession", "token \"%s\"", p->own.label);
    if (p->own.opened != NULL)
        p->own.opened(p->own.owner, s->h);
    s->open = 1;
    s->gen = atomic_load(&m->gen);
    s->sepoch = atomic_load(&p->session_epoch);
    return CKR_OK;
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* With p->mu held: the slot goes back, free if it still has a session,
 * spare if not; a waiter may now have it (or grow into it). */
static void put_back(p11_pool *p, unsigned idx, unsigned long now)
{
    struct pool_session *s = &p->s[idx];

    s->leased = 0;
    p->in_use--;
    if (s->open) {
        s->idle_since_ms = now;
        p->free_stk[p->nfree++] = idx;
    } else {
        p->spare[p->nspare++] = idx;
    }
    if (p->waiters > 0)
        pthread_cond_signal(&p->cv);
}

struct idle_pick {
    unsigned idx; /* p->cap: none */
    /* Read under the mutex: after a reset the slot may get a new session
     * (of a new module generation) while the old one is being closed. */
    CK_SESSION_HANDLE h;
    unsigned gen, epoch;
};

/* With p->mu held: takes out of the free stack the session that idled
 * longest, if it is beyond the floor and idled past idle_ms. It is marked
 * leased, so nobody else touches it, and the caller closes it outside the
 * mutex (close_idle). Free sessions have no operation active (a lease goes
 * back only with none), so closing one never ends anyone's work. */
static unsigned take_idle(p11_pool *p, unsigned long now, struct idle_pick *pick)
{
    unsigned idx;

    if (p->idle_ms == 0 || p->nfree == 0 || p->cap - p->nspare <= p->floor)
        return p->cap;
    idx = p->free_stk[0];
    if (now - p->s[idx].idle_since_ms < p->idle_ms)
        return p->cap;
    memmove(&p->free_stk[0], &p->free_stk[1], (p->nfree - 1) * sizeof(*p->free_stk));
    p->nfree--;
    p->s[idx].leased = 1;
    /* Leased by nobody: no thread's self-deadlock check counts it. */
    atomic_store(&p->s[idx].holder, 0);
    pick->h = p->s[idx].h;
    pick->gen = p->s[idx].gen;
    pick->epoch = p->epoch;
    return idx;
}

static void close_idle(p11_pool *p, const struct idle_pick *pick)
{
    struct pool_session *s = &p->s[pick->idx];

    /* A session of an older module generation, or the parent's in a fork
     * child, is not ours to close. */
    if (pick->gen == atomic_load(&p->own.m->gen) &&
        atomic_load(&p->own.m->ready_fork_gen) == p11_fork_generation())
        P11_CALL(p->own.m, C_CloseSession, pick->h);
    pthread_mutex_lock(&p->mu);
    /* After a reset every slot is spare already. */
    if (pick->epoch == p->epoch) {
        s->open = 0;
        s->leased = 0;
        p->spare[p->nspare++] = pick->idx;
        if (p->waiters > 0)
            pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

CK_RV p11_lease_acquire(p11_pool *p, p11_lease *l)
{
    unsigned gen = atomic_load(&p->own.m->gen);
    struct timespec deadline;
    struct pool_session *s;
    int have_deadline = 0;
    unsigned pick, held;
    CK_RV rv;

    pthread_mutex_lock(&p->mu);
again:
    for (;;) {
        /* The warmest free session; else a new one while the token lets
         * us: a lease is never kept waiting for a session the token would
         * give. */
        if (p->nfree > 0) {
            pick = p->free_stk[--p->nfree];
            break;
        }
        if (p->nspare > 0 && p->cap - p->nspare < p->limit) {
            pick = p->spare[--p->nspare];
            break;
        }
        if (self_holds_lease(p)) {
            unsigned size = p->cap - p->nspare;

            pthread_mutex_unlock(&p->mu);
            return p11_fail(P11_RV_POOL_EXHAUSTED, "C_OpenSession",
                            "token \"%s\": all %u sessions of the pool are leased and "
                            "this thread holds %s of them; waiting would deadlock "
                            "(raise pkcs11-pool-size or finish the open operations)",
                            p->own.label, size, size == 1 ? "one" : "some");
        }
        p->waiters++;
        if (p->timeout_ms == 0) {
            pthread_cond_wait(&p->cv, &p->mu);
        } else {
            if (!have_deadline) {
                deadline_after(&deadline, p->timeout_ms);
                have_deadline = 1;
            }
            if (pthread_cond_timedwait(&p->cv, &p->mu, &deadline) == ETIMEDOUT) {
                unsigned ms = p->timeout_ms;

                p->waiters--;
                pthread_mutex_unlock(&p->mu);
                return p11_fail(P11_RV_TIMEOUT, "C_OpenSession",
                                "token \"%s\": no session of the pool became free "
                                "within %u ms (pkcs11-pool-wait-timeout-ms)",
                                p->own.label, ms);
            }
        }
        p->waiters--;
    }
    s = &p->s[pick];
    s->leased = 1;
    atomic_store(&s->holder, self_id());
    p->in_use++;
    if (p->cap - p->nspare > p->peak)
        p->peak = p->cap - p->nspare;
    l->pool = p;
    l->idx = pick;
    l->epoch = p->epoch;
    pthread_mutex_unlock(&p->mu);

    /* The lease makes this slot ours: open it outside the pool's mutex. A
     * session from an older module generation (before fork or re-init) is
     * dead: it is forgotten, never closed (it is not ours to close). */
    if (s->open && s->gen == gen && s->sepoch != atomic_load(&p->session_epoch)) {
        /* Probably dead already; closing makes sure. */
        P11_CALL(p->own.m, C_CloseSession, s->h);
        s->open = 0;
    }
    if (!s->open || s->gen != gen) {
        s->open = 0;
        rv = open_session(p, s);
        if (rv == CKR_SESSION_COUNT) {
            pthread_mutex_lock(&p->mu);
            if (l->epoch == p->epoch && s->leased) {
                put_back(p, pick, 0);
                held = p->cap - p->nspare;
                if (held > 0) {
                    /* The token has no more sessions for us: the pool
                     * stops growing at what it holds, and this caller
                     * waits for one of them, as in a full pool. */
                    if (p->limit > held)
                        p->limit = held;
                    l->pool = NULL;
                    p11_failure_clear();
                    p11_debug("token \"%s\": the token refused session %u "
                              "(CKR_SESSION_COUNT); the pool stays at %u",
                              p->own.label, held + 1, held);
                    goto again;
                }
            }
            pthread_mutex_unlock(&p->mu);
            l->pool = NULL;
            l->h = CK_INVALID_HANDLE;
            return rv;
        }
        if (rv != CKR_OK) {
            p11_lease_release(l);
            return rv;
        }
    }
    l->h = s->h;
    return CKR_OK;
}

void p11_lease_release(p11_lease *l)
{
    p11_pool *p = l->pool;
    struct idle_pick pick = {0, CK_INVALID_HANDLE, 0, 0};
    unsigned long now;

    if (p == NULL)
        return;
    now = p->idle_ms != 0 ? now_ms() : 0;
    pthread_mutex_lock(&p->mu);
    if (l->epoch == p->epoch && p->s[l->idx].leased) {
        put_back(p, l->idx, now);
        pick.idx = take_idle(p, now, &pick);
    } else {
        pick.idx = p->cap;
    }
    pthread_mutex_unlock(&p->mu);
    l->pool = NULL;
    l->h = CK_INVALID_HANDLE;
    if (pick.idx < p->cap)
        close_idle(p, &pick);
}

int p11_lease_forget_stale(p11_lease *l)
{
    p11_pool *p = l->pool;

    if (p == NULL)
        return 0;
    /* A fork child that has not re-initialised the module yet: every session
     * is the parent's (and the pool's mutex may be held by a parent thread
     * that does not exist here, so do not touch the pool). After the
     * re-initialisation, the pool's epoch tells. */
    if (atomic_load(&p->own.m->ready_fork_gen) == p11_fork_generation() &&
        l->epoch == atomic_load(&p->epoch))
        return 0;
    l->pool = NULL;
    l->h = CK_INVALID_HANDLE;
    return 1;
}

void p11_lease_touch(p11_lease *l)
{
    p11_pool *p = l->pool;
    unsigned long self = self_id();

    if (p == NULL ||
        atomic_load_explicit(&p->s[l->idx].holder, memory_order_relaxed) == self)
        return;
    pthread_mutex_lock(&p->mu);
    if (l->epoch == p->epoch && p->s[l->idx].leased)
        atomic_store(&p->s[l->idx].holder, self);
    pthread_mutex_unlock(&p->mu);
}

CK_RV p11_lease_reopen(p11_lease *l)
{
    p11_pool *p = l->pool;
    struct pool_session *s = &p->s[l->idx];
    CK_RV rv;

    if (s->open && s->gen == atomic_load(&p->own.m->gen))
        P11_CALL(p->own.m, C_CloseSession, s->h);
    s->open = 0;
    rv = open_session(p, s);
    l->h = rv == CKR_OK ? s->h : CK_INVALID_HANDLE;
    return rv;
}

void p11_lease_discard(p11_lease *l)
{
    p11_pool *p = l->pool;
    struct pool_session *s;

    if (p == NULL)
        return;
    s = &p->s[l->idx];
    if (l->epoch == p->epoch && s->open) {
        if (s->gen == atomic_load(&p->own.m->gen))
            P11_CALL(p->own.m, C_CloseSession, s->h);
        s->open = 0;
    }
    p11_lease_release(l);
}
