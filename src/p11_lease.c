#include "p11_lease.h"

#include "p11_failure.h"
#include "p11_module.h"
#include "p11_names.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
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
};

struct p11_pool {
    p11_pool_owner own;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned size;
    unsigned timeout_ms;
    atomic_uint epoch;         /* bumped by p11_pool_reset: older leases are void */
    atomic_uint session_epoch; /* bumped when all sessions must be reopened */
    unsigned in_use;
    unsigned waiters;
    struct pool_session *s;
};

p11_pool *p11_pool_new(const p11_pool_owner *owner, unsigned size, unsigned timeout_ms)
{
    p11_pool *p = calloc(1, sizeof(*p));
    pthread_condattr_t ca;

    if (p == NULL)
        return NULL;
    if (size == 0)
        size = 1;
    p->s = calloc(size, sizeof(*p->s));
    if (p->s == NULL) {
        free(p);
        return NULL;
    }
    p->own = *owner;
    p->size = size;
    p->timeout_ms = timeout_ms;
    p->epoch = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    return p;
}

void p11_pool_free(p11_pool *p)
{
    p11_module *m;

    if (p == NULL)
        return;
    m = p->own.m;
    for (unsigned i = 0; i < p->size && m->fl != NULL && atomic_load(&m->ready); i++)
        if (p->s[i].open && p->s[i].gen == atomic_load(&m->gen) &&
            atomic_load(&m->ready_fork_gen) == p11_fork_generation())
            P11_CALL(m, C_CloseSession, p->s[i].h);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->s);
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
    for (unsigned i = 0; i < p->size; i++) {
        p->s[i].open = 0;
        p->s[i].leased = 0;
    }
    p->in_use = 0;
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
    return p->size;
}

unsigned p11_pool_in_use(p11_pool *p)
{
    unsigned n;

    pthread_mutex_lock(&p->mu);
    n = p->in_use;
    pthread_mutex_unlock(&p->mu);
    return n;
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

    for (unsigned i = 0; i < p->size; i++)
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

CK_RV p11_lease_acquire(p11_pool *p, p11_lease *l)
{
    unsigned gen = atomic_load(&p->own.m->gen);
    struct timespec deadline;
    struct pool_session *s;
    int have_deadline = 0;
    unsigned pick;
    CK_RV rv;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        unsigned closed = p->size;

        pick = p->size;
        /* Prefer a session that is already open, and fresh. */
        for (unsigned i = 0; i < p->size; i++) {
            if (p->s[i].leased)
                continue;
            if (p->s[i].open && p->s[i].gen == gen) {
                pick = i;
                break;
            }
            if (closed == p->size)
                closed = i;
        }
        if (pick == p->size)
            pick = closed;
        if (pick < p->size)
            break;
        if (self_holds_lease(p)) {
            unsigned size = p->size;

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

    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (l->epoch == p->epoch && p->s[l->idx].leased) {
        p->s[l->idx].leased = 0;
        p->in_use--;
        if (p->waiters > 0)
            pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    l->pool = NULL;
    l->h = CK_INVALID_HANDLE;
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
