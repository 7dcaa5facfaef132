#include "p11_mech.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <stdio.h>

/* A lack is an answer here, not a failure: no failure text is made (this
 * runs at every signature's init). */
static int token_has(p11_key *k, CK_MECHANISM_TYPE mech)
{
    return p11_token_has_mech(k->tok, mech);
}

int p11_mech_usable(p11_key *k, CK_MECHANISM_TYPE mech)
{
    return mech != CK_UNAVAILABLE_INFORMATION && p11_key_allows(k, mech) &&
           token_has(k, mech);
}

/* "CKM_X" or "mechanism 0x..." into buf. */
static const char *mech_text(CK_MECHANISM_TYPE mech, char *buf, size_t len)
{
    const char *n = p11_mech_name(mech);

    if (n != NULL)
        return n;
    snprintf(buf, len, "mechanism 0x%lx", (unsigned long)mech);
    return buf;
}

/* Why k cannot use mech: the token lacks it, or the key forbids it. */
static const char *why_not(p11_key *k, CK_MECHANISM_TYPE mech)
{
    if (!token_has(k, mech))
        return "the token does not offer it";
    if (!p11_key_allows(k, mech))
        return "the key's CKA_ALLOWED_MECHANISMS excludes it";
    return "usable";
}

CK_RV p11_mech_require(p11_key *k, CK_MECHANISM_TYPE mech)
{
    char b[32];

    if (p11_mech_usable(k, mech))
        return CKR_OK;
    return p11_fail(CKR_MECHANISM_INVALID, "C_GetMechanismList", "%s cannot use %s: %s",
                    k->name, mech_text(mech, b, sizeof(b)), why_not(k, mech));
}

CK_RV p11_mech_choose_sig(p11_key *k, const p11_sig_mechs *sm, int in_token, p11_via *via)
{
    int raw = p11_mech_usable(k, sm->raw);
    int combined = p11_mech_usable(k, sm->combined);
    char b1[32], b2[32];

    if (in_token && combined)
        *via = P11_VIA_COMBINED;
    else if (in_token && raw && sm->digest != CK_UNAVAILABLE_INFORMATION &&
             token_has(k, sm->digest))
        *via = P11_VIA_TOKEN_DIGEST;
    else if (raw)
        *via = P11_VIA_HOST_DIGEST;
    else if (combined)
        *via = P11_VIA_COMBINED;
    else if (sm->combined == CK_UNAVAILABLE_INFORMATION)
        return p11_fail(CKR_MECHANISM_INVALID, "C_GetMechanismList",
                        "%s cannot use %s (%s), and no hash-and-sign mechanism exists "
                        "for this digest",
                        k->name, mech_text(sm->raw, b1, sizeof(b1)), why_not(k, sm->raw));
    else
        return p11_fail(CKR_MECHANISM_INVALID, "C_GetMechanismList",
                        "%s can use neither %s (%s) nor %s (%s)", k->name,
                        mech_text(sm->raw, b1, sizeof(b1)), why_not(k, sm->raw),
                        mech_text(sm->combined, b2, sizeof(b2)),
                        why_not(k, sm->combined));
    return CKR_OK;
}
