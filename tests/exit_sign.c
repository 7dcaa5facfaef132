/*
 * exit() while other threads sign: the process must end with the status
 * exit() was given, whatever the other threads are doing (DESIGN §6).
 *
 *   exit_sign [-t THREADS] [-d DELAY_US] [-a] KEY...
 *
 * Each KEY is a pkcs11: URI or a PEM file, loaded through OSSL_STORE. THREADS
 * threads (default 4) sign with the keys in turn (thread i with key i mod
 * the number of keys), one-shot and streaming alternately, without pause.
 * Once every thread has made a signature, the main thread waits DELAY_US
 * microseconds and calls exit(0) while they go on. A failure before that
 * moment exits 1; after it, the signing threads ignore failures: a call that
 * meets an exiting process may fail, but must not crash it.
 *
 * -a: OpenSSL's own exit handler is off (OPENSSL_INIT_NO_ATEXIT). With it on
 * (the default), OPENSSL_cleanup() frees libcrypto under threads that are in
 * OpenSSL at that moment: threads signing with software keys crash there
 * whether or not hsmprov is loaded, so the cases with software keys turn it
 * off and see only what hsmprov and its module do at exit.
 *
 * The provider comes from OPENSSL_CONF (tests/exit_sign.sh writes it).
 */
#include "conc_util.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/store.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEYS 8
#define MAX_THREADS 64

static EVP_PKEY *keys[MAX_KEYS];
static const char *key_names[MAX_KEYS];
static int nkeys;
static atomic_int exiting;
static atomic_int failures;
static atomic_long signatures;
static atomic_int started[MAX_THREADS];

static int sign_once(EVP_PKEY *key, const unsigned char *msg, size_t len, int streaming)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    int ok;

    ok = m != NULL && EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, key, NULL);
    if (ok && streaming)
        ok = EVP_DigestSignUpdate(m, msg, len / 2) &&
             EVP_DigestSignUpdate(m, msg + len / 2, len - len / 2) &&
             EVP_DigestSignFinal(m, sig, &siglen);
    else if (ok)
        ok = EVP_DigestSign(m, sig, &siglen, msg, len);
    EVP_MD_CTX_free(m);
    return ok;
}

static void *sign_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    EVP_PKEY *key = keys[id % nkeys];
    unsigned char msg[256];

    memset(msg, id, sizeof(msg));
    for (long i = 0;; i++) {
        int ok;

        msg[0] = (unsigned char)i;
        ok = sign_once(key, msg, sizeof(msg), (int)(i & 1));
        if (atomic_load(&exiting)) {
            /* Whatever happened, the process is ending: no output, no
             * error handling that could race the exit. */
            continue;
        }
        if (!ok) {
            fprintf(stderr, "FAIL: thread %d: signature %ld with %s failed\n", id, i,
                    key_names[id % nkeys]);
            ERR_print_errors_fp(stderr);
            atomic_fetch_add(&failures, 1);
            break;
        }
        atomic_fetch_add(&signatures, 1);
        atomic_store(&started[id], 1);
    }
    return NULL;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

int main(int argc, char **argv)
{
    uint64_t init = OPENSSL_INIT_LOAD_CONFIG;
    int nthreads = 4, opt;
    long delay_us = 0;
    pthread_t tid;

    while ((opt = getopt(argc, argv, "t:d:a")) != -1) {
        switch (opt) {
        case 't':
            nthreads = atoi(optarg);
            break;
        case 'd':
            delay_us = atol(optarg);
            break;
        case 'a':
            init |= OPENSSL_INIT_NO_ATEXIT;
            break;
        default:
            goto usage;
        }
    }
    if (optind >= argc || argc - optind > MAX_KEYS || nthreads < 1 ||
        nthreads > MAX_THREADS || delay_us < 0)
        goto usage;
    if (!OPENSSL_init_crypto(init, NULL)) {
        fprintf(stderr, "FAIL: OPENSSL_init_crypto (OPENSSL_CONF)\n");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    for (int i = optind; i < argc; i++) {
        key_names[nkeys] = argv[i];
        keys[nkeys] = ct_store_load(argv[i]);
        if (keys[nkeys] == NULL) {
            fprintf(stderr, "FAIL: no private key at %s\n", argv[i]);
            ERR_print_errors_fp(stderr);
            return 1;
        }
        nkeys++;
    }
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&tid, NULL, sign_thread, (void *)(intptr_t)t) != 0 ||
            pthread_detach(tid) != 0) {
            fprintf(stderr, "FAIL: pthread_create\n");
            return 1;
        }
    /* Every thread is signing before the clock for the delay starts. */
    for (int waited = 0, t = 0; t < nthreads; waited++) {
        if (atomic_load(&failures) != 0)
            return 1;
        if (waited > 60000) {
            fprintf(stderr, "FAIL: thread %d made no signature in 60 s\n", t);
            return 1;
        }
        if (atomic_load(&started[t]))
            t++;
        else
            sleep_us(1000);
    }
    sleep_us(delay_us);
    if (atomic_load(&failures) != 0)
        return 1;
    printf("exit(0) after %ld us, %ld signatures, other threads still signing\n",
           delay_us, atomic_load(&signatures));
    fflush(stdout);
    atomic_store(&exiting, 1);
    exit(0);

usage:
    fprintf(stderr, "usage: %s [-t threads] [-d delay_us] [-a] KEY...\n", argv[0]);
    return 2;
}
