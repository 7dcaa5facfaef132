/*
 * A key deleted from the token while threads sign with it (one shared
 * EVP_PKEY, the default key cache: the threads sign with its session copy).
 * Run by tests/conc.sh with pkcs11-key-check-interval = 1.
 *
 *   key_deleted_threads [THREADS]
 *
 * Before the deletion every signature verifies. The key is deleted by
 * another process (pkcs11-tool); from 1 s + a margin after that, every
 * thread's signatures fail, for good, with the error that names the key as
 * gone. Signatures made in between still verify (the same key signed them).
 * No crash, no hang, and (in the ThreadSanitizer build) no race while one
 * thread checks and destroys the copy that the others are using.
 */
#include "conc_util.h"

#include <libgen.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define INTERVAL_MS 1000.0
#define MARGIN_MS 1500.0

static ct_key key;
static atomic_int stop;

struct worker {
    pthread_t th;
    int id;
    unsigned good, bad, good_after_bad, bad_sig;
    double first_bad_ms, last_good_ms;
    char error[1024];
};

static void *work(void *arg)
{
    struct worker *w = arg;
    ct_alg a = {&key, 0};
    unsigned char msg[64], sig[512];
    size_t siglen;

    for (int i = 0; !atomic_load(&stop); i++) {
        ct_message(msg, sizeof(msg), w->id, i);
        if (ct_sign_hash(&a, msg, sizeof(msg), sig, &siglen)) {
            if (ct_verify(&a, msg, sizeof(msg), sig, siglen) != 1)
                w->bad_sig++;
            if (w->bad > 0)
                w->good_after_bad++;
            w->good++;
            w->last_good_ms = ct_now_ms();
        } else {
            if (w->bad++ == 0) {
                w->first_bad_ms = ct_now_ms();
                ct_errors(w->error, sizeof(w->error));
            }
            ERR_clear_error();
            usleep(2000);
        }
    }
    return NULL;
}

/* pkcs11-tool in another process, with the PIN from the test's PIN file
 * (read by the shell, so that it appears in no output of ours). */
static int delete_key(void)
{
    const char *conf = getenv("OPENSSL_CONF"), *mod = getenv("SOFTHSM2_MODULE");
    char dir[512], cmd[2048];

    if (conf == NULL || mod == NULL)
        return 0;
    snprintf(dir, sizeof(dir), "%s", conf);
    snprintf(cmd, sizeof(cmd),
             "env -u OPENSSL_CONF pkcs11-tool --module '%s' --token-label demo --login "
             "--pin \"$(cat '%s/pin')\" --delete-object --type privkey --id 02 "
             ">/dev/null 2>&1",
             mod, dirname(dir));
    return system(cmd) == 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 8;
    struct worker *w = calloc((size_t)n, sizeof(*w));
    double deleted_ms;

    if (w == NULL || !ct_init() || !ct_key_load(&key, "ec"))
        return ct_result("key_deleted_threads");
    ct_watchdog(120, "key_deleted_threads");
    for (int i = 0; i < n; i++) {
        w[i].id = i;
        pthread_create(&w[i].th, NULL, work, &w[i]);
    }
    usleep(500 * 1000);
    if (!delete_key())
        ct_fail("pkcs11-tool --delete-object failed");
    deleted_ms = ct_now_ms();
    usleep((useconds_t)((INTERVAL_MS + MARGIN_MS) * 1000));
    atomic_store(&stop, 1);
    for (int i = 0; i < n; i++)
        pthread_join(w[i].th, NULL);

    for (int i = 0; i < n; i++) {
        printf("thread %d: %u signatures, then %u failures from %.0f ms after the "
               "deletion: %s\n",
               i, w[i].good, w[i].bad, w[i].bad ? w[i].first_bad_ms - deleted_ms : -1.0,
               w[i].error);
        if (w[i].good == 0)
            ct_fail("thread %d: no signature before the deletion", i);
        if (w[i].bad_sig > 0)
            ct_fail("thread %d: %u signatures did not verify", i, w[i].bad_sig);
        if (w[i].bad == 0)
            ct_fail("thread %d: still signing %.0f ms after the key was deleted", i,
                    w[i].last_good_ms - deleted_ms);
        else if (w[i].first_bad_ms - deleted_ms > INTERVAL_MS + MARGIN_MS / 2)
            ct_fail("thread %d: the first failure came %.0f ms after the deletion", i,
                    w[i].first_bad_ms - deleted_ms);
        if (w[i].good_after_bad > 0)
            ct_fail("thread %d: %u signatures after a failure: the key came back", i,
                    w[i].good_after_bad);
        if (w[i].bad > 0 &&
            (strstr(w[i].error, "CKR_OBJECT_HANDLE_INVALID") == NULL ||
             strstr(w[i].error, "id=%02;object=ec;type=private is gone") == NULL))
            ct_fail("thread %d: the error does not say that the key is gone: %s", i,
                    w[i].error);
    }
    ct_key_free(&key);
    free(w);
    return ct_result("key_deleted_threads");
}
