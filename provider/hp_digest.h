/* OpenSSL's digests and RSA padding modes as PKCS#11 and OSSL params name
 * them: one table for the signature and the RSA encryption code. */
#ifndef HP_DIGEST_H
#define HP_DIGEST_H

#include "p11_pkcs11.h"

/* A digest OpenSSL knows by nid. A member the token has no name for is
 * CK_UNAVAILABLE_INFORMATION. */
typedef struct hp_digest {
    int nid;
    CK_MECHANISM_TYPE mech;     /* the hash alone: C_DigestInit, PSS and OAEP */
    CK_RSA_PKCS_MGF_TYPE mgf1;  /* MGF1 over this hash */
    CK_MECHANISM_TYPE rsa_pkcs; /* combined hash-and-sign mechanisms */
    CK_MECHANISM_TYPE rsa_pss;
    CK_MECHANISM_TYPE ecdsa;
    unsigned char info_len; /* DigestInfo prefix for PKCS#1 v1.5 signatures */
    unsigned char info[19];
} hp_digest;

/* The entry for nid, or NULL. */
const hp_digest *hp_digest_by_nid(int nid);
/* Its mech or mgf1, CK_UNAVAILABLE_INFORMATION for a digest not in the table. */
CK_MECHANISM_TYPE hp_digest_mech(int nid);
CK_RSA_PKCS_MGF_TYPE hp_digest_mgf1(int nid);

/* RSA padding modes (RSA_*_PADDING) by their OSSL_PKEY_RSA_PAD_MODE_* name,
 * limited to those an operation offers. */
enum { HP_PAD_SIGN = 1, HP_PAD_ENCRYPT = 2 };
const char *hp_rsa_pad_name(int pad, int use);     /* "" if use does not offer pad */
int hp_rsa_pad_by_name(const char *name, int use); /* -1 if unknown to use */

#endif
