#include "conc_util.h"

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int failures;

void ct_fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    ERR_print_errors_fp(stderr);
    atomic_fetch_add(&failures, 1);
}

int ct_failures(void)
{
    return atomic_load(&failures);
}

int ct_result(const char *what)
{
    int n = ct_failures();

    printf("%s: %d failure%s\n%s\n", what, n, n == 1 ? "" : "s",
           n == 0 ? "PASS" : "FAIL");
    fflush(stdout);
    return n == 0 ? 0 : 1;
}

void ct_errors(char *buf, size_t len)
{
    const char *data, *func;
    unsigned long e;
    size_t off = 0;
    int flags;

    if (len == 0)
        return;
    buf[0] = '\0';
    while ((e = ERR_get_error_all(NULL, NULL, &func, &data, &flags)) != 0) {
        char one[256];

        ERR_error_string_n(e, one, sizeof(one));
        if (off < len)
            off += (size_t)snprintf(buf + off, len - off, "%s%s%s%s", off ? " | " : "",
                                    one, (flags & ERR_TXT_STRING) && data ? ": " : "",
                                    (flags & ERR_TXT_STRING) && data ? data : "");
    }
}

int ct_init(void)
{
    if (!OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL)) {
        ct_fail("OPENSSL_init_crypto (OPENSSL_CONF)");
        return 0;
    }
    return 1;
}

EVP_PKEY *ct_store_load(const char *uri)
{
    OSSL_STORE_CTX *store;
    EVP_PKEY *pkey = NULL;

    store = OSSL_STORE_open_ex(uri, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    if (store == NULL)
        return NULL;
    OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY);
    while (pkey == NULL && !OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);

        if (info == NULL) {
            if (OSSL_STORE_error(store))
                break;
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    return pkey;
}

int ct_key_load(ct_key *k, const char *name)
{
    char uri[128];
    unsigned char *der = NULL;
    const unsigned char *p;
    int len;

    memset(k, 0, sizeof(*k));
    k->name = name;
    snprintf(uri, sizeof(uri), "pkcs11:token=demo;object=%s;type=private", name);
    k->tok = ct_store_load(uri);
    if (k->tok == NULL) {
        ct_fail("no private key at %s", uri);
        return 0;
    }
    k->is_rsa = EVP_PKEY_is_a(k->tok, "RSA");
    len = i2d_PUBKEY(k->tok, &der);
    if (len <= 0) {
        ct_fail("i2d_PUBKEY of %s", uri);
        return 0;
    }
    p = der;
    k->pub = d2i_PUBKEY_ex(NULL, &p, len, NULL, "provider=default");
    OPENSSL_free(der);
    if (k->pub == NULL) {
        ct_fail("d2i_PUBKEY_ex of %s into the default provider", uri);
        return 0;
    }
    ERR_clear_error();
    return 1;
}

void ct_key_free(ct_key *k)
{
    EVP_PKEY_free(k->tok);
    EVP_PKEY_free(k->pub);
    k->tok = k->pub = NULL;
}

static int set_padding(const ct_alg *a, EVP_PKEY_CTX *pctx)
{
    if (!a->key->is_rsa || !a->pss)
        return 1;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
}

EVP_MD_CTX *ct_sign_init(const ct_alg *a)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;

    if (m == NULL ||
        !EVP_DigestSignInit_ex(m, &pctx, "SHA256", NULL, NULL, a->key->tok, NULL) ||
        !set_padding(a, pctx)) {
        ct_fail("EVP_DigestSignInit_ex (%s%s)", a->key->name, a->pss ? ", PSS" : "");
        EVP_MD_CTX_free(m);
        return NULL;
    }
    return m;
}

int ct_sign_final(EVP_MD_CTX *m, unsigned char *sig, size_t *siglen)
{
    size_t need = 0;

    if (!EVP_DigestSignFinal(m, NULL, &need) || need > 512)
        return 0;
    *siglen = need;
    return EVP_DigestSignFinal(m, sig, siglen);
}

int ct_sign_stream(const ct_alg *a, const unsigned char *msg, size_t len, int chunks,
                   unsigned char *sig, size_t *siglen)
{
    EVP_MD_CTX *m = ct_sign_init(a);
    size_t off = 0;
    int ok = m != NULL;

    for (int c = 0; ok && c < chunks; c++) {
        size_t end = c == chunks - 1 ? len : len * (size_t)(c + 1) / (size_t)chunks;

        ok = EVP_DigestSignUpdate(m, msg + off, end - off);
        off = end;
    }
    if (ok)
        ok = ct_sign_final(m, sig, siglen);
    EVP_MD_CTX_free(m);
    return ok;
}

int ct_sign_oneshot(const ct_alg *a, const unsigned char *msg, size_t len,
                    unsigned char *sig, size_t *siglen)
{
    EVP_MD_CTX *m = ct_sign_init(a);
    size_t need = 0;
    int ok = m != NULL && EVP_DigestSign(m, NULL, &need, msg, len) && need <= 512;

    if (ok) {
        *siglen = need;
        ok = EVP_DigestSign(m, sig, siglen, msg, len);
    }
    EVP_MD_CTX_free(m);
    return ok;
}

int ct_sign_hash(const ct_alg *a, const unsigned char *msg, size_t len,
                 unsigned char *sig, size_t *siglen)
{
    unsigned char h[32];
    EVP_PKEY_CTX *pctx;
    EVP_MD *sha256;
    int ok;

    sha256 = EVP_MD_fetch(NULL, "SHA256", "provider=default");
    if (sha256 == NULL || !EVP_Digest(msg, len, h, NULL, sha256, NULL)) {
        EVP_MD_free(sha256);
        return 0;
    }
    pctx = EVP_PKEY_CTX_new_from_pkey(NULL, a->key->tok, NULL);
    ok = pctx != NULL && EVP_PKEY_sign_init(pctx) > 0 &&
         EVP_PKEY_CTX_set_signature_md(pctx, sha256) > 0 && set_padding(a, pctx);
    *siglen = 512;
    ok = ok && EVP_PKEY_sign(pctx, sig, siglen, h, sizeof(h)) > 0;
    EVP_PKEY_CTX_free(pctx);
    EVP_MD_free(sha256);
    return ok;
}

int ct_verify(const ct_alg *a, const unsigned char *msg, size_t len,
              const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int rv = -1;

    if (m != NULL &&
        EVP_DigestVerifyInit_ex(m, &pctx, "SHA256", NULL, "provider=default", a->key->pub,
                                NULL) &&
        set_padding(a, pctx))
        rv = EVP_DigestVerify(m, sig, siglen, msg, len);
    EVP_MD_CTX_free(m);
    if (rv < 0)
        rv = -1;
    ERR_clear_error(); /* a bad signature leaves an error: that is the answer */
    return rv;
}

int ct_sign_check(const ct_alg *a, const char *what)
{
    unsigned char msg[300], sig[512];
    size_t siglen = 0;
    static atomic_int n;
    int i = atomic_fetch_add(&n, 1);

    ct_message(msg, sizeof(msg), 9999, i);
    if (!ct_sign_oneshot(a, msg, sizeof(msg), sig, &siglen)) {
        ct_fail("%s: signing with %s failed", what, a->key->name);
        return 0;
    }
    if (ERR_peek_error() != 0) {
        ct_fail("%s: a signature with %s succeeded but left an error on the queue", what,
                a->key->name);
        return 0;
    }
    if (ct_verify(a, msg, sizeof(msg), sig, siglen) != 1) {
        ct_fail("%s: the %s signature does not verify", what, a->key->name);
        return 0;
    }
    return 1;
}

void ct_message(unsigned char *msg, size_t len, int who, int i)
{
    size_t n;
    unsigned x = (unsigned)who * 2654435761u ^ (unsigned)i * 40503u;

    n = (size_t)snprintf((char *)msg, len, "writer %d message %d:", who, i);
    for (; n < len; n++) {
        x = x * 1103515245u + 12345u;
        msg[n] = (unsigned char)(x >> 16);
    }
}

int ct_shim(struct p11shim_api *api)
{
    const char *path = getenv("HSMPROV_SHIM");
    void *h;

    if (path == NULL || *path == '\0') {
        ct_fail("HSMPROV_SHIM is not set (run through ctest / tests/conc.sh)");
        return 0;
    }
    /* The copy hsmprov loaded: RTLD_NOLOAD never loads a second one. */
    h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL || p11shim_api_load(h, api) != 0) {
        ct_fail("the provider has not loaded the shim %s (%s)", path,
                h == NULL ? dlerror() : "symbols missing");
        return 0;
    }
    return 1;
}

int ct_shim_clean(const struct p11shim_api *api, const char *where)
{
    char why[2048];

    if (api->check_interleaving(why, sizeof(why)) != 0) {
        ct_fail("%s: the shim saw interleaved operations: %s", where, why);
        return 0;
    }
    printf("%s: shim: %s\n", where, why);
    return 1;
}

unsigned long ct_shim_count_rv(const struct p11shim_api *api, const char *fn, CK_RV rv)
{
    static struct p11shim_call log[16384];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    unsigned long n = 0;
    size_t got;

    pthread_mutex_lock(&mu);
    got = api->get_log(log, sizeof(log) / sizeof(log[0]));
    for (size_t i = 0; i < got; i++)
        if (strcmp(log[i].fn, fn) == 0 && log[i].rv == rv)
            n++;
    pthread_mutex_unlock(&mu);
    return n;
}

double ct_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static char watchdog_msg[256];

static void on_alarm(int sig)
{
    ssize_t r = write(2, watchdog_msg, strlen(watchdog_msg));

    (void)r;
    (void)sig;
    _exit(3);
}

void ct_watchdog(unsigned secs, const char *what)
{
    if (secs == 0) {
        alarm(0);
        return;
    }
    snprintf(
        watchdog_msg, sizeof(watchdog_msg),
        "FAIL: %s: still running after %u s (a hang: lost lease or deadlock)\nFAIL\n",
        what, secs);
    signal(SIGALRM, on_alarm);
    alarm(secs);
}
