/*
 * fork() (DESIGN §2 items 7, 8, 10). The parent loads the EC and RSA keys
 * and signs; then it forks. The shim starts afresh in the child (no
 * sessions: a parent's handle answers CKR_SESSION_HANDLE_INVALID), and its
 * log shows which session handles each process used.
 *
 *   conc_fork single    the child signs (one-shot and streaming, both keys):
 *                       its first use re-initialises the module once (one
 *                       C_Finalize), logs in once with the remembered PIN,
 *                       finds the keys again, and never calls on a session
 *                       handle of the parent's. The parent then signs again
 *                       and has not re-initialised or logged in again.
 *   conc_fork threads   the same with 4 threads in the child racing on the
 *                       first use: still one re-initialisation, one login.
 *   conc_fork missed    as threads, but the child's module starts without
 *                       its tokens (P11SHIM_INIT_MISSES_TOKENS=1: SoftHSM2
 *                       that read its token files while another process's
 *                       login rewrote them): it is started once more, and
 *                       the threads sign after one login.
 *   conc_fork missed_always
 *                       every start misses the tokens: after three more
 *                       starts the child's signature fails, naming
 *                       C_OpenSession and CKR_SLOT_ID_INVALID, without a
 *                       C_Login.
 *   conc_fork inherited a streaming context is mid-operation in the parent
 *                       (pkcs11-digest-in-token = yes: it holds a lease and
 *                       a token operation) when it forks. The child frees
 *                       its copy of that context, then signs: none of it
 *                       may touch the parent's session. The parent then
 *                       finishes the context and its signature verifies.
 *
 * In every process: no C_Login refused with CKR_PIN_INCORRECT, the token does
 * not report a lowered PIN retry count (CKF_USER_PIN_COUNT_LOW, FINAL_TRY,
 * LOCKED), and no interleaving on any session.
 */
#include "conc_util.h"

#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static ct_key keys[2];
static struct p11shim_api shim;
static const char *who = "parent";

/* Session handles the parent used (the shim never reuses one). */
static CK_SESSION_HANDLE parent_sessions[256];
static size_t n_parent_sessions;
static struct p11shim_call callog[16384];

static void remember_parent_sessions(void)
{
    size_t n = shim.get_log(callog, sizeof(callog) / sizeof(callog[0]));

    for (size_t i = 0; i < n; i++) {
        CK_SESSION_HANDLE s = callog[i].session;
        size_t j;

        if (s == 0)
            continue;
        for (j = 0; j < n_parent_sessions && parent_sessions[j] != s; j++)
            ;
        if (j == n_parent_sessions && n_parent_sessions < 256)
            parent_sessions[n_parent_sessions++] = s;
    }
    printf("parent: %zu session handles used before fork\n", n_parent_sessions);
}

/* The child's calls: none on a parent's session. */
static void check_child_sessions(void)
{
    size_t n = shim.get_log(callog, sizeof(callog) / sizeof(callog[0]));
    unsigned long bad = 0;

    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n_parent_sessions; j++)
            if (callog[i].session == parent_sessions[j]) {
                if (bad++ < 5)
                    ct_fail("child: %s on the parent's session %lu (-> %s)", callog[i].fn,
                            (unsigned long)callog[i].session,
                            shim.rv_name(callog[i].rv) ? shim.rv_name(callog[i].rv)
                                                       : "?");
            }
    printf("child: %zu calls, %lu on a session of the parent's\n", n, bad);
}

static void pin_counter_untouched(void)
{
    CK_C_GetFunctionList gfl;
    CK_FUNCTION_LIST *fl;
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8;
    CK_TOKEN_INFO ti;
    void *h, *sym;
    unsigned long bad = ct_shim_count_rv(&shim, "C_Login", CKR_PIN_INCORRECT);

    if (bad != 0)
        ct_fail("%s: %lu C_Login calls refused with CKR_PIN_INCORRECT", who, bad);
    /* The token's own view of its retry counter. */
    h = dlopen(getenv("HSMPROV_SHIM"), RTLD_NOW | RTLD_NOLOAD);
    sym = h != NULL ? dlsym(h, "C_GetFunctionList") : NULL;
    memcpy(&gfl, &sym, sizeof(gfl));
    if (gfl == NULL || gfl(&fl) != CKR_OK ||
        fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK || n == 0 ||
        fl->C_GetTokenInfo(slots[0], &ti) != CKR_OK) {
        ct_fail("%s: C_GetTokenInfo through the shim", who);
        return;
    }
    if (ti.flags &
        (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED))
        ct_fail("%s: the token reports a lowered PIN retry counter (flags 0x%lx)", who,
                (unsigned long)ti.flags);
}

static void sign_both(const char *when)
{
    for (int k = 0; k < 2; k++) {
        ct_alg a = {&keys[k], 0};
        unsigned char msg[500], sig[512];
        size_t siglen = 0;
        static __thread int n;

        ct_sign_check(&a, when);
        ct_message(msg, sizeof(msg), (int)getpid(), n++);
        if (!ct_sign_stream(&a, msg, sizeof(msg), 3, sig, &siglen))
            ct_fail("%s: streaming %s signature failed", when, keys[k].name);
        else if (ct_verify(&a, msg, sizeof(msg), sig, siglen) != 1)
            ct_fail("%s: streaming %s signature does not verify", when, keys[k].name);
    }
}

static void *child_thread(void *arg)
{
    pthread_barrier_t *b = arg;

    pthread_barrier_wait(b);
    for (int i = 0; i < 5; i++)
        sign_both("child thread");
    OPENSSL_thread_stop();
    return NULL;
}

/* In the child: the checks common to every mode; starts: how many times
 * the module must have been started in it, logins: C_Login calls. */
static void child_checks(unsigned long starts, unsigned long logins)
{
    check_child_sessions();
    if (shim.call_count("C_Finalize") != starts)
        ct_fail("child: %lu C_Finalize calls; the module must be started %lu time(s)",
                shim.call_count("C_Finalize"), starts);
    if (shim.call_count("C_Login") != logins)
        ct_fail("child: %lu C_Login calls; expected %lu", shim.call_count("C_Login"),
                logins);
    printf("child: %lu C_Initialize, %lu C_Finalize, %lu C_OpenSession, %lu C_Login\n",
           shim.call_count("C_Initialize"), shim.call_count("C_Finalize"),
           shim.call_count("C_OpenSession"), shim.call_count("C_Login"));
    if (logins > 0)
        pin_counter_untouched();
    ct_shim_clean(&shim, "child");
}

/* Every start of the module in the child misses the tokens: the signature
 * fails with the module's answer, named, and nothing is retried for ever. */
static void child_missed_always(void)
{
    unsigned char msg[100], sig[512];
    size_t siglen = 0;
    char err[2048];
    EVP_MD_CTX *m;
    int ok;

    ERR_clear_error();
    ct_message(msg, sizeof(msg), 5, 5);
    m = EVP_MD_CTX_new();
    ok = m != NULL &&
         EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, keys[0].tok, NULL) == 1 &&
         EVP_DigestSign(m, sig, &siglen, msg, sizeof(msg)) == 1;
    EVP_MD_CTX_free(m);
    ct_errors(err, sizeof(err));
    printf("child: signing with no token in the module: %s\n", ok ? "worked" : err);
    if (ok)
        ct_fail("child: signed although every start of the module missed the token");
    else if (strstr(err, "C_OpenSession") == NULL ||
             strstr(err, "CKR_SLOT_ID_INVALID") == NULL ||
             strstr(err, "no longer has its slot") == NULL)
        ct_fail("child: the error does not name C_OpenSession, CKR_SLOT_ID_INVALID and "
                "the missing slot");
}

static int run_child(const char *mode, EVP_MD_CTX *inherited)
{
    int missed = strncmp(mode, "missed", 6) == 0;

    who = "child";
    ct_watchdog(60, "fork child");
    /* Read by the shim at the child's first C_Initialize. */
    if (strcmp(mode, "missed") == 0)
        setenv("P11SHIM_INIT_MISSES_TOKENS", "1", 1);
    else if (strcmp(mode, "missed_always") == 0)
        setenv("P11SHIM_INIT_MISSES_TOKENS", "100", 1);
    if (strcmp(mode, "missed_always") == 0) {
        child_missed_always();
        child_checks(4, 0);
        if (ct_shim_count_rv(&shim, "C_Initialize", CKR_OK) != 4)
            ct_fail("child: %lu starts of the module; expected 1 and 3 more",
                    ct_shim_count_rv(&shim, "C_Initialize", CKR_OK));
        return ct_result("child") == 0 ? 0 : 1;
    }
    if (strcmp(mode, "threads") == 0 || missed) {
        pthread_t th[4];
        pthread_barrier_t b;

        pthread_barrier_init(&b, NULL, 4);
        for (int t = 0; t < 4; t++)
            pthread_create(&th[t], NULL, child_thread, &b);
        for (int t = 0; t < 4; t++)
            pthread_join(th[t], NULL);
        pthread_barrier_destroy(&b);
    } else {
        if (inherited != NULL)
            EVP_MD_CTX_free(inherited); /* must not end the parent's operation */
        ERR_clear_error();
        sign_both("child");
    }
    child_checks(missed ? 2 : 1, 1);
    if (missed && ct_shim_count_rv(&shim, "C_GetSlotInfo", CKR_SLOT_ID_INVALID) == 0)
        ct_fail("child: the start without the token was not noticed");
    return ct_result("child") == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    unsigned char msg[400], sig[512];
    EVP_MD_CTX *inherited = NULL;
    ct_alg rsa = {&keys[1], 0};
    unsigned long logins;
    size_t siglen = 0;
    int status = 0;
    pid_t pid;

    if (strcmp(mode, "single") != 0 && strcmp(mode, "threads") != 0 &&
        strcmp(mode, "missed") != 0 && strcmp(mode, "missed_always") != 0 &&
        strcmp(mode, "inherited") != 0) {
        fprintf(stderr, "usage: %s single|threads|missed|missed_always|inherited\n",
                argv[0]);
        return 2;
    }
    ct_watchdog(90, "conc_fork");
    if (!ct_init() || !ct_key_load(&keys[0], "ec") || !ct_key_load(&keys[1], "rsa") ||
        !ct_shim(&shim))
        return ct_result("set-up");
    sign_both("parent before fork");
    if (strcmp(mode, "inherited") == 0) {
        ct_message(msg, sizeof(msg), 77, 0);
        inherited = ct_sign_init(&rsa);
        if (inherited == NULL || !EVP_DigestSignUpdate(inherited, msg, 100))
            ct_fail("parent: starting the context the child inherits");
        if (shim.call_count("C_SignUpdate") == 0)
            ct_fail("parent: the context does not stream in the token "
                    "(pkcs11-digest-in-token = yes expected)");
    }
    remember_parent_sessions();
    logins = shim.call_count("C_Login");
    fflush(stdout);
    fflush(stderr);

    pid = fork();
    if (pid < 0) {
        ct_fail("fork");
        return ct_result("fork");
    }
    if (pid == 0)
        exit(run_child(mode, inherited)); /* exit handlers too: the shim's verdict */
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        ct_fail("the child failed (status 0x%x)", status);

    if (inherited != NULL) {
        if (!EVP_DigestSignUpdate(inherited, msg + 100, sizeof(msg) - 100) ||
            !ct_sign_final(inherited, sig, &siglen))
            ct_fail("parent: finishing the context it started before fork");
        else if (ct_verify(&rsa, msg, sizeof(msg), sig, siglen) != 1)
            ct_fail("parent: the context started before fork gave a bad signature");
        EVP_MD_CTX_free(inherited);
    }
    sign_both("parent after fork");
    if (shim.call_count("C_Finalize") != 0 || shim.call_count("C_Login") != logins)
        ct_fail(
            "parent: re-initialised (%lu C_Finalize) or logged in again (%lu C_Login) "
            "after its child's work",
            shim.call_count("C_Finalize"), shim.call_count("C_Login") - logins);
    pin_counter_untouched();
    ct_shim_clean(&shim, "parent");
    ct_key_free(&keys[0]);
    ct_key_free(&keys[1]);
    ct_watchdog(0, NULL);
    return ct_result("fork");
}
