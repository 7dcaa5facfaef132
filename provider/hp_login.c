/* Where the PIN comes from: the URI (pin-value, pin-source), the configuration
 * (pkcs11-module-token-pin, a literal or file:PATH), or OpenSSL's passphrase
 * callback, so that `openssl` prompts when nothing else supplies one. */
#include "hp_provider.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

#define MAX_PIN 256

/* Reads a PIN file: the first line, without its line end. */
static CK_RV read_pin_file(const char *spec, char *pin, size_t *len)
{
    const char *path = strncmp(spec, "file:", 5) == 0 ? spec + 5 : spec;
    FILE *f;
    size_t n;

    /* pin-source may be a file: URI. */
    if (strncmp(path, "//", 2) == 0)
        path += 2;
    f = fopen(path, "r");
    if (f == NULL)
        return p11_fail(P11_RV_NEED_PIN, "C_Login", "cannot read the PIN file %s", path);
    n = fread(pin, 1, MAX_PIN, f);
    fclose(f);
    while (n > 0 && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
        n--;
    *len = n;
    return CKR_OK;
}

static int ask_callback(p11_token *t, OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg,
                        char *pin, size_t *len)
{
    char info[96];
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PASSPHRASE_PARAM_INFO, info, 0),
        OSSL_PARAM_END,
    };

    snprintf(info, sizeof(info), "PIN for PKCS#11 token \"%s\"", t->label);
    params[0].data_size = strlen(info);
    return cb(pin, MAX_PIN, len, params, cbarg);
}

CK_RV hp_login(hp_provctx *pctx, p11_token *t, const p11_uri *uri,
               OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    char pin[MAX_PIN + 1];
    size_t len = 0;
    CK_RV rv = CKR_OK;

    if (!p11_token_needs_login(t))
        return CKR_OK;
    if (uri != NULL && uri->pin_value != NULL) {
        len = strlen(uri->pin_value);
        if (len > MAX_PIN)
            len = MAX_PIN;
        memcpy(pin, uri->pin_value, len);
    } else if (uri != NULL && uri->pin_source != NULL) {
        rv = read_pin_file(uri->pin_source, pin, &len);
    } else if (pctx->token_pin != NULL) {
        if (strncmp(pctx->token_pin, "file:", 5) == 0) {
            rv = read_pin_file(pctx->token_pin, pin, &len);
        } else {
            len = strlen(pctx->token_pin);
            if (len > MAX_PIN)
                len = MAX_PIN;
            memcpy(pin, pctx->token_pin, len);
        }
    } else if (pw_cb != NULL) {
        if (!ask_callback(t, pw_cb, pw_cbarg, pin, &len))
            rv = p11_fail(P11_RV_NEED_PIN, "C_Login",
                          "token \"%s\" needs a PIN and none was given", t->label);
    } else {
        rv = p11_fail(P11_RV_NEED_PIN, "C_Login",
                      "token \"%s\" needs a PIN: set pkcs11-module-token-pin, or give "
                      "pin-value or pin-source in the URI",
                      t->label);
    }
    if (rv == CKR_OK)
        rv = p11_token_login(t, pin, len);
    OPENSSL_cleanse(pin, sizeof(pin));
    return rv;
}
