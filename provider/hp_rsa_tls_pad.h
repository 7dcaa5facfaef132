/* The TLS 1.2 RSA key exchange check of a decrypted premaster secret, on the
 * host, in constant time (hp_rsa_tls_pad.c). No OpenSSL, no token: the unit
 * test (tests/unit_tls_pad.c) links it alone. */
#ifndef HP_RSA_TLS_PAD_H
#define HP_RSA_TLS_PAD_H

#include <stddef.h>

#define HP_TLS_PREMASTER_LEN 48

/* em: the raw RSA result (emlen bytes, the modulus' length, leading zeros
 * kept). Writes to out the 48-byte premaster secret that em carries when em
 * is 00 02 PS 00 V1 V2 R[46] with no zero in PS, |PS| >= 8 and V1 V2 the
 * client_version (or alt_version, when not 0); otherwise writes fallback, 48
 * random bytes the caller made before the RSA decryption. The choice is made
 * without a branch or a memory access that depends on em. Returns 48, or -1
 * when emlen is too short for any premaster (a public fact: the key size). */
int hp_rsa_tls_premaster(unsigned char out[HP_TLS_PREMASTER_LEN], const unsigned char *em,
                         size_t emlen, unsigned int client_version,
                         unsigned int alt_version,
                         const unsigned char fallback[HP_TLS_PREMASTER_LEN]);

#endif
