/* Key derivation in the token: ECDH (CKM_ECDH1_DERIVE), the shared secret
 * read back from a short-lived session object. */
#ifndef P11_DERIVE_H
#define P11_DERIVE_H

#include "p11_object.h"

/* The largest shared secret p11_ecdh_derive returns (P-521: 66 bytes). */
#define P11_ECDH_SECRET_MAX 66

/* ECDH of k's private key with the peer's public point (raw uncompressed,
 * 0x04 || X || Y), with CKD_NULL: the shared secret is X of the product,
 * secret_len bytes (the curve's field size), written to out. The token
 * derives a CKO_SECRET_KEY session object that is not sensitive and is
 * extractable, hsmprov reads its CKA_VALUE and destroys it, on every path.
 * One leased session from derive to destroy; a lost session, login or key
 * handle is recovered as p11_recover decides. */
CK_RV p11_ecdh_derive(p11_key *k, const unsigned char *peer, CK_ULONG peer_len,
                      CK_ULONG secret_len, unsigned char *out);

#endif
