/*
 * ECDH and random numbers from the token under threads, and hostile peer
 * keys (run through tests/conc.sh: hsmprov over the fault-injection shim over
 * SoftHSM2, which counts the calls that reach the token).
 *
 *   exchange_rand ecdh THREADS N   THREADS threads each derive N secrets with
 *                                  the one shared token key "ec" (P-256) and
 *                                  a fresh software peer key each time; every
 *                                  secret equals the software answer
 *   exchange_rand ecdh_params      size query, a short buffer, cofactor mode
 *                                  accepted, a KDF refused clearly
 *   exchange_rand bad_point        a peer point that is not on the curve is
 *                                  refused before the token sees it
 *   exchange_rand in_memory        key shares as libssl makes them when hsmprov
 *                                  is preferred: an EC key generated without
 *                                  pkcs11_uri, a peer made from the curve and
 *                                  an encoded point; both derive (and the token
 *                                  key with such a peer) equal to software; no
 *                                  C_GenerateKeyPair, C_DeriveKey only for the
 *                                  token key; off-curve points, signing and
 *                                  replacing a key pair's point refused
 *   exchange_rand rand THREADS N   the token's generator as OpenSSL's default
 *                                  (RAND_set_DRBG_type, as [random_sect]
 *                                  does): THREADS threads call RAND_bytes,
 *                                  RAND_priv_bytes and one shared EVP_RAND_CTX
 *                                  N times each; every request reaches
 *                                  C_GenerateRandom, no two outputs are equal
 */
#include "conc_util.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ct_key key;
static struct p11shim_api shim;
static int nthreads = 8, per_thread = 20;

/* The public half of a key as a key of its own (hsmprov's key management
 * takes no private material, as for any software key). */
static EVP_PKEY *public_only(EVP_PKEY *k)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_PUBKEY(k, &der);
    EVP_PKEY *pub;

    if (len <= 0)
        return NULL;
    p = der;
    pub = d2i_PUBKEY(NULL, &p, len);
    OPENSSL_free(der);
    return pub;
}

/* priv with peer, in whichever provider priv's key belongs to. */
static int derive(EVP_PKEY *priv, EVP_PKEY *peer, unsigned char *out, size_t *len,
                  char *err, size_t errlen)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    int ok = c != NULL && EVP_PKEY_derive_init(c) > 0 &&
             EVP_PKEY_derive_set_peer(c, peer) > 0 && EVP_PKEY_derive(c, out, len) > 0;

    if (!ok)
        ct_errors(err, errlen);
    EVP_PKEY_CTX_free(c);
    return ok;
}

static void *ecdh_thread(void *arg)
{
    int who = (int)(long)arg;

    for (int i = 0; i < per_thread; i++) {
        EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        EVP_PKEY *peer_pub = peer != NULL ? public_only(peer) : NULL;
        unsigned char tok[80], soft[80];
        size_t tlen = sizeof(tok), slen = sizeof(soft);
        char err[1024] = "";

        if (peer_pub == NULL) {
            ct_fail("thread %d: no software peer key", who);
        } else if (!derive(key.tok, peer_pub, tok, &tlen, err, sizeof(err))) {
            ct_fail("thread %d, secret %d: token derive failed: %s", who, i, err);
        } else if (!derive(peer, key.pub, soft, &slen, err, sizeof(err))) {
            ct_fail("thread %d, secret %d: software derive failed: %s", who, i, err);
        } else if (tlen != 32 || tlen != slen || memcmp(tok, soft, tlen) != 0) {
            ct_fail("thread %d, secret %d: the token's secret (%zu bytes) differs from "
                    "the software one (%zu bytes)",
                    who, i, tlen, slen);
        }
        EVP_PKEY_free(peer_pub);
        EVP_PKEY_free(peer);
    }
    OPENSSL_thread_stop();
    return NULL;
}

static int mode_ecdh(void)
{
    pthread_t th[64];
    unsigned long before = shim.call_count("C_DeriveKey"), made;

    for (int t = 0; t < nthreads; t++)
        pthread_create(&th[t], NULL, ecdh_thread, (void *)(long)t);
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    made = shim.call_count("C_DeriveKey") - before;
    if (made < (unsigned long)(nthreads * per_thread))
        ct_fail(
            "only %lu C_DeriveKey calls for %d secrets: not all were made in the token",
            made, nthreads * per_thread);
    if (shim.call_count("C_DestroyObject") < made)
        ct_fail("fewer C_DestroyObject than C_DeriveKey: a secret stayed in the token");
    printf("%d threads x %d secrets, %lu C_DeriveKey, all equal to software\n", nthreads,
           per_thread, made);
    ct_shim_clean(&shim, "ecdh");
    return ct_result("ecdh threads");
}

static int mode_ecdh_params(void)
{
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *peer_pub = public_only(peer);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, key.tok, NULL);
    unsigned char full[64], part[64], soft[64];
    size_t len = 0, slen = sizeof(soft);
    char err[1024] = "";
    int mode = 0;

    if (c == NULL || EVP_PKEY_derive_init(c) <= 0 ||
        EVP_PKEY_derive_set_peer(c, peer_pub) <= 0) {
        ct_fail("derive init with the token key");
        return ct_result("ecdh params");
    }
    if (EVP_PKEY_derive(c, NULL, &len) <= 0 || len != 32)
        ct_fail("size query: %zu, not 32", len);
    if (EVP_PKEY_CTX_set_ecdh_cofactor_mode(c, 1) <= 0 ||
        EVP_PKEY_CTX_get_ecdh_cofactor_mode(c) != 1)
        ct_fail("cofactor mode 1 (the same secret on a curve of cofactor 1) refused");
    len = sizeof(full);
    if (EVP_PKEY_derive(c, full, &len) <= 0 || len != 32)
        ct_fail("derive with cofactor mode 1");
    if (!derive(peer, key.pub, soft, &slen, err, sizeof(err)) || slen != 32 ||
        memcmp(full, soft, 32) != 0)
        ct_fail("the secret differs from the software one: %s", err);
    len = 16;
    if (EVP_PKEY_derive(c, part, &len) <= 0 || len != 16 || memcmp(part, full, 16) != 0)
        ct_fail("a 16-byte buffer does not get the secret's first 16 bytes");
    ERR_clear_error();
    if (EVP_PKEY_CTX_set_ecdh_kdf_type(c, EVP_PKEY_ECDH_KDF_X9_63) > 0) {
        ct_fail("the X9.63 KDF was accepted: hsmprov applies none");
    } else {
        ct_errors(err, sizeof(err));
        if (strstr(err, "applies no KDF") == NULL)
            ct_fail("the KDF refusal does not say why: %s", err);
        else
            printf("KDF refused: %s\n", err);
    }
    if (EVP_PKEY_CTX_set_ecdh_kdf_type(c, EVP_PKEY_ECDH_KDF_NONE) <= 0)
        ct_fail("KDF none refused");
    (void)mode;
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(peer_pub);
    EVP_PKEY_free(peer);
    return ct_result("ecdh params");
}

static int mode_bad_point(void)
{
    EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char pt[65];
    size_t ptlen = 0;
    EVP_PKEY *bad = NULL;
    EVP_PKEY_CTX *fc, *c;
    OSSL_PARAM params[3];
    char err[2048] = "";
    unsigned long before = shim.call_count("C_DeriveKey");

    if (peer == NULL ||
        !EVP_PKEY_get_octet_string_param(peer, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt),
                                         &ptlen) ||
        ptlen != 65) {
        ct_fail("no P-256 point");
        return ct_result("bad point");
    }
    pt[64] ^= 1; /* Y changed: not on the curve */
    /* A key of hsmprov's key management, which takes a public point as
     * given; OpenSSL's own would refuse to make it at all. */
    params[0] =
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen);
    params[2] = OSSL_PARAM_construct_end();
    fc = EVP_PKEY_CTX_new_from_name(NULL, "EC", "provider=hsmprov");
    if (fc == NULL || EVP_PKEY_fromdata_init(fc) <= 0 ||
        EVP_PKEY_fromdata(fc, &bad, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        ct_fail("cannot make the bad peer key in hsmprov's key management");
        return ct_result("bad point");
    }
    c = EVP_PKEY_CTX_new_from_pkey(NULL, key.tok, NULL);
    if (c == NULL || EVP_PKEY_derive_init(c) <= 0) {
        ct_fail("derive init");
    } else if (EVP_PKEY_derive_set_peer_ex(c, bad, 0) > 0) {
        ct_fail("a peer point off the curve was accepted");
    } else {
        ct_errors(err, sizeof(err));
        if (strstr(err, "not a point on curve prime256v1") == NULL)
            ct_fail("the refusal does not say what is wrong: %s", err);
        else
            printf("refused: %s\n", err);
    }
    if (shim.call_count("C_DeriveKey") != before)
        ct_fail("C_DeriveKey was called with the bad point");
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_CTX_free(fc);
    EVP_PKEY_free(bad);
    EVP_PKEY_free(peer);
    return ct_result("bad point");
}

/* The calls libssl makes for a key share under "?provider=hsmprov"
 * (ssl_generate_pkey_group, ssl_generate_param_group). */
#define PREFER "?provider=hsmprov"

static EVP_PKEY *share_keygen(const char *group, int params_only)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", PREFER);
    EVP_PKEY *k = NULL;
    int ok = c != NULL &&
             (params_only ? EVP_PKEY_paramgen_init(c) : EVP_PKEY_keygen_init(c)) > 0 &&
             EVP_PKEY_CTX_set_group_name(c, group) > 0 &&
             (params_only ? EVP_PKEY_paramgen(c, &k) : EVP_PKEY_keygen(c, &k)) > 0;

    EVP_PKEY_CTX_free(c);
    if (!ok) {
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

/* A peer key as libssl makes it from a received share. */
static EVP_PKEY *share_peer(const char *group, const unsigned char *pt, size_t len)
{
    EVP_PKEY *p = share_keygen(group, 1);

    if (p != NULL && EVP_PKEY_set1_encoded_public_key(p, pt, len) <= 0) {
        EVP_PKEY_free(p);
        return NULL;
    }
    return p;
}

static int from_hsmprov(EVP_PKEY *k)
{
    const OSSL_PROVIDER *p = EVP_PKEY_get0_provider(k);

    return p != NULL && strcmp(OSSL_PROVIDER_get0_name(p), "hsmprov") == 0;
}

static int mode_in_memory(void)
{
    unsigned long gen0 = shim.call_count("C_GenerateKeyPair");
    unsigned long der0 = shim.call_count("C_DeriveKey");
    EVP_PKEY *mine = share_keygen("P-256", 0),
             *soft = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *peer = NULL, *mine_pub = NULL, *bad = NULL;
    unsigned char *mpt = NULL, *spt = NULL, a[80], b[80];
    size_t mlen, slen, alen = sizeof(a), blen = sizeof(b);
    char err[2048] = "";
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (mine == NULL || soft == NULL) {
        ct_errors(err, sizeof(err));
        ct_fail("no key share made without pkcs11_uri: %s", err);
        goto end;
    }
    if (!from_hsmprov(mine))
        ct_fail("the key share is not hsmprov's: the preference was not tested");
    if (EVP_PKEY_get_bits(mine) != 256 || EVP_PKEY_get_security_bits(mine) != 128)
        ct_fail("bits %d, security bits %d: not those of P-256", EVP_PKEY_get_bits(mine),
                EVP_PKEY_get_security_bits(mine));
    mlen = EVP_PKEY_get1_encoded_public_key(mine, &mpt);
    slen = EVP_PKEY_get1_encoded_public_key(soft, &spt);
    if (mlen != 65 || slen != 65) {
        ct_fail("encoded public keys of %zu and %zu bytes", mlen, slen);
        goto end;
    }
    /* Our share with the software peer's, and the software key with ours. */
    peer = share_peer("P-256", spt, slen);
    mine_pub = EVP_PKEY_new();
    if (peer == NULL || !from_hsmprov(peer) || mine_pub == NULL ||
        EVP_PKEY_copy_parameters(mine_pub, mine) <= 0 ||
        EVP_PKEY_set1_encoded_public_key(mine_pub, mpt, mlen) <= 0) {
        ct_errors(err, sizeof(err));
        ct_fail("peer keys from an encoded point: %s", err);
        goto end;
    }
    if (!derive(mine, peer, a, &alen, err, sizeof(err)))
        ct_fail("derive with the in-memory key: %s", err);
    else if (!derive(soft, mine_pub, b, &blen, err, sizeof(err)))
        ct_fail("software derive: %s", err);
    else if (alen != 32 || alen != blen || memcmp(a, b, alen) != 0)
        ct_fail("the in-memory key's secret differs from the software one");
    /* The token key with a peer made the same way: still in the token. */
    alen = blen = sizeof(a);
    if (!derive(key.tok, peer, a, &alen, err, sizeof(err)))
        ct_fail("derive with the token key: %s", err);
    else if (!derive(soft, key.pub, b, &blen, err, sizeof(err)))
        ct_fail("software derive with the token's public key: %s", err);
    else if (alen != 32 || alen != blen || memcmp(a, b, alen) != 0)
        ct_fail("the token key's secret differs from the software one");
    if (shim.call_count("C_GenerateKeyPair") != gen0)
        ct_fail("C_GenerateKeyPair reached the token for a key share");
    if (shim.call_count("C_DeriveKey") != der0 + 1)
        ct_fail("%lu C_DeriveKey calls: one was expected (the token key's)",
                shim.call_count("C_DeriveKey") - der0);
    /* A point off the curve never becomes a key. */
    spt[64] ^= 1;
    ERR_clear_error();
    if ((bad = share_peer("P-256", spt, slen)) != NULL) {
        ct_fail("a point off the curve was accepted as the peer's share");
    } else {
        ct_errors(err, sizeof(err));
        if (strstr(err, "is not a point on curve prime256v1") == NULL)
            ct_fail("the off-curve refusal does not say what is wrong: %s", err);
        else
            printf("off-curve share refused: %s\n", err);
    }
    /* A share is not a signing key, and a key pair keeps its point. */
    ERR_clear_error();
    if (md == NULL ||
        EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, PREFER, mine, NULL) > 0) {
        ct_fail("the in-memory key was accepted for signing");
    } else {
        ct_errors(err, sizeof(err));
        if (strstr(err, "made in memory, not in a token, because no pkcs11_uri") == NULL)
            ct_fail("the signing refusal does not say why: %s", err);
        else
            printf("signing refused: %s\n", err);
    }
    ERR_clear_error();
    if (EVP_PKEY_set1_encoded_public_key(mine, mpt, mlen) > 0)
        ct_fail("the point of an in-memory key pair was replaced");
    ERR_clear_error();
end:
    EVP_MD_CTX_free(md);
    OPENSSL_free(mpt);
    OPENSSL_free(spt);
    EVP_PKEY_free(bad);
    EVP_PKEY_free(mine_pub);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(soft);
    EVP_PKEY_free(mine);
    ct_shim_clean(&shim, "in_memory");
    return ct_result("in memory");
}

/* Random outputs of every thread, for the uniqueness check. */
#define RAND_LEN 32
static unsigned char (*outputs)[RAND_LEN];
static EVP_RAND_CTX *shared_rand;

static void *rand_thread(void *arg)
{
    int who = (int)(long)arg;

    for (int i = 0; i < per_thread; i++) {
        unsigned char *o = outputs[(size_t)(who * per_thread + i) * 3];

        if (RAND_bytes(o, RAND_LEN) != 1)
            ct_fail("thread %d: RAND_bytes", who);
        if (RAND_priv_bytes(o + RAND_LEN, RAND_LEN) != 1)
            ct_fail("thread %d: RAND_priv_bytes", who);
        if (EVP_RAND_generate(shared_rand, o + 2 * RAND_LEN, RAND_LEN, 0, 0, NULL, 0) !=
            1)
            ct_fail("thread %d: EVP_RAND_generate on the shared context", who);
    }
    OPENSSL_thread_stop();
    return NULL;
}

static int cmp_out(const void *a, const void *b)
{
    return memcmp(a, b, RAND_LEN);
}

static int mode_rand(void)
{
    size_t n = (size_t)nthreads * per_thread * 3;
    EVP_RAND *r = EVP_RAND_fetch(NULL, "PKCS11-RAND", "provider=hsmprov");
    pthread_t th[64];
    unsigned long before, calls;
    unsigned char probe[RAND_LEN];

    outputs = calloc(n, RAND_LEN);
    shared_rand = r != NULL ? EVP_RAND_CTX_new(r, NULL) : NULL;
    if (shared_rand == NULL ||
        !EVP_RAND_instantiate(shared_rand, 256, 0, NULL, 0, NULL) ||
        !EVP_RAND_enable_locking(shared_rand)) {
        ct_fail("PKCS11-RAND from hsmprov");
        return ct_result("rand threads");
    }
    if (RAND_bytes(probe, sizeof(probe)) != 1) /* instantiates the default ones */
        ct_fail("RAND_bytes");
    before = shim.call_count("C_GenerateRandom");
    for (int t = 0; t < nthreads; t++)
        pthread_create(&th[t], NULL, rand_thread, (void *)(long)t);
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    calls = shim.call_count("C_GenerateRandom") - before;
    if (calls < n)
        ct_fail("%lu C_GenerateRandom calls for %zu requests: some were served elsewhere",
                calls, n);
    qsort(outputs, n, RAND_LEN, cmp_out);
    for (size_t i = 1; i < n; i++)
        if (memcmp(outputs[i - 1], outputs[i], RAND_LEN) == 0)
            ct_fail("two random outputs are equal");
    printf("%d threads x %d x 3 requests, %lu C_GenerateRandom, all outputs distinct\n",
           nthreads, per_thread, calls);
    EVP_RAND_CTX_free(shared_rand);
    EVP_RAND_free(r);
    free(outputs);
    ct_shim_clean(&shim, "rand");
    return ct_result("rand threads");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    if (argc > 2)
        nthreads = atoi(argv[2]);
    if (argc > 3)
        per_thread = atoi(argv[3]);
    if (nthreads < 1 || nthreads > 64 || per_thread < 1) {
        fprintf(stderr, "FAIL: bad arguments\n");
        return 2;
    }
    ct_watchdog(240, mode);
    /* Before the configuration loads and any generator is made: the token's
     * generator as the default, as [random_sect] random = PKCS11-RAND does. */
    if (strcmp(mode, "rand") == 0 &&
        !RAND_set_DRBG_type(NULL, "PKCS11-RAND", "provider=hsmprov", NULL, NULL)) {
        ct_fail("RAND_set_DRBG_type");
        return ct_result(mode);
    }
    if (!ct_init() || !ct_key_load(&key, "ec") || !ct_shim(&shim))
        return ct_result(mode);
    if (strcmp(mode, "ecdh") == 0)
        return mode_ecdh();
    if (strcmp(mode, "ecdh_params") == 0)
        return mode_ecdh_params();
    if (strcmp(mode, "bad_point") == 0)
        return mode_bad_point();
    if (strcmp(mode, "in_memory") == 0)
        return mode_in_memory();
    if (strcmp(mode, "rand") == 0)
        return mode_rand();
    ct_fail("unknown mode %s", mode);
    return ct_result(mode);
}
