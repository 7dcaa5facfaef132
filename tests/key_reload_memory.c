/*
 * What nginx does at every handshake when its ssl_certificate_key names a
 * variable: read the key file (PEM_read_bio_PrivateKey of a file that holds
 * a token key's URI), use the key once, free it. Done LOADS times here, each
 * signature verified in software with the public key; the memory in use
 * must not grow with the number of loads.
 *
 *   key_reload_memory KEYFILE PUBKEY.pem [LOADS [WARMUP [BOUND]]]
 *
 * LOADS (default 10000) loads; the heap in use and the resident set are
 * printed every STEP loads (WARMUP, default 1000) and at the end. Fails when
 * the heap in use after all loads exceeds that after the first WARMUP loads
 * by more than BOUND bytes (default 65536).
 *
 * Why 64 kB over 9,000 loads: a leak of one allocation per load, however
 * small, costs glibc at least 32 bytes (its smallest chunk), so 288 kB over
 * 9,000 loads; the bound is 7 bytes a load. The first 1,000 loads are left
 * out: they fill what is made once and kept (OpenSSL's decoder and method
 * caches, the provider's token and session pool, SoftHSM2's state), and what
 * is kept by size (hash tables that double) then settles.
 *
 * The heap in use is glibc's mallinfo2() (uordblks, in chunks, plus mmapped
 * blocks), or under a sanitizer, whose allocator glibc does not see, the
 * sanitizer's count of allocated bytes (asked for, not rounded to chunks).
 * There LeakSanitizer also checks at exit that nothing was lost. The process
 * is the whole of it: OpenSSL, hsmprov and the PKCS#11 module (SoftHSM2)
 * that it loads.
 */
#include <malloc.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Defined by the sanitizer runtimes (sanitizer/allocator_interface.h). */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

static size_t heap_in_use(void)
{
    struct mallinfo2 mi;

    if (__sanitizer_get_current_allocated_bytes != NULL)
        return __sanitizer_get_current_allocated_bytes();
    mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static long rss_kb(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int fail(const char *what, long i)
{
    fprintf(stderr, "FAIL: %s (load %ld)\n", what, i);
    ERR_print_errors_fp(stderr);
    return 1;
}

/* One load, as a server does it per handshake: read, sign, free. */
static int one_load(const char *keyfile, EVP_PKEY *pub, long i)
{
    static const unsigned char msg[] = "a handshake's transcript hash, or so";
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *m = NULL;
    const OSSL_PROVIDER *prov;
    BIO *in = BIO_new_file(keyfile, "r");
    int rc = 1;

    if (in == NULL)
        return fail("cannot open the key file", i);
    key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    BIO_free(in);
    if (key == NULL)
        return fail("the key file was not read", i);
    prov = EVP_PKEY_get0_provider(key);
    if (prov == NULL || strcmp(OSSL_PROVIDER_get0_name(prov), "hsmprov") != 0) {
        fail("the key read is not a token key of hsmprov", i);
        goto end;
    }
    m = EVP_MD_CTX_new();
    if (m == NULL || !EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, key, NULL) ||
        !EVP_DigestSign(m, sig, &siglen, msg, sizeof(msg))) {
        fail("signing with the key read", i);
        goto end;
    }
    EVP_MD_CTX_free(m);
    m = EVP_MD_CTX_new();
    if (m == NULL ||
        !EVP_DigestVerifyInit_ex(m, NULL, "SHA256", NULL, "provider=default", pub,
                                 NULL) ||
        EVP_DigestVerify(m, sig, siglen, msg, sizeof(msg)) != 1) {
        fail("the signature does not verify in software", i);
        goto end;
    }
    rc = 0;
end:
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(key);
    return rc;
}

int main(int argc, char **argv)
{
    long loads = 10000, warmup = 1000, bound = 65536, i;
    size_t heap_warm = 0, heap_end, heap0;
    long rss_warm = 0, rss0;
    EVP_PKEY *pub;
    BIO *pubin;

    if (argc < 3 || argc > 6) {
        fprintf(stderr,
                "usage: key_reload_memory KEYFILE PUBKEY.pem [LOADS [WARMUP [BOUND]]]\n");
        return 2;
    }
    if (argc > 3)
        loads = atol(argv[3]);
    if (argc > 4)
        warmup = atol(argv[4]);
    if (argc > 5)
        bound = atol(argv[5]);
    if (loads < 1 || warmup < 1 || warmup >= loads || bound < 0) {
        fprintf(stderr, "FAIL: need 0 < WARMUP < LOADS and BOUND >= 0\n");
        return 2;
    }
    /* The public key, read once by the default provider: no token. */
    pubin = BIO_new_file(argv[2], "r");
    pub = pubin != NULL
              ? PEM_read_bio_PUBKEY_ex(pubin, NULL, NULL, NULL, NULL, "provider=default")
              : NULL;
    BIO_free(pubin);
    if (pub == NULL)
        return fail("cannot read the public key", 0);

    heap0 = heap_in_use();
    rss0 = rss_kb();
    printf("%s: %ld loads (read, sign, verify, free), measured every %ld\n", argv[1],
           loads, warmup);
    printf("%8s %10s %14s\n", "loads", "RSS kB", "heap bytes");
    printf("%8d %10ld %14zu\n", 0, rss0, heap0);
    fflush(stdout);
    for (i = 1; i <= loads; i++) {
        if (one_load(argv[1], pub, i) != 0) {
            EVP_PKEY_free(pub);
            return 1;
        }
        if (i % warmup == 0 || i == loads) {
            size_t h = heap_in_use();
            long r = rss_kb();

            if (i == warmup) {
                heap_warm = h;
                rss_warm = r;
            }
            printf("%8ld %10ld %14zu\n", i, r, h);
            fflush(stdout);
        }
    }
    heap_end = heap_in_use();
    printf("after the first %ld loads: RSS %ld kB, heap %zu bytes; after all %ld: RSS "
           "%ld kB "
           "(%+ld kB), heap %zu bytes (%+ld bytes, %.2f bytes a load; bound %ld)\n",
           warmup, rss_warm, heap_warm, loads, rss_kb(), rss_kb() - rss_warm, heap_end,
           (long)heap_end - (long)heap_warm,
           ((double)heap_end - (double)heap_warm) / (double)(loads - warmup), bound);
    EVP_PKEY_free(pub);
    if ((long)heap_end - (long)heap_warm > bound) {
        fprintf(stderr,
                "FAIL: the heap in use grew by %ld bytes over %ld loads after the first "
                "%ld (bound %ld): something is kept per load\n",
                (long)heap_end - (long)heap_warm, loads - warmup, warmup, bound);
        return 1;
    }
    printf("PASS: %s\n", argv[1]);
    return 0;
}
