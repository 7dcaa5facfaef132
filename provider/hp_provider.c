/* Provider entry point: configuration, algorithm tables, lazy module load. */
#include "hp_provider.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef HSMPROV_VERSION
#define HSMPROV_VERSION "0.0.0"
#endif
#ifndef HSMPROV_DEFAULT_MODULE
#define HSMPROV_DEFAULT_MODULE "p11-kit-proxy.so"
#endif

static OSSL_FUNC_provider_teardown_fn hp_teardown;
static OSSL_FUNC_provider_gettable_params_fn hp_gettable_params;
static OSSL_FUNC_provider_get_params_fn hp_get_params;
static OSSL_FUNC_provider_query_operation_fn hp_query;
static OSSL_FUNC_provider_get_reason_strings_fn hp_reasons;

#define RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"
#define RSAPSS_NAMES "RSA-PSS:RSASSA-PSS:1.2.840.113549.1.1.10"
#define EC_NAMES "EC:id-ecPublicKey:1.2.840.10045.2.1"
#define ED25519_NAMES "ED25519:1.3.101.112"

static const OSSL_ALGORITHM keymgmt_algs[] = {
    {RSA_NAMES, HP_PROPS, hp_rsa_keymgmt_functions, "hsmprov RSA token keys"},
    {RSAPSS_NAMES, HP_PROPS, hp_rsapss_keymgmt_functions, "hsmprov RSA-PSS token keys"},
    {EC_NAMES, HP_PROPS, hp_ec_keymgmt_functions, "hsmprov EC token keys"},
    {ED25519_NAMES, HP_PROPS, hp_ed25519_keymgmt_functions, "hsmprov Ed25519 token keys"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM signature_algs[] = {
    {RSA_NAMES, HP_PROPS, hp_rsa_signature_functions, "RSA signatures in the token"},
    {"ECDSA", HP_PROPS, hp_ecdsa_signature_functions, "ECDSA in the token"},
    {ED25519_NAMES, HP_PROPS, hp_ed25519_signature_functions, "Ed25519 in the token"},
    /* The same, under the names our keys ask for (hp_keymgmt.c). */
    {HP_OPNAME_RSA, HP_PROPS, hp_rsa_signature_functions, "RSA signatures in the token"},
    {HP_OPNAME_ECDSA, HP_PROPS, hp_ecdsa_signature_functions, "ECDSA in the token"},
    {HP_OPNAME_ED25519, HP_PROPS, hp_ed25519_signature_functions, "Ed25519 in the token"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM store_algs[] = {
    {"pkcs11", HP_PROPS, hp_store_functions, "pkcs11: URIs (RFC 7512)"},
    {NULL, NULL, NULL, NULL},
};

#define SPKI_DER HP_PROPS ",output=der,structure=SubjectPublicKeyInfo"
#define SPKI_PEM HP_PROPS ",output=pem,structure=SubjectPublicKeyInfo"
static const OSSL_ALGORITHM encoder_algs[] = {
    {RSA_NAMES, SPKI_DER, hp_rsa_spki_der_encoder_functions, NULL},
    {RSA_NAMES, SPKI_PEM, hp_rsa_spki_pem_encoder_functions, NULL},
    {RSAPSS_NAMES, SPKI_DER, hp_rsa_spki_der_encoder_functions, NULL},
    {RSAPSS_NAMES, SPKI_PEM, hp_rsa_spki_pem_encoder_functions, NULL},
    {EC_NAMES, SPKI_DER, hp_ec_spki_der_encoder_functions, NULL},
    {EC_NAMES, SPKI_PEM, hp_ec_spki_pem_encoder_functions, NULL},
    {ED25519_NAMES, SPKI_DER, hp_ed25519_spki_der_encoder_functions, NULL},
    {ED25519_NAMES, SPKI_PEM, hp_ed25519_spki_pem_encoder_functions, NULL},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM *hp_query(void *provctx, int op, int *no_cache)
{
    *no_cache = 0;
    switch (op) {
    case OSSL_OP_KEYMGMT:
        return keymgmt_algs;
    case OSSL_OP_SIGNATURE:
        return signature_algs;
    case OSSL_OP_STORE:
        return store_algs;
    case OSSL_OP_ENCODER:
        return encoder_algs;
    case OSSL_OP_CIPHER:
        return hp_cipher_algs;
    case OSSL_OP_ASYM_CIPHER:
        return hp_asym_cipher_algs;
    }
    return NULL;
}

static const OSSL_PARAM provider_params[] = {
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *hp_gettable_params(void *provctx)
{
    return provider_params;
}

static int hp_get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, "hsmprov: keys in a PKCS#11 token"))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, HSMPROV_VERSION))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, "hsmprov " HSMPROV_VERSION
                                                 " for OpenSSL " OPENSSL_VERSION_STR))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
    if (p != NULL && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ITEM *hp_reasons(void *provctx)
{
    return hp_reason_strings;
}

/* The usual spellings of the digests in common_md, in the same order. */
static const char *const common_md_names[5][3] = {
    {"SHA1", "SHA-1", "SSL3-SHA1"},    {"SHA2-224", "SHA224", "SHA-224"},
    {"SHA2-256", "SHA256", "SHA-256"}, {"SHA2-384", "SHA384", "SHA-384"},
    {"SHA2-512", "SHA512", "SHA-512"},
};

EVP_MD *hp_md_fetch(hp_provctx *pctx, const char *name)
{
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 3; j++)
            if (pctx->common_md[i] != NULL &&
                strcasecmp(name, common_md_names[i][j]) == 0)
                return EVP_MD_up_ref(pctx->common_md[i]) ? pctx->common_md[i] : NULL;
    return EVP_MD_fetch(pctx->libctx, name, NULL);
}

static void provctx_free(hp_provctx *pctx)
{
    if (pctx == NULL)
        return;
    if (pctx->early_init_started)
        pthread_join(pctx->early_init, NULL);
    p11_module_free(pctx->module);
    for (size_t i = 0; i < sizeof(pctx->common_md) / sizeof(pctx->common_md[0]); i++)
        EVP_MD_free(pctx->common_md[i]);
    OSSL_PROVIDER_unload(pctx->libctx_default);
    OSSL_LIB_CTX_free(pctx->libctx);
    free(pctx->module_path);
    free(pctx->init_args);
    if (pctx->token_pin != NULL)
        OPENSSL_clear_free(pctx->token_pin, strlen(pctx->token_pin));
    pthread_mutex_destroy(&pctx->lock);
    free(pctx);
}

/* Providers torn down after exit() began, kept (reachable: not leaks). */
static hp_provctx *kept_at_exit;

static void hp_teardown(void *provctx)
{
    hp_provctx *pctx = provctx;

    if (p11_process_exiting()) {
        /* OpenSSL's own exit handler unloads us while other threads may
         * still be signing with our keys, in our library context and our
         * module's sessions: freeing them would crash those threads. The
         * process is ending; keep it all. */
        pctx->kept_next = kept_at_exit;
        kept_at_exit = pctx;
        /* Not joined: it may be waiting for the process to end. */
        if (pctx->early_init_started)
            pthread_detach(pctx->early_init);
        pctx->early_init_started = 0;
        return;
    }
    provctx_free(pctx);
}

p11_module *hp_module(hp_provctx *pctx)
{
    p11_module *m;
    CK_RV rv = CKR_OK;

    pthread_mutex_lock(&pctx->lock);
    if (pctx->module == NULL) {
        rv = p11_module_load(pctx->module_path, pctx->init_args, &pctx->module);
        if (rv == CKR_OK) {
            pctx->module->pool_size = pctx->pool_size;
            pctx->module->pool_timeout_ms = pctx->pool_timeout_ms;
            pctx->module->cache_keys = pctx->cache_keys;
        }
    }
    m = pctx->module;
    pthread_mutex_unlock(&pctx->lock);
    if (m == NULL) {
        hp_raise_p11(pctx, rv);
        return NULL;
    }
    return m;
}

static int parse_uint(hp_provctx *pctx, const char *name, const char *v, unsigned *out)
{
    char *end;
    unsigned long x;

    if (v == NULL)
        return 1;
    x = strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x > 1000000) {
        hp_raise(pctx, HP_R_BAD_PARAM, "%s = \"%s\": expected a whole number", name, v);
        return 0;
    }
    *out = (unsigned)x;
    return 1;
}

static int parse_bool(hp_provctx *pctx, const char *name, const char *v, int *out)
{
    if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = 1;
    } else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = 0;
    } else {
        hp_raise(pctx, HP_R_BAD_PARAM, "%s = \"%s\": expected yes or no", name, v);
        return 0;
    }
    return 1;
}

static char *dup_or_null(const char *s)
{
    return s != NULL && *s != '\0' ? strdup(s) : NULL;
}

static int read_config(hp_provctx *pctx, const OSSL_DISPATCH *in)
{
    OSSL_FUNC_core_get_params_fn *get_params = NULL;
    char *path = NULL, *args = NULL, *pin = NULL, *behavior = NULL;
    char *pool = NULL, *timeout = NULL, *in_token = NULL, *cache = NULL;
    const char *env;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_ptr("pkcs11-module-path", &path, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-module-init-args", &args, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-module-token-pin", &pin, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-module-load-behavior", &behavior, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-pool-size", &pool, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-pool-wait-timeout-ms", &timeout, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-digest-in-token", &in_token, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-module-cache-keys", &cache, 0),
        OSSL_PARAM_END,
    };

    for (; in->function_id != 0; in++)
        if (in->function_id == OSSL_FUNC_CORE_GET_PARAMS)
            get_params = OSSL_FUNC_core_get_params(in);
    if (get_params != NULL && !get_params(pctx->handle, params))
        return 0;

    /* The environment overrides the configuration, as for pkcs11-provider. */
    env = getenv("PKCS11_PROVIDER_MODULE");
    pctx->module_path = strdup(env != NULL && *env != '\0'     ? env
                               : path != NULL && *path != '\0' ? path
                                                               : HSMPROV_DEFAULT_MODULE);
    pctx->init_args = dup_or_null(args);
    pctx->token_pin = dup_or_null(pin);
    if (behavior != NULL) {
        if (strcmp(behavior, "early") == 0) {
            pctx->load_early = 1;
        } else if (strcmp(behavior, "late") != 0) {
            hp_raise(pctx, HP_R_BAD_PARAM,
                     "pkcs11-module-load-behavior = \"%s\": expected early or late",
                     behavior);
            return 0;
        }
    }
    if (in_token != NULL &&
        !parse_bool(pctx, "pkcs11-digest-in-token", in_token, &pctx->digest_in_token))
        return 0;
    pctx->cache_keys = 1;
    if (cache != NULL &&
        !parse_bool(pctx, "pkcs11-module-cache-keys", cache, &pctx->cache_keys))
        return 0;
    return pctx->module_path != NULL &&
           parse_uint(pctx, "pkcs11-pool-size", pool, &pctx->pool_size) &&
           parse_uint(pctx, "pkcs11-pool-wait-timeout-ms", timeout,
                      &pctx->pool_timeout_ms);
}

static void *early_init(void *arg)
{
    hp_provctx *pctx = arg;

    /* Failures are reported again, to the caller, at first use. */
    p11_module_ready(pctx->module);
    OPENSSL_thread_stop();
    return NULL;
}

static const OSSL_DISPATCH provider_functions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))hp_teardown},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))hp_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))hp_get_params},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))hp_query},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))hp_reasons},
    {0, NULL},
};

__attribute__((visibility("default"))) OSSL_provider_init_fn OSSL_provider_init;

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    hp_provctx *pctx = calloc(1, sizeof(*pctx));
    const OSSL_DISPATCH *d;

    if (pctx == NULL)
        return 0;
    pctx->handle = handle;
    pthread_mutex_init(&pctx->lock, NULL);
    for (d = in; d->function_id != 0; d++) {
        switch (d->function_id) {
        case OSSL_FUNC_CORE_NEW_ERROR:
            pctx->core_new_error = OSSL_FUNC_core_new_error(d);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            pctx->core_set_error_debug = OSSL_FUNC_core_set_error_debug(d);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            pctx->core_vset_error = OSSL_FUNC_core_vset_error(d);
            break;
        case OSSL_FUNC_BIO_WRITE_EX:
            pctx->core_bio_write_ex = OSSL_FUNC_BIO_write_ex(d);
            break;
        }
    }
    if (pctx->core_new_error == NULL || pctx->core_set_error_debug == NULL ||
        pctx->core_vset_error == NULL)
        pctx->core_new_error = NULL;
    if (!read_config(pctx, in))
        goto err;

    /* Our own library context with the default provider: hashing on the host
     * (DESIGN §2.9) and public-key encoding happen there, never through this
     * provider, so nothing we call can recurse into us. */
    pctx->libctx = OSSL_LIB_CTX_new();
    if (pctx->libctx != NULL)
        pctx->libctx_default = OSSL_PROVIDER_load(pctx->libctx, "default");
    if (pctx->libctx_default == NULL) {
        hp_raise(pctx, HP_R_INTERNAL, "cannot load the default provider for hashing");
        goto err;
    }
    for (size_t i = 0; i < 5; i++)
        pctx->common_md[i] = EVP_MD_fetch(pctx->libctx, common_md_names[i][0], NULL);
    if (pctx->load_early) {
        /* Load now, so that a wrong module path fails the provider's
         * activation. Initialise on a thread of our own: we are inside
         * OpenSSL's configuration loading, and a module that uses OpenSSL
         * (SoftHSM2) would wait for that to finish, in this thread a
         * deadlock. The thread runs as soon as loading ends; first use waits
         * for it. */
        if (hp_module(pctx) == NULL)
            goto err;
        pctx->early_init_started =
            pthread_create(&pctx->early_init, NULL, early_init, pctx) == 0;
    }
    *out = provider_functions;
    *provctx = pctx;
    return 1;
err:
    provctx_free(pctx);
    return 0;
}
