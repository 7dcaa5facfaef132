/*
 * Helpers shared by the concurrency tests (tests/conc_*.c, DESIGN §2):
 * token keys loaded through OSSL_STORE, signing through hsmprov, checking
 * every signature with OpenSSL's default provider, the fault-injection
 * shim's control API, failure counting and a watchdog.
 *
 * The provider comes from OPENSSL_CONF, written by tests/conc.sh, which points
 * pkcs11-module-path at the shim (HSMPROV_SHIM names it) over SoftHSM2.
 */
#ifndef CONC_UTIL_H
#define CONC_UTIL_H

#include <openssl/evp.h>
#include <stddef.h>

#include "shim/p11shim.h"

/* A token key and its public half in the default provider. */
typedef struct ct_key {
    const char *name; /* "ec" or "rsa": the object label */
    EVP_PKEY *tok;    /* hsmprov's key, from OSSL_STORE */
    EVP_PKEY *pub;    /* the public key, decoded by the default provider */
    int is_rsa;
} ct_key;

/* How to sign: the key, and for RSA PKCS#1 v1.5 or PSS. */
typedef struct ct_alg {
    ct_key *key;
    int pss;
} ct_alg;

/* Records a failure (printed with the OpenSSL error queue, which is emptied). */
void ct_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int ct_failures(void);
/* Prints "PASS"/"FAIL" and returns the exit status. */
int ct_result(const char *what);

/* Drains the error queue into buf (every error's reason and data). */
void ct_errors(char *buf, size_t len);

/* OPENSSL_init_crypto with the configuration; 0 on failure. */
int ct_init(void);
/* Loads pkcs11:token=demo;object=NAME;type=private; 0 on failure. */
int ct_key_load(ct_key *k, const char *name);
/* The first private key OSSL_STORE finds at uri, or NULL. */
EVP_PKEY *ct_store_load(const char *uri);
void ct_key_free(ct_key *k);

/* A digest-sign context (SHA-256) for alg; NULL on failure (recorded). */
EVP_MD_CTX *ct_sign_init(const ct_alg *a);
/* EVP_DigestSignFinal into sig (at least 512 bytes). */
int ct_sign_final(EVP_MD_CTX *m, unsigned char *sig, size_t *siglen);
/* Init, the message in `chunks` updates, final. */
int ct_sign_stream(const ct_alg *a, const unsigned char *msg, size_t len, int chunks,
                   unsigned char *sig, size_t *siglen);
/* Init and EVP_DigestSign (one call). */
int ct_sign_oneshot(const ct_alg *a, const unsigned char *msg, size_t len,
                    unsigned char *sig, size_t *siglen);
/* EVP_PKEY_sign of the SHA-256 hash of msg (a single-step token call). */
int ct_sign_hash(const ct_alg *a, const unsigned char *msg, size_t len,
                 unsigned char *sig, size_t *siglen);
/* Verified in software: 1 good, 0 bad, -1 error. */
int ct_verify(const ct_alg *a, const unsigned char *msg, size_t len,
              const unsigned char *sig, size_t siglen);
/* Sign (one-shot) and verify; 1 if both worked. */
int ct_sign_check(const ct_alg *a, const char *what);

/* A message distinct for (who, i), of length len. */
void ct_message(unsigned char *msg, size_t len, int who, int i);

/* The shim's control API (the copy hsmprov loaded); 0 on failure. */
int ct_shim(struct p11shim_api *api);
/* Fails unless the shim saw no interleaved operations. */
int ct_shim_clean(const struct p11shim_api *api, const char *where);
/* Calls of fn that returned rv, among the shim's logged calls. */
unsigned long ct_shim_count_rv(const struct p11shim_api *api, const char *fn, CK_RV rv);

double ct_now_ms(void);
/* Ends the process with a failure message if it is still running after secs
 * (a hang is a failure, not a CTest timeout). 0 cancels. */
void ct_watchdog(unsigned secs, const char *what);

#endif
