#include "p11_failure.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local p11_failure last;
static _Thread_local int note_set;
static _Thread_local CK_RV note_rv;
static _Thread_local const char *note_call;
static _Thread_local char note[240];

void p11_failure_note(CK_RV rv, const char *call, const char *fmt, ...)
{
    va_list ap;

    note_rv = rv;
    note_call = call;
    va_start(ap, fmt);
    vsnprintf(note, sizeof(note), fmt, ap);
    va_end(ap);
    note_set = 1;
}

CK_RV p11_fail(CK_RV rv, const char *call, const char *fmt, ...)
{
    char raw[sizeof(last.what)];
    size_t off = 0;
    va_list ap;

    last.rv = rv;
    last.call = call;
    if (note_set && note_rv == rv && call != NULL && strcmp(call, note_call) == 0) {
        off = (size_t)snprintf(raw, sizeof(raw), "%s; ", note);
        if (off >= sizeof(raw))
            off = sizeof(raw) - 1;
        note_set = 0;
    }
    va_start(ap, fmt);
    vsnprintf(raw + off, sizeof(raw) - off, fmt, ap);
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
    note_set = 0;
    last.call = NULL;
    last.rv = CKR_OK;
    last.what[0] = '\0';
}

void p11_failure_restore(const p11_failure *f)
{
    if (f == NULL)
        p11_failure_clear();
    else
        last = *f;
}
