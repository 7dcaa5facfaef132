/*
 * Recovery through the fault-injection shim (DESIGN §2 items 1, 7; issue 3
 * "Recovery"). Each mode signs with the EC and the RSA key (one-shot
 * EVP_DigestSign, and a streaming context), breaks something with the shim,
 * and checks what the next signature does. Every signature is verified in
 * software; a successful call must leave the error queue empty.
 *
 *   conc_recovery invalidate   every session handle becomes invalid (the
 *                              token closed them: login and object handles
 *                              go too): the next signatures work, without a
 *                              wrong-PIN C_Login.
 *   conc_recovery invalidate_mt  the same, 10 times, while 8 threads sign:
 *                              no signature fails.
 *   conc_recovery logout       the token forgets the login: the next
 *                              signatures work (one new C_Login, with the PIN
 *                              that worked; none rejected).
 *   conc_recovery removal      the token is removed: signing fails with an
 *                              error naming CKR_DEVICE_REMOVED or
 *                              CKR_TOKEN_NOT_PRESENT and the call (again
 *                              while it stays away); once it is back,
 *                              signing works in the same process.
 *   conc_recovery connection   the module loses its connection to a remote
 *                              token (the shim as p11-kit-client.so whose
 *                              server died: CKR_DEVICE_ERROR, and SIGPIPE
 *                              raised in the calling thread): the process,
 *                              which does not ignore SIGPIPE, lives on;
 *                              signing fails naming CKR_DEVICE_ERROR while
 *                              the server is away, and works again in the
 *                              same process once it is back.
 *   conc_recovery wrong_pin    the configured PIN is wrong: loading the key
 *                              fails naming CKR_PIN_INCORRECT after one
 *                              C_Login; a second attempt in the same process
 *                              makes no second C_Login (repeats lock tokens).
 */
#include "conc_util.h"

#include <openssl/err.h>
#include <openssl/store.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ct_key keys[2];
static struct p11shim_api shim;

/* One-shot and streaming signature with both keys; 1 if all four worked. */
static int sign_all(const char *when)
{
    int ok = 1;

    for (int k = 0; k < 2; k++) {
        ct_alg a = {&keys[k], 0};
        unsigned char msg[700], sig[512];
        size_t siglen = 0;
        static int n;

        ok &= ct_sign_check(&a, when);
        ct_message(msg, sizeof(msg), 5, n++);
        if (!ct_sign_stream(&a, msg, sizeof(msg), 3, sig, &siglen)) {
            ct_fail("%s: streaming signature with %s failed", when, keys[k].name);
            ok = 0;
        } else if (ERR_peek_error() != 0) {
            ct_fail("%s: streaming signature with %s left an error on the queue", when,
                    keys[k].name);
            ok = 0;
        } else if (ct_verify(&a, msg, sizeof(msg), sig, siglen) != 1) {
            ct_fail("%s: streaming %s signature does not verify", when, keys[k].name);
            ok = 0;
        }
    }
    if (ok)
        printf("%s: signatures good\n", when);
    return ok;
}

/* Signing must fail, with an error naming one of the given CKR_ names. */
static void sign_fails(const char *when, const char *ckr1, const char *ckr2)
{
    unsigned char msg[64], sig[512];
    size_t siglen = 0;
    char err[2048];

    for (int k = 0; k < 2; k++) {
        ct_alg a = {&keys[k], 0};

        ct_message(msg, sizeof(msg), 6, k);
        ERR_clear_error();
        if (ct_sign_oneshot(&a, msg, sizeof(msg), sig, &siglen)) {
            ct_fail("%s: signing with %s worked", when, keys[k].name);
            continue;
        }
        ct_errors(err, sizeof(err));
        if (strstr(err, ckr1) == NULL && strstr(err, ckr2) == NULL)
            ct_fail("%s: the error does not name %s or %s: %s", when, ckr1, ckr2, err);
        else if (strstr(err, " failed with CKR_") == NULL)
            ct_fail("%s: the error does not name the PKCS#11 call (DESIGN §6): %s", when,
                    err);
        else
            printf("%s: %s: %s\n", when, keys[k].name, err);
    }
}

static void no_wrong_pin(const char *when)
{
    unsigned long bad = ct_shim_count_rv(&shim, "C_Login", CKR_PIN_INCORRECT);

    if (bad != 0)
        ct_fail("%s: %lu C_Login calls were refused with CKR_PIN_INCORRECT", when, bad);
}

static int mode_invalidate(void)
{
    sign_all("before");
    shim.reset_log();
    shim.invalidate_sessions();
    sign_all("after every session was invalidated");
    printf("recovery: %lu C_OpenSession, %lu C_Login\n", shim.call_count("C_OpenSession"),
           shim.call_count("C_Login"));
    no_wrong_pin("invalidate");
    /* Mid-stream: the stream's session dies under it. The context fails
     * cleanly (its token state is gone); the next ones work. */
    {
        ct_alg a = {&keys[1], 0};
        EVP_MD_CTX *m = ct_sign_init(&a);
        unsigned char sig[512];
        size_t siglen = 0;

        if (m == NULL || !EVP_DigestSignUpdate(m, "abc", 3))
            ct_fail("start of a stream");
        shim.invalidate_sessions();
        if (EVP_DigestSignUpdate(m, "def", 3) && ct_sign_final(m, sig, &siglen) &&
            ct_verify(&a, (const unsigned char *)"abcdef", 6, sig, siglen) != 1)
            ct_fail("a stream interrupted by session loss gave a wrong signature");
        EVP_MD_CTX_free(m);
        ERR_clear_error();
    }
    sign_all("after a stream lost its session");
    ct_shim_clean(&shim, "invalidate");
    return ct_result("recovery: invalidated sessions");
}

static atomic_int stop;

static void *signer(void *arg)
{
    int who = (int)(intptr_t)arg, n = 0;

    while (!atomic_load(&stop) && ct_failures() < 10) {
        ct_alg a = {&keys[(who + n) % 2], n % 3 == 0};
        unsigned char msg[300], sig[512];
        size_t siglen = 0;

        ct_message(msg, sizeof(msg), who, n++);
        ERR_clear_error();
        if (!ct_sign_oneshot(&a, msg, sizeof(msg), sig, &siglen))
            ct_fail("thread %d: signature %d with %s failed", who, n, a.key->name);
        else if (ct_verify(&a, msg, sizeof(msg), sig, siglen) != 1)
            ct_fail("thread %d: signature %d with %s does not verify", who, n,
                    a.key->name);
    }
    OPENSSL_thread_stop();
    return NULL;
}

static int mode_invalidate_mt(void)
{
    pthread_t th[8];

    sign_all("before");
    for (int t = 0; t < 8; t++)
        pthread_create(&th[t], NULL, signer, (void *)(intptr_t)t);
    for (int i = 0; i < 10; i++) {
        usleep(30 * 1000);
        shim.invalidate_sessions();
    }
    usleep(30 * 1000);
    atomic_store(&stop, 1);
    for (int t = 0; t < 8; t++)
        pthread_join(th[t], NULL);
    printf("10 invalidations under 8 signing threads: %lu C_Sign, %lu C_OpenSession, %lu "
           "C_Login\n",
           shim.call_count("C_Sign"), shim.call_count("C_OpenSession"),
           shim.call_count("C_Login"));
    no_wrong_pin("invalidate_mt");
    sign_all("after");
    ct_shim_clean(&shim, "invalidate_mt");
    return ct_result("recovery: sessions invalidated under load");
}

static int mode_logout(void)
{
    unsigned long logins;

    sign_all("before");
    logins = shim.call_count("C_Login");
    shim.logout();
    sign_all("after the token forgot the login");
    no_wrong_pin("logout");
    if (shim.call_count("C_Login") != logins + 1)
        ct_fail("%lu C_Login calls to log in again; expected one",
                shim.call_count("C_Login") - logins);
    ct_shim_clean(&shim, "logout");
    return ct_result("recovery: logout");
}

static int mode_removal(void)
{
    sign_all("before");
    shim.remove_token(1);
    sign_fails("token removed", "CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT");
    sign_fails("token still away", "CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT");
    shim.remove_token(0);
    sign_all("token back");
    no_wrong_pin("removal");
    ct_shim_clean(&shim, "removal");
    return ct_result("recovery: token removed and back");
}

static int mode_connection(void)
{
    unsigned char msg[64], sig[512];
    size_t siglen = 0;
    ct_alg a = {&keys[0], 0};
    double t0;
    int back = 0;

    signal(SIGPIPE, SIG_DFL); /* as most programs: a SIGPIPE kills */
    sign_all("before");
    shim.lose_connection(1);
    sign_fails("connection lost", "CKR_DEVICE_ERROR", "CKR_DEVICE_ERROR");
    sign_fails("server still away", "CKR_DEVICE_ERROR", "CKR_DEVICE_ERROR");
    shim.lose_connection(0);
    /* Back within the back-off between attempts (2 s at most). */
    t0 = ct_now_ms();
    ct_message(msg, sizeof(msg), 7, 0);
    while (!back && ct_now_ms() - t0 < 10000) {
        back = ct_sign_oneshot(&a, msg, sizeof(msg), sig, &siglen);
        ERR_clear_error();
        if (!back)
            usleep(50000);
    }
    if (!back)
        ct_fail("server back: signing still fails after 10 s");
    else
        printf("server back: signing works again after %.0f ms\n", ct_now_ms() - t0);
    sign_all("server back");
    sign_all("server back, again");
    no_wrong_pin("connection");
    ct_shim_clean(&shim, "connection");
    return ct_result("recovery: connection lost and back");
}

static int load_fails(const char *when)
{
    OSSL_STORE_CTX *store;
    OSSL_STORE_INFO *info = NULL;
    char err[2048];
    int got = 0;

    ERR_clear_error();
    store = OSSL_STORE_open_ex("pkcs11:token=demo;object=ec;type=private", NULL, NULL,
                               NULL, NULL, NULL, NULL, NULL);
    while (store != NULL && !OSSL_STORE_eof(store) &&
           (info = OSSL_STORE_load(store)) != NULL) {
        got |= OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY;
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    ct_errors(err, sizeof(err));
    if (got) {
        ct_fail("%s: the private key loaded with a wrong PIN", when);
        return 0;
    }
    if (strstr(err, "CKR_PIN_INCORRECT") == NULL) {
        ct_fail("%s: the error does not name CKR_PIN_INCORRECT: %s", when, err);
        return 0;
    }
    printf("%s: %s\n", when, err);
    return 1;
}

static int mode_wrong_pin(void)
{
    unsigned long logins;

    load_fails("first attempt");
    if (!ct_shim(&shim))
        return ct_result("recovery: wrong PIN");
    logins = shim.call_count("C_Login");
    if (logins != 1 || ct_shim_count_rv(&shim, "C_Login", CKR_PIN_INCORRECT) != 1)
        ct_fail("first attempt: %lu C_Login calls, %lu refused; expected one, refused",
                logins, ct_shim_count_rv(&shim, "C_Login", CKR_PIN_INCORRECT));
    load_fails("second attempt");
    if (shim.call_count("C_Login") != logins)
        ct_fail("the wrong PIN was offered to the token again (%lu C_Login calls)",
                shim.call_count("C_Login"));
    ct_shim_clean(&shim, "wrong_pin");
    return ct_result("recovery: wrong PIN");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    ct_watchdog(60, mode);
    if (!ct_init())
        return ct_result("set-up");
    if (strcmp(mode, "wrong_pin") == 0)
        return mode_wrong_pin();
    if (!ct_key_load(&keys[0], "ec") || !ct_key_load(&keys[1], "rsa") || !ct_shim(&shim))
        return ct_result("set-up");
    if (strcmp(mode, "invalidate") == 0)
        return mode_invalidate();
    if (strcmp(mode, "invalidate_mt") == 0)
        return mode_invalidate_mt();
    if (strcmp(mode, "logout") == 0)
        return mode_logout();
    if (strcmp(mode, "removal") == 0)
        return mode_removal();
    if (strcmp(mode, "connection") == 0)
        return mode_connection();
    fprintf(stderr,
            "usage: %s invalidate|invalidate_mt|logout|removal|connection|wrong_pin\n",
            argv[0]);
    return 2;
}
