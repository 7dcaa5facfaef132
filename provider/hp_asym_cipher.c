/* RSA encryption with token keys (issue 4): not written yet. */
#include "hp_provider.h"

const OSSL_ALGORITHM hp_asym_cipher_algs[] = {
    {NULL, NULL, NULL, NULL},
};
