#include "p11_crypt.h"

#include "p11_failure.h"
#include "p11_names.h"
#include "p11_op.h"

#include <stdio.h>

static const struct {
    const char *op_name;
} calls[] = {
    [P11_SIGN] = {"C_Sign"},
    [P11_VERIFY] = {"C_Verify"},
    [P11_ENCRYPT] = {"C_Encrypt"},
    [P11_DECRYPT] = {"C_Decrypt"},
};

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

static CK_RV op_run(p11_module *m, p11_op_kind kind, CK_SESSION_HANDLE h,
                    const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                    CK_ULONG *outlen)
{
    switch (kind) {
    case P11_SIGN:
        return P11_CALL(m, C_Sign, h, (CK_BYTE *)in, inlen, out, outlen);
    case P11_VERIFY:
        return P11_CALL(m, C_Verify, h, (CK_BYTE *)in, inlen, out, *outlen);
    case P11_ENCRYPT:
        return P11_CALL(m, C_Encrypt, h, (CK_BYTE *)in, inlen, out, outlen);
    case P11_DECRYPT:
        return P11_CALL(m, C_Decrypt, h, (CK_BYTE *)in, inlen, out, outlen);
    case P11_DIGEST:
        break;
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

CK_RV p11_oneshot(p11_key *k, p11_op_kind kind, CK_MECHANISM *mech,
                  const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                  CK_ULONG *outlen)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_op op = P11_OP_INIT;
    CK_ULONG cap = *outlen;
    CK_RV rv;

    if (kind == P11_DIGEST)
        return CKR_FUNCTION_NOT_SUPPORTED;
    /* An init and one call on an operation like any other, recovered as a
     * whole: a session lost at the call takes the init with it. */
    do {
        rv = p11_op_init_key_once(&op, k, kind, mech, &r);
        if (rv != CKR_OK)
            continue;
        *outlen = cap;
        rv = op_run(k->tok->m, kind, op.lease.h, in, inlen, out, outlen);
        /* Ended, whatever the answer (PKCS#11 §5.2), or p11_recover closes
         * the session it still runs on. */
        op.active = 0;
        if (rv != CKR_OK && !(kind == P11_VERIFY && (rv == CKR_SIGNATURE_INVALID ||
                                                     rv == CKR_SIGNATURE_LEN_RANGE)))
            p11_fail_mech(rv, calls[kind].op_name, mech, k->name);
    } while (p11_recover(&r, k->tok, &op.lease, rv) == P11_RETRY);
    p11_lease_release(&op.lease);
    /* Found deleted while this operation ran: its copy was destroyed under
     * it, and the token's complaint is beside the point. */
    if (rv != CKR_OK && op.key != NULL && atomic_load(&k->gone))
        return p11_key_fail_gone(k);
    return rv;
}
