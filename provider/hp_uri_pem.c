/* The key-file structure of hp_uri_pem.h, encoded and decoded by OpenSSL's
 * ASN.1 templates: the file is hostile input, and the template decoder
 * already refuses bad lengths, wrong tags and trailing bytes inside the
 * SEQUENCE. */
#include "hp_uri_pem.h"

#include <limits.h>
#include <openssl/asn1t.h>
#include <openssl/pem.h>
#include <string.h>

typedef struct hp_uri_file_st {
    ASN1_VISIBLESTRING *version;
    ASN1_UTF8STRING *uri;
} HP_URI_FILE;

ASN1_SEQUENCE(HP_URI_FILE) =
    {
        ASN1_SIMPLE(HP_URI_FILE, version, ASN1_VISIBLESTRING),
        ASN1_SIMPLE(HP_URI_FILE, uri, ASN1_UTF8STRING),
} ASN1_SEQUENCE_END(HP_URI_FILE)

        DECLARE_ASN1_FUNCTIONS(HP_URI_FILE) IMPLEMENT_ASN1_FUNCTIONS(HP_URI_FILE)

            int hp_uri_file_der(const char *uri, unsigned char **der, size_t *der_len)
{
    HP_URI_FILE *f = HP_URI_FILE_new();
    int len = -1;

    *der = NULL;
    if (f != NULL &&
        ASN1_STRING_set(f->version, HP_URI_FILE_VERSION,
                        sizeof(HP_URI_FILE_VERSION) - 1) &&
        ASN1_STRING_set(f->uri, uri, (int)strlen(uri)))
        len = i2d_HP_URI_FILE(f, der);
    HP_URI_FILE_free(f);
    if (len <= 0)
        return 0;
    *der_len = (size_t)len;
    return 1;
}

int hp_uri_file_pem(BIO *out, const char *uri)
{
    unsigned char *der;
    size_t len;
    int ok;

    if (!hp_uri_file_der(uri, &der, &len))
        return 0;
    ok = PEM_write_bio(out, HP_URI_PEM_LABEL, "", der, (long)len) > 0;
    OPENSSL_free(der);
    return ok;
}

int hp_uri_file_parse(const unsigned char *der, size_t der_len, char **uri)
{
    const unsigned char *p = der;
    HP_URI_FILE *f;
    int ret = HP_URI_FILE_NOT_OURS;

    *uri = NULL;
    if (der_len > LONG_MAX)
        return ret;
    f = d2i_HP_URI_FILE(NULL, &p, (long)der_len);
    if (f == NULL || p != der + der_len)
        goto end;
    if (ASN1_STRING_length(f->version) != (int)sizeof(HP_URI_FILE_VERSION) - 1 ||
        memcmp(ASN1_STRING_get0_data(f->version), HP_URI_FILE_VERSION,
               sizeof(HP_URI_FILE_VERSION) - 1) != 0) {
        ret = HP_URI_FILE_BAD_VERSION;
        goto end;
    }
    {
        const unsigned char *u = ASN1_STRING_get0_data(f->uri);
        int ulen = ASN1_STRING_length(f->uri);

        if (ulen <= 0 || memchr(u, '\0', (size_t)ulen) != NULL)
            goto end;
        *uri = OPENSSL_strndup((const char *)u, (size_t)ulen);
        ret = *uri != NULL ? HP_URI_FILE_OK : HP_URI_FILE_NOT_OURS;
    }
end:
    HP_URI_FILE_free(f);
    return ret;
}
