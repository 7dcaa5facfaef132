#include "p11_uri.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <p11-kit/uri.h>
#include <stdlib.h>
#include <string.h>

/* Copy of text with the value of pin-value masked, wherever it stands. */
static char *mask_pin(const char *text)
{
    static const char key[] = "pin-value=";
    char *out = malloc(strlen(text) + 4), *o = out;
    const char *p = text;

    if (out == NULL)
        return NULL;
    while (*p != '\0') {
        if (strncmp(p, key, sizeof(key) - 1) == 0 &&
            (p == text || p[-1] == ';' || p[-1] == '?' || p[-1] == '&')) {
            memcpy(o, key, sizeof(key) - 1);
            o += sizeof(key) - 1;
            memcpy(o, "***", 3);
            o += 3;
            p += sizeof(key) - 1;
            while (*p != '\0' && *p != ';' && *p != '&')
                p++;
            continue;
        }
        *o++ = *p++;
    }
    *o = '\0';
    return out;
}

CK_RV p11_uri_parse(const char *text, p11_uri **out)
{
    p11_uri *u = calloc(1, sizeof(*u));
    CK_ATTRIBUTE *a;
    int r;

    *out = NULL;
    if (u == NULL)
        return CKR_HOST_MEMORY;
    u->shown = mask_pin(text);
    u->kit = p11_kit_uri_new();
    if (u->shown == NULL || u->kit == NULL) {
        p11_uri_free(u);
        return CKR_HOST_MEMORY;
    }
    r = p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, u->kit);
    if (r != P11_KIT_URI_OK) {
        CK_RV rv =
            p11_fail(P11_RV_BAD_URI, "p11_kit_uri_parse", "malformed pkcs11 URI %s: %s",
                     u->shown, p11_kit_uri_message(r));

        p11_uri_free(u);
        return rv;
    }
    a = p11_kit_uri_get_attribute(u->kit, CKA_CLASS);
    if (a != NULL && a->ulValueLen == sizeof(CK_OBJECT_CLASS)) {
        u->has_class = 1;
        memcpy(&u->cls, a->pValue, sizeof(u->cls));
    }
    u->pin_value = p11_kit_uri_get_pin_value(u->kit);
    u->pin_source = p11_kit_uri_get_pin_source(u->kit);
    *out = u;
    return CKR_OK;
}

void p11_uri_free(p11_uri *u)
{
    if (u == NULL)
        return;
    if (u->kit != NULL)
        p11_kit_uri_free(u->kit); /* p11-kit clears the pin-value it held */
    free(u->shown);
    free(u);
}

int p11_uri_matches_token(const p11_uri *u, const CK_TOKEN_INFO *info,
                          const CK_SLOT_INFO *slot_info, const CK_INFO *module_info)
{
    return p11_kit_uri_match_token_info(u->kit, info) &&
           p11_kit_uri_match_slot_info(u->kit, slot_info) &&
           p11_kit_uri_match_module_info(u->kit, module_info);
}

CK_ATTRIBUTE *p11_uri_object_attrs(const p11_uri *u, CK_ULONG *n)
{
    return p11_kit_uri_get_attributes(u->kit, n);
}
