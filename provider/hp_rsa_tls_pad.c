/* TLS 1.2 RSA key exchange (RFC 5246 7.4.7.1): the server must not tell a
 * client whether the PKCS#1 v1.5 padding or the version bytes of its
 * premaster secret were right (Bleichenbacher's padding oracle, and its
 * timing variants). It goes on with a random premaster secret instead, so a
 * bad ClientKeyExchange fails later, at the Finished message, exactly as a
 * well-formed one with another secret does. The token decrypts without
 * padding (CKM_RSA_X_509); this file decides, in constant time, which of
 * the two secrets is used.
 *
 * Every test below is turned into an all-ones or all-zero mask; masks are
 * combined with & and |, and the result is selected byte by byte. Nothing
 * branches on, or indexes memory by, a byte of em. */
#include "hp_rsa_tls_pad.h"

/* All ones when the top bit of x is set, else zero. */
static unsigned int ct_top(unsigned int x)
{
    return 0u - (x >> (sizeof(x) * 8 - 1));
}

static unsigned int ct_zero(unsigned int x)
{
    return ct_top(~x & (x - 1u));
}

static unsigned int ct_eq(unsigned int a, unsigned int b)
{
    return ct_zero(a ^ b);
}

static unsigned char ct_pick(unsigned int mask, unsigned char yes, unsigned char no)
{
    return (unsigned char)((mask & yes) | (~mask & no));
}

int hp_rsa_tls_premaster(unsigned char out[HP_TLS_PREMASTER_LEN], const unsigned char *em,
                         size_t emlen, unsigned int client_version,
                         unsigned int alt_version,
                         const unsigned char fallback[HP_TLS_PREMASTER_LEN])
{
    /* 00 02, at least 8 bytes of PS, 00, the secret. */
    const size_t min_len = 2 + 8 + 1 + HP_TLS_PREMASTER_LEN;
    const unsigned char *secret;
    unsigned int good, version_ok;
    size_t i;

    if (em == NULL || emlen < min_len)
        return -1;
    secret = em + emlen - HP_TLS_PREMASTER_LEN;
    good = ct_eq(em[0], 0x00) & ct_eq(em[1], 0x02);
    /* PS runs up to the zero separator right before the secret: the secret
     * has a fixed length, so a zero anywhere in PS means another length. */
    for (i = 2; i < emlen - HP_TLS_PREMASTER_LEN - 1; i++)
        good &= ~ct_zero(em[i]);
    good &= ct_zero(em[emlen - HP_TLS_PREMASTER_LEN - 1]);
    version_ok = ct_eq(secret[0], (client_version >> 8) & 0xff) &
                 ct_eq(secret[1], client_version & 0xff);
    /* Some old clients put the negotiated version there instead of the
     * offered one; OpenSSL accepts it when the application asked to
     * (SSL_OP_TLS_ROLLBACK_BUG, which is what sets alt_version). Whether
     * alt_version is set is public, not secret. */
    if (alt_version != 0)
        version_ok |= ct_eq(secret[0], (alt_version >> 8) & 0xff) &
                      ct_eq(secret[1], alt_version & 0xff);
    good &= version_ok;
    for (i = 0; i < HP_TLS_PREMASTER_LEN; i++)
        out[i] = ct_pick(good, secret[i], fallback[i]);
    return HP_TLS_PREMASTER_LEN;
}
