#include "p11_failure.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local p11_failure last;

CK_RV p11_fail(CK_RV rv, const char *call, const char *fmt, ...)
{
    char raw[sizeof(last.what)];
    va_list ap;

    last.rv = rv;
    last.call = call;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    p11_escape_controls(last.what, sizeof(last.what), raw);
    return rv;
}

void p11_escape_controls(char *dst, size_t n, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (n == 0)
        return;
    for (; *src != '\0'; src++) {
        unsigned char c = (unsigned char)*src;

        if (c < 0x20 || c == 0x7f) {
            if (o + 4 >= n)
                break;
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            if (o + 1 >= n)
                break;
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
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
