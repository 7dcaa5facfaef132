/* Shared state of the hsmprov OpenSSL provider. provider/ calls src/ only. */
#ifndef HP_PROVIDER_H
#define HP_PROVIDER_H

#include "hp_config.h"
#include "p11_object.h"

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/e_os2.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>

#define HP_NAME "hsmprov"
#define HP_PROPS "provider=hsmprov"

/* Names under which our keys' operations are fetched (keymgmt
 * query_operation_name), each registered by this provider alone. */
#define HP_OPNAME_RSA "HSMPROV-RSA"
#define HP_OPNAME_ECDSA "HSMPROV-ECDSA"
#define HP_OPNAME_ED25519 "HSMPROV-ED25519"
#define HP_OPNAME_ECDH "HSMPROV-ECDH"

typedef struct hp_provctx {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx; /* our own, with the default provider: digests, encoders */
    OSSL_PROVIDER *libctx_default;
    EVP_MD *common_md[5]; /* SHA-1 and SHA-2, fetched once: see hp_md_fetch */

    OSSL_FUNC_core_new_error_fn *core_new_error;
    OSSL_FUNC_core_set_error_debug_fn *core_set_error_debug;
    OSSL_FUNC_core_vset_error_fn *core_vset_error;
    OSSL_FUNC_BIO_write_ex_fn *core_bio_write_ex;

    /* Configuration (openssl.cnf directives). */
    char *module_path;
    char *init_args;
    char *token_pin; /* "file:PATH" or the PIN itself */
    /* pkcs11-token-pin-for: the tokens token_pin belongs to; NULL: the one
     * token a URI selects (hp_login.c) */
    p11_uri *pin_for;
    int load_early;
    unsigned pool_size, pool_timeout_ms, pool_idle_ms;
    int digest_in_token; /* pkcs11-digest-in-token: stream digest-sign in the token */
    int cache_keys;      /* pkcs11-module-cache-keys: session copies of private keys */
    /* Bad directive values: non-empty, the provider stays listed but every
     * operation raises this text (hp_config_usable), so that the directive and
     * its value reach the user instead of the provider vanishing. */
    char conf_error[HP_CONF_TEXT_MAX];
    char conf_warning[HP_CONF_TEXT_MAX]; /* unknown directives, ignored */
    /* OSSL_PROV_PARAM_NAME: what `openssl list -providers` shows, with the
     * above appended, since OpenSSL drops the errors raised at load. */
    char display_name[2 * HP_CONF_TEXT_MAX + 128];
    unsigned key_check_interval; /* pkcs11-key-check-interval, seconds */

    pthread_mutex_t lock; /* guards lazy module loading */
    pthread_t early_init; /* pkcs11-module-load-behavior = early */
    int early_init_started;
    p11_module *module;
    struct hp_provctx *kept_next; /* kept at exit: see hp_teardown */
} hp_provctx;

/* A key as OpenSSL holds it (keymgmt keydata). */
typedef struct hp_key {
    hp_provctx *pctx;
    int kind;     /* HP_KEY_RSA, HP_KEY_RSA_PSS, HP_KEY_EC */
    p11_key *p11; /* NULL for a public key imported from software (match only) */
    /* A key pair made in memory in pctx->libctx because no pkcs11_uri was
     * given (TLS key shares under a preference for hsmprov); p11 is NULL. */
    EVP_PKEY *soft;
    /* Public parts as OpenSSL sees them; for token keys copied from p11. */
    unsigned char *n, *e, *point;
    size_t n_len, e_len, point_len;
    char group[32]; /* EC named curve, e.g. "prime256v1" */
    int bits;
    int public_only; /* loaded as a public key: the private object is not used */
    /* The one digest the key's CKA_ALLOWED_MECHANISMS lets it sign with (only
     * hash-and-sign mechanisms of that digest allowed); "" when not bound. */
    char mandatory_md[16];
} hp_key;

enum { HP_KEY_RSA = 1, HP_KEY_RSA_PSS, HP_KEY_EC, HP_KEY_ED25519 };

/* The PKCS#11 module, loaded at first use (unless pkcs11-module-load-behavior
 * is early). Raises an OpenSSL error and returns NULL on failure, and
 * whenever the configuration is bad (hp_config_usable). */
p11_module *hp_module(hp_provctx *pctx);

/* 1 if the configuration is usable; else raises pctx->conf_error (the bad
 * directives and their values) and returns 0. */
int hp_config_usable(hp_provctx *pctx);

/* Warns in r of unknown directives in this provider's openssl.cnf section
 * (hp_config_file.c); core_values are those the core gave for hp_directives. */
void hp_config_check_names(OSSL_LIB_CTX *libctx, const char *provname,
                           const char *const core_values[HP_D_COUNT], hp_conf_report *r);

/* A digest from our library context, up-referenced (free with EVP_MD_free).
 * The common ones come from a table filled at provider init, so that the
 * per-signature path does no method-store look-up. */
EVP_MD *hp_md_fetch(hp_provctx *pctx, const char *name);

/* Errors (hp_err.c). Reason codes: */
enum {
    HP_R_PKCS11 = 1,  /* a PKCS#11 call failed */
    HP_R_URI,         /* malformed or unusable URI */
    HP_R_NOT_FOUND,   /* no matching token/object */
    HP_R_KEY_TYPE,    /* object of the wrong kind for the operation */
    HP_R_UNSUPPORTED, /* something hsmprov does not do */
    HP_R_BAD_PARAM,   /* bad parameter from the application */
    HP_R_MODULE,      /* module could not be loaded */
    HP_R_LOGIN,       /* no PIN, wrong PIN */
    HP_R_INTERNAL,
    HP_R_CONFIG, /* bad directive in the provider's openssl.cnf section */
};
extern const OSSL_ITEM hp_reason_strings[];
void hp_raise_at(hp_provctx *pctx, const char *file, int line, const char *func,
                 int reason, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Raises the failure src/ recorded for this thread (call, CKR_* name, object). */
void hp_raise_p11_at(hp_provctx *pctx, const char *file, int line, const char *func,
                     CK_RV rv);
#define hp_raise(pctx, ...)                                                              \
    hp_raise_at(pctx, OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, __VA_ARGS__)
#define hp_raise_p11(pctx, rv)                                                           \
    hp_raise_p11_at(pctx, OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, rv)

/* Login for objects on t (hp_login.c): PIN from the URI, the configuration,
 * or the passphrase callback, in that order. */
CK_RV hp_login(hp_provctx *pctx, p11_token *t, const p11_uri *uri,
               OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg);

/* Keys (hp_keymgmt.c). */
hp_key *hp_key_from_p11(hp_provctx *pctx, p11_key *k);
const char *hp_key_type_name(const p11_key *k);
size_t hp_key_size(const hp_key *k); /* signature size */
/* RSA without padding: whether in is a number below k's modulus written in
 * exactly the modulus' length, as OpenSSL's own RSA requires (a token would
 * pad short input with zeros). With raise, the refusal is raised with the
 * default provider's reason ("data too small for key size", ...). */
int hp_rsa_raw_input_ok(const hp_key *k, const unsigned char *in, size_t inlen,
                        int raise);
/* The key's public half as a default-provider EVP_PKEY in pctx->libctx. */
EVP_PKEY *hp_key_public_pkey(const hp_key *k);

/* Key generation in the token (hp_keymgmt_gen.c), for the tables of
 * hp_keymgmt.c. */
OSSL_FUNC_keymgmt_gen_init_fn hp_km_rsa_gen_init, hp_km_ec_gen_init,
    hp_km_ed25519_gen_init;
OSSL_FUNC_keymgmt_gen_set_params_fn hp_km_gen_set_params;
OSSL_FUNC_keymgmt_gen_settable_params_fn hp_km_rsa_gen_settable, hp_km_ec_gen_settable,
    hp_km_ed25519_gen_settable;
OSSL_FUNC_keymgmt_gen_fn hp_km_gen;
OSSL_FUNC_keymgmt_gen_cleanup_fn hp_km_gen_cleanup;
OSSL_FUNC_keymgmt_gen_set_template_fn hp_km_gen_set_template;
/* An EC key of curve nid made in software: the key pair soft (owned by the
 * key on success), or the curve alone when soft is NULL. */
hp_key *hp_key_ec_software(hp_provctx *pctx, int nid, EVP_PKEY *soft);
/* What messages call a key: its token object, or what kind of software key. */
const char *hp_key_name(const hp_key *k);

/* Writes all of data to a core BIO (hp_encoder.c). */
int hp_core_write(hp_provctx *pctx, OSSL_CORE_BIO *out, const void *data, size_t len);

/* Algorithm tables of hp_cipher.c and hp_asym_cipher.c. */
extern const OSSL_ALGORITHM hp_cipher_algs[];
extern const OSSL_ALGORITHM hp_asym_cipher_algs[];

/* Dispatch tables. */
extern const OSSL_DISPATCH hp_rsa_keymgmt_functions[];
extern const OSSL_DISPATCH hp_rsapss_keymgmt_functions[];
extern const OSSL_DISPATCH hp_ec_keymgmt_functions[];
extern const OSSL_DISPATCH hp_ed25519_keymgmt_functions[];
extern const OSSL_DISPATCH hp_ed25519_signature_functions[];
extern const OSSL_DISPATCH hp_ed25519_spki_der_encoder_functions[];
extern const OSSL_DISPATCH hp_ed25519_spki_pem_encoder_functions[];
extern const OSSL_DISPATCH hp_rsa_signature_functions[];
extern const OSSL_DISPATCH hp_ecdsa_signature_functions[];
extern const OSSL_DISPATCH hp_store_functions[];
extern const OSSL_DISPATCH hp_rsa_spki_der_encoder_functions[];
extern const OSSL_DISPATCH hp_rsa_spki_pem_encoder_functions[];
extern const OSSL_DISPATCH hp_ec_spki_der_encoder_functions[];
extern const OSSL_DISPATCH hp_ec_spki_pem_encoder_functions[];
extern const OSSL_DISPATCH hp_urifile_pem_decoder_functions[];
extern const OSSL_DISPATCH hp_rsa_urifile_decoder_functions[];
extern const OSSL_DISPATCH hp_ec_urifile_decoder_functions[];
extern const OSSL_DISPATCH hp_ed25519_urifile_decoder_functions[];
extern const OSSL_DISPATCH hp_text_encoder_functions[];
extern const OSSL_DISPATCH hp_private_key_der_encoder_functions[];
extern const OSSL_DISPATCH hp_private_key_pem_encoder_functions[];
extern const OSSL_DISPATCH hp_private_key_encrypted_encoder_functions[];
extern const OSSL_DISPATCH hp_ecdh_exchange_functions[];
extern const OSSL_DISPATCH hp_rand_functions[];

#endif
