/* Multi-step token operations that hold their session lease from init to
 * final (DESIGN §2.3): streaming sign/verify inside the token, and ciphers.
 *
 * The p11_op value lives in an OpenSSL context, so the lease belongs to that
 * context whatever threads call it. p11_op_abort() ends an unfinished
 * operation (C_SessionCancel where the module has it, otherwise a final call
 * into a scratch buffer, otherwise closing the session) and returns the lease:
 * a session never goes back to the pool with an operation active. */
#ifndef P11_OP_H
#define P11_OP_H

#include "p11_crypt.h"
#include "p11_recover.h"

typedef struct p11_op {
    p11_lease lease;
    p11_token *tok;
    p11_op_kind kind;
    int active;   /* Init succeeded and no call has ended the operation yet */
    int keep;     /* keep the lease when the operation ends: a next step follows */
    p11_key *key; /* the private key used, if any (owned by the caller's context) */
} p11_op;

#define P11_OP_INIT                                                                      \
    {                                                                                    \
        P11_LEASE_INIT, NULL, P11_SIGN, 0, 0, NULL                                       \
    }

/* Leases a session (keeps the one held, after aborting what runs on it) and
 * calls C_<kind>Init with key object o. */
CK_RV p11_op_init(p11_op *op, p11_key *k, p11_op_kind kind, CK_MECHANISM *mech);
/* C_DigestInit on a leased session of t. With op->keep set, the lease
 * outlives C_DigestFinal so that the digest can be signed on the same
 * session (tokens with a raw signature mechanism but no combined one). */
CK_RV p11_op_digest_init(p11_op *op, p11_token *t, CK_MECHANISM *mech);
/* Same with a raw object handle on token t (secret keys made for ciphers). */
CK_RV p11_op_init_obj(p11_op *op, p11_token *t, p11_op_kind kind, CK_MECHANISM *mech,
                      CK_OBJECT_HANDLE o, const char *name);
/* One attempt of p11_op_init / p11_op_init_obj, for a caller's own
 * p11_recover loop (p11_oneshot, secret keys): tells r which handle it used
 * (and, for a key, how to find it again); on failure the lease is left to
 * p11_recover, which gives it back. */
CK_RV p11_op_init_key_once(p11_op *op, p11_key *k, p11_op_kind kind, CK_MECHANISM *mech,
                           p11_recovery *r);
CK_RV p11_op_init_obj_once(p11_op *op, p11_token *t, p11_op_kind kind, CK_MECHANISM *mech,
                           CK_OBJECT_HANDLE o, const char *name, p11_recovery *r);
/* C_<kind>Update. SIGN/VERIFY: out may be NULL. On error the operation has
 * ended and the lease is released. */
CK_RV p11_op_update(p11_op *op, const unsigned char *in, CK_ULONG inlen,
                    unsigned char *out, CK_ULONG *outlen);
/* C_<kind>Final; releases the lease once the operation has ended.
 * VERIFY: out/outlen is the signature to check (CKR_SIGNATURE_INVALID when bad).
 * SIGN/ENCRYPT/DECRYPT: out NULL asks the size, which keeps the operation. */
CK_RV p11_op_final(p11_op *op, unsigned char *out, CK_ULONG *outlen);
/* One-shot C_Encrypt/C_Decrypt/C_Sign on an initialised operation. */
CK_RV p11_op_oneshot(p11_op *op, const unsigned char *in, CK_ULONG inlen,
                     unsigned char *out, CK_ULONG *outlen);
/* Ends whatever runs and returns the lease. Safe on an idle op. */
void p11_op_abort(p11_op *op);

/* Whether an operation runs (init succeeded, nothing has ended it yet): the
 * context holds its lease. */
static inline int p11_op_running(const p11_op *op)
{
    return op->active;
}
/* C_<kind>Final that keeps the lease for a next step on the same session
 * (a GCM tag check after the keystream). */
CK_RV p11_op_final_keep(p11_op *op, unsigned char *out, CK_ULONG *outlen);
/* Hands a running operation and its lease to dst (a duplicated context);
 * src is left idle. */
void p11_op_move(p11_op *dst, p11_op *src);
/* The label of the token the operation runs on, for messages. */
const char *p11_op_token_label(const p11_op *op);

/* Digest in the token, then a raw signature on the same session
 * (p11_op_digest.c): C_DigestInit now, with k re-found first if it must be;
 * then, after the updates, C_DigestFinal into h and C_<kind>Init with the
 * raw mechanism, ready for p11_op_oneshot. */
CK_RV p11_op_digest_then_init(p11_op *op, p11_key *k, CK_MECHANISM *digest);
CK_RV p11_op_digest_then_step(p11_op *op, p11_key *k, p11_op_kind kind, CK_MECHANISM *raw,
                              unsigned char *h, CK_ULONG *hlen);

/* One-shot operations with a key (sign, verify, encrypt, decrypt): each
 * leases a session for exactly one Init + one call (DESIGN §2.2), so the
 * steady-state cost of a signature is C_SignInit and C_Sign, nothing more.
 * A session, login or key handle the token lost is recovered as p11_recover()
 * decides. SIGN/ENCRYPT/DECRYPT: in → out, *outlen is the capacity on entry
 * and the length on return (out must be large enough: the caller knows the
 * size). VERIFY: in is the data, out and outlen the signature; returns
 * CKR_SIGNATURE_INVALID (no failure recorded) for a bad signature. */
CK_RV p11_oneshot(p11_key *k, p11_op_kind kind, CK_MECHANISM *mech,
                  const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                  CK_ULONG *outlen);

#endif
