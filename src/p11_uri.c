#include "p11_uri.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_secmem.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <p11-kit/uri.h>
#include <stdlib.h>
#include <string.h>

/* What p11-kit strips before parsing (its P11_URL_WHITESPACE): our checks
 * must see the same names it sees. */
static const char uri_whitespace[] = " \n\r\v";

enum attr_id {
    A_ID,
    A_OBJECT,
    A_TYPE,
    A_TOKEN,
    A_MANUFACTURER,
    A_SERIAL,
    A_MODEL,
    A_SLOT_DESCRIPTION,
    A_SLOT_MANUFACTURER,
    A_SLOT_ID,
    A_LIBRARY_DESCRIPTION,
    A_LIBRARY_MANUFACTURER,
    A_LIBRARY_VERSION,
    A_PIN_SOURCE,
    A_PIN_VALUE,
    A_MODULE_NAME,
    A_MODULE_PATH,
    A_COUNT
};

/* The attribute names p11-kit understands, with their aliases; `where` says
 * in which part of the URI it accepts them. */
enum { IN_PATH = 1, IN_QUERY = 2 };
static const struct {
    const char *name;
    enum attr_id id;
    int where;
} known_attrs[] = {
    {"id", A_ID, IN_PATH},
    {"object", A_OBJECT, IN_PATH},
    {"type", A_TYPE, IN_PATH},
    {"object-type", A_TYPE, IN_PATH},
    {"objecttype", A_TYPE, IN_PATH},
    {"token", A_TOKEN, IN_PATH},
    {"manufacturer", A_MANUFACTURER, IN_PATH},
    {"serial", A_SERIAL, IN_PATH},
    {"model", A_MODEL, IN_PATH},
    {"slot-description", A_SLOT_DESCRIPTION, IN_PATH},
    {"slot-manufacturer", A_SLOT_MANUFACTURER, IN_PATH},
    {"slot-id", A_SLOT_ID, IN_PATH},
    {"library-description", A_LIBRARY_DESCRIPTION, IN_PATH},
    {"library-manufacturer", A_LIBRARY_MANUFACTURER, IN_PATH},
    {"library-version", A_LIBRARY_VERSION, IN_PATH},
    {"pin-source", A_PIN_SOURCE, IN_PATH | IN_QUERY},
    {"pinfile", A_PIN_SOURCE, IN_PATH | IN_QUERY},
    {"pin-value", A_PIN_VALUE, IN_PATH | IN_QUERY},
    {"module-name", A_MODULE_NAME, IN_QUERY},
    {"module-path", A_MODULE_PATH, IN_QUERY},
};

/* The first spelling in the table, for messages. */
static const char *canonical_name(enum attr_id id)
{
    size_t i = 0;

    while (known_attrs[i].id != id)
        i++;
    return known_attrs[i].name;
}

static int lookup_attr(const char *name, size_t len, int where)
{
    for (size_t i = 0; i < sizeof(known_attrs) / sizeof(known_attrs[0]); i++)
        if ((known_attrs[i].where & where) && strlen(known_attrs[i].name) == len &&
            memcmp(known_attrs[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

/* Whether the one attribute name=value, alone in a URI, is understood by
 * p11-kit (a value too long for its field, or an unknown type, is not). */
static int attr_understood(const char *seg, size_t len)
{
    P11KitUri *one = p11_kit_uri_new();
    char *text = malloc(len + sizeof("pkcs11:"));
    int ok = 0;

    if (one != NULL && text != NULL) {
        memcpy(text, "pkcs11:", 7);
        memcpy(text + 7, seg, len);
        text[7 + len] = '\0';
        /* A value that does not parse is the whole parse's to report. */
        ok = p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, one) != P11_KIT_URI_OK ||
             !p11_kit_uri_any_unrecognized(one);
    }
    p11_kit_uri_free(one);
    free(text);
    return ok;
}

/* Refuses what p11-kit would accept silently but the user cannot have
 * meant: an attribute given twice (p11-kit keeps the last), a path attribute
 * it does not know, a value it cannot use. s is the URI after "pkcs11:",
 * without whitespace; its syntax is p11-kit's to judge, so a segment that
 * is not name=value is passed over here. */
static CK_RV check_attributes(const char *s)
{
    int seen[A_COUNT] = {0};
    int where = IN_PATH, pos = 0;

    while (*s != '\0') {
        size_t len = strcspn(s, where == IN_PATH ? ";?" : "&");
        const char *eq = memchr(s, '=', len);
        int k;

        if (eq == NULL)
            goto next; /* empty segment: p11-kit accepted it */
        pos++;
        k = lookup_attr(s, (size_t)(eq - s), where);
        /* Its name is not repeated: what stands there could be anything, a
         * PIN included. */
        if (k < 0 && where == IN_PATH)
            return p11_fail(
                P11_RV_BAD_URI, "p11_kit_uri_parse",
                "pkcs11 URI: path attribute %d is none of id, object, type, "
                "token, manufacturer, serial, model, slot-id, "
                "slot-description, slot-manufacturer, library-description, "
                "library-manufacturer, library-version, pin-source, pin-value",
                pos);
        if (k < 0)
            goto next; /* a vendor's query attribute: ignored, never shown */
        if (seen[known_attrs[k].id]++)
            return p11_fail(P11_RV_BAD_URI, "p11_kit_uri_parse",
                            "pkcs11 URI: attribute %s given more than once",
                            canonical_name(known_attrs[k].id));
        /* Query attributes take any value; the PIN is not copied around. */
        if (where == IN_PATH && known_attrs[k].id != A_PIN_VALUE &&
            !attr_understood(s, len))
            return p11_fail(P11_RV_BAD_URI, "p11_kit_uri_parse",
                            "pkcs11 URI: the value of %s is not valid (too long for its "
                            "field, or not one of the values it takes)",
                            canonical_name(known_attrs[k].id));
    next:
        s += len;
        if (*s == '?') {
            where = IN_QUERY;
            pos = 0;
        }
        if (*s != '\0')
            s++;
    }
    return CKR_OK;
}

static char *strip_whitespace(const char *text)
{
    size_t n = strlen(text);
    char *out = malloc(n + 1), *o = out;

    if (out == NULL)
        return NULL;
    for (; *text != '\0'; text++)
        if (strchr(uri_whitespace, *text) == NULL)
            *o++ = *text;
    *o = '\0';
    return out;
}

/* Takes the pin-value out of p11-kit's URI object into a copy of ours, and
 * wipes p11-kit's, which it would free without wiping. */
static CK_RV take_pin_value(p11_uri *u)
{
    const char *pin = p11_kit_uri_get_pin_value(u->kit);
    size_t len;

    if (pin == NULL)
        return CKR_OK;
    len = strlen(pin);
    u->pin_value = p11_secmem_dup(pin, len);
    OPENSSL_cleanse((char *)pin, len);
    p11_kit_uri_set_pin_value(u->kit, NULL);
    return u->pin_value != NULL ? CKR_OK : CKR_HOST_MEMORY;
}

/* The URI for messages: only what p11-kit understood and we use, formatted
 * (percent-encoded) by p11-kit, without pin-value and without vendor query
 * attributes, whose meaning we do not know. */
static char *format_shown(P11KitUri *kit)
{
    P11KitUri *v = p11_kit_uri_new();
    CK_ATTRIBUTE *attrs;
    CK_ULONG n;
    char *text = NULL;

    if (v == NULL)
        return NULL;
    *p11_kit_uri_get_module_info(v) = *p11_kit_uri_get_module_info(kit);
    *p11_kit_uri_get_slot_info(v) = *p11_kit_uri_get_slot_info(kit);
    *p11_kit_uri_get_token_info(v) = *p11_kit_uri_get_token_info(kit);
    p11_kit_uri_set_slot_id(v, p11_kit_uri_get_slot_id(kit));
    attrs = p11_kit_uri_get_attributes(kit, &n);
    if (p11_kit_uri_set_attributes(v, attrs, n) == P11_KIT_URI_OK) {
        p11_kit_uri_set_pin_source(v, p11_kit_uri_get_pin_source(kit));
        p11_kit_uri_set_module_name(v, p11_kit_uri_get_module_name(kit));
        p11_kit_uri_set_module_path(v, p11_kit_uri_get_module_path(kit));
        if (p11_kit_uri_format(v, P11_KIT_URI_FOR_ANY, &text) != P11_KIT_URI_OK)
            text = NULL;
    }
    p11_kit_uri_free(v);
    return text;
}

CK_RV p11_uri_parse(const char *text, p11_uri **out)
{
    p11_uri *u = calloc(1, sizeof(*u));
    char *plain = NULL;
    CK_ATTRIBUTE *a;
    CK_RV rv = CKR_HOST_MEMORY;
    int r;

    *out = NULL;
    if (u == NULL)
        return CKR_HOST_MEMORY;
    u->kit = p11_kit_uri_new();
    plain = strip_whitespace(text);
    if (u->kit == NULL || plain == NULL)
        goto fail;
    /* Checked before p11-kit sees it: p11-kit frees a first pin-value
     * unwiped when a second one follows. */
    if (strncmp(plain, "pkcs11:", 7) == 0) {
        rv = check_attributes(plain + 7);
        if (rv != CKR_OK)
            goto fail;
    }
    /* Without whitespace: p11-kit would otherwise make (and free unwiped)
     * a stripped copy of its own. */
    r = p11_kit_uri_parse(plain, P11_KIT_URI_FOR_ANY, u->kit);
    /* The PIN leaves p11-kit's object first, whatever else goes wrong. */
    if (take_pin_value(u) != CKR_OK) {
        rv = CKR_HOST_MEMORY;
        goto fail;
    }
    if (r != P11_KIT_URI_OK) {
        /* Nothing parsed to show; the text itself may hold a PIN. */
        rv = p11_fail(P11_RV_BAD_URI, "p11_kit_uri_parse", "malformed pkcs11 URI: %s",
                      p11_kit_uri_message(r));
        goto fail;
    }
    if (p11_kit_uri_any_unrecognized(u->kit)) {
        /* The checks above name the attribute; this is the safety net. */
        rv = p11_fail(P11_RV_BAD_URI, "p11_kit_uri_parse",
                      "pkcs11 URI: an attribute p11-kit does not understand");
        goto fail;
    }
    rv = CKR_HOST_MEMORY;
    u->shown = format_shown(u->kit);
    if (u->shown == NULL)
        goto fail;
    a = p11_kit_uri_get_attribute(u->kit, CKA_CLASS);
    if (a != NULL && a->ulValueLen == sizeof(CK_OBJECT_CLASS)) {
        u->has_class = 1;
        memcpy(&u->cls, a->pValue, sizeof(u->cls));
    }
    u->pin_source = p11_kit_uri_get_pin_source(u->kit);
    OPENSSL_clear_free(plain, strlen(plain));
    *out = u;
    return CKR_OK;
fail:
    if (plain != NULL)
        OPENSSL_clear_free(plain, strlen(plain));
    p11_uri_free(u);
    return rv;
}

void p11_uri_free(p11_uri *u)
{
    if (u == NULL)
        return;
    if (u->kit != NULL)
        p11_kit_uri_free(u->kit);
    p11_secmem_free(u->pin_value);
    free(u->shown);
    free(u);
}

int p11_uri_matches_token(const p11_uri *u, CK_SLOT_ID slot, const CK_TOKEN_INFO *info,
                          const CK_SLOT_INFO *slot_info, const CK_INFO *module_info)
{
    CK_SLOT_ID want = p11_kit_uri_get_slot_id(u->kit);

    return (want == (CK_SLOT_ID)-1 || want == slot) &&
           p11_kit_uri_match_token_info(u->kit, info) &&
           p11_kit_uri_match_slot_info(u->kit, slot_info) &&
           p11_kit_uri_match_module_info(u->kit, module_info);
}

/* The name p11-kit gives a module: its file name without "lib" and ".so…"
 * (libsofthsm2.so → softhsm2), as in its registry and `p11-kit list-modules`. */
static int module_name_is(const char *path, const char *name)
{
    const char *base = strrchr(path, '/');
    const char *dot;
    size_t n = strlen(name);

    base = base != NULL ? base + 1 : path;
    if (strcmp(base, name) == 0)
        return 1;
    if (strncmp(base, "lib", 3) == 0)
        base += 3;
    dot = strstr(base, ".so");
    return dot != NULL && (size_t)(dot - base) == n && memcmp(base, name, n) == 0;
}

static int same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];

    if (realpath(a, ra) == NULL || realpath(b, rb) == NULL)
        return strcmp(a, b) == 0;
    return strcmp(ra, rb) == 0;
}

CK_RV p11_uri_check_module(const p11_uri *u, const char *module_path)
{
    const char *name = p11_kit_uri_get_module_name(u->kit);
    const char *path = p11_kit_uri_get_module_path(u->kit);

    /* The values are in u->shown, encoded: not repeated raw here. */
    if (path != NULL && !same_file(path, module_path))
        return p11_fail(P11_RV_BAD_URI, "dlopen",
                        "%s: module-path names another module than the one hsmprov "
                        "uses, %s (pkcs11-module-path)",
                        u->shown, module_path);
    if (name != NULL && !module_name_is(module_path, name))
        return p11_fail(P11_RV_BAD_URI, "dlopen",
                        "%s: module-name names another module than the one hsmprov "
                        "uses, %s (pkcs11-module-path)",
                        u->shown, module_path);
    return CKR_OK;
}

CK_ATTRIBUTE *p11_uri_object_attrs(const p11_uri *u, CK_ULONG *n)
{
    return p11_kit_uri_get_attributes(u->kit, n);
}

static char *format_object(const CK_TOKEN_INFO *token, int whole_identity,
                           const char *label, const unsigned char *id, size_t id_len,
                           CK_OBJECT_CLASS cls)
{
    P11KitUri *v = p11_kit_uri_new();
    CK_TOKEN_INFO *ti;
    CK_ATTRIBUTE attrs[3];
    CK_ULONG n = 0;
    char *text = NULL;

    if (v == NULL)
        return NULL;
    ti = p11_kit_uri_get_token_info(v);
    memcpy(ti->label, token->label, sizeof(ti->label));
    if (whole_identity) {
        memcpy(ti->manufacturerID, token->manufacturerID, sizeof(ti->manufacturerID));
        memcpy(ti->model, token->model, sizeof(ti->model));
        memcpy(ti->serialNumber, token->serialNumber, sizeof(ti->serialNumber));
    }
    if (label != NULL && *label != '\0')
        attrs[n++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, strlen(label)};
    if (id_len > 0)
        attrs[n++] = (CK_ATTRIBUTE){CKA_ID, (void *)id, id_len};
    attrs[n++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    if (p11_kit_uri_set_attributes(v, attrs, n) != P11_KIT_URI_OK ||
        p11_kit_uri_format(v, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &text) != P11_KIT_URI_OK)
        text = NULL;
    p11_kit_uri_free(v);
    return text;
}

char *p11_uri_format_object(const unsigned char token_label[32], const char *label,
                            const unsigned char *id, size_t id_len, CK_OBJECT_CLASS cls)
{
    CK_TOKEN_INFO token;

    memset(&token, 0, sizeof(token));
    memcpy(token.label, token_label, sizeof(token.label));
    return format_object(&token, 0, label, id, id_len, cls);
}

char *p11_uri_format_kept(const CK_TOKEN_INFO *token, const char *label,
                          const unsigned char *id, size_t id_len, CK_OBJECT_CLASS cls)
{
    return format_object(token, 1, label, id, id_len, cls);
}
