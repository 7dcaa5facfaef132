/* Random bytes from the token's generator (C_GenerateRandom). */
#ifndef P11_RANDOM_H
#define P11_RANDOM_H

#include "p11_token.h"

/* The first initialised token of m whose generator is usable (CKF_RNG);
 * CKR_RANDOM_NO_RNG naming the module when none has one. */
CK_RV p11_token_with_rng(p11_module *m, p11_token **out);

/* len bytes from t's C_GenerateRandom into out, on a leased session (one
 * lease per call, DESIGN §2.2); a lost session is recovered. */
CK_RV p11_random(p11_token *t, unsigned char *out, size_t len);

#endif
