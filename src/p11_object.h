/* Objects on a token: searching, reading attributes, and the key record that
 * the provider holds for a token key. */
#ifndef P11_OBJECT_H
#define P11_OBJECT_H

#include "p11_token.h"

#include <stdatomic.h>

typedef struct p11_key {
    atomic_int refs;
    p11_token *tok;
    CK_OBJECT_CLASS cls; /* CKO_PRIVATE_KEY or CKO_PUBLIC_KEY: what was loaded */
    CK_KEY_TYPE type;
    /* Handles of the private and the matching public object (same CKA_ID and
     * key type); CK_INVALID_HANDLE when absent. Valid in module generation gen:
     * after fork or re-initialisation they are found again by identity. */
    _Atomic CK_OBJECT_HANDLE priv, pub;
    atomic_uint gen;
    atomic_uint epoch;           /* token epoch the handles were found in */
    pthread_mutex_t refind_lock; /* one thread finds the objects again */
    /* A sensitive session-object copy of the private key (C_CopyObject,
     * still inside the token): SoftHSM2 decrypts a token object's key on
     * every use, not a session object's. Valid while copy_gen is the module
     * generation; re-made after fork, re-initialisation or session loss. */
    _Atomic CK_OBJECT_HANDLE copy;
    atomic_uint copy_gen, copy_epoch;
    atomic_int copy_refused; /* the token would not copy it: do not ask again */
    /* Uses of the private key so far: the copy is made at the second. A key
     * used once (a server that reads its key file at every handshake, a
     * command that signs once) signs with the token object: a copy would
     * cost a C_CopyObject and a C_DestroyObject, and SoftHSM2 keeps what a
     * session object took until C_Finalize, destroyed or not (about 250
     * bytes a copy), so a copy per load grew such a server for good. */
    atomic_uint uses;
    /* The copy outlives the token object: deleting the key from the token
     * does not stop a running process from signing with it. So the private
     * object is confirmed present every m->key_check_ms (p11_key_check):
     * checked_ms is when it last was (CLOCK_MONOTONIC, milliseconds), gone
     * is set for good once it was found deleted. */
    atomic_llong checked_ms;
    atomic_int gone;
    unsigned char *id;
    CK_ULONG id_len;
    char *label;
    char *name; /* pkcs11: URI naming the key, for messages */
    /* Public parts, read once. */
    unsigned char *modulus, *exponent, *ec_params, *ec_point;
    CK_ULONG modulus_len, exponent_len, ec_params_len, ec_point_len;
    CK_ULONG bits;
    /* Read once with the key. CKA_ALWAYS_AUTHENTICATE: every signature or
     * decryption needs a context-specific login after its Init (smart cards'
     * signature keys). CKA_ALLOWED_MECHANISMS: NULL when the token sets no
     * restriction. */
    int always_auth;
    CK_MECHANISM_TYPE *allowed;
    CK_ULONG n_allowed;
} p11_key;

/* Handles of all objects matching the template (n == 0: all objects). */
CK_RV p11_find_objects(p11_token *t, const CK_ATTRIBUTE *tmpl, CK_ULONG n,
                       CK_OBJECT_HANDLE **out, CK_ULONG *count);
/* One attribute, allocated (NUL-terminated for convenience). CKR_ATTRIBUTE_TYPE_INVALID
 * or CKR_ATTRIBUTE_SENSITIVE when absent/unreadable; no failure is recorded. */
CK_RV p11_read_attr(p11_token *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                    unsigned char **val, CK_ULONG *len);
CK_RV p11_read_ulong(p11_token *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                     CK_ULONG *val);

/* Whether k's CKA_ALLOWED_MECHANISMS lets it be used with mech (1 when the
 * key has no such restriction). */
int p11_key_allows(const p11_key *k, CK_MECHANISM_TYPE mech);

/* A key record for the object o (a private or public key), with its public
 * parts; refs starts at 1. */
CK_RV p11_key_load(p11_token *t, CK_OBJECT_HANDLE o, p11_key **out);
/* The same for a private key o whose public key object is known (pub, from
 * C_GenerateKeyPair), instead of searching for it by CKA_ID. */
CK_RV p11_key_load_pair(p11_token *t, CK_OBJECT_HANDLE o, CK_OBJECT_HANDLE pub,
                        p11_key **out);
void p11_key_up(p11_key *k);
void p11_key_free(p11_key *k);
/* The handle to use for a private-key operation: the session copy when
 * enabled and possible, else the token object. */
CK_OBJECT_HANDLE p11_key_private_handle(p11_key *k);
/* Handle h of k turned out invalid: forget it (the copy, or the objects,
 * which are then found again), unless it was already replaced. */
void p11_key_handle_failed(p11_key *k, CK_OBJECT_HANDLE h);
/* A p11_recovery stale callback (obj is a p11_key): handle h failed as
 * stale; forgets it (p11_key_handle_failed) and returns 1, or 0 when finding
 * it again cannot help (k was found deleted, or h is no handle). */
int p11_key_stale(void *k, CK_OBJECT_HANDLE h);
/* Makes sure k's handles belong to the module's current generation, finding
 * the objects again by identity if not. */
CK_RV p11_key_current(p11_key *k);
/* Before a private-key operation on session h (whose lease the caller holds):
 * when the private object was last confirmed more than m->key_check_ms ago,
 * one thread confirms it (one C_GetAttributeValue) while the others go on.
 * CKR_OK: present, not due, or not decidable now (the operation itself will
 * meet the trouble). CKR_OBJECT_HANDLE_INVALID: the object is gone (failure
 * recorded; k is marked gone, its copy destroyed, and every later use fails
 * in p11_key_current), or it was replaced by another key with the same
 * identity (nothing recorded; the caller finds it again and retries). */
CK_RV p11_key_check(p11_key *k, CK_SESSION_HANDLE h);
/* Records that k is gone (found deleted by p11_key_check) and returns
 * CKR_OBJECT_HANDLE_INVALID: also for an operation that failed because the
 * copy was destroyed under it. */
CK_RV p11_key_fail_gone(const p11_key *k);
/* Whether k's handles are of the module's generation and the token's epoch. */
int p11_key_fresh(p11_key *k);

#endif
