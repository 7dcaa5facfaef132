#include "p11_token.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_secmem.h"

#include <openssl/crypto.h>
#include <p11-kit/uri.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void trim_copy(char *dst, const unsigned char *src, size_t n)
{
    while (n > 0 && src[n - 1] == ' ')
        n--;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The default pool grows to the demand: one session per lease held at once
 * (a one-shot signature holds one for its two calls, a streaming context
 * from init to final). The cap is the token's own session limit where it
 * states one. SoftHSM2 and p11-kit's RPC say "effectively infinite"; there
 * the cap is 64 or 4 per CPU, whichever is more: beyond the Apache event
 * MPM's 25 threads per process and a 16-thread server, with room for cipher
 * streams that hold their session longer, while a runaway (a context leaked
 * per request) still meets a limit before it costs the token much (an idle
 * SoftHSM2 session takes about 0.3 KiB). The floor, kept open however long
 * it idles, is what the pool held before it grew: one session per CPU. */
#define P11_POOL_CAP_MIN 64u
#define P11_POOL_CAP_PER_CPU 4u
#define P11_POOL_CAP_MAX 4096u /* bounds the slot array a token's claim can ask for */

static void default_pool_bounds(const CK_TOKEN_INFO *info, unsigned idle_ms,
                                p11_pool_bounds *b)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = cpus > 0 ? (unsigned)cpus : 1;
    CK_ULONG max = info->ulMaxSessionCount;

    if (max == CK_EFFECTIVELY_INFINITE || max == CK_UNAVAILABLE_INFORMATION) {
        b->cap = n * P11_POOL_CAP_PER_CPU;
        if (b->cap < P11_POOL_CAP_MIN)
            b->cap = P11_POOL_CAP_MIN;
    } else {
        b->cap = max < P11_POOL_CAP_MAX ? (unsigned)max : P11_POOL_CAP_MAX;
    }
    if (b->cap > P11_POOL_CAP_MAX)
        b->cap = P11_POOL_CAP_MAX;
    b->floor = n < b->cap ? n : b->cap;
    b->idle_ms = idle_ms;
}

/* SoftHSM2 lists its tokens once, when it starts: one whose files it read
 * while another process rewrote them (a login rewrites the token's flags)
 * is left out until the module is started again, and every call naming its
 * slot answers CKR_SLOT_ID_INVALID. Workers of a server, each starting the
 * module after fork while the others log in, meet this. */
static int token_missing(p11_module *m, CK_SLOT_ID *slot)
{
    for (p11_token *t = m->tokens; t != NULL; t = t->next) {
        CK_SLOT_INFO si;

        if (P11_CALL(m, C_GetSlotInfo, t->slot, &si) == CKR_SLOT_ID_INVALID) {
            *slot = t->slot;
            return 1;
        }
    }
    return 0;
}

static const struct p11_token_hooks token_hooks = {
    p11_tokens_reset_locks,
    p11_tokens_forget_sessions,
    p11_tokens_free,
    token_missing,
};

/* The pool opened a session for t: see whether the token still has us
 * logged in (p11_pool_owner.opened). */
static void session_opened(void *owner, CK_SESSION_HANDLE h)
{
    p11_token_check_session(owner, h);
}

/* Called with m->lock held. Reuses the token record for a slot whose token is
 * the same one (label and serial), so pools and login survive a rescan. */
static p11_token *token_for_slot(p11_module *m, CK_SLOT_ID slot,
                                 const CK_TOKEN_INFO *info)
{
    p11_token *t;
    p11_pool_bounds b;

    for (t = m->tokens; t != NULL; t = t->next)
        if (t->slot == slot && memcmp(t->info.label, info->label, 32) == 0 &&
            memcmp(t->info.serialNumber, info->serialNumber, 16) == 0)
            return t; /* its info is read without locks: never rewritten */
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->m = m;
    t->slot = slot;
    t->info = *info;
    trim_copy(t->label, info->label, 32);
    trim_copy(t->serial, info->serialNumber, 16);
    pthread_mutex_init(&t->login_lock, NULL);
    pthread_mutex_init(&t->obj_lock, NULL);
    pthread_rwlock_init(&t->index_lock, NULL);
    /* pkcs11-pool-size: a fixed size. A module that cannot lock gets one
     * session: everything serialised. */
    b.timeout_ms = m->pool_timeout_ms;
    if (!m->can_lock || m->pool_size != 0) {
        b.cap = b.floor = m->can_lock ? m->pool_size : 1;
        b.idle_ms = 0;
    } else {
        default_pool_bounds(info, m->pool_idle_ms, &b);
    }
    {
        const p11_pool_owner owner = {m, slot, t->label, session_opened, t};

        t->pool = p11_pool_new_bounded(&owner, &b);
    }
    if (t->pool == NULL) {
        free(t);
        return NULL;
    }
    t->next = m->tokens;
    m->tokens = t;
    m->token_hooks = &token_hooks;
    p11_debug("token \"%s\" in slot %lu: pool of %u to %u sessions", t->label,
              (unsigned long)slot, b.floor, b.cap);
    return t;
}

/* What a scan met, for the message when no token matches. */
struct scan_seen {
    CK_ULONG slots;  /* slots with a token */
    CK_ULONG tokens; /* initialised tokens among them */
    /* The first slot that could not describe itself or its token, and the
     * module's answer: reported as it is, never as a token not present. */
    CK_RV failed_rv;
    const char *failed_call;
    CK_SLOT_ID failed_slot;
};

/* The slot's and its token's descriptions. A passing fault is asked again
 * once after a pause: CKR_GENERAL_ERROR (SoftHSM2 reading its token files
 * while another process's login rewrites them, as when a server's workers
 * start together), or CKR_SLOT_ID_INVALID for a slot the module listed a
 * moment ago (a module whose slots come and go, as readers are plugged). */
static CK_RV describe_slot(p11_module *m, CK_SLOT_ID slot, CK_SLOT_INFO *si,
                           CK_TOKEN_INFO *ti, const char **call)
{
    for (int attempt = 0;; attempt++) {
        CK_RV rv;

        *call = "C_GetSlotInfo";
        rv = P11_CALL(m, C_GetSlotInfo, slot, si);
        if (rv == CKR_OK) {
            *call = "C_GetTokenInfo";
            rv = P11_CALL(m, C_GetTokenInfo, slot, ti);
        }
        if ((rv != CKR_GENERAL_ERROR && rv != CKR_SLOT_ID_INVALID) || attempt > 0)
            return rv;
        p11_debug("slot %lu: %s answered %s; asking again", (unsigned long)slot, *call,
                  p11_rv_name(rv));
        p11_transient_pause(1);
    }
}

/* Visits every slot with an initialised token; stops when fn returns
 * non-zero. */
static CK_RV scan(p11_module *m, int (*fn)(void *arg, p11_token *t, CK_SLOT_INFO *si),
                  void *arg, struct scan_seen *seen)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0;
    CK_RV rv;

    rv = p11_module_ready(m);
    if (rv != CKR_OK)
        return rv;
    rv = P11_CALL(m, C_GetSlotList, CK_TRUE, NULL, &n);
    if (rv != CKR_OK)
        return p11_fail(rv, "C_GetSlotList", "module %s", m->path);
    if (n > 0) {
        slots = calloc(n, sizeof(*slots));
        if (slots == NULL)
            return CKR_HOST_MEMORY;
        rv = P11_CALL(m, C_GetSlotList, CK_TRUE, slots, &n);
        if (rv != CKR_OK) {
            free(slots);
            return p11_fail(rv, "C_GetSlotList", "module %s", m->path);
        }
    }
    if (seen != NULL)
        seen->slots = n;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        CK_SLOT_INFO si;
        p11_token *t;
        const char *call;
        int stop;

        rv = describe_slot(m, slots[i], &si, &ti, &call);
        if (rv != CKR_OK) {
            /* One slot that fails does not end a search over the others. A
             * token that went away meanwhile is simply not there. */
            if (seen != NULL && seen->failed_rv == CKR_OK &&
                rv != CKR_TOKEN_NOT_PRESENT && rv != CKR_DEVICE_REMOVED &&
                rv != CKR_SLOT_ID_INVALID) {
                seen->failed_rv = rv;
                seen->failed_call = call;
                seen->failed_slot = slots[i];
            }
            continue;
        }
        /* A blank token (SoftHSM2 always offers one; a card reader may hold
         * a blank card) has no objects and refuses sessions with
         * CKR_TOKEN_NOT_RECOGNIZED: never a candidate, and never the reason
         * a search over the other tokens fails. */
        if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
            p11_debug("slot %lu: token not initialised, skipped",
                      (unsigned long)slots[i]);
            continue;
        }
        if (seen != NULL)
            seen->tokens++;
        pthread_mutex_lock(&m->lock);
        t = token_for_slot(m, slots[i], &ti);
        pthread_mutex_unlock(&m->lock);
        if (t == NULL) {
            free(slots);
            return CKR_HOST_MEMORY;
        }
        stop = fn(arg, t, &si);
        if (stop)
            break;
    }
    free(slots);
    return CKR_OK;
}

struct find_arg {
    const p11_uri *uri;
    p11_token *found;
};

static int match_one(void *arg, p11_token *t, CK_SLOT_INFO *si)
{
    struct find_arg *fa = arg;

    if (!p11_uri_matches_token(fa->uri, t->slot, &t->info, si, &t->m->info))
        return 0;
    fa->found = t;
    return 1;
}

/* No token matches uri. A module that reached no token at all says so: a
 * remote module (p11-kit-client.so) whose server cannot be reached starts
 * fine and lists no slot, and "no token matches" alone would hide that. */
static CK_RV no_match(p11_module *m, const p11_uri *uri, const struct scan_seen *seen)
{
    char lib[33];

    if (seen->failed_rv != CKR_OK)
        return p11_fail(
            seen->failed_rv, seen->failed_call,
            "no token of module %s matches %s, and slot %lu could not describe "
            "%s%s",
            m->path, uri->shown, (unsigned long)seen->failed_slot,
            strcmp(seen->failed_call, "C_GetSlotInfo") == 0 ? "itself" : "its token",
            seen->failed_rv == CKR_GENERAL_ERROR ? " (asked twice)" : "");
    if (seen->slots == 0) {
        trim_copy(lib, m->info.libraryDescription, 32);
        return p11_fail(CKR_TOKEN_NOT_PRESENT, "C_GetSlotList",
                        "no token of module %s matches %s: the module reached no token "
                        "at all (no slot with a token; its C_GetInfo says \"%s\"); a "
                        "remote module (p11-kit-client.so) looks like this when its "
                        "server cannot be reached",
                        m->path, uri->shown, lib);
    }
    if (seen->tokens == 0)
        return p11_fail(CKR_TOKEN_NOT_PRESENT, "C_GetTokenInfo",
                        "no token of module %s matches %s: none of its %lu token%s is "
                        "initialised",
                        m->path, uri->shown, (unsigned long)seen->slots,
                        seen->slots == 1 ? "" : "s");
    return p11_fail(CKR_TOKEN_NOT_PRESENT, "C_GetTokenInfo",
                    "no token of module %s matches %s", m->path, uri->shown);
}

CK_RV p11_token_find(p11_module *m, const p11_uri *uri, p11_token **out)
{
    struct find_arg fa = {uri, NULL};
    struct scan_seen seen = {0};
    CK_RV rv;

    *out = NULL;
    rv = p11_uri_check_module(uri, m->path);
    if (rv != CKR_OK)
        return rv;
    rv = scan(m, match_one, &fa, &seen);
    if (rv != CKR_OK)
        return rv;
    if (fa.found == NULL)
        return no_match(m, uri, &seen);
    *out = fa.found;
    return CKR_OK;
}

struct list_arg {
    p11_token **v;
    size_t n, cap;
    int oom;
};

static int collect(void *arg, p11_token *t, CK_SLOT_INFO *si)
{
    struct list_arg *la = arg;

    if (la->n == la->cap) {
        size_t cap = la->cap ? la->cap * 2 : 4;
        p11_token **v = realloc(la->v, cap * sizeof(*v));

        if (v == NULL) {
            la->oom = 1;
            return 1;
        }
        la->v = v;
        la->cap = cap;
    }
    la->v[la->n++] = t;
    return 0;
}

struct match_list_arg {
    const p11_uri *uri;
    struct list_arg list;
};

static int collect_matching(void *arg, p11_token *t, CK_SLOT_INFO *si)
{
    struct match_list_arg *ma = arg;

    if (!p11_uri_matches_token(ma->uri, t->slot, &t->info, si, &t->m->info))
        return 0;
    return collect(&ma->list, t, si);
}

CK_RV p11_token_list_matching(p11_module *m, const p11_uri *uri, p11_token ***out,
                              size_t *n)
{
    struct match_list_arg ma = {uri, {0}};
    struct scan_seen seen = {0};
    CK_RV rv;

    *out = NULL;
    *n = 0;
    rv = p11_uri_check_module(uri, m->path);
    if (rv == CKR_OK)
        rv = scan(m, collect_matching, &ma, &seen);
    if (rv == CKR_OK && ma.list.oom)
        rv = CKR_HOST_MEMORY;
    if (rv == CKR_OK && ma.list.n == 0)
        rv = no_match(m, uri, &seen);
    if (rv != CKR_OK) {
        free(ma.list.v);
        return rv;
    }
    *out = ma.list.v;
    *n = ma.list.n;
    return CKR_OK;
}

CK_RV p11_token_with_mechanism(p11_module *m, CK_MECHANISM_TYPE mech, p11_token **out)
{
    p11_token **v = NULL;
    size_t n = 0;
    CK_RV rv = p11_token_list(m, &v, &n);

    *out = NULL;
    for (size_t i = 0; rv == CKR_OK && i < n && *out == NULL; i++)
        if ((v[i]->info.flags & CKF_TOKEN_INITIALIZED) && p11_token_has_mech(v[i], mech))
            *out = v[i];
    free(v);
    if (rv != CKR_OK)
        return rv;
    if (*out != NULL)
        return CKR_OK;
    return n == 0 ? p11_fail(CKR_TOKEN_NOT_PRESENT, "C_GetSlotList",
                             "module %s has no token", m->path)
                  : p11_fail(CKR_MECHANISM_INVALID, "C_GetMechanismList",
                             "no token of module %s offers %s", m->path,
                             p11_mech_name(mech));
}

CK_RV p11_token_list(p11_module *m, p11_token ***out, size_t *n)
{
    struct list_arg la = {0};
    CK_RV rv = scan(m, collect, &la, NULL);

    if (rv == CKR_OK && la.oom)
        rv = CKR_HOST_MEMORY;
    if (rv != CKR_OK) {
        free(la.v);
        return rv;
    }
    *out = la.v;
    *n = la.n;
    return CKR_OK;
}

int p11_token_matches(p11_token *t, const p11_uri *uri)
{
    CK_SLOT_INFO si;

    if (P11_CALL(t->m, C_GetSlotInfo, t->slot, &si) != CKR_OK)
        return 0;
    return p11_uri_matches_token(uri, t->slot, &t->info, &si, &t->m->info);
}

CK_RV p11_token_count_selected(p11_token *t, const p11_uri *uri, size_t *n, int *has_t)
{
    p11_token **v = NULL;
    CK_RV rv;

    *n = 0;
    *has_t = 0;
    if (uri != NULL) {
        rv = p11_token_list_matching(t->m, uri, &v, n);
        if (rv == CKR_TOKEN_NOT_PRESENT) {
            /* Gone since the caller found t: it selects nothing now. */
            p11_failure_clear();
            return CKR_OK;
        }
    } else {
        rv = p11_token_list(t->m, &v, n);
    }
    {
        size_t want_pin = 0;

        /* A token without CKF_LOGIN_REQUIRED is never sent a PIN: it does
         * not make a PIN's owner ambiguous. */
        for (size_t i = 0; rv == CKR_OK && i < *n; i++) {
            if (v[i] == t)
                *has_t = 1;
            if (v[i] == t || (v[i]->info.flags & CKF_LOGIN_REQUIRED))
                want_pin++;
        }
        *n = want_pin;
    }
    free(v);
    return rv;
}

int p11_token_needs_login(p11_token *t)
{
    unsigned gen = atomic_load(&t->m->gen);
    int needs;

    if (!(t->info.flags & CKF_LOGIN_REQUIRED))
        return 0;
    pthread_mutex_lock(&t->login_lock);
    needs = atomic_load(&t->login_gen) != gen;
    pthread_mutex_unlock(&t->login_lock);
    return needs;
}

CK_RV p11_token_find_init(p11_token *t, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl,
                          CK_ULONG n)
{
    CK_RV rv;

    pthread_rwlock_rdlock(&t->index_lock);
    rv = P11_CALL(t->m, C_FindObjectsInit, h, tmpl, n);
    pthread_rwlock_unlock(&t->index_lock);
    return rv;
}

void p11_token_generating(p11_token *t)
{
    pthread_rwlock_wrlock(&t->index_lock);
}

void p11_token_generated(p11_token *t)
{
    pthread_rwlock_unlock(&t->index_lock);
}

void p11_token_check_session(p11_token *t, CK_SESSION_HANDLE h)
{
    CK_SESSION_INFO si;

    if (!(t->info.flags & CKF_LOGIN_REQUIRED) ||
        atomic_load(&t->login_gen) != atomic_load(&t->m->gen))
        return;
    if (P11_CALL(t->m, C_GetSessionInfo, h, &si) == CKR_OK &&
        (si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION)) {
        p11_debug("token \"%s\" logged us out: all its sessions were lost", t->label);
        p11_token_lost(t, 1);
    }
}

void p11_token_lost(p11_token *t, int sessions)
{
    /* The epoch moves first: whoever gets a session reopened after this
     * finds the new epoch and looks its objects up again. */
    atomic_fetch_add(&t->epoch, 1);
    if (sessions)
        p11_pool_invalidate(t->pool);
    p11_token_forget_login(t);
}

void p11_token_forget_login(p11_token *t)
{
    /* Lock-free: a loss is noticed even inside C_Login's own session
     * opening (do_login holds login_lock there). A login that completes
     * just after this may mark us logged in again; if the token disagrees,
     * the next call says CKR_USER_NOT_LOGGED_IN and we log in again. */
    atomic_store(&t->login_gen, 0);
}

static int mech_cmp(const void *a, const void *b)
{
    CK_MECHANISM_TYPE x = *(const CK_MECHANISM_TYPE *)a,
                      y = *(const CK_MECHANISM_TYPE *)b;

    return x < y ? -1 : x > y;
}

/* Whether the mechanism list is known; read from the token at the first
 * question. A token that cannot answer is asked again next time. */
static int mechs_load(p11_token *t)
{
    if (atomic_load_explicit(&t->mechs_known, memory_order_acquire))
        return 1;
    pthread_mutex_lock(&t->login_lock);
    if (t->mechs == NULL) {
        CK_ULONG n = 0;
        CK_MECHANISM_TYPE *v;

        if (P11_CALL(t->m, C_GetMechanismList, t->slot, NULL, &n) == CKR_OK &&
            (v = calloc(n + 1, sizeof(*v))) != NULL) {
            if (P11_CALL(t->m, C_GetMechanismList, t->slot, v, &n) == CKR_OK) {
                qsort(v, n, sizeof(*v), mech_cmp);
                t->mechs = v;
                t->n_mechs = n;
                atomic_store_explicit(&t->mechs_known, 1, memory_order_release);
            } else {
                free(v);
            }
        }
    }
    pthread_mutex_unlock(&t->login_lock);
    return atomic_load_explicit(&t->mechs_known, memory_order_acquire);
}

int p11_token_has_mech(p11_token *t, CK_MECHANISM_TYPE mech)
{
    if (!mechs_load(t))
        return 1; /* cannot tell: let the operation itself answer */
    return bsearch(&mech, t->mechs, t->n_mechs, sizeof(mech), mech_cmp) != NULL;
}

CK_RV p11_token_check_mech(p11_token *t, CK_MECHANISM_TYPE mech)
{
    const char *name;

    if (p11_token_has_mech(t, mech))
        return CKR_OK;
    name = p11_mech_name(mech);
    if (name != NULL)
        return p11_fail(CKR_MECHANISM_INVALID, "C_GetMechanismList",
                        "token \"%s\" does not offer %s", t->label, name);
    return p11_fail(CKR_MECHANISM_INVALID, "C_GetMechanismList",
                    "token \"%s\" does not offer mechanism 0x%lx", t->label,
                    (unsigned long)mech);
}

void p11_tokens_forget_sessions(p11_module *m)
{
    /* Other threads may be using these tokens right now (a fork child's
     * threads racing on the first use): reset state under the locks; the
     * locks themselves were made fresh in the fork child handler. */
    for (p11_token *t = m->tokens; t != NULL; t = t->next) {
        p11_pool_reset(t->pool);
        pthread_mutex_lock(&t->login_lock);
        atomic_store(&t->login_gen, 0);
        pthread_mutex_unlock(&t->login_lock);
        pthread_mutex_lock(&t->obj_lock);
        t->obj_session_gen = 0;
        pthread_mutex_unlock(&t->obj_lock);
    }
}

void p11_tokens_pool_stats(p11_module *m, p11_pool_stat *sum)
{
    memset(sum, 0, sizeof(*sum));
    pthread_mutex_lock(&m->lock);
    for (p11_token *t = m->tokens; t != NULL; t = t->next) {
        p11_pool_stat st;

        p11_pool_stats(t->pool, &st);
        sum->sessions += st.sessions;
        sum->peak += st.peak;
        sum->in_use += st.in_use;
        sum->limit += st.limit;
        sum->cap += st.cap;
    }
    pthread_mutex_unlock(&m->lock);
}

void p11_tokens_reset_locks(p11_module *m)
{
    for (p11_token *t = m->tokens; t != NULL; t = t->next) {
        pthread_mutex_init(&t->login_lock, NULL);
        pthread_mutex_init(&t->obj_lock, NULL);
        pthread_rwlock_init(&t->index_lock, NULL);
        p11_pool_reset_locks(t->pool);
        p11_secmem_relock(t->pin);
        p11_secmem_relock(t->bad_pin);
    }
}

void p11_tokens_free(p11_module *m)
{
    p11_token *t = m->tokens, *next;

    for (; t != NULL; t = next) {
        next = t->next;
        p11_pool_free(t->pool);
        p11_secmem_free(t->pin);
        p11_secmem_free(t->bad_pin);
        free(t->mechs);
        if (t->obj_session_gen != 0 && m->fl != NULL &&
            t->obj_session_gen == atomic_load(&m->gen) && atomic_load(&m->ready))
            P11_CALL(m, C_CloseSession, t->obj_session);
        pthread_mutex_destroy(&t->obj_lock);
        pthread_rwlock_destroy(&t->index_lock);
        pthread_mutex_destroy(&t->login_lock);
        free(t);
    }
    m->tokens = NULL;
}
