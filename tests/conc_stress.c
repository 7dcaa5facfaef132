/*
 * Stress (DESIGN §2 items 1-5, 9): THREADS threads share an ECDSA P-256 and
 * an RSA-2048 token key (loaded once through OSSL_STORE) and mix, each with
 * its own distinct data:
 *
 *   one-shot EVP_DigestSign, streaming digest-sign (several updates), a
 *   single-step EVP_PKEY_sign of a hash, contexts abandoned mid-stream (freed
 *   after init and some updates), contexts re-initialised mid-stream,
 *   contexts duplicated mid-stream (the copy finishes), and contexts handed
 *   from one thread to another mid-stream (init + update in the producer,
 *   update + final in the consumer, through a mailbox).
 *
 * RSA alternates between PKCS#1 v1.5 and PSS. Every signature is verified by
 * OpenSSL's default provider with the exported public key; a successful call
 * must leave the error queue empty. Pool size and whether digest-sign streams
 * in the token come from the configuration (tests/conc.sh); -s says the run
 * streams in the token, and the shim's counts must show it.
 *
 * Fails on any wrong signature, any failed call, any interleaving the shim
 * saw on a session, more sessions open than the pool allows (+1 object
 * session), or no context actually crossing threads.
 *
 *   conc_stress [-t THREADS] [-n PER_THREAD] [-P POOL (0: the default)] [-s]
 *
 * The default pool grows to the demand, up to 64 or 4 per CPU (SoftHSM2 sets
 * no session limit of its own).
 */
#include "conc_util.h"

#include <openssl/err.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ct_key keys[2];
static int per_thread = 40;
static atomic_int done_threads;
static atomic_ulong max_sessions;
static struct p11shim_api shim;

enum { K_ONESHOT, K_STREAM, K_HASH, K_ABANDON, K_HANDOFF, K_REINIT, K_DUP, K_NKINDS };
static const char *const kind_names[] = {
    "one-shot", "streaming", "hash-sign", "abandoned", "handed-off", "re-init", "dup"};
static atomic_ulong counts[K_NKINDS];
static atomic_ulong crossed; /* hand-offs finished by another thread */

/* ---- mailbox for hand-offs ------------------------------------------------ */

enum { PENDING, ADOPTED, RECLAIMED };

struct handoff {
    EVP_MD_CTX *mctx;
    ct_alg alg;
    unsigned char msg[1100];
    size_t len, split;
    int producer, state;
    int refs; /* the producer's and the consumer's: the last one frees it */
    struct handoff *next;
};

static pthread_mutex_t mb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mb_cv = PTHREAD_COND_INITIALIZER;
static struct handoff *mailbox;

static void put_handoff(struct handoff *h)
{
    int last;

    pthread_mutex_lock(&mb_mu);
    last = --h->refs == 0;
    pthread_mutex_unlock(&mb_mu);
    if (last)
        free(h);
}

static void check_sig(const struct handoff *h, const unsigned char *sig, size_t siglen,
                      const char *what, int who)
{
    if (ct_verify(&h->alg, h->msg, h->len, sig, siglen) != 1)
        ct_fail("thread %d: %s %s signature (%zu bytes of data, by thread %d) does not "
                "verify",
                who, what, h->alg.key->name, h->len, h->producer);
}

/* The consumer's half: rest of the data, final, verify. */
static void finish_handoff(struct handoff *h, int who, int adopted)
{
    unsigned char sig[512];
    size_t siglen = 0;
    int ok = EVP_DigestSignUpdate(h->mctx, h->msg + h->split, h->len - h->split);

    if (adopted) {
        /* The producer may go on once the consumer has used the context. */
        pthread_mutex_lock(&mb_mu);
        h->state = ADOPTED;
        pthread_cond_broadcast(&mb_cv);
        pthread_mutex_unlock(&mb_mu);
    }
    if (ok)
        ok = ct_sign_final(h->mctx, sig, &siglen);
    if (!ok)
        ct_fail("thread %d: finishing a context started by thread %d (%s)", who,
                h->producer, h->alg.key->name);
    else if (ERR_peek_error() != 0)
        ct_fail("thread %d: hand-off succeeded but left an error on the queue", who);
    else
        check_sig(h, sig, siglen, "handed-off", who);
    if (ok && who != h->producer)
        atomic_fetch_add(&crossed, 1);
    EVP_MD_CTX_free(h->mctx);
    h->mctx = NULL;
    put_handoff(h);
}

/* Takes a context another thread started, if one waits. */
static void adopt(int who)
{
    struct handoff **pp, *h = NULL;

    pthread_mutex_lock(&mb_mu);
    for (pp = &mailbox; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->producer != who) {
            h = *pp;
            *pp = h->next;
            break;
        }
    pthread_mutex_unlock(&mb_mu);
    if (h != NULL)
        finish_handoff(h, who, 1);
}

static void produce_handoff(const ct_alg *a, int who, int i)
{
    struct handoff *h = calloc(1, sizeof(*h));
    struct timespec ts;
    int state;

    if (h == NULL)
        return;
    h->alg = *a;
    h->producer = who;
    h->refs = 2;
    h->len = 200 + (size_t)((who * 53 + i * 17) % 900);
    h->split = h->len / 3;
    ct_message(h->msg, h->len, who, i);
    h->mctx = ct_sign_init(a);
    if (h->mctx == NULL || !EVP_DigestSignUpdate(h->mctx, h->msg, h->split)) {
        ct_fail("thread %d: start of a hand-off (%s)", who, a->key->name);
        EVP_MD_CTX_free(h->mctx);
        free(h);
        return;
    }
    pthread_mutex_lock(&mb_mu);
    h->state = PENDING;
    h->next = mailbox;
    mailbox = h;
    /* Wait a little for another thread to take it over; else finish it here. */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 30 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (h->state == PENDING) {
        struct handoff **pp;
        int in_box = 0;

        if (pthread_cond_timedwait(&mb_cv, &mb_mu, &ts) == 0)
            continue;
        for (pp = &mailbox; *pp != NULL; pp = &(*pp)->next)
            if (*pp == h) {
                *pp = h->next;
                in_box = 1;
                break;
            }
        if (in_box) {
            h->state = RECLAIMED;
            break;
        }
        /* Taken but not yet used: wait for the consumer's first update. */
        while (h->state == PENDING)
            pthread_cond_wait(&mb_cv, &mb_mu);
    }
    state = h->state;
    pthread_mutex_unlock(&mb_mu);
    if (state == RECLAIMED)
        finish_handoff(h, who, 0);
    /* ADOPTED: the consumer finishes the context. */
    put_handoff(h);
}

/* ---- the other kinds of work -------------------------------------------------- */

static void one_step(int who, int i)
{
    unsigned char msg[1100], sig[512];
    size_t len = 100 + (size_t)((who * 37 + i * 11) % 1000), siglen = 0;
    int kind = (who + i * 3) % K_NKINDS;
    ct_alg a = {&keys[(who + i) % 2], (i / 2) % 2};
    EVP_MD_CTX *m, *copy;
    int ok = 1, chunks = 2 + (who + i) % 4;

    ct_message(msg, len, who, i);
    switch (kind) {
    case K_ONESHOT:
        ok = ct_sign_oneshot(&a, msg, len, sig, &siglen);
        break;
    case K_STREAM:
        ok = ct_sign_stream(&a, msg, len, chunks, sig, &siglen);
        break;
    case K_HASH:
        ok = ct_sign_hash(&a, msg, len, sig, &siglen);
        break;
    case K_ABANDON:
        m = ct_sign_init(&a);
        for (int c = 0; m != NULL && c < chunks - 2; c++)
            if (!EVP_DigestSignUpdate(m, msg + c, 1))
                ok = 0;
        EVP_MD_CTX_free(m);
        ok = ok && m != NULL;
        break;
    case K_HANDOFF:
        produce_handoff(&a, who, i);
        atomic_fetch_add(&counts[kind], 1);
        return;
    case K_REINIT:
        /* Mid-stream, the context starts over with the whole message. */
        m = ct_sign_init(&a);
        ok = m != NULL && EVP_DigestSignUpdate(m, "discarded prefix", 16) &&
             EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, a.key->tok, NULL);
        if (ok && a.key->is_rsa && a.pss)
            ok = EVP_PKEY_CTX_set_rsa_padding(EVP_MD_CTX_get_pkey_ctx(m),
                                              RSA_PKCS1_PSS_PADDING) > 0 &&
                 EVP_PKEY_CTX_set_rsa_pss_saltlen(EVP_MD_CTX_get_pkey_ctx(m),
                                                  RSA_PSS_SALTLEN_DIGEST) > 0;
        ok = ok && EVP_DigestSignUpdate(m, msg, len) && ct_sign_final(m, sig, &siglen);
        EVP_MD_CTX_free(m);
        break;
    case K_DUP:
        /* TLS duplicates digest-sign contexts; the copy finishes. */
        m = ct_sign_init(&a);
        copy = EVP_MD_CTX_new();
        ok = m != NULL && copy != NULL && EVP_DigestSignUpdate(m, msg, len / 2) &&
             EVP_MD_CTX_copy_ex(copy, m);
        EVP_MD_CTX_free(m);
        ok = ok && EVP_DigestSignUpdate(copy, msg + len / 2, len - len / 2) &&
             ct_sign_final(copy, sig, &siglen);
        EVP_MD_CTX_free(copy);
        break;
    }
    if (!ok) {
        ct_fail("thread %d step %d: %s %s%s failed", who, i, kind_names[kind],
                a.key->name, a.key->is_rsa && a.pss ? " PSS" : "");
        return;
    }
    if (ERR_peek_error() != 0) {
        ct_fail("thread %d step %d: %s succeeded but left an error on the queue", who, i,
                kind_names[kind]);
        return;
    }
    atomic_fetch_add(&counts[kind], 1);
    if (kind == K_ABANDON)
        return;
    if (ct_verify(&a, msg, len, sig, siglen) != 1)
        ct_fail("thread %d step %d: %s %s%s signature does not verify", who, i,
                kind_names[kind], a.key->name, a.key->is_rsa && a.pss ? " PSS" : "");
}

static void *worker(void *arg)
{
    int who = (int)(intptr_t)arg;

    ERR_clear_error();
    for (int i = 0; i < per_thread && ct_failures() < 10; i++) {
        adopt(who);
        one_step(who, i);
    }
    /* Nobody may be left waiting for a consumer. */
    adopt(who);
    atomic_fetch_add(&done_threads, 1);
    OPENSSL_thread_stop();
    return NULL;
}

int main(int argc, char **argv)
{
    int nthreads = 16, pool = 0, stream = 0, opt;
    unsigned long stream_calls;
    pthread_t tids[64];
    double t0;

    while ((opt = getopt(argc, argv, "t:n:P:s")) != -1) {
        switch (opt) {
        case 't':
            nthreads = atoi(optarg);
            break;
        case 'n':
            per_thread = atoi(optarg);
            break;
        case 'P':
            pool = atoi(optarg);
            break;
        case 's':
            stream = 1;
            break;
        default:
            fprintf(stderr, "usage: %s [-t threads] [-n per-thread] [-P pool] [-s]\n",
                    argv[0]);
            return 2;
        }
    }
    if (nthreads < 2 || nthreads > 64 || per_thread < 1)
        return 2;
    if (pool == 0) {
        pool = 4 * (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (pool < 64)
            pool = 64;
    }
    ct_watchdog(240, "conc_stress");
    if (!ct_init() || !ct_key_load(&keys[0], "ec") || !ct_key_load(&keys[1], "rsa") ||
        !ct_shim(&shim))
        return ct_result("set-up");
    printf("%d threads x %d steps, pool %d, digest-sign %s\n", nthreads, per_thread, pool,
           stream ? "streamed in the token" : "hashed on the host");
    fflush(stdout);

    t0 = ct_now_ms();
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&tids[t], NULL, worker, (void *)(intptr_t)t) != 0) {
            ct_fail("pthread_create");
            nthreads = t;
            break;
        }
    /* Sample the number of open sessions while the workers run. */
    while (atomic_load(&done_threads) < nthreads) {
        unsigned long n = shim.open_sessions();

        if (n > atomic_load(&max_sessions))
            atomic_store(&max_sessions, n);
        usleep(2000);
    }
    for (int t = 0; t < nthreads; t++)
        pthread_join(tids[t], NULL);

    for (int k = 0; k < K_NKINDS; k++)
        printf("  %-10s %lu\n", kind_names[k], atomic_load(&counts[k]));
    printf("  hand-offs finished by another thread: %lu\n", atomic_load(&crossed));
    printf("  at most %lu sessions open (pool %d + 1 object session)\n",
           atomic_load(&max_sessions), pool);
    printf("  %.0f ms\n", ct_now_ms() - t0);

    if (mailbox != NULL)
        ct_fail("contexts left in the mailbox");
    if (atomic_load(&crossed) == 0)
        ct_fail("no context was finished by another thread than the one that started it");
    if (atomic_load(&max_sessions) > (unsigned long)pool + 1)
        ct_fail("%lu sessions were open at once; the pool allows %d (+1 object session)",
                atomic_load(&max_sessions), pool);
    stream_calls = shim.call_count("C_SignUpdate") + shim.call_count("C_DigestUpdate");
    if (stream && stream_calls == 0)
        ct_fail(
            "digest-sign did not stream in the token (no C_SignUpdate/C_DigestUpdate)");
    if (!stream && stream_calls != 0)
        ct_fail("digest-sign streamed in the token (%lu updates) though it should hash "
                "on the host",
                stream_calls);
    printf(
        "  shim: %lu C_SignInit, %lu C_Sign, %lu C_SignUpdate, %lu C_DigestUpdate, %lu "
        "C_SignFinal, %lu C_OpenSession, %lu C_Login\n",
        shim.call_count("C_SignInit"), shim.call_count("C_Sign"),
        shim.call_count("C_SignUpdate"), shim.call_count("C_DigestUpdate"),
        shim.call_count("C_SignFinal"), shim.call_count("C_OpenSession"),
        shim.call_count("C_Login"));
    ct_shim_clean(&shim, "stress");
    ct_key_free(&keys[0]);
    ct_key_free(&keys[1]);
    ct_watchdog(0, NULL);
    return ct_result("stress");
}
