/* Unit tests of the session pool and its leases (src/p11_lease.c), linked
 * with the core and driven by a stand-in module of a few functions: no
 * token, no provider. Each case is one CTest test:
 *
 *   unit_lease CASE
 */
#include "p11_failure.h"
#include "unit_check.h"
#include "p11_lease.h"
#include "p11_module.h"
#include "p11_names.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int opened, closed, open_fails, callbacks;
static atomic_ulong next_handle = 100;

/* The stand-in token's session limit (0: none), and the sessions it has
 * open; which handles are open, and which are leased right now (set by the
 * tests): closing a leased session is a fault the tests count. */
static atomic_int token_max, token_open, closed_leased;
static atomic_int handle_open[65536], handle_leased[65536];

static CK_RV fake_open(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                       CK_SESSION_HANDLE_PTR h)
{
    (void)slot, (void)flags, (void)app, (void)notify;
    if (atomic_load(&open_fails) > 0) {
        atomic_fetch_sub(&open_fails, 1);
        return CKR_SESSION_COUNT;
    }
    if (atomic_fetch_add(&token_open, 1) >= atomic_load(&token_max) &&
        atomic_load(&token_max) > 0) {
        atomic_fetch_sub(&token_open, 1);
        return CKR_SESSION_COUNT;
    }
    *h = atomic_fetch_add(&next_handle, 1);
    atomic_store(&handle_open[*h % 65536], 1);
    atomic_fetch_add(&opened, 1);
    return CKR_OK;
}

static CK_RV fake_close(CK_SESSION_HANDLE h)
{
    if (atomic_load(&handle_leased[h % 65536]))
        atomic_fetch_add(&closed_leased, 1);
    atomic_store(&handle_open[h % 65536], 0);
    atomic_fetch_sub(&token_open, 1);
    atomic_fetch_add(&closed, 1);
    return CKR_OK;
}

static void on_opened(void *owner, CK_SESSION_HANDLE h)
{
    (void)owner, (void)h;
    atomic_fetch_add(&callbacks, 1);
}

static CK_FUNCTION_LIST fake_list;
static p11_module fake_module;

static p11_pool *make_pool(unsigned size, unsigned timeout_ms)
{
    p11_pool_owner owner = {&fake_module, 7, "unit", on_opened, NULL};

    fake_list.version.major = 2;
    fake_list.C_OpenSession = fake_open;
    fake_list.C_CloseSession = fake_close;
    fake_module.fl = &fake_list;
    fake_module.path = "fake";
    atomic_store(&fake_module.gen, 1);
    atomic_store(&fake_module.ready, 1);
    atomic_store(&fake_module.ready_fork_gen, p11_fork_generation());
    return p11_pool_new(&owner, size, timeout_ms);
}

static p11_pool *make_growing_pool(unsigned floor, unsigned cap, unsigned idle_ms)
{
    p11_pool_owner owner = {&fake_module, 7, "unit", on_opened, NULL};
    const p11_pool_bounds b = {floor, cap, 0, idle_ms};
    p11_pool *p = make_pool(1, 0);

    p11_pool_free(p);
    return p11_pool_new_bounded(&owner, &b);
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A released session is reused, not reopened; the owner hears of each
 * session opened. */
static void reuse(void)
{
    p11_pool *p = make_pool(2, 0);
    p11_lease a = P11_LEASE_INIT, b = P11_LEASE_INIT;
    CK_SESSION_HANDLE first;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    first = a.h;
    p11_lease_release(&a);
    CHECK(a.pool == NULL && a.h == CK_INVALID_HANDLE, "a released lease is empty");
    CHECK(p11_lease_acquire(p, &b) == CKR_OK && b.h == first, "the same session again");
    CHECK(atomic_load(&opened) == 1 && atomic_load(&callbacks) == 1, "opened %d, told %d",
          atomic_load(&opened), atomic_load(&callbacks));
    CHECK(p11_pool_in_use(p) == 1, "in use %u", p11_pool_in_use(p));
    p11_lease_release(&b);
    CHECK(p11_pool_in_use(p) == 0, "in use %u after release", p11_pool_in_use(p));
    p11_pool_free(p);
}

/* A thread that holds every lease and asks for one more is told at once. */
static void self_deadlock(void)
{
    p11_pool *p = make_pool(2, 0);
    p11_lease a = P11_LEASE_INIT, b = P11_LEASE_INIT, c = P11_LEASE_INIT;
    double t0;
    CK_RV rv;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK && p11_lease_acquire(p, &b) == CKR_OK,
          "two leases");
    CHECK(a.h != b.h, "two sessions");
    t0 = now_ms();
    rv = p11_lease_acquire(p, &c);
    CHECK(rv == P11_RV_POOL_EXHAUSTED, "rv 0x%lx", (unsigned long)rv);
    CHECK(now_ms() - t0 < 1000, "took %.0f ms", now_ms() - t0);
    CHECK(p11_last_failure() != NULL && strstr(p11_last_failure()->what, "deadlock"),
          "message: %s", p11_last_failure() ? p11_last_failure()->what : "");
    p11_lease_release(&a);
    p11_lease_release(&b);
    p11_pool_free(p);
}

struct waiter {
    p11_pool *p;
    p11_lease l;
    CK_RV rv;
    double waited_ms;
};

static void *wait_for_lease(void *arg)
{
    struct waiter *w = arg;
    double t0 = now_ms();

    w->rv = p11_lease_acquire(w->p, &w->l);
    w->waited_ms = now_ms() - t0;
    return NULL;
}

/* Another thread waits, and gets the session when it is released. */
static void handoff(void)
{
    p11_pool *p = make_pool(1, 0);
    p11_lease a = P11_LEASE_INIT;
    struct waiter w = {p, P11_LEASE_INIT, CKR_GENERAL_ERROR, 0};
    pthread_t th;
    CK_SESSION_HANDLE h;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    h = a.h;
    pthread_create(&th, NULL, wait_for_lease, &w);
    usleep(100 * 1000);
    p11_lease_release(&a);
    pthread_join(th, NULL);
    CHECK(w.rv == CKR_OK && w.l.h == h, "the waiter got the session (rv 0x%lx)",
          (unsigned long)w.rv);
    CHECK(w.waited_ms >= 50, "the waiter waited %.0f ms", w.waited_ms);
    p11_lease_release(&w.l);
    p11_pool_free(p);
}

/* With a timeout, a waiter gives up with P11_RV_TIMEOUT. */
static void timeout(void)
{
    p11_pool *p = make_pool(1, 200);
    p11_lease a = P11_LEASE_INIT;
    struct waiter w = {p, P11_LEASE_INIT, CKR_OK, 0};
    pthread_t th;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    pthread_create(&th, NULL, wait_for_lease, &w);
    pthread_join(th, NULL);
    CHECK(w.rv == P11_RV_TIMEOUT, "rv 0x%lx", (unsigned long)w.rv);
    CHECK(w.waited_ms >= 150 && w.waited_ms < 5000, "waited %.0f ms", w.waited_ms);
    p11_lease_release(&a);
    p11_pool_free(p);
}

static void *release_it(void *arg)
{
    p11_lease_release(arg);
    return NULL;
}

/* The lease belongs to whoever holds the value: another thread releases it. */
static void release_elsewhere(void)
{
    p11_pool *p = make_pool(1, 200);
    p11_lease a = P11_LEASE_INIT, b = P11_LEASE_INIT;
    pthread_t th;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    pthread_create(&th, NULL, release_it, &a);
    pthread_join(th, NULL);
    CHECK(p11_pool_in_use(p) == 0, "in use %u", p11_pool_in_use(p));
    CHECK(p11_lease_acquire(p, &b) == CKR_OK, "acquire after a release elsewhere");
    p11_lease_release(&b);
    p11_pool_free(p);
}

/* After a reset (fork child, re-initialised module) older leases are void:
 * their release changes nothing. */
static void reset_voids(void)
{
    p11_pool *p = make_pool(1, 200);
    p11_lease a = P11_LEASE_INIT, b = P11_LEASE_INIT, c = P11_LEASE_INIT;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    p11_pool_reset(p);
    CHECK(p11_lease_acquire(p, &b) == CKR_OK, "a lease after reset");
    p11_lease_release(&a); /* void: must not free b's slot */
    CHECK(p11_pool_in_use(p) == 1, "in use %u", p11_pool_in_use(p));
    CHECK(p11_lease_acquire(p, &c) == P11_RV_POOL_EXHAUSTED,
          "b still holds the only slot");
    p11_lease_release(&b);
    CHECK(atomic_load(&closed) == 0, "a reset closes nothing (%d)", atomic_load(&closed));
    p11_pool_free(p);
}

/* Discard closes the session; the next lease opens a fresh one. */
static void discard(void)
{
    p11_pool *p = make_pool(1, 0);
    p11_lease a = P11_LEASE_INIT;
    CK_SESSION_HANDLE h;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    h = a.h;
    p11_lease_discard(&a);
    CHECK(atomic_load(&closed) == 1, "closed %d", atomic_load(&closed));
    CHECK(p11_lease_acquire(p, &a) == CKR_OK && a.h != h, "a fresh session");
    CHECK(atomic_load(&opened) == 2, "opened %d", atomic_load(&opened));
    p11_lease_release(&a);
    p11_pool_free(p);
}

/* Reopen keeps the lease and gives it a new session. */
static void reopen(void)
{
    p11_pool *p = make_pool(1, 0);
    p11_lease a = P11_LEASE_INIT;
    CK_SESSION_HANDLE h;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    h = a.h;
    CHECK(p11_lease_reopen(&a) == CKR_OK && a.h != h && a.pool == p, "reopened");
    CHECK(atomic_load(&closed) == 1 && atomic_load(&opened) == 2, "closed %d opened %d",
          atomic_load(&closed), atomic_load(&opened));
    CHECK(p11_pool_in_use(p) == 1, "still leased");
    p11_lease_release(&a);
    p11_pool_free(p);
}

/* A session the token refuses to open: the error names the call and the
 * token, and the lease is given back. */
static void open_refused(void)
{
    p11_pool *p = make_pool(1, 0);
    p11_lease a = P11_LEASE_INIT;
    CK_RV rv;

    atomic_store(&open_fails, 1);
    rv = p11_lease_acquire(p, &a);
    CHECK(rv == CKR_SESSION_COUNT, "rv 0x%lx", (unsigned long)rv);
    CHECK(a.pool == NULL, "no lease kept");
    CHECK(p11_pool_in_use(p) == 0, "in use %u", p11_pool_in_use(p));
    CHECK(p11_last_failure() != NULL &&
              strcmp(p11_last_failure()->call, "C_OpenSession") == 0 &&
              strstr(p11_last_failure()->what, "unit") != NULL,
          "failure names C_OpenSession and the token");
    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "the next try works");
    p11_lease_release(&a);
    p11_pool_free(p);
}

/* Invalidation: every session is reopened before its next use. */
static void invalidate(void)
{
    p11_pool *p = make_pool(2, 0);
    p11_lease a = P11_LEASE_INIT;
    CK_SESSION_HANDLE h;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    h = a.h;
    p11_lease_release(&a);
    p11_pool_invalidate(p);
    CHECK(p11_lease_acquire(p, &a) == CKR_OK && a.h != h,
          "a new session after invalidate");
    p11_lease_release(&a);
    p11_pool_free(p);
}

/* A new module generation (re-initialised): old sessions are forgotten,
 * never closed (they are not ours any more). */
static void new_generation(void)
{
    p11_pool *p = make_pool(1, 0);
    p11_lease a = P11_LEASE_INIT;
    CK_SESSION_HANDLE h;

    CHECK(p11_lease_acquire(p, &a) == CKR_OK, "acquire");
    h = a.h;
    p11_lease_release(&a);
    atomic_fetch_add(&fake_module.gen, 1);
    CHECK(p11_lease_acquire(p, &a) == CKR_OK && a.h != h,
          "a session of the new generation");
    CHECK(atomic_load(&closed) == 0, "an old-generation session was closed");
    p11_lease_release(&a);
    p11_pool_free(p);
}

struct stress {
    p11_pool *p;
    atomic_int *owner_of; /* per session handle slot: who holds it */
    int id, rounds, overlap;
};

static void *stress_thread(void *arg)
{
    struct stress *s = arg;

    for (int i = 0; i < s->rounds; i++) {
        p11_lease l = P11_LEASE_INIT;
        int expected = 0;

        if (p11_lease_acquire(s->p, &l) != CKR_OK) {
            s->overlap++;
            continue;
        }
        /* Exclusive: nobody else holds this session now. */
        if (!atomic_compare_exchange_strong(&s->owner_of[l.h % 64], &expected, s->id))
            s->overlap++;
        sched_yield();
        atomic_store(&s->owner_of[l.h % 64], 0);
        p11_lease_release(&l);
    }
    return NULL;
}

/* 8 threads, a pool of 3: a session is never held by two at once. */
static void exclusive(void)
{
    p11_pool *p = make_pool(3, 0);
    static atomic_int owner_of[64];
    struct stress s[8];
    pthread_t th[8];
    int overlap = 0;

    for (int i = 0; i < 8; i++) {
        s[i] = (struct stress){p, owner_of, i + 1, 2000, 0};
        pthread_create(&th[i], NULL, stress_thread, &s[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        overlap += s[i].overlap;
    }
    CHECK(overlap == 0, "%d leases overlapped or failed", overlap);
    CHECK(atomic_load(&opened) <= 3, "opened %d sessions for a pool of 3",
          atomic_load(&opened));
    CHECK(p11_pool_in_use(p) == 0, "in use %u at the end", p11_pool_in_use(p));
    p11_pool_free(p);
}

/* One thread asks for leases while holding the others: each gets a new
 * session, up to the cap; then the pool is exhausted (waiting would
 * deadlock), not larger. */
static void grow_to_cap(void)
{
    p11_pool *p = make_growing_pool(1, 6, 0);
    p11_lease l[7];
    p11_pool_stat st;
    CK_RV rv;

    for (int i = 0; i < 6; i++) {
        l[i] = (p11_lease)P11_LEASE_INIT;
        CHECK(p11_lease_acquire(p, &l[i]) == CKR_OK, "lease %d", i);
        for (int j = 0; j < i; j++)
            CHECK(l[i].h != l[j].h, "leases %d and %d share a session", i, j);
    }
    CHECK(atomic_load(&opened) == 6, "opened %d", atomic_load(&opened));
    l[6] = (p11_lease)P11_LEASE_INIT;
    rv = p11_lease_acquire(p, &l[6]);
    CHECK(rv == P11_RV_POOL_EXHAUSTED, "past the cap: rv 0x%lx", (unsigned long)rv);
    CHECK(atomic_load(&opened) == 6, "opened %d for a cap of 6", atomic_load(&opened));
    p11_pool_stats(p, &st);
    CHECK(st.sessions == 6 && st.peak == 6 && st.cap == 6 && st.in_use == 6,
          "sessions %u peak %u cap %u in use %u", st.sessions, st.peak, st.cap,
          st.in_use);
    for (int i = 0; i < 6; i++)
        p11_lease_release(&l[i]);
    /* Released sessions are reused, the warmest first. */
    CHECK(p11_lease_acquire(p, &l[0]) == CKR_OK && l[0].h == 105, "reused %lu",
          (unsigned long)l[0].h);
    CHECK(atomic_load(&opened) == 6, "opened %d", atomic_load(&opened));
    p11_lease_release(&l[0]);
    p11_pool_free(p);
}

struct holder {
    p11_pool *p;
    pthread_barrier_t *bar;
    CK_RV rv;
    CK_SESSION_HANDLE h;
};

static void *hold_one(void *arg)
{
    struct holder *hd = arg;
    p11_lease l = P11_LEASE_INIT;

    hd->rv = p11_lease_acquire(hd->p, &l);
    hd->h = l.h;
    if (hd->rv == CKR_OK)
        atomic_store(&handle_leased[l.h % 65536], 1);
    pthread_barrier_wait(hd->bar); /* everyone holds a lease */
    pthread_barrier_wait(hd->bar); /* the main thread counted */
    if (hd->rv == CKR_OK)
        atomic_store(&handle_leased[l.h % 65536], 0);
    p11_lease_release(&l);
    return NULL;
}

/* N threads each holding a lease at once: N sessions, one each. */
static void grow_threads(void)
{
    enum { N = 12 };
    p11_pool *p = make_growing_pool(2, 16, 0);
    pthread_barrier_t bar;
    struct holder hd[N];
    pthread_t th[N];
    p11_pool_stat st;

    pthread_barrier_init(&bar, NULL, N + 1);
    for (int i = 0; i < N; i++) {
        hd[i] = (struct holder){p, &bar, CKR_GENERAL_ERROR, 0};
        pthread_create(&th[i], NULL, hold_one, &hd[i]);
    }
    pthread_barrier_wait(&bar);
    p11_pool_stats(p, &st);
    CHECK(st.sessions == N && st.in_use == N, "%d holders: %u sessions, %u in use", N,
          st.sessions, st.in_use);
    CHECK(atomic_load(&opened) == N, "opened %d", atomic_load(&opened));
    for (int i = 0; i < N; i++) {
        CHECK(hd[i].rv == CKR_OK, "holder %d: rv 0x%lx", i, (unsigned long)hd[i].rv);
        for (int j = 0; j < i; j++)
            CHECK(hd[i].h != hd[j].h, "holders %d and %d share a session", i, j);
    }
    pthread_barrier_wait(&bar);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    CHECK(p11_pool_in_use(p) == 0, "in use %u", p11_pool_in_use(p));
    pthread_barrier_destroy(&bar);
    p11_pool_free(p);
}

struct churn {
    p11_pool *p;
    int rounds, bad;
};

static void *churn_thread(void *arg)
{
    struct churn *c = arg;

    for (int i = 0; i < c->rounds; i++) {
        p11_lease l = P11_LEASE_INIT;
        int expected = 0;

        if (p11_lease_acquire(c->p, &l) != CKR_OK) {
            c->bad++;
            continue;
        }
        if (!atomic_compare_exchange_strong(&handle_leased[l.h % 65536], &expected, 1))
            c->bad++; /* handed out twice */
        if (!atomic_load(&handle_open[l.h % 65536]))
            c->bad++; /* handed out closed */
        if (i % 7 == 0)
            usleep(200);
        else
            sched_yield();
        atomic_store(&handle_leased[l.h % 65536], 0);
        p11_lease_release(&l);
    }
    return NULL;
}

static void run_churn(p11_pool *p, int nthreads, int rounds, int *bad)
{
    struct churn c[32];
    pthread_t th[32];

    *bad = 0;
    for (int i = 0; i < nthreads; i++) {
        c[i] = (struct churn){p, rounds, 0};
        pthread_create(&th[i], NULL, churn_thread, &c[i]);
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        *bad += c[i].bad;
    }
}

/* 16 threads, a cap of 4: never more than 4 sessions open, every caller
 * served, no session held by two. */
static void cap_honoured(void)
{
    p11_pool *p = make_growing_pool(1, 4, 0);
    p11_pool_stat st;
    int bad;

    run_churn(p, 16, 300, &bad);
    CHECK(bad == 0, "%d leases failed, overlapped or closed", bad);
    p11_pool_stats(p, &st);
    CHECK(st.peak <= 4 && atomic_load(&opened) <= 4, "peak %u, opened %d for a cap of 4",
          st.peak, atomic_load(&opened));
    p11_pool_free(p);
}

/* The token has 3 sessions to give, the cap says 16: the token's
 * CKR_SESSION_COUNT stops growth without failing anyone; a thread that
 * holds every session the token gave gets the exhaustion error. */
static void session_count_stops_growth(void)
{
    p11_pool *p = make_growing_pool(1, 16, 0);
    p11_lease l[4];
    p11_pool_stat st;
    CK_RV rv;
    int bad;

    atomic_store(&token_max, 3);
    run_churn(p, 12, 300, &bad);
    CHECK(bad == 0, "%d leases failed, overlapped or closed", bad);
    p11_pool_stats(p, &st);
    CHECK(st.sessions == 3 && st.limit == 3, "sessions %u, limit %u", st.sessions,
          st.limit);
    for (int i = 0; i < 3; i++) {
        l[i] = (p11_lease)P11_LEASE_INIT;
        CHECK(p11_lease_acquire(p, &l[i]) == CKR_OK, "lease %d", i);
    }
    l[3] = (p11_lease)P11_LEASE_INIT;
    rv = p11_lease_acquire(p, &l[3]);
    CHECK(rv == P11_RV_POOL_EXHAUSTED, "rv 0x%lx", (unsigned long)rv);
    for (int i = 0; i < 3; i++)
        p11_lease_release(&l[i]);
    /* A reset (module re-initialised) lets the pool try to grow again. */
    p11_pool_reset(p);
    atomic_store(&token_max, 0);
    atomic_store(&token_open, 0);
    for (int i = 0; i < 4; i++) {
        l[i] = (p11_lease)P11_LEASE_INIT;
        CHECK(p11_lease_acquire(p, &l[i]) == CKR_OK, "after reset: lease %d", i);
    }
    for (int i = 0; i < 4; i++)
        p11_lease_release(&l[i]);
    p11_pool_free(p);
}

/* Idle sessions beyond the floor are closed; sessions held by a lease, or
 * within the floor, never are. */
static void shrink_idle(void)
{
    p11_pool *p = make_growing_pool(2, 8, 100);
    p11_lease l[6];
    p11_pool_stat st;

    for (int i = 0; i < 6; i++) {
        l[i] = (p11_lease)P11_LEASE_INIT;
        CHECK(p11_lease_acquire(p, &l[i]) == CKR_OK, "lease %d", i);
        atomic_store(&handle_leased[l[i].h % 65536], 1);
    }
    /* Four go back and idle; two stay leased (an operation active). */
    for (int i = 2; i < 6; i++) {
        atomic_store(&handle_leased[l[i].h % 65536], 0);
        p11_lease_release(&l[i]);
    }
    usleep(300 * 1000);
    /* Each release closes at most one idle session, the one idle longest;
     * the one in use here never idles long enough. */
    for (int i = 0; i < 6; i++) {
        p11_lease x = P11_LEASE_INIT;

        CHECK(p11_lease_acquire(p, &x) == CKR_OK, "lease");
        atomic_store(&handle_leased[x.h % 65536], 1);
        atomic_store(&handle_leased[x.h % 65536], 0);
        p11_lease_release(&x);
        usleep(150 * 1000);
    }
    p11_pool_stats(p, &st);
    CHECK(st.sessions == 3, "sessions %u after idling: 2 leased, 1 in use", st.sessions);
    CHECK(atomic_load(&closed_leased) == 0, "%d leased sessions closed",
          atomic_load(&closed_leased));
    CHECK(atomic_load(&handle_open[l[0].h % 65536]) &&
              atomic_load(&handle_open[l[1].h % 65536]),
          "a leased session was closed");
    /* The last idle one goes at the next release; the floor stays. */
    for (int i = 0; i < 2; i++) {
        atomic_store(&handle_leased[l[i].h % 65536], 0);
        p11_lease_release(&l[i]);
    }
    p11_pool_stats(p, &st);
    CHECK(st.sessions == 2, "sessions %u after idling, floor 2", st.sessions);
    usleep(150 * 1000);
    CHECK(p11_lease_acquire(p, &l[0]) == CKR_OK, "lease");
    p11_lease_release(&l[0]);
    p11_pool_stats(p, &st);
    CHECK(st.sessions == 2, "sessions %u: never below the floor", st.sessions);
    /* Demand comes back: the pool grows again. */
    for (int i = 0; i < 5; i++) {
        l[i] = (p11_lease)P11_LEASE_INIT;
        CHECK(p11_lease_acquire(p, &l[i]) == CKR_OK, "lease %d again", i);
    }
    p11_pool_stats(p, &st);
    CHECK(st.sessions == 5, "sessions %u", st.sessions);
    for (int i = 0; i < 5; i++)
        p11_lease_release(&l[i]);
    /* Under churn with a short idle time: never a leased or closed session
     * handed out, never a leased one closed. */
    {
        int bad;
        p11_pool *q = make_growing_pool(1, 12, 1);

        run_churn(q, 16, 400, &bad);
        CHECK(bad == 0, "%d leases failed, overlapped or closed", bad);
        CHECK(atomic_load(&closed_leased) == 0, "%d leased sessions closed",
              atomic_load(&closed_leased));
        p11_pool_free(q);
    }
    p11_pool_free(p);
}

static const unit_case cases[] = {
    {"reuse", reuse},
    {"self_deadlock", self_deadlock},
    {"handoff", handoff},
    {"timeout", timeout},
    {"release_elsewhere", release_elsewhere},
    {"reset_voids", reset_voids},
    {"discard", discard},
    {"reopen", reopen},
    {"open_refused", open_refused},
    {"invalidate", invalidate},
    {"new_generation", new_generation},
    {"exclusive", exclusive},
    {"grow_to_cap", grow_to_cap},
    {"grow_threads", grow_threads},
    {"cap_honoured", cap_honoured},
    {"session_count_stops_growth", session_count_stops_growth},
    {"shrink_idle", shrink_idle},
};

int main(int argc, char **argv)
{
    return unit_run("unit_lease", cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
