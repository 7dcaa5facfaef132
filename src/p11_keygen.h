/* Key pairs generated in the token (C_GenerateKeyPair).
 *
 * The private key is a token object, private, sensitive and never
 * extractable; its public object sits beside it with the same label and id.
 * A key is never generated under a label or an id that a key on the token
 * already has (the URI naming it would then name two keys), and a generation
 * that fails after the token made something destroys what it made: the
 * caller finds either a whole, checked key pair or nothing. */
#ifndef P11_KEYGEN_H
#define P11_KEYGEN_H

#include "p11_object.h"

/* What the key may do (p11_keygen_spec.usage): the attributes set true on
 * the private object and their counterparts on the public one. */
#define P11_USE_SIGN 0x1u    /* CKA_SIGN / CKA_VERIFY */
#define P11_USE_DECRYPT 0x2u /* CKA_DECRYPT / CKA_ENCRYPT */
#define P11_USE_DERIVE 0x4u  /* CKA_DERIVE on both */
#define P11_USE_UNWRAP 0x8u  /* CKA_UNWRAP / CKA_WRAP */

/* Chosen ids are this long (random bytes, as the peer provider chooses). */
#define P11_KEYGEN_ID_LEN 16

typedef struct p11_keygen_spec {
    CK_KEY_TYPE type; /* CKK_RSA, CKK_EC or CKK_EC_EDWARDS */
    CK_ULONG rsa_bits;
    const unsigned char *rsa_e; /* big-endian public exponent; NULL: 65537 */
    size_t rsa_e_len;
    const unsigned char *ec_params; /* DER of the curve (CKA_EC_PARAMS) */
    size_t ec_params_len;
    unsigned usage;    /* P11_USE_*, already checked against the type */
    const char *label; /* CKA_LABEL; NULL: none */
    size_t label_len;
    const unsigned char *id; /* CKA_ID; NULL: chosen (P11_KEYGEN_ID_LEN bytes) */
    size_t id_len;
} p11_keygen_spec;

/* The one initialised token the URI's token, slot and library attributes
 * match. None, or several (a URI without token= on a module with two
 * tokens), is an error naming the URI and, for several, the tokens. */
CK_RV p11_keygen_token(p11_module *m, const p11_uri *uri, p11_token **out);

/* Generates the key pair on t, which the caller has logged in to, and
 * returns the key record of its private object (refs 1). Fails with
 * P11_RV_KEY_EXISTS, before any object is made, when a private or public
 * key on the token has the label or the id; with CKR_KEY_SIZE_RANGE when
 * the token's mechanism does not take the RSA size. */
CK_RV p11_keygen(p11_token *t, const p11_keygen_spec *s, p11_key **out);

/* Destroys the key pair p11_keygen made for k (both objects, found again
 * by label and id), for a caller that cannot use it after all. */
void p11_keygen_undo(p11_key *k);

#endif
