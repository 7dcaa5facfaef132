/* The token's random number generator as an OpenSSL RAND (EVP_RAND): every
 * request is one C_GenerateRandom on a leased session (p11_random.c). It can
 * be OpenSSL's default generator:
 *
 *     [random_sect]
 *     random = PKCS11-RAND
 *     properties = provider=hsmprov
 *
 * The name is that of the peer provider (latchset pkcs11-provider), so its
 * openssl.cnf snippet works unchanged; HSMPROV-RAND is an alias.
 *
 * No fallback: when the token cannot serve a request, the request fails and
 * the error says so; hsmprov never hands out software randomness in its
 * place.
 *
 * Recursion. A module that is itself an OpenSSL user (SoftHSM2) asks
 * OpenSSL's default library context for random bytes from inside our calls
 * into it: in C_GenerateRandom (SoftHSM2's generator is OpenSSL's), and in
 * C_Sign for ECDSA nonces, C_GenerateKeyPair, ... With this generator as the
 * default one, that request comes back here, on the thread that is inside the
 * module and holds a session lease. Sending it to the module again would
 * recurse without end (or deadlock in the module); failing it would break
 * every one of those calls. It is the module's own need, not the
 * application's: the module draws from OpenSSL as it would without hsmprov,
 * from a generator of hsmprov's own library context (OpenSSL's default
 * CTR-DRBG, seeded by the operating system). The bytes the application asked
 * for still come from C_GenerateRandom alone. Such a nested request is
 * recognised by p11_call_depth: this thread is inside a call to the module. */
#include "hp_provider.h"

#include "p11_random.h"

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>

static OSSL_FUNC_rand_newctx_fn rand_newctx;
static OSSL_FUNC_rand_freectx_fn rand_freectx;
static OSSL_FUNC_rand_instantiate_fn rand_instantiate;
static OSSL_FUNC_rand_uninstantiate_fn rand_uninstantiate;
static OSSL_FUNC_rand_generate_fn rand_generate;
static OSSL_FUNC_rand_reseed_fn rand_reseed;
static OSSL_FUNC_rand_enable_locking_fn rand_enable_locking;
static OSSL_FUNC_rand_lock_fn rand_lock;
static OSSL_FUNC_rand_unlock_fn rand_unlock;
static OSSL_FUNC_rand_get_ctx_params_fn rand_get_ctx_params;
static OSSL_FUNC_rand_gettable_ctx_params_fn rand_gettable_ctx_params;

/* Bytes per C_GenerateRandom; OpenSSL splits longer requests. */
#define MAX_REQUEST 65536
/* What the token's generator is taken to give: the most OpenSSL asks of a
 * DRBG. */
#define STRENGTH 256

typedef struct rand_ctx {
    hp_provctx *pctx;
    atomic_int state;           /* EVP_RAND_STATE_* */
    _Atomic(p11_token *) token; /* found at first use; lives as long as the module */
} rand_ctx;

static void *rand_newctx(void *provctx, void *parent, const OSSL_DISPATCH *parent_calls)
{
    rand_ctx *c = calloc(1, sizeof(*c));

    /* The parent (OpenSSL's seed source, or the primary generator) is not
     * used: the token seeds its own generator. */
    if (c != NULL) {
        c->pctx = provctx;
        atomic_init(&c->state, EVP_RAND_STATE_UNINITIALISED);
        atomic_init(&c->token, NULL);
    }
    return c;
}

static void rand_freectx(void *vctx)
{
    free(vctx);
}

static int rand_instantiate(void *vctx, unsigned int strength, int prediction_resistance,
                            const unsigned char *pstr, size_t pstr_len,
                            const OSSL_PARAM params[])
{
    rand_ctx *c = vctx;

    if (strength > STRENGTH) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "a strength of %u bits was asked of the token's generator; it is "
                 "taken to give %u",
                 strength, STRENGTH);
        return 0;
    }
    /* A bad configuration fails here, with its text. The token itself is
     * reached at the first request: OpenSSL may instantiate while it holds
     * its own locks, and a module that uses OpenSSL must not start then. */
    if (!hp_config_usable(c->pctx))
        return 0;
    atomic_store(&c->state, EVP_RAND_STATE_READY);
    return 1;
}

static int rand_uninstantiate(void *vctx)
{
    rand_ctx *c = vctx;

    atomic_store(&c->state, EVP_RAND_STATE_UNINITIALISED);
    return 1;
}

/* The module's own request, from inside a call to it (see the head of this
 * file). */
static int module_own_request(rand_ctx *c, unsigned char *out, size_t outlen)
{
    if (p11_debug_enabled)
        p11_debug("%zu random bytes asked for by the module itself, inside a call to "
                  "it: drawn from OpenSSL's generator in hsmprov's library context",
                  outlen);
    if (RAND_bytes_ex(c->pctx->libctx, out, outlen, 0) == 1)
        return 1;
    hp_raise(c->pctx, HP_R_INTERNAL,
             "the PKCS#11 module asked OpenSSL for random bytes from inside a call to "
             "it, and OpenSSL's generator failed");
    return 0;
}

static int rand_generate(void *vctx, unsigned char *out, size_t outlen,
                         unsigned int strength, int prediction_resistance,
                         const unsigned char *adin, size_t adin_len)
{
    rand_ctx *c = vctx;
    p11_token *t;
    p11_module *m;
    CK_RV rv;

    if (p11_call_depth > 0)
        return module_own_request(c, out, outlen);
    if (atomic_load(&c->state) != EVP_RAND_STATE_READY) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "the token's generator was not instantiated");
        return 0;
    }
    if (outlen == 0)
        return 1;
    m = hp_module(c->pctx);
    if (m == NULL)
        goto fail;
    t = atomic_load(&c->token);
    if (t == NULL) {
        rv = p11_token_with_rng(m, &t);
        if (rv != CKR_OK) {
            hp_raise_p11(c->pctx, rv);
            goto fail;
        }
        atomic_store(&c->token, t);
    }
    rv = p11_random(t, out, outlen);
    if (rv == CKR_OK)
        return 1;
    hp_raise_p11(c->pctx, rv);
fail:
    hp_raise(c->pctx, HP_R_PKCS11,
             "random bytes come from the token only: none were made in software "
             "instead");
    return 0;
}

static int rand_reseed(void *vctx, int prediction_resistance,
                       const unsigned char *entropy, size_t ent_len,
                       const unsigned char *adin, size_t adin_len)
{
    /* The token reseeds its own generator. */
    return 1;
}

/* No lock: a context keeps no state between requests but its readiness, and
 * each request leases a session of its own, so a context may be shared by
 * threads as is. A lock would also deadlock the module's own nested request
 * on the same context. */
static int rand_enable_locking(void *vctx)
{
    return 1;
}

static int rand_lock(void *vctx)
{
    return 1;
}

static void rand_unlock(void *vctx)
{
}

static int rand_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    rand_ctx *c = vctx;
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_STATE);
    if (p != NULL && !OSSL_PARAM_set_int(p, atomic_load(&c->state)))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_STRENGTH);
    if (p != NULL && !OSSL_PARAM_set_uint(p, STRENGTH))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_MAX_REQUEST);
    if (p != NULL && !OSSL_PARAM_set_size_t(p, MAX_REQUEST))
        return 0;
    return 1;
}

static const OSSL_PARAM *rand_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_int(OSSL_RAND_PARAM_STATE, NULL),
        OSSL_PARAM_uint(OSSL_RAND_PARAM_STRENGTH, NULL),
        OSSL_PARAM_size_t(OSSL_RAND_PARAM_MAX_REQUEST, NULL),
        OSSL_PARAM_END,
    };

    return gettable;
}

const OSSL_DISPATCH hp_rand_functions[] = {
    {OSSL_FUNC_RAND_NEWCTX, (void (*)(void))rand_newctx},
    {OSSL_FUNC_RAND_FREECTX, (void (*)(void))rand_freectx},
    {OSSL_FUNC_RAND_INSTANTIATE, (void (*)(void))rand_instantiate},
    {OSSL_FUNC_RAND_UNINSTANTIATE, (void (*)(void))rand_uninstantiate},
    {OSSL_FUNC_RAND_GENERATE, (void (*)(void))rand_generate},
    {OSSL_FUNC_RAND_RESEED, (void (*)(void))rand_reseed},
    {OSSL_FUNC_RAND_ENABLE_LOCKING, (void (*)(void))rand_enable_locking},
    {OSSL_FUNC_RAND_LOCK, (void (*)(void))rand_lock},
    {OSSL_FUNC_RAND_UNLOCK, (void (*)(void))rand_unlock},
    {OSSL_FUNC_RAND_GET_CTX_PARAMS, (void (*)(void))rand_get_ctx_params},
    {OSSL_FUNC_RAND_GETTABLE_CTX_PARAMS, (void (*)(void))rand_gettable_ctx_params},
    {0, NULL},
};
