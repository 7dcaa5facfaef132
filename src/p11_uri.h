/* RFC 7512 pkcs11: URIs, parsed by p11-kit's uri.h.
 *
 * A URI is hostile input: it may come from a server's configuration or from
 * a user. Parsing refuses what would change which object is meant without
 * the user noticing (a duplicated attribute, an attribute p11-kit does not
 * understand, a value too long for its field); the URI shown in messages is
 * formatted from the parsed values, never copied from the caller's text, and
 * never holds the PIN. */
#ifndef P11_URI_H
#define P11_URI_H

#include "p11_pkcs11.h"

#include <stddef.h>

typedef struct p11_kit_uri P11KitUri;

typedef struct p11_uri {
    P11KitUri *kit; /* holds no pin-value: that is taken out at parse */
    char *shown;    /* formatted from the parsed URI, without the PIN */
    int has_class;  /* type= was given */
    CK_OBJECT_CLASS cls;
    char *pin_value;        /* our own copy (p11_secmem); NULL if absent */
    const char *pin_source; /* owned by kit; NULL if absent */
} p11_uri;

CK_RV p11_uri_parse(const char *text, p11_uri **out);
void p11_uri_free(p11_uri *u);
/* Whether the token in slot (with its slot and module info) matches: token,
 * slot (slot-id, slot-description, slot-manufacturer) and library attributes. */
int p11_uri_matches_token(const p11_uri *u, CK_SLOT_ID slot, const CK_TOKEN_INFO *info,
                          const CK_SLOT_INFO *slot_info, const CK_INFO *module_info);
/* CKR_OK unless the URI's module-name or module-path names a module other
 * than the one at module_path (the configured one): then an error that says
 * so, since searching another module's tokens silently would be a surprise. */
CK_RV p11_uri_check_module(const p11_uri *u, const char *module_path);
/* The object attributes of the URI (object=, id=, type=), for C_FindObjectsInit. */
CK_ATTRIBUTE *p11_uri_object_attrs(const p11_uri *u, CK_ULONG *n);
/* "pkcs11:token=…;object=…;id=…;type=…" for an object, formatted (and so
 * percent-encoded) by p11-kit; label and id may be absent. Caller frees. */
char *p11_uri_format_object(const unsigned char token_label[32], const char *label,
                            const unsigned char *id, size_t id_len, CK_OBJECT_CLASS cls);
/* The same for a URI that is kept (in a key file): the token is named by
 * label, manufacturer, model and serial number, so that the URI still finds
 * it when slots are renumbered or another token has the same label. */
char *p11_uri_format_kept(const CK_TOKEN_INFO *token, const char *label,
                          const unsigned char *id, size_t id_len, CK_OBJECT_CLASS cls);

#endif
