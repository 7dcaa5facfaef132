/*
 * p11shim: fault-injecting PKCS#11 2.40 module that wraps a real one.
 * See p11shim.h for the control API and the environment variables.
 *
 * Locking: one mutex (g_mu) guards all shim state.  It is never held across a
 * call into the real module, across dlopen() or across a sleep.  A session
 * entry is reference counted while calls on it are in flight, so that the
 * real session is only closed (after invalidation or removal) once nobody
 * is using it in the real module.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* gettid, asprintf */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "p11shim.h"

#define SHIM_EXPORT __attribute__((visibility("default")))
#define DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"
#define NBUCKETS 256
#define RING_CAP 16384
#define MAX_VIOL_KEPT 8
#define VIOL_LEN 320
#define MAX_INFLIGHT 8

/* ---- function and return-value names ------------------------------------ */

#define SHIM_FUNCS(X)                                                                    \
    X(C_Initialize)                                                                      \
    X(C_Finalize)                                                                        \
    X(C_GetInfo)                                                                         \
    X(C_GetFunctionList)                                                                 \
    X(C_GetSlotList)                                                                     \
    X(C_GetSlotInfo)                                                                     \
    X(C_GetTokenInfo)                                                                    \
    X(C_GetMechanismList)                                                                \
    X(C_GetMechanismInfo)                                                                \
    X(C_InitToken)                                                                       \
    X(C_InitPIN)                                                                         \
    X(C_SetPIN)                                                                          \
    X(C_OpenSession)                                                                     \
    X(C_CloseSession)                                                                    \
    X(C_CloseAllSessions)                                                                \
    X(C_GetSessionInfo)                                                                  \
    X(C_GetOperationState)                                                               \
    X(C_SetOperationState)                                                               \
    X(C_Login)                                                                           \
    X(C_Logout)                                                                          \
    X(C_CreateObject)                                                                    \
    X(C_CopyObject)                                                                      \
    X(C_DestroyObject)                                                                   \
    X(C_GetObjectSize)                                                                   \
    X(C_GetAttributeValue)                                                               \
    X(C_SetAttributeValue)                                                               \
    X(C_FindObjectsInit)                                                                 \
    X(C_FindObjects)                                                                     \
    X(C_FindObjectsFinal)                                                                \
    X(C_EncryptInit)                                                                     \
    X(C_Encrypt)                                                                         \
    X(C_EncryptUpdate)                                                                   \
    X(C_EncryptFinal)                                                                    \
    X(C_DecryptInit)                                                                     \
    X(C_Decrypt)                                                                         \
    X(C_DecryptUpdate)                                                                   \
    X(C_DecryptFinal)                                                                    \
    X(C_DigestInit)                                                                      \
    X(C_Digest)                                                                          \
    X(C_DigestUpdate)                                                                    \
    X(C_DigestKey)                                                                       \
    X(C_DigestFinal)                                                                     \
    X(C_SignInit)                                                                        \
    X(C_Sign)                                                                            \
    X(C_SignUpdate)                                                                      \
    X(C_SignFinal)                                                                       \
    X(C_SignRecoverInit)                                                                 \
    X(C_SignRecover)                                                                     \
    X(C_VerifyInit)                                                                      \
    X(C_Verify)                                                                          \
    X(C_VerifyUpdate)                                                                    \
    X(C_VerifyFinal)                                                                     \
    X(C_VerifyRecoverInit)                                                               \
    X(C_VerifyRecover)                                                                   \
    X(C_DigestEncryptUpdate)                                                             \
    X(C_DecryptDigestUpdate)                                                             \
    X(C_SignEncryptUpdate)                                                               \
    X(C_DecryptVerifyUpdate)                                                             \
    X(C_GenerateKey)                                                                     \
    X(C_GenerateKeyPair)                                                                 \
    X(C_WrapKey)                                                                         \
    X(C_UnwrapKey)                                                                       \
    X(C_DeriveKey)                                                                       \
    X(C_SeedRandom)                                                                      \
    X(C_GenerateRandom)                                                                  \
    X(C_GetFunctionStatus)                                                               \
    X(C_CancelFunction)                                                                  \
    X(C_WaitForSlotEvent)

enum fid {
#define X(n) F_##n,
    SHIM_FUNCS(X)
#undef X
        F_COUNT
};
_Static_assert(F_COUNT == 68, "PKCS#11 2.40 has 68 functions");

static const char *const fnames[F_COUNT] = {
#define X(n) #n,
    SHIM_FUNCS(X)
#undef X
};

static int fid_by_name(const char *name)
{
    int i;

    if (name == NULL)
        return -1;
    for (i = 0; i < F_COUNT; i++)
        if (strcmp(fnames[i], name) == 0)
            return i;
    return -1;
}

#define R(n)                                                                             \
    {                                                                                    \
        n, #n                                                                            \
    }
static const struct {
    CK_RV rv;
    const char *name;
} rvnames[] = {
    R(CKR_OK),
    R(CKR_CANCEL),
    R(CKR_HOST_MEMORY),
    R(CKR_SLOT_ID_INVALID),
    R(CKR_GENERAL_ERROR),
    R(CKR_FUNCTION_FAILED),
    R(CKR_ARGUMENTS_BAD),
    R(CKR_NO_EVENT),
    R(CKR_NEED_TO_CREATE_THREADS),
    R(CKR_CANT_LOCK),
    R(CKR_ATTRIBUTE_READ_ONLY),
    R(CKR_ATTRIBUTE_SENSITIVE),
    R(CKR_ATTRIBUTE_TYPE_INVALID),
    R(CKR_ATTRIBUTE_VALUE_INVALID),
    R(CKR_ACTION_PROHIBITED),
    R(CKR_DATA_INVALID),
    R(CKR_DATA_LEN_RANGE),
    R(CKR_DEVICE_ERROR),
    R(CKR_DEVICE_MEMORY),
    R(CKR_DEVICE_REMOVED),
    R(CKR_ENCRYPTED_DATA_INVALID),
    R(CKR_ENCRYPTED_DATA_LEN_RANGE),
    R(CKR_FUNCTION_CANCELED),
    R(CKR_FUNCTION_NOT_PARALLEL),
    R(CKR_FUNCTION_NOT_SUPPORTED),
    R(CKR_KEY_HANDLE_INVALID),
    R(CKR_KEY_SIZE_RANGE),
    R(CKR_KEY_TYPE_INCONSISTENT),
    R(CKR_KEY_NOT_NEEDED),
    R(CKR_KEY_CHANGED),
    R(CKR_KEY_NEEDED),
    R(CKR_KEY_INDIGESTIBLE),
    R(CKR_KEY_FUNCTION_NOT_PERMITTED),
    R(CKR_KEY_NOT_WRAPPABLE),
    R(CKR_KEY_UNEXTRACTABLE),
    R(CKR_MECHANISM_INVALID),
    R(CKR_MECHANISM_PARAM_INVALID),
    R(CKR_OBJECT_HANDLE_INVALID),
    R(CKR_OPERATION_ACTIVE),
    R(CKR_OPERATION_NOT_INITIALIZED),
    R(CKR_PIN_INCORRECT),
    R(CKR_PIN_INVALID),
    R(CKR_PIN_LEN_RANGE),
    R(CKR_PIN_EXPIRED),
    R(CKR_PIN_LOCKED),
    R(CKR_SESSION_CLOSED),
    R(CKR_SESSION_COUNT),
    R(CKR_SESSION_HANDLE_INVALID),
    R(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    R(CKR_SESSION_READ_ONLY),
    R(CKR_SESSION_EXISTS),
    R(CKR_SESSION_READ_ONLY_EXISTS),
    R(CKR_SESSION_READ_WRITE_SO_EXISTS),
    R(CKR_SIGNATURE_INVALID),
    R(CKR_SIGNATURE_LEN_RANGE),
    R(CKR_TEMPLATE_INCOMPLETE),
    R(CKR_TEMPLATE_INCONSISTENT),
    R(CKR_TOKEN_NOT_PRESENT),
    R(CKR_TOKEN_NOT_RECOGNIZED),
    R(CKR_TOKEN_WRITE_PROTECTED),
    R(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
    R(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    R(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
    R(CKR_USER_ALREADY_LOGGED_IN),
    R(CKR_USER_NOT_LOGGED_IN),
    R(CKR_USER_PIN_NOT_INITIALIZED),
    R(CKR_USER_TYPE_INVALID),
    R(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    R(CKR_USER_TOO_MANY_TYPES),
    R(CKR_WRAPPED_KEY_INVALID),
    R(CKR_WRAPPED_KEY_LEN_RANGE),
    R(CKR_WRAPPING_KEY_HANDLE_INVALID),
    R(CKR_WRAPPING_KEY_SIZE_RANGE),
    R(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
    R(CKR_RANDOM_SEED_NOT_SUPPORTED),
    R(CKR_RANDOM_NO_RNG),
    R(CKR_DOMAIN_PARAMS_INVALID),
    R(CKR_CURVE_NOT_SUPPORTED),
    R(CKR_BUFFER_TOO_SMALL),
    R(CKR_SAVED_STATE_INVALID),
    R(CKR_INFORMATION_SENSITIVE),
    R(CKR_STATE_UNSAVEABLE),
    R(CKR_CRYPTOKI_NOT_INITIALIZED),
    R(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    R(CKR_MUTEX_BAD),
    R(CKR_MUTEX_NOT_LOCKED),
    R(CKR_NEW_PIN_MODE),
    R(CKR_NEXT_OTP),
    R(CKR_EXCEEDED_MAX_ITERATIONS),
    R(CKR_FIPS_SELF_TEST_FAILED),
    R(CKR_LIBRARY_LOAD_FAILED),
    R(CKR_PIN_TOO_WEAK),
    R(CKR_PUBLIC_KEY_INVALID),
    R(CKR_FUNCTION_REJECTED),
};
#undef R

SHIM_EXPORT const char *p11shim_rv_name(CK_RV rv)
{
    size_t i;

    for (i = 0; i < sizeof(rvnames) / sizeof(rvnames[0]); i++)
        if (rvnames[i].rv == rv)
            return rvnames[i].name;
    return NULL;
}

static int parse_rv(const char *s, CK_RV *rv)
{
    size_t i;
    char *end;

    for (i = 0; i < sizeof(rvnames) / sizeof(rvnames[0]); i++)
        if (strcmp(rvnames[i].name, s) == 0) {
            *rv = rvnames[i].rv;
            return 0;
        }
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    *rv = strtoul(s, &end, 0);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

/* ---- operation rules for the interleaving checker ----------------------- */

enum kind {
    K_SIGN,
    K_VERIFY,
    K_ENCRYPT,
    K_DECRYPT,
    K_DIGEST,
    K_FIND,
    K_COUNT,
    K_NONE = -1
};
static const char *const kind_names[K_COUNT] = {"sign",    "verify", "encrypt",
                                                "decrypt", "digest", "find"};

enum role {
    RO_NONE,
    RO_INIT,      /* XInit: starts the operation */
    RO_UPDATE,    /* needs it active; an error other than BUFFER_TOO_SMALL ends it */
    RO_FINAL,     /* one-shot or Final: ends it unless BUFFER_TOO_SMALL / size query */
    RO_FINDNEXT,  /* C_FindObjects: needs it active, never ends it */
    RO_FINDFINAL, /* C_FindObjectsFinal: needs it active, always ends it */
};

struct rule {
    enum role role;
    int kind[2];
};

static struct rule rules[F_COUNT];

static void set_rule(int fid, enum role role, int k1, int k2)
{
    rules[fid].role = role;
    rules[fid].kind[0] = k1;
    rules[fid].kind[1] = k2;
}

static void init_rules(void)
{
    int i;

    for (i = 0; i < F_COUNT; i++)
        set_rule(i, RO_NONE, K_NONE, K_NONE);
    set_rule(F_C_FindObjectsInit, RO_INIT, K_FIND, K_NONE);
    set_rule(F_C_FindObjects, RO_FINDNEXT, K_FIND, K_NONE);
    set_rule(F_C_FindObjectsFinal, RO_FINDFINAL, K_FIND, K_NONE);
    set_rule(F_C_EncryptInit, RO_INIT, K_ENCRYPT, K_NONE);
    set_rule(F_C_Encrypt, RO_FINAL, K_ENCRYPT, K_NONE);
    set_rule(F_C_EncryptUpdate, RO_UPDATE, K_ENCRYPT, K_NONE);
    set_rule(F_C_EncryptFinal, RO_FINAL, K_ENCRYPT, K_NONE);
    set_rule(F_C_DecryptInit, RO_INIT, K_DECRYPT, K_NONE);
    set_rule(F_C_Decrypt, RO_FINAL, K_DECRYPT, K_NONE);
    set_rule(F_C_DecryptUpdate, RO_UPDATE, K_DECRYPT, K_NONE);
    set_rule(F_C_DecryptFinal, RO_FINAL, K_DECRYPT, K_NONE);
    set_rule(F_C_DigestInit, RO_INIT, K_DIGEST, K_NONE);
    set_rule(F_C_Digest, RO_FINAL, K_DIGEST, K_NONE);
    set_rule(F_C_DigestUpdate, RO_UPDATE, K_DIGEST, K_NONE);
    set_rule(F_C_DigestKey, RO_UPDATE, K_DIGEST, K_NONE);
    set_rule(F_C_DigestFinal, RO_FINAL, K_DIGEST, K_NONE);
    set_rule(F_C_SignInit, RO_INIT, K_SIGN, K_NONE);
    set_rule(F_C_Sign, RO_FINAL, K_SIGN, K_NONE);
    set_rule(F_C_SignUpdate, RO_UPDATE, K_SIGN, K_NONE);
    set_rule(F_C_SignFinal, RO_FINAL, K_SIGN, K_NONE);
    set_rule(F_C_SignRecoverInit, RO_INIT, K_SIGN, K_NONE);
    set_rule(F_C_SignRecover, RO_FINAL, K_SIGN, K_NONE);
    set_rule(F_C_VerifyInit, RO_INIT, K_VERIFY, K_NONE);
    set_rule(F_C_Verify, RO_FINAL, K_VERIFY, K_NONE);
    set_rule(F_C_VerifyUpdate, RO_UPDATE, K_VERIFY, K_NONE);
    set_rule(F_C_VerifyFinal, RO_FINAL, K_VERIFY, K_NONE);
    set_rule(F_C_VerifyRecoverInit, RO_INIT, K_VERIFY, K_NONE);
    set_rule(F_C_VerifyRecover, RO_FINAL, K_VERIFY, K_NONE);
    set_rule(F_C_DigestEncryptUpdate, RO_UPDATE, K_DIGEST, K_ENCRYPT);
    set_rule(F_C_DecryptDigestUpdate, RO_UPDATE, K_DECRYPT, K_DIGEST);
    set_rule(F_C_SignEncryptUpdate, RO_UPDATE, K_SIGN, K_ENCRYPT);
    set_rule(F_C_DecryptVerifyUpdate, RO_UPDATE, K_DECRYPT, K_VERIFY);
}

/* ---- state ---------------------------------------------------------------- */

enum sstate { S_LIVE, S_DEAD, S_CLOSED };

struct opstate {
    int active;
    int start_fid;
    unsigned long start_seq;
    long start_tid;
};

struct inflight {
    long tid;
    int fid;
    unsigned long seq;
};

struct sess {
    CK_SESSION_HANDLE vh; /* the caller's handle */
    CK_SESSION_HANDLE rh; /* the real module's handle */
    CK_SLOT_ID slot;
    enum sstate state;
    CK_RV dead_rv;  /* what calls on a S_DEAD session return */
    int real_open;  /* rh still open in the real module */
    unsigned refs;  /* calls in flight + internal users; frees wait for 0 */
    unsigned ninfl; /* caller calls in flight */
    struct inflight infl[MAX_INFLIGHT];
    struct opstate ops[K_COUNT];
    /* P11SHIM_GCM_ONE_PART: the operation of this kind is AES-GCM, which the
     * shim then does in one call only. */
    unsigned char gcm[K_COUNT];
    struct sess *next;
};

struct fault {
    int fid;
    unsigned long left; /* calls to go, 0 = every call */
    CK_RV rv;
    struct fault *next;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    void *dl;
    CK_FUNCTION_LIST *real;
    int env_applied;
    int removed;
    int logged_out;   /* p11shim_logout() ran and nobody logged in since */
    int gcm_one_part; /* P11SHIM_GCM_ONE_PART */
    /* p11shim_lose_connection(): as p11-kit-client.so when its server dies. */
    int conn_lost;               /* every call fails with CKR_DEVICE_ERROR */
    int server_down;             /* and C_Initialize too */
    int conn_final;              /* C_Finalize was called since the loss */
    unsigned long max_sessions;  /* P11SHIM_MAX_SESSIONS; 0: the real module's */
    unsigned long init_misses;   /* P11SHIM_INIT_MISSES_TOKENS: starts left to spoil */
    int tokens_missed;           /* this start of the module has no slot */
    unsigned long key_inits;     /* key-using inits forwarded, not returned */
    int closing;                 /* real sessions being closed behind the caller */
    unsigned long opening;       /* C_OpenSession calls forwarded, not returned */
    unsigned long closed_active; /* sessions closed with an operation active */
    struct fault *faults;
    unsigned delay_all;
    unsigned delay[F_COUNT];
    CK_MECHANISM_TYPE hidden[32]; /* P11SHIM_HIDE_MECHS */
    size_t n_hidden;
    struct sess *buckets[NBUCKETS];
    CK_SESSION_HANDLE next_vh;
    unsigned long seq;
    unsigned long total;
    unsigned long counts[F_COUNT];
    struct p11shim_call *ring;
    size_t ring_n, ring_next;
    unsigned long nviol;
    char viol[MAX_VIOL_KEPT][VIOL_LEN];
    int log_fd;
    char *log_path;
    int check;
    int dirty; /* calls since the last verdict */
} g = {.next_vh = 1, .log_fd = -1};

static CK_FUNCTION_LIST shim_list;

static long my_tid(void)
{
    return (long)gettid();
}

static void lock(void)
{
    pthread_mutex_lock(&g_mu);
}

static void unlock(void)
{
    pthread_mutex_unlock(&g_mu);
}

/* SoftHSM2 2.6.1 empties a session object's attributes when the session that
 * made it closes, and a C_SignInit on another session that is reading them
 * meanwhile takes an empty key, which crashes in the C_Sign after it. The
 * shim closes real sessions behind the caller's back (sessions it made
 * invalid, dead ones on their last call's return): those closes wait until
 * no key-using init is in flight, and such inits wait until they are done,
 * so that the test sees what a token that drops sessions does, not that
 * crash. */
static pthread_cond_t g_gate = PTHREAD_COND_INITIALIZER;

static void key_init_enter(void)
{
    lock();
    while (g.closing)
        pthread_cond_wait(&g_gate, &g_mu);
    g.key_inits++;
    unlock();
}

static void key_init_leave(void)
{
    lock();
    if (--g.key_inits == 0)
        pthread_cond_broadcast(&g_gate);
    unlock();
}

static void close_behind(CK_FUNCTION_LIST *fl, const CK_SESSION_HANDLE *h, size_t n)
{
    if (fl == NULL || n == 0)
        return;
    lock();
    while (g.closing || g.key_inits > 0)
        pthread_cond_wait(&g_gate, &g_mu);
    g.closing = 1;
    unlock();
    for (size_t i = 0; i < n; i++)
        fl->C_CloseSession(h[i]);
    lock();
    g.closing = 0;
    pthread_cond_broadcast(&g_gate);
    unlock();
}

static void sleep_us(unsigned us)
{
    struct timespec ts;

    if (us == 0)
        return;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (long)(us % 1000000) * 1000;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void rv_str(CK_RV rv, char *buf, size_t len)
{
    const char *n = p11shim_rv_name(rv);

    if (n != NULL)
        snprintf(buf, len, "%s", n);
    else
        snprintf(buf, len, "0x%lx", (unsigned long)rv);
}

/* ---- sessions (locked) ---------------------------------------------------- */

static struct sess *sess_find(CK_SESSION_HANDLE vh)
{
    struct sess *e;

    for (e = g.buckets[vh % NBUCKETS]; e != NULL; e = e->next)
        if (e->vh == vh)
            return e;
    return NULL;
}

static void sess_unlink_free(struct sess *e)
{
    struct sess **pp;

    for (pp = &g.buckets[e->vh % NBUCKETS]; *pp != NULL; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    free(e);
}

/* Real handles to close once the lock is dropped. */
struct closelist {
    CK_SESSION_HANDLE *h;
    size_t n, cap;
};

static void closelist_add(struct closelist *cl, CK_SESSION_HANDLE rh)
{
    if (cl->n == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 16;
        CK_SESSION_HANDLE *h = realloc(cl->h, cap * sizeof(*h));

        if (h == NULL)
            return; /* leak a real session rather than crash */
        cl->h = h;
        cl->cap = cap;
    }
    cl->h[cl->n++] = rh;
}

static void closelist_run(struct closelist *cl, CK_FUNCTION_LIST *fl)
{
    close_behind(fl, cl->h, cl->n);
    free(cl->h);
    cl->h = NULL;
    cl->n = cl->cap = 0;
}

/* Make a live session dead; its real session is closed now or by the last
 * call in flight on it. */
static void sess_kill(struct sess *e, CK_RV dead_rv, struct closelist *cl)
{
    e->state = S_DEAD;
    e->dead_rv = dead_rv;
    if (e->refs == 0 && e->real_open) {
        e->real_open = 0;
        closelist_add(cl, e->rh);
    }
}

/* Drop a reference; returns the real handle to close (or 0). */
static CK_SESSION_HANDLE sess_release(struct sess *e, int *doclose)
{
    CK_SESSION_HANDLE rh = 0;

    *doclose = 0;
    if (--e->refs > 0)
        return 0;
    if (e->state != S_LIVE && e->real_open) {
        e->real_open = 0;
        rh = e->rh;
        *doclose = 1;
    }
    if (e->state == S_CLOSED)
        sess_unlink_free(e);
    return rh;
}

/* Close the sessions of one slot (or all): C_CloseAllSessions, C_Finalize.
 * real_gone: the real module closed them too (else pending real closes of
 * dead sessions still run on release). */
static void sess_close_all(int one_slot, CK_SLOT_ID slot, int real_gone)
{
    int b;
    struct sess *e, *next;

    for (b = 0; b < NBUCKETS; b++)
        for (e = g.buckets[b]; e != NULL; e = next) {
            next = e->next;
            if (one_slot && e->slot != slot)
                continue;
            e->state = S_CLOSED;
            if (real_gone)
                e->real_open = 0;
            memset(e->ops, 0, sizeof(e->ops));
            if (e->refs == 0)
                sess_unlink_free(e);
        }
}

/* ---- recording and violations (locked) ----------------------------------- */

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void violation(const char *fmt, ...)
{
    va_list ap;

    if (g.nviol < MAX_VIOL_KEPT) {
        va_start(ap, fmt);
        vsnprintf(g.viol[g.nviol], VIOL_LEN, fmt, ap);
        va_end(ap);
    }
    g.nviol++;
}

static void ring_add(unsigned long seq, int fid, CK_SESSION_HANDLE vh, long tid, CK_RV rv,
                     int injected)
{
    struct p11shim_call *r;

    if (g.ring == NULL) {
        g.ring = calloc(RING_CAP, sizeof(*g.ring));
        if (g.ring == NULL)
            return;
    }
    r = &g.ring[g.ring_next];
    r->seq = seq;
    r->fn = fnames[fid];
    r->session = vh;
    r->tid = tid;
    r->rv = rv;
    r->injected = injected;
    g.ring_next = (g.ring_next + 1) % RING_CAP;
    if (g.ring_n < RING_CAP)
        g.ring_n++;
}

static void clear_faults(void)
{
    struct fault *f, *next;

    for (f = g.faults; f != NULL; f = next) {
        next = f->next;
        free(f);
    }
    g.faults = NULL;
    g.delay_all = 0;
    memset(g.delay, 0, sizeof(g.delay));
}

static int add_fault(int fid, unsigned long nth, CK_RV rv)
{
    struct fault *f = calloc(1, sizeof(*f)), **pp;

    if (f == NULL)
        return -1;
    f->fid = fid;
    f->left = nth;
    f->rv = rv;
    for (pp = &g.faults; *pp != NULL; pp = &(*pp)->next)
        ;
    *pp = f;
    return 0;
}

/* Count this call against every planned fault of fid; 1 if one fires. */
static int fault_hit(int fid, CK_RV *rv)
{
    struct fault **pp = &g.faults, *f;
    int hit = 0;

    while ((f = *pp) != NULL) {
        if (f->fid != fid) {
            pp = &f->next;
            continue;
        }
        if (f->left == 0) {
            if (!hit)
                *rv = f->rv;
            hit = 1;
            pp = &f->next;
        } else if (--f->left == 0) {
            if (!hit)
                *rv = f->rv;
            hit = 1;
            *pp = f->next;
            free(f);
        } else {
            pp = &f->next;
        }
    }
    return hit;
}

/* ---- environment ------------------------------------------------------------ */

static void env_warn(const char *var, const char *item)
{
    fprintf(stderr, "p11shim: ignoring bad %s entry '%s'\n", var, item);
}

/* Calls fn(item) for each comma-separated item of a copy of s. */
static void env_items(const char *var, void (*fn)(const char *var, char *item))
{
    const char *s = getenv(var);
    char *copy, *item, *save = NULL;

    if (s == NULL || *s == '\0' || (copy = strdup(s)) == NULL)
        return;
    for (item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save))
        fn(var, item);
    free(copy);
}

static void env_fail_item(const char *var, char *item)
{
    char *c1 = strchr(item, ':'), *c2, *end;
    unsigned long nth;
    CK_RV rv;
    int fid;

    if (c1 == NULL || (c2 = strchr(c1 + 1, ':')) == NULL) {
        env_warn(var, item);
        return;
    }
    *c1 = *c2 = '\0';
    fid = fid_by_name(item);
    errno = 0;
    nth = strtoul(c1 + 1, &end, 10);
    if (fid < 0 || errno != 0 || *end != '\0' || end == c1 + 1 ||
        parse_rv(c2 + 1, &rv) != 0) {
        *c1 = *c2 = ':';
        env_warn(var, item);
        return;
    }
    add_fault(fid, nth, rv);
}

static void env_delay_item(const char *var, char *item)
{
    char *c = strrchr(item, ':'), *end;
    unsigned long us;
    int fid = -1;

    if (c == NULL) {
        env_warn(var, item);
        return;
    }
    *c = '\0';
    errno = 0;
    us = strtoul(c + 1, &end, 10);
    if (strcmp(item, "*") != 0 && strcmp(item, "ALL") != 0 &&
        (fid = fid_by_name(item)) < 0)
        end = NULL;
    if (end == NULL || errno != 0 || *end != '\0' || end == c + 1 || us > 60000000UL) {
        *c = ':';
        env_warn(var, item);
        return;
    }
    if (fid < 0)
        g.delay_all = (unsigned)us;
    else
        g.delay[fid] = (unsigned)us;
}

/* Mechanisms tests name in P11SHIM_HIDE_MECHS; others are given as numbers. */
static const struct {
    const char *name;
    CK_MECHANISM_TYPE mech;
} mech_names[] = {
#define M(x)                                                                             \
    {                                                                                    \
#x, x                                                                            \
    }
    M(CKM_RSA_PKCS),
    M(CKM_RSA_PKCS_PSS),
    M(CKM_RSA_X_509),
    M(CKM_RSA_PKCS_OAEP),
    M(CKM_SHA1_RSA_PKCS),
    M(CKM_SHA224_RSA_PKCS),
    M(CKM_SHA256_RSA_PKCS),
    M(CKM_SHA384_RSA_PKCS),
    M(CKM_SHA512_RSA_PKCS),
    M(CKM_SHA1_RSA_PKCS_PSS),
    M(CKM_SHA224_RSA_PKCS_PSS),
    M(CKM_SHA256_RSA_PKCS_PSS),
    M(CKM_SHA384_RSA_PKCS_PSS),
    M(CKM_SHA512_RSA_PKCS_PSS),
    M(CKM_ECDSA),
    M(CKM_ECDSA_SHA1),
    M(CKM_ECDSA_SHA224),
    M(CKM_ECDSA_SHA256),
    M(CKM_ECDSA_SHA384),
    M(CKM_ECDSA_SHA512),
    M(CKM_SHA_1),
    M(CKM_SHA224),
    M(CKM_SHA256),
    M(CKM_SHA384),
    M(CKM_SHA512),
#undef M
};

static void env_hide_item(const char *var, char *item)
{
    CK_MECHANISM_TYPE mech = 0;
    char *end;
    size_t i;

    for (i = 0; i < sizeof(mech_names) / sizeof(mech_names[0]); i++)
        if (strcmp(item, mech_names[i].name) == 0)
            break;
    if (i < sizeof(mech_names) / sizeof(mech_names[0])) {
        mech = mech_names[i].mech;
    } else {
        errno = 0;
        mech = strtoul(item, &end, 0);
        if (errno != 0 || *end != '\0' || end == item) {
            env_warn(var, item);
            return;
        }
    }
    if (g.n_hidden == sizeof(g.hidden) / sizeof(g.hidden[0])) {
        env_warn(var, item);
        return;
    }
    g.hidden[g.n_hidden++] = mech;
}

static int mech_hidden(CK_MECHANISM_TYPE mech)
{
    int hit = 0;

    lock();
    for (size_t i = 0; i < g.n_hidden; i++)
        hit |= g.hidden[i] == mech;
    unlock();
    return hit;
}

static void apply_env_locked(void)
{
    const char *log = getenv("P11SHIM_LOG"), *check = getenv("P11SHIM_CHECK");
    const char *gcm = getenv("P11SHIM_GCM_ONE_PART");

    g.n_hidden = 0;
    env_items("P11SHIM_HIDE_MECHS", env_hide_item);
    const char *max = getenv("P11SHIM_MAX_SESSIONS");
    const char *misses = getenv("P11SHIM_INIT_MISSES_TOKENS");

    env_items("P11SHIM_FAIL", env_fail_item);
    env_items("P11SHIM_DELAY_US", env_delay_item);
    g.check = check != NULL && *check != '\0' && strcmp(check, "0") != 0;
    g.gcm_one_part = gcm != NULL && *gcm != '\0' && strcmp(gcm, "0") != 0;
    g.max_sessions = max != NULL ? strtoul(max, NULL, 10) : 0;
    g.init_misses = misses != NULL ? strtoul(misses, NULL, 10) : 0;
    free(g.log_path);
    g.log_path = NULL;
    if (g.log_fd >= 0)
        close(g.log_fd);
    g.log_fd = -1;
    if (log != NULL && *log != '\0') {
        g.log_path = strdup(log);
        g.log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (g.log_fd < 0)
            fprintf(stderr, "p11shim: cannot open P11SHIM_LOG %s: %s\n", log,
                    strerror(errno));
    }
}

/* ---- verdict ---------------------------------------------------------------- */

static void format_verdict_locked(char *why, size_t len)
{
    size_t off;
    unsigned long i;

    if (why == NULL || len == 0)
        return;
    if (g.nviol == 0) {
        snprintf(why, len, "no interleaving in %lu calls", g.total);
        return;
    }
    snprintf(why, len, "%lu violation%s in %lu calls", g.nviol, g.nviol == 1 ? "" : "s",
             g.total);
    for (i = 0; i < g.nviol && i < MAX_VIOL_KEPT; i++) {
        off = strlen(why);
        if (off + 1 >= len)
            break;
        snprintf(why + off, len - off, "; %s", g.viol[i]);
    }
}

static void write_verdict(void)
{
    char msg[MAX_VIOL_KEPT * VIOL_LEN + 256], why[MAX_VIOL_KEPT * VIOL_LEN + 128];
    char *vpath = NULL;
    int fd, bad;

    lock();
    if (!g.check || !g.dirty) {
        unlock();
        return;
    }
    g.dirty = 0;
    format_verdict_locked(why, sizeof(why));
    bad = g.nviol != 0;
    if (g.log_path != NULL && asprintf(&vpath, "%s.verdict", g.log_path) < 0)
        vpath = NULL;
    unlock();

    snprintf(msg, sizeof(msg), "p11shim: pid %ld: interleaving check %s: %s\n",
             (long)getpid(), bad ? "FAILED" : "passed", why);
    fputs(msg, stderr);
    if (vpath != NULL) {
        fd = open(vpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, msg, strlen(msg)) < 0)
                fprintf(stderr, "p11shim: cannot write %s\n", vpath);
            close(fd);
        }
        free(vpath);
    }
}

/* ---- call plumbing ---------------------------------------------------------- */

struct call {
    int fid;
    unsigned long seq;
    long tid;
    CK_FUNCTION_LIST *fl;
    int forward;
    int injected;
    int removed;
    int missed;   /* the module was started without its tokens */
    int gcm;      /* an init with CKM_AES_GCM */
    int keep_op;  /* refused as a one-part-only GCM: the operation runs on */
    int no_peer;  /* refused for a lost connection: writes to a dead peer */
    int key_init; /* counted in g.key_inits while forwarded */
    unsigned delay;
    CK_SESSION_HANDLE vh; /* for the log */
    CK_SESSION_HANDLE rh;
    struct sess *e; /* referenced while the call runs */
};

/* Locked part common to every call; returns the injected rv if any. */
static CK_RV begin_locked(struct call *c, int fid)
{
    CK_RV rv = CKR_CRYPTOKI_NOT_INITIALIZED;

    memset(c, 0, sizeof(*c));
    c->fid = fid;
    c->tid = my_tid();
    c->seq = ++g.seq;
    g.counts[fid]++;
    g.total++;
    g.dirty = 1;
    c->fl = g.real;
    c->removed = g.removed;
    c->missed = g.tokens_missed;
    c->delay = g.delay[fid] ? g.delay[fid] : g.delay_all;
    if (fault_hit(fid, &rv))
        c->injected = 1;
    else if (c->fl != NULL)
        c->forward = 1;
    if (c->forward && g.conn_lost && fid != F_C_Initialize && fid != F_C_Finalize &&
        fid != F_C_GetFunctionList) {
        c->forward = 0;
        c->no_peer = 1;
        rv = CKR_DEVICE_ERROR;
    }
    return rv;
}

static void log_line(const struct call *c, int fd, CK_RV rv)
{
    char line[160], rvs[48], sess[32];
    int n;

    if (fd < 0)
        return;
    rv_str(rv, rvs, sizeof(rvs));
    if (c->vh != 0)
        snprintf(sess, sizeof(sess), "%lu", (unsigned long)c->vh);
    else
        snprintf(sess, sizeof(sess), "-");
    n = snprintf(line, sizeof(line), "%s %s %s%s pid=%ld tid=%ld\n", fnames[c->fid], sess,
                 rvs, c->injected ? " injected" : "", (long)getpid(), c->tid);
    if (n > 0 && write(fd, line, (size_t)n) < 0) {
        /* nothing sensible to do */
    }
}

/* What p11-kit-client.so does on a lost connection: a write to a socket
 * whose other end is gone, which raises SIGPIPE in the calling thread
 * (unless blocked or ignored) and fails with EPIPE. */
static void write_to_dead_peer(void)
{
    int fds[2];

    if (pipe(fds) != 0)
        return;
    close(fds[0]);
    if (write(fds[1], "x", 1) < 0) {
        /* EPIPE, as expected */
    }
    close(fds[1]);
}

/* Slot-level call: fault plan, token removal, delay. */
static CK_RV plain_begin(struct call *c, int fid)
{
    CK_RV rv;

    lock();
    rv = begin_locked(c, fid);
    if (c->forward && c->missed &&
        (fid == F_C_GetSlotInfo || fid == F_C_GetTokenInfo || fid == F_C_OpenSession ||
         fid == F_C_GetMechanismList || fid == F_C_GetMechanismInfo ||
         fid == F_C_InitToken || fid == F_C_CloseAllSessions)) {
        c->forward = 0;
        rv = CKR_SLOT_ID_INVALID;
    }
    if (c->forward && c->removed &&
        (fid == F_C_GetTokenInfo || fid == F_C_OpenSession ||
         fid == F_C_GetMechanismList || fid == F_C_GetMechanismInfo ||
         fid == F_C_InitToken)) {
        c->forward = 0;
        rv = CKR_TOKEN_NOT_PRESENT;
    }
    unlock();
    if (c->no_peer)
        write_to_dead_peer();
    sleep_us(c->delay);
    return rv;
}

static CK_RV plain_end(struct call *c, CK_RV rv)
{
    int fd;

    lock();
    ring_add(c->seq, c->fid, c->vh, c->tid, rv, c->injected);
    fd = g.log_fd;
    unlock();
    log_line(c, fd, rv);
    return rv;
}

static int is_key_init(int fid);

/* Session call: fault plan, session state, concurrency check, delay. */
static CK_RV sess_begin(struct call *c, int fid, CK_SESSION_HANDLE vh)
{
    CK_RV rv;
    struct sess *e;
    unsigned i;

    lock();
    rv = begin_locked(c, fid);
    c->vh = vh;
    e = sess_find(vh);
    if (e == NULL || e->state == S_CLOSED) {
        if (c->forward)
            rv = CKR_SESSION_HANDLE_INVALID;
        c->forward = 0;
    } else {
        for (i = 0; i < e->ninfl && i < MAX_INFLIGHT; i++)
            if (e->infl[i].tid != c->tid) {
                violation(
                    "session %lu: %s (call #%lu, tid %ld) while %s (call #%lu, tid %ld) "
                    "is in flight on it",
                    (unsigned long)vh, fnames[fid], c->seq, c->tid,
                    fnames[e->infl[i].fid], e->infl[i].seq, e->infl[i].tid);
                break;
            }
        if (e->ninfl < MAX_INFLIGHT) {
            e->infl[e->ninfl].tid = c->tid;
            e->infl[e->ninfl].fid = fid;
            e->infl[e->ninfl].seq = c->seq;
        }
        e->ninfl++;
        e->refs++;
        c->e = e;
        c->rh = e->rh;
        if (e->state == S_DEAD && c->forward) {
            rv = e->dead_rv;
            c->forward = 0;
        }
        if (c->forward && g.gcm_one_part) {
            int k = fid == F_C_EncryptUpdate || fid == F_C_EncryptFinal   ? K_ENCRYPT
                    : fid == F_C_DecryptUpdate || fid == F_C_DecryptFinal ? K_DECRYPT
                                                                          : K_NONE;

            /* As NSS's softokn: the step is refused and the operation stays
             * active, in the shim's books and in the real module. */
            if (k != K_NONE && e->gcm[k] && e->ops[k].active) {
                rv = CKR_OPERATION_NOT_INITIALIZED;
                c->forward = 0;
                c->keep_op = 1;
            }
        }
    }
    unlock();
    if (c->no_peer)
        write_to_dead_peer();
    sleep_us(c->delay);
    c->key_init = c->forward && is_key_init(fid);
    if (c->key_init)
        key_init_enter();
    return rv;
}

/* Checker update for one finished call on session e (locked).  Fills recon
 * with the kinds whose real operation the shim must end itself. */
static void check_op(struct sess *e, const struct call *c, CK_RV rv, int out_null,
                     int recon[2], int *nrecon)
{
    const struct rule *r = &rules[c->fid];
    struct opstate *o;
    int i, k, ends;

    for (i = 0; i < 2; i++) {
        k = r->kind[i];
        if (k == K_NONE)
            continue;
        o = &e->ops[k];
        ends = 0;
        if (r->role == RO_INIT) {
            if (rv == CKR_OPERATION_ACTIVE && !c->injected) /* refused by the module */
                violation(
                    "session %lu: %s (call #%lu, tid %ld) returned CKR_OPERATION_ACTIVE",
                    (unsigned long)c->vh, fnames[c->fid], c->seq, c->tid);
            else if (o->active)
                violation(
                    "session %lu: %s (call #%lu, tid %ld) while a %s operation is active "
                    "(started by %s call #%lu, tid %ld)",
                    (unsigned long)c->vh, fnames[c->fid], c->seq, c->tid, kind_names[k],
                    fnames[o->start_fid], o->start_seq, o->start_tid);
            if (rv == CKR_OK) {
                e->gcm[k] = (unsigned char)c->gcm;
                o->active = 1;
                o->start_fid = c->fid;
                o->start_seq = c->seq;
                o->start_tid = c->tid;
            }
            continue;
        }
        if (c->keep_op)
            continue;
        if (!o->active) {
            violation(
                "session %lu: %s (call #%lu, tid %ld) without an active %s operation",
                (unsigned long)c->vh, fnames[c->fid], c->seq, c->tid, kind_names[k]);
            continue;
        }
        switch (r->role) {
        case RO_UPDATE:
            ends = rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL;
            break;
        case RO_FINAL:
            ends = !(rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && out_null));
            break;
        case RO_FINDFINAL:
            ends = 1;
            break;
        default:
            break;
        }
        if (ends) {
            o->active = 0;
            if (c->injected && e->state == S_LIVE && e->real_open)
                recon[(*nrecon)++] = k;
        }
    }
}

/* End, in the real module, an operation the caller saw end by an injected
 * failure.  Runs unlocked, with a reference on the session. */
static void reconcile(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE rh, int kind)
{
    CK_BYTE small[1024], zero[1] = {0}, *buf = small, *big = NULL;
    CK_ULONG len, cap = sizeof(small);
    CK_RV rv = CKR_OK;
    int tries;

    for (tries = 0; tries < 3; tries++) {
        len = cap;
        switch (kind) {
        case K_SIGN:
            rv = fl->C_SignFinal(rh, buf, &len);
            if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL) {
                len = cap;
                rv = fl->C_Sign(rh, zero, 0, buf, &len);
            }
            break;
        case K_VERIFY: /* a zero signature: an error, which ends the operation */
            memset(buf, 0, cap);
            if (fl->C_VerifyFinal(rh, buf, 64) != CKR_OK)
                fl->C_Verify(rh, zero, 0, buf, 64);
            rv = CKR_OK;
            break;
        case K_ENCRYPT:
            rv = fl->C_EncryptFinal(rh, buf, &len);
            if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL) {
                len = cap;
                rv = fl->C_Encrypt(rh, zero, 0, buf, &len);
            }
            break;
        case K_DECRYPT:
            rv = fl->C_DecryptFinal(rh, buf, &len);
            if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL) {
                len = cap;
                rv = fl->C_Decrypt(rh, zero, 0, buf, &len);
            }
            break;
        case K_DIGEST:
            rv = fl->C_DigestFinal(rh, buf, &len);
            break;
        case K_FIND:
            rv = fl->C_FindObjectsFinal(rh);
            break;
        default:
            break;
        }
        if (rv != CKR_BUFFER_TOO_SMALL || len <= cap || len > (1UL << 24))
            break;
        free(big);
        big = malloc(len);
        if (big == NULL)
            break;
        buf = big;
        cap = len;
    }
    free(big);
}

/* Functions that start using a key object. */
static int is_key_init(int fid)
{
    switch (fid) {
    case F_C_SignInit:
    case F_C_SignRecoverInit:
    case F_C_VerifyInit:
    case F_C_VerifyRecoverInit:
    case F_C_EncryptInit:
    case F_C_DecryptInit:
    case F_C_DigestKey:
    case F_C_WrapKey:
    case F_C_UnwrapKey:
    case F_C_DeriveKey:
        return 1;
    default:
        return 0;
    }
}

static CK_RV sess_end(struct call *c, CK_RV rv, int out_null)
{
    struct sess *e = c->e;
    CK_SESSION_HANDLE close_rh = 0;
    int recon[2], nrecon = 0, doclose = 0, fd, i;
    unsigned j;

    if (c->key_init)
        key_init_leave();
    lock();
    if (e != NULL) {
        /* this call is no longer in flight */
        for (j = 0; j < e->ninfl && j < MAX_INFLIGHT; j++)
            if (e->infl[j].seq == c->seq) {
                for (; j + 1 < e->ninfl && j + 1 < MAX_INFLIGHT; j++)
                    e->infl[j] = e->infl[j + 1];
                break;
            }
        e->ninfl--;
        if (c->fid == F_C_CloseSession) {
            if (c->forward && (rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID ||
                               rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_REMOVED)) {
                e->state = S_CLOSED;
                e->real_open = 0;
            } else if (!c->injected && e->state == S_DEAD) {
                e->state = S_CLOSED; /* the real close, if pending, runs on release */
            }
            if (e->state == S_CLOSED) {
                for (i = 0; i < K_COUNT; i++)
                    if (e->ops[i].active) {
                        g.closed_active++;
                        break;
                    }
                memset(e->ops, 0, sizeof(e->ops));
            }
        } else if (e->state != S_CLOSED) {
            /* After p11shim_logout(), report what a token that keeps its object
             * handles says; SoftHSM drops the handles of private objects at
             * logout instead. */
            if (g.logged_out && c->forward && is_key_init(c->fid) &&
                (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID))
                rv = CKR_USER_NOT_LOGGED_IN;
            check_op(e, c, rv, out_null, recon, &nrecon);
        }
        if (nrecon == 0)
            close_rh = sess_release(e, &doclose);
    }
    ring_add(c->seq, c->fid, c->vh, c->tid, rv, c->injected);
    fd = g.log_fd;
    unlock();

    if (nrecon > 0) {
        for (i = 0; i < nrecon; i++)
            reconcile(c->fl, c->rh, recon[i]);
        lock();
        close_rh = sess_release(e, &doclose);
        unlock();
    }
    if (doclose)
        close_behind(c->fl, &close_rh, 1);
    log_line(c, fd, rv);
    return rv;
}

/* ---- the 68 functions ----------------------------------------------------- */

/* A call on a session: OUTNULL says whether the caller only asked for a size. */
#define SESS_FN(NAME, PARAMS, H, OUTNULL, ARGS)                                          \
    static CK_RV shim_##NAME PARAMS                                                      \
    {                                                                                    \
        struct call c;                                                                   \
        CK_RV rv = sess_begin(&c, F_##NAME, H);                                          \
        if (c.forward)                                                                   \
            rv = c.fl->NAME ARGS;                                                        \
        return sess_end(&c, rv, OUTNULL);                                                \
    }

/* An operation's Init: a mechanism of P11SHIM_HIDE_MECHS is refused as a
 * module without it refuses it. */
#define SESS_INIT_FN(NAME, PARAMS, H, MECH, ARGS)                                        \
    static CK_RV shim_##NAME PARAMS                                                      \
    {                                                                                    \
        struct call c;                                                                   \
        CK_RV rv = sess_begin(&c, F_##NAME, H);                                          \
        if (c.forward && (MECH) != NULL && mech_hidden((MECH)->mechanism)) {             \
            c.forward = 0;                                                               \
            rv = CKR_MECHANISM_INVALID;                                                  \
        }                                                                                \
        if (c.forward)                                                                   \
            rv = c.fl->NAME ARGS;                                                        \
        return sess_end(&c, rv, 0);                                                      \
    }

/* A slot-level call forwarded as is. */
#define PLAIN_FN(NAME, PARAMS, ARGS)                                                     \
    static CK_RV shim_##NAME PARAMS                                                      \
    {                                                                                    \
        struct call c;                                                                   \
        CK_RV rv = plain_begin(&c, F_##NAME);                                            \
        if (c.forward)                                                                   \
            rv = c.fl->NAME ARGS;                                                        \
        return plain_end(&c, rv);                                                        \
    }

static CK_RV load_real(CK_FUNCTION_LIST **out)
{
    const char *path = getenv("P11SHIM_TARGET");
    CK_C_GetFunctionList gfl;
    CK_FUNCTION_LIST *fl = NULL;
    void *h, *sym;
    CK_RV rv;

    lock();
    *out = g.real;
    unlock();
    if (*out != NULL)
        return CKR_OK;
    if (path == NULL || *path == '\0')
        path = DEFAULT_TARGET;
    /* not under the lock: the module's constructors may load OpenSSL
     * providers that call back into this shim */
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "p11shim: cannot load P11SHIM_TARGET %s: %s\n", path, dlerror());
        return CKR_GENERAL_ERROR;
    }
    sym = dlsym(h, "C_GetFunctionList");
    memcpy(&gfl, &sym, sizeof(gfl));
    if (gfl == NULL || gfl == C_GetFunctionList) {
        fprintf(stderr, "p11shim: %s is not a usable PKCS#11 module\n", path);
        dlclose(h);
        return CKR_GENERAL_ERROR;
    }
    rv = gfl(&fl);
    if (rv != CKR_OK || fl == NULL) {
        fprintf(stderr, "p11shim: C_GetFunctionList of %s failed (0x%lx)\n", path,
                (unsigned long)rv);
        dlclose(h);
        return rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
    }
    lock();
    if (g.real == NULL) {
        g.real = fl;
        g.dl = h;
        h = NULL;
    }
    *out = g.real;
    unlock();
    if (h != NULL)
        dlclose(h); /* a concurrent load won; drop our reference */
    return CKR_OK;
}

static CK_RV shim_C_Initialize(CK_VOID_PTR args)
{
    CK_FUNCTION_LIST *fl;
    CK_RV lrv, rv;
    struct call c;

    lock();
    if (!g.env_applied) {
        g.env_applied = 1;
        apply_env_locked();
    }
    unlock();
    lrv = load_real(&fl);
    rv = plain_begin(&c, F_C_Initialize);
    if (!c.injected && lrv != CKR_OK) {
        rv = lrv;
        c.forward = 0;
    }
    lock();
    if (c.forward && g.conn_lost && (g.server_down || !g.conn_final)) {
        /* Nobody to connect to; or still initialised, connection and all. */
        rv = g.server_down ? CKR_DEVICE_ERROR : CKR_CRYPTOKI_ALREADY_INITIALIZED;
        c.forward = 0;
        c.no_peer = g.server_down;
    }
    unlock();
    if (c.no_peer)
        write_to_dead_peer();
    if (c.forward)
        rv = c.fl->C_Initialize(args);
    if (c.forward && rv == CKR_OK) {
        lock();
        g.conn_lost = g.conn_final = 0;
        /* As SoftHSM2 when it reads a token's files while another process
         * rewrites them: the token is left out of this start altogether. */
        g.tokens_missed = g.init_misses > 0;
        if (g.init_misses > 0)
            g.init_misses--;
        unlock();
    }
    return plain_end(&c, rv);
}

/* C_CloseAllSessions or C_Finalize while another thread has a call in flight
 * on a session they close: as bad as two calls on one session. */
static void flag_busy(const struct call *c, int one_slot, CK_SLOT_ID slot)
{
    struct sess *e;
    unsigned i;
    int b;

    lock();
    for (b = 0; b < NBUCKETS; b++)
        for (e = g.buckets[b]; e != NULL; e = e->next) {
            if ((one_slot && e->slot != slot) || e->state == S_CLOSED)
                continue;
            for (i = 0; i < e->ninfl && i < MAX_INFLIGHT; i++)
                if (e->infl[i].tid != c->tid) {
                    violation("session %lu: %s (call #%lu, tid %ld) while %s (call #%lu, "
                              "tid %ld) is in flight on it",
                              (unsigned long)e->vh, fnames[c->fid], c->seq, c->tid,
                              fnames[e->infl[i].fid], e->infl[i].seq, e->infl[i].tid);
                    break;
                }
        }
    unlock();
}

static CK_RV shim_C_Finalize(CK_VOID_PTR reserved)
{
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_Finalize);

    flag_busy(&c, 0, 0);
    if (c.forward)
        rv = c.fl->C_Finalize(reserved);
    if (c.forward && rv == CKR_OK) {
        lock();
        sess_close_all(0, 0, 1);
        g.tokens_missed = 0;
        unlock();
    }
    lock();
    if (g.conn_lost)
        g.conn_final = 1;
    unlock();
    rv = plain_end(&c, rv);
    write_verdict();
    return rv;
}

PLAIN_FN(C_GetInfo, (CK_INFO_PTR info), (info))

/* P11SHIM_NULL_FUNCS: a copy of the shim's list with those entries NULL. */
static CK_FUNCTION_LIST null_list;

static void null_entry(CK_FUNCTION_LIST *l, int fid)
{
    switch (fid) {
#define X(n)                                                                             \
    case F_##n:                                                                          \
        l->n = NULL;                                                                     \
        break;
        SHIM_FUNCS(X)
#undef X
    }
}

static CK_FUNCTION_LIST *list_to_return(void)
{
    const char *spec = getenv("P11SHIM_NULL_FUNCS");
    char *copy, *item, *save = NULL;
    int fid;

    if (spec == NULL || *spec == '\0' || (copy = strdup(spec)) == NULL)
        return &shim_list;
    lock();
    null_list = shim_list;
    for (item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        fid = fid_by_name(item);
        if (fid < 0 || fid == F_C_GetFunctionList)
            env_warn("P11SHIM_NULL_FUNCS", item);
        else
            null_entry(&null_list, fid);
    }
    unlock();
    free(copy);
    return &null_list;
}

SHIM_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    CK_FUNCTION_LIST *real;
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_GetFunctionList);

    /* Load the real module now, as a caller that loads it directly would:
     * its exit-time destructors (SoftHSM2's C++ statics) must be registered
     * before the caller's own atexit handlers, which exit() runs first and
     * which may still call C_Finalize (hsmprov does). Loaded at the first
     * C_Initialize instead, the module would be torn down before them. A
     * failure here is reported again by C_Initialize. */
    (void)load_real(&real);
    if (!c.injected) {
        if (list == NULL) {
            rv = CKR_ARGUMENTS_BAD;
        } else {
            *list = list_to_return();
            rv = CKR_OK;
        }
    }
    return plain_end(&c, rv);
}

static CK_RV shim_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_GetSlotList);

    if (c.forward && ((c.removed && present) || c.missed)) {
        c.forward = 0;
        if (count == NULL) {
            rv = CKR_ARGUMENTS_BAD;
        } else {
            *count = 0;
            rv = CKR_OK;
        }
    }
    if (c.forward)
        rv = c.fl->C_GetSlotList(present, list, count);
    return plain_end(&c, rv);
}

static CK_RV shim_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_GetSlotInfo);

    if (c.forward) {
        rv = c.fl->C_GetSlotInfo(slot, info);
        if (rv == CKR_OK && c.removed && info != NULL)
            info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
    }
    return plain_end(&c, rv);
}

static CK_RV shim_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_GetTokenInfo);

    if (c.forward) {
        rv = c.fl->C_GetTokenInfo(slot, info);
        lock();
        if (rv == CKR_OK && info != NULL && g.max_sessions != 0)
            info->ulMaxSessionCount = info->ulMaxRwSessionCount = g.max_sessions;
        unlock();
    }
    return plain_end(&c, rv);
}

/* With g_mu held: sessions open through the shim. */
static unsigned long live_sessions_locked(void)
{
    unsigned long n = 0;
    struct sess *e;
    int b;

    for (b = 0; b < NBUCKETS; b++)
        for (e = g.buckets[b]; e != NULL; e = e->next)
            if (e->state == S_LIVE)
                n++;
    return n;
}
/* The real list without the mechanisms of P11SHIM_HIDE_MECHS. */
static CK_RV hidden_mech_list(CK_FUNCTION_LIST *fl, CK_SLOT_ID slot,
                              CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
    CK_ULONG n = 0, kept = 0;
    CK_MECHANISM_TYPE *v;
    CK_RV rv;

    if (count == NULL)
        return CKR_ARGUMENTS_BAD;
    rv = fl->C_GetMechanismList(slot, NULL, &n);
    if (rv != CKR_OK)
        return rv;
    v = calloc(n + 1, sizeof(*v));
    if (v == NULL)
        return CKR_HOST_MEMORY;
    rv = fl->C_GetMechanismList(slot, v, &n);
    if (rv == CKR_OK) {
        for (CK_ULONG i = 0; i < n; i++)
            if (!mech_hidden(v[i]))
                v[kept++] = v[i];
        if (list != NULL && *count < kept)
            rv = CKR_BUFFER_TOO_SMALL;
        else if (list != NULL)
            memcpy(list, v, kept * sizeof(*v));
        *count = kept;
    }
    free(v);
    return rv;
}

static CK_RV shim_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list,
                                     CK_ULONG_PTR count)
{
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_GetMechanismList);

    if (c.forward)
        rv = hidden_mech_list(c.fl, slot, list, count);
    return plain_end(&c, rv);
}

static CK_RV shim_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
                                     CK_MECHANISM_INFO_PTR info)
{
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_GetMechanismInfo);

    if (c.forward)
        rv = mech_hidden(type) ? CKR_MECHANISM_INVALID
                               : c.fl->C_GetMechanismInfo(slot, type, info);
    return plain_end(&c, rv);
}
PLAIN_FN(C_InitToken,
         (CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG pinlen, CK_UTF8CHAR_PTR label),
         (slot, pin, pinlen, label))
PLAIN_FN(C_WaitForSlotEvent, (CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved),
         (flags, slot, reserved))

SESS_FN(C_InitPIN, (CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR pin, CK_ULONG len), h, 0,
        (c.rh, pin, len))
SESS_FN(C_SetPIN,
        (CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR old, CK_ULONG oldlen, CK_UTF8CHAR_PTR pin,
         CK_ULONG len),
        h, 0, (c.rh, old, oldlen, pin, len))

static CK_RV shim_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app,
                                CK_NOTIFY notify, CK_SESSION_HANDLE_PTR ph)
{
    struct call c;
    CK_SESSION_HANDLE rh = 0;
    struct sess *e;
    int doclose = 0, fd;
    CK_RV rv = plain_begin(&c, F_C_OpenSession);
    int counted = 0;

    /* P11SHIM_MAX_SESSIONS: a token with that many sessions to give. */
    lock();
    if (c.forward && g.max_sessions != 0) {
        if (live_sessions_locked() + g.opening >= g.max_sessions) {
            c.forward = 0;
            rv = CKR_SESSION_COUNT;
        } else {
            g.opening++;
            counted = 1;
        }
    }
    unlock();
    if (c.forward)
        rv = c.fl->C_OpenSession(slot, flags, app, notify, ph != NULL ? &rh : NULL);
    lock();
    if (counted)
        g.opening--;
    if (c.forward && rv == CKR_OK) {
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            doclose = 1;
            rv = CKR_HOST_MEMORY;
        } else {
            e->vh = g.next_vh++;
            e->rh = rh;
            e->slot = slot;
            e->state = S_LIVE;
            e->real_open = 1;
            e->next = g.buckets[e->vh % NBUCKETS];
            g.buckets[e->vh % NBUCKETS] = e;
            if (g.removed) { /* removed while we were opening it */
                e->state = S_DEAD;
                e->dead_rv = CKR_DEVICE_REMOVED;
                e->real_open = 0;
                doclose = 1;
            }
            if (ph != NULL)
                *ph = e->vh;
            c.vh = e->vh;
        }
    }
    ring_add(c.seq, c.fid, c.vh, c.tid, rv, c.injected);
    fd = g.log_fd;
    unlock();
    if (doclose)
        close_behind(c.fl, &rh, 1);
    log_line(&c, fd, rv);
    return rv;
}

SESS_FN(C_CloseSession, (CK_SESSION_HANDLE h), h, 0, (c.rh))

static CK_RV shim_C_CloseAllSessions(CK_SLOT_ID slot)
{
    struct call c;
    CK_RV rv = plain_begin(&c, F_C_CloseAllSessions);
    int removed_skip = 0;

    flag_busy(&c, 1, slot);
    if (c.forward && c.removed) {
        /* the real sessions are already closed or being closed */
        c.forward = 0;
        removed_skip = 1;
        rv = CKR_OK;
    }
    if (c.forward)
        rv = c.fl->C_CloseAllSessions(slot);
    if ((c.forward && rv == CKR_OK) || removed_skip) {
        lock();
        sess_close_all(1, slot, !removed_skip);
        unlock();
    }
    return plain_end(&c, rv);
}

SESS_FN(C_GetSessionInfo, (CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info), h, 0,
        (c.rh, info))
SESS_FN(C_GetOperationState, (CK_SESSION_HANDLE h, CK_BYTE_PTR state, CK_ULONG_PTR len),
        h, 0, (c.rh, state, len))
SESS_FN(C_SetOperationState,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR state, CK_ULONG len, CK_OBJECT_HANDLE enc,
         CK_OBJECT_HANDLE auth),
        h, 0, (c.rh, state, len, enc, auth))

static CK_RV shim_C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                          CK_ULONG len)
{
    struct call c;
    CK_RV rv = sess_begin(&c, F_C_Login, h);

    if (c.forward) {
        rv = c.fl->C_Login(c.rh, user, pin, len);
        if (user == CKU_USER && (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)) {
            lock();
            g.logged_out = 0;
            unlock();
        }
    }
    return sess_end(&c, rv, 0);
}

SESS_FN(C_Logout, (CK_SESSION_HANDLE h), h, 0, (c.rh))
SESS_FN(C_CreateObject,
        (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
         CK_OBJECT_HANDLE_PTR obj),
        h, 0, (c.rh, tmpl, n, obj))
SESS_FN(C_CopyObject,
        (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
         CK_OBJECT_HANDLE_PTR obj),
        h, 0, (c.rh, o, tmpl, n, obj))
SESS_FN(C_DestroyObject, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o), h, 0, (c.rh, o))
SESS_FN(C_GetObjectSize, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ULONG_PTR size), h,
        0, (c.rh, o, size))
SESS_FN(C_GetAttributeValue,
        (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n), h,
        0, (c.rh, o, tmpl, n))
SESS_FN(C_SetAttributeValue,
        (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n), h,
        0, (c.rh, o, tmpl, n))
SESS_FN(C_FindObjectsInit, (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n), h, 0,
        (c.rh, tmpl, n))
SESS_FN(C_FindObjects,
        (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR obj, CK_ULONG max, CK_ULONG_PTR count),
        h, 0, (c.rh, obj, max, count))
SESS_FN(C_FindObjectsFinal, (CK_SESSION_HANDLE h), h, 0, (c.rh))

/* The inits of encryption and decryption refuse hidden mechanisms, as every
 * init does, and note AES-GCM for P11SHIM_GCM_ONE_PART. */
#define CRYPT_INIT_FN(NAME)                                                              \
    static CK_RV shim_##NAME(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,                    \
                             CK_OBJECT_HANDLE k)                                         \
    {                                                                                    \
        struct call c;                                                                   \
        CK_RV rv = sess_begin(&c, F_##NAME, h);                                          \
        if (c.forward && m != NULL && mech_hidden(m->mechanism)) {                       \
            c.forward = 0;                                                               \
            rv = CKR_MECHANISM_INVALID;                                                  \
        }                                                                                \
        if (c.forward)                                                                   \
            rv = c.fl->NAME(c.rh, m, k);                                                 \
        c.gcm = m != NULL && m->mechanism == CKM_AES_GCM;                                \
        return sess_end(&c, rv, 0);                                                      \
    }
CRYPT_INIT_FN(C_EncryptInit)
SESS_FN(C_Encrypt,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_EncryptUpdate,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_EncryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen), h,
        out == NULL, (c.rh, out, outlen))
CRYPT_INIT_FN(C_DecryptInit)
SESS_FN(C_Decrypt,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_DecryptUpdate,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_DecryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen), h,
        out == NULL, (c.rh, out, outlen))
SESS_INIT_FN(C_DigestInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m), h, m, (c.rh, m))
SESS_FN(C_Digest,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_DigestUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen), h, 0,
        (c.rh, in, inlen))
SESS_FN(C_DigestKey, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k), h, 0, (c.rh, k))
SESS_FN(C_DigestFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR outlen), h,
        out == NULL, (c.rh, out, outlen))
SESS_INIT_FN(C_SignInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), h,
             m, (c.rh, m, k))
SESS_FN(C_Sign,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig,
         CK_ULONG_PTR siglen),
        h, sig == NULL, (c.rh, in, inlen, sig, siglen))
SESS_FN(C_SignUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen), h, 0,
        (c.rh, in, inlen))
SESS_FN(C_SignFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG_PTR siglen), h,
        sig == NULL, (c.rh, sig, siglen))
SESS_FN(C_SignRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
        h, 0, (c.rh, m, k))
SESS_FN(C_SignRecover,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig,
         CK_ULONG_PTR siglen),
        h, sig == NULL, (c.rh, in, inlen, sig, siglen))
SESS_INIT_FN(C_VerifyInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
             h, m, (c.rh, m, k))
SESS_FN(C_Verify,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig,
         CK_ULONG siglen),
        h, 0, (c.rh, in, inlen, sig, siglen))
SESS_FN(C_VerifyUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen), h, 0,
        (c.rh, in, inlen))
SESS_FN(C_VerifyFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG siglen), h, 0,
        (c.rh, sig, siglen))
SESS_FN(C_VerifyRecoverInit,
        (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), h, 0, (c.rh, m, k))
SESS_FN(C_VerifyRecover,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG siglen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, sig, siglen, out, outlen))
SESS_FN(C_DigestEncryptUpdate,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_DecryptDigestUpdate,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_SignEncryptUpdate,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_DecryptVerifyUpdate,
        (CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
         CK_ULONG_PTR outlen),
        h, out == NULL, (c.rh, in, inlen, out, outlen))
SESS_FN(C_GenerateKey,
        (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
         CK_OBJECT_HANDLE_PTR key),
        h, 0, (c.rh, m, tmpl, n, key))
SESS_FN(C_GenerateKeyPair,
        (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pubt, CK_ULONG npub,
         CK_ATTRIBUTE_PTR privt, CK_ULONG npriv, CK_OBJECT_HANDLE_PTR pub,
         CK_OBJECT_HANDLE_PTR priv),
        h, 0, (c.rh, m, pubt, npub, privt, npriv, pub, priv))
SESS_FN(C_WrapKey,
        (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wk, CK_OBJECT_HANDLE k,
         CK_BYTE_PTR out, CK_ULONG_PTR outlen),
        h, 0, (c.rh, m, wk, k, out, outlen))
SESS_FN(C_UnwrapKey,
        (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE uk, CK_BYTE_PTR in,
         CK_ULONG inlen, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR key),
        h, 0, (c.rh, m, uk, in, inlen, tmpl, n, key))
SESS_FN(C_DeriveKey,
        (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base,
         CK_ATTRIBUTE_PTR tmpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR key),
        h, 0, (c.rh, m, base, tmpl, n, key))
SESS_FN(C_SeedRandom, (CK_SESSION_HANDLE h, CK_BYTE_PTR seed, CK_ULONG len), h, 0,
        (c.rh, seed, len))
SESS_FN(C_GenerateRandom, (CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG len), h, 0,
        (c.rh, out, len))
SESS_FN(C_GetFunctionStatus, (CK_SESSION_HANDLE h), h, 0, (c.rh))
SESS_FN(C_CancelFunction, (CK_SESSION_HANDLE h), h, 0, (c.rh))

/* the function list: shim_C_X for every C_X, and our exported C_GetFunctionList */
#define shim_C_GetFunctionList C_GetFunctionList
#define X(n) .n = shim_##n,
static CK_FUNCTION_LIST shim_list = {.version = {2, 40}, SHIM_FUNCS(X)};
#undef X

/* ---- control API ------------------------------------------------------------ */

SHIM_EXPORT int p11shim_fail_nth(const char *fn, unsigned long nth, CK_RV rv)
{
    int fid = fid_by_name(fn), ret;

    if (fid < 0)
        return -1;
    lock();
    ret = add_fault(fid, nth, rv);
    unlock();
    return ret;
}

SHIM_EXPORT void p11shim_clear(void)
{
    lock();
    clear_faults();
    unlock();
}

SHIM_EXPORT void p11shim_invalidate_sessions(void)
{
    struct closelist cl = {0};
    CK_FUNCTION_LIST *fl;
    struct sess *e;
    int b;

    lock();
    fl = g.real;
    for (b = 0; b < NBUCKETS; b++)
        for (e = g.buckets[b]; e != NULL; e = e->next)
            if (e->state == S_LIVE)
                sess_kill(e, CKR_SESSION_HANDLE_INVALID, &cl);
    unlock();
    closelist_run(&cl, fl);
}

SHIM_EXPORT void p11shim_logout(void)
{
    CK_FUNCTION_LIST *fl;
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64, i;
    CK_SESSION_HANDLE s;

    lock();
    fl = g.real;
    g.logged_out = fl != NULL;
    unlock();
    if (fl == NULL || fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return;
    /* C_Logout acts on the token, so a session of our own will do */
    for (i = 0; i < n; i++)
        if (fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s) == CKR_OK) {
            fl->C_Logout(s);
            fl->C_CloseSession(s);
        }
}

SHIM_EXPORT void p11shim_remove_token(int removed)
{
    struct closelist cl = {0};
    CK_FUNCTION_LIST *fl;
    struct sess *e;
    int b;

    lock();
    fl = g.real;
    g.removed = removed != 0;
    for (b = 0; b < NBUCKETS; b++)
        for (e = g.buckets[b]; e != NULL; e = e->next) {
            if (removed && e->state == S_LIVE)
                sess_kill(e, CKR_DEVICE_REMOVED, &cl);
            else if (!removed && e->state == S_DEAD && e->dead_rv == CKR_DEVICE_REMOVED)
                e->dead_rv = CKR_SESSION_HANDLE_INVALID;
        }
    unlock();
    closelist_run(&cl, fl);
}

SHIM_EXPORT void p11shim_lose_connection(int down)
{
    struct closelist cl = {0};
    CK_FUNCTION_LIST *fl;
    struct sess *e;
    int b;

    lock();
    fl = g.real;
    if (down) {
        g.conn_lost = g.server_down = 1;
        g.conn_final = 0;
        for (b = 0; b < NBUCKETS; b++)
            for (e = g.buckets[b]; e != NULL; e = e->next)
                if (e->state == S_LIVE)
                    sess_kill(e, CKR_DEVICE_ERROR, &cl);
    } else {
        g.server_down = 0;
    }
    unlock();
    closelist_run(&cl, fl);
}

SHIM_EXPORT int p11shim_delay_us(const char *fn, unsigned us)
{
    int fid = -1;

    if (fn != NULL && (fid = fid_by_name(fn)) < 0)
        return -1;
    lock();
    if (fid < 0)
        g.delay_all = us;
    else
        g.delay[fid] = us;
    unlock();
    return 0;
}

SHIM_EXPORT int p11shim_check_interleaving(char *why, size_t whylen)
{
    int bad;

    lock();
    bad = g.nviol != 0;
    format_verdict_locked(why, whylen);
    unlock();
    return bad;
}

SHIM_EXPORT unsigned long p11shim_call_count(const char *fn)
{
    unsigned long n = 0;
    int fid = -1;

    if (fn != NULL && (fid = fid_by_name(fn)) < 0)
        return 0;
    lock();
    n = fid < 0 ? g.total : g.counts[fid];
    unlock();
    return n;
}

SHIM_EXPORT void p11shim_reset_log(void)
{
    lock();
    g.total = 0;
    memset(g.counts, 0, sizeof(g.counts));
    g.ring_n = g.ring_next = 0;
    g.nviol = 0;
    unlock();
}

SHIM_EXPORT size_t p11shim_get_log(struct p11shim_call *out, size_t max)
{
    size_t n, i, start;

    lock();
    n = g.ring_n < max ? g.ring_n : max;
    start = (g.ring_next + RING_CAP - n) % RING_CAP;
    for (i = 0; i < n; i++)
        out[i] = g.ring[(start + i) % RING_CAP];
    unlock();
    return n;
}

SHIM_EXPORT unsigned long p11shim_closed_active(void)
{
    unsigned long n;

    lock();
    n = g.closed_active;
    unlock();
    return n;
}

SHIM_EXPORT unsigned long p11shim_open_sessions(void)
{
    unsigned long n = 0;
    struct sess *e;
    int b;

    lock();
    for (b = 0; b < NBUCKETS; b++)
        for (e = g.buckets[b]; e != NULL; e = e->next)
            if (e->state == S_LIVE)
                n++;
    unlock();
    return n;
}

/* ---- load, fork, unload ----------------------------------------------------- */

static void atfork_prepare(void)
{
    lock();
}

static void atfork_parent(void)
{
    unlock();
}

/* The child starts afresh: no sessions (the parent's are not ours to use), no
 * faults, delays, counts or violations; the environment is read again at the
 * child's next C_Initialize.  The real module stays loaded; session handles
 * keep counting up so the parent's handles are never reissued. */
static void atfork_child(void)
{
    int b;
    struct sess *e, *next;

    for (b = 0; b < NBUCKETS; b++) {
        for (e = g.buckets[b]; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
        g.buckets[b] = NULL;
    }
    clear_faults();
    g.removed = 0;
    g.conn_lost = g.server_down = g.conn_final = 0;
    g.init_misses = 0;
    g.tokens_missed = 0;
    g.key_inits = 0;
    g.closing = 0;
    pthread_cond_init(&g_gate, NULL);
    g.logged_out = 0;
    g.env_applied = 0;
    g.total = 0;
    memset(g.counts, 0, sizeof(g.counts));
    g.ring_n = g.ring_next = 0;
    g.nviol = 0;
    g.opening = 0;
    g.closed_active = 0;
    g.dirty = 0;
    g.check = 0;
    if (g.log_fd >= 0)
        close(g.log_fd);
    g.log_fd = -1;
    free(g.log_path);
    g.log_path = NULL;
    unlock(); /* locked by atfork_prepare in the parent */
}

__attribute__((constructor)) static void shim_load(void)
{
    init_rules();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

__attribute__((destructor)) static void shim_unload(void)
{
    write_verdict();
    lock();
    if (g.log_fd >= 0)
        close(g.log_fd);
    g.log_fd = -1;
    free(g.log_path);
    g.log_path = NULL;
    clear_faults();
    free(g.ring);
    g.ring = NULL;
    g.ring_n = g.ring_next = 0;
    unlock();
}
