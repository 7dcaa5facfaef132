/* Errors raised through the core, so that `openssl` prints them under the
 * provider's name with our reason strings. */
#include "hp_provider.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>

const OSSL_ITEM hp_reason_strings[] = {
    {HP_R_PKCS11, "PKCS#11 call failed"},
    {HP_R_URI, "bad pkcs11 URI"},
    {HP_R_NOT_FOUND, "not found on the token"},
    {HP_R_KEY_TYPE, "wrong kind of key"},
    {HP_R_UNSUPPORTED, "not supported"},
    {HP_R_BAD_PARAM, "bad parameter"},
    {HP_R_MODULE, "cannot load PKCS#11 module"},
    {HP_R_LOGIN, "login failed"},
    {HP_R_INTERNAL, "internal error"},
    {HP_R_CONFIG, "bad configuration"},
    {0, NULL},
};

static void set_error(hp_provctx *pctx, int reason, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (pctx != NULL && pctx->core_new_error != NULL)
        pctx->core_vset_error(pctx->handle, reason, fmt, ap);
    else
        ERR_vset_error(ERR_LIB_PROV, reason, fmt, ap);
    va_end(ap);
}

static void vraise(hp_provctx *pctx, const char *file, int line, const char *func,
                   int reason, const char *fmt, va_list ap)
{
    char raw[1024], text[1024];

    /* Error text ends up in logs: nothing from outside may add a line. */
    vsnprintf(raw, sizeof(raw), fmt, ap);
    p11_escape_controls(text, sizeof(text), raw);
    if (pctx != NULL && pctx->core_new_error != NULL) {
        pctx->core_new_error(pctx->handle);
        pctx->core_set_error_debug(pctx->handle, file, line, func);
    } else {
        ERR_new();
        ERR_set_debug(file, line, func);
    }
    set_error(pctx, reason, "%s", text);
}

void hp_raise_at(hp_provctx *pctx, const char *file, int line, const char *func,
                 int reason, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vraise(pctx, file, line, func, reason, fmt, ap);
    va_end(ap);
}

static int reason_for(CK_RV rv)
{
    switch (rv) {
    case P11_RV_BAD_URI:
        return HP_R_URI;
    case P11_RV_NOT_FOUND:
    case CKR_TOKEN_NOT_PRESENT:
        return HP_R_NOT_FOUND;
    case P11_RV_MODULE_LOAD:
        return HP_R_MODULE;
    case P11_RV_KEY_EXISTS:
        return HP_R_BAD_PARAM;
    case P11_RV_NEED_PIN:
    case CKR_PIN_INCORRECT:
    case CKR_PIN_LOCKED:
    case CKR_PIN_LEN_RANGE:
        return HP_R_LOGIN;
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
        return HP_R_KEY_TYPE;
    default:
        return HP_R_PKCS11;
    }
}

void hp_raise_p11_at(hp_provctx *pctx, const char *file, int line, const char *func,
                     CK_RV rv)
{
    const p11_failure *f = p11_last_failure();
    const char *name;

    if (f == NULL || f->rv != rv) {
        name = p11_rv_name(rv);
        hp_raise_at(pctx, file, line, func, reason_for(rv), "%s",
                    name != NULL ? name : "PKCS#11 failure");
        return;
    }
    name = p11_rv_name(f->rv);
    if (p11_rv_is_ours(f->rv))
        /* Our own failures: the text says it all. */
        hp_raise_at(pctx, file, line, func, reason_for(f->rv), "%s: %s", f->call,
                    f->what);
    else if (name != NULL)
        hp_raise_at(pctx, file, line, func, reason_for(f->rv), "%s failed with %s: %s",
                    f->call, name, f->what);
    else
        hp_raise_at(pctx, file, line, func, reason_for(f->rv),
                    "%s failed with CKR 0x%lx: %s", f->call, (unsigned long)f->rv,
                    f->what);
    p11_failure_clear();
}
