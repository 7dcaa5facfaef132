/* Mechanism choice: from what the token lists and what the key allows
 * (CKA_ALLOWED_MECHANISMS), with one fallback order for every signature
 * family (RSA PKCS#1 v1.5, RSA-PSS, ECDSA), never from what one module
 * happens to have. */
#ifndef P11_MECH_H
#define P11_MECH_H

#include "p11_object.h"

/* How a digest-sign or digest-verify runs. */
typedef enum {
    P11_VIA_HOST_DIGEST,  /* hashed on the host; the raw mechanism signs the hash */
    P11_VIA_COMBINED,     /* the hash-and-sign mechanism, streamed in the token */
    P11_VIA_TOKEN_DIGEST, /* C_Digest* in the token, then the raw mechanism */
} p11_via;

/* The mechanisms of one signature family with one digest;
 * CK_UNAVAILABLE_INFORMATION for one that does not exist. */
typedef struct p11_sig_mechs {
    CK_MECHANISM_TYPE combined; /* CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA256, ... */
    CK_MECHANISM_TYPE digest;   /* CKM_SHA256, ... */
    CK_MECHANISM_TYPE raw;      /* CKM_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_ECDSA */
} p11_sig_mechs;

/* Whether the token lists mech and k may be used with it. Records nothing. */
int p11_mech_usable(p11_key *k, CK_MECHANISM_TYPE mech);

/* The way a digest-sign with k runs. With in_token (pkcs11-digest-in-token):
 * the combined mechanism, else the token's digest then the raw mechanism,
 * else the host's digest then the raw mechanism. Without: the host's digest
 * and the raw mechanism, else the combined mechanism. A raw or combined
 * mechanism counts only when the token lists it and the key allows it.
 * CKR_MECHANISM_INVALID, naming the key and the mechanisms, when none fits. */
CK_RV p11_mech_choose_sig(p11_key *k, const p11_sig_mechs *sm, int in_token,
                          p11_via *via);

/* One mechanism with no alternative (a pre-hashed input, a decryption):
 * CKR_MECHANISM_INVALID naming the key, the mechanism and whether the token
 * lacks it or the key forbids it. */
CK_RV p11_mech_require(p11_key *k, CK_MECHANISM_TYPE mech);

#endif
