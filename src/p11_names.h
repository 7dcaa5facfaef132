/* Names for PKCS#11 return values and mechanisms, and the few return values
 * of our own (vendor-defined range) for failures that are not the token's. */
#ifndef P11_NAMES_H
#define P11_NAMES_H

#include "p11_pkcs11.h"

#define P11_RV_POOL_EXHAUSTED (CKR_VENDOR_DEFINED | 0x48500001UL)
#define P11_RV_NOT_FOUND (CKR_VENDOR_DEFINED | 0x48500002UL)
#define P11_RV_MODULE_LOAD (CKR_VENDOR_DEFINED | 0x48500003UL)
#define P11_RV_BAD_URI (CKR_VENDOR_DEFINED | 0x48500004UL)
#define P11_RV_NEED_PIN (CKR_VENDOR_DEFINED | 0x48500005UL)
#define P11_RV_TIMEOUT (CKR_VENDOR_DEFINED | 0x48500006UL)
#define P11_RV_KEY_EXISTS (CKR_VENDOR_DEFINED | 0x48500010UL)

/* Whether rv is one of the values above, not a module's own vendor code. */
static inline int p11_rv_is_ours(CK_RV rv)
{
    return (rv & ~0xffUL) == (CKR_VENDOR_DEFINED | 0x48500000UL);
}

/* NULL when the value has no known name. */
const char *p11_rv_name(CK_RV rv);
const char *p11_mech_name(CK_MECHANISM_TYPE mech);

#endif
