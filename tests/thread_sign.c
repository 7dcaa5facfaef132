/*
 * Signatures with a token key from many threads and through duplicated
 * contexts, each checked by OpenSSL's default provider.
 *
 *   thread_sign [-t THREADS] [-n PER_THREAD] [-m DIGEST] [-p] MODE URI
 *
 *   MODE threads  THREADS threads share one EVP_PKEY loaded through
 *                 OSSL_STORE from URI; each makes PER_THREAD signatures of
 *                 its own distinct messages with EVP_DigestSign (one-shot and
 *                 streaming, alternately) and verifies every one with the
 *                 public key exported to the default provider.
 *   MODE dup      a dup (EVP_MD_CTX_copy_ex) of a digest-sign context after an update:
 *                 both copies finish with different data and both verify;
 *                 a copy outlives its freed original; a context initialised
 *                 in one thread is finished in another; contexts abandoned
 *                 mid-operation do not hold the token up.
 *   MODE reuse    one context signs three messages with EVP_DigestSign and
 *                 no init between them, and each signature verifies over its
 *                 own message (OpenSSL 3.0 allows that; before hsmprov had a
 *                 one-shot of its own, the second signed both messages);
 *                 the token verifies them through one reused context and
 *                 refuses a changed one; data given by updates before a
 *                 one-shot is signed with it; a one-shot refused for a small
 *                 buffer says so and leaves the context and the pool usable
 *                 (the test runs with a pool of one session: a session kept
 *                 by the failed call would stall the next signature).
 *   -p            RSA-PSS (salt length = digest length) instead of the key's
 *                 default scheme.
 *
 * The provider comes from OPENSSL_CONF (tests/thread_sign.sh writes it). Any
 * wrong signature, failed call or stale error left on a successful path
 * (DESIGN §6) makes the exit status non-zero.
 */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static EVP_PKEY *token_key;  /* shared by all threads, from hsmprov */
static EVP_PKEY *soft_pub;   /* its public half, in the default provider */
static const char *md_name = "SHA256";
static int use_pss;
static int per_thread = 100;
static atomic_int failures;

static void fail(const char *fmt, ...)
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

/* Nothing may be left on the error queue by a path that succeeded. */
static int queue_clean(const char *where)
{
    if (ERR_peek_error() == 0)
        return 1;
    fail("stale error on the queue after a successful %s", where);
    return 0;
}

static EVP_PKEY *load_token_key(const char *uri)
{
    OSSL_STORE_CTX *store;
    EVP_PKEY *pkey = NULL;

    store = OSSL_STORE_open_ex(uri, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    if (store == NULL) {
        fail("OSSL_STORE_open_ex(%s)", uri);
        return NULL;
    }
    if (!OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY))
        fail("OSSL_STORE_expect");
    while (pkey == NULL && !OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);

        if (info == NULL)
            continue;
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    if (pkey == NULL)
        fail("no private key at %s", uri);
    return pkey;
}

/* The public half, re-decoded into the default provider. */
static EVP_PKEY *default_provider_pub(EVP_PKEY *pkey)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    EVP_PKEY *pub;
    int len;

    len = i2d_PUBKEY(pkey, &der);
    if (len <= 0) {
        fail("i2d_PUBKEY of the token key");
        return NULL;
    }
    p = der;
    pub = d2i_PUBKEY_ex(NULL, &p, len, NULL, "provider=default");
    OPENSSL_free(der);
    if (pub == NULL)
        fail("d2i_PUBKEY_ex into the default provider");
    return pub;
}

static int set_padding(EVP_PKEY_CTX *pctx)
{
    if (!use_pss)
        return 1;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0
           && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
}

static EVP_MD_CTX *sign_init(void)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;

    if (mctx == NULL
        || !EVP_DigestSignInit_ex(mctx, &pctx, md_name, NULL, NULL, token_key, NULL)
        || !set_padding(pctx)) {
        fail("EVP_DigestSignInit_ex");
        EVP_MD_CTX_free(mctx);
        return NULL;
    }
    return mctx;
}

/* Finish a digest-sign context into a fresh buffer (*sig, *siglen). */
static int sign_final(EVP_MD_CTX *mctx, unsigned char **sig, size_t *siglen)
{
    *sig = NULL;
    if (!EVP_DigestSignFinal(mctx, NULL, siglen)
        || (*sig = OPENSSL_malloc(*siglen)) == NULL
        || !EVP_DigestSignFinal(mctx, *sig, siglen)) {
        fail("EVP_DigestSignFinal");
        OPENSSL_free(*sig);
        *sig = NULL;
        return 0;
    }
    return 1;
}

static int sign_oneshot(const unsigned char *msg, size_t len, unsigned char **sig,
                        size_t *siglen)
{
    EVP_MD_CTX *mctx = sign_init();
    int ok = 0;

    *sig = NULL;
    if (mctx == NULL)
        return 0;
    if (!EVP_DigestSign(mctx, NULL, siglen, msg, len)
        || (*sig = OPENSSL_malloc(*siglen)) == NULL
        || !EVP_DigestSign(mctx, *sig, siglen, msg, len)) {
        fail("EVP_DigestSign");
        OPENSSL_free(*sig);
        *sig = NULL;
    } else {
        ok = 1;
    }
    EVP_MD_CTX_free(mctx);
    return ok;
}

/* Streaming: three updates, then final. */
static int sign_streaming(const unsigned char *msg, size_t len, unsigned char **sig,
                          size_t *siglen)
{
    EVP_MD_CTX *mctx = sign_init();
    size_t a = len / 3, b = len / 2;
    int ok;

    *sig = NULL;
    if (mctx == NULL)
        return 0;
    if (!EVP_DigestSignUpdate(mctx, msg, a)
        || !EVP_DigestSignUpdate(mctx, msg + a, b - a)
        || !EVP_DigestSignUpdate(mctx, msg + b, len - b)) {
        fail("EVP_DigestSignUpdate");
        EVP_MD_CTX_free(mctx);
        return 0;
    }
    ok = sign_final(mctx, sig, siglen);
    EVP_MD_CTX_free(mctx);
    return ok;
}

/* Verified by the default provider: 1 good, 0 bad, -1 error. */
static int verify(const unsigned char *msg, size_t len, const unsigned char *sig,
                  size_t siglen)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int rv = -1;

    if (mctx != NULL
        && EVP_DigestVerifyInit_ex(mctx, &pctx, md_name, NULL, "provider=default",
                                   soft_pub, NULL)
        && set_padding(pctx))
        rv = EVP_DigestVerify(mctx, sig, siglen, msg, len);
    if (rv < 0) {
        fail("EVP_DigestVerify setup");
        rv = -1;
    }
    EVP_MD_CTX_free(mctx);
    ERR_clear_error(); /* a bad signature leaves an error: that is expected */
    return rv;
}

static void make_message(unsigned char *msg, size_t len, int thread, int i)
{
    size_t n;

    /* Distinct per thread and per iteration; the tail varies in length. */
    n = (size_t)snprintf((char *)msg, len, "thread %d message %d:", thread, i);
    for (; n < len; n++)
        msg[n] = (unsigned char)(thread * 131 + i * 7 + n);
}

static void *sign_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    unsigned char msg[1200];

    ERR_clear_error();
    for (int i = 0; i < per_thread && atomic_load(&failures) < 10; i++) {
        size_t len = 100 + (size_t)((id * 37 + i * 11) % 1000);
        unsigned char *sig = NULL;
        size_t siglen = 0;
        int ok;

        make_message(msg, len, id, i);
        ok = (i % 2 == 0) ? sign_oneshot(msg, len, &sig, &siglen)
                          : sign_streaming(msg, len, &sig, &siglen);
        if (!ok)
            continue;
        queue_clean("signature");
        if (verify(msg, len, sig, siglen) != 1)
            fail("thread %d signature %d (%zu bytes, %s) does not verify", id, i, siglen,
                 i % 2 == 0 ? "one-shot" : "streaming");
        /* A signature of this message must not verify another one. */
        if (i == 0) {
            msg[len - 1] ^= 1;
            if (verify(msg, len, sig, siglen) != 0)
                fail("thread %d: signature verifies a changed message", id);
        }
        OPENSSL_free(sig);
    }
    OPENSSL_thread_stop();
    return NULL;
}

static int run_threads(int nthreads)
{
    pthread_t *tids = calloc((size_t)nthreads, sizeof(*tids));

    if (tids == NULL)
        return 0;
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&tids[t], NULL, sign_thread, (void *)(intptr_t)t) != 0) {
            fail("pthread_create");
            nthreads = t;
            break;
        }
    for (int t = 0; t < nthreads; t++)
        pthread_join(tids[t], NULL);
    free(tids);
    printf("%d threads x %d signatures: %d failures\n", nthreads, per_thread,
           atomic_load(&failures));
    return atomic_load(&failures) == 0;
}

/* out = a followed by b; returns the length. */
static size_t join(unsigned char *out, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    memcpy(out, a, la);
    memcpy(out + la, b, lb);
    return la + lb;
}

/* EVP_MD_CTX_dup() is OpenSSL 3.1+; on 3.0 it is new + copy_ex (the
 * provider's dupctx either way). */
static EVP_MD_CTX *md_ctx_dup(const EVP_MD_CTX *in)
{
    EVP_MD_CTX *out = EVP_MD_CTX_new();

    if (out != NULL && !EVP_MD_CTX_copy_ex(out, in)) {
        EVP_MD_CTX_free(out);
        out = NULL;
    }
    return out;
}

struct finish_job {
    EVP_MD_CTX *mctx;
    const char *tail;
    unsigned char *sig;
    size_t siglen;
    int ok;
};

static void *finish_thread(void *arg)
{
    struct finish_job *job = arg;

    job->ok = EVP_DigestSignUpdate(job->mctx, job->tail, strlen(job->tail))
              && sign_final(job->mctx, &job->sig, &job->siglen);
    if (!job->ok)
        fail("finishing a context in another thread");
    OPENSSL_thread_stop();
    return NULL;
}

static int run_dup(void)
{
    static const char prefix[] = "a common prefix, hashed before the dup; ";
    unsigned char m[256];
    unsigned char *sig1 = NULL, *sig2 = NULL;
    size_t sig1len = 0, sig2len = 0, mlen;
    EVP_MD_CTX *orig, *copy;
    int before = atomic_load(&failures);

    /* 1. dup after an update; the two copies diverge. */
    ERR_clear_error();
    orig = sign_init();
    if (orig == NULL || !EVP_DigestSignUpdate(orig, prefix, strlen(prefix))) {
        fail("init/update before dup");
        return 0;
    }
    copy = md_ctx_dup(orig);
    if (copy == NULL) {
        fail("EVP_MD_CTX_copy_ex of a digest-sign context");
        EVP_MD_CTX_free(orig);
        return 0;
    }
    if (!EVP_DigestSignUpdate(orig, "first ending", 12)
        || !EVP_DigestSignUpdate(copy, "second, other ending", 20)) {
        fail("update after dup");
    } else if (sign_final(orig, &sig1, &sig1len) && sign_final(copy, &sig2, &sig2len)) {
        queue_clean("dup and finish");
        mlen = join(m, prefix, "first ending");
        if (verify(m, mlen, sig1, sig1len) != 1)
            fail("original context's signature does not verify");
        if (verify(m, mlen, sig2, sig2len) != 0)
            fail("the copy's signature verifies the original's message");
        mlen = join(m, prefix, "second, other ending");
        if (verify(m, mlen, sig2, sig2len) != 1)
            fail("duplicated context's signature does not verify");
    }
    OPENSSL_free(sig1);
    OPENSSL_free(sig2);
    sig1 = sig2 = NULL;
    EVP_MD_CTX_free(orig);
    EVP_MD_CTX_free(copy);
    printf("dup: both copies sign and verify\n");

    /* 2. the copy outlives its original, freed before either finished. */
    orig = sign_init();
    if (orig != NULL && EVP_DigestSignUpdate(orig, prefix, strlen(prefix))
        && (copy = md_ctx_dup(orig)) != NULL) {
        EVP_MD_CTX_free(orig);
        orig = NULL;
        if (EVP_DigestSignUpdate(copy, "tail", 4) && sign_final(copy, &sig1, &sig1len)) {
            mlen = join(m, prefix, "tail");
            if (verify(m, mlen, sig1, sig1len) != 1)
                fail("copy signed after its original was freed does not verify");
        }
        OPENSSL_free(sig1);
        sig1 = NULL;
        EVP_MD_CTX_free(copy);
    } else {
        fail("dup for the free-the-original case");
        EVP_MD_CTX_free(orig);
    }
    printf("dup: a copy outlives its freed original\n");

    /* 3. initialised here, finished in another thread. */
    {
        struct finish_job job = { 0 };
        pthread_t tid;

        job.mctx = sign_init();
        job.tail = "finished elsewhere";
        if (job.mctx != NULL && EVP_DigestSignUpdate(job.mctx, prefix, strlen(prefix))
            && pthread_create(&tid, NULL, finish_thread, &job) == 0) {
            pthread_join(tid, NULL);
            if (job.ok) {
                mlen = join(m, prefix, job.tail);
                if (verify(m, mlen, job.sig, job.siglen) != 1)
                    fail("signature finished in another thread does not verify");
            }
        } else {
            fail("set-up of the cross-thread case");
        }
        OPENSSL_free(job.sig);
        EVP_MD_CTX_free(job.mctx);
    }
    printf("dup: a context started in one thread finishes in another\n");

    /* 4. many contexts abandoned mid-operation, then signing still works. */
    for (int i = 0; i < 64; i++) {
        EVP_MD_CTX *c = sign_init();

        if (c == NULL || !EVP_DigestSignUpdate(c, prefix, strlen(prefix)))
            fail("abandoned context %d", i);
        EVP_MD_CTX_free(c);
    }
    mlen = join(m, prefix, "after abandoned contexts");
    if (sign_oneshot(m, mlen, &sig1, &sig1len) && verify(m, mlen, sig1, sig1len) != 1)
        fail("signature after abandoned contexts does not verify");
    OPENSSL_free(sig1);
    printf("dup: 64 abandoned contexts, then a good signature\n");

    return atomic_load(&failures) == before;
}

/* Whether the newest error on the queue holds text; the queue is emptied. */
static int error_says(const char *text)
{
    const char *data = NULL;
    unsigned long e = ERR_peek_last_error_data(&data, NULL);
    int ok = e != 0 && data != NULL && strstr(data, text) != NULL;

    if (!ok)
        fail("the error should say \"%s\"; it says \"%s\"", text, data != NULL ? data : "");
    ERR_clear_error();
    return ok;
}

/* A one-shot on ctx into sig (room: *siglen), checked against msg. */
static int reuse_sign(EVP_MD_CTX *ctx, const char *what, const unsigned char *msg,
                      size_t len, const unsigned char *tbs, size_t tbslen,
                      unsigned char *sig, size_t *siglen)
{
    if (EVP_DigestSign(ctx, sig, siglen, tbs, tbslen) <= 0) {
        fail("EVP_DigestSign (%s) on a reused context", what);
        return 0;
    }
    if (!queue_clean(what))
        return 0;
    if (verify(msg, len, sig, *siglen) != 1) {
        fail("%s: the signature does not verify over its own message", what);
        return 0;
    }
    return 1;
}

static int run_reuse(void)
{
    static const char *const msgs[] = {"the first message", "a second, longer message",
                                       "3rd"};
    unsigned char sig[1024], *other = NULL;
    size_t siglen, otherlen;
    EVP_MD_CTX *s = sign_init(), *v = EVP_MD_CTX_new();
    EVP_PKEY_CTX *vp = NULL;
    int before = atomic_load(&failures), r;

    if (s == NULL || v == NULL ||
        !EVP_DigestVerifyInit_ex(v, &vp, md_name, NULL, NULL, token_key, NULL) ||
        !set_padding(vp)) {
        fail("init of the reused contexts");
        goto end;
    }
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        const unsigned char *m = (const unsigned char *)msgs[i];
        size_t len = strlen(msgs[i]);

        siglen = sizeof(sig);
        if (!reuse_sign(s, msgs[i], m, len, m, len, sig, &siglen))
            goto end;
        if ((r = EVP_DigestVerify(v, sig, siglen, m, len)) != 1) {
            fail("the token's EVP_DigestVerify on a reused context: %d for \"%s\"", r,
                 msgs[i]);
            goto end;
        }
        sig[siglen / 2] ^= 0x01;
        if (EVP_DigestVerify(v, sig, siglen, m, len) == 1) {
            fail("the token accepted a changed signature of \"%s\"", msgs[i]);
            goto end;
        }
        ERR_clear_error();
    }
    printf("reuse: 3 one-shot signatures from one context, each over its own message\n");

    siglen = sizeof(sig);
    if (EVP_DigestSignUpdate(s, "prefix, ", 8) <= 0 ||
        !reuse_sign(s, "update, then one-shot", (const unsigned char *)"prefix, tail", 12,
                    (const unsigned char *)"tail", 4, sig, &siglen))
        goto end;
    printf("reuse: data of an update before a one-shot is signed with it\n");

    siglen = 8;
    if (EVP_DigestSign(s, sig, &siglen, (const unsigned char *)"x", 1) > 0) {
        fail("EVP_DigestSign into 8 bytes succeeded");
        goto end;
    }
    if (!error_says("signature buffer of 8 bytes, need "))
        goto end;
    siglen = sizeof(sig);
    if (!reuse_sign(s, "after a refused one-shot", (const unsigned char *)"after", 5,
                    (const unsigned char *)"after", 5, sig, &siglen))
        goto end;
    if (!sign_oneshot((const unsigned char *)"another context", 15, &other, &otherlen) ||
        verify((const unsigned char *)"another context", 15, other, otherlen) != 1)
        fail("another context after a refused one-shot");
    else
        printf("reuse: a refused one-shot leaves the context and the pool usable\n");
end:
    OPENSSL_free(other);
    EVP_MD_CTX_free(s);
    EVP_MD_CTX_free(v);
    return atomic_load(&failures) == before;
}

int main(int argc, char **argv)
{
    int nthreads = 8, opt, ok = 0;
    const char *mode, *uri;

    while ((opt = getopt(argc, argv, "t:n:m:p")) != -1) {
        switch (opt) {
        case 't':
            nthreads = atoi(optarg);
            break;
        case 'n':
            per_thread = atoi(optarg);
            break;
        case 'm':
            md_name = optarg;
            break;
        case 'p':
            use_pss = 1;
            break;
        default:
            goto usage;
        }
    }
    if (argc - optind != 2 || nthreads < 1 || per_thread < 1)
        goto usage;
    mode = argv[optind];
    uri = argv[optind + 1];

    if (!OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL)) {
        fail("OPENSSL_init_crypto (OPENSSL_CONF)");
        return 1;
    }
    token_key = load_token_key(uri);
    if (token_key == NULL)
        return 1;
    soft_pub = default_provider_pub(token_key);
    if (soft_pub == NULL)
        return 1;
    printf("key %s: %s, %d bits\n", uri, EVP_PKEY_get0_type_name(token_key),
           EVP_PKEY_get_bits(token_key));
    ERR_clear_error();

    if (strcmp(mode, "threads") == 0)
        ok = run_threads(nthreads);
    else if (strcmp(mode, "dup") == 0)
        ok = run_dup();
    else if (strcmp(mode, "reuse") == 0)
        ok = run_reuse();
    else
        goto usage;

    EVP_PKEY_free(soft_pub);
    EVP_PKEY_free(token_key);
    printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;

usage:
    fprintf(stderr, "usage: %s [-t threads] [-n per-thread] [-m digest] [-p] threads|dup|reuse URI\n",
            argv[0]);
    return 2;
}
