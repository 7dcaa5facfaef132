/* What went wrong in src/, for the provider boundary to report.
 *
 * Functions in src/ return CK_RV; when they fail they also record, per thread,
 * which PKCS#11 call failed and on which object, so that the provider can raise
 * one OpenSSL error naming the call, the CKR_* name and the object. Never put a
 * PIN in a failure text. */
#ifndef P11_FAILURE_H
#define P11_FAILURE_H

#include "p11_pkcs11.h"

#include <stddef.h>

typedef struct p11_failure {
    CK_RV rv;
    const char *call; /* "C_Login", "dlopen", ...: a string literal */
    char what[480];   /* the object, URI or token concerned, and any detail */
} p11_failure;

/* Records the failure and returns rv, so callers can write
 * `return p11_fail(rv, "C_SignInit", "key %s", name);`. */
CK_RV p11_fail(CK_RV rv, const char *call, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const p11_failure *p11_last_failure(void);
/* Copies src into dst (of size n, always terminated) with control
 * characters and DEL written as \xNN, so that text from outside (a URI, a
 * label a module returns, a path) cannot forge or break a log line. */
void p11_escape_controls(char *dst, size_t n, const char *src);

/* A call refused before it reached the module (the process is exiting, the
 * module lacks the function) leaves a note; a later p11_fail() on this
 * thread for the same call and rv leads with it, so that the report says why
 * the call was not made. */
void p11_failure_note(CK_RV rv, const char *call, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void p11_failure_clear(void);
/* Puts back a failure saved from p11_last_failure() (NULL: none). */
void p11_failure_restore(const p11_failure *f);

#endif
