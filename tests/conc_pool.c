/*
 * The session pool grows to the demand and shrinks back (DESIGN §2 item 1),
 * through the provider, with the fault-injection shim over SoftHSM2 and
 * digest-sign streamed in the token (tests/conc.sh config), so that a
 * streaming context holds its lease from its first update to final.
 *
 *   conc_pool grow N        N threads each hold a streaming context at once:
 *                           N sessions, one each (nobody waits for another's
 *                           lease); every signature verifies.
 *   conc_pool cap N         the shim's token has P11SHIM_MAX_SESSIONS
 *                           sessions (and says so in ulMaxSessionCount): N
 *                           threads signing at once never have more open,
 *                           and every signature verifies.
 *   conc_pool refused       4 threads hold a context each, then the token
 *                           refuses every new session (CKR_SESSION_COUNT):
 *                           4 more threads wait for a session (they do not
 *                           fail), a holder asking for one more gets the
 *                           "waiting would deadlock" error at once, and once
 *                           the holders finish, the waiters sign.
 *   conc_pool shrink        pkcs11-pool-idle-timeout-ms = 100: 8 sessions
 *                           opened for 8 threads close once idle, down to
 *                           the pool's floor (one per CPU).
 *   conc_pool churn         pkcs11-pool-idle-timeout-ms = 1: 16 threads sign
 *                           while idle sessions close and open all the
 *                           time: no session with an operation active is
 *                           ever closed (shim count) or handed out (the
 *                           shim's interleaving check).
 *
 * The provider's own count of pool sessions (hsmprov-pool-sessions,
 * hsmprov-pool-peak) must agree with the shim's. A watchdog turns a hang
 * into a failure.
 */
#include "conc_util.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEADLOCK_TEXT "waiting would deadlock"
#define MAXT 64

static ct_key keys[2];
static ct_alg algs[2] = {{&keys[0], 0}, {&keys[1], 0}};
static struct p11shim_api shim;

struct held {
    EVP_MD_CTX *m;
    unsigned char msg[300];
    int k;
};

/* A streaming context: after its first update it holds a lease. */
static int hold(struct held *h, int k, int who)
{
    h->k = k;
    ct_message(h->msg, sizeof(h->msg), who, 0);
    h->m = ct_sign_init(&algs[k]);
    if (h->m == NULL || !EVP_DigestSignUpdate(h->m, h->msg, 100)) {
        ct_fail("thread %d: starting a streaming context (%s)", who, keys[k].name);
        EVP_MD_CTX_free(h->m);
        h->m = NULL;
        return 0;
    }
    return 1;
}

static void finish(struct held *h, const char *what)
{
    unsigned char sig[512];
    size_t siglen = 0;

    if (h->m == NULL)
        return;
    if (!EVP_DigestSignUpdate(h->m, h->msg + 100, sizeof(h->msg) - 100) ||
        !ct_sign_final(h->m, sig, &siglen))
        ct_fail("%s: finishing the %s context", what, keys[h->k].name);
    else if (ct_verify(&algs[h->k], h->msg, sizeof(h->msg), sig, siglen) != 1)
        ct_fail("%s: the %s signature does not verify", what, keys[h->k].name);
    EVP_MD_CTX_free(h->m);
    h->m = NULL;
}

/* The provider's view: sessions its pools hold now, and the most at once. */
static void pool_stats(unsigned *sessions, unsigned *peak)
{
    OSSL_PROVIDER *prov = OSSL_PROVIDER_load(NULL, "hsmprov");
    OSSL_PARAM p[] = {
        OSSL_PARAM_uint("hsmprov-pool-sessions", sessions),
        OSSL_PARAM_uint("hsmprov-pool-peak", peak),
        OSSL_PARAM_END,
    };

    *sessions = *peak = 0;
    if (prov == NULL || !OSSL_PROVIDER_get_params(prov, p) ||
        !OSSL_PARAM_modified(&p[0]) || !OSSL_PARAM_modified(&p[1]))
        ct_fail("hsmprov does not report hsmprov-pool-sessions / hsmprov-pool-peak");
    OSSL_PROVIDER_unload(prov);
}

/* ---- grow: N holders at once ---------------------------------------------- */

static atomic_int holding, go_ask, asked, go_finish;

struct holder_arg {
    int who, ask;
    struct held h;
};

/* A holder asking for one more lease from a pool that cannot grow: there is
 * nothing to wait for. */
static void ask_more(void)
{
    EVP_MD_CTX *m;
    char err[1024];
    double t0 = ct_now_ms();

    m = ct_sign_init(&algs[0]);
    if (m != NULL && EVP_DigestSignUpdate(m, "x", 1)) {
        ct_fail("a second lease for a thread whose pool cannot grow");
    } else {
        ct_errors(err, sizeof(err));
        if (strstr(err, DEADLOCK_TEXT) == NULL || ct_now_ms() - t0 > 1000)
            ct_fail("expected \"%s\" at once, got (%.0f ms): %s", DEADLOCK_TEXT,
                    ct_now_ms() - t0, err);
        else
            printf("a holder asking for one more: \"%s\" after %.0f ms\n", DEADLOCK_TEXT,
                   ct_now_ms() - t0);
    }
    EVP_MD_CTX_free(m);
}

static void *holder(void *arg)
{
    struct holder_arg *a = arg;

    if (hold(&a->h, a->who % 2, a->who))
        atomic_fetch_add(&holding, 1);
    while (!atomic_load(&go_finish)) {
        if (a->ask && atomic_load(&go_ask) && !atomic_load(&asked)) {
            ask_more();
            atomic_store(&asked, 1);
        }
        usleep(1000);
    }
    finish(&a->h, "holder");
    OPENSSL_thread_stop();
    return NULL;
}

/* Waits up to ms for `holding` to reach n. */
static int wait_holding(int n, int ms)
{
    for (int i = 0; i < ms && atomic_load(&holding) < n; i++)
        usleep(1000);
    return atomic_load(&holding) >= n;
}

static void grow(int n)
{
    static struct holder_arg a[MAXT];
    pthread_t th[MAXT];
    unsigned long open_now;
    unsigned sessions, peak;

    for (int i = 0; i < n; i++) {
        a[i].who = i;
        pthread_create(&th[i], NULL, holder, &a[i]);
    }
    if (!wait_holding(n, 10000))
        ct_fail("only %d of %d threads got a session within 10 s (%lu sessions open): "
                "the pool did not grow to the demand",
                atomic_load(&holding), n, shim.open_sessions());
    open_now = shim.open_sessions();
    pool_stats(&sessions, &peak);
    printf("%d threads holding a context: %lu sessions open in the token, the pool "
           "holds %u\n",
           atomic_load(&holding), open_now, sessions);
    /* +1: the session that holds the keys' session-object copies. */
    if (open_now < (unsigned long)n || open_now > (unsigned long)n + 1)
        ct_fail("%lu sessions open for %d holders (expected %d, +1 object session)",
                open_now, n, n);
    if (sessions != (unsigned)n)
        ct_fail("the provider says its pool holds %u sessions, not %d", sessions, n);
    atomic_store(&go_finish, 1);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* ---- cap: a token with few sessions ---------------------------------------- */

static atomic_ulong max_open;
static atomic_int workers_done;

static void *signer(void *arg)
{
    int who = (int)(intptr_t)arg;
    unsigned char msg[200], sig[512];
    size_t siglen;

    for (int i = 0; i < 40; i++) {
        const ct_alg *a = &algs[(who + i) % 2];

        ct_message(msg, sizeof(msg), who, i);
        siglen = sizeof(sig);
        if (!ct_sign_oneshot(a, msg, sizeof(msg), sig, &siglen))
            ct_fail("thread %d: signature %d failed", who, i);
        else if (ct_verify(a, msg, sizeof(msg), sig, siglen) != 1)
            ct_fail("thread %d: signature %d does not verify", who, i);
    }
    atomic_fetch_add(&workers_done, 1);
    OPENSSL_thread_stop();
    return NULL;
}

/* Runs n signers, sampling the open sessions; returns the most seen. */
static unsigned long run_signers(int n)
{
    pthread_t th[MAXT];

    atomic_store(&workers_done, 0);
    atomic_store(&max_open, 0);
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, signer, (void *)(intptr_t)(100 + i));
    while (atomic_load(&workers_done) < n) {
        unsigned long o = shim.open_sessions();

        if (o > atomic_load(&max_open))
            atomic_store(&max_open, o);
        usleep(1000);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    return atomic_load(&max_open);
}

static void cap(int n)
{
    const char *max = getenv("P11SHIM_MAX_SESSIONS");
    unsigned long limit = max != NULL ? strtoul(max, NULL, 10) : 0, seen;
    unsigned sessions, peak;

    if (limit == 0) {
        ct_fail("P11SHIM_MAX_SESSIONS is not set");
        return;
    }
    seen = run_signers(n);
    pool_stats(&sessions, &peak);
    printf("%d threads, a token of %lu sessions: at most %lu open, pool peak %u, "
           "%lu C_OpenSession refused\n",
           n, limit, seen, peak,
           ct_shim_count_rv(&shim, "C_OpenSession", CKR_SESSION_COUNT));
    if (seen > limit || peak > limit)
        ct_fail("%lu sessions open (pool peak %u); the token has %lu", seen, peak, limit);
    if (peak < 2)
        ct_fail("the pool never grew (peak %u)", peak);
}

/* ---- refused: CKR_SESSION_COUNT stops growth, callers wait ------------------ */

static void refused(void)
{
    static struct holder_arg a[4];
    pthread_t th[4], w[4];
    unsigned long before;

    for (int i = 0; i < 4; i++) {
        a[i].who = i;
        a[i].ask = i == 0;
        pthread_create(&th[i], NULL, holder, &a[i]);
    }
    if (!wait_holding(4, 10000))
        ct_fail("only %d of 4 threads got a session", atomic_load(&holding));
    before = shim.open_sessions();
    /* From now on the token has no session to give. */
    shim.fail_nth("C_OpenSession", 0, CKR_SESSION_COUNT);
    atomic_store(&workers_done, 0);
    for (int i = 0; i < 4; i++)
        pthread_create(&w[i], NULL, signer, (void *)(intptr_t)(200 + i));
    usleep(300 * 1000);
    if (atomic_load(&workers_done) != 0)
        ct_fail("a signer finished while every session was held");
    if (ct_failures() != 0)
        ct_fail("a signer failed instead of waiting for a session");
    atomic_store(&go_ask, 1);
    for (int i = 0; i < 10000 && !atomic_load(&asked); i++)
        usleep(1000);
    if (atomic_load(&workers_done) != 0)
        ct_fail("a signer finished while every session was held");
    /* The holders finish; the waiters get their sessions. */
    atomic_store(&go_finish, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(w[i], NULL);
    shim.clear();
    printf("4 holders, 4 waiters: %lu sessions open before the refusals, %lu now; "
           "%lu C_OpenSession refused\n",
           before, shim.open_sessions(),
           ct_shim_count_rv(&shim, "C_OpenSession", CKR_SESSION_COUNT));
    if (ct_shim_count_rv(&shim, "C_OpenSession", CKR_SESSION_COUNT) == 0)
        ct_fail("the pool never asked the token for another session");
}

/* ---- shrink ----------------------------------------------------------------- */

static void shrink(void)
{
    static struct holder_arg a[8];
    pthread_t th[8];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned long floor = cpus > 0 && cpus < 8 ? (unsigned long)cpus : 1, now;
    unsigned sessions, peak;
    unsigned char msg[100], sig[512];
    size_t siglen;

    for (int i = 0; i < 8; i++) {
        a[i].who = i;
        pthread_create(&th[i], NULL, holder, &a[i]);
    }
    if (!wait_holding(8, 10000))
        ct_fail("only %d of 8 threads got a session", atomic_load(&holding));
    atomic_store(&go_finish, 1);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    pool_stats(&sessions, &peak);
    printf("8 holders done: the pool holds %u sessions (peak %u)\n", sessions, peak);
    usleep(300 * 1000);
    /* Idle sessions close as leases come back, one per release. */
    for (int i = 0; i < 12; i++) {
        ct_message(msg, sizeof(msg), 50, i);
        siglen = sizeof(sig);
        if (!ct_sign_oneshot(&algs[0], msg, sizeof(msg), sig, &siglen) ||
            ct_verify(&algs[0], msg, sizeof(msg), sig, siglen) != 1)
            ct_fail("signature %d after idling", i);
        usleep(120 * 1000);
    }
    pool_stats(&sessions, &peak);
    now = shim.open_sessions();
    printf(
        "after idling: the pool holds %u sessions, %lu open in the token (floor %lu)\n",
        sessions, now, floor);
    if (peak < 8)
        ct_fail("the pool never held 8 sessions (peak %u)", peak);
    if (sessions > floor || now > floor + 1)
        ct_fail("%u pool sessions (%lu open) after idling; the floor is %lu", sessions,
                now, floor);
    if (shim.closed_active() != 0)
        ct_fail("%lu sessions closed with an operation active", shim.closed_active());
}

/* Signers while idle sessions close all the time (idle timeout 1 ms). */
static void churn(void)
{
    unsigned long seen = run_signers(16);

    printf("16 threads with idle sessions closing: at most %lu open, %lu C_CloseSession, "
           "%lu closed with an operation active\n",
           seen, shim.call_count("C_CloseSession"), shim.closed_active());
    if (shim.call_count("C_CloseSession") == 0)
        ct_fail("no idle session was closed");
    if (shim.closed_active() != 0)
        ct_fail("%lu sessions closed with an operation active", shim.closed_active());
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    int n = argc > 2 ? atoi(argv[2]) : 8;

    if (n < 1 || n > MAXT)
        return 2;
    ct_watchdog(120, "conc_pool");
    if (!ct_init() || !ct_key_load(&keys[0], "ec") || !ct_key_load(&keys[1], "rsa") ||
        !ct_shim(&shim))
        return ct_result("set-up");
    if (strcmp(mode, "grow") == 0)
        grow(n);
    else if (strcmp(mode, "cap") == 0)
        cap(n);
    else if (strcmp(mode, "refused") == 0)
        refused();
    else if (strcmp(mode, "shrink") == 0)
        shrink();
    else if (strcmp(mode, "churn") == 0)
        churn();
    else {
        fprintf(stderr, "usage: %s grow|cap|refused|shrink|churn [THREADS]\n", argv[0]);
        return 2;
    }
    ct_shim_clean(&shim, mode);
    ct_key_free(&keys[0]);
    ct_key_free(&keys[1]);
    ct_watchdog(0, NULL);
    return ct_result(mode);
}
