/*
 * p11shim: a fault-injecting PKCS#11 2.40 module for hsmprov's tests.
 *
 * p11shim.so wraps a real module (env P11SHIM_TARGET, default SoftHSM2) and
 * exports only C_GetFunctionList (and the p11shim_* API below).  Each of the
 * 68 functions of its list counts the call, consults the fault plan, sleeps
 * if a delay is set, then forwards (C_GetFunctionList returns the shim's own
 * list).  A planned failure wins over everything else and is not forwarded.
 * Session handles seen by the caller are the shim's own (never reused, also
 * not across fork), mapped to the real module's.  Every call is recorded and
 * checked online for interleaved operations (see DESIGN.md section 2).
 * C_Initialize arguments are forwarded as given, and the real module's answer
 * (CKR_CRYPTOKI_ALREADY_INITIALIZED included) is returned as is.
 *
 * Tests reach the control API with dlsym() on the same path the provider
 * loads (dlopen(path, RTLD_NOW | RTLD_NOLOAD) returns the already loaded copy);
 * p11shim_api_load() below does that in one call.
 *
 * fork(): the child starts with a clean shim (pthread_atfork): no sessions
 * (the parent's handles return CKR_SESSION_HANDLE_INVALID), no faults, delays,
 * removal, counts, log or violations; the environment is read again at its
 * next C_Initialize.  The real module stays loaded; it sees the child's
 * C_Initialize (SoftHSM2 answers CKR_CRYPTOKI_ALREADY_INITIALIZED).
 *
 * Environment, read at the first C_Initialize (again in a child after fork):
 *   P11SHIM_TARGET=/path/module.so          the real module (read once, when it
 *                                           is loaded: at the first
 *                                           C_GetFunctionList or C_Initialize)
 *   P11SHIM_FAIL=C_Login:1:CKR_PIN_INCORRECT,C_Sign:3:0x30
 *                                           fn:nth:rv, as p11shim_fail_nth(),
 *                                           counted from that C_Initialize (which
 *                                           itself counts); rv is a CKR_ name or
 *                                           a number (0x30, 48); nth 0 = always
 *   P11SHIM_DELAY_US=C_Sign:200,*:10        fn:microseconds; "*" = every function
 *   P11SHIM_LOG=/path                       append one line per call:
 *                                           "C_Sign 3 CKR_OK pid=12 tid=14", with
 *                                           "-" for no session and " injected"
 *                                           after the rv of a planned failure
 *   P11SHIM_MAX_SESSIONS=N                  a token with N sessions to give:
 *                                           C_GetTokenInfo says so
 *                                           (ulMaxSessionCount), and
 *                                           C_OpenSession answers
 *                                           CKR_SESSION_COUNT while N are open
 *   P11SHIM_INIT_MISSES_TOKENS=N            the next N C_Initialize calls that
 *                                           succeed start a module without its
 *                                           tokens, as SoftHSM2 that read a
 *                                           token's files while another process
 *                                           rewrote them: until the next
 *                                           C_Initialize, C_GetSlotList lists no
 *                                           slot and every call naming one
 *                                           answers CKR_SLOT_ID_INVALID
 *   P11SHIM_CHECK=1                         at C_Finalize and at exit (if calls
 *                                           were made since), print the verdict
 *                                           "p11shim: pid N: interleaving check
 *                                           passed|FAILED: ..." to stderr and
 *                                           append it to $P11SHIM_LOG.verdict
 *   P11SHIM_GCM_ONE_PART=1                  AES-GCM in one call only, as NSS's
 *                                           softokn: after a C_EncryptInit or
 *                                           C_DecryptInit with CKM_AES_GCM, the
 *                                           Update and Final of that kind return
 *                                           CKR_OPERATION_NOT_INITIALIZED and the
 *                                           operation stays active (in the real
 *                                           module too); C_Encrypt/C_Decrypt work
 *   P11SHIM_HIDE_MECHS=CKM_SHA256_RSA_PKCS_PSS,0x1044
 *                                           mechanisms the module seems to lack:
 *                                           left out of C_GetMechanismList,
 *                                           CKR_MECHANISM_INVALID from
 *                                           C_GetMechanismInfo and from every
 *                                           C_*Init (names of hash-and-sign,
 *                                           raw RSA/ECDSA and digest mechanisms,
 *                                           or numbers)
 * Read at every C_GetFunctionList:
 *   P11SHIM_NULL_FUNCS=C_Sign,C_CopyObject  the function list returned has these
 *                                           entries NULL, as a module that
 *                                           lacks them (C_GetFunctionList
 *                                           itself cannot be removed)
 * Bad entries are reported on stderr and ignored.
 */
#ifndef P11SHIM_H
#define P11SHIM_H

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One recorded call (see p11shim_get_log). */
struct p11shim_call {
    unsigned long seq;         /* global call number, 1-based, never reset */
    const char *fn;            /* "C_Sign"; static storage */
    CK_SESSION_HANDLE session; /* shim session handle, 0 for slot-level calls */
    long tid;                  /* gettid() of the caller */
    CK_RV rv;                  /* what the caller got */
    int injected;              /* 1 if rv came from the fault plan */
};

/*
 * Fail the nth call (1-based, counted from now) of fn ("C_Sign") with rv,
 * without forwarding it; nth = 0 fails every call until p11shim_clear().
 * If the injected failure ends an operation that is active in the real module
 * (per the PKCS#11 rules below), the shim ends it there too, into a scratch
 * buffer, so that the module and the caller agree.  Returns 0, or -1 if fn is
 * not a PKCS#11 2.40 function name.
 */
int p11shim_fail_nth(const char *fn, unsigned long nth, CK_RV rv);

/* Remove every planned failure and every delay. */
void p11shim_clear(void);

/*
 * Every session open now becomes invalid: later calls on those handles return
 * CKR_SESSION_HANDLE_INVALID.  The real sessions are closed (after any call in
 * flight on them returns), so the real module drops the login when its last
 * session closes, as a token reset would; SoftHSM2 then also drops its object
 * handles, so the caller must log in and find its keys again.
 */
void p11shim_invalidate_sessions(void);

/*
 * The token forgets the login: calls the real C_Logout on every present slot.
 * Until the next successful CKU_USER C_Login through the shim, a key-using
 * init (C_SignInit, C_DecryptInit, C_EncryptInit, C_VerifyInit, the Recover
 * inits, C_DigestKey, C_WrapKey, C_UnwrapKey, C_DeriveKey) that the module
 * refuses with CKR_OBJECT_HANDLE_INVALID or CKR_KEY_HANDLE_INVALID returns
 * CKR_USER_NOT_LOGGED_IN, as on a token whose object handles survive logout.
 * SoftHSM2 itself drops the handles of private objects at logout: after the
 * new login they stay invalid there, and the caller must find the keys again.
 */
void p11shim_logout(void);

/*
 * removed != 0: every slot looks empty.  C_GetSlotList(CK_TRUE) lists none,
 * C_GetSlotInfo clears CKF_TOKEN_PRESENT, C_GetTokenInfo, C_OpenSession,
 * C_GetMechanismList/Info and C_InitToken return CKR_TOKEN_NOT_PRESENT, and
 * calls on sessions opened before return CKR_DEVICE_REMOVED (the real sessions
 * are closed: login and object handles are lost as with invalidation), and
 * C_CloseAllSessions returns CKR_OK.  removed = 0: the token is back; the old
 * handles stay invalid (CKR_SESSION_HANDLE_INVALID), new sessions work.
 */
void p11shim_remove_token(int removed);

/*
 * down != 0: the connection to a remote token is lost, as p11-kit-client.so's
 * when its server dies: every call but C_Initialize and C_Finalize returns
 * CKR_DEVICE_ERROR (the real sessions are closed), and so does C_Initialize
 * while the server is down; each such call first writes to a pipe whose
 * reader is gone, which raises SIGPIPE in the calling thread, as the
 * client's write to its dead server does.  down = 0: the server is back, but the calls
 * still fail until the caller starts again: C_Finalize, then C_Initialize
 * (before C_Finalize it answers CKR_CRYPTOKI_ALREADY_INITIALIZED); after
 * that, everything works, with new sessions and a new login.
 */
void p11shim_lose_connection(int down);

/* Sleep us microseconds before forwarding each call of fn (NULL = every
 * function that has no delay of its own), outside the shim's lock and while
 * the call counts as in flight on its session; us = 0 removes it.  Returns 0,
 * or -1 for an unknown fn. */
int p11shim_delay_us(const char *fn, unsigned us);

/*
 * Returns 0 if no violation was seen since load / p11shim_reset_log(), else 1;
 * why (if not NULL) gets a description: the number of violations and the
 * first few.  Violations, per session and per operation kind (sign, verify,
 * encrypt, decrypt, digest, find):
 *  - an XInit while that kind is active, or any XInit that returns
 *    CKR_OPERATION_ACTIVE from the module (an injected one is not counted);
 *  - an Update, Final, one-shot call or C_FindObjects(Final) with no active
 *    operation of its kind;
 *  - two calls in flight on one session at once from different threads
 *    (C_CloseAllSessions and C_Finalize count as calls on every session they
 *    close).
 * An operation ends with: C_Sign/C_Encrypt/C_Decrypt/C_Digest/C_SignRecover/
 * C_VerifyRecover and C_XFinal unless they return CKR_BUFFER_TOO_SMALL or are
 * a successful size query (NULL output buffer); C_Verify and C_VerifyFinal
 * always; any Update returning an error other than CKR_BUFFER_TOO_SMALL;
 * C_FindObjectsFinal (C_FindObjects errors do not end a search: the caller
 * must still call C_FindObjectsFinal); closing the session.
 */
int p11shim_check_interleaving(char *why, size_t whylen);

/* Calls of fn since load / p11shim_reset_log(); fn NULL = all functions. */
unsigned long p11shim_call_count(const char *fn);

/* Forget the call log, the counts and the violations (operation state and
 * sessions are kept). */
void p11shim_reset_log(void);

/* Copy up to max of the most recent calls (the shim keeps the last 16384),
 * oldest first; returns how many were copied. */
size_t p11shim_get_log(struct p11shim_call *out, size_t max);

/* Sessions opened through the shim and not closed or invalidated. */
unsigned long p11shim_open_sessions(void);

/* Sessions closed (by the caller) while an operation was active on them. */
unsigned long p11shim_closed_active(void);

/* "CKR_PIN_INCORRECT", or NULL for a value the shim does not know. */
const char *p11shim_rv_name(CK_RV rv);

/* ---- convenience for tests: the API through dlsym ---------------------- */

struct p11shim_api {
    int (*fail_nth)(const char *fn, unsigned long nth, CK_RV rv);
    void (*clear)(void);
    void (*invalidate_sessions)(void);
    void (*logout)(void);
    void (*remove_token)(int removed);
    int (*delay_us)(const char *fn, unsigned us);
    int (*check_interleaving)(char *why, size_t whylen);
    unsigned long (*call_count)(const char *fn);
    void (*reset_log)(void);
    size_t (*get_log)(struct p11shim_call *out, size_t max);
    unsigned long (*open_sessions)(void);
    const char *(*rv_name)(CK_RV rv);
    void (*lose_connection)(int down);
    unsigned long (*closed_active)(void);
};

/* Fill api from handle (dlopen() of p11shim.so, for example with RTLD_NOLOAD
 * once the provider loaded it).  Returns 0, or -1 if a symbol is missing. */
static inline int p11shim_api_load(void *handle, struct p11shim_api *api)
{
    static const char *const names[] = {
        "p11shim_fail_nth",
        "p11shim_clear",
        "p11shim_invalidate_sessions",
        "p11shim_logout",
        "p11shim_remove_token",
        "p11shim_delay_us",
        "p11shim_check_interleaving",
        "p11shim_call_count",
        "p11shim_reset_log",
        "p11shim_get_log",
        "p11shim_open_sessions",
        "p11shim_rv_name",
        "p11shim_lose_connection",
        "p11shim_closed_active",
    };
    void *syms[sizeof(names) / sizeof(names[0])];
    size_t i;

    if (handle == NULL)
        return -1;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((syms[i] = dlsym(handle, names[i])) == NULL)
            return -1;
    /* POSIX: a dlsym() result may be used as a function pointer. */
    memcpy(&api->fail_nth, &syms[0], sizeof(void *));
    memcpy(&api->clear, &syms[1], sizeof(void *));
    memcpy(&api->invalidate_sessions, &syms[2], sizeof(void *));
    memcpy(&api->logout, &syms[3], sizeof(void *));
    memcpy(&api->remove_token, &syms[4], sizeof(void *));
    memcpy(&api->delay_us, &syms[5], sizeof(void *));
    memcpy(&api->check_interleaving, &syms[6], sizeof(void *));
    memcpy(&api->call_count, &syms[7], sizeof(void *));
    memcpy(&api->reset_log, &syms[8], sizeof(void *));
    memcpy(&api->get_log, &syms[9], sizeof(void *));
    memcpy(&api->open_sessions, &syms[10], sizeof(void *));
    memcpy(&api->rv_name, &syms[11], sizeof(void *));
    memcpy(&api->lose_connection, &syms[12], sizeof(void *));
    memcpy(&api->closed_active, &syms[13], sizeof(void *));
    return 0;
}

#ifdef __cplusplus
}
#endif

#endif
