/*
 * hsmbench: how fast hsmprov signs, encrypts and serves TLS handshakes,
 * measured against the token's own limit in the same run.
 *
 * Paths measured side by side:
 *   raw-token    C_SignInit + C_Sign straight on the PKCS#11 module (dlopen),
 *                one session per thread, the key as the token object;
 *   raw-session  the same with the key copied into a session object
 *                (C_CopyObject, CKA_TOKEN=FALSE), one copy per thread; for
 *                AES, a session object made from raw key bytes, which is
 *                what hsmprov must do with the key OpenSSL 3.0 hands it;
 *   hsmprov      EVP through the provider, key loaded by OSSL_STORE from a
 *                pkcs11: URI (or, for ciphers, fetched with provider=hsmprov);
 *   software     OpenSSL's default provider with a key of the same kind.
 *
 * The raw limit of a row is the faster of raw-token and raw-session; the
 * hsmprov row is reported as a fraction of it. Raw signing hashes in software
 * per operation, as the provider must, so the comparison is fair.
 *
 * Each figure is the median of --rounds rounds (min and max beside it). The
 * threads of a measurement start together on a barrier; each round is timed
 * with CLOCK_MONOTONIC from the earliest start to the latest finish. The
 * paths of a row take turns round by round, so that other load on the
 * machine weighs on all of them alike, and in round r thread i of every path
 * runs on the same CPU, so that CPUs of unequal speed do too.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>

/* Last: p11-kit's header defines short macros (value, count, params, ...). */
#include <p11-kit/pkcs11.h>

#define MSG_LEN 64
#define BUF_LEN 16384
#define MAX_THREADS 64
#define MAX_ROUNDS 101
#define MAX_RESULTS 512
#define ERRLEN 320

/* ------------------------------------------------------------------ */
/* Options                                                             */

static struct {
    const char *module;
    const char *token;
    const char *uri_base;
    char pin[64];
    int rounds;
    long long round_ns;
    int quick;
    int probe;
    int single_part; /* raw AES with one C_Encrypt, not update + final */
    int no_pin;      /* let the scheduler place the threads */
    /* Signing rows: raw-token becomes raw-session plus the hsmprov path's
     * EVP_DigestSignInit_ex before each signature (no EVP signature): what
     * the EVP layer costs a token signature, side effects included. */
    int raw_init;
    int cpus[CPU_SETSIZE], ncpus; /* the CPUs this process may run on */
    int threads[8], nthreads;
    int cthreads[8], ncthreads;
    int tthreads[8], ntthreads;
    int ithreads[8], nithreads; /* init rows; 0: the signing thread counts */
    int do_sign, do_cipher, do_tls;
    const char *csv;
    const char *algs, *paths;    /* comma lists: measure only these (profiling) */
    const char *hsm_unavailable; /* reason given by run.sh's probe */
} opt;

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hsmbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* Drains OpenSSL's error queue of this thread into buf (first two errors). */
static void ossl_err(char *buf, size_t len, const char *what)
{
    const char *data, *func;
    int flags, n = 0;
    unsigned long e;
    size_t off;

    off = (size_t)snprintf(buf, len, "%s", what);
    while ((e = ERR_get_error_all(NULL, NULL, &func, &data, &flags)) != 0) {
        char one[256];
        if (n++ >= 2 || off >= len)
            continue;
        ERR_error_string_n(e, one, sizeof(one));
        off += (size_t)snprintf(buf + off, len - off, ": %s%s%s", one,
                                (flags & ERR_TXT_STRING) && data && *data ? ": " : "",
                                (flags & ERR_TXT_STRING) && data ? data : "");
    }
    if (n == 0 && off < len)
        snprintf(buf + off, len - off, ": (no OpenSSL error)");
}

static const char *ckr_name(CK_RV rv)
{
    switch (rv) {
    case CKR_OK:
        return "CKR_OK";
    case CKR_ARGUMENTS_BAD:
        return "CKR_ARGUMENTS_BAD";
    case CKR_ATTRIBUTE_TYPE_INVALID:
        return "CKR_ATTRIBUTE_TYPE_INVALID";
    case CKR_BUFFER_TOO_SMALL:
        return "CKR_BUFFER_TOO_SMALL";
    case CKR_CRYPTOKI_ALREADY_INITIALIZED:
        return "CKR_CRYPTOKI_ALREADY_INITIALIZED";
    case CKR_DATA_LEN_RANGE:
        return "CKR_DATA_LEN_RANGE";
    case CKR_FUNCTION_FAILED:
        return "CKR_FUNCTION_FAILED";
    case CKR_GENERAL_ERROR:
        return "CKR_GENERAL_ERROR";
    case CKR_KEY_HANDLE_INVALID:
        return "CKR_KEY_HANDLE_INVALID";
    case CKR_KEY_TYPE_INCONSISTENT:
        return "CKR_KEY_TYPE_INCONSISTENT";
    case CKR_MECHANISM_INVALID:
        return "CKR_MECHANISM_INVALID";
    case CKR_MECHANISM_PARAM_INVALID:
        return "CKR_MECHANISM_PARAM_INVALID";
    case CKR_OBJECT_HANDLE_INVALID:
        return "CKR_OBJECT_HANDLE_INVALID";
    case CKR_OPERATION_ACTIVE:
        return "CKR_OPERATION_ACTIVE";
    case CKR_PIN_INCORRECT:
        return "CKR_PIN_INCORRECT";
    case CKR_SESSION_HANDLE_INVALID:
        return "CKR_SESSION_HANDLE_INVALID";
    case CKR_TOKEN_NOT_PRESENT:
        return "CKR_TOKEN_NOT_PRESENT";
    case CKR_USER_ALREADY_LOGGED_IN:
        return "CKR_USER_ALREADY_LOGGED_IN";
    case CKR_USER_NOT_LOGGED_IN:
        return "CKR_USER_NOT_LOGGED_IN";
    default:
        return "CKR_?";
    }
}

static int ckr_fail(char *err, const char *call, CK_RV rv)
{
    snprintf(err, ERRLEN, "%s: %s (0x%lx)", call, ckr_name(rv), (unsigned long)rv);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The PKCS#11 module, driven directly (the raw path)                  */

static CK_FUNCTION_LIST_PTR p11;
static CK_SLOT_ID slot;
static CK_SESSION_HANDLE main_session; /* kept open: keeps the login alive */
static int have_mech_eddsa;

static void p11_setup(void)
{
    CK_C_GetFunctionList getlist;
    CK_C_INITIALIZE_ARGS init = {0};
    CK_SLOT_ID slots[64];
    CK_ULONG nslots = 64, i;
    CK_RV rv;
    void *h;

    h = dlopen(opt.module, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        die("dlopen %s: %s", opt.module, dlerror());
    getlist = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
    if (getlist == NULL || getlist(&p11) != CKR_OK)
        die("%s: no C_GetFunctionList", opt.module);
    init.flags = CKF_OS_LOCKING_OK;
    rv = p11->C_Initialize(&init);
    /* hsmprov may have initialised the same module already: share it. */
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        die("C_Initialize: %s", ckr_name(rv));
    rv = p11->C_GetSlotList(CK_TRUE, slots, &nslots);
    if (rv != CKR_OK)
        die("C_GetSlotList: %s", ckr_name(rv));
    for (i = 0; i < nslots; i++) {
        CK_TOKEN_INFO ti;
        size_t n = strlen(opt.token);
        if (p11->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        if (n <= sizeof(ti.label) && memcmp(ti.label, opt.token, n) == 0 &&
            (n == sizeof(ti.label) || ti.label[n] == ' '))
            break;
    }
    if (i == nslots)
        die("no token labelled \"%s\" in %s", opt.token, opt.module);
    slot = slots[i];
    rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &main_session);
    if (rv != CKR_OK)
        die("C_OpenSession: %s", ckr_name(rv));
    rv = p11->C_Login(main_session, CKU_USER, (CK_UTF8CHAR_PTR)opt.pin, strlen(opt.pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        die("C_Login: %s", ckr_name(rv));
    {
        CK_MECHANISM_INFO mi;
        have_mech_eddsa = p11->C_GetMechanismInfo(slot, CKM_EDDSA, &mi) == CKR_OK &&
                          (mi.flags & CKF_SIGN);
    }
}

static CK_OBJECT_HANDLE p11_find(CK_OBJECT_CLASS cls, const char *label)
{
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
    CK_ULONG n = 0;

    if (p11->C_FindObjectsInit(main_session, tmpl, 2) != CKR_OK)
        return CK_INVALID_HANDLE;
    if (p11->C_FindObjects(main_session, &obj, 1, &n) != CKR_OK || n != 1)
        obj = CK_INVALID_HANDLE;
    p11->C_FindObjectsFinal(main_session);
    return obj;
}

/* Reads one attribute into a fresh buffer (caller frees). */
static unsigned char *p11_attr(CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type,
                               CK_ULONG *len)
{
    CK_ATTRIBUTE a = {type, NULL, 0};
    unsigned char *buf;

    if (p11->C_GetAttributeValue(main_session, obj, &a, 1) != CKR_OK ||
        a.ulValueLen == (CK_ULONG)-1)
        return NULL;
    buf = malloc(a.ulValueLen ? a.ulValueLen : 1);
    a.pValue = buf;
    if (p11->C_GetAttributeValue(main_session, obj, &a, 1) != CKR_OK) {
        free(buf);
        return NULL;
    }
    *len = a.ulValueLen;
    return buf;
}

/* ------------------------------------------------------------------ */
/* Keys                                                                */

enum { K_RSA, K_EC, K_ED, N_KEYS };

struct key {
    const char *label; /* token label; also the object= of the URI */
    CK_OBJECT_HANDLE priv;
    EVP_PKEY *pub;  /* public half read from the token, in the default provider */
    EVP_PKEY *hsm;  /* loaded through hsmprov by OSSL_STORE, or NULL */
    EVP_PKEY *soft; /* a software key of the same kind */
    char hsm_err[ERRLEN];
    char raw_err[ERRLEN]; /* why the raw path cannot use it, if it cannot */
};

static struct key keys[N_KEYS] = {
    [K_RSA] = {.label = "rsa"},
    [K_EC] = {.label = "ec"},
    [K_ED] = {.label = "ed25519"},
};

static CK_OBJECT_HANDLE aes_key = CK_INVALID_HANDLE;
static int hsm_loaded;
static char hsm_unavail[ERRLEN];

/* CKA_EC_POINT is a DER OCTET STRING; some modules return the bare point. */
static unsigned char *ec_point(CK_OBJECT_HANDLE pubobj, size_t *len)
{
    CK_ULONG n;
    unsigned char *der = p11_attr(pubobj, CKA_EC_POINT, &n), *out = NULL;
    const unsigned char *p = der;
    ASN1_OCTET_STRING *os;

    if (der == NULL)
        return NULL;
    os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)n);
    if (os != NULL && p == der + n) {
        *len = (size_t)ASN1_STRING_length(os);
        out = malloc(*len);
        memcpy(out, ASN1_STRING_get0_data(os), *len);
    } else {
        ERR_clear_error();
        *len = n;
        out = der;
        der = NULL;
    }
    ASN1_OCTET_STRING_free(os);
    free(der);
    return out;
}

static EVP_PKEY *pub_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *pp = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, "provider=default");
    EVP_PKEY *pk = NULL;

    if (ctx == NULL || pp == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, pp) <= 0)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(pp);
    OSSL_PARAM_BLD_free(bld);
    return pk;
}

/* The public half, read from the token's attributes: used to verify every
 * path's first signature and to build certificates, independently of
 * whatever the provider exports. */
static EVP_PKEY *token_pub(int k)
{
    struct key *key = &keys[k];
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    CK_OBJECT_HANDLE pubobj;
    EVP_PKEY *pk = NULL;

    if (k == K_RSA) {
        CK_ULONG nl, el;
        unsigned char *n = p11_attr(key->priv, CKA_MODULUS, &nl);
        unsigned char *e = p11_attr(key->priv, CKA_PUBLIC_EXPONENT, &el);
        BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL;
        BIGNUM *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
        if (bn && be) {
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn);
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be);
            pk = pub_from_params("RSA", bld);
            bld = NULL;
        }
        BN_free(bn);
        BN_free(be);
        free(n);
        free(e);
    } else if ((pubobj = p11_find(CKO_PUBLIC_KEY, key->label)) != CK_INVALID_HANDLE) {
        size_t len;
        unsigned char *pt = ec_point(pubobj, &len);
        if (pt != NULL && k == K_EC) {
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1",
                                            0);
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, len);
            pk = pub_from_params("EC", bld);
            bld = NULL;
        } else if (pt != NULL && k == K_ED) {
            pk = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", "provider=default", pt,
                                                len);
        }
        free(pt);
    }
    OSSL_PARAM_BLD_free(bld);
    return pk;
}

static EVP_PKEY *store_load(const char *uri, char *err)
{
    OSSL_STORE_CTX *sc;
    EVP_PKEY *pk = NULL;
    int guard = 0;

    sc = OSSL_STORE_open_ex(uri, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    if (sc == NULL) {
        ossl_err(err, ERRLEN, "OSSL_STORE_open");
        return NULL;
    }
    OSSL_STORE_expect(sc, OSSL_STORE_INFO_PKEY);
    while (pk == NULL && !OSSL_STORE_eof(sc) && guard++ < 64) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sc);
        if (info == NULL) {
            if (OSSL_STORE_error(sc))
                break;
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pk = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    if (pk == NULL)
        ossl_err(err, ERRLEN, "OSSL_STORE_load: no private key");
    OSSL_STORE_close(sc);
    return pk;
}

/* Software keys, and the token keys as hsmprov sees them. This runs before
 * the raw path touches the module, as in an application, where hsmprov is the
 * module's first user. */
static void keys_load(void)
{
    int k;

    for (k = 0; k < N_KEYS; k++) {
        struct key *key = &keys[k];
        char uri[512];

        if (k == K_RSA)
            key->soft = EVP_PKEY_Q_keygen(NULL, "provider=default", "RSA", (size_t)2048);
        else if (k == K_EC)
            key->soft = EVP_PKEY_Q_keygen(NULL, "provider=default", "EC", "P-256");
        else
            key->soft = EVP_PKEY_Q_keygen(NULL, "provider=default", "ED25519");
        if (key->soft == NULL)
            die("software key generation failed (%s)", key->label);

        if (!hsm_loaded) {
            snprintf(key->hsm_err, ERRLEN, "%s", hsm_unavail);
            continue;
        }
        snprintf(uri, sizeof(uri), "%s;object=%s;type=private", opt.uri_base, key->label);
        key->hsm = store_load(uri, key->hsm_err);
        if (key->hsm == NULL && opt.pin[0] != '\0') {
            /* The PIN normally comes from openssl.cnf; try it in the URI too. */
            char e2[ERRLEN];
            snprintf(uri, sizeof(uri), "%s;object=%s;type=private?pin-value=%s",
                     opt.uri_base, key->label, opt.pin);
            key->hsm = store_load(uri, e2);
        }
        ERR_clear_error();
    }
}

/* The token keys as the raw path sees them: handles and public halves. */
static void keys_find(void)
{
    int k;

    for (k = 0; k < N_KEYS; k++) {
        struct key *key = &keys[k];

        key->priv = p11_find(CKO_PRIVATE_KEY, key->label);
        if (key->priv == CK_INVALID_HANDLE) {
            snprintf(key->raw_err, ERRLEN, "no private key \"%s\" on the token",
                     key->label);
        } else if ((key->pub = token_pub(k)) == NULL) {
            char e[ERRLEN];
            ossl_err(e, sizeof(e), "");
            snprintf(key->raw_err, ERRLEN, "cannot read public key \"%s\"%.200s",
                     key->label, e);
        } else if (k == K_ED && !have_mech_eddsa) {
            snprintf(key->raw_err, ERRLEN, "token has no CKM_EDDSA");
        }
    }
    aes_key = p11_find(CKO_SECRET_KEY, "aes");
}

/* ------------------------------------------------------------------ */
/* The measuring machinery                                             */

enum { P_RAW_TOKEN, P_RAW_SESSION, P_HSMPROV, P_SOFTWARE, N_PATHS };
static const char *path_name[N_PATHS] = {"raw-token", "raw-session", "hsmprov",
                                         "software"};

struct worker;

struct bench_ops {
    /* Per thread, before the first round: open sessions, make contexts, run
     * one operation and check its result. Returns 1 on success. */
    int (*setup)(struct worker *w);
    int (*op)(struct worker *w); /* one timed operation */
    void (*teardown)(struct worker *w);
};

struct cell {
    const struct bench_ops *ops;
    const void *arg; /* what is measured: an algorithm descriptor */
    int path;
    int nthreads;
    pthread_barrier_t bar;
    atomic_int stop;
    int abort;
    struct worker *w;
};

struct worker {
    struct cell *c;
    int idx;
    pthread_t th;
    void *st; /* path state, owned by setup/teardown */
    uint64_t ops;
    long long t0, t1;
    int failed;
    char err[ERRLEN];
};

struct stats {
    int ok;
    double med, min, max;
    /* Each round's rate in the order the rounds ran: round r of every path
     * of a row falls in the same cycle of turns (measure_row). */
    double round[MAX_ROUNDS];
    char err[ERRLEN];
};

/* Puts the calling thread on CPU (k mod the allowed CPUs). On a shared host
 * the virtual CPUs need not be equally fast (one measured 30% slower than
 * the other here, for as long as a run); left to the scheduler, a path's
 * thread stays on whichever CPU it woke on, and a one-thread row compares
 * the CPUs, not the paths. */
static void pin(int k)
{
    cpu_set_t set;

    if (opt.no_pin || opt.ncpus < 2)
        return;
    CPU_ZERO(&set);
    CPU_SET(opt.cpus[k % opt.ncpus], &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    struct cell *c = w->c;
    int r;

    if (!c->ops->setup(w))
        w->failed = 1;
    pthread_barrier_wait(&c->bar); /* everyone set up */
    pthread_barrier_wait(&c->bar); /* main has decided whether to go on */
    if (c->abort)
        goto out;
    for (r = 0; r < opt.rounds; r++) {
        uint64_t n = 0;
        pin(w->idx + r);
        pthread_barrier_wait(&c->bar); /* round start: all threads together */
        w->t0 = now_ns();
        if (!w->failed) {
            /* At least one operation per round, however short the round. */
            do {
                if (!c->ops->op(w)) {
                    w->failed = 1;
                    break;
                }
                n++;
            } while (!atomic_load_explicit(&c->stop, memory_order_relaxed));
        }
        w->t1 = now_ns();
        w->ops = n;
        pthread_barrier_wait(&c->bar); /* round end */
    }
out:
    c->ops->teardown(w);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n-1] (n > 0); sorts v. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Starts a cell's threads and waits for their setup; on a setup failure the
 * threads are told to stop and s->err says why. */
static struct cell *cell_start(const struct bench_ops *ops, const void *arg, int path,
                               int nthreads, struct stats *s)
{
    struct cell *c = calloc(1, sizeof(*c));
    int i;

    c->ops = ops;
    c->arg = arg;
    c->path = path;
    c->nthreads = nthreads;
    c->w = calloc((size_t)nthreads, sizeof(*c->w));
    atomic_init(&c->stop, 0);
    pthread_barrier_init(&c->bar, NULL, (unsigned)nthreads + 1);
    for (i = 0; i < nthreads; i++) {
        c->w[i].c = c;
        c->w[i].idx = i;
        if (pthread_create(&c->w[i].th, NULL, worker_main, &c->w[i]) != 0)
            die("pthread_create failed");
    }
    pthread_barrier_wait(&c->bar);
    for (i = 0; i < nthreads; i++) {
        if (c->w[i].failed) {
            c->abort = 1;
            snprintf(s->err, sizeof(s->err), "%s", c->w[i].err);
            break;
        }
    }
    pthread_barrier_wait(&c->bar);
    return c;
}

/* One round: release the threads together, let them work for a round's
 * length, stop them; the rate is all operations over the time from the first
 * thread's start to the last one's end. */
static double cell_round(struct cell *c)
{
    struct timespec until;
    long long t, t0 = 0, t1 = 0;
    uint64_t total = 0;
    int i;

    atomic_store(&c->stop, 0);
    pthread_barrier_wait(&c->bar);
    t = now_ns() + opt.round_ns;
    until.tv_sec = (time_t)(t / 1000000000LL);
    until.tv_nsec = (long)(t % 1000000000LL);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
    atomic_store(&c->stop, 1);
    pthread_barrier_wait(&c->bar);
    for (i = 0; i < c->nthreads; i++) {
        if (i == 0 || c->w[i].t0 < t0)
            t0 = c->w[i].t0;
        if (i == 0 || c->w[i].t1 > t1)
            t1 = c->w[i].t1;
        total += c->w[i].ops;
    }
    return t1 > t0 ? (double)total * 1e9 / (double)(t1 - t0) : 0;
}

static void cell_finish(struct cell *c, double *rate, struct stats *s)
{
    int i;

    for (i = 0; i < c->nthreads; i++)
        pthread_join(c->w[i].th, NULL);
    for (i = 0; !c->abort && i < c->nthreads; i++) {
        if (c->w[i].failed) {
            c->abort = 1;
            snprintf(s->err, sizeof(s->err), "failed while measuring: %.280s",
                     c->w[i].err);
        }
    }
    if (!c->abort) {
        memcpy(s->round, rate, (size_t)opt.rounds * sizeof(double));
        s->ok = 1;
        s->med = median(rate, opt.rounds);
        s->min = rate[0];
        s->max = rate[opt.rounds - 1];
    }
    pthread_barrier_destroy(&c->bar);
    free(c->w);
    free(c);
}

/* Measures the paths of one row (an algorithm at a thread count) together,
 * those with want[p] == 1. Every path's threads are set up first; then the
 * rounds take turns path by path, the first path rotating, while the threads
 * of the other paths wait on their barriers. Whatever else the machine is
 * doing weighs on all paths alike, so the ratios between them stay fair. */
static void measure_row(const struct bench_ops *ops, const void *const *args,
                        int nthreads, const int *want, struct stats *s)
{
    struct cell *c[N_PATHS] = {0};
    double rate[N_PATHS][MAX_ROUNDS];
    int p, r, j;

    for (p = 0; p < N_PATHS; p++)
        if (want[p] == 1)
            c[p] = cell_start(ops, args[p], p, nthreads, &s[p]);
    for (r = 0; r < opt.rounds; r++) {
        for (j = 0; j < N_PATHS; j++) {
            p = (r + j) % N_PATHS;
            if (c[p] != NULL && !c[p]->abort)
                rate[p][r] = cell_round(c[p]);
        }
    }
    for (p = 0; p < N_PATHS; p++)
        if (c[p] != NULL)
            cell_finish(c[p], rate[p], &s[p]);
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

struct result {
    const char *section, *name, *unit;
    int path, threads;
    struct stats s;
    double limit, ratio, ref_ratio; /* 0 when not applicable */
};

/* Whether word is one of list's comma-separated items; a NULL list has all. */
static int in_list(const char *list, const char *word)
{
    size_t n = strlen(word);
    const char *p = list;

    if (list == NULL)
        return 1;
    while ((p = strstr(p, word)) != NULL) {
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return 1;
        p += n;
    }
    return 0;
}

static int wanted(const char *name, int path)
{
    return in_list(opt.algs, name) && in_list(opt.paths, path_name[path]);
}

static struct result results[MAX_RESULTS];
static int nresults;

static void record(const char *section, const char *name, const char *unit, int path,
                   int threads, const struct stats *s)
{
    struct result *r;

    if (nresults == MAX_RESULTS)
        die("too many results");
    r = &results[nresults++];
    r->section = section;
    r->name = name;
    r->unit = unit;
    r->path = path;
    r->threads = threads;
    r->s = *s;
    if (s->ok)
        fprintf(stderr, "  %-16s %-12s %2d thr  %10.1f %s\n", name, path_name[path],
                threads, s->med, unit);
    else
        fprintf(stderr, "  %-16s %-12s %2d thr  n/a: %s\n", name, path_name[path],
                threads, s->err);
}

/* The first result for name at threads on path (any path if path < 0). */
static struct result *find_result(const char *name, int path, int threads)
{
    int i;
    for (i = 0; i < nresults; i++)
        if (strcmp(results[i].name, name) == 0 && (path < 0 || results[i].path == path) &&
            results[i].threads == threads)
            return &results[i];
    return NULL;
}

static double med_of(const char *name, int path, int threads)
{
    struct result *r = find_result(name, path, threads);
    return r && r->s.ok ? r->s.med : 0;
}

static struct stats na(const char *fmt, ...)
{
    struct stats s = {0};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s.err, sizeof(s.err), fmt, ap);
    va_end(ap);
    return s;
}

/* Whether to measure path p of a row: 1 yes, 0 no because of why (then s
 * says so), -1 not at all (left out by --algs or --paths). */
static int plan(const char *name, int p, const char *why, struct stats *s)
{
    if (!wanted(name, p))
        return -1;
    if (why != NULL && why[0] != '\0') {
        *s = na("%s", why);
        return 0;
    }
    return 1;
}

/* Measures one row's planned paths together and records every path in it;
 * scale turns operations/s into the row's unit. */
static void row(const char *section, const char *name, const char *unit, double scale,
                const struct bench_ops *ops, const void *const *args, int threads,
                const int *want, struct stats *s)
{
    int p;

    measure_row(ops, args, threads, want, s);
    for (p = 0; p < N_PATHS; p++) {
        if (want[p] < 0)
            continue;
        s[p].med *= scale;
        s[p].min *= scale;
        s[p].max *= scale;
        for (int r = 0; r < opt.rounds; r++)
            s[p].round[r] *= scale;
        record(section, name, unit, p, threads, &s[p]);
    }
}

/* ------------------------------------------------------------------ */
/* Signing                                                             */

struct sign_alg {
    const char *name;
    const char *init_name; /* the row of EVP_DigestSignInit_ex alone */
    int key;
    CK_MECHANISM_TYPE mech;
    const char *md; /* NULL: pure EdDSA over the message */
    int padding;    /* RSA padding for the EVP paths */
};

static const struct sign_alg sign_algs[] = {
    {"RSA-PKCS1", "RSA-PKCS1/init", K_RSA, CKM_RSA_PKCS, "SHA256", RSA_PKCS1_PADDING},
    {"RSA-PSS", "RSA-PSS/init", K_RSA, CKM_RSA_PKCS_PSS, "SHA256", RSA_PKCS1_PSS_PADDING},
    {"ECDSA-P256", "ECDSA-P256/init", K_EC, CKM_ECDSA, "SHA256", 0},
    {"Ed25519", "Ed25519/init", K_ED, CKM_EDDSA, NULL, 0},
};
#define N_SIGN_ALGS (int)(sizeof(sign_algs) / sizeof(sign_algs[0]))

static const unsigned char sha256_digestinfo[19] = {
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

struct sign_st {
    CK_SESSION_HANDLE sess;
    CK_OBJECT_HANDLE key;
    int own_copy;
    EVP_MD *md; /* raw path: the host-side hash, fetched once */
    unsigned char msg[MSG_LEN];
    unsigned char sig[512];
    size_t siglen;
};

/* Opens this thread's session and picks the key: the token object, or (copy)
 * a session-object copy of it private to this thread. */
static int raw_open(struct worker *w, CK_OBJECT_HANDLE tokkey, int copy,
                    CK_SESSION_HANDLE *sess, CK_OBJECT_HANDLE *key, int *own_copy)
{
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE copy_tmpl[] = {{CKA_TOKEN, &no, sizeof(no)}};
    CK_RV rv;

    rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, sess);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_OpenSession", rv);
    *key = tokkey;
    *own_copy = 0;
    if (copy) {
        rv = p11->C_CopyObject(*sess, tokkey, copy_tmpl, 1, key);
        if (rv != CKR_OK)
            return ckr_fail(w->err, "C_CopyObject", rv);
        *own_copy = 1;
    }
    return 1;
}

/* raw-session for AES: what hsmprov must do with the raw key bytes OpenSSL
 * 3.0 hands a cipher: a sensitive, non-extractable, non-private session
 * object made from them (the attributes hsmprov uses). */
static int raw_open_aes(struct worker *w, const unsigned char *bytes,
                        CK_SESSION_HANDLE *sess, CK_OBJECT_HANDLE *key, int *own_copy)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},     {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_TOKEN, &no, sizeof(no)},       {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_ENCRYPT, &yes, sizeof(yes)},   {CKA_VALUE, (void *)bytes, 32},
    };
    CK_RV rv;

    rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, sess);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_OpenSession", rv);
    rv = p11->C_CreateObject(*sess, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), key);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_CreateObject", rv);
    *own_copy = 1;
    return 1;
}

static void raw_close(CK_SESSION_HANDLE sess, CK_OBJECT_HANDLE key, int own_copy)
{
    if (sess == CK_INVALID_HANDLE)
        return;
    if (own_copy)
        p11->C_DestroyObject(sess, key);
    p11->C_CloseSession(sess);
}

static void next_msg(unsigned char *msg)
{
    /* A different message every operation: a counter in the first bytes. */
    uint64_t n;
    memcpy(&n, msg, sizeof(n));
    n++;
    memcpy(msg, &n, sizeof(n));
}

static int sign_raw(struct worker *w)
{
    const struct sign_alg *a = w->c->arg;
    struct sign_st *st = w->st;
    CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_MECHANISM mech = {a->mech, NULL, 0};
    unsigned char in[sizeof(sha256_digestinfo) + 32];
    unsigned char *h = in + sizeof(sha256_digestinfo);
    CK_ULONG inlen, siglen = sizeof(st->sig);
    CK_BYTE_PTR data = in;
    unsigned int hl;
    CK_RV rv;

    next_msg(st->msg);
    if (a->md == NULL) { /* EdDSA signs the message itself */
        data = st->msg;
        inlen = MSG_LEN;
    } else {
        if (!EVP_Digest(st->msg, MSG_LEN, h, &hl, st->md, NULL))
            return ossl_err(w->err, ERRLEN, "EVP_Digest"), 0;
        if (a->mech == CKM_RSA_PKCS) {
            memcpy(in, sha256_digestinfo, sizeof(sha256_digestinfo));
            inlen = sizeof(in);
        } else {
            data = h;
            inlen = hl;
        }
    }
    if (a->mech == CKM_RSA_PKCS_PSS) {
        mech.pParameter = &pss;
        mech.ulParameterLen = sizeof(pss);
    }
    rv = p11->C_SignInit(st->sess, &mech, st->key);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_SignInit", rv);
    rv = p11->C_Sign(st->sess, data, inlen, st->sig, &siglen);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_Sign", rv);
    st->siglen = siglen;
    return 1;
}

/* A fresh context made ready to sign with pk: what a TLS server does before
 * each signature, and all of it on the host. */
static EVP_MD_CTX *sign_evp_init_with(struct worker *w, EVP_PKEY *pk)
{
    const struct sign_alg *a = w->c->arg;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;

    if (m != NULL && EVP_DigestSignInit_ex(m, &pc, a->md, NULL, NULL, pk, NULL) > 0 &&
        (a->padding == 0 || EVP_PKEY_CTX_set_rsa_padding(pc, a->padding) > 0) &&
        (a->padding != RSA_PKCS1_PSS_PADDING ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) > 0))
        return m;
    EVP_MD_CTX_free(m);
    ossl_err(w->err, ERRLEN, "EVP_DigestSignInit_ex");
    return NULL;
}

/* The same with the path's own key: the token key for hsmprov, else the
 * software key. */
static EVP_MD_CTX *sign_evp_init(struct worker *w)
{
    const struct sign_alg *a = w->c->arg;

    return sign_evp_init_with(w, w->c->path == P_HSMPROV ? keys[a->key].hsm
                                                         : keys[a->key].soft);
}

/* What a TLS server does per handshake: a fresh context, init, one-shot sign. */
static int sign_evp(struct worker *w)
{
    struct sign_st *st = w->st;
    EVP_MD_CTX *m;
    int ok;

    next_msg(st->msg);
    st->siglen = sizeof(st->sig);
    if ((m = sign_evp_init(w)) == NULL)
        return 0;
    ok = EVP_DigestSign(m, st->sig, &st->siglen, st->msg, MSG_LEN) > 0;
    EVP_MD_CTX_free(m);
    if (!ok)
        ossl_err(w->err, ERRLEN, "EVP_DigestSign");
    return ok;
}

/* The init alone (no signature, no token call): the host's share of
 * sign_evp that OpenSSL's EVP layer and the provider's context take. */
static int init_op(struct worker *w)
{
    EVP_MD_CTX *m = sign_evp_init(w);

    EVP_MD_CTX_free(m);
    return m != NULL;
}

static int sign_op(struct worker *w)
{
    if (w->c->path == P_RAW_TOKEN && opt.raw_init) {
        /* The hsmprov path's init, RSA padding and salt included. */
        const struct sign_alg *a = w->c->arg;
        EVP_MD_CTX *m = sign_evp_init_with(w, keys[a->key].hsm);

        if (m == NULL)
            return 0;
        EVP_MD_CTX_free(m);
    }
    return w->c->path <= P_RAW_SESSION ? sign_raw(w) : sign_evp(w);
}

/* Checks the last signature with the public key; the raw ECDSA r||s is
 * turned into DER first. */
static int sign_verify(struct worker *w)
{
    const struct sign_alg *a = w->c->arg;
    struct sign_st *st = w->st;
    EVP_PKEY *pub = w->c->path == P_SOFTWARE ? keys[a->key].soft : keys[a->key].pub;
    unsigned char der[128], *sig = st->sig, *p;
    size_t siglen = st->siglen;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    int ok;

    if (a->mech == CKM_ECDSA && w->c->path <= P_RAW_SESSION) {
        ECDSA_SIG *es = ECDSA_SIG_new();
        int half = (int)siglen / 2;
        ECDSA_SIG_set0(es, BN_bin2bn(sig, half, NULL), BN_bin2bn(sig + half, half, NULL));
        p = der;
        siglen = (size_t)i2d_ECDSA_SIG(es, &p);
        sig = der;
        ECDSA_SIG_free(es);
    }
    ok =
        EVP_DigestVerifyInit_ex(m, &pc, a->md, NULL, "provider=default", pub, NULL) > 0 &&
        (a->padding == 0 || EVP_PKEY_CTX_set_rsa_padding(pc, a->padding) > 0) &&
        (a->padding != RSA_PKCS1_PSS_PADDING ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) > 0) &&
        EVP_DigestVerify(m, sig, siglen, st->msg, MSG_LEN) == 1;
    EVP_MD_CTX_free(m);
    if (!ok)
        ossl_err(w->err, ERRLEN, "the first signature does not verify");
    return ok;
}

static int sign_setup(struct worker *w)
{
    const struct sign_alg *a = w->c->arg;
    struct sign_st *st = calloc(1, sizeof(*st));

    w->st = st;
    st->sess = CK_INVALID_HANDLE;
    if (RAND_bytes(st->msg, MSG_LEN) != 1)
        return 0;
    if (w->c->path <= P_RAW_SESSION) {
        if (a->md != NULL &&
            (st->md = EVP_MD_fetch(NULL, a->md, "provider=default")) == NULL)
            return ossl_err(w->err, ERRLEN, "EVP_MD_fetch"), 0;
        if (!raw_open(w, keys[a->key].priv, w->c->path == P_RAW_SESSION || opt.raw_init,
                      &st->sess, &st->key, &st->own_copy))
            return 0;
    }
    return sign_op(w) && sign_verify(w);
}

static void sign_teardown(struct worker *w)
{
    struct sign_st *st = w->st;
    if (st == NULL)
        return;
    raw_close(st->sess, st->key, st->own_copy);
    EVP_MD_free(st->md);
    free(st);
}

static const struct bench_ops sign_ops = {sign_setup, sign_op, sign_teardown};
static const struct bench_ops init_ops = {sign_setup, init_op, sign_teardown};

static void bench_sign(void)
{
    int i, t, p;

    fprintf(stderr, "signing\n");
    for (i = 0; i < N_SIGN_ALGS; i++) {
        const struct sign_alg *a = &sign_algs[i];
        struct key *k = &keys[a->key];
        const void *args[N_PATHS] = {a, a, a, a};
        for (t = 0; t < opt.nthreads; t++) {
            struct stats s[N_PATHS] = {0};
            int want[N_PATHS];
            for (p = 0; p < N_PATHS; p++)
                want[p] = plan(a->name, p,
                               p <= P_RAW_SESSION          ? k->raw_err
                               : p == P_HSMPROV && !k->hsm ? k->hsm_err
                                                           : NULL,
                               &s[p]);
            row("sign", a->name, "ops/s", 1, &sign_ops, args, opt.threads[t], want, s);
        }
    }
}

/* The init rows: the EVP paths only, at each thread count. With the raw
 * limit of the same algorithm at the same thread count they bound
 * hsmprov/limit there (the ceiling, compute_ratios): the raw paths pay no
 * EVP init, a TLS server always does. At several threads the rows also show
 * how OpenSSL's init scales, which the raw paths never pay for. */
static void bench_init(void)
{
    int i, p, t;

    fprintf(stderr, "EVP_DigestSignInit_ex alone\n");
    for (i = 0; i < N_SIGN_ALGS; i++) {
        const struct sign_alg *a = &sign_algs[i];
        struct key *k = &keys[a->key];
        const void *args[N_PATHS] = {a, a, a, a};

        for (t = 0; t < opt.nithreads; t++) {
            struct stats s[N_PATHS] = {0};
            int want[N_PATHS];

            for (p = 0; p < N_PATHS; p++)
                want[p] =
                    p <= P_RAW_SESSION
                        ? -1
                        : plan(a->init_name, p,
                               p == P_HSMPROV && !k->hsm ? k->hsm_err : NULL, &s[p]);
            row("init", a->init_name, "ops/s", 1, &init_ops, args, opt.ithreads[t], want,
                s);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Ciphers: AES-256-GCM/CBC on 16 KiB buffers, RSA-OAEP decryption     */

struct cipher_alg {
    const char *name;
    const char *unit;
    CK_MECHANISM_TYPE mech;
    const char *evp; /* EVP cipher name, NULL for OAEP */
};

static const struct cipher_alg cipher_algs[] = {
    {"AES-256-GCM", "MiB/s", CKM_AES_GCM, "AES-256-GCM"},
    {"AES-256-CBC", "MiB/s", CKM_AES_CBC, "AES-256-CBC"},
    {"RSA-OAEP", "ops/s", CKM_RSA_PKCS_OAEP, NULL},
};
#define N_CIPHER_ALGS (int)(sizeof(cipher_algs) / sizeof(cipher_algs[0]))

static EVP_CIPHER *evp_cipher[2][N_PATHS]; /* [GCM/CBC][path], fetched once */

struct cipher_st {
    CK_SESSION_HANDLE sess;
    CK_OBJECT_HANDLE key;
    int own_copy;
    EVP_CIPHER_CTX *ctx;
    unsigned char aes[32];
    unsigned char iv[16];
    unsigned char in[BUF_LEN];
    unsigned char out[BUF_LEN + 32];
    size_t outlen;
    unsigned char ct[256]; /* OAEP: this thread's ciphertext */
    size_t ctlen;
    unsigned char pt[32];
};

static int aes_raw(struct worker *w)
{
    const struct cipher_alg *a = w->c->arg;
    struct cipher_st *st = w->st;
    CK_GCM_PARAMS gcm = {st->iv, 12, 96, NULL, 0, 128};
    CK_MECHANISM mech = {a->mech, st->iv, 16};
    CK_ULONG outlen = sizeof(st->out);
    CK_RV rv;

    next_msg(st->iv); /* a fresh IV per message */
    if (a->mech == CKM_AES_GCM) {
        mech.pParameter = &gcm;
        mech.ulParameterLen = sizeof(gcm);
    }
    rv = p11->C_EncryptInit(st->sess, &mech, st->key);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_EncryptInit", rv);
    if (opt.single_part) {
        rv = p11->C_Encrypt(st->sess, st->in, BUF_LEN, st->out, &outlen);
        if (rv != CKR_OK)
            return ckr_fail(w->err, "C_Encrypt", rv);
    } else {
        /* Update + final, as a cipher context must: on SoftHSM2 2.6 also
         * faster than a single C_Encrypt (GCM: about 1.5x). */
        CK_ULONG last;
        rv = p11->C_EncryptUpdate(st->sess, st->in, BUF_LEN, st->out, &outlen);
        if (rv != CKR_OK)
            return ckr_fail(w->err, "C_EncryptUpdate", rv);
        last = sizeof(st->out) - outlen;
        rv = p11->C_EncryptFinal(st->sess, st->out + outlen, &last);
        if (rv != CKR_OK)
            return ckr_fail(w->err, "C_EncryptFinal", rv);
        outlen += last;
    }
    st->outlen = outlen;
    return 1;
}

/* One message: re-init with a new IV (the key stays), update, final, tag. */
static int aes_evp(struct worker *w)
{
    const struct cipher_alg *a = w->c->arg;
    struct cipher_st *st = w->st;
    int l1 = 0, l2 = 0;

    next_msg(st->iv);
    if (EVP_EncryptInit_ex2(st->ctx, NULL, NULL, st->iv, NULL) != 1 ||
        (a->mech == CKM_AES_CBC && EVP_CIPHER_CTX_set_padding(st->ctx, 0) != 1) ||
        EVP_EncryptUpdate(st->ctx, st->out, &l1, st->in, BUF_LEN) != 1 ||
        EVP_EncryptFinal_ex(st->ctx, st->out + l1, &l2) != 1 ||
        (a->mech == CKM_AES_GCM &&
         EVP_CIPHER_CTX_ctrl(st->ctx, EVP_CTRL_AEAD_GET_TAG, 16, st->out + l1 + l2) != 1))
        return ossl_err(w->err, ERRLEN, "EVP_Encrypt"), 0;
    st->outlen = (size_t)(l1 + l2) + (a->mech == CKM_AES_GCM ? 16 : 0);
    return 1;
}

static int oaep_raw(struct worker *w)
{
    struct cipher_st *st = w->st;
    /* SoftHSM2 2.6 accepts OAEP with SHA-1 and MGF1-SHA1 only: all paths use it. */
    CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, NULL,
                                    0};
    CK_MECHANISM mech = {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep)};
    CK_ULONG outlen = sizeof(st->out);
    CK_RV rv;

    rv = p11->C_DecryptInit(st->sess, &mech, st->key);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_DecryptInit", rv);
    rv = p11->C_Decrypt(st->sess, st->ct, st->ctlen, st->out, &outlen);
    if (rv != CKR_OK)
        return ckr_fail(w->err, "C_Decrypt", rv);
    st->outlen = outlen;
    return 1;
}

static int oaep_ctx_setup(EVP_PKEY_CTX *pc, int enc)
{
    return (enc ? EVP_PKEY_encrypt_init(pc) : EVP_PKEY_decrypt_init(pc)) > 0 &&
           EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_oaep_md_name(pc, "SHA1", NULL) > 0 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md_name(pc, "SHA1", NULL) > 0;
}

static int oaep_evp(struct worker *w)
{
    struct cipher_st *st = w->st;
    EVP_PKEY *pk = w->c->path == P_HSMPROV ? keys[K_RSA].hsm : keys[K_RSA].soft;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    int ok;

    st->outlen = sizeof(st->out);
    ok = pc != NULL && oaep_ctx_setup(pc, 0) &&
         EVP_PKEY_decrypt(pc, st->out, &st->outlen, st->ct, st->ctlen) > 0;
    EVP_PKEY_CTX_free(pc);
    if (!ok)
        ossl_err(w->err, ERRLEN, "EVP_PKEY_decrypt");
    return ok;
}

static int cipher_op(struct worker *w)
{
    const struct cipher_alg *a = w->c->arg;
    if (a->evp == NULL)
        return w->c->path <= P_RAW_SESSION ? oaep_raw(w) : oaep_evp(w);
    return w->c->path <= P_RAW_SESSION ? aes_raw(w) : aes_evp(w);
}

/* The software answer for this thread's key and the IV just used. */
static int aes_check(struct worker *w)
{
    const struct cipher_alg *a = w->c->arg;
    struct cipher_st *st = w->st;
    unsigned char ref[BUF_LEN + 32];
    int l1 = 0, l2 = 0, ok;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    ok = EVP_EncryptInit_ex2(ctx, evp_cipher[a->mech == CKM_AES_CBC][P_SOFTWARE], st->aes,
                             st->iv, NULL) == 1 &&
         EVP_CIPHER_CTX_set_padding(ctx, a->mech == CKM_AES_CBC ? 0 : 1) == 1 &&
         EVP_EncryptUpdate(ctx, ref, &l1, st->in, BUF_LEN) == 1 &&
         EVP_EncryptFinal_ex(ctx, ref + l1, &l2) == 1 &&
         (a->mech != CKM_AES_GCM ||
          EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, ref + l1 + l2) == 1);
    EVP_CIPHER_CTX_free(ctx);
    if (!ok || st->outlen != (size_t)(l1 + l2) + (a->mech == CKM_AES_GCM ? 16 : 0) ||
        memcmp(ref, st->out, st->outlen) != 0) {
        snprintf(w->err, ERRLEN, "%s output differs from the default provider's",
                 a->name);
        return 0;
    }
    return 1;
}

static int cipher_setup(struct worker *w)
{
    const struct cipher_alg *a = w->c->arg;
    struct cipher_st *st = calloc(1, sizeof(*st));
    int path = w->c->path;

    w->st = st;
    st->sess = CK_INVALID_HANDLE;
    if (RAND_bytes(st->in, BUF_LEN) != 1 || RAND_bytes(st->aes, 32) != 1 ||
        RAND_bytes(st->iv, 16) != 1 || RAND_bytes(st->pt, sizeof(st->pt)) != 1)
        return 0;
    if (a->evp == NULL) { /* OAEP: encrypt this thread's plaintext in software */
        EVP_PKEY *pub = path == P_SOFTWARE ? keys[K_RSA].soft : keys[K_RSA].pub;
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, pub, "provider=default");
        int ok;
        st->ctlen = sizeof(st->ct);
        ok = pc != NULL && oaep_ctx_setup(pc, 1) &&
             EVP_PKEY_encrypt(pc, st->ct, &st->ctlen, st->pt, sizeof(st->pt)) > 0;
        EVP_PKEY_CTX_free(pc);
        if (!ok)
            return ossl_err(w->err, ERRLEN, "EVP_PKEY_encrypt"), 0;
    }
    if (path == P_RAW_SESSION && a->evp != NULL) {
        if (!raw_open_aes(w, st->aes, &st->sess, &st->key, &st->own_copy))
            return 0;
    } else if (path <= P_RAW_SESSION) {
        if (!raw_open(w, a->evp == NULL ? keys[K_RSA].priv : aes_key,
                      path == P_RAW_SESSION, &st->sess, &st->key, &st->own_copy))
            return 0;
    } else if (a->evp != NULL) {
        st->ctx = EVP_CIPHER_CTX_new();
        if (EVP_EncryptInit_ex2(st->ctx, evp_cipher[a->mech == CKM_AES_CBC][path],
                                st->aes, st->iv, NULL) != 1)
            return ossl_err(w->err, ERRLEN, "EVP_EncryptInit_ex2"), 0;
    }
    if (!cipher_op(w))
        return 0;
    if (a->evp == NULL) {
        if (st->outlen != sizeof(st->pt) ||
            memcmp(st->out, st->pt, sizeof(st->pt)) != 0) {
            snprintf(w->err, ERRLEN, "OAEP decryption returned the wrong plaintext");
            return 0;
        }
        return 1;
    }
    if (path == P_RAW_TOKEN) { /* the token's key is secret: check the size */
        size_t want = BUF_LEN + (a->mech == CKM_AES_GCM ? 16 : 0);
        if (st->outlen != want) {
            snprintf(w->err, ERRLEN, "C_Encrypt returned %zu bytes, not %zu", st->outlen,
                     want);
            return 0;
        }
        return 1;
    }
    return aes_check(w);
}

static void cipher_teardown(struct worker *w)
{
    struct cipher_st *st = w->st;
    if (st == NULL)
        return;
    raw_close(st->sess, st->key, st->own_copy);
    EVP_CIPHER_CTX_free(st->ctx);
    free(st);
}

static const struct bench_ops cipher_ops = {cipher_setup, cipher_op, cipher_teardown};

static void bench_cipher(void)
{
    char hsm_err[2][ERRLEN];
    int i, t, p;

    fprintf(stderr, "ciphers\n");
    for (i = 0; i < 2; i++) {
        const char *name = cipher_algs[i].evp;
        evp_cipher[i][P_SOFTWARE] = EVP_CIPHER_fetch(NULL, name, "provider=default");
        if (evp_cipher[i][P_SOFTWARE] == NULL)
            die("no software %s", name);
        if (!hsm_loaded) {
            snprintf(hsm_err[i], ERRLEN, "%s", hsm_unavail);
            continue;
        }
        evp_cipher[i][P_HSMPROV] = EVP_CIPHER_fetch(NULL, name, "provider=hsmprov");
        if (evp_cipher[i][P_HSMPROV] == NULL)
            ossl_err(hsm_err[i], ERRLEN, "EVP_CIPHER_fetch");
    }
    for (i = 0; i < N_CIPHER_ALGS; i++) {
        const struct cipher_alg *a = &cipher_algs[i];
        double scale = a->evp ? (double)BUF_LEN / (1024.0 * 1024.0) : 1;
        const void *args[N_PATHS] = {a, a, a, a};
        const char *why[N_PATHS] = {NULL};
        int cbc = a->mech == CKM_AES_CBC;
        if (a->evp == NULL) {
            why[P_RAW_TOKEN] = why[P_RAW_SESSION] = keys[K_RSA].raw_err;
            why[P_HSMPROV] = keys[K_RSA].hsm ? NULL : keys[K_RSA].hsm_err;
        } else {
            if (aes_key == CK_INVALID_HANDLE)
                why[P_RAW_TOKEN] = "no secret key \"aes\" on the token";
            why[P_HSMPROV] = evp_cipher[cbc][P_HSMPROV] ? NULL : hsm_err[cbc];
        }
        for (t = 0; t < opt.ncthreads; t++) {
            struct stats s[N_PATHS] = {0};
            int want[N_PATHS];
            for (p = 0; p < N_PATHS; p++)
                want[p] = plan(a->name, p, why[p], &s[p]);
            row("cipher", a->name, a->unit, scale, &cipher_ops, args, opt.cthreads[t],
                want, s);
        }
    }
    for (i = 0; i < 2; i++)
        for (p = 0; p < N_PATHS; p++)
            EVP_CIPHER_free(evp_cipher[i][p]);
}

/* ------------------------------------------------------------------ */
/* TLS 1.3: full handshakes over memory BIO pairs                      */

struct tls_kind {
    const char *name;
    int key;
    const char *sign_alg; /* the signing row whose limit applies */
};

static const struct tls_kind tls_kinds[] = {
    {"TLS13-ECDSA-P256", K_EC, "ECDSA-P256"},
    /* TLS 1.3 signs with RSA-PSS (rsa_pss_rsae_sha256). */
    {"TLS13-RSA-2048", K_RSA, "RSA-PSS"},
};
#define N_TLS_KINDS (int)(sizeof(tls_kinds) / sizeof(tls_kinds[0]))

static SSL_CTX *client_ctx;

static X509 *make_cert(EVP_PKEY *pub, EVP_PKEY *signer, const char *cn, int self_signed)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new(), *issuer = X509_NAME_new();
    int ok;

    ok = x && name && issuer && X509_set_version(x, X509_VERSION_3) &&
         ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
         X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
         X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                                    -1, -1, 0) &&
         X509_NAME_add_entry_by_txt(
             issuer, "CN", MBSTRING_ASC,
             (const unsigned char *)(self_signed ? cn : "hsmbench CA"), -1, -1, 0) &&
         X509_set_subject_name(x, name) && X509_set_issuer_name(x, issuer) &&
         X509_set_pubkey(x, pub) && X509_sign(x, signer, EVP_sha256()) > 0;
    X509_NAME_free(name);
    X509_NAME_free(issuer);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* The server SSL_CTX for one key kind and path, shared by all its threads.
 * The token key's certificate carries the public key read from the token and
 * is self-signed by the token key through hsmprov (what `openssl req -x509
 * -key pkcs11:...` does); if the provider cannot sign it, a software key
 * issues it instead, which TLS does not mind (the client does not verify). */
static SSL_CTX *server_ctx(const struct tls_kind *tk, int path, char *err)
{
    struct key *k = &keys[tk->key];
    EVP_PKEY *key = path == P_HSMPROV ? k->hsm : k->soft;
    EVP_PKEY *pub = path == P_HSMPROV ? k->pub : k->soft;
    SSL_CTX *ctx;
    X509 *cert;

    if (pub == NULL) {
        snprintf(err, ERRLEN, "%s", k->raw_err);
        return NULL;
    }
    cert = make_cert(pub, key, "hsmbench", 1);
    if (cert == NULL && path == P_HSMPROV) {
        char e[ERRLEN];
        ossl_err(e, sizeof(e), "self-signing with the token key");
        fprintf(stderr, "  %s: %s; a software key issues the certificate\n", tk->name, e);
        cert = make_cert(pub, k->soft, "hsmbench", 0);
    }
    if (cert == NULL) {
        ossl_err(err, ERRLEN, "certificate");
        return NULL;
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_num_tickets(ctx, 0) || !SSL_CTX_use_certificate(ctx, cert) ||
        !SSL_CTX_use_PrivateKey(ctx, key) || !SSL_CTX_check_private_key(ctx)) {
        ossl_err(err, ERRLEN, "server SSL_CTX");
        SSL_CTX_free(ctx);
        ctx = NULL;
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    X509_free(cert);
    return ctx;
}

static int step(SSL *s, int *done, char *err)
{
    int r;
    if (*done)
        return 1;
    r = SSL_do_handshake(s);
    if (r == 1) {
        *done = 1;
        return 1;
    }
    r = SSL_get_error(s, r);
    if (r == SSL_ERROR_WANT_READ || r == SSL_ERROR_WANT_WRITE)
        return 1;
    ossl_err(err, ERRLEN, SSL_is_server(s) ? "server handshake" : "client handshake");
    return 0;
}

static int tls_op(struct worker *w)
{
    SSL_CTX *sctx = w->st;
    SSL *c = SSL_new(client_ctx), *s = SSL_new(sctx);
    BIO *cb = NULL, *sb = NULL;
    int cdone = 0, sdone = 0, i, ok = 0;

    if (c == NULL || s == NULL || !BIO_new_bio_pair(&cb, 0, &sb, 0)) {
        ossl_err(w->err, ERRLEN, "SSL_new");
        goto out;
    }
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    for (i = 0; i < 32 && !(cdone && sdone); i++)
        if (!step(c, &cdone, w->err) || !step(s, &sdone, w->err))
            goto out;
    ok = cdone && sdone;
    if (!ok)
        snprintf(w->err, ERRLEN, "handshake did not finish");
out:
    SSL_free(c);
    SSL_free(s);
    return ok;
}

static int tls_setup(struct worker *w)
{
    w->st = (void *)w->c->arg;
    return tls_op(w);
}

static void tls_teardown(struct worker *w)
{
    w->st = NULL; /* the SSL_CTX belongs to bench_tls */
}

static const struct bench_ops tls_ops = {tls_setup, tls_op, tls_teardown};

static void bench_tls(void)
{
    int i, t, p;

    fprintf(stderr, "TLS 1.3 handshakes\n");
    client_ctx = SSL_CTX_new(TLS_client_method());
    if (client_ctx == NULL || !SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION))
        die("client SSL_CTX");
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
    for (i = 0; i < N_TLS_KINDS; i++) {
        const struct tls_kind *tk = &tls_kinds[i];
        SSL_CTX *sctx[N_PATHS] = {NULL};
        const void *args[N_PATHS];
        char err[N_PATHS][ERRLEN] = {""};
        int want[N_PATHS] = {-1, -1, -1, -1};

        for (p = P_HSMPROV; p <= P_SOFTWARE; p++) {
            if (!wanted(tk->name, p))
                continue;
            if (p == P_HSMPROV && keys[tk->key].hsm == NULL)
                snprintf(err[p], ERRLEN, "%s", keys[tk->key].hsm_err);
            else
                sctx[p] = server_ctx(tk, p, err[p]);
            want[p] = 0;
        }
        for (p = 0; p < N_PATHS; p++)
            args[p] = sctx[p];
        for (t = 0; t < opt.ntthreads; t++) {
            struct stats s[N_PATHS] = {0};
            for (p = 0; p < N_PATHS; p++)
                if (want[p] >= 0)
                    want[p] = plan(tk->name, p, sctx[p] ? NULL : err[p], &s[p]);
            row("tls", tk->name, "hs/s", 1, &tls_ops, args, opt.tthreads[t], want, s);
        }
        for (p = 0; p < N_PATHS; p++)
            SSL_CTX_free(sctx[p]);
    }
    SSL_CTX_free(client_ctx);
}

/* ------------------------------------------------------------------ */
/* Ratios, table, CSV                                                  */

/* Whether raw-token is not a raw path in this row (--raw-with-init). */
static int raw_token_is_init(const char *name)
{
    for (int j = 0; opt.raw_init && j < N_SIGN_ALGS; j++)
        if (strcmp(sign_algs[j].name, name) == 0)
            return 1;
    return 0;
}

static double raw_limit(const char *name, int threads)
{
    double a = raw_token_is_init(name) ? 0 : med_of(name, P_RAW_TOKEN, threads),
           b = med_of(name, P_RAW_SESSION, threads);
    return a > b ? a : b;
}

/* hsmprov/limit of a signing or cipher row, paired by cycle: the median over
 * rounds r of hsmprov's round r divided by the faster raw path's round r.
 * The rounds of one cycle run back to back, so a machine whose speed swings
 * for seconds at a time (a busy neighbour on a shared host) weighs on both
 * sides of each quotient alike; a quotient of medians would take each side
 * from whichever rounds fell in its middle. */
static double paired_ratio(const struct result *h)
{
    const struct result *a = raw_token_is_init(h->name)
                                 ? NULL
                                 : find_result(h->name, P_RAW_TOKEN, h->threads),
                        *b = find_result(h->name, P_RAW_SESSION, h->threads);
    double q[MAX_ROUNDS];
    int r, n = 0;

    for (r = 0; r < opt.rounds; r++) {
        double lim = 0;
        if (a != NULL && a->s.ok)
            lim = a->s.round[r];
        if (b != NULL && b->s.ok && b->s.round[r] > lim)
            lim = b->s.round[r];
        if (lim > 0)
            q[n++] = h->s.round[r] / lim;
    }
    return n > 0 ? median(q, n) : 0;
}

static void compute_ratios(void)
{
    int i, j;

    for (i = 0; i < nresults; i++) {
        struct result *r = &results[i];
        if (r->path != P_HSMPROV)
            continue;
        if (strcmp(r->section, "init") == 0) {
            /* The ceiling: a signature at the raw limit plus this init. */
            for (j = 0; j < N_SIGN_ALGS; j++)
                if (strcmp(sign_algs[j].init_name, r->name) == 0)
                    r->limit = raw_limit(sign_algs[j].name, r->threads);
            if (r->s.ok && r->limit > 0)
                r->ratio = 1 / (1 + r->limit / r->s.med);
            continue;
        }
        if (strcmp(r->section, "tls") != 0) {
            if (!r->s.ok)
                continue;
            r->limit = raw_limit(r->name, r->threads);
            r->ratio = r->limit > 0 ? paired_ratio(r) : 0;
            continue;
        }
        for (j = 0; j < N_TLS_KINDS; j++) {
            const struct tls_kind *tk = &tls_kinds[j];
            double soft_hs, raw_sign, soft_sign, t_tok;
            if (strcmp(tk->name, r->name) != 0)
                continue;
            soft_hs = med_of(r->name, P_SOFTWARE, r->threads);
            raw_sign = raw_limit(tk->sign_alg, r->threads);
            soft_sign = med_of(tk->sign_alg, P_SOFTWARE, r->threads);
            /* rawsig/soft even without a token figure: what to expect. */
            r->ref_ratio = soft_sign > 0 ? raw_sign / soft_sign : 0;
            if (!r->s.ok)
                continue;
            r->ratio = soft_hs > 0 ? r->s.med / soft_hs : 0;
            /* What the raw limit allows: a software handshake with its
             * software signature replaced by one raw token signature. */
            if (soft_hs > 0 && raw_sign > 0 && soft_sign > 0) {
                t_tok = 1 / soft_hs - 1 / soft_sign + 1 / raw_sign;
                r->limit = t_tok > 0 ? 1 / t_tok : 0;
            }
        }
    }
}

static const char *fmt_cell(char *buf, size_t len, const struct result *r)
{
    if (r == NULL)
        snprintf(buf, len, "-");
    else if (!r->s.ok)
        snprintf(buf, len, "n/a");
    else
        snprintf(buf, len, "%.0f [%.0f..%.0f]", r->s.med, r->s.min, r->s.max);
    return buf;
}

static const char *fmt_ratio(char *buf, size_t len, double x)
{
    if (x > 0)
        snprintf(buf, len, "%.2f", x);
    else
        snprintf(buf, len, "n/a");
    return buf;
}

static void print_table(FILE *f)
{
    static const char *sections[] = {"sign", "cipher"};
    char b[N_PATHS][64], q[3][16];
    int sec, i, j, p, t;

    fprintf(f,
            "Median [min..max] of %d rounds of %.0f ms; limit = max(raw-token, "
            "raw-session);\nhsmprov/limit = median over the rounds of hsmprov / the "
            "faster raw path in the same cycle of turns\n",
            opt.rounds, (double)opt.round_ns / 1e6);
    if (opt.raw_init)
        fprintf(f, "signing rows, raw-token column: raw-session preceded by hsmprov's "
                   "EVP_DigestSignInit_ex (--raw-with-init), not in the limit\n");
    for (sec = 0; sec < 2; sec++) {
        const char *last = "";
        if ((sec == 0 && !opt.do_sign) || (sec == 1 && !opt.do_cipher))
            continue;
        fprintf(f, "\n%-12s %-6s %3s  %-22s %-22s %-22s %-22s %s\n",
                sec == 0 ? "signing" : "cipher", "unit", "thr", path_name[0],
                path_name[1], path_name[2], path_name[3], "hsmprov/limit");
        for (i = 0; i < nresults; i++) {
            struct result *r = &results[i], *h;
            /* One line per (algorithm, threads): at its first result. */
            if (strcmp(r->section, sections[sec]) != 0 ||
                find_result(r->name, -1, r->threads) != r)
                continue;
            if (strcmp(last, r->name) != 0 && last[0] != '\0')
                fputc('\n', f);
            last = r->name;
            for (p = 0; p < N_PATHS; p++)
                fmt_cell(b[p], sizeof(b[p]), find_result(r->name, p, r->threads));
            h = find_result(r->name, P_HSMPROV, r->threads);
            fprintf(f, "%-12s %-6s %3d  %-22s %-22s %-22s %-22s %s\n", r->name, r->unit,
                    r->threads, b[0], b[1], b[2], b[3],
                    fmt_ratio(q[0], sizeof(q[0]), h ? h->ratio : 0));
        }
    }
    for (i = 0, j = 0; i < nresults && !j; i++)
        j = strcmp(results[i].section, "init") == 0;
    if (j) {
        fprintf(f, "\n%-16s %3s  %-22s %-22s %-10s %s\n", "EVP init alone", "thr",
                "hsmprov", "software", "raw limit", "ceiling");
        for (i = 0; i < N_SIGN_ALGS; i++) {
            int shown = 0;

            for (t = 0; t < opt.nithreads; t++) {
                int n = opt.ithreads[t];
                struct result *h = find_result(sign_algs[i].init_name, P_HSMPROV, n);
                struct result *s = find_result(sign_algs[i].init_name, P_SOFTWARE, n);
                char lim[32];

                if (h == NULL && s == NULL)
                    continue;
                shown++;
                snprintf(lim, sizeof(lim), "%.0f", h != NULL ? h->limit : 0);
                fprintf(f, "%-16s %3d  %-22s %-22s %-10s %s\n", sign_algs[i].init_name, n,
                        fmt_cell(b[0], sizeof(b[0]), h), fmt_cell(b[1], sizeof(b[1]), s),
                        h != NULL && h->limit > 0 ? lim : "n/a",
                        fmt_ratio(q[0], sizeof(q[0]), h != NULL ? h->ratio : 0));
            }
            if (shown > 1 && i + 1 < N_SIGN_ALGS)
                fputc('\n', f);
        }
    }
    if (!opt.do_tls)
        return;
    fprintf(f, "\n%-16s %3s  %-22s %-22s %-10s %-12s %-10s %s\n", "TLS 1.3 hs/s", "thr",
            "hsmprov (token key)", "software key", "tok/soft", "rawsig/soft", "allowed",
            "tok/allowed");
    for (i = 0; i < N_TLS_KINDS; i++) {
        for (j = 0; j < opt.ntthreads; j++) {
            struct result *h = find_result(tls_kinds[i].name, P_HSMPROV, opt.tthreads[j]);
            struct result *s =
                find_result(tls_kinds[i].name, P_SOFTWARE, opt.tthreads[j]);
            char allowed[32];
            if (h == NULL)
                continue;
            if (h->limit > 0)
                snprintf(allowed, sizeof(allowed), "%.0f", h->limit);
            else
                snprintf(allowed, sizeof(allowed), "n/a");
            fprintf(
                f, "%-16s %3d  %-22s %-22s %-10s %-12s %-10s %s\n", tls_kinds[i].name,
                opt.tthreads[j], fmt_cell(b[0], sizeof(b[0]), h),
                fmt_cell(b[1], sizeof(b[1]), s), fmt_ratio(q[0], sizeof(q[0]), h->ratio),
                fmt_ratio(q[1], sizeof(q[1]), h->ref_ratio), allowed,
                fmt_ratio(q[2], sizeof(q[2]), h->limit > 0 ? h->s.med / h->limit : 0));
        }
    }
}

/* How many sessions hsmprov's pools hold at the end of the run, and the most
 * they held at once (provider parameters; 0 when unknown). */
static unsigned pool_sessions, pool_peak;
static int pool_known;

static void pool_read(void)
{
    OSSL_PROVIDER *prov;
    OSSL_PARAM p[] = {
        OSSL_PARAM_uint("hsmprov-pool-sessions", &pool_sessions),
        OSSL_PARAM_uint("hsmprov-pool-peak", &pool_peak),
        OSSL_PARAM_END,
    };

    if (!hsm_loaded || (prov = OSSL_PROVIDER_load(NULL, "hsmprov")) == NULL)
        return;
    pool_known = OSSL_PROVIDER_get_params(prov, p) && OSSL_PARAM_modified(&p[0]) &&
                 OSSL_PARAM_modified(&p[1]);
    OSSL_PROVIDER_unload(prov);
    ERR_clear_error();
}

static int max_threads_run(void)
{
    int m = 0;

    for (int i = 0; i < nresults; i++)
        if (results[i].threads > m)
            m = results[i].threads;
    return m;
}

static void print_pool(FILE *f)
{
    if (pool_known)
        fprintf(f,
                "\nhsmprov pool   %u sessions open at the end of the run, at most %u at "
                "once (threads up to %d)\n",
                pool_sessions, pool_peak, max_threads_run());
    else if (hsm_loaded)
        fputs("\nhsmprov pool   n/a: the provider does not report its pool\n", f);
}

/* Why each n/a is n/a, once per distinct reason. */
static void print_notes(FILE *f)
{
    int i, j, first = 1;

    for (i = 0; i < nresults; i++) {
        const struct result *r = &results[i];
        if (r->s.ok)
            continue;
        for (j = 0; j < i; j++)
            if (!results[j].s.ok && strcmp(results[j].name, r->name) == 0 &&
                results[j].path == r->path && strcmp(results[j].s.err, r->s.err) == 0)
                break;
        if (j < i)
            continue;
        if (first)
            fputs("\nn/a:\n", f);
        first = 0;
        fprintf(f, "  %s %s: %s\n", r->name, path_name[r->path], r->s.err);
    }
}

static void csv_field(FILE *f, double x)
{
    if (x > 0)
        fprintf(f, ",%.4g", x);
    else
        fputs(",", f);
}

static void write_csv(const char *file)
{
    FILE *f = fopen(file, "w");
    int i;

    if (f == NULL)
        die("%s: %s", file, strerror(errno));
    fputs("section,name,path,threads,unit,median,min,max,rounds,round_ms,limit,ratio,"
          "ref_ratio,note\n",
          f);
    for (i = 0; i < nresults; i++) {
        const struct result *r = &results[i];
        char note[ERRLEN], *c;
        fprintf(f, "%s,%s,%s,%d,%s,", r->section, r->name, path_name[r->path], r->threads,
                r->unit);
        if (r->s.ok)
            fprintf(f, "%.1f,%.1f,%.1f", r->s.med, r->s.min, r->s.max);
        else
            fputs("n/a,n/a,n/a", f);
        fprintf(f, ",%d,%.0f", opt.rounds, (double)opt.round_ns / 1e6);
        csv_field(f, r->limit);
        csv_field(f, r->ratio);
        csv_field(f, r->ref_ratio);
        snprintf(note, sizeof(note), "%s", r->s.ok ? "" : r->s.err);
        for (c = note; *c; c++) /* keep the CSV one record a line, no quoting */
            if (*c == ',' || *c == '\n' || *c == '"')
                *c = ';';
        fprintf(f, ",%s\n", note);
    }
    /* median: sessions open at the end; max: the most at once. */
    if (pool_known)
        fprintf(f, "pool,sessions,hsmprov,%d,sessions,%u,%u,%u,%d,%.0f,,,,\n",
                max_threads_run(), pool_sessions, pool_sessions, pool_peak, opt.rounds,
                (double)opt.round_ns / 1e6);
    fclose(f);
}

/* ------------------------------------------------------------------ */
/* main                                                                */

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    char *end;
    while (*s && n < max) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > MAX_THREADS)
            die("bad thread list \"%s\"", s);
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            die("bad thread list");
    }
    return n;
}

static void usage(void)
{
    fputs(
        "usage: hsmbench [options]\n"
        "  --module PATH          PKCS#11 module (default $SOFTHSM2_MODULE)\n"
        "  --token LABEL          token label (default demo)\n"
        "  --pin PIN | --pin-file FILE   user PIN for the raw path (default 1234)\n"
        "  --uri BASE             pkcs11: URI of the token (default pkcs11:token=LABEL)\n"
        "  --rounds N             rounds per figure, median reported (default 9)\n"
        "  --round-ms MS          length of a round (default 500)\n"
        "  --quick                smoke run: about one second of measuring in all\n"
        "  --threads L            signing thread counts (default 1,2,4,8,16)\n"
        "  --cipher-threads L     cipher thread counts (default 1,2)\n"
        "  --tls-threads L        TLS thread counts (default 1,2,4,8)\n"
        "  --init-threads L       init-row thread counts (default: those of --threads)\n"
        "  --only LIST            any of sign,cipher,tls (default all); sign includes\n"
        "                         the init rows (NAME/init: EVP_DigestSignInit_ex "
        "alone)\n"
        "  --algs LIST            only these rows, e.g. ECDSA-P256,TLS13-RSA-2048\n"
        "  --paths LIST           only these paths: "
        "raw-token,raw-session,hsmprov,software\n"
        "  --csv FILE             write the results as CSV\n"
        "  --hsmprov-unavailable REASON  do not use hsmprov (the driver's probe failed)\n"
        "  --single-part          raw AES: one C_Encrypt, not C_EncryptUpdate + Final\n"
        "  --raw-with-init        signing: raw-token becomes raw-session preceded by "
        "the\n"
        "                         hsmprov path's EVP_DigestSignInit_ex (no EVP "
        "signature)\n"
        "  --no-pin               let the scheduler place the threads (default: in\n"
        "                         round r, thread i of every path on CPU (i + r) mod N)\n"
        "  --probe                load OPENSSL_CONF, say whether hsmprov is available\n",
        stderr);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {
        {"module", 1, NULL, 'm'},
        {"token", 1, NULL, 't'},
        {"pin", 1, NULL, 'p'},
        {"pin-file", 1, NULL, 'P'},
        {"uri", 1, NULL, 'u'},
        {"rounds", 1, NULL, 'r'},
        {"round-ms", 1, NULL, 'R'},
        {"quick", 0, NULL, 'q'},
        {"threads", 1, NULL, 'T'},
        {"cipher-threads", 1, NULL, 'C'},
        {"tls-threads", 1, NULL, 'L'},
        {"init-threads", 1, NULL, 'I'},
        {"only", 1, NULL, 'o'},
        {"algs", 1, NULL, 'a'},
        {"paths", 1, NULL, 'x'},
        {"csv", 1, NULL, 'c'},
        {"hsmprov-unavailable", 1, NULL, 'U'},
        {"probe", 0, NULL, 'b'},
        {"single-part", 0, NULL, 's'},
        {"no-pin", 0, NULL, 'N'},
        {"raw-with-init", 0, NULL, 'W'},
        {"help", 0, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static char uri[256];
    /* Short rounds, many of them: a cycle of turns (one round of each path)
     * lasts about two seconds, shorter than the swings of a shared host's
     * speed, which the paired ratios then cancel. */
    int ch, round_ms = 500;

    opt.module = getenv("SOFTHSM2_MODULE");
    if (opt.module == NULL)
        opt.module = "/usr/lib/softhsm/libsofthsm2.so";
    opt.token = "demo";
    strcpy(opt.pin, "1234");
    opt.rounds = 9;
    opt.nthreads = parse_list("1,2,4,8,16", opt.threads, 8);
    opt.ncthreads = parse_list("1,2", opt.cthreads, 8);
    opt.ntthreads = parse_list("1,2,4,8", opt.tthreads, 8);
    opt.do_sign = opt.do_cipher = opt.do_tls = 1;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'm':
            opt.module = optarg;
            break;
        case 't':
            opt.token = optarg;
            break;
        case 'p':
            snprintf(opt.pin, sizeof(opt.pin), "%s", optarg);
            break;
        case 'P': {
            FILE *f = fopen(optarg, "r");
            if (f == NULL || fgets(opt.pin, sizeof(opt.pin), f) == NULL)
                die("cannot read PIN file %s", optarg);
            opt.pin[strcspn(opt.pin, "\r\n")] = '\0';
            fclose(f);
            break;
        }
        case 'u':
            opt.uri_base = optarg;
            break;
        case 'r':
            opt.rounds = atoi(optarg);
            break;
        case 'R':
            round_ms = atoi(optarg);
            break;
        case 'q':
            opt.quick = 1;
            break;
        case 'T':
            opt.nthreads = parse_list(optarg, opt.threads, 8);
            break;
        case 'C':
            opt.ncthreads = parse_list(optarg, opt.cthreads, 8);
            break;
        case 'L':
            opt.ntthreads = parse_list(optarg, opt.tthreads, 8);
            break;
        case 'I':
            opt.nithreads = parse_list(optarg, opt.ithreads, 8);
            break;
        case 'o':
            opt.do_sign = strstr(optarg, "sign") != NULL;
            opt.do_cipher = strstr(optarg, "cipher") != NULL;
            opt.do_tls = strstr(optarg, "tls") != NULL;
            break;
        case 'a':
            opt.algs = optarg;
            break;
        case 'x':
            opt.paths = optarg;
            break;
        case 'c':
            opt.csv = optarg;
            break;
        case 'U':
            opt.hsm_unavailable = optarg;
            break;
        case 'b':
            opt.probe = 1;
            break;
        case 's':
            opt.single_part = 1;
            break;
        case 'N':
            opt.no_pin = 1;
            break;
        case 'W':
            opt.raw_init = 1;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || opt.rounds < 1 || opt.rounds > MAX_ROUNDS || round_ms < 1)
        usage();
    if (opt.uri_base == NULL) {
        snprintf(uri, sizeof(uri), "pkcs11:token=%s", opt.token);
        opt.uri_base = uri;
    }
    opt.round_ns = (long long)round_ms * 1000000LL;
    {
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof(set), &set) == 0)
            for (int i = 0; i < CPU_SETSIZE; i++)
                if (CPU_ISSET(i, &set))
                    opt.cpus[opt.ncpus++] = i;
    }
    if (opt.nithreads == 0) {
        opt.nithreads = opt.nthreads;
        memcpy(opt.ithreads, opt.threads, sizeof(opt.threads));
    }
    if (opt.quick) {
        /* About one second of measuring in all: every figure still gets its
         * rounds, each a small share of the second (at least 1 ms). */
        int cells =
            opt.do_sign * N_SIGN_ALGS * (opt.nthreads * N_PATHS + 2 * opt.nithreads) +
            opt.do_cipher * N_CIPHER_ALGS * opt.ncthreads * N_PATHS +
            opt.do_tls * N_TLS_KINDS * opt.ntthreads * 2;
        opt.round_ns = 1000000000LL / ((long long)(cells ? cells : 1) * opt.rounds);
        if (opt.round_ns < 1000000LL)
            opt.round_ns = 1000000LL;
    }
}

/* Config first (it loads hsmprov beside the default provider), as an
 * application would; the reasons hsmprov may be missing are kept for the
 * "hsmprov unavailable" line. */
static void openssl_setup(void)
{
    if (opt.hsm_unavailable != NULL) {
        snprintf(hsm_unavail, sizeof(hsm_unavail), "%s", opt.hsm_unavailable);
    } else if (!OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL) ||
               !OSSL_PROVIDER_available(NULL, "hsmprov")) {
        ossl_err(hsm_unavail, sizeof(hsm_unavail),
                 getenv("OPENSSL_CONF") ? "not loaded by OPENSSL_CONF"
                                        : "OPENSSL_CONF is not set");
    } else {
        hsm_loaded = 1;
    }
    if (!OSSL_PROVIDER_available(NULL, "default") &&
        OSSL_PROVIDER_load(NULL, "default") == NULL)
        die("cannot load the default provider");
    ERR_clear_error();
    if (!hsm_loaded) {
        printf("hsmprov unavailable: %s\n", hsm_unavail);
        fprintf(stderr, "hsmprov unavailable: %s\n", hsm_unavail);
    }
}

int main(int argc, char **argv)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int i;

    parse_args(argc, argv);
    if (opt.probe) {
        /* run.sh asks this first, in a process of its own: a provider that
         * fails or crashes while loading must not take the other paths down. */
        openssl_setup();
        if (hsm_loaded)
            printf("hsmprov available\n");
        return hsm_loaded ? 0 : 1;
    }
    printf("hsmbench: token \"%s\" via %s; %s; %ld CPUs\n", opt.token, opt.module,
           OpenSSL_version(OPENSSL_VERSION), ncpu);
    openssl_setup();
    keys_load();
    p11_setup();
    keys_find();
    OPENSSL_cleanse(opt.pin, sizeof(opt.pin));

    for (i = 0; i < N_KEYS; i++)
        if (keys[i].hsm == NULL && hsm_loaded)
            printf("hsmprov key \"%s\" n/a: %s\n", keys[i].label, keys[i].hsm_err);
    if (opt.do_sign) {
        bench_sign();
        bench_init();
    }
    if (opt.do_cipher)
        bench_cipher();
    if (opt.do_tls)
        bench_tls();
    compute_ratios();
    pool_read();
    print_table(stdout);
    print_pool(stdout);
    print_notes(stdout);
    if (opt.csv != NULL)
        write_csv(opt.csv);

    for (i = 0; i < N_KEYS; i++) {
        EVP_PKEY_free(keys[i].pub);
        EVP_PKEY_free(keys[i].hsm);
        EVP_PKEY_free(keys[i].soft);
    }
    /* The login lives as long as a session does; the module stays initialised
     * because hsmprov may share it. */
    p11->C_CloseSession(main_session);
    return 0;
}
