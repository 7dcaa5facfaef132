/* Symmetric ciphers run by the token (issue 4): not written yet. */
#include "hp_provider.h"

const OSSL_ALGORITHM hp_cipher_algs[] = {
    {NULL, NULL, NULL, NULL},
};
