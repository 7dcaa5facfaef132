#include "p11_module.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_token.h"

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int p11_debug_enabled;
_Thread_local unsigned p11_call_depth;
static atomic_uint fork_gen;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

/* Modules loaded in this process, for the exit handler. */
static pthread_mutex_t loaded_lock = PTHREAD_MUTEX_INITIALIZER;
static p11_module *loaded[8];
static atomic_int exiting;

/* Runs at exit() before the destructors of the modules we loaded (it is
 * registered after their dlopen, and exit handlers run in reverse). A module
 * such as SoftHSM2 tears itself down in its own destructors, long before
 * OpenSSL's exit handler unloads providers; by then calling into it crashes.
 * So finalise here while it is alive, and touch it no more afterwards. */
static void at_exit(void)
{
    atomic_store(&exiting, 1);
    pthread_mutex_lock(&loaded_lock);
    for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++) {
        p11_module *m = loaded[i];

        if (m == NULL)
            continue;
        /* Waits for an initialisation still running on another thread. */
        pthread_mutex_lock(&m->lock);
        if (m->owns_init && atomic_load(&m->ready) &&
            atomic_load(&m->ready_fork_gen) == atomic_load(&fork_gen))
            P11_CALL(m, C_Finalize, NULL);
        atomic_store(&m->ready, 0);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&loaded_lock);
}

static void reset_module_locks(void)
{
    pthread_mutex_init(&loaded_lock, NULL);
    for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++)
        if (loaded[i] != NULL) {
            pthread_mutex_init(&loaded[i]->lock, NULL);
            p11_tokens_reset_locks(loaded[i]);
        }
}

int p11_process_exiting(void)
{
    return atomic_load(&exiting);
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
    fprintf(stderr, "hsmprov: %s\n", line);
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
    const char *name;

    if (!p11_debug_enabled)
        return rv;
    name = p11_rv_name(rv);
    if (name != NULL)
        p11_debug("%s -> %s", call, name);
    else
        p11_debug("%s -> 0x%lx", call, (unsigned long)rv);
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
    return p11_trace("C_SessionCancel", m->session_cancel(h, flags[kind]));
}

CK_RV p11_module_load(const char *path, const char *init_args, p11_module **out)
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
    m->path = strdup(path);
    m->init_args = init_args != NULL ? strdup(init_args) : NULL;
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
    find_session_cancel(m);
    p11_debug("loaded %s%s", path, m->session_cancel ? " (has C_SessionCancel)" : "");
    remember_loaded(m, 1);
    *out = m;
    return CKR_OK;
err:
    p11_module_free(m);
    return rv;
}

/* Called with m->lock held. */
static CK_RV initialise_here(p11_module *m, int after_fork)
{
    CK_C_INITIALIZE_ARGS args = {0};
    CK_RV rv;

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
    int after_fork;
    CK_RV rv;
    p11_failure failure;
};

static void *init_thread(void *arg)
{
    struct init_job *job = arg;
    const p11_failure *f;

    job->rv = initialise_here(job->m, job->after_fork);
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
static CK_RV initialise(p11_module *m, int after_fork)
{
    struct init_job job = {m, after_fork, CKR_GENERAL_ERROR, {0}};
    pthread_t th;

    if (pthread_create(&th, NULL, init_thread, &job) != 0)
        return initialise_here(m, after_fork);
    pthread_join(th, NULL);
    if (job.rv != CKR_OK && job.failure.call != NULL)
        p11_fail(job.failure.rv, job.failure.call, "%s", job.failure.what);
    return job.rv;
}

CK_RV p11_module_ready(p11_module *m)
{
    unsigned fg = atomic_load(&fork_gen);
    CK_RV rv = CKR_OK;

    if (atomic_load_explicit(&m->ready, memory_order_acquire) &&
        atomic_load(&m->ready_fork_gen) == fg)
        return CKR_OK;

    pthread_mutex_lock(&m->lock);
    if (atomic_load(&exiting)) {
        /* exit() has begun: the module is being torn down. */
        rv = p11_fail(CKR_CRYPTOKI_NOT_INITIALIZED, "C_Initialize",
                      "module %s: the process is exiting", m->path);
    } else if (!atomic_load(&m->ready) || atomic_load(&m->ready_fork_gen) != fg) {
        int after_fork = atomic_load(&m->ready) && atomic_load(&m->ready_fork_gen) != fg;

        rv = initialise(m, after_fork);
        if (rv == CKR_OK) {
            /* Every session and object handle from before is now dead. */
            atomic_fetch_add(&m->gen, 1);
            p11_tokens_forget_sessions(m);
            atomic_store(&m->ready_fork_gen, fg);
            atomic_store_explicit(&m->ready, 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rv;
}

void p11_module_free(p11_module *m)
{
    if (m == NULL)
        return;
    remember_loaded(m, 0);
    if (atomic_load(&exiting)) {
        /* Finalised by at_exit(); the module's code may already be torn
         * down, so neither sessions nor dlclose. */
        m->fl = NULL;
        p11_tokens_free(m);
    } else {
        p11_tokens_free(m);
        if (m->fl != NULL && m->owns_init && atomic_load(&m->ready) &&
            atomic_load(&m->ready_fork_gen) == atomic_load(&fork_gen))
            P11_CALL(m, C_Finalize, NULL);
        if (m->dl != NULL)
            dlclose(m->dl);
    }
    pthread_mutex_destroy(&m->lock);
    free(m->path);
    free(m->init_args);
    free(m);
}
