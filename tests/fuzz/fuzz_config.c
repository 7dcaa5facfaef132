/* libFuzzer target: the parsers of the provider's openssl.cnf directives
 * (provider/hp_config.c).
 *
 * Input: "NAME=VALUE", as a line of the provider's section would give them
 * (no '=': all of it is the name, the value is empty). A NAME that is no
 * directive of ours still has its value tried, on the directive the first
 * byte picks, so that any input reaches a parser.
 *
 * Beyond "no crash, no sanitizer report", each call is checked against what
 * the parsers promise: a whole number is accepted exactly when it is digits
 * only and in range; a yes/no exactly when it is one of the words; a report is
 * bounded and free of control characters; a secret's value never shapes a
 * report; the escaped form of a value reads back as the value. */
#include "hp_config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz_config: %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* NUL-terminated within max bytes, printable ASCII only. */
static void check_text(const char *t, size_t max)
{
    size_t n = strnlen(t, max);

    CHECK(n < max);
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)t[i] >= 0x20 && (unsigned char)t[i] < 0x7f);
}

/* The reference: digits only, no more than max. */
static int ref_uint(const char *v, unsigned max, unsigned long long *x)
{
    const char *p = v;

    if (*v == '\0')
        return 0;
    for (; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return 0;
    while (*v == '0' && v[1] != '\0')
        v++;
    if (strlen(v) > 10)
        return 0;
    *x = strtoull(v, NULL, 10);
    return *x <= max;
}

static int ref_bool(const char *v, int *b)
{
    static const char *const words[] = {"yes", "true",  "on",  "1",
                                        "no",  "false", "off", "0"};

    for (int i = 0; i < 8; i++)
        if (strcasecmp(v, words[i]) == 0) {
            *b = i < 4;
            return 1;
        }
    return 0;
}

/* Reads an escaped text back; returns its length. */
static size_t unescape(const char *e, char *out)
{
    size_t o = 0;

    while (*e != '\0') {
        if (*e != '\\') {
            out[o++] = *e++;
            continue;
        }
        CHECK(e[1] == '\\' || e[1] == '"' || e[1] == 'x');
        if (e[1] == 'x') {
            char hex[3] = {e[2], e[3], '\0'};

            CHECK(hex[0] != '\0' && hex[1] != '\0');
            out[o++] = (char)strtoul(hex, NULL, 16);
            e += 4;
        } else {
            out[o++] = e[1];
            e += 2;
        }
    }
    out[o] = '\0';
    return o;
}

static void check_escape(const char *v, size_t dstlen, size_t maxin)
{
    char *dst = malloc(dstlen), *back;
    size_t n, vlen = strlen(v), blen;

    CHECK(dst != NULL);
    n = hp_conf_escape(dst, dstlen, v, maxin);
    CHECK(n == strlen(dst) && n < dstlen);
    check_text(dst, dstlen);
    back = malloc(n + 1);
    CHECK(back != NULL);
    /* "..." marks a value cut short; what precedes it reads back as the
     * value's beginning. */
    if (n >= 3 && strcmp(dst + n - 3, "...") == 0 && (vlen > maxin || 4 * vlen >= dstlen))
        dst[n - 3] = '\0';
    blen = unescape(dst, back);
    CHECK(blen <= vlen && memcmp(back, v, blen) == 0);
    if (vlen <= maxin && 4 * vlen < dstlen)
        CHECK(blen == vlen);
    free(back);
    free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name, *value, *eq;
    const hp_directive *d;
    hp_conf c, before;
    hp_conf_report r, r2;
    unsigned u = 0;
    unsigned long long x = 0;
    int b = -1, rb = -1, ok;

    if (size == 0)
        return 0;
    memset(&r, 0, sizeof(r));
    memset(&r2, 0, sizeof(r2));
    name = malloc(size + 1);
    if (name == NULL)
        return 0;
    memcpy(name, data, size);
    name[size] = '\0';
    eq = strchr(name, '=');
    value = eq != NULL ? (*eq = '\0', eq + 1) : name + strlen(name);

    /* A name from the section: ours, unknown and warned about, or not ours. */
    ok = hp_conf_check_name(name, &r);
    CHECK(ok == (strncasecmp(name, "pkcs11", 6) != 0 || hp_directive_find(name) != NULL));
    CHECK(ok ? r.nwarnings == 0 : r.nwarnings == 1);
    check_text(r.warnings, HP_CONF_TEXT_MAX);

    d = hp_directive_find(name);
    if (d == NULL)
        d = &hp_directives[data[0] % HP_D_COUNT];
    hp_conf_defaults(&c);
    before = c;
    ok = hp_conf_set(&c, d, value, &r);
    check_text(r.errors, HP_CONF_TEXT_MAX);
    CHECK(ok ? r.nerrors == 0 : r.nerrors == 1);
    if (!ok)
        CHECK(memcmp(&c, &before, sizeof(c)) == 0);

    switch (d->kind) {
    case HP_CONF_UINT:
        CHECK(ok == ref_uint(value, d->max, &x));
        CHECK(hp_conf_parse_uint(value, d->max, &u) == ok);
        CHECK(!ok || u == x);
        break;
    case HP_CONF_BOOL:
        CHECK(ok == ref_bool(value, &rb));
        CHECK(hp_conf_parse_bool(value, &b) == ok);
        CHECK(!ok || b == rb);
        break;
    case HP_CONF_LOAD_BEHAVIOR:
        CHECK(ok == (strcasecmp(value, "early") == 0 || strcasecmp(value, "late") == 0));
        break;
    case HP_CONF_SECRET:
        /* Whatever the value, the same report: it cannot show the value. */
        hp_conf_defaults(&c);
        hp_conf_set(&c, d, "#", &r2);
        CHECK(strcmp(r.errors, r2.errors) == 0);
        break;
    case HP_CONF_TEXT:
        CHECK(ok);
        break;
    }
    if (!ok && d->kind != HP_CONF_SECRET)
        CHECK(strstr(r.errors, d->name) != NULL);

    /* Every parser on every value, and the escaping at sizes the input picks. */
    hp_conf_parse_uint(value, UINT32_MAX, &u);
    hp_conf_parse_bool(value, &b);
    hp_conf_parse_load_behavior(value, &b);
    check_escape(value, 1 + data[0] % 64, data[size - 1] % 80);
    check_escape(value, 4 * strlen(value) + 1, strlen(value));

    free(name);
    return 0;
}
