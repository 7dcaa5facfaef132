/* The one place that includes the Cryptoki header (p11-kit's, PKCS#11 2.40). */
#ifndef P11_PKCS11_H
#define P11_PKCS11_H

#include <p11-kit/pkcs11.h>

#endif
