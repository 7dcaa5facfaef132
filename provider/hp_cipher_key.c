/* The key of an AES context (hp_cipher.c).
 *
 * OpenSSL 3.0 hands a cipher raw key bytes; they become a sensitive,
 * non-extractable session object on the token (p11_secret), destroyed when
 * the context is freed or re-keyed. The token is the one
 * named by the context parameter "pkcs11-token-uri", else the first token
 * that offers the mode's mechanism. A key the token already holds is chosen
 * instead with the context parameter "pkcs11-key-uri" (a pkcs11: URI naming
 * a CKO_SECRET_KEY); then no key bytes are passed (EVP_CipherInit_ex2 with
 * key NULL). Login is hp_login's (PIN from the URI or the configuration): a
 * token key needs it when it is private; a raw key's session object is not
 * private (see p11_secret.c), so a PIN is used when configured and not
 * required otherwise. */
#include "hp_cipher_local.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <openssl/crypto.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

/* The token raw keys go to: pkcs11-token-uri's, else the first token that
 * offers the mode's mechanism. Logged in. */
static p11_token *raw_key_token(cipher_ctx *c)
{
    p11_module *m;
    p11_uri *uri = NULL;
    p11_token *t = NULL;
    CK_RV rv;

    if (c->tok != NULL)
        return c->tok;
    if ((m = hp_module(c->pctx)) == NULL)
        return NULL;
    if (c->token_uri != NULL) {
        rv = p11_uri_parse(c->token_uri, &uri);
        if (rv == CKR_OK)
            rv = p11_token_find(m, uri, &t);
    } else {
        rv = p11_token_with_mechanism(m, c->mi->mech, &t);
    }
    /* Raw keys become public session objects (see p11_secret.c): a PIN is
     * used if one is configured (a token may want the login for any
     * operation), and not needed otherwise. */
    if (rv == CKR_OK && (rv = hp_login(c->pctx, t, uri, NULL, NULL)) == P11_RV_NEED_PIN) {
        p11_failure_clear();
        rv = CKR_OK;
    }
    p11_uri_free(uri);
    if (rv != CKR_OK) {
        cipher_raise_rv(c, rv);
        return NULL;
    }
    c->tok = t;
    return t;
}

/* A new key: whatever ran with the old one is cancelled. */
static void replace_key(cipher_ctx *c, p11_secret *s)
{
    p11_op_abort(&c->op);
    p11_secret_free(c->key);
    c->key = s;
}

int cipher_set_raw_key(cipher_ctx *c, const unsigned char *key, size_t keylen)
{
    p11_token *t;
    p11_secret *s;
    CK_RV rv;

    if (keylen != c->keylen) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "invalid key length %zu: AES-%zu-%s takes %zu",
                 keylen, c->keylen * 8, c->mi->name, c->keylen);
        return 0;
    }
    if ((t = raw_key_token(c)) == NULL)
        return 0;
    /* The same key again (applications often pass it with every IV): keep
     * the object the token has. */
    if (c->key != NULL && c->key->tok == t && p11_secret_has_value(c->key, key, keylen))
        return 1;
    rv = p11_token_check_mech(t, c->mi->mech);
    if (rv == CKR_OK)
        rv = p11_secret_import(t, CKK_AES, key, keylen, &s);
    if (rv != CKR_OK)
        return cipher_raise_rv(c, rv);
    replace_key(c, s);
    return 1;
}

static int set_key_uri(cipher_ctx *c, const char *text)
{
    p11_module *m = hp_module(c->pctx);
    p11_uri *uri = NULL;
    p11_token *t = NULL;
    p11_secret *s = NULL;
    CK_RV rv;

    if (m == NULL)
        return 0;
    rv = p11_uri_parse(text, &uri);
    if (rv == CKR_OK)
        rv = p11_token_find(m, uri, &t);
    if (rv == CKR_OK)
        rv = hp_login(c->pctx, t, uri, NULL, NULL);
    if (rv == CKR_OK)
        rv = p11_token_check_mech(t, c->mi->mech);
    if (rv == CKR_OK)
        rv = p11_secret_find(t, uri, CKK_AES, &s);
    p11_uri_free(uri);
    if (rv != CKR_OK)
        return cipher_raise_rv(c, rv);
    if (s->len != c->keylen) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "%s is an AES-%lu key; AES-%zu-%s needs AES-%zu",
                 s->name, (unsigned long)s->len * 8, c->keylen * 8, c->mi->name,
                 c->keylen * 8);
        p11_secret_free(s);
        return 0;
    }
    replace_key(c, s);
    return 1;
}

int cipher_set_uri_param(cipher_ctx *c, const OSSL_PARAM *p, int is_key)
{
    const char *text;

    if (!OSSL_PARAM_get_utf8_string_ptr(p, &text)) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "%s must be a UTF8 string", p->key);
        return 0;
    }
    if (is_key)
        return set_key_uri(c, text);
    if (c->token_uri != NULL)
        OPENSSL_clear_free(c->token_uri, strlen(c->token_uri));
    c->token_uri = *text != '\0' ? strdup(text) : NULL;
    c->tok = NULL;
    return *text == '\0' || c->token_uri != NULL;
}
