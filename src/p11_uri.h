/* RFC 7512 pkcs11: URIs, parsed by p11-kit's uri.h. */
#ifndef P11_URI_H
#define P11_URI_H

#include "p11_pkcs11.h"

#include <stddef.h>

typedef struct p11_kit_uri P11KitUri;

typedef struct p11_uri {
    P11KitUri *kit;
    char *shown;   /* the URI as given, pin-value masked: safe for messages */
    int has_class; /* type= was given */
    CK_OBJECT_CLASS cls;
    const char *pin_value;  /* owned by kit; NULL if absent */
    const char *pin_source; /* owned by kit; NULL if absent */
} p11_uri;

CK_RV p11_uri_parse(const char *text, p11_uri **out);
void p11_uri_free(p11_uri *u);
/* Whether the token described by info (and its slot/module) matches. */
int p11_uri_matches_token(const p11_uri *u, const CK_TOKEN_INFO *info,
                          const CK_SLOT_INFO *slot_info, const CK_INFO *module_info);
/* The object attributes of the URI (object=, id=, type=), for C_FindObjectsInit. */
CK_ATTRIBUTE *p11_uri_object_attrs(const p11_uri *u, CK_ULONG *n);

#endif
