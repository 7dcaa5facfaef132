#include "p11_module.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <dlfcn.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int p11_debug_enabled;
_Thread_local unsigned p11_call_depth;
static atomic_uint fork_gen;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

/* Modules loaded in this process, for the exit handler. */
static pthread_mutex_t loaded_lock = PTHREAD_MUTEX_INITIALIZER;
static p11_module *loaded[8];
atomic_int p11_exiting;
_Thread_local CK_RV p11_call_refused_rv;

/* How long exit() waits for calls still inside the modules. A token call
 * takes milliseconds; one that takes longer (a PIN pad, a lost network HSM)
 * must not hold the process up for ever: the module is then left
 * unfinalised, which PKCS#11 allows, rather than finalised under a caller. */
#define EXIT_WAIT_MS 2000

/* A thread refused because exit() has begun would go back to the
 * application and into OpenSSL while OpenSSL's own exit handler frees it
 * (a crash that is not ours, but is the process's). Other threads therefore
 * wait here for the process to end, up to EXIT_PARK_MS after exit() began
 * in all (however many calls are refused), and only then fail. Never the
 * thread that runs exit(): its later exit handlers go on at once. */
#define EXIT_PARK_MS 1000

/* Written before p11_exiting is set, read after it is seen. */
static pthread_t exit_thread;
static struct timespec park_until;

static int calls_in_flight(void)
{
    for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++)
        if (loaded[i] != NULL && atomic_load(&loaded[i]->inflight) != 0)
            return 1;
    return 0;
}

/* Runs at exit() before the destructors of the modules we loaded (it is
 * registered after their dlopen, and exit handlers run in reverse). A module
 * such as SoftHSM2 tears itself down in its own destructors, long before
 * OpenSSL's exit handler unloads providers; by then calling into it crashes.
 * Other threads keep running meanwhile. So: no new call enters a module from
 * now on (p11_call_enter), the calls already inside are waited for, up to
 * EXIT_WAIT_MS in all, and only a module with no call inside is finalised. */
static void at_exit(void)
{
    struct timespec tick = {0, 1000000};
    int waited_ms = 0;
    Dl_info self;

    /* OpenSSL's exit handler unloads this provider later on, while other
     * threads may still be in its code (parked below, or on their way out
     * of a module call): keep it mapped until the process is gone. */
    if (dladdr((void *)at_exit, &self) != 0 && self.dli_fname != NULL)
        (void)dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    exit_thread = pthread_self();
    clock_gettime(CLOCK_MONOTONIC, &park_until);
    park_until.tv_sec += EXIT_PARK_MS / 1000;
    atomic_store(&p11_exiting, 1);
    pthread_mutex_lock(&loaded_lock);
    /* A module that calls exit() itself, from inside one of our calls,
     * would wait for itself: nothing is finalised then. */
    while (p11_call_depth == 0 && calls_in_flight() && waited_ms < EXIT_WAIT_MS) {
        nanosleep(&tick, NULL);
        waited_ms++;
    }
    for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++) {
        p11_module *m = loaded[i];
        unsigned busy;

        if (m == NULL)
            continue;
        busy = p11_call_depth != 0 ? 1 : atomic_load(&m->inflight);
        if (busy != 0) {
            p11_debug("exit: %u call%s still inside %s after %d ms: not finalised", busy,
                      busy == 1 ? "" : "s", m->path, waited_ms);
            continue;
        }
        /* Busy: an initialisation is running on another thread; its next
         * call is refused, and an unfinalised module is allowed. */
        if (pthread_mutex_trylock(&m->lock) != 0)
            continue;
        if (m->owns_init && atomic_load(&m->ready) &&
            atomic_load(&m->ready_fork_gen) == atomic_load(&fork_gen)) {
            p11_err_mark();
            p11_err_pop(p11_trace("C_Finalize", m->fl->C_Finalize(NULL)));
        }
        atomic_store(&m->ready, 0);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&loaded_lock);
}

static void park_while_exiting(void)
{
    struct timespec now;

    if (pthread_equal(pthread_self(), exit_thread))
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    while (now.tv_sec < park_until.tv_sec ||
           (now.tv_sec == park_until.tv_sec && now.tv_nsec < park_until.tv_nsec)) {
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &park_until, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    }
}

int p11_call_refuse(p11_module *m, const char *fn, int missing)
{
    atomic_fetch_sub(&m->inflight, 1);
    if (missing) {
        p11_call_refused_rv = CKR_FUNCTION_NOT_SUPPORTED;
        p11_failure_note(
            CKR_FUNCTION_NOT_SUPPORTED, fn,
            "module %s does not implement %s (no entry in its function list)", m->path,
            fn);
    } else {
        park_while_exiting();
        p11_call_refused_rv = CKR_CRYPTOKI_NOT_INITIALIZED;
        p11_failure_note(CKR_CRYPTOKI_NOT_INITIALIZED, fn,
                         "%s not called: the process is exiting and module %s is being "
                         "finalised",
                         fn, m->path);
    }
    if (p11_debug_enabled)
        p11_trace(fn, p11_call_refused_rv);
    return 1;
}

static void reset_module_locks(void)
{
    pthread_mutex_init(&loaded_lock, NULL);
    for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++)
        if (loaded[i] != NULL) {
            /* The parent's calls in flight are not the child's to wait for
             * at its exit. */
            atomic_store(&loaded[i]->inflight, 0);
            pthread_mutex_init(&loaded[i]->lock, NULL);
            pthread_mutex_init(&loaded[i]->lost_lock, NULL);
            if (loaded[i]->token_hooks != NULL)
                loaded[i]->token_hooks->reset_locks(loaded[i]);
        }
}

int p11_process_exiting(void)
{
    return atomic_load(&p11_exiting);
}

static void remember_loaded(p11_module *m, int add)
{
    static int registered;

    pthread_mutex_lock(&loaded_lock);
    for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++) {
        if (add && loaded[i] == NULL) {
            loaded[i] = m;
            break;
        }
        if (!add && loaded[i] == m)
            loaded[i] = NULL;
    }
    if (add && !registered) {
        registered = 1;
        atexit(at_exit);
    }
    pthread_mutex_unlock(&loaded_lock);
}

static void reset_module_locks(void);
static void module_destroy(p11_module *m);

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
    /* A parent thread may have held these at fork time; in the child it
     * never will release them. Nothing else runs in the child yet. */
    reset_module_locks();
}

static void process_init(void)
{
    const char *d = getenv("HSMPROV_DEBUG");

    p11_debug_enabled = d != NULL && *d != '\0' && strcmp(d, "0") != 0;
    pthread_atfork(NULL, NULL, on_fork_child);
}

unsigned p11_fork_generation(void)
{
    return atomic_load(&fork_gen);
}

void p11_debug(const char *fmt, ...)
{
    char raw[512], line[512];
    va_list ap;

    if (!p11_debug_enabled)
        return;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    /* One line per event, whatever the text from outside holds. */
    p11_escape_controls(line, sizeof(line), raw);
    fprintf(stderr, "hsmprov: %s [pid %ld]\n", line, (long)getpid());
}

void p11_transient_pause(unsigned attempt)
{
    long ms = 20;

    for (unsigned i = 1; i < attempt && ms < 1000; i++)
        ms *= 3;
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000 * 1000};

    nanosleep(&pause, NULL);
}

int p11_module_is_local(const char *path)
{
    static const char *const local[] = {"libsofthsm2.", "libsoftokn3."};
    char *real = realpath(path, NULL);
    const char *base;
    int is = 0;

    if (real == NULL)
        return 0;
    base = strrchr(real, '/');
    base = base != NULL ? base + 1 : real;
    for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++)
        if (strncmp(base, local[i], strlen(local[i])) == 0)
            is = 1;
    free(real);
    return is;
}

/* Whether p11_sigpipe_block() blocked SIGPIPE, and the mask it replaced. */
static _Thread_local int sigpipe_blocked;
static _Thread_local sigset_t sigpipe_saved;

/* Three system calls per outermost module call (block, consume, restore).
 * On a virtual machine with SoftHSM2, where a P-256 signature costs about
 * 45 us in the token, they cost 13% of hsmprov's signing rate at one thread
 * (bench/README.md): hence no guard for the local software tokens. Any other
 * module is guarded: one behind p11-kit's proxy may be a remote one, and a
 * vendor's client library may talk to its HSM over the network. A module
 * that reconnects by itself may succeed after the write that raised
 * SIGPIPE, so the check runs whatever the call answered. */
void p11_sigpipe_block(void)
{
    sigset_t pipe;

    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    /* Blocked already: the application handles it; leave it alone. */
    sigpipe_blocked = pthread_sigmask(SIG_BLOCK, &pipe, &sigpipe_saved) == 0 &&
                      !sigismember(&sigpipe_saved, SIGPIPE);
}

void p11_sigpipe_restore(void)
{
    static const struct timespec now = {0, 0};
    sigset_t pipe;
    int saved_errno = errno;

    if (!sigpipe_blocked)
        return;
    sigpipe_blocked = 0;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    /* A SIGPIPE pending now was raised by the module's write in this call
     * (one pending before the block would have been delivered, or dropped
     * if ignored): consumed, never delivered. */
    while (sigtimedwait(&pipe, NULL, &now) == SIGPIPE)
        ;
    pthread_sigmask(SIG_SETMASK, &sigpipe_saved, NULL);
    errno = saved_errno;
}

void p11_err_mark(void)
{
    ERR_set_mark();
}

CK_RV p11_err_pop(CK_RV rv)
{
    ERR_pop_to_mark();
    return rv;
}

CK_RV p11_trace(const char *call, CK_RV rv)
{
    char buf[P11_RV_TEXT_MAX];

    if (!p11_debug_enabled)
        return rv;
    p11_debug("%s -> %s", call, p11_rv_text(rv, buf));
    return rv;
}

/* The PKCS#11 3.0 interface, which p11-kit's 2.40 header does not declare:
 * the 3.0 function list is the 2.40 one followed by these. */
typedef struct {
    CK_UTF8CHAR *name;
    void *functions;
    CK_FLAGS flags;
} p11_interface30;

struct p11_function_list30 {
    CK_FUNCTION_LIST v2;
    void (*get_interface_list)(void);
    void (*get_interface)(void);
    void (*login_user)(void);
    CK_RV (*session_cancel)(CK_SESSION_HANDLE, CK_FLAGS);
};

typedef CK_RV (*get_interface_fn)(CK_UTF8CHAR *, CK_VERSION *, p11_interface30 **,
                                  CK_FLAGS);

static void find_session_cancel(p11_module *m)
{
    get_interface_fn get = (get_interface_fn)dlsym(m->dl, "C_GetInterface");
    CK_VERSION v30 = {3, 0};
    p11_interface30 *iface = NULL;
    struct p11_function_list30 *fl;

    if (get == NULL || get((CK_UTF8CHAR *)"PKCS 11", &v30, &iface, 0) != CKR_OK ||
        iface == NULL || iface->functions == NULL)
        return;
    fl = iface->functions;
    if (fl->v2.version.major >= 3)
        m->session_cancel = fl->session_cancel;
}

CK_RV p11_session_cancel(p11_module *m, CK_SESSION_HANDLE h, int kind)
{
    static const CK_FLAGS flags[] = {CKF_SIGN, CKF_VERIFY, CKF_ENCRYPT, CKF_DECRYPT,
                                     CKF_DIGEST};

    if (m->session_cancel == NULL || kind < 0 || kind > 4)
        return CKR_FUNCTION_NOT_SUPPORTED;
    if (p11_call_enter(m, "C_SessionCancel", 0))
        return p11_call_refused_rv;
    return p11_call_done(
        m, p11_err_pop(p11_trace("C_SessionCancel", m->session_cancel(h, flags[kind]))));
}

/* What hsmprov cannot work without: starting the module, finding tokens and
 * keys, sessions. A module that lacks one of these is refused at load, by
 * name. Every other function it calls (C_Login, C_CopyObject, C_GetOperationState,
 * the sign, verify, encrypt, decrypt and digest families, ...) may be missing:
 * P11_CALL never calls a NULL entry, and only what needs it fails, with
 * CKR_FUNCTION_NOT_SUPPORTED naming the function and the module. */
#define REQUIRED_FUNCTIONS(X)                                                            \
    X(C_Initialize)                                                                      \
    X(C_Finalize)                                                                        \
    X(C_GetInfo)                                                                         \
    X(C_GetSlotList)                                                                     \
    X(C_GetSlotInfo)                                                                     \
    X(C_GetTokenInfo)                                                                    \
    X(C_OpenSession)                                                                     \
    X(C_CloseSession)                                                                    \
    X(C_FindObjectsInit)                                                                 \
    X(C_FindObjects)                                                                     \
    X(C_FindObjectsFinal)                                                                \
    X(C_GetAttributeValue)

static CK_RV check_functions(p11_module *m)
{
#define X(fn)                                                                            \
    if (m->fl->fn == NULL)                                                               \
        return p11_fail(P11_RV_MODULE_LOAD, "C_GetFunctionList",                         \
                        "module %s does not implement " #fn                              \
                        " (no entry in its function list), which hsmprov needs",         \
                        m->path);
    REQUIRED_FUNCTIONS(X)
#undef X
    return CKR_OK;
}

CK_RV p11_module_load(const char *path, const p11_module_settings *settings,
                      p11_module **out)
{
    CK_C_GetFunctionList get_list;
    p11_module *m;
    CK_RV rv;

    pthread_once(&process_once, process_init);
    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return CKR_HOST_MEMORY;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->lost_lock, NULL);
    m->path = strdup(path);
    m->init_args = settings->init_args != NULL ? strdup(settings->init_args) : NULL;
    m->pool_size = settings->pool_size;
    m->pool_timeout_ms = settings->pool_timeout_ms;
    m->pool_idle_ms = settings->pool_idle_ms;
    m->cache_keys = settings->cache_keys;
    m->key_check_ms = settings->key_check_ms;
    /* RTLD_LOCAL: the module's own symbols (and any OpenSSL it links) must not
     * resolve ours, nor ours its. */
    m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (m->dl == NULL) {
        rv = p11_fail(P11_RV_MODULE_LOAD, "dlopen", "cannot load PKCS#11 module %s: %s",
                      path, dlerror());
        goto err;
    }
    get_list = (CK_C_GetFunctionList)dlsym(m->dl, "C_GetFunctionList");
    if (get_list == NULL) {
        rv = p11_fail(P11_RV_MODULE_LOAD, "C_GetFunctionList",
                      "%s is not a PKCS#11 module: it has no C_GetFunctionList", path);
        goto err;
    }
    rv = get_list(&m->fl);
    if (rv != CKR_OK || m->fl == NULL) {
        rv = p11_fail(rv != CKR_OK ? rv : CKR_GENERAL_ERROR, "C_GetFunctionList",
                      "module %s", path);
        goto err;
    }
    if (m->fl->version.major != 2) {
        rv = p11_fail(P11_RV_MODULE_LOAD, "C_GetFunctionList",
                      "module %s offers an unsupported Cryptoki version %u.%u", path,
                      m->fl->version.major, m->fl->version.minor);
        goto err;
    }
    rv = check_functions(m);
    if (rv != CKR_OK)
        goto err;
    find_session_cancel(m);
    m->local = p11_module_is_local(path);
    p11_debug("loaded %s%s; SIGPIPE guard %s", path,
              m->session_cancel ? " (has C_SessionCancel)" : "",
              m->local ? "off (a local software token)" : "on");
    remember_loaded(m, 1);
    *out = m;
    return CKR_OK;
err:
    module_destroy(m);
    return rv;
}

/* Why a module is (re)initialised. */
enum { START_FIRST, START_AFTER_FORK, START_AFTER_LOSS, START_AGAIN };

/* Called with m->lock held. */
static CK_RV initialise_here(p11_module *m, int start)
{
    CK_C_INITIALIZE_ARGS args = {0};
    int after_fork = start == START_AFTER_FORK;
    CK_RV rv;

    if ((start == START_AFTER_LOSS || start == START_AGAIN) && m->owns_init) {
        /* A client module (p11-kit-client.so) connects at C_Initialize and
         * never again by itself, and a local one reads its token files only
         * then: end its state, whatever it answers. */
        P11_CALL(m, C_Finalize, NULL);
        m->owns_init = 0;
    }
    args.flags = CKF_OS_LOCKING_OK;
    args.pReserved = m->init_args;
    rv = P11_CALL(m, C_Initialize, &args);
    m->can_lock = 1;
    if (rv == CKR_CANT_LOCK) {
        /* The module cannot lock for us: initialise it without threading
         * support and let the pool serialise everything (pool size 1). */
        args.flags = 0;
        rv = P11_CALL(m, C_Initialize, &args);
        m->can_lock = 0;
    }
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        if (after_fork && m->owns_init) {
            /* The child inherited the parent's initialised module state: start
             * it afresh, the parent's sessions are not ours to use. */
            P11_CALL(m, C_Finalize, NULL);
            rv = P11_CALL(m, C_Initialize, &args);
        } else {
            /* Someone else in this process initialised it: share it, and
             * leave finalising to them. */
            m->owns_init = 0;
            rv = CKR_OK;
            goto info;
        }
    }
    if (rv != CKR_OK)
        return p11_fail(rv, "C_Initialize", "module %s", m->path);
    m->owns_init = 1;
info:
    rv = P11_CALL(m, C_GetInfo, &m->info);
    if (rv != CKR_OK)
        return p11_fail(rv, "C_GetInfo", "module %s", m->path);
    return CKR_OK;
}

struct init_job {
    p11_module *m;
    int start;
    CK_RV rv;
    p11_failure failure;
};

static void *init_thread(void *arg)
{
    struct init_job *job = arg;
    const p11_failure *f;

    job->rv = initialise_here(job->m, job->start);
    f = p11_last_failure();
    if (f != NULL)
        job->failure = *f;
    /* This thread's OpenSSL error queue dies with it. */
    OPENSSL_thread_stop();
    return NULL;
}

/* C_Initialize runs on a short-lived thread of its own: a module that uses
 * OpenSSL (SoftHSM2) queues OpenSSL errors while it starts, inside marks of
 * its own that a mark of ours cannot see past; that thread's error queue
 * dies with it, so the caller's queue stays as it was. */
static CK_RV initialise(p11_module *m, int start)
{
    struct init_job job = {m, start, CKR_GENERAL_ERROR, {0}};
    pthread_t th;

    if (pthread_create(&th, NULL, init_thread, &job) != 0)
        return initialise_here(m, start);
    pthread_join(th, NULL);
    if (job.rv != CKR_OK && job.failure.call != NULL)
        p11_fail(job.failure.rv, job.failure.call, "%s", job.failure.what);
    return job.rv;
}

/* A local module started again (after fork, in each worker of a server)
 * that lacks a token it listed before read the token's files while another
 * process rewrote them: it is started once more after a pause, at most this
 * many times. A token that really went (deleted) costs these restarts at
 * each start, then its calls answer CKR_SLOT_ID_INVALID. */
#define MISSED_TOKEN_RESTARTS 3

/* Called with m->lock held. */
static CK_RV initialise_checked(p11_module *m, int start)
{
    CK_RV rv = initialise(m, start);
    CK_SLOT_ID slot;

    if (start == START_FIRST || !m->local || m->token_hooks == NULL)
        return rv;
    for (unsigned attempt = 1;
         rv == CKR_OK && m->owns_init && attempt <= MISSED_TOKEN_RESTARTS &&
         m->token_hooks->token_missing(m, &slot);
         attempt++) {
        p11_debug("module %s started without slot %lu, which it listed before (its "
                  "token's files were being rewritten): starting it again",
                  m->path, (unsigned long)slot);
        p11_transient_pause(attempt);
        rv = initialise(m, START_AGAIN);
    }
    return rv;
}

/* Back-off between attempts to start a module that lost its connection. */
#define LOST_BACKOFF_MIN_MS 100
#define LOST_BACKOFF_MAX_MS 2000
/* How long a re-initialisation waits for other threads' calls to leave the
 * module (PKCS#11 leaves C_Finalize during other calls undefined; calls on
 * a lost connection fail fast). */
#define LOST_DRAIN_MS 1000

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drain_calls(p11_module *m)
{
    struct timespec tick = {0, 1000000};

    for (int i = 0; i < LOST_DRAIN_MS && p11_call_depth == 0 && atomic_load(&m->inflight);
         i++)
        nanosleep(&tick, NULL);
}

static unsigned next_backoff(unsigned ms)
{
    return ms == 0                         ? LOST_BACKOFF_MIN_MS
           : ms >= LOST_BACKOFF_MAX_MS / 2 ? LOST_BACKOFF_MAX_MS
                                           : ms * 2;
}

int p11_module_lost(p11_module *m, CK_SLOT_ID slot, unsigned gen)
{
    CK_SLOT_INFO si;
    long long now;
    CK_RV rv;

    /* A local module has no connection to lose. SoftHSM2's
     * CKR_GENERAL_ERROR while another process rewrites its token files is
     * a passing fault, and a slot it left out when it started is caught
     * when it starts (initialise_checked): starting it again here, under
     * the back-off meant for a server that is away, would cost every call. */
    if (m->fl == NULL || p11_process_exiting() || m->local)
        return 0;
    if (!atomic_load(&m->ready))
        return atomic_load(&m->lost);
    /* A token taken out of its reader leaves the slot there; a client that
     * lost its server cannot even describe it. */
    rv = P11_CALL(m, C_GetSlotInfo, slot, &si);
    if (rv == CKR_OK)
        return 0;
    now = now_ms();
    pthread_mutex_lock(&m->lost_lock);
    if (atomic_load(&m->gen) == gen && atomic_load(&m->ready)) {
        p11_debug("module %s cannot describe slot %lu (C_GetSlotInfo -> %s): "
                  "connection lost; it is started again at the next call",
                  m->path, (unsigned long)slot,
                  p11_rv_name(rv) != NULL ? p11_rv_name(rv) : "?");
        /* Lost again soon after it was started: the other end is not back
         * for good, so wait longer each time; a loss after a long healthy
         * run is retried at once. */
        if (now - m->started_ms < LOST_BACKOFF_MAX_MS) {
            m->backoff_ms = next_backoff(m->backoff_ms);
            m->retry_ms = now + m->backoff_ms;
        } else {
            m->backoff_ms = 0;
            m->retry_ms = 0;
        }
        atomic_store(&m->lost, 1);
        atomic_store(&m->ready, 0);
    }
    pthread_mutex_unlock(&m->lost_lock);
    return 1;
}

CK_RV p11_module_ready(p11_module *m)
{
    unsigned fg = atomic_load(&fork_gen);
    CK_RV rv = CKR_OK;

    if (atomic_load_explicit(&m->ready, memory_order_acquire) &&
        atomic_load(&m->ready_fork_gen) == fg)
        return CKR_OK;

    pthread_mutex_lock(&m->lock);
    if (atomic_load(&p11_exiting)) {
        /* exit() has begun: the module is being torn down. */
        rv = p11_fail(CKR_CRYPTOKI_NOT_INITIALIZED, "C_Initialize",
                      "module %s: the process is exiting", m->path);
    } else if (!atomic_load(&m->ready) || atomic_load(&m->ready_fork_gen) != fg) {
        int start = atomic_load(&m->ready) && atomic_load(&m->ready_fork_gen) != fg
                        ? START_AFTER_FORK
                    : atomic_load(&m->lost) ? START_AFTER_LOSS
                                            : START_FIRST;
        long long now = now_ms(), retry;

        pthread_mutex_lock(&m->lost_lock);
        retry = m->retry_ms;
        pthread_mutex_unlock(&m->lost_lock);
        if (start == START_AFTER_LOSS && now < retry) {
            /* Until it is back, each call fails at once, clearly. */
            rv = p11_fail(CKR_DEVICE_ERROR, "C_Initialize",
                          "module %s lost its connection to the token; next attempt to "
                          "start it again in %lld ms",
                          m->path, retry - now);
        } else {
            if (start == START_AFTER_LOSS)
                drain_calls(m);
            rv = initialise_checked(m, start);
            pthread_mutex_lock(&m->lost_lock);
            if (rv == CKR_OK) {
                /* Every session and object handle from before is now dead. */
                atomic_fetch_add(&m->gen, 1);
                m->started_ms = now_ms();
                atomic_store(&m->lost, 0);
            } else if (start == START_AFTER_LOSS) {
                m->backoff_ms = next_backoff(m->backoff_ms);
                m->retry_ms = now_ms() + m->backoff_ms;
                rv = p11_fail(rv, "C_Initialize",
                              "module %s lost its connection to the token and could not "
                              "start again; next attempt in %u ms",
                              m->path, m->backoff_ms);
            }
            pthread_mutex_unlock(&m->lost_lock);
            if (rv == CKR_OK) {
                if (m->token_hooks != NULL)
                    m->token_hooks->forget_sessions(m);
                atomic_store(&m->ready_fork_gen, fg);
                if (start == START_AFTER_LOSS)
                    p11_debug("module %s started again after its connection was lost",
                              m->path);
                atomic_store_explicit(&m->ready, 1, memory_order_release);
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rv;
}

/* Finalises (if ours to) and unloads a module no other thread can reach. */
static void module_destroy(p11_module *m)
{
    if (m->token_hooks != NULL)
        m->token_hooks->free_tokens(m);
    if (m->fl != NULL && m->owns_init && atomic_load(&m->ready) &&
        atomic_load(&m->ready_fork_gen) == atomic_load(&fork_gen))
        P11_CALL(m, C_Finalize, NULL);
    if (m->dl != NULL)
        dlclose(m->dl);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->lost_lock);
    free(m->path);
    free(m->init_args);
    free(m);
}

void p11_module_free(p11_module *m)
{
    if (m == NULL)
        return;
    if (atomic_load(&p11_exiting)) {
        /* OpenSSL's exit handler unloads providers while other threads may
         * still be in our code with this module's tokens, pools and keys,
         * and the module may be torn down already: the process is ending,
         * so keep everything as it is (still listed in loaded[], not a
         * leak) rather than free it under them. */
        return;
    }
    remember_loaded(m, 0);
    module_destroy(m);
}
