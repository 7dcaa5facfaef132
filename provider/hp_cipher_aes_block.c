/* AES-ECB, AES-CBC and AES-CTR in the token: the block and counter
 * bookkeeping that makes the token's output match OpenSSL's byte for byte,
 * call for call. The context, its lease and the key are hp_cipher.c's.
 *
 * ECB and CBC: whole blocks go to the token, the rest waits here, as in
 * OpenSSL's own block ciphers (a padded decryption keeps its last block
 * back until final). PKCS#7 padding is added and checked here, around
 * CKM_AES_ECB / CKM_AES_CBC, so that update and final return exactly
 * what OpenSSL returns whatever a token's CBC_PAD buffering does; the
 * check does not branch on the padding bytes.
 *
 * CTR: CKM_AES_CTR with a 128-bit counter (OpenSSL's counter is the
 * whole block); the token streams partial blocks. */
#include "hp_cipher_local.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static OSSL_FUNC_cipher_gettable_ctx_params_fn block_gettable_ctx_params;
static OSSL_FUNC_cipher_settable_ctx_params_fn block_settable_ctx_params;

static const struct mode_info mode_ecb = {"ECB", EVP_CIPH_ECB_MODE, CKM_AES_ECB, 0, 16, 0,
                                          0};
static const struct mode_info mode_cbc = {
    "CBC", EVP_CIPH_CBC_MODE, CKM_AES_CBC, 16, 16, 0, 0};
static const struct mode_info mode_ctr = {"CTR", EVP_CIPH_CTR_MODE, CKM_AES_CTR, 16, 1, 0,
                                          0};

/* ---- ECB and CBC ------------------------------------------------------------- */

/* Whole blocks through the token, tracking the CBC chaining value. */
static int blocks(cipher_ctx *c, const unsigned char *in, size_t len, unsigned char *out)
{
    unsigned char last[AES_BLOCK];

    if (len == 0)
        return 1;
    /* Decryption chains on the ciphertext, which an in-place call overwrites. */
    memcpy(last, in + len - AES_BLOCK, AES_BLOCK);
    if (!cipher_through(c, in, len, out))
        return 0;
    if (c->mi->mode == EVP_CIPH_CBC_MODE)
        memcpy(c->iv, c->enc ? out + len - AES_BLOCK : last, AES_BLOCK);
    return 1;
}

static int overlap(const unsigned char *a, size_t alen, const unsigned char *b,
                   size_t blen)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;

    return x < y + blen && y < x + alen;
}

int block_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
                 const unsigned char *in, size_t inl)
{
    size_t avail = c->bufsz + inl, keep, n, done = 0, inl0 = inl;
    unsigned char *copy = NULL;
    int ok = 0;

    /* OpenSSL's rule: whole blocks go through, the rest waits; a padded
     * decryption keeps its last block (whole or not) for final. */
    if (!c->enc && c->pad)
        keep = avail == 0 ? 0 : (avail - 1) % AES_BLOCK + 1;
    else
        keep = avail % AES_BLOCK;
    n = avail - keep;
    *outl = 0;
    if (n == 0) {
        memcpy(c->buf + c->bufsz, in, inl);
        c->bufsz += inl;
        return 1;
    }
    if (!cipher_out_room(c, n, outsize))
        return 0;
    if (c->bufsz > 0 && overlap(out, n, in, inl)) {
        /* Output runs ahead of input by the bytes held: read from a copy. */
        if ((copy = malloc(inl)) == NULL)
            return 0;
        memcpy(copy, in, inl);
        in = copy;
    }
    if (c->bufsz > 0) {
        size_t fill = AES_BLOCK - c->bufsz;

        memcpy(c->buf + c->bufsz, in, fill);
        in += fill;
        inl -= fill;
        if (!blocks(c, c->buf, AES_BLOCK, out))
            goto end;
        c->bufsz = 0;
        done = AES_BLOCK;
    }
    if (!blocks(c, in, n - done, out + done))
        goto end;
    in += n - done;
    inl -= n - done;
    memcpy(c->buf, in, inl);
    c->bufsz = inl;
    *outl = n;
    ok = 1;
end:
    if (copy != NULL)
        OPENSSL_clear_free(copy, inl0);
    return ok;
}

/* Mask helpers: all ones when the condition holds, else zero. */
static unsigned int ct_eq(unsigned int a, unsigned int b)
{
    unsigned int x = a ^ b;

    return 0U - (((x | (0U - x)) >> (sizeof(x) * 8 - 1)) ^ 1U);
}

static unsigned int ct_lt(unsigned int a, unsigned int b) /* a, b < 2^31 */
{
    return 0U - ((a - b) >> (sizeof(a) * 8 - 1));
}

/* PKCS#7 padding of the last block: the number of data bytes in it, or -1.
 * Every byte is looked at whatever the padding value. */
static int unpad(const unsigned char *blk)
{
    unsigned int pad = blk[AES_BLOCK - 1];
    unsigned int good = ~ct_eq(pad, 0) & ct_lt(pad, AES_BLOCK + 1);

    for (unsigned int i = 0; i < AES_BLOCK; i++) {
        unsigned int in_pad = ct_lt(i, pad);

        good &= ~in_pad | ct_eq(blk[AES_BLOCK - 1 - i], pad);
    }
    return good != 0 ? (int)(AES_BLOCK - pad) : -1;
}

int block_final(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize)
{
    unsigned char blk[AES_BLOCK];
    int n, ok = 0;

    *outl = 0;
    if (c->enc && c->pad) {
        unsigned char v = (unsigned char)(AES_BLOCK - c->bufsz);

        if (!cipher_out_room(c, AES_BLOCK, outsize))
            goto abort;
        memset(c->buf + c->bufsz, v, v);
        if (!blocks(c, c->buf, AES_BLOCK, out) || !cipher_finish(c))
            goto abort;
        c->bufsz = 0;
        *outl = AES_BLOCK;
        return 1;
    }
    if (c->pad ? c->bufsz != AES_BLOCK : c->bufsz != 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "wrong final block length: %zu bytes left over; AES-%s %s data "
                 "must be a whole number of %d-byte blocks",
                 c->pad ? c->bufsz % AES_BLOCK : c->bufsz, c->mi->name,
                 c->pad ? "padded" : "unpadded", AES_BLOCK);
        goto abort;
    }
    if (!c->pad) {
        if (!cipher_finish(c))
            goto abort;
        return 1;
    }
    /* Padded decryption: the last block, then its padding checked here. */
    if (!blocks(c, c->buf, AES_BLOCK, blk) || !cipher_finish(c))
        goto abort;
    c->bufsz = 0;
    n = unpad(blk);
    if (n < 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "bad decrypt: AES-%s padding is invalid",
                 c->mi->name);
        goto end;
    }
    if (!cipher_out_room(c, (size_t)n, outsize))
        goto end;
    memcpy(out, blk, (size_t)n);
    *outl = (size_t)n;
    ok = 1;
    goto end;
abort:
    p11_op_abort(&c->op);
end:
    OPENSSL_cleanse(blk, sizeof(blk));
    return ok;
}

/* EVP_Cipher(): whole blocks, no padding, no buffering (as OpenSSL's). */
int block_cipher(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
                 const unsigned char *in, size_t inl)
{
    if (c->mi->mode == EVP_CIPH_CTR_MODE)
        return ctr_update(c, out, outl, outsize, in, inl);
    *outl = 0;
    if (inl % AES_BLOCK != 0 || c->bufsz != 0) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "EVP_Cipher with AES-%s takes whole blocks (%zu bytes given)",
                 c->mi->name, inl);
        return 0;
    }
    if (!cipher_out_room(c, inl, outsize) || !blocks(c, in, inl, out))
        return 0;
    *outl = inl;
    return 1;
}

/* ---- CTR --------------------------------------------------------------------- */

int ctr_update(cipher_ctx *c, unsigned char *out, size_t *outl, size_t outsize,
               const unsigned char *in, size_t inl)
{
    size_t total, blocks_done;

    *outl = 0;
    if (!cipher_out_room(c, inl, outsize) || !cipher_through(c, in, inl, out))
        return 0;
    /* Where the next byte's keystream comes from: for updated-iv and for a
     * restart after final. */
    total = c->num + inl;
    blocks_done = total / AES_BLOCK;
    for (int i = AES_BLOCK - 1; i >= 0 && blocks_done != 0; i--) {
        size_t sum = c->iv[i] + (blocks_done & 0xff);

        c->iv[i] = (unsigned char)sum;
        blocks_done = (blocks_done >> 8) + (sum >> 8);
    }
    c->num = (unsigned int)(total % AES_BLOCK);
    *outl = inl;
    return 1;
}

/* CTR has nothing held back: final only ends the token operation. */
int ctr_final(cipher_ctx *c, size_t *outl)
{
    *outl = 0;
    if (cipher_finish(c))
        return 1;
    p11_op_abort(&c->op);
    return 0;
}

/* ---- parameters -------------------------------------------------------------- */

int block_get_ctx_params(cipher_ctx *c, OSSL_PARAM params[])
{
    unsigned char next[AES_BLOCK];
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_PADDING)) != NULL &&
        !OSSL_PARAM_set_uint(p, c->pad))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_NUM)) != NULL &&
        !OSSL_PARAM_set_uint(p, c->num))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IV)) != NULL &&
        !cipher_set_octets(p, c->oiv, c->ivlen))
        return 0;
    /* CTR: OpenSSL's running IV is the counter of the next keystream
     * block to make. */
    memcpy(next, c->iv, AES_BLOCK);
    if (c->mi->mode == EVP_CIPH_CTR_MODE && c->num != 0)
        for (int i = AES_BLOCK - 1; i >= 0 && ++next[i] == 0; i--)
            ;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_UPDATED_IV)) != NULL &&
        !cipher_set_octets(p, next, c->ivlen))
        return 0;
    return 1;
}

int block_set_ctx_params(cipher_ctx *c, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_PADDING)) != NULL &&
        !OSSL_PARAM_get_uint(p, &c->pad))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_NUM)) != NULL) {
        unsigned int num;

        if (!OSSL_PARAM_get_uint(p, &num))
            return 0;
        if (c->mi->mode == EVP_CIPH_CTR_MODE) {
            if (num >= AES_BLOCK) {
                hp_raise(c->pctx, HP_R_BAD_PARAM, "AES-CTR: num %u out of range", num);
                return 0;
            }
            if (num != c->num)
                /* The token's keystream position changes: restart it
                 * there at the next update. */
                p11_op_abort(&c->op);
        }
        c->num = num;
    }
    return 1;
}

static const OSSL_PARAM *block_gettable_ctx_params(void *cctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_PADDING, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_NUM, NULL),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_IV, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_UPDATED_IV, NULL, 0),
        OSSL_PARAM_END,
    };
    return gettable;
}

static const OSSL_PARAM *block_settable_ctx_params(void *cctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_PADDING, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_NUM, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_utf8_string(HP_CIPHER_PARAM_KEY_URI, NULL, 0),
        OSSL_PARAM_utf8_string(HP_CIPHER_PARAM_TOKEN_URI, NULL, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

/* ---- the algorithms ---------------------------------------------------------- */

AES_CIPHER(128, cbc, block);
AES_CIPHER(192, cbc, block);
AES_CIPHER(256, cbc, block);
AES_CIPHER(128, ctr, block);
AES_CIPHER(192, ctr, block);
AES_CIPHER(256, ctr, block);
AES_CIPHER(128, ecb, block);
AES_CIPHER(192, ecb, block);
AES_CIPHER(256, ecb, block);
