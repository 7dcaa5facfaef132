/* Provider entry point: configuration, algorithm tables, lazy module load. */
#include "hp_provider.h"
#include "hp_uri_pem.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_secmem.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/prov_ssl.h>
#include <openssl/provider.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef HSMPROV_VERSION
#define HSMPROV_VERSION "0.0.0"
#endif
#ifndef HSMPROV_DEFAULT_MODULE
#define HSMPROV_DEFAULT_MODULE "p11-kit-proxy.so"
#endif
/* Provider parameters of our own (OSSL_PROVIDER_get_params): the PKCS#11
 * sessions the pools hold now, and the most they held at once. */
#define HP_PARAM_POOL_SESSIONS "hsmprov-pool-sessions"
#define HP_PARAM_POOL_PEAK "hsmprov-pool-peak"

static OSSL_FUNC_provider_teardown_fn hp_teardown;
static OSSL_FUNC_provider_gettable_params_fn hp_gettable_params;
static OSSL_FUNC_provider_get_params_fn hp_get_params;
static OSSL_FUNC_provider_query_operation_fn hp_query;
static OSSL_FUNC_provider_get_reason_strings_fn hp_reasons;
static OSSL_FUNC_provider_get_capabilities_fn hp_get_capabilities;

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

/* Our EC keys ask for HSMPROV-ECDH (hp_keymgmt.c); software keys ask for
 * the default provider's ECDH and never reach hsmprov's (hp_exchange.c). */
static const OSSL_ALGORITHM exchange_algs[] = {
    {"ECDH", HP_PROPS, hp_ecdh_exchange_functions, "ECDH in the token"},
    {HP_OPNAME_ECDH, HP_PROPS, hp_ecdh_exchange_functions, "ECDH in the token"},
    {NULL, NULL, NULL, NULL},
};

/* PKCS11-RAND: the name of the peer provider's generator, so that its
 * [random_sect] snippet works as is. */
static const OSSL_ALGORITHM rand_algs[] = {
    {"PKCS11-RAND:HSMPROV-RAND", HP_PROPS, hp_rand_functions,
     "the token's random number generator (C_GenerateRandom)"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM store_algs[] = {
    {"pkcs11", HP_PROPS, hp_store_functions, "pkcs11: URIs (RFC 7512)"},
    {NULL, NULL, NULL, NULL},
};

#define SPKI_DER HP_PROPS ",output=der,structure=SubjectPublicKeyInfo"
#define SPKI_PEM HP_PROPS ",output=pem,structure=SubjectPublicKeyInfo"
/* Not the type-specific structures: i2d_PrivateKey asks for those first and
 * then for PrivateKeyInfo, and one key file format is enough. */
#define PRIV_ENCODER(names, out, structure, fns)                                         \
    {                                                                                    \
        names, HP_PROPS ",output=" out ",structure=" structure, fns, NULL                \
    }
#define PRIV_ENCODERS(names)                                                             \
    PRIV_ENCODER(names, "der", "PrivateKeyInfo", hp_private_key_der_encoder_functions),  \
        PRIV_ENCODER(names, "pem", "PrivateKeyInfo",                                     \
                     hp_private_key_pem_encoder_functions),                              \
        PRIV_ENCODER(names, "der", "EncryptedPrivateKeyInfo",                            \
                     hp_private_key_encrypted_encoder_functions),                        \
        PRIV_ENCODER(names, "pem", "EncryptedPrivateKeyInfo",                            \
                     hp_private_key_encrypted_encoder_functions)
static const OSSL_ALGORITHM encoder_algs[] = {
    {RSA_NAMES, SPKI_DER, hp_rsa_spki_der_encoder_functions, NULL},
    {RSA_NAMES, SPKI_PEM, hp_rsa_spki_pem_encoder_functions, NULL},
    {RSAPSS_NAMES, SPKI_DER, hp_rsa_spki_der_encoder_functions, NULL},
    {RSAPSS_NAMES, SPKI_PEM, hp_rsa_spki_pem_encoder_functions, NULL},
    {EC_NAMES, SPKI_DER, hp_ec_spki_der_encoder_functions, NULL},
    {EC_NAMES, SPKI_PEM, hp_ec_spki_pem_encoder_functions, NULL},
    {ED25519_NAMES, SPKI_DER, hp_ed25519_spki_der_encoder_functions, NULL},
    {ED25519_NAMES, SPKI_PEM, hp_ed25519_spki_pem_encoder_functions, NULL},
    {RSA_NAMES, HP_PROPS ",output=text", hp_text_encoder_functions, NULL},
    {RSAPSS_NAMES, HP_PROPS ",output=text", hp_text_encoder_functions, NULL},
    {EC_NAMES, HP_PROPS ",output=text", hp_text_encoder_functions, NULL},
    {ED25519_NAMES, HP_PROPS ",output=text", hp_text_encoder_functions, NULL},
    /* Private key output of any of our keys: a key file holding its URI. */
    PRIV_ENCODERS(RSA_NAMES),
    PRIV_ENCODERS(RSAPSS_NAMES),
    PRIV_ENCODERS(EC_NAMES),
    PRIV_ENCODERS(ED25519_NAMES),
    {NULL, NULL, NULL, NULL},
};

/* Key files that refer to a token key (hp_decoder.c): PEM with our label to
 * DER (named "DER", as OpenSSL's own PEM decoder is), then DER to a key. */
#define URIFILE_DER HP_PROPS ",input=der,structure=" HP_URI_FILE_STRUCTURE
static const OSSL_ALGORITHM decoder_algs[] = {
    {"DER", HP_PROPS ",input=pem", hp_urifile_pem_decoder_functions, "key files, PEM"},
    {RSA_NAMES, URIFILE_DER, hp_rsa_urifile_decoder_functions, "RSA key files"},
    {EC_NAMES, URIFILE_DER, hp_ec_urifile_decoder_functions, "EC key files"},
    {ED25519_NAMES, URIFILE_DER, hp_ed25519_urifile_decoder_functions,
     "Ed25519 key files"},
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
    case OSSL_OP_DECODER:
        return decoder_algs;
    case OSSL_OP_CIPHER:
        return hp_cipher_algs;
    case OSSL_OP_ASYM_CIPHER:
        return hp_asym_cipher_algs;
    case OSSL_OP_KEYEXCH:
        return exchange_algs;
    case OSSL_OP_RAND:
        return rand_algs;
    }
    return NULL;
}

static const OSSL_PARAM provider_params[] = {
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
    OSSL_PARAM_DEFN(HP_PARAM_POOL_SESSIONS, OSSL_PARAM_UNSIGNED_INTEGER, NULL, 0),
    OSSL_PARAM_DEFN(HP_PARAM_POOL_PEAK, OSSL_PARAM_UNSIGNED_INTEGER, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *hp_gettable_params(void *provctx)
{
    return provider_params;
}

static int hp_get_params(void *provctx, OSSL_PARAM params[])
{
    hp_provctx *pctx = provctx;
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, pctx->display_name))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, HSMPROV_VERSION))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, "hsmprov " HSMPROV_VERSION
                                                 " for OpenSSL " OPENSSL_VERSION_STR))
        return 0;
    /* 0 ("inactive" in `openssl list -providers`) while misconfigured. */
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
    if (p != NULL && !OSSL_PARAM_set_int(p, pctx->conf_error[0] == '\0'))
        return 0;
    /* How far the session pools grew (0 before the module is used). */
    if (OSSL_PARAM_locate(params, HP_PARAM_POOL_SESSIONS) != NULL ||
        OSSL_PARAM_locate(params, HP_PARAM_POOL_PEAK) != NULL) {
        p11_pool_stat st = {0};
        p11_module *m;

        pthread_mutex_lock(&pctx->lock);
        m = pctx->module;
        pthread_mutex_unlock(&pctx->lock);
        if (m != NULL)
            p11_tokens_pool_stats(m, &st);
        p = OSSL_PARAM_locate(params, HP_PARAM_POOL_SESSIONS);
        if (p != NULL && !OSSL_PARAM_set_uint(p, st.sessions))
            return 0;
        p = OSSL_PARAM_locate(params, HP_PARAM_POOL_PEAK);
        if (p != NULL && !OSSL_PARAM_set_uint(p, st.peak))
            return 0;
    }
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
    p11_secmem_free(pctx->token_pin);
    p11_uri_free(pctx->pin_for);
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

    if (!hp_config_usable(pctx))
        return NULL;
    pthread_mutex_lock(&pctx->lock);
    if (pctx->module == NULL) {
        p11_module_settings settings = {
            .init_args = pctx->init_args,
            .pool_size = pctx->pool_size,
            .pool_timeout_ms = pctx->pool_timeout_ms,
            .pool_idle_ms = pctx->pool_idle_ms,
            .cache_keys = pctx->cache_keys,
            .key_check_ms = pctx->key_check_interval * 1000,
        };

        rv = p11_module_load(pctx->module_path, &settings, &pctx->module);
    }
    m = pctx->module;
    pthread_mutex_unlock(&pctx->lock);
    if (m == NULL) {
        hp_raise_p11(pctx, rv);
        return NULL;
    }
    return m;
}

static char *dup_or_null(const char *s)
{
    return s != NULL && *s != '\0' ? strdup(s) : NULL;
}

/* pkcs11-token-pin-for: a pkcs11: URI of token attributes only. The value is
 * never shown as written (a pin-value in it would be a PIN): what was parsed
 * is, or nothing. Returns 0 only when memory ran out. */
static int read_pin_for(hp_provctx *pctx, const hp_conf *c, hp_conf_report *r)
{
    const char *name = hp_directives[HP_D_TOKEN_PIN_FOR].name;
    p11_uri *u = NULL;
    CK_ULONG nattrs = 0;
    CK_RV rv;

    if (c->token_pin_for == NULL)
        return 1;
    rv = p11_uri_parse(c->token_pin_for, &u);
    p11_failure_clear();
    if (rv == CKR_HOST_MEMORY)
        return 0;
    if (rv != CKR_OK) {
        hp_conf_add_error(
            r, "%s: expected a pkcs11: URI naming a token (value not shown)", name);
        return 1;
    }
    p11_uri_object_attrs(u, &nattrs);
    if (u->pin_value != NULL || u->pin_source != NULL)
        hp_conf_add_error(r,
                          "%s = \"%s\": a PIN has no place in it (the PIN is "
                          "pkcs11-module-token-pin)",
                          name, u->shown);
    else if (nattrs > 0)
        hp_conf_add_error(r,
                          "%s = \"%s\": expected token attributes only (token=, serial=, "
                          "...), not an object",
                          name, u->shown);
    else if (c->token_pin == NULL || *c->token_pin == '\0')
        hp_conf_add_error(r, "%s = \"%s\": there is no pkcs11-module-token-pin to bind",
                          name, u->shown);
    else {
        pctx->pin_for = u;
        return 1;
    }
    p11_uri_free(u);
    return 1;
}

/* Reads the directives. A bad value does not fail the provider's load: OpenSSL
 * drops what a failed init raises and goes on without the provider, and the
 * user would be left with "No store loader found". It is recorded in r, and
 * the provider stays listed, refusing every operation with that text. */
static int read_config(hp_provctx *pctx, const OSSL_DISPATCH *in, hp_conf_report *r)
{
    OSSL_FUNC_core_get_params_fn *get_params = NULL;
    const char *values[HP_D_COUNT] = {NULL};
    const char *provname = NULL;
    OSSL_PARAM params[HP_D_COUNT + 2];
    const char *env;
    hp_conf c;
    size_t i;

    for (i = 0; i < HP_D_COUNT; i++)
        params[i] =
            OSSL_PARAM_construct_utf8_ptr(hp_directives[i].name, (char **)&values[i], 0);
    params[i++] = OSSL_PARAM_construct_utf8_ptr(OSSL_PROV_PARAM_CORE_PROV_NAME,
                                                (char **)&provname, 0);
    params[i] = OSSL_PARAM_construct_end();
    for (; in->function_id != 0; in++)
        if (in->function_id == OSSL_FUNC_CORE_GET_PARAMS)
            get_params = OSSL_FUNC_core_get_params(in);
    if (get_params != NULL && !get_params(pctx->handle, params))
        return 0;

    hp_conf_defaults(&c);
    for (i = 0; i < HP_D_COUNT; i++)
        if (values[i] != NULL)
            hp_conf_set(&c, &hp_directives[i], values[i], r);
    hp_config_check_names(pctx->libctx, provname, values, r);
    if (!read_pin_for(pctx, &c, r))
        return 0;

    /* The environment overrides the configuration, as for pkcs11-provider. */
    env = getenv("PKCS11_PROVIDER_MODULE");
    pctx->module_path = strdup(env != NULL && *env != '\0' ? env
                               : c.module_path != NULL && *c.module_path != '\0'
                                   ? c.module_path
                                   : HSMPROV_DEFAULT_MODULE);
    pctx->init_args = dup_or_null(c.init_args);
    /* A literal PIN is a PIN we keep: in locked pages, out of core dumps. */
    if (c.token_pin != NULL && *c.token_pin != '\0' &&
        (pctx->token_pin = p11_secmem_dup(c.token_pin, strlen(c.token_pin))) == NULL)
        return 0;
    pctx->load_early = c.load_early;
    pctx->pool_size = c.pool_size;
    pctx->pool_timeout_ms = c.pool_timeout_ms;
    pctx->pool_idle_ms = c.pool_idle_ms;
    pctx->digest_in_token = c.digest_in_token;
    pctx->cache_keys = c.cache_keys;
    pctx->key_check_interval = c.key_check_interval;
    return pctx->module_path != NULL;
}

int hp_config_usable(hp_provctx *pctx)
{
    if (pctx->conf_error[0] == '\0')
        return 1;
    hp_raise(pctx, HP_R_CONFIG, "%s", pctx->conf_error);
    return 0;
}

/* Records what the report found. A bad value is said once on the error
 * queue (the load has in effect failed). OpenSSL's configuration loader
 * discards errors raised while a provider loads, so the provider's name, as
 * `openssl list -providers` shows it, carries the text too. A warning is not
 * put on the queue: the load succeeds, and a stale entry on the queue makes
 * a later, unrelated step fail (TLS does); it goes to stderr, once, where a
 * server's start-up log catches it. */
static void note_config_report(hp_provctx *pctx, const hp_conf_report *r)
{
    static const char base[] = "hsmprov: keys in a PKCS#11 token";

    snprintf(pctx->conf_error, sizeof(pctx->conf_error), "%s", r->errors);
    snprintf(pctx->conf_warning, sizeof(pctx->conf_warning), "%s", r->warnings);
    snprintf(pctx->display_name, sizeof(pctx->display_name), "%s%s%s%s%s", base,
             r->nerrors > 0 ? "; configuration error: " : "", r->errors,
             r->nwarnings > 0 ? "; configuration warning: " : "", r->warnings);
    if (r->nerrors > 0)
        hp_raise(pctx, HP_R_CONFIG, "%s", r->errors);
    if (r->nwarnings > 0)
        fprintf(stderr, "hsmprov: configuration warning: %s\n", r->warnings);
}

static void *early_init(void *arg)
{
    hp_provctx *pctx = arg;

    /* Failures are reported again, to the caller, at first use. */
    p11_module_ready(pctx->module);
    OPENSSL_thread_stop();
    return NULL;
}

/* TLS groups. libssl (3.0) keeps a provider's group only while fetching the
 * group's key type with the application's property query returns that
 * provider: with "?provider=hsmprov" our EC key management wins, so the
 * default provider's EC groups are dropped and these take their place. The
 * values are those the default provider declares; key shares are made in
 * memory (hp_keymgmt_gen.c), never in the token. */
static struct {
    unsigned int id, secbits;
    int min_tls, max_tls, min_dtls, max_dtls;
} ec_groups[] = {
    {23, 128, TLS1_VERSION, 0, DTLS1_VERSION, 0}, /* secp256r1 */
    {24, 192, TLS1_VERSION, 0, DTLS1_VERSION, 0}, /* secp384r1 */
    {25, 256, TLS1_VERSION, 0, DTLS1_VERSION, 0}, /* secp521r1 */
};

#define TLS_GROUP(tlsname, realname, i)                                                  \
    {                                                                                    \
        OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME, tlsname,                  \
                               sizeof(tlsname)),                                         \
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME_INTERNAL, realname,    \
                                   sizeof(realname)),                                    \
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_ALG, "EC", sizeof("EC")),   \
            OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_ID, &ec_groups[i].id),             \
            OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_SECURITY_BITS,                     \
                            &ec_groups[i].secbits),                                      \
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_TLS, &ec_groups[i].min_tls),    \
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_TLS, &ec_groups[i].max_tls),    \
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_DTLS, &ec_groups[i].min_dtls),  \
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_DTLS, &ec_groups[i].max_dtls),  \
            OSSL_PARAM_END                                                               \
    }

static const OSSL_PARAM tls_groups[][10] = {
    TLS_GROUP("secp256r1", "prime256v1", 0), TLS_GROUP("P-256", "prime256v1", 0),
    TLS_GROUP("secp384r1", "secp384r1", 1),  TLS_GROUP("P-384", "secp384r1", 1),
    TLS_GROUP("secp521r1", "secp521r1", 2),  TLS_GROUP("P-521", "secp521r1", 2),
};

static int hp_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb,
                               void *arg)
{
    if (strcasecmp(capability, "TLS-GROUP") != 0)
        return 0;
    for (size_t i = 0; i < sizeof(tls_groups) / sizeof(tls_groups[0]); i++)
        if (!cb(tls_groups[i], arg))
            return 0;
    return 1;
}

static const OSSL_DISPATCH provider_functions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))hp_teardown},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))hp_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))hp_get_params},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))hp_query},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))hp_reasons},
    {OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))hp_get_capabilities},
    {0, NULL},
};

__attribute__((visibility("default"))) OSSL_provider_init_fn OSSL_provider_init;

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    hp_provctx *pctx = calloc(1, sizeof(*pctx));
    const OSSL_DISPATCH *d;
    hp_conf_report report = {0};

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

    /* Our own library context with the default provider: hashing on the host
     * (DESIGN §2.9) and public-key encoding happen there, never through this
     * provider, so nothing we call can recurse into us. */
    /* From the core's dispatch: BIO_new_from_core_bio then works in it, for
     * the decoders (hp_decoder.c). */
    pctx->libctx = OSSL_LIB_CTX_new_from_dispatch(handle, in);
    if (pctx->libctx != NULL)
        pctx->libctx_default = OSSL_PROVIDER_load(pctx->libctx, "default");
    if (pctx->libctx_default == NULL) {
        hp_raise(pctx, HP_R_INTERNAL, "cannot load the default provider for hashing");
        goto err;
    }
    if (!read_config(pctx, in, &report))
        goto err;
    note_config_report(pctx, &report);
    for (size_t i = 0; i < 5; i++)
        pctx->common_md[i] = EVP_MD_fetch(pctx->libctx, common_md_names[i][0], NULL);
    if (pctx->load_early && pctx->conf_error[0] == '\0') {
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
