#include "p11_crypt.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <stdio.h>

CK_RV p11_call_init(p11_module *m, p11_op_kind kind, CK_SESSION_HANDLE h,
                    CK_MECHANISM *mech, CK_OBJECT_HANDLE o)
{
    switch (kind) {
    case P11_SIGN:
        return P11_CALL(m, C_SignInit, h, mech, o);
    case P11_VERIFY:
        return P11_CALL(m, C_VerifyInit, h, mech, o);
    case P11_ENCRYPT:
        return P11_CALL(m, C_EncryptInit, h, mech, o);
    case P11_DECRYPT:
        return P11_CALL(m, C_DecryptInit, h, mech, o);
    case P11_DIGEST:
        return P11_CALL(m, C_DigestInit, h, mech);
    }
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV p11_fail_mech(CK_RV rv, const char *call, CK_MECHANISM *mech, const char *name)
{
    const char *mn = p11_mech_name(mech->mechanism);

    if (mn != NULL)
        return p11_fail(rv, call, "%s with %s", name, mn);
    return p11_fail(rv, call, "%s with mechanism 0x%lx", name,
                    (unsigned long)mech->mechanism);
}
