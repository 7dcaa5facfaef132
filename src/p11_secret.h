/* Secret keys for ciphers, inside the token.
 *
 * Two kinds, one record:
 *  - a key the token already holds (CKO_SECRET_KEY), found by pkcs11: URI;
 *  - raw key bytes from the application (OpenSSL 3.0 hands ciphers raw
 *    keys), made into a session object on the token: CKA_TOKEN false,
 *    CKA_SENSITIVE true, CKA_EXTRACTABLE false. The object is destroyed
 *    when the last reference goes.
 *
 * Handles are valid in one module generation. After fork, module
 * re-initialisation or the loss of the token's object session, a token key
 * is found again by identity (class, key type, CKA_ID, CKA_LABEL) and a raw
 * key's object is made again from the bytes, which the record keeps for that
 * purpose (as OpenSSL's own AES keeps its key schedule) and wipes when freed.
 *
 * A record may be shared by duplicated cipher contexts in several threads:
 * the handle is refreshed under the record's lock. */
#ifndef P11_SECRET_H
#define P11_SECRET_H

#include "p11_op.h"
#include "p11_uri.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct p11_secret {
    atomic_int refs;
    p11_token *tok;
    CK_KEY_TYPE type;
    CK_ULONG len; /* key length in bytes (CKA_VALUE_LEN) */
    char *name;   /* for messages: the URI (PIN masked) or "AES-256 session key" */

    pthread_mutex_t lock; /* guards the handles below */
    CK_OBJECT_HANDLE h;   /* the object operations use */
    unsigned gen;         /* module generation of h; 0: none yet or dead */

    /* Raw key: h is our session object, made from these bytes. */
    unsigned char *value;

    /* Token key: h is the token object itself, found again by CKA_ID and
     * CKA_LABEL. No session copy is made (DESIGN §8): SoftHSM2 2.6's
     * C_CopyObject is not atomic (a search running meanwhile finds the
     * half-made copy as a second token object with the same label and id),
     * and an AES key costs it little to decrypt per use (~8 us). */
    unsigned char *id;
    CK_ULONG id_len;
    char *label;
} p11_secret;

/* A session object on t holding the raw key v (len bytes) of key type type
 * (CKK_AES), usable for encryption and decryption only. The caller has
 * logged in if the token wants it. refs starts at 1. */
CK_RV p11_secret_import(p11_token *t, CK_KEY_TYPE type, const unsigned char *v,
                        size_t len, p11_secret **out);
/* The one CKO_SECRET_KEY of key type type on t that the URI's object
 * attributes (object=, id=) match. The caller has logged in. */
CK_RV p11_secret_find(p11_token *t, const p11_uri *uri, CK_KEY_TYPE type,
                      p11_secret **out);
/* Whether s was made from exactly these bytes (constant time in the bytes). */
int p11_secret_has_value(const p11_secret *s, const unsigned char *v, size_t len);
void p11_secret_up(p11_secret *s);
/* Drops a reference; the last one destroys a session object and wipes the
 * bytes. */
void p11_secret_free(p11_secret *s);

/* p11_op_init_obj with s, its object made or found again first if it
 * belongs to an older module generation or turns out dead. */
CK_RV p11_secret_op_init(p11_op *op, p11_secret *s, p11_op_kind kind, CK_MECHANISM *mech);

/* Copies the operation running on src onto a new lease (C_GetOperationState
 * on src's session, C_SetOperationState on the new one, with key s): for
 * duplicating a context mid-operation. Most tokens cannot
 * (CKR_FUNCTION_NOT_SUPPORTED, CKR_STATE_UNSAVEABLE); then nothing changes
 * and the failure is recorded. */
CK_RV p11_secret_op_dup(p11_op *dst, p11_op *src, p11_secret *s);

#endif
