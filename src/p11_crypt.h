/* What every token operation shares: its kinds, the C_<kind>Init call, the
 * failure text that names a mechanism. The operations themselves are in
 * p11_op.h (one-shot and multi-step). */
#ifndef P11_CRYPT_H
#define P11_CRYPT_H

#include "p11_object.h"

/* P11_DIGEST is for multi-step operations only (p11_op). */
typedef enum { P11_SIGN, P11_VERIFY, P11_ENCRYPT, P11_DECRYPT, P11_DIGEST } p11_op_kind;

/* C_<kind>Init on session h (o is ignored for P11_DIGEST). */
CK_RV p11_call_init(p11_module *m, p11_op_kind kind, CK_SESSION_HANDLE h,
                    CK_MECHANISM *mech, CK_OBJECT_HANDLE o);
/* Records a failure of call with mechanism mech on the object called name. */
CK_RV p11_fail_mech(CK_RV rv, const char *call, CK_MECHANISM *mech, const char *name);

#endif
