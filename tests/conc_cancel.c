/*
 * Cancellation (DESIGN §2 items 3, 5): with digest-sign streamed in the token
 * and a pool of 2 sessions (tests/conc.sh config), 1,000 contexts are
 * abandoned mid-stream: freed after init and updates (RSA: C_SignInit/
 * C_SignUpdate; ECDSA: C_DigestInit/C_DigestUpdate), re-initialised
 * mid-stream, freed after a size query, freed by another thread than the
 * one that started them, and two at a time (the whole pool leased).
 *
 * Then the pool must be whole: no session was left with an operation active
 * (the shim sees none, and a next C_SignInit would meet CKR_OPERATION_ACTIVE),
 * no more sessions are open than the pool's 2 + the object session, and one
 * thread can again hold two streaming contexts at once (a lost lease makes
 * the second fail or wait), while a third fails at once (the pool really is
 * 2), and both signatures verify.
 *
 * Last, the fallback when the token cannot end an operation: the shim makes
 * every C_SignFinal answer CKR_BUFFER_TOO_SMALL, so the operation stays
 * active in the token; abandoned contexts must then throw their session away
 * (close it) instead of returning it to the pool.
 *
 *   conc_cancel [-n CONTEXTS]
 */
#include "conc_util.h"

#include <openssl/err.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POOL 2

static ct_key keys[2];
static struct p11shim_api shim;

static void *free_elsewhere(void *arg)
{
    EVP_MD_CTX_free(arg);
    OPENSSL_thread_stop();
    return NULL;
}

/* A context with an update done: it holds a lease. */
static EVP_MD_CTX *started(const ct_alg *a, int i)
{
    unsigned char msg[200];
    EVP_MD_CTX *m = ct_sign_init(a);

    ct_message(msg, sizeof(msg), 1, i);
    if (m != NULL && !EVP_DigestSignUpdate(m, msg, sizeof(msg))) {
        ct_fail("context %d: update (%s)", i, a->key->name);
        EVP_MD_CTX_free(m);
        return NULL;
    }
    return m;
}

static void abandon_one(int i)
{
    ct_alg a = {&keys[i % 2], (i / 2) % 2};
    EVP_MD_CTX *m = started(&a, i), *m2;
    pthread_t th;
    size_t siglen = 0;

    if (m == NULL)
        return;
    switch ((i / 4) % 6) {
    case 0: /* freed mid-stream */
        break;
    case 1: /* more updates, then freed */
        if (!EVP_DigestSignUpdate(m, "more", 4) ||
            !EVP_DigestSignUpdate(m, "and more", 8))
            ct_fail("context %d: second updates", i);
        break;
    case 2: /* re-initialised mid-stream, then abandoned again */
        if (!EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, a.key->tok, NULL) ||
            !EVP_DigestSignUpdate(m, "restarted", 9))
            ct_fail("context %d: re-init mid-stream", i);
        break;
    case 3: /* a size query keeps the operation; then freed */
        if (!EVP_DigestSignFinal(m, NULL, &siglen) || siglen == 0)
            ct_fail("context %d: size query", i);
        break;
    case 4: /* freed by another thread */
        if (pthread_create(&th, NULL, free_elsewhere, m) != 0) {
            ct_fail("pthread_create");
            break;
        }
        pthread_join(th, NULL);
        m = NULL;
        break;
    case 5: /* the whole pool leased, both abandoned */
        m2 = started(&a, i + 100000);
        EVP_MD_CTX_free(m2);
        if (m2 == NULL)
            ct_fail("context %d: a second lease while holding one (pool of %d)", i, POOL);
        break;
    }
    EVP_MD_CTX_free(m);
    if (ERR_peek_error() != 0)
        ct_fail("context %d: abandoning left an error on the queue", i);
}

/* One thread holds the whole pool with two streaming contexts; a third
 * fails at once; both finish and verify. */
static void pool_is_whole(const char *when)
{
    unsigned char msg[2][300], sig[2][512];
    size_t siglen[2] = {0, 0};
    ct_alg a[2] = {{&keys[0], 0}, {&keys[1], 1}};
    EVP_MD_CTX *m[2], *third;
    char err[1024];
    double t0;

    for (int k = 0; k < 2; k++) {
        ct_message(msg[k], sizeof(msg[k]), 2, k);
        m[k] = ct_sign_init(&a[k]);
        if (m[k] == NULL || !EVP_DigestSignUpdate(m[k], msg[k], 100)) {
            ct_fail("%s: lease %d of %d for one thread (a lease was lost)", when, k + 1,
                    POOL);
            EVP_MD_CTX_free(m[k]);
            m[k] = NULL;
        }
    }
    /* Proves the pool is POOL sessions: one more is refused, at once. */
    t0 = ct_now_ms();
    third = ct_sign_init(&a[0]);
    if (third != NULL && EVP_DigestSignUpdate(third, msg[0], 10))
        ct_fail("%s: a third lease from a pool of %d", when, POOL);
    ct_errors(err, sizeof(err));
    if (strstr(err, "waiting would deadlock") == NULL || ct_now_ms() - t0 > 1000)
        ct_fail("%s: the third lease did not fail at once with the deadlock error: %s",
                when, err);
    EVP_MD_CTX_free(third);
    for (int k = 0; k < 2; k++) {
        if (m[k] == NULL)
            continue;
        if (!EVP_DigestSignUpdate(m[k], msg[k] + 100, sizeof(msg[k]) - 100) ||
            !ct_sign_final(m[k], sig[k], &siglen[k]))
            ct_fail("%s: finishing context %d", when, k);
        else if (ct_verify(&a[k], msg[k], sizeof(msg[k]), sig[k], siglen[k]) != 1)
            ct_fail("%s: %s signature does not verify", when, a[k].key->name);
        EVP_MD_CTX_free(m[k]);
    }
    ct_sign_check(&a[0], when);
    ct_sign_check(&a[1], when);
    if (shim.open_sessions() > POOL + 1)
        ct_fail("%s: %lu sessions open; the pool has %d (+1 object session)", when,
                shim.open_sessions(), POOL);
    ct_shim_clean(&shim, when);
}

int main(int argc, char **argv)
{
    int n = 1000, opt;
    unsigned long opened, closed;

    while ((opt = getopt(argc, argv, "n:")) != -1) {
        if (opt != 'n')
            return 2;
        n = atoi(optarg);
    }
    ct_watchdog(120, "conc_cancel");
    if (!ct_init() || !ct_key_load(&keys[0], "ec") || !ct_key_load(&keys[1], "rsa") ||
        !ct_shim(&shim))
        return ct_result("set-up");
    /* A first signature with each key: sessions, login and key copies made. */
    ct_sign_check(&(ct_alg){&keys[0], 0}, "warm-up");
    ct_sign_check(&(ct_alg){&keys[1], 0}, "warm-up");
    shim.reset_log();

    for (int i = 0; i < n && ct_failures() < 10; i++)
        abandon_one(i);
    opened = shim.call_count("C_OpenSession");
    closed = shim.call_count("C_CloseSession");
    printf("%d contexts abandoned mid-stream: %lu C_SignUpdate, %lu C_DigestUpdate, %lu "
           "C_SignFinal, %lu C_DigestFinal, %lu C_OpenSession, %lu C_CloseSession\n",
           n, shim.call_count("C_SignUpdate"), shim.call_count("C_DigestUpdate"),
           shim.call_count("C_SignFinal"), shim.call_count("C_DigestFinal"), opened,
           closed);
    if (shim.call_count("C_SignUpdate") == 0 || shim.call_count("C_DigestUpdate") == 0)
        ct_fail("the contexts did not stream in the token (pkcs11-digest-in-token)");
    pool_is_whole("after abandoning");

    /* The token cannot end the operation: the session must go. */
    shim.reset_log();
    if (shim.fail_nth("C_SignFinal", 0, CKR_BUFFER_TOO_SMALL) != 0)
        ct_fail("p11shim_fail_nth");
    for (int i = 0; i < 20; i++) {
        EVP_MD_CTX *m = started(&(ct_alg){&keys[1], 0}, i);

        EVP_MD_CTX_free(m);
    }
    shim.clear();
    ERR_clear_error();
    closed = shim.call_count("C_CloseSession");
    printf("20 contexts whose operation the token would not end: %lu C_CloseSession, %lu "
           "C_OpenSession\n",
           closed, shim.call_count("C_OpenSession"));
    if (closed < 20)
        ct_fail("only %lu of 20 sessions stuck in an operation were closed", closed);
    pool_is_whole("after sessions stuck in an operation");

    ct_key_free(&keys[0]);
    ct_key_free(&keys[1]);
    ct_watchdog(0, NULL);
    return ct_result("cancellation");
}
