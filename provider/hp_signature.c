/* RSA and ECDSA signatures with token keys: what they share. The context,
 * one-shot sign and verify, digest-sign and the parameters common to both
 * are here; hp_signature_rsa.c has the RSA paddings and their parameters,
 * hp_signature_ecdsa.c the r||s <-> DER conversions, and each its dispatch
 * table (Ed25519 is hp_signature_eddsa.c, apart: it has no digest).
 *
 * Digest-sign hashes on the host by default (DESIGN §2.9): the message is
 * hashed here in software and the token signs the hash with the raw mechanism
 * (CKM_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_ECDSA) in one leased call. No lease is
 * held while the application streams data, so duplicating a context is just
 * copying the digest state.
 *
 * When the token lacks the raw mechanism, or pkcs11-digest-in-token = yes,
 * the stream runs in the token with the combined mechanism (CKM_SHA256_RSA_PKCS,
 * ...): the context leases a session at its first update and holds it until
 * final, re-init or free (p11_op). Such a running operation cannot be copied;
 * duplicating the context moves it to the duplicate (OpenSSL's
 * EVP_DigestSignFinal finishes on a duplicate), and the original refuses
 * further use with a clear error. */
#include "hp_signature_local.h"

#include "hp_digest.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

void *sig_newctx(void *provctx, int is_rsa)
{
    sig_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->pctx = provctx;
    c->is_rsa = is_rsa;
    c->pad = RSA_PKCS1_PADDING;
    c->saltlen = RSA_PSS_SALTLEN_AUTO;
    return c;
}

void sig_freectx(void *vctx)
{
    sig_ctx *c = vctx;

    if (c == NULL)
        return;
    /* A context freed mid-stream ends its token operation and returns the
     * session to the pool. */
    p11_op_abort(&c->op);
    EVP_MD_free(c->md);
    EVP_MD_free(c->mgf1);
    EVP_MD_CTX_free(c->mdctx);
    free(c);
}

void *sig_dupctx(void *vctx)
{
    sig_ctx *c = vctx, *d = malloc(sizeof(*d));

    if (d == NULL)
        return NULL;
    *d = *c;
    d->mdctx = NULL;
    d->op = (p11_op)P11_OP_INIT;
    if (p11_op_running(&c->op)) {
        /* Move the running token operation (and its lease) to the copy. */
        p11_op_move(&d->op, &c->op);
        c->moved = 1;
    }
    if ((d->md != NULL && !EVP_MD_up_ref(d->md)) ||
        (d->mgf1 != NULL && !EVP_MD_up_ref(d->mgf1))) {
        free(d);
        return NULL;
    }
    if (c->mdctx != NULL) {
        d->mdctx = EVP_MD_CTX_new();
        if (d->mdctx == NULL || !EVP_MD_CTX_copy_ex(d->mdctx, c->mdctx)) {
            sig_freectx(d);
            return NULL;
        }
    }
    return d;
}

int sig_md_nid(const EVP_MD *md)
{
    return md != NULL ? EVP_MD_get_type(md) : NID_undef;
}

int sig_set_md(sig_ctx *c, const char *name, EVP_MD **slot)
{
    EVP_MD *md = hp_md_fetch(c->pctx, name);

    if (md == NULL) {
        hp_raise(c->pctx, HP_R_BAD_PARAM, "unknown digest \"%s\"", name);
        return 0;
    }
    EVP_MD_free(*slot);
    *slot = md;
    return 1;
}

static int init(sig_ctx *c, void *key, const OSSL_PARAM params[], int sign)
{
    hp_key *k = key;

    /* Re-init ends what the context was doing in the token. */
    p11_op_abort(&c->op);
    c->stream = 0;
    c->decided = 0;
    c->moved = 0;
    c->sign = sign;

    if (k == NULL) {
        if (c->key == NULL) {
            hp_raise(c->pctx, HP_R_BAD_PARAM, "no key given");
            return 0;
        }
    } else {
        if ((k->kind == HP_KEY_EC) == c->is_rsa) {
            hp_raise(c->pctx, HP_R_KEY_TYPE,
                     "key type does not match the signature "
                     "algorithm");
            return 0;
        }
        c->key = k;
    }
    /* A public key imported from software (OpenSSL moved it here because
     * hsmprov was preferred, "?provider=hsmprov") verifies with the default
     * provider in our library context, as it would have without the
     * preference. A software private key never gets here: import refuses it,
     * so OpenSSL keeps it with its own provider. */
    if (c->key->soft != NULL && sign) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "hsmprov signs only with keys in a token; this EC key was made in "
                 "memory, not in a token, because no pkcs11_uri was given: give -pkeyopt "
                 "pkcs11_uri:pkcs11:token=...;object=... to make it in the token");
        return 0;
    }
    if (c->key->p11 == NULL && sign) {
        hp_raise(c->pctx, HP_R_KEY_TYPE,
                 "hsmprov signs only with keys on a token; this key was imported "
                 "from software");
        return 0;
    }
    if (sign && (c->key->public_only || c->key->p11->priv == CK_INVALID_HANDLE)) {
        hp_raise(c->pctx, HP_R_KEY_TYPE, "C_SignInit: %s is a public key: it cannot sign",
                 c->key->p11->name);
        return 0;
    }
    if (c->key->kind == HP_KEY_RSA_PSS)
        c->pad = RSA_PKCS1_PSS_PADDING;
    return sig_set_ctx_params(c, params);
}

int sig_sign_init(void *vctx, void *key, const OSSL_PARAM params[])
{
    return init(vctx, key, params, 1);
}

int sig_verify_init(void *vctx, void *key, const OSSL_PARAM params[])
{
    return init(vctx, key, params, 0);
}

static int prepare(sig_ctx *c, const unsigned char *tbs, size_t tbslen,
                   struct prepared *p)
{
    memset(&p->mech, 0, sizeof(p->mech));
    p->in = tbs;
    p->inlen = tbslen;
    if (c->md != NULL && tbslen != (size_t)EVP_MD_get_size(c->md)) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "input is %zu bytes, but a %s digest is %d bytes", tbslen,
                 EVP_MD_get0_name(c->md), EVP_MD_get_size(c->md));
        return 0;
    }
    if (!c->is_rsa) {
        p->mech.mechanism = CKM_ECDSA;
        return 1;
    }
    return sig_rsa_prepare(c, tbs, tbslen, p);
}

/* Refuses, before any token work, a buffer that may not hold a signature
 * of c's key (an ECDSA one's DER length varies: room for the longest, as
 * OpenSSL's own ECDSA asks). */
static int room_for_signature(sig_ctx *c, size_t sigsize)
{
    size_t need = hp_key_size(c->key);

    if (sigsize >= need)
        return 1;
    hp_raise(c->pctx, HP_R_BAD_PARAM, "signature buffer of %zu bytes, need %zu", sigsize,
             need);
    return 0;
}

int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
             const unsigned char *tbs, size_t tbslen)
{
    sig_ctx *c = vctx;
    size_t need = hp_key_size(c->key);
    struct prepared p;
    unsigned char rs[2 * 66];
    CK_ULONG outlen;
    CK_RV rv;

    if (sig == NULL) {
        *siglen = need;
        return 1;
    }
    if (c->is_rsa && c->pad == RSA_NO_PADDING &&
        !hp_rsa_raw_input_ok(c->key, tbs, tbslen, 1))
        return 0;
    if (!prepare(c, tbs, tbslen, &p))
        return 0;
    /* A digest-sign checked its mechanism when it chose it. */
    if (!c->decided && (rv = p11_mech_require(c->key->p11, p.mech.mechanism)) != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    if (!room_for_signature(c, sigsize))
        return 0;
    if (c->is_rsa) {
        outlen = (CK_ULONG)sigsize;
        rv = p11_oneshot(c->key->p11, P11_SIGN, &p.mech, p.in, p.inlen, sig, &outlen);
        if (rv != CKR_OK) {
            hp_raise_p11(c->pctx, rv);
            return 0;
        }
        *siglen = outlen;
        return 1;
    }
    outlen = sizeof(rs);
    rv = p11_oneshot(c->key->p11, P11_SIGN, &p.mech, p.in, p.inlen, rs, &outlen);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    if (!sig_ecdsa_to_der(rs, outlen, sig, siglen, sigsize)) {
        hp_raise(c->pctx, HP_R_INTERNAL, "cannot encode the ECDSA signature");
        return 0;
    }
    return 1;
}

/* Verification with a public key imported from software: the default
 * provider of our library context checks it, with the context's parameters.
 * sig is as the application gave it (DER for ECDSA). */
static int soft_verify(sig_ctx *c, const unsigned char *sig, size_t siglen,
                       const unsigned char *tbs, size_t tbslen)
{
    EVP_PKEY *pk = hp_key_public_pkey(c->key);
    EVP_PKEY_CTX *pc =
        pk != NULL ? EVP_PKEY_CTX_new_from_pkey(c->pctx->libctx, pk, NULL) : NULL;
    int r = 0;

    if (pc == NULL || EVP_PKEY_verify_init(pc) <= 0 ||
        (c->md != NULL && EVP_PKEY_CTX_set_signature_md(pc, c->md) <= 0))
        goto end;
    if (c->is_rsa) {
        if (EVP_PKEY_CTX_set_rsa_padding(pc, c->pad) <= 0)
            goto end;
        if (c->pad == RSA_PKCS1_PSS_PADDING &&
            (EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, c->saltlen) <= 0 ||
             (c->mgf1 != NULL && EVP_PKEY_CTX_set_rsa_mgf1_md(pc, c->mgf1) <= 0)))
            goto end;
    }
    r = EVP_PKEY_verify(pc, sig, siglen, tbs, tbslen) == 1;
end:
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pk);
    return r;
}

static int verify_with(sig_ctx *c, struct prepared *p, const unsigned char *sig,
                       size_t siglen)
{
    CK_ULONG sl = (CK_ULONG)siglen;
    CK_RV rv = p11_oneshot(c->key->p11, P11_VERIFY, &p->mech, p->in, p->inlen,
                           (unsigned char *)sig, &sl);

    if (rv == CKR_OK)
        return 1;
    if (rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE)
        return 0;
    hp_raise_p11(c->pctx, rv);
    return -1;
}

int sig_verify(void *vctx, const unsigned char *sig, size_t siglen,
               const unsigned char *tbs, size_t tbslen)
{
    sig_ctx *c = vctx;
    struct prepared p;
    unsigned char rs[2 * 66];
    size_t rslen;
    CK_RV rv;
    int r;

    if (c->key->p11 == NULL)
        return soft_verify(c, sig, siglen, tbs, tbslen);
    /* Like OpenSSL's RSA: the recovered number, in the modulus' length,
     * is compared with tbs; other input never matches (no error either). */
    if (c->is_rsa && c->pad == RSA_NO_PADDING &&
        !hp_rsa_raw_input_ok(c->key, tbs, tbslen, 0))
        return 0;
    if (!prepare(c, tbs, tbslen, &p))
        return 0;
    if (!c->decided && (rv = p11_mech_require(c->key->p11, p.mech.mechanism)) != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    if (!c->is_rsa) {
        if (!sig_ecdsa_from_der(c, sig, siglen, rs, &rslen))
            return 0;
        return verify_with(c, &p, rs, rslen) == 1;
    }
    r = verify_with(c, &p, sig, siglen);
    if (r == 0 && c->pad == RSA_PKCS1_PSS_PADDING && c->saltlen == RSA_PSS_SALTLEN_AUTO) {
        /* The token needs the salt length; "auto" accepts a signature made
         * with the digest length as well as with the maximum. */
        p.pss.sLen = (CK_ULONG)EVP_MD_get_size(c->md);
        r = verify_with(c, &p, sig, siglen);
    }
    return r == 1;
}

/* The hash-and-sign mechanism for c's digest and padding. */
static CK_MECHANISM_TYPE combined_mech(const sig_ctx *c)
{
    const hp_digest *d = hp_digest_by_nid(sig_md_nid(c->md));

    if (d == NULL)
        return CK_UNAVAILABLE_INFORMATION;
    if (!c->is_rsa)
        return d->ecdsa;
    if (c->pad == RSA_PKCS1_PSS_PADDING)
        return d->rsa_pss;
    return c->pad == RSA_PKCS1_PADDING ? d->rsa_pkcs : CK_UNAVAILABLE_INFORMATION;
}

static CK_MECHANISM_TYPE raw_mech(const sig_ctx *c)
{
    if (!c->is_rsa)
        return CKM_ECDSA;
    switch (c->pad) {
    case RSA_PKCS1_PADDING:
        return CKM_RSA_PKCS;
    case RSA_PKCS1_PSS_PADDING:
        return CKM_RSA_PKCS_PSS;
    case RSA_NO_PADDING:
        return CKM_RSA_X_509;
    case RSA_X931_PADDING:
        return CKM_RSA_X9_31;
    }
    return CK_UNAVAILABLE_INFORMATION;
}

static void sig_mechs(const sig_ctx *c, p11_sig_mechs *sm)
{
    sm->combined = combined_mech(c);
    sm->digest = hp_digest_mech(sig_md_nid(c->md));
    sm->raw = raw_mech(c);
}

/* Whether the key can sign with c's digest in some padding: OpenSSL asks
 * which digests a key takes by trying DigestSignInit with each (TLS picks its
 * signature algorithms that way), so init refuses what no padding allows.
 * The padding itself is chosen later (decide). */
static int digest_possible(sig_ctx *c)
{
    static const int pads[] = {RSA_PKCS1_PSS_PADDING, RSA_PKCS1_PADDING};
    int saved = c->pad, ok = 0;
    p11_sig_mechs sm;
    p11_via via;
    CK_RV rv = CKR_OK;

    if (c->key->p11 == NULL)
        return 1;
    for (size_t i = 0; i < sizeof(pads) / sizeof(pads[0]) && !ok; i++) {
        if (c->is_rsa && c->key->kind == HP_KEY_RSA_PSS &&
            pads[i] != RSA_PKCS1_PSS_PADDING)
            continue;
        if (c->is_rsa)
            c->pad = pads[i];
        else if (i > 0)
            break;
        sig_mechs(c, &sm);
        rv = p11_mech_choose_sig(c->key->p11, &sm, c->pctx->digest_in_token, &via);
        ok = rv == CKR_OK;
    }
    c->pad = saved;
    if (ok) {
        p11_failure_clear();
        return 1;
    }
    hp_raise_p11(c->pctx, rv);
    return 0;
}

/* Chooses how the digest-sign runs (p11_mech_choose_sig), at its first update
 * or final: TLS sets the padding only after DigestSignInit. Host hashing
 * starts here; the token operation starts in stream_start. */
static int decide(sig_ctx *c)
{
    p11_sig_mechs sm;
    CK_RV rv;

    if (c->decided)
        return 1;
    c->via = P11_VIA_HOST_DIGEST;
    if (c->key->p11 != NULL) { /* else a software public key: verified here */
        sig_mechs(c, &sm);
        rv = p11_mech_choose_sig(c->key->p11, &sm, c->pctx->digest_in_token, &c->via);
        if (rv != CKR_OK) {
            hp_raise_p11(c->pctx, rv);
            return 0;
        }
    }
    c->decided = 1;
    c->stream = c->via != P11_VIA_HOST_DIGEST;
    if (c->stream)
        return 1;
    if (c->mdctx == NULL && (c->mdctx = EVP_MD_CTX_new()) == NULL)
        return 0;
    return EVP_DigestInit_ex2(c->mdctx, c->md, NULL);
}

/* Starts the token operation at the first update or final. Takes the
 * context's lease. */
static int stream_start(sig_ctx *c)
{
    CK_MECHANISM mech = {combined_mech(c), NULL, 0};
    CK_RV rv;

    if (c->moved) {
        hp_raise(c->pctx, HP_R_BAD_PARAM,
                 "this context's token operation was moved to a "
                 "duplicate of the context; re-initialise it");
        return 0;
    }
    if (p11_op_running(&c->op))
        return 1;
    if (c->via == P11_VIA_TOKEN_DIGEST) {
        /* Hash in the token on our leased session, then sign the hash with
         * the raw mechanism on that same session. */
        CK_MECHANISM dm = {hp_digest_mech(sig_md_nid(c->md)), NULL, 0};

        rv = p11_op_digest_then_init(&c->op, c->key->p11, &dm);
        if (rv != CKR_OK) {
            hp_raise_p11(c->pctx, rv);
            return 0;
        }
        return 1;
    }
    if (c->is_rsa && c->pad == RSA_PKCS1_PSS_PADDING) {
        sig_rsa_pss_params(c, &c->pss);
        mech.pParameter = &c->pss;
        mech.ulParameterLen = sizeof(c->pss);
    }
    rv = p11_op_init(&c->op, c->key->p11, c->sign ? P11_SIGN : P11_VERIFY, &mech);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    return 1;
}

static int digest_init(sig_ctx *c, const char *mdname, void *key,
                       const OSSL_PARAM params[], int sign)
{
    if (!init(c, key, params, sign))
        return 0;
    if (mdname == NULL || *mdname == '\0')
        mdname = c->key->mandatory_md[0] != '\0' ? c->key->mandatory_md : "SHA256";
    return sig_set_md(c, mdname, &c->md) && digest_possible(c);
}

int sig_digest_sign_init(void *vctx, const char *mdname, void *key,
                         const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, key, params, 1);
}

int sig_digest_verify_init(void *vctx, const char *mdname, void *key,
                           const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, key, params, 0);
}

/* After a one-shot: ends a token operation a failure left running (its
 * session goes back to the pool) and makes the next update or final choose
 * and start afresh, the host digest re-initialised. */
static void spent(sig_ctx *c)
{
    p11_op_abort(&c->op);
    c->decided = 0;
    c->stream = 0;
}

int sig_digest_update(void *vctx, const unsigned char *data, size_t len)
{
    sig_ctx *c = vctx;
    CK_RV rv;

    if (!decide(c))
        return 0;
    if (!c->stream)
        return c->mdctx != NULL && EVP_DigestUpdate(c->mdctx, data, len);
    if (!stream_start(c))
        return 0;
    rv = p11_op_update(&c->op, data, (CK_ULONG)len, NULL, NULL);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    return 1;
}

/* Ends the in-token digest and starts the raw operation on the same leased
 * session; p is then the raw mechanism and its input. The mechanism does not
 * depend on the hash (its input does: PKCS#1 v1.5 prefixes the DigestInfo),
 * so it is prepared on a zero hash for the Init and again on the hash. */
static int token_digest_then(sig_ctx *c, p11_op_kind kind, unsigned char *h,
                             struct prepared *p)
{
    CK_ULONG hlen = EVP_MAX_MD_SIZE;
    size_t mdlen = (size_t)EVP_MD_get_size(c->md);
    CK_RV rv;

    memset(h, 0, EVP_MAX_MD_SIZE);
    if (!prepare(c, h, mdlen, p)) {
        p11_op_abort(&c->op);
        return 0;
    }
    rv = p11_op_digest_then_step(&c->op, c->key->p11, kind, &p->mech, h, &hlen);
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    if (hlen != mdlen || !prepare(c, h, hlen, p)) {
        p11_op_abort(&c->op);
        return 0;
    }
    return 1;
}

static int stream_sign_final(sig_ctx *c, unsigned char *sig, size_t *siglen,
                             size_t sigsize)
{
    unsigned char rs[2 * 66], h[EVP_MAX_MD_SIZE];
    struct prepared p;
    CK_ULONG outlen;
    CK_RV rv;

    if (!stream_start(c))
        return 0;
    outlen = c->is_rsa ? (CK_ULONG)sigsize : sizeof(rs);
    if (c->via == P11_VIA_TOKEN_DIGEST) {
        if (!token_digest_then(c, P11_SIGN, h, &p))
            return 0;
        rv = p11_op_oneshot(&c->op, p.in, p.inlen, c->is_rsa ? sig : rs, &outlen);
    } else {
        rv = p11_op_final(&c->op, c->is_rsa ? sig : rs, &outlen);
    }
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    if (c->is_rsa) {
        *siglen = outlen;
        return 1;
    }
    if (!sig_ecdsa_to_der(rs, outlen, sig, siglen, sigsize)) {
        hp_raise(c->pctx, HP_R_INTERNAL, "cannot encode the ECDSA signature");
        return 0;
    }
    return 1;
}

static int stream_verify_final(sig_ctx *c, const unsigned char *sig, size_t siglen)
{
    unsigned char rs[2 * 66], h[EVP_MAX_MD_SIZE];
    struct prepared p;
    size_t rslen = siglen;
    CK_ULONG sl;
    CK_RV rv;

    if (!stream_start(c))
        return 0;
    if (!c->is_rsa) {
        if (!sig_ecdsa_from_der(c, sig, siglen, rs, &rslen)) {
            p11_op_abort(&c->op);
            return 0;
        }
        sig = rs;
    }
    sl = (CK_ULONG)rslen;
    if (c->via == P11_VIA_TOKEN_DIGEST) {
        if (!token_digest_then(c, P11_VERIFY, h, &p))
            return 0;
        rv = p11_op_oneshot(&c->op, p.in, p.inlen, (unsigned char *)sig, &sl);
    } else {
        rv = p11_op_final(&c->op, (unsigned char *)sig, &sl);
    }
    if (rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE)
        return 0;
    if (rv != CKR_OK) {
        hp_raise_p11(c->pctx, rv);
        return 0;
    }
    return 1;
}

int sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    sig_ctx *c = vctx;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen;

    if (sig == NULL) {
        *siglen = hp_key_size(c->key);
        return 1;
    }
    if (!room_for_signature(c, sigsize) || !decide(c))
        return 0;
    if (c->stream)
        return stream_sign_final(c, sig, siglen, sigsize);
    if (c->mdctx == NULL || !EVP_DigestFinal_ex(c->mdctx, h, &hlen))
        return 0;
    return sig_sign(c, sig, siglen, sigsize, h, hlen);
}

int sig_digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
    sig_ctx *c = vctx;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen;

    if (!decide(c))
        return 0;
    if (c->stream)
        return stream_verify_final(c, sig, siglen);
    if (c->mdctx == NULL || !EVP_DigestFinal_ex(c->mdctx, h, &hlen))
        return 0;
    return sig_verify(c, sig, siglen, h, hlen);
}

/* One-shot EVP_DigestSign and EVP_DigestVerify. Without these OpenSSL makes
 * them an update and a final, and a final duplicates the whole context (ours
 * included) so that the caller could go on streaming: allocations and copies
 * a TLS server pays at every handshake for a context it then frees. Here the
 * context itself finishes, and is left ready for its next message: as after
 * an init, without the data of this one. Data given by updates before the
 * call is signed with it, as OpenSSL's update-and-final would. */
int sig_digest_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen)
{
    sig_ctx *c = vctx;
    int ok;

    if (sig == NULL) {
        *siglen = hp_key_size(c->key);
        return 1;
    }
    ok = sig_digest_update(c, tbs, tbslen) &&
         sig_digest_sign_final(c, sig, siglen, sigsize);
    spent(c);
    return ok;
}

int sig_digest_verify(void *vctx, const unsigned char *sig, size_t siglen,
                      const unsigned char *tbs, size_t tbslen)
{
    sig_ctx *c = vctx;
    int ok;

    ok = sig_digest_update(c, tbs, tbslen) && sig_digest_verify_final(c, sig, siglen);
    spent(c);
    return ok;
}

/* AlgorithmIdentifier of the signature, for X.509 and CMS. */
static int algorithm_id(sig_ctx *c, unsigned char **der)
{
    X509_ALGOR *alg = X509_ALGOR_new();
    int len = -1;

    if (alg == NULL || c->md == NULL)
        goto end;
    if (!(c->is_rsa ? sig_rsa_algorithm_id(c, alg) : sig_ecdsa_algorithm_id(c, alg)))
        goto end;
    *der = NULL;
    len = i2d_X509_ALGOR(alg, der);
end:
    X509_ALGOR_free(alg);
    return len;
}

int sig_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    sig_ctx *c = vctx;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) != NULL) {
        unsigned char *der = NULL;
        int len = algorithm_id(c, &der);
        int ok = len > 0 && OSSL_PARAM_set_octet_string(p, der, (size_t)len);

        OPENSSL_free(der);
        if (!ok)
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, c->md != NULL ? EVP_MD_get0_name(c->md) : ""))
        return 0;
    if (!c->is_rsa)
        return 1;
    return sig_rsa_get_ctx_params(c, params);
}

const OSSL_PARAM *sig_gettable_ctx_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_END,
    };
    return gettable;
}

int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    sig_ctx *c = vctx;
    const OSSL_PARAM *p;
    const char *name;

    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) || !sig_set_md(c, name, &c->md))
            return 0;
    }
    if (!c->is_rsa)
        return 1;
    return sig_rsa_set_ctx_params(c, params);
}
