/* A PKCS#11 module: dlopen, C_GetFunctionList, C_Initialize, fork, tracing.
 *
 * Every C_* call in hsmprov goes through P11_CALL, which is where calls are
 * traced (HSMPROV_DEBUG=1) and where a fault-injection module would be seen. */
#ifndef P11_MODULE_H
#define P11_MODULE_H

#include "p11_failure.h"
#include "p11_pkcs11.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct p11_token p11_token;

typedef struct p11_module {
    char *path;
    void *dl;
    CK_FUNCTION_LIST *fl;
    char *init_args; /* pReserved for C_Initialize, e.g. NSS-style module args */

    pthread_mutex_t lock; /* guards (re)initialisation and the token list */
    /* Generation of the module's state: bumped at each C_Initialize we make
     * (first use, after fork, after token loss). Session and object handles
     * remember the generation they belong to; older ones are dead. */
    atomic_uint gen;
    atomic_uint ready_fork_gen; /* fork generation the current state belongs to */
    atomic_int ready;
    int owns_init; /* we called C_Initialize successfully, so we finalise */
    int can_lock;  /* module accepted CKF_OS_LOCKING_OK */
    CK_INFO info;
    /* The token layer above (p11_token.c) keeps its tokens here and sets
     * token_hooks with its first token (under lock): the module calls back
     * through them and never depends on the layer that depends on it. */
    p11_token *tokens;
    const struct p11_token_hooks *token_hooks;
    /* PKCS#11 3.0 C_SessionCancel, when the module offers it (C_GetInterface). */
    CK_RV (*session_cancel)(CK_SESSION_HANDLE, CK_FLAGS);
    /* A software token whose tokens are local files (p11_module_is_local):
     * it writes to no socket (no SIGPIPE guard) and has no connection to
     * lose (never re-initialised as lost: p11_module_lost). */
    int local;
    /* Calls into the module running now, on any thread: the exit handler
     * finalises the module only once none is left (PKCS#11 leaves
     * C_Finalize during other calls undefined). */
    atomic_uint inflight;
    /* The module lost its connection to the token (a remote token whose
     * server went away, p11_module_lost): the next p11_module_ready()
     * finalises and initialises it again, but not before retry_ms (ms of
     * CLOCK_MONOTONIC) when the last attempt failed or its connection was
     * lost again soon after: a server that stays away costs each call a
     * clear error, not a reconnection. lost_lock guards what follows and is
     * taken alone, or inside lock (never the other way round: a loss is
     * noticed with token locks held). */
    atomic_int lost;
    pthread_mutex_t lost_lock;
    unsigned backoff_ms;  /* 0: the next loss is retried at once */
    long long retry_ms;   /* no attempt before */
    long long started_ms; /* the last successful C_Initialize */

    /* From p11_module_settings at load; never written afterwards. */
    unsigned pool_size;       /* 0: grow to the demand (p11_token.c) */
    unsigned pool_timeout_ms; /* 0: wait for a free session without limit */
    unsigned pool_idle_ms;    /* a grown pool's idle sessions close; 0: never */
    int cache_keys;           /* use session-object copies of private keys */
    unsigned key_check_ms;    /* confirm a key's token object at most this often */
} p11_module;

struct p11_token_hooks {
    void (*reset_locks)(p11_module *m);     /* fork child, one thread */
    void (*forget_sessions)(p11_module *m); /* module re-initialised */
    void (*free_tokens)(p11_module *m);     /* module freed */
    /* Right after a new start, under m->lock: whether a token known from
     * before has no slot in it (*slot: which). */
    int (*token_missing)(p11_module *m, CK_SLOT_ID *slot);
};

/* How the provider's configuration asks the module to be driven. */
typedef struct p11_module_settings {
    const char *init_args; /* pReserved for C_Initialize (NSS-style), or NULL */
    unsigned pool_size;    /* sessions per token; 0: the default */
    unsigned pool_timeout_ms;
    unsigned pool_idle_ms;
    int cache_keys;
    unsigned key_check_ms;
} p11_module_settings;

/* Loads the module (no C_Initialize yet: that happens at first use, so that a
 * module which itself uses OpenSSL is not initialised while OpenSSL is still
 * loading its configuration). */
CK_RV p11_module_load(const char *path, const p11_module_settings *settings,
                      p11_module **out);
/* Makes sure the module is initialised in this process; after fork() the first
 * caller in the child re-initialises it (others wait). Cheap when ready. */
CK_RV p11_module_ready(p11_module *m);
/* Finalises (if we initialised it) and unloads. */
void p11_module_free(p11_module *m);

/* After a call on slot answered CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED,
 * CKR_GENERAL_ERROR or CKR_SLOT_ID_INVALID: whether the module itself, not
 * one token, is gone: it cannot tell about the slot any more (a remote
 * token's connection died, or the module was started while its server was
 * away and has no such slot). If so, and no one re-initialised it since
 * generation gen, it is marked lost: the next p11_module_ready()
 * re-initialises it, as after fork. Takes no lock but lost_lock. */
int p11_module_lost(p11_module *m, CK_SLOT_ID slot, unsigned gen);

/* C_SessionCancel of the operation kind running on h (a p11_op_kind);
 * CKR_FUNCTION_NOT_SUPPORTED when the module has none. */
CK_RV p11_session_cancel(p11_module *m, CK_SESSION_HANDLE h, int kind);

/* Set once exit() has begun: from then on no call reaches a module, and each
 * module is finalised once the calls already inside it have returned. */
int p11_process_exiting(void);

/* Incremented in the child at every fork(). */
unsigned p11_fork_generation(void);

/* Tracing of every PKCS#11 call. */
extern int p11_debug_enabled;
CK_RV p11_trace(const char *call, CK_RV rv);
void p11_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Calls into a module running on this thread now. A module that uses
 * OpenSSL itself (SoftHSM2) comes back into this provider from inside a call
 * when hsmprov's implementation wins its fetch (an AES it asks OpenSSL for,
 * with default_properties = ?provider=hsmprov): such a nested use must not
 * call the module again, which would deadlock (DESIGN §2.11). */
extern _Thread_local unsigned p11_call_depth;

/* Modules that use OpenSSL themselves (SoftHSM2) leave entries on the
 * calling thread's OpenSSL error queue, even when they succeed; a stale entry
 * makes TLS fail a later, unrelated step. Each call is bracketed by an error
 * mark and whatever the module queued is dropped: our own failure text
 * (p11_fail) is what gets reported. */
void p11_err_mark(void);
CK_RV p11_err_pop(CK_RV rv);

/* The entry check of every call. A call is counted in m->inflight before the
 * exit flag is read, and the exit handler sets the flag before it reads the
 * count (both sequentially consistent): either the call sees the flag and
 * never enters the module, or the handler sees the call and waits for it.
 * A function the module's list lacks (NULL) is never called either; both
 * refusals leave a note that the caller's p11_fail() for that call adds to
 * its text. */
extern atomic_int p11_exiting;
extern _Thread_local CK_RV p11_call_refused_rv;
int p11_call_refuse(p11_module *m, const char *fn, int missing);

/* A module that writes to a socket (p11-kit-client.so and every remote
 * token behind p11-kit's proxy) gets SIGPIPE when the other end died, which
 * kills a process that does not ignore it. Around the outermost call on a
 * thread SIGPIPE is blocked, and one the call raised is consumed before the
 * mask is restored; the module sees EPIPE and answers with an error. Done for
 * every module but the software tokens known to keep
 * their store in local files (p11_module_is_local). */
void p11_sigpipe_block(void);
/* The pause before retry number attempt (from 1) of a passing fault
 * (CKR_GENERAL_ERROR from a module that still answers: SoftHSM2 reading a
 * token file that another process is rewriting): 20 ms, then 60, then 180.
 * One 20 ms pause was too short on a loaded machine, where nginx's freshly
 * forked workers logging in at once still met the fault after it. The
 * recovery policy's P11_ACT_TRANSIENT, and token discovery, which runs
 * before there is a token record to recover. */
void p11_transient_pause(unsigned attempt);
/* Whether the module at path (links resolved) is one of those local software
 * tokens: SoftHSM2 (libsofthsm2) or NSS's softokn (libsoftokn3). */
int p11_module_is_local(const char *path);
void p11_sigpipe_restore(void);

static inline int p11_call_enter(p11_module *m, const char *fn, int missing)
{
    atomic_fetch_add(&m->inflight, 1);
    if (__builtin_expect(missing || atomic_load(&p11_exiting), 0))
        return p11_call_refuse(m, fn, missing);
    if (p11_call_depth++ == 0 && !m->local)
        p11_sigpipe_block();
    p11_err_mark();
    return 0;
}

static inline CK_RV p11_call_done(p11_module *m, CK_RV rv)
{
    if (--p11_call_depth == 0)
        p11_sigpipe_restore();
    atomic_fetch_sub(&m->inflight, 1);
    return rv;
}

#define P11_CALL(m, fn, ...)                                                             \
    (p11_call_enter((m), #fn, (m)->fl->fn == NULL)                                       \
         ? p11_call_refused_rv                                                           \
         : p11_call_done((m), p11_err_pop(p11_debug_enabled                              \
                                              ? p11_trace(#fn, (m)->fl->fn(__VA_ARGS__)) \
                                              : (m)->fl->fn(__VA_ARGS__))))

#endif
