/* libFuzzer target: pkcs11: URI parsing, the checks around it, matching
 * against token/slot/module info, the module check, and formatting an object
 * URI from hostile labels. A crash, a sanitizer report or a PIN found in the
 * text made for messages is a finding. */
#include "p11_failure.h"
#include "p11_uri.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void fill(unsigned char *dst, size_t n, const char *s)
{
    size_t l = strlen(s);

    memset(dst, ' ', n);
    memcpy(dst, s, l < n ? l : n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    CK_TOKEN_INFO ti;
    CK_SLOT_INFO si;
    CK_INFO mi;
    p11_uri *u = NULL;
    char *obj;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    memset(&ti, 0, sizeof(ti));
    memset(&si, 0, sizeof(si));
    memset(&mi, 0, sizeof(mi));
    fill(ti.label, sizeof(ti.label), "demo");
    fill(ti.manufacturerID, sizeof(ti.manufacturerID), "SoftHSM project");
    fill(ti.model, sizeof(ti.model), "SoftHSM v2");
    fill(ti.serialNumber, sizeof(ti.serialNumber), "0123456789abcdef");
    fill(si.slotDescription, sizeof(si.slotDescription), "slot 0");
    fill(si.manufacturerID, sizeof(si.manufacturerID), "SoftHSM project");
    fill(mi.libraryDescription, sizeof(mi.libraryDescription),
         "Implementation of PKCS11");
    fill(mi.manufacturerID, sizeof(mi.manufacturerID), "SoftHSM");

    if (p11_uri_parse(text, &u) == CKR_OK) {
        CK_ULONG n;
        CK_ATTRIBUTE *a = p11_uri_object_attrs(u, &n);

        (void)a;
        (void)p11_uri_matches_token(u, 7, &ti, &si, &mi);
        (void)p11_uri_check_module(u, "/nonexistent/libsofthsm2.so");
        /* The shown URI never holds a pin-value (an '=' inside a value
         * is percent-encoded, so this cannot come from a label). */
        if (strstr(u->shown, "pin-value=") != NULL)
            abort();
        p11_uri_free(u);
    }
    {
        const p11_failure *f = p11_last_failure();

        /* Failure text is escaped: no raw control character. */
        if (f != NULL)
            for (const char *p = f->what; *p != '\0'; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    abort();
        if (f != NULL && strstr(f->what, "pin-value=") != NULL)
            abort();
        p11_failure_clear();
    }
    /* The same bytes as a label and an id read from a token. */
    {
        unsigned char label[32];

        fill(label, sizeof(label), "");
        memcpy(label, data, size < 32 ? size : 32);
        obj = p11_uri_format_object(label, text, data, size, CKO_PRIVATE_KEY);
        if (obj != NULL)
            for (const char *p = obj; *p != '\0'; p++)
                if ((unsigned char)*p < 0x21 || *p == 0x7f)
                    abort();
        free(obj);
    }
    free(text);
    return 0;
}
