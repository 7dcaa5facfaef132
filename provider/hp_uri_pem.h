/* Key files that refer to a token key: the format pkcs11-provider (latchset)
 * and opencryptoki's p11sak write, so that their files and ours are
 * interchangeable. PEM label "PKCS#11 PROVIDER URI" around the DER of
 *   SEQUENCE { VisibleString "PKCS#11 Provider URI v1.0", UTF8String uri }
 * The file holds a URI, never key material and never a PIN. */
#ifndef HP_URI_PEM_H
#define HP_URI_PEM_H

#include <openssl/bio.h>
#include <stddef.h>

#define HP_URI_PEM_LABEL "PKCS#11 PROVIDER URI"
#define HP_URI_FILE_VERSION "PKCS#11 Provider URI v1.0"
/* The name of the DER structure between our decoders (hp_decoder.c). */
#define HP_URI_FILE_STRUCTURE "pkcs11-uri"

/* DER of the structure for uri; caller frees with OPENSSL_free. 0 on failure. */
int hp_uri_file_der(const char *uri, unsigned char **der, size_t *der_len);
/* The same as PEM, written to out. */
int hp_uri_file_pem(BIO *out, const char *uri);

enum {
    HP_URI_FILE_OK,
    HP_URI_FILE_NOT_OURS,   /* not this structure: someone else's DER */
    HP_URI_FILE_BAD_VERSION /* this structure with another version string */
};
/* Parses der (all of it). On HP_URI_FILE_OK, *uri is the URI as a C string
 * (caller frees with OPENSSL_free); a URI holding a NUL byte is not ours. */
int hp_uri_file_parse(const unsigned char *der, size_t der_len, char **uri);

#endif
