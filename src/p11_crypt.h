/* One-shot token operations with a key: sign, verify, encrypt, decrypt.
 *
 * Each leases a session for exactly one Init + one call (DESIGN §2.2): the
 * steady-state cost of a signature is C_SignInit and C_Sign, nothing more.
 * A session, login or key handle the token lost is recovered transparently,
 * as p11_recover() decides (one policy for the whole core). */
#ifndef P11_CRYPT_H
#define P11_CRYPT_H

#include "p11_object.h"

/* P11_DIGEST is for multi-step operations only (p11_op). */
typedef enum { P11_SIGN, P11_VERIFY, P11_ENCRYPT, P11_DECRYPT, P11_DIGEST } p11_op_kind;

/* SIGN/ENCRYPT/DECRYPT: in → out, *outlen is the capacity on entry and the
 * length on return (out must be large enough: the caller knows the size).
 * VERIFY: in is the data, out and outlen the signature; returns
 * CKR_SIGNATURE_INVALID (no failure recorded) for a bad signature. */
/* C_<kind>Init on session h (o is ignored for P11_DIGEST). */
CK_RV p11_call_init(p11_module *m, p11_op_kind kind, CK_SESSION_HANDLE h,
                    CK_MECHANISM *mech, CK_OBJECT_HANDLE o);
/* Records a failure of call with mechanism mech on the object called name. */
CK_RV p11_fail_mech(CK_RV rv, const char *call, CK_MECHANISM *mech, const char *name);

CK_RV p11_oneshot(p11_key *k, p11_op_kind kind, CK_MECHANISM *mech,
                  const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                  CK_ULONG *outlen);

#endif
