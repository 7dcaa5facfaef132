/* Unit test of the TLS 1.2 premaster secret check (provider/hp_rsa_tls_pad.c):
 * crafted decryptions of a 2048-bit key, each either yielding its secret or,
 * for every kind of defect, the stand-in secret, never an error.
 *
 *   unit_tls_pad [CASE]
 */
#include "hp_rsa_tls_pad.h"
#include "unit_check.h"

#include <stdio.h>
#include <string.h>

#define EM_LEN 256
#define PMS HP_TLS_PREMASTER_LEN

static unsigned char fallback[PMS];

/* 00 02 PS 00 03 03 R[46], PS of non-zero bytes, R distinct from fallback. */
static void good_em(unsigned char em[EM_LEN])
{
    size_t i;

    em[0] = 0x00;
    em[1] = 0x02;
    for (i = 2; i < EM_LEN - PMS - 1; i++)
        em[i] = (unsigned char)(1 + i % 255);
    em[EM_LEN - PMS - 1] = 0x00;
    em[EM_LEN - PMS] = 0x03;
    em[EM_LEN - PMS + 1] = 0x03;
    for (i = 2; i < PMS; i++)
        em[EM_LEN - PMS + i] = (unsigned char)(0x40 + i);
}

/* The secret taken from em (1), the stand-in (0), or neither (-1). */
static int outcome(const unsigned char *em, size_t len, unsigned int ver,
                   unsigned int alt)
{
    unsigned char out[PMS];

    memset(out, 0xee, sizeof(out));
    if (hp_rsa_tls_premaster(out, em, len, ver, alt, fallback) != PMS)
        return -1;
    if (memcmp(out, em + len - PMS, PMS) == 0)
        return 1;
    if (memcmp(out, fallback, PMS) == 0)
        return 0;
    return -1;
}

static void init_fallback(void)
{
    for (size_t i = 0; i < PMS; i++)
        fallback[i] = (unsigned char)(0xa0 + i);
}

static void good(void)
{
    unsigned char em[EM_LEN];

    init_fallback();
    good_em(em);
    CHECK(outcome(em, EM_LEN, 0x0303, 0) == 1, "well-formed premaster not taken");
    /* The smallest modulus that can carry one: PS of exactly 8 bytes. */
    CHECK(outcome(em + EM_LEN - 59, 59, 0x0303, 0) == 0, "59 bytes with a bad head");
    em[EM_LEN - 59] = 0x00;
    em[EM_LEN - 58] = 0x02;
    CHECK(outcome(em + EM_LEN - 59, 59, 0x0303, 0) == 1, "PS of 8 bytes refused");
    CHECK(outcome(em + EM_LEN - 58, 58, 0x0303, 0) == -1, "58 bytes accepted");
}

static void bad_first_bytes(void)
{
    unsigned char em[EM_LEN];
    static const unsigned char heads[][2] = {{0x00, 0x01}, {0x00, 0x00}, {0x01, 0x02},
                                             {0x00, 0x03}, {0x02, 0x00}, {0x80, 0x02}};

    init_fallback();
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        good_em(em);
        em[0] = heads[i][0];
        em[1] = heads[i][1];
        CHECK(outcome(em, EM_LEN, 0x0303, 0) == 0, "head %02x %02x taken", heads[i][0],
              heads[i][1]);
    }
}

static void short_ps(void)
{
    unsigned char em[EM_LEN];

    init_fallback();
    /* A zero inside PS: the message would be longer than 48 bytes, and for
     * a zero in the first 8 bytes PS would be shorter than 8. */
    for (size_t at = 2; at < EM_LEN - PMS - 1; at++) {
        good_em(em);
        em[at] = 0x00;
        CHECK(outcome(em, EM_LEN, 0x0303, 0) == 0, "zero at %zu taken", at);
    }
}

static void wrong_length(void)
{
    unsigned char em[EM_LEN];

    init_fallback();
    /* No zero before the secret: a shorter message. */
    good_em(em);
    em[EM_LEN - PMS - 1] = 0x01;
    CHECK(outcome(em, EM_LEN, 0x0303, 0) == 0, "no separator taken");
    /* The separator one byte late: a 47-byte message. */
    good_em(em);
    em[EM_LEN - PMS - 1] = 0x01;
    em[EM_LEN - PMS] = 0x00;
    CHECK(outcome(em, EM_LEN, 0x0303, 0) == 0, "47-byte message taken");
    CHECK(outcome(em, 0, 0x0303, 0) == -1 && outcome(NULL, EM_LEN, 0x0303, 0) == -1,
          "nothing to check");
}

static void wrong_version(void)
{
    unsigned char em[EM_LEN];

    init_fallback();
    good_em(em);
    CHECK(outcome(em, EM_LEN, 0x0302, 0) == 0, "TLS 1.1 version for 1.2 taken");
    CHECK(outcome(em, EM_LEN, 0x0203, 0) == 0, "major version only checked");
    CHECK(outcome(em, EM_LEN, 0x0304, 0) == 0, "minor version ignored");
    /* The rollback workaround: the negotiated version, only when set. */
    CHECK(outcome(em, EM_LEN, 0x0304, 0x0303) == 1, "alternative version refused");
    CHECK(outcome(em, EM_LEN, 0x0304, 0x0302) == 0, "wrong alternative version taken");
    em[0] = 0x01;
    CHECK(outcome(em, EM_LEN, 0x0304, 0x0303) == 0, "alternative version skips padding");
}

int main(int argc, char **argv)
{
    static const unit_case cases[] = {
        {"good", good},
        {"bad_first_bytes", bad_first_bytes},
        {"short_ps", short_ps},
        {"wrong_length", wrong_length},
        {"wrong_version", wrong_version},
    };

    return unit_run("unit_tls_pad", cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
