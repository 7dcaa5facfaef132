/* Digest in the token, then a raw signature on the same leased session: for
 * tokens that offer a raw signature mechanism (CKM_ECDSA) but no combined
 * one (SoftHSM2 has no CKM_ECDSA_SHA256), when the message is to be hashed
 * in the token (pkcs11-digest-in-token). The lease is held from the digest's
 * init to the signature's end, like any multi-step operation. */
#include "p11_op.h"

CK_RV p11_op_digest_then_init(p11_op *op, p11_key *k, CK_MECHANISM *digest)
{
    CK_RV rv;

    /* Find the key again now if it must be (after fork or session loss):
     * that needs a session of its own, which is not to be had once this
     * operation holds its lease and the pool is exhausted. */
    rv = p11_key_current(k);
    if (rv != CKR_OK)
        return rv;
    /* The lease outlives C_DigestFinal: the signature follows on it. */
    op->keep = 1;
    rv = p11_op_digest_init(op, k->tok, digest);
    if (rv != CKR_OK)
        p11_op_abort(op);
    return rv;
}

CK_RV p11_op_digest_then_step(p11_op *op, p11_key *k, p11_op_kind kind, CK_MECHANISM *raw,
                              unsigned char *h, CK_ULONG *hlen)
{
    CK_RV rv = p11_op_final(op, h, hlen);

    op->keep = 0;
    if (rv == CKR_OK && !p11_key_fresh(k))
        /* The token lost our sessions meanwhile: finding the key again
         * needs a session of the pool, so ours goes back first. */
        p11_op_abort(op);
    if (rv == CKR_OK)
        rv = p11_op_init(op, k, kind, raw);
    if (rv != CKR_OK)
        p11_op_abort(op);
    return rv;
}

CK_RV p11_op_final_keep(p11_op *op, unsigned char *out, CK_ULONG *outlen)
{
    CK_RV rv;

    op->keep = 1;
    rv = p11_op_final(op, out, outlen);
    op->keep = 0;
    return rv;
}

void p11_op_move(p11_op *dst, p11_op *src)
{
    *dst = *src;
    *src = (p11_op)P11_OP_INIT;
}

const char *p11_op_token_label(const p11_op *op)
{
    return op->tok != NULL ? op->tok->label : "?";
}
