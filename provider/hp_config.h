/* The provider's openssl.cnf directives: their names, strict parsers for their
 * values, and the text that tells a person what is wrong with them. Plain C,
 * no OpenSSL: tests/fuzz/fuzz_config.c drives these functions directly. */
#ifndef HP_CONFIG_H
#define HP_CONFIG_H

#include <stddef.h>

enum hp_conf_kind {
    HP_CONF_TEXT,          /* any string */
    HP_CONF_SECRET,        /* any string, never shown (the PIN) */
    HP_CONF_UINT,          /* decimal digits only, 0..max */
    HP_CONF_BOOL,          /* yes/no, true/false, on/off, 1/0 */
    HP_CONF_LOAD_BEHAVIOR, /* early/late */
};

/* Indexes into hp_directives. */
enum {
    HP_D_MODULE_PATH,
    HP_D_INIT_ARGS,
    HP_D_TOKEN_PIN,
    HP_D_LOAD_BEHAVIOR,
    HP_D_POOL_SIZE,
    HP_D_POOL_WAIT_TIMEOUT_MS,
    HP_D_POOL_IDLE_TIMEOUT_MS,
    HP_D_DIGEST_IN_TOKEN,
    HP_D_CACHE_KEYS,
    HP_D_KEY_CHECK_INTERVAL,
    HP_D_TOKEN_PIN_FOR,
    HP_D_COUNT
};

typedef struct hp_directive {
    const char *name;
    enum hp_conf_kind kind;
    unsigned max; /* HP_CONF_UINT: the largest value accepted */
} hp_directive;

extern const hp_directive hp_directives[HP_D_COUNT];

/* The directive of that exact name, or NULL. */
const hp_directive *hp_directive_find(const char *name);

/* The values, once parsed. Texts are borrowed from the caller. */
typedef struct hp_conf {
    const char *module_path, *init_args, *token_pin;
    const char *token_pin_for; /* a pkcs11: URI: the tokens the PIN belongs to */
    int load_early;
    unsigned pool_size, pool_timeout_ms; /* 0: the default */
    unsigned pool_idle_ms;               /* 0: idle sessions stay open */
    int digest_in_token, cache_keys;
    unsigned key_check_interval; /* seconds; 0: before every private-key use */
} hp_conf;

void hp_conf_defaults(hp_conf *c);

/* What a person is told: bad values (the provider then refuses every
 * operation) and names of directives it does not know (ignored). Each text is
 * NUL-terminated, bounded, free of control characters, and never holds the
 * value of a secret directive nor the value of an unknown one. */
#define HP_CONF_TEXT_MAX 512
typedef struct hp_conf_report {
    char errors[HP_CONF_TEXT_MAX];
    char warnings[HP_CONF_TEXT_MAX];
    unsigned nerrors, nwarnings;
} hp_conf_report;

/* Parsers: 1 and *out set if v is acceptable, else 0 and *out untouched. */
int hp_conf_parse_uint(const char *v, unsigned max, unsigned *out);
int hp_conf_parse_bool(const char *v, int *out);
int hp_conf_parse_load_behavior(const char *v, int *early);

/* Writes src to dst (dstlen > 0) for display: printable ASCII as is, '"' and
 * '\\' with a backslash, other bytes as \xNN; at most maxin bytes of src,
 * then "..." if there was more. Always NUL-terminates; never splits an
 * escape. Returns the length written. */
size_t hp_conf_escape(char *dst, size_t dstlen, const char *src, size_t maxin);

/* Sets directive d to v in c. A bad value is described in r and leaves c as
 * it was. Returns 1 if v was accepted. */
int hp_conf_set(hp_conf *c, const hp_directive *d, const char *v, hp_conf_report *r);

/* Adds a finding of the caller's (a check across directives, or one that
 * needs more than this file) to r->errors. */
void hp_conf_add_error(hp_conf_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* For each directive name found in the provider's section: a name that
 * starts like ours ("pkcs11", any case) but is none of hp_directives gets a
 * warning in r, naming it (and not its value: it may be a mistyped PIN
 * directive). Returns 0 for such a name, else 1. */
int hp_conf_check_name(const char *name, hp_conf_report *r);

#endif
