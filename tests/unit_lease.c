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

static CK_RV fake_open(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                       CK_SESSION_HANDLE_PTR h)
{
    (void)slot, (void)flags, (void)app, (void)notify;
    if (atomic_load(&open_fails) > 0) {
        atomic_fetch_sub(&open_fails, 1);
        return CKR_SESSION_COUNT;
    }
    *h = atomic_fetch_add(&next_handle, 1);
    atomic_fetch_add(&opened, 1);
    return CKR_OK;
}

static CK_RV fake_close(CK_SESSION_HANDLE h)
{
    (void)h;
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
};

int main(int argc, char **argv)
{
    return unit_run("unit_lease", cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
