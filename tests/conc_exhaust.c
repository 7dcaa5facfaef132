/*
 * Pool exhaustion (DESIGN §2 items 1, 3, 4, 6), digest-sign streamed in the
 * token and a pool of 2 (tests/conc.sh config). A streaming context holds a
 * lease from its first update to final or free.
 *
 *   conc_exhaust immediate   pkcs11-pool-wait-timeout-ms = 0 (wait forever):
 *                            one thread holds both leases and asks for a
 *                            third (a streaming context, then a one-shot
 *                            sign): an error at once (< 1 s) that says
 *                            waiting would deadlock, not a hang; once it
 *                            frees a context, the next one works.
 *   conc_exhaust timeout     pkcs11-pool-wait-timeout-ms = 200: another
 *                            thread waiting on the exhausted pool gets the
 *                            timeout error after about 200 ms.
 *   conc_exhaust wait        timeout 0: another thread waits (it holds no
 *                            lease) and gets its session, and a good
 *                            signature, as soon as the holder finishes one.
 *   conc_exhaust handoff     timeout 0: the leases belong to contexts, not
 *                            to the thread that took them. Thread A starts
 *                            both contexts and hands them to thread B, which
 *                            updates them. A now holds nothing: its sign
 *                            must wait (not fail) until B finishes one. B,
 *                            which now drives a lease, asking for one more
 *                            from the exhausted pool must fail at once (a
 *                            wait could never end).
 *
 * A watchdog turns a hang into a failure.
 */
#include "conc_util.h"

#include <openssl/err.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEADLOCK_TEXT "waiting would deadlock"

static ct_key keys[2];
static ct_alg algs[2] = {{&keys[0], 0}, {&keys[1], 0}};

struct held {
    EVP_MD_CTX *m;
    unsigned char msg[400];
    int k;
};

/* Starts a streaming context: after its first update it holds a lease. */
static int hold(struct held *h, int k, int i)
{
    h->k = k;
    ct_message(h->msg, sizeof(h->msg), 3, i);
    h->m = ct_sign_init(&algs[k]);
    if (h->m == NULL || !EVP_DigestSignUpdate(h->m, h->msg, 100)) {
        ct_fail("starting streaming context %d (%s)", i, keys[k].name);
        EVP_MD_CTX_free(h->m);
        h->m = NULL;
        return 0;
    }
    return 1;
}

/* Finishes it and checks the signature. */
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

/* A single-step signature (EVP_PKEY_sign of a hash: one leased call). */
static int sign_once(int k, int i, char *err, size_t errlen)
{
    unsigned char msg[100], sig[512];
    size_t siglen = 0;

    ct_message(msg, sizeof(msg), 4, i);
    ERR_clear_error();
    if (!ct_sign_hash(&algs[k], msg, sizeof(msg), sig, &siglen)) {
        ct_errors(err, errlen);
        return 0;
    }
    err[0] = '\0';
    if (ct_verify(&algs[k], msg, sizeof(msg), sig, siglen) != 1) {
        ct_fail("sign_once: the %s signature does not verify", keys[k].name);
        return 0;
    }
    return 1;
}

/* Expects an immediate deadlock error for what this thread asks next. */
static void expect_refused(int ok, double t0, const char *err, const char *what)
{
    double ms = ct_now_ms() - t0;

    if (ok)
        ct_fail("%s: a lease from an exhausted pool was granted", what);
    else if (strstr(err, DEADLOCK_TEXT) == NULL)
        ct_fail("%s: the error does not say waiting would deadlock: %s", what, err);
    else if (ms > 1000)
        ct_fail("%s: the error came after %.0f ms, not at once", what, ms);
    else
        printf("%s: refused after %.1f ms: %s\n", what, ms, err);
}

static int mode_immediate(void)
{
    struct held h[3] = {0};
    char err[1024];
    double t0;
    int ok;

    hold(&h[0], 0, 0);
    hold(&h[1], 1, 1);
    /* A third streaming context: init works (no lease yet), the update
     * needs a session. */
    t0 = ct_now_ms();
    h[2].m = ct_sign_init(&algs[0]);
    ok = h[2].m != NULL && EVP_DigestSignUpdate(h[2].m, "x", 1);
    ct_errors(err, sizeof(err));
    expect_refused(ok, t0, err, "third streaming context, same thread");
    EVP_MD_CTX_free(h[2].m);
    h[2].m = NULL;
    t0 = ct_now_ms();
    ok = sign_once(1, 0, err, sizeof(err));
    expect_refused(ok, t0, err, "one-shot sign, same thread");
    /* One freed: the next works. */
    finish(&h[0], "first context");
    if (!hold(&h[2], 0, 2))
        ct_fail("no lease after a context was finished");
    finish(&h[2], "third context");
    finish(&h[1], "second context");
    return ct_result("exhaustion: immediate error");
}

struct waiter {
    pthread_t th;
    atomic_int done;
    int ok;
    double ms;
    char err[1024];
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    double t0 = ct_now_ms();

    w->ok = sign_once(0, 7, w->err, sizeof(w->err));
    w->ms = ct_now_ms() - t0;
    atomic_store(&w->done, 1);
    OPENSSL_thread_stop();
    return NULL;
}

static int mode_timeout(void)
{
    struct held h[2] = {0};
    struct waiter w = {0};

    hold(&h[0], 0, 0);
    hold(&h[1], 1, 1);
    pthread_create(&w.th, NULL, waiter_main, &w);
    pthread_join(w.th, NULL);
    if (w.ok)
        ct_fail("the waiter got a session from an exhausted pool");
    else if (strstr(w.err, "within 200 ms (pkcs11-pool-wait-timeout-ms)") == NULL)
        ct_fail("the waiter's error does not name the timeout: %s", w.err);
    else if (w.ms < 150 || w.ms > 5000)
        ct_fail("the waiter gave up after %.0f ms, not about 200", w.ms);
    else
        printf("waiter timed out after %.0f ms: %s\n", w.ms, w.err);
    finish(&h[0], "first context");
    finish(&h[1], "second context");
    /* The pool works again for everyone. */
    pthread_create(&w.th, NULL, waiter_main, &w);
    pthread_join(w.th, NULL);
    if (!w.ok)
        ct_fail("after the timeout, a sign failed: %s", w.err);
    return ct_result("exhaustion: timeout");
}

static int mode_wait(void)
{
    struct held h[2] = {0};
    struct waiter w = {0};

    hold(&h[0], 0, 0);
    hold(&h[1], 1, 1);
    pthread_create(&w.th, NULL, waiter_main, &w);
    usleep(300 * 1000);
    if (atomic_load(&w.done))
        ct_fail("the waiter did not wait for the exhausted pool (ok=%d, %.0f ms): %s",
                w.ok, w.ms, w.err);
    finish(&h[0], "first context");
    pthread_join(w.th, NULL);
    if (!w.ok)
        ct_fail("the waiter failed once a session was free: %s", w.err);
    else
        printf("waiter signed after %.0f ms, once a context was finished\n", w.ms);
    finish(&h[1], "second context");
    return ct_result("exhaustion: wait");
}

/* ---- handoff ---------------------------------------------------------------- */

static struct held handed[2];
static atomic_int b_updated, b_may_finish;

/* B finishes a context that A started and B continued. */
static void b_finish(int k)
{
    unsigned char sig[512];
    size_t siglen = 0;
    struct held *h = &handed[k];

    if (!EVP_DigestSignUpdate(h->m, h->msg + 150, sizeof(h->msg) - 150) ||
        !ct_sign_final(h->m, sig, &siglen))
        ct_fail("B: finishing the %s context", keys[k].name);
    else if (ct_verify(&algs[k], h->msg, sizeof(h->msg), sig, siglen) != 1)
        ct_fail("B: the %s context's signature does not verify", keys[k].name);
    EVP_MD_CTX_free(h->m);
    h->m = NULL;
}

static void *b_main(void *arg)
{
    struct held extra = {0};
    char err[1024];
    double t0;
    int ok;

    (void)arg;
    /* B drives both contexts now. */
    for (int k = 0; k < 2; k++)
        if (!EVP_DigestSignUpdate(handed[k].m, handed[k].msg + 100, 50))
            ct_fail("B: update of a context A started");
    atomic_store(&b_updated, 1);
    /* A's sign waits for a session meanwhile; then B frees one. */
    usleep(300 * 1000);
    atomic_store(&b_may_finish, 1);
    b_finish(0);
    /* A takes the freed session and keeps it (a third context); B still
     * drives the second context: the pool is exhausted again, and B must not
     * wait for itself. */
    while (atomic_load(&b_updated) != 2)
        usleep(1000);
    t0 = ct_now_ms();
    extra.m = ct_sign_init(&algs[1]);
    ok = extra.m != NULL && EVP_DigestSignUpdate(extra.m, "x", 1);
    ct_errors(err, sizeof(err));
    expect_refused(ok, t0, err, "B, driving a handed-over context, asks for one more");
    EVP_MD_CTX_free(extra.m);
    b_finish(1);
    atomic_store(&b_updated, 3);
    OPENSSL_thread_stop();
    return NULL;
}

static int mode_handoff(void)
{
    struct held third = {0};
    char err[1024];
    pthread_t b;
    double t0;
    int ok;

    hold(&handed[0], 0, 0);
    hold(&handed[1], 1, 1);
    pthread_create(&b, NULL, b_main, NULL);
    while (atomic_load(&b_updated) == 0)
        usleep(1000);
    /* A holds no lease now: it waits for B to finish one. */
    t0 = ct_now_ms();
    ok = sign_once(1, 3, err, sizeof(err));
    if (!ok)
        ct_fail("A, which handed both contexts to B, could not sign (after %.0f ms): %s",
                ct_now_ms() - t0, err);
    else if (!atomic_load(&b_may_finish))
        ct_fail("A signed while B held both sessions");
    else
        printf("A waited %.0f ms for B to finish a context, then signed\n",
               ct_now_ms() - t0);
    /* A takes the free session and keeps it; B asks for one more. */
    if (!hold(&third, 0, 2))
        ct_fail("A: no lease for a third context after B finished one");
    atomic_store(&b_updated, 2);
    while (atomic_load(&b_updated) != 3)
        usleep(1000);
    pthread_join(b, NULL);
    finish(&third, "A's third context");
    return ct_result("exhaustion: contexts handed to another thread");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    ct_watchdog(30, mode);
    if (!ct_init() || !ct_key_load(&keys[0], "ec") || !ct_key_load(&keys[1], "rsa"))
        return ct_result("set-up");
    if (strcmp(mode, "immediate") == 0)
        return mode_immediate();
    if (strcmp(mode, "timeout") == 0)
        return mode_timeout();
    if (strcmp(mode, "wait") == 0)
        return mode_wait();
    if (strcmp(mode, "handoff") == 0)
        return mode_handoff();
    fprintf(stderr, "usage: %s immediate|timeout|wait|handoff\n", argv[0]);
    return 2;
}
