/* Directive values of openssl.cnf, parsed strictly: a value that is not
 * exactly what a directive takes is an error a person is told about, never a
 * value guessed at (strtoul would read "-1" as ULONG_MAX and "12abc" as 12). */
#include "hp_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Values shown are cut here: enough to recognise, not enough to flood. */
#define SHOWN_VALUE_MAX 48
#define SHOWN_NAME_MAX 64

const hp_directive hp_directives[HP_D_COUNT] = {
    [HP_D_MODULE_PATH] = {"pkcs11-module-path", HP_CONF_TEXT, 0},
    [HP_D_INIT_ARGS] = {"pkcs11-module-init-args", HP_CONF_TEXT, 0},
    [HP_D_TOKEN_PIN] = {"pkcs11-module-token-pin", HP_CONF_SECRET, 0},
    [HP_D_LOAD_BEHAVIOR] = {"pkcs11-module-load-behavior", HP_CONF_LOAD_BEHAVIOR, 0},
    [HP_D_POOL_SIZE] = {"pkcs11-pool-size", HP_CONF_UINT, 1000000},
    [HP_D_POOL_WAIT_TIMEOUT_MS] = {"pkcs11-pool-wait-timeout-ms", HP_CONF_UINT, 1000000},
    [HP_D_POOL_IDLE_TIMEOUT_MS] = {"pkcs11-pool-idle-timeout-ms", HP_CONF_UINT, 86400000},
    [HP_D_DIGEST_IN_TOKEN] = {"pkcs11-digest-in-token", HP_CONF_BOOL, 0},
    [HP_D_CACHE_KEYS] = {"pkcs11-module-cache-keys", HP_CONF_BOOL, 0},
    /* Seconds; kept below UINT_MAX / 1000 (it is used in milliseconds). */
    [HP_D_KEY_CHECK_INTERVAL] = {"pkcs11-key-check-interval", HP_CONF_UINT, 1000000},
    /* Checked as a pkcs11: URI by the provider (hp_provider.c). */
    [HP_D_TOKEN_PIN_FOR] = {"pkcs11-token-pin-for", HP_CONF_TEXT, 0},
};

const hp_directive *hp_directive_find(const char *name)
{
    for (size_t i = 0; i < HP_D_COUNT; i++)
        if (strcmp(name, hp_directives[i].name) == 0)
            return &hp_directives[i];
    return NULL;
}

void hp_conf_defaults(hp_conf *c)
{
    memset(c, 0, sizeof(*c));
    c->cache_keys = 1;
    /* A key deleted from the token stops working within this many seconds,
     * although its session copy lives on (p11_key_check). */
    c->key_check_interval = 5;
    /* Sessions the pool opened for a burst, beyond one per CPU, close after
     * idling this long: long enough that a server's steady load keeps its
     * sessions, short enough that a burst's do not linger. */
    c->pool_idle_ms = 10000;
}

int hp_conf_parse_uint(const char *v, unsigned max, unsigned *out)
{
    unsigned long long x = 0;

    if (*v == '\0')
        return 0;
    for (; *v != '\0'; v++) {
        if (*v < '0' || *v > '9')
            return 0;
        x = x * 10 + (unsigned)(*v - '0');
        /* Checked at every digit, so x never exceeds 10 * max + 9. */
        if (x > max)
            return 0;
    }
    *out = (unsigned)x;
    return 1;
}

int hp_conf_parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return 1;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return 1;
        }
    }
    return 0;
}

int hp_conf_parse_load_behavior(const char *v, int *early)
{
    if (strcasecmp(v, "early") == 0)
        *early = 1;
    else if (strcasecmp(v, "late") == 0)
        *early = 0;
    else
        return 0;
    return 1;
}

size_t hp_conf_escape(char *dst, size_t dstlen, const char *src, size_t maxin)
{
    size_t o = 0, i;

    for (i = 0; src[i] != '\0' && i < maxin; i++) {
        unsigned char ch = (unsigned char)src[i];
        char esc[5];
        size_t n;

        if (ch == '"' || ch == '\\')
            n = (size_t)snprintf(esc, sizeof(esc), "\\%c", ch);
        else if (ch < 0x20 || ch > 0x7e)
            n = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", ch);
        else
            n = (size_t)snprintf(esc, sizeof(esc), "%c", ch);
        if (o + n >= dstlen)
            break;
        memcpy(dst + o, esc, n);
        o += n;
    }
    if (src[i] != '\0' && o + 3 < dstlen) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return o;
}

/* Appends one finding to a report text, "; " between findings. A finding
 * that does not fit is dropped and the text ends in "; and more". */
static void add_finding(char *text, unsigned *count, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_finding(char *text, unsigned *count, const char *fmt, ...)
{
    static const char more[] = "; and more";
    char piece[HP_CONF_TEXT_MAX];
    size_t len = strlen(text), need;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(piece, sizeof(piece), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    (*count)++;
    if (len >= sizeof(more) - 1 && strcmp(text + len - (sizeof(more) - 1), more) == 0)
        return;
    need = (len > 0 ? 2 : 0) + strlen(piece);
    if (len + need + sizeof(more) <= HP_CONF_TEXT_MAX) {
        snprintf(text + len, HP_CONF_TEXT_MAX - len, "%s%s", len > 0 ? "; " : "", piece);
    } else if (len + sizeof(more) <= HP_CONF_TEXT_MAX) {
        memcpy(text + len, more, sizeof(more));
    }
}

void hp_conf_add_error(hp_conf_report *r, const char *fmt, ...)
{
    char piece[HP_CONF_TEXT_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(piece, sizeof(piece), fmt, ap);
    va_end(ap);
    add_finding(r->errors, &r->nerrors, "%s", piece);
}

static const char *expected(const hp_directive *d, char *buf, size_t len)
{
    switch (d->kind) {
    case HP_CONF_UINT:
        snprintf(buf, len, "a whole number from 0 to %u", d->max);
        return buf;
    case HP_CONF_BOOL:
        return "yes or no";
    case HP_CONF_LOAD_BEHAVIOR:
        return "early or late";
    case HP_CONF_TEXT:
    case HP_CONF_SECRET:
        break;
    }
    return "a valid value";
}

int hp_conf_set(hp_conf *c, const hp_directive *d, const char *v, hp_conf_report *r)
{
    int ok = 0;
    char shown[SHOWN_VALUE_MAX * 4 + 4], want[64];

    switch (d - hp_directives) {
    case HP_D_MODULE_PATH:
        c->module_path = v;
        return 1;
    case HP_D_INIT_ARGS:
        c->init_args = v;
        return 1;
    case HP_D_TOKEN_PIN:
        c->token_pin = v;
        return 1;
    case HP_D_TOKEN_PIN_FOR:
        c->token_pin_for = v;
        return 1;
    case HP_D_LOAD_BEHAVIOR:
        ok = hp_conf_parse_load_behavior(v, &c->load_early);
        break;
    case HP_D_POOL_SIZE:
        ok = hp_conf_parse_uint(v, d->max, &c->pool_size);
        break;
    case HP_D_POOL_WAIT_TIMEOUT_MS:
        ok = hp_conf_parse_uint(v, d->max, &c->pool_timeout_ms);
        break;
    case HP_D_POOL_IDLE_TIMEOUT_MS:
        ok = hp_conf_parse_uint(v, d->max, &c->pool_idle_ms);
        break;
    case HP_D_DIGEST_IN_TOKEN:
        ok = hp_conf_parse_bool(v, &c->digest_in_token);
        break;
    case HP_D_CACHE_KEYS:
        ok = hp_conf_parse_bool(v, &c->cache_keys);
        break;
    case HP_D_KEY_CHECK_INTERVAL:
        ok = hp_conf_parse_uint(v, d->max, &c->key_check_interval);
        break;
    }
    if (ok)
        return 1;
    if (d->kind == HP_CONF_SECRET) {
        add_finding(r->errors, &r->nerrors, "%s: expected %s (value not shown)", d->name,
                    expected(d, want, sizeof(want)));
    } else {
        hp_conf_escape(shown, sizeof(shown), v, SHOWN_VALUE_MAX);
        add_finding(r->errors, &r->nerrors, "%s = \"%s\": expected %s", d->name, shown,
                    expected(d, want, sizeof(want)));
    }
    return 0;
}

int hp_conf_check_name(const char *name, hp_conf_report *r)
{
    char shown[SHOWN_NAME_MAX * 4 + 4];

    if (strncasecmp(name, "pkcs11", 6) != 0 || hp_directive_find(name) != NULL)
        return 1;
    hp_conf_escape(shown, sizeof(shown), name, SHOWN_NAME_MAX);
    add_finding(r->warnings, &r->nwarnings, "unknown directive %s, ignored", shown);
    return 0;
}
