/*
 * Key generation in the token while other threads sign (run by tests/conc.sh,
 * through the fault-injection shim, which checks that no two operations ever
 * interleave on a session).
 *
 *   keygen_threads gen [-g GENERATORS] [-s SIGNERS] [-n KEYS]
 *       GENERATORS threads each generate KEYS keys (EC P-256, EC P-384,
 *       Ed25519 and RSA-2048 in turn), each under its own label, half of
 *       them with an id of their own and half with a chosen one; each new
 *       key signs at once (the EVP_PKEY genpkey returned), and the signature
 *       verifies in software with the public key read back from the token
 *       (OSSL_STORE, type=public). Meanwhile SIGNERS threads sign with the
 *       token's "ec" key, each signature verified in software, until the
 *       generators are done. Then every generated key is loaded again by
 *       its URI and signs once more.
 *   keygen_threads race [-g THREADS]
 *       THREADS threads generate under one label at the same moment: exactly
 *       one succeeds, the others are refused (label in use), and the token
 *       holds exactly one key pair under that label.
 */
#include "conc_util.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 64

static int n_gen = 8, n_sign = 8, n_keys = 3;
static atomic_int generators_left;
static atomic_long signatures;

static const char *const kinds[] = {"P-256", "P-384", "ED25519", "RSA"};

/* A URI for thread t's key i (id given for even i, chosen for odd i). */
static void key_uri(char *buf, size_t len, int t, int i, int with_id)
{
    if (with_id)
        snprintf(buf, len, "pkcs11:token=demo;object=gen-%d-%d;id=%%a%d%%%02x", t, i,
                 t % 10, i);
    else
        snprintf(buf, len, "pkcs11:token=demo;object=gen-%d-%d", t, i);
}

static EVP_PKEY *generate(const char *kind, const char *uri)
{
    int rsa = strcmp(kind, "RSA") == 0, ed = strcmp(kind, "ED25519") == 0;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL,
                                                   rsa  ? "RSA"
                                                   : ed ? "ED25519"
                                                        : "EC",
                                                   "provider=hsmprov");
    EVP_PKEY *pkey = NULL;
    size_t bits = 2048;
    OSSL_PARAM params[3];
    int n = 0;

    params[n++] = OSSL_PARAM_construct_utf8_string("pkcs11_uri", (char *)uri, 0);
    if (rsa)
        params[n++] = OSSL_PARAM_construct_size_t(OSSL_PKEY_PARAM_RSA_BITS, &bits);
    else if (!ed)
        params[n++] =
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)kind, 0);
    params[n] = OSSL_PARAM_construct_end();
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_params(ctx, params) <= 0 || EVP_PKEY_generate(ctx, &pkey) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* The public key of the token object at uri (type=public), in the default
 * provider. */
static EVP_PKEY *public_from_token(const char *uri)
{
    OSSL_STORE_CTX *store =
        OSSL_STORE_open_ex(uri, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    EVP_PKEY *tok = NULL, *pub = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    int len;

    if (store == NULL)
        return NULL;
    OSSL_STORE_expect(store, OSSL_STORE_INFO_PUBKEY);
    while (tok == NULL && !OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);

        if (info == NULL)
            break;
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PUBKEY)
            tok = OSSL_STORE_INFO_get1_PUBKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    if (tok == NULL)
        return NULL;
    len = i2d_PUBKEY(tok, &der);
    EVP_PKEY_free(tok);
    if (len <= 0)
        return NULL;
    p = der;
    pub = d2i_PUBKEY_ex(NULL, &p, len, NULL, "provider=default");
    OPENSSL_free(der);
    return pub;
}

/* Signs msg with key (SHA-256, or pure EdDSA) and verifies with pub in the
 * default provider. */
static int sign_verify(EVP_PKEY *key, EVP_PKEY *pub, const unsigned char *msg, size_t len)
{
    int ed = EVP_PKEY_is_a(pub, "ED25519");
    const char *md = ed ? NULL : "SHA256";
    EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    int ok =
        s != NULL && v != NULL &&
        EVP_DigestSignInit_ex(s, NULL, md, NULL, NULL, key, NULL) > 0 &&
        EVP_DigestSign(s, sig, &siglen, msg, len) > 0 &&
        EVP_DigestVerifyInit_ex(v, NULL, md, NULL, "provider=default", pub, NULL) > 0 &&
        EVP_DigestVerify(v, sig, siglen, msg, len) == 1;

    EVP_MD_CTX_free(s);
    EVP_MD_CTX_free(v);
    return ok;
}

static void *generator(void *arg)
{
    int t = (int)(intptr_t)arg;

    for (int i = 0; i < n_keys; i++) {
        const char *kind = kinds[(t + i) % 4];
        char uri[160], pub_uri[192];
        unsigned char msg[300];
        EVP_PKEY *key, *pub;

        key_uri(uri, sizeof(uri), t, i, i % 2 == 0);
        key = generate(kind, uri);
        if (key == NULL) {
            ct_fail("generating %s at %s", kind, uri);
            continue;
        }
        snprintf(pub_uri, sizeof(pub_uri),
                 "pkcs11:token=demo;object=gen-%d-%d;type=public", t, i);
        pub = public_from_token(pub_uri);
        ct_message(msg, sizeof(msg), 100 + t, i);
        if (pub == NULL)
            ct_fail("no public key at %s", pub_uri);
        else if (!sign_verify(key, pub, msg, sizeof(msg)))
            ct_fail("the new %s key %s does not sign at once", kind, uri);
        EVP_PKEY_free(pub);
        EVP_PKEY_free(key);
    }
    atomic_fetch_sub(&generators_left, 1);
    return NULL;
}

static ct_key ec_key;

static void *signer(void *arg)
{
    ct_alg a = {&ec_key, 0};
    int i = 0;

    (void)arg;
    /* At least a few each, and on for as long as keys are being made. */
    while (i < 10 || atomic_load(&generators_left) > 0) {
        if (!ct_sign_check(&a, "sign with ec while keys are generated"))
            break;
        atomic_fetch_add(&signatures, 1);
        i++;
    }
    return NULL;
}

/* Every generated key again, by its URI, as a later process would. */
static void reload_all(void)
{
    for (int t = 0; t < n_gen; t++)
        for (int i = 0; i < n_keys; i++) {
            char uri[128];
            unsigned char msg[64];
            EVP_PKEY *key, *pub;

            snprintf(uri, sizeof(uri), "pkcs11:token=demo;object=gen-%d-%d;type=private",
                     t, i);
            key = ct_store_load(uri);
            snprintf(uri, sizeof(uri), "pkcs11:token=demo;object=gen-%d-%d;type=public",
                     t, i);
            pub = public_from_token(uri);
            ct_message(msg, sizeof(msg), 200 + t, i);
            if (key == NULL || pub == NULL || !sign_verify(key, pub, msg, sizeof(msg)))
                ct_fail("generated key gen-%d-%d, loaded again, does not sign", t, i);
            EVP_PKEY_free(key);
            EVP_PKEY_free(pub);
        }
}

static int run_gen(void)
{
    pthread_t g[MAX_THREADS], s[MAX_THREADS];

    if (!ct_key_load(&ec_key, "ec"))
        return ct_result("keygen_threads gen");
    atomic_store(&generators_left, n_gen);
    for (int i = 0; i < n_sign; i++)
        pthread_create(&s[i], NULL, signer, NULL);
    for (int i = 0; i < n_gen; i++)
        pthread_create(&g[i], NULL, generator, (void *)(intptr_t)i);
    for (int i = 0; i < n_gen; i++)
        pthread_join(g[i], NULL);
    for (int i = 0; i < n_sign; i++)
        pthread_join(s[i], NULL);
    printf("%d keys generated by %d threads while %d threads made %ld signatures\n",
           n_gen * n_keys, n_gen, n_sign, atomic_load(&signatures));
    reload_all();
    ct_key_free(&ec_key);
    return ct_result("keygen_threads gen");
}

static pthread_barrier_t race_start;
static atomic_int race_won, race_refused;

static void *racer(void *arg)
{
    char errors[2048];
    EVP_PKEY *key;

    (void)arg;
    pthread_barrier_wait(&race_start);
    key = generate("P-256", "pkcs11:token=demo;object=race");
    if (key != NULL) {
        atomic_fetch_add(&race_won, 1);
        EVP_PKEY_free(key);
        return NULL;
    }
    ct_errors(errors, sizeof(errors));
    if (strstr(errors, "key with the same label") != NULL ||
        strstr(errors, "another thread of this process is generating a key") != NULL)
        atomic_fetch_add(&race_refused, 1);
    else
        ct_fail("a racing generation failed otherwise: %s", errors);
    return NULL;
}

static int run_race(void)
{
    pthread_t r[MAX_THREADS];
    OSSL_STORE_CTX *store;
    int n = 0;

    pthread_barrier_init(&race_start, NULL, (unsigned)n_gen);
    for (int i = 0; i < n_gen; i++)
        pthread_create(&r[i], NULL, racer, NULL);
    for (int i = 0; i < n_gen; i++)
        pthread_join(r[i], NULL);
    pthread_barrier_destroy(&race_start);
    printf("%d threads raced for one label: %d made the key, %d were refused\n", n_gen,
           atomic_load(&race_won), atomic_load(&race_refused));
    if (atomic_load(&race_won) != 1 || atomic_load(&race_refused) != n_gen - 1)
        ct_fail("expected exactly one key made and %d refusals", n_gen - 1);
    /* Exactly one private and one public object under the label. */
    store = OSSL_STORE_open_ex("pkcs11:token=demo;object=race", NULL, NULL, NULL, NULL,
                               NULL, NULL, NULL);
    while (store != NULL && !OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);

        if (info == NULL)
            break;
        n++;
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    if (n != 2)
        ct_fail(
            "the token holds %d objects labelled race, not a private and a public key",
            n);
    return ct_result("keygen_threads race");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "gen";
    int c;

    optind = 2;
    while ((c = getopt(argc, argv, "g:s:n:")) != -1) {
        switch (c) {
        case 'g':
            n_gen = atoi(optarg);
            break;
        case 's':
            n_sign = atoi(optarg);
            break;
        case 'n':
            n_keys = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    if (n_gen < 1 || n_gen > MAX_THREADS || n_sign < 0 || n_sign > MAX_THREADS ||
        n_keys < 1)
        return 2;
    ct_watchdog(240, "keygen_threads");
    if (!ct_init())
        return ct_result("keygen_threads");
    if (strcmp(mode, "race") == 0)
        return run_race();
    return run_gen();
}
