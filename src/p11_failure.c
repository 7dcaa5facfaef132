#include "p11_failure.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local p11_failure last;

CK_RV p11_fail(CK_RV rv, const char *call, const char *fmt, ...)
{
    va_list ap;

    last.rv = rv;
    last.call = call;
    va_start(ap, fmt);
    vsnprintf(last.what, sizeof(last.what), fmt, ap);
    va_end(ap);
    return rv;
}

const p11_failure *p11_last_failure(void)
{
    return last.call != NULL ? &last : NULL;
}

void p11_failure_clear(void)
{
    last.call = NULL;
    last.rv = CKR_OK;
    last.what[0] = '\0';
}
