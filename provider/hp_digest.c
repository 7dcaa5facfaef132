/* The digest and RSA padding tables of hp_digest.h: the digests TLS and
 * X.509 use. SHA-3 has a DigestInfo only (PKCS#1 v1.5 through the raw
 * mechanism): the PKCS#11 2.40 header we build with has no names for it. */
#include "hp_digest.h"

#include <openssl/core_names.h>
#include <openssl/obj_mac.h>
#include <openssl/rsa.h>
#include <string.h>

#define NONE CK_UNAVAILABLE_INFORMATION

/* DigestInfo prefixes from RFC 8017 §9.2 note 1. */
static const hp_digest digests[] = {
    {NID_sha1,
     CKM_SHA_1,
     CKG_MGF1_SHA1,
     CKM_SHA1_RSA_PKCS,
     CKM_SHA1_RSA_PKCS_PSS,
     CKM_ECDSA_SHA1,
     15,
     {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
      0x14}},
    {NID_sha224,
     CKM_SHA224,
     CKG_MGF1_SHA224,
     CKM_SHA224_RSA_PKCS,
     CKM_SHA224_RSA_PKCS_PSS,
     CKM_ECDSA_SHA224,
     19,
     {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
      0x04, 0x05, 0x00, 0x04, 0x1c}},
    {NID_sha256,
     CKM_SHA256,
     CKG_MGF1_SHA256,
     CKM_SHA256_RSA_PKCS,
     CKM_SHA256_RSA_PKCS_PSS,
     CKM_ECDSA_SHA256,
     19,
     {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
      0x01, 0x05, 0x00, 0x04, 0x20}},
    {NID_sha384,
     CKM_SHA384,
     CKG_MGF1_SHA384,
     CKM_SHA384_RSA_PKCS,
     CKM_SHA384_RSA_PKCS_PSS,
     CKM_ECDSA_SHA384,
     19,
     {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
      0x02, 0x05, 0x00, 0x04, 0x30}},
    {NID_sha512,
     CKM_SHA512,
     CKG_MGF1_SHA512,
     CKM_SHA512_RSA_PKCS,
     CKM_SHA512_RSA_PKCS_PSS,
     CKM_ECDSA_SHA512,
     19,
     {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
      0x03, 0x05, 0x00, 0x04, 0x40}},
    {NID_sha3_256,
     NONE,
     NONE,
     NONE,
     NONE,
     NONE,
     19,
     {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
      0x08, 0x05, 0x00, 0x04, 0x20}},
    {NID_sha3_384,
     NONE,
     NONE,
     NONE,
     NONE,
     NONE,
     19,
     {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
      0x09, 0x05, 0x00, 0x04, 0x30}},
    {NID_sha3_512,
     NONE,
     NONE,
     NONE,
     NONE,
     NONE,
     19,
     {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
      0x0a, 0x05, 0x00, 0x04, 0x40}},
};

const hp_digest *hp_digest_by_nid(int nid)
{
    for (size_t i = 0; i < sizeof(digests) / sizeof(digests[0]); i++)
        if (digests[i].nid == nid)
            return &digests[i];
    return NULL;
}

CK_MECHANISM_TYPE hp_digest_mech(int nid)
{
    const hp_digest *d = hp_digest_by_nid(nid);

    return d != NULL ? d->mech : NONE;
}

CK_RSA_PKCS_MGF_TYPE hp_digest_mgf1(int nid)
{
    const hp_digest *d = hp_digest_by_nid(nid);

    return d != NULL ? d->mgf1 : NONE;
}

/* X9.31 signs only, OAEP encrypts only. */
static const struct {
    const char *name;
    int pad, use;
} pads[] = {
    {OSSL_PKEY_RSA_PAD_MODE_PKCSV15, RSA_PKCS1_PADDING, HP_PAD_SIGN | HP_PAD_ENCRYPT},
    {OSSL_PKEY_RSA_PAD_MODE_PSS, RSA_PKCS1_PSS_PADDING, HP_PAD_SIGN},
    {OSSL_PKEY_RSA_PAD_MODE_OAEP, RSA_PKCS1_OAEP_PADDING, HP_PAD_ENCRYPT},
    {OSSL_PKEY_RSA_PAD_MODE_NONE, RSA_NO_PADDING, HP_PAD_SIGN | HP_PAD_ENCRYPT},
    {OSSL_PKEY_RSA_PAD_MODE_X931, RSA_X931_PADDING, HP_PAD_SIGN},
};

const char *hp_rsa_pad_name(int pad, int use)
{
    for (size_t i = 0; i < sizeof(pads) / sizeof(pads[0]); i++)
        if (pads[i].pad == pad && (pads[i].use & use) != 0)
            return pads[i].name;
    return "";
}

int hp_rsa_pad_by_name(const char *name, int use)
{
    for (size_t i = 0; i < sizeof(pads) / sizeof(pads[0]); i++)
        if (strcmp(pads[i].name, name) == 0 && (pads[i].use & use) != 0)
            return pads[i].pad;
    return -1;
}
