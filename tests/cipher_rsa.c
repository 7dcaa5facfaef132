/*
 * RSA encryption with token keys through hsmprov, with OpenSSL's default
 * provider on the other side.
 *
 *   cipher_rsa MODE
 *
 *   roundtrip  PKCS#1 v1.5, OAEP with SHA-1/256/384/512 (MGF1 the same or
 *              another digest, with and without a label) and no padding:
 *              software encrypts, the token decrypts; the token encrypts
 *              (with its public object), software decrypts. Key "rsaimp" was
 *              imported into the token from $HSMPROV_TEST_TMP/rsaimp.pem, so
 *              software has its private half; key "rsa" was made by the token.
 *              A software public key handed to hsmprov encrypts in software.
 *   errors     tampered ciphertexts, a wrong label, a wrong digest: an error,
 *              never a plaintext (of any length); too small buffers, a public
 *              key and oversized messages: clear errors. TLS padding: the
 *              premaster secret, or 48 other bytes and no error.
 *   raw        no padding, with the default provider and the same key
 *              ("rsaimp") as the reference: signing, encryption, decryption
 *              and verification of inputs shorter than the modulus, of its
 *              length below it, equal to it, above it, and longer. The token
 *              key gives the same result, or refuses with the same reason
 *              ("data too small for key size", ...), never padding silently.
 */
#include "conc_util.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct p11shim_api shim;

/* How to pad. md NULL: PKCS#1 v1.5 (or none when raw is set). */
struct scheme {
    const char *name;
    const char *md, *mgf1;
    const char *label;
    int raw;
};

static const struct scheme schemes[] = {
    {"PKCS#1 v1.5", NULL, NULL, NULL, 0},
    {"OAEP SHA-1", "SHA1", NULL, NULL, 0},
    {"OAEP SHA-256", "SHA256", NULL, NULL, 0},
    {"OAEP SHA-384", "SHA384", NULL, NULL, 0},
    {"OAEP SHA-512", "SHA512", NULL, NULL, 0},
    {"OAEP SHA-256, MGF1 SHA-1", "SHA256", "SHA1", NULL, 0},
    {"OAEP SHA-1, MGF1 SHA-512", "SHA1", "SHA512", NULL, 0},
    {"OAEP SHA-1 with a label", "SHA1", NULL, "the label", 0},
    {"OAEP SHA-384 with a label", "SHA384", "SHA256", "another label", 0},
    {"no padding", NULL, NULL, NULL, 1},
};

/* Set while a refusal is expected: refusing at set-up (an error on the
 * queue) is as good as refusing at decryption. */
static int refusal_expected;

static EVP_PKEY_CTX *pctx(EVP_PKEY *k, const char *propq, int enc, const struct scheme *s)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k, propq);
    int ok = c != NULL && (enc ? EVP_PKEY_encrypt_init(c) : EVP_PKEY_decrypt_init(c)) > 0;

    if (ok && s->raw)
        ok = EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) > 0;
    if (ok && s->md != NULL)
        ok = EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_oaep_md_name(c, s->md, NULL) > 0 &&
             (s->mgf1 == NULL || EVP_PKEY_CTX_set_rsa_mgf1_md_name(c, s->mgf1, NULL) > 0);
    if (ok && s->label != NULL) {
        unsigned char *l = OPENSSL_memdup(s->label, strlen(s->label));

        ok = l != NULL &&
             EVP_PKEY_CTX_set0_rsa_oaep_label(c, l, (int)strlen(s->label)) > 0;
        if (!ok)
            OPENSSL_free(l);
    }
    if (!ok && refusal_expected) {
        EVP_PKEY_CTX_free(c);
        return NULL;
    }
    if (!ok) {
        ct_fail("%s: set-up of a %s context (%s)", s->name,
                enc ? "encryption" : "decryption", propq != NULL ? propq : "hsmprov key");
        EVP_PKEY_CTX_free(c);
        return NULL;
    }
    return c;
}

static int encrypt(EVP_PKEY *k, const char *propq, const struct scheme *s,
                   const unsigned char *in, size_t inlen, unsigned char *out,
                   size_t *outlen)
{
    EVP_PKEY_CTX *c = pctx(k, propq, 1, s);
    size_t cap = *outlen;
    int ok = c != NULL && EVP_PKEY_encrypt(c, NULL, outlen, in, inlen) > 0 &&
             *outlen <= cap && EVP_PKEY_encrypt(c, out, outlen, in, inlen) > 0;

    EVP_PKEY_CTX_free(c);
    return ok;
}

/* 1 decrypted, 0 refused; *outlen as EVP_PKEY_decrypt left it. */
static int decrypt(EVP_PKEY *k, const char *propq, const struct scheme *s,
                   const unsigned char *in, size_t inlen, unsigned char *out,
                   size_t *outlen)
{
    EVP_PKEY_CTX *c = pctx(k, propq, 0, s);
    size_t cap = *outlen;
    int ok =
        c != NULL && EVP_PKEY_decrypt(c, NULL, outlen, in, inlen) > 0 && *outlen <= cap;

    if (ok)
        ok = EVP_PKEY_decrypt(c, out, outlen, in, inlen) > 0;
    EVP_PKEY_CTX_free(c);
    return ok;
}

static EVP_PKEY *soft_private(void)
{
    const char *dir = getenv("HSMPROV_TEST_TMP");
    char path[512];
    EVP_PKEY *k = NULL;
    FILE *f;

    snprintf(path, sizeof(path), "%s/rsaimp.pem", dir != NULL ? dir : ".");
    f = fopen(path, "r");
    if (f != NULL) {
        k = PEM_read_PrivateKey_ex(f, NULL, NULL, NULL, NULL, "provider=default");
        fclose(f);
    }
    if (k == NULL)
        ct_fail("cannot read %s", path);
    return k;
}

static size_t msg_len(const struct scheme *s, size_t k)
{
    return s->raw ? k : 32;
}

static void make_msg(const struct scheme *s, unsigned char *m, size_t len)
{
    RAND_bytes(m, (int)len);
    if (s->raw)
        m[0] = 0; /* below the modulus */
}

static int run_roundtrip(void)
{
    ct_key imp = {0}, gen = {0};
    EVP_PKEY *priv = soft_private();
    unsigned char m[512], ct[512], pt[512];
    size_t n = 0;

    if (priv == NULL || !ct_key_load(&imp, "rsaimp") || !ct_key_load(&gen, "rsa") ||
        !ct_shim(&shim))
        return ct_result("roundtrip");
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        const struct scheme *s = &schemes[i];
        size_t k = (size_t)EVP_PKEY_get_size(imp.tok), len = msg_len(s, k);
        size_t ctlen, ptlen;

        unsigned long before;

        /* Software encrypts, the token decrypts (both keys). */
        for (int which = 0; which < 2; which++) {
            ct_key *key = which ? &gen : &imp;

            make_msg(s, m, len);
            ctlen = sizeof(ct);
            ptlen = sizeof(pt);
            before = shim.call_count("C_Decrypt");
            if (!encrypt(key->pub, "provider=default", s, m, len, ct, &ctlen))
                ct_fail("%s: software encryption", s->name);
            else if (!decrypt(key->tok, NULL, s, ct, ctlen, pt, &ptlen) || ptlen != len ||
                     memcmp(pt, m, len) != 0)
                ct_fail("%s: token decryption (%s) of software's ciphertext", s->name,
                        key->name);
            else if (shim.call_count("C_Decrypt") != before + 1)
                ct_fail("%s: the decryption took %lu C_Decrypt calls, not one", s->name,
                        shim.call_count("C_Decrypt") - before);
            else
                n++;
            if (ERR_peek_error() != 0)
                ct_fail("%s: stale error after a good decryption", s->name);
        }
        /* The token encrypts with its public object, software decrypts. */
        make_msg(s, m, len);
        ctlen = sizeof(ct);
        ptlen = sizeof(pt);
        before = shim.call_count("C_Encrypt");
        if (!encrypt(imp.tok, NULL, s, m, len, ct, &ctlen))
            ct_fail("%s: token encryption", s->name);
        else if (shim.call_count("C_Encrypt") != before + 1)
            ct_fail("%s: the token key's encryption did not go to the token", s->name);
        else if (!decrypt(priv, "provider=default", s, ct, ctlen, pt, &ptlen) ||
                 ptlen != len || memcmp(pt, m, len) != 0)
            ct_fail("%s: software decryption of the token's ciphertext", s->name);
        else
            n++;
        /* A software public key given to hsmprov's RSA (as when hsmprov
         * wins the fetch): the default provider encrypts, the token decrypts. */
        make_msg(s, m, len);
        ctlen = sizeof(ct);
        ptlen = sizeof(pt);
        before = shim.call_count("C_Encrypt");
        if (!encrypt(imp.pub, "provider=hsmprov", s, m, len, ct, &ctlen))
            ct_fail("%s: hsmprov encryption with a software key", s->name);
        else if (shim.call_count("C_Encrypt") != before)
            ct_fail("%s: a software key's encryption went to the token", s->name);
        else if (!decrypt(imp.tok, NULL, s, ct, ctlen, pt, &ptlen) || ptlen != len ||
                 memcmp(pt, m, len) != 0)
            ct_fail("%s: token decryption of a software key's ciphertext", s->name);
        else
            n++;
        /* The token both ways, with the key it made itself. */
        ctlen = sizeof(ct);
        ptlen = sizeof(pt);
        if (!encrypt(gen.tok, NULL, s, m, len, ct, &ctlen) ||
            !decrypt(gen.tok, NULL, s, ct, ctlen, pt, &ptlen) || ptlen != len ||
            memcmp(pt, m, len) != 0)
            ct_fail("%s: token round trip with the token-made key", s->name);
        else
            n++;
        if (ERR_peek_error() != 0)
            ct_fail("%s: stale error after good calls", s->name);
        printf("roundtrip: %s\n", s->name);
    }
    printf("roundtrip: %zu round trips\n", n);
    ct_key_free(&imp);
    ct_key_free(&gen);
    EVP_PKEY_free(priv);
    return ct_result("roundtrip");
}

/* A decryption that must fail: an error on the queue, no success, no
 * output length pretending to be a plaintext. */
static void must_refuse(EVP_PKEY *k, const struct scheme *s, const unsigned char *ct,
                        size_t ctlen, const char *what)
{
    unsigned char pt[512];
    size_t ptlen = sizeof(pt);
    int ok;

    memset(pt, 0xa5, sizeof(pt));
    refusal_expected = 1;
    ok = decrypt(k, NULL, s, ct, ctlen, pt, &ptlen);
    refusal_expected = 0;
    if (ok)
        ct_fail("%s: %s was decrypted (%zu bytes)", s->name, what, ptlen);
    else if (ERR_peek_error() == 0)
        ct_fail("%s: %s refused without an error", s->name, what);
    ERR_clear_error();
}

static int run_errors(void)
{
    ct_key imp = {0};
    unsigned char m[512], ct[512], pt[512];
    size_t ctlen, ptlen;
    char errs[1024];
    EVP_PKEY_CTX *c;

    if (!ct_key_load(&imp, "rsaimp"))
        return ct_result("errors");
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        const struct scheme *s = &schemes[i];

        if (s->raw)
            continue; /* no padding: nothing to check */
        RAND_bytes(m, 32);
        ctlen = sizeof(ct);
        if (!encrypt(imp.pub, "provider=default", s, m, 32, ct, &ctlen)) {
            ct_fail("%s: software encryption", s->name);
            continue;
        }
        /* A changed byte anywhere: here, the middle and the last. */
        ct[ctlen / 2] ^= 0x40;
        must_refuse(imp.tok, s, ct, ctlen, "a tampered ciphertext");
        ct[ctlen / 2] ^= 0x40;
        ct[ctlen - 1] ^= 1;
        must_refuse(imp.tok, s, ct, ctlen, "a ciphertext with its last byte changed");
        ct[ctlen - 1] ^= 1;
        if (s->md != NULL) {
            struct scheme w = *s;

            w.label = s->label != NULL ? NULL : "a label";
            must_refuse(imp.tok, &w, ct, ctlen, "a ciphertext with another label");
            w = *s;
            w.md = strcmp(s->md, "SHA256") == 0 ? "SHA1" : "SHA256";
            w.mgf1 = s->mgf1 != NULL ? s->mgf1 : s->md;
            must_refuse(imp.tok, &w, ct, ctlen, "a ciphertext with another digest");
        }
        /* And the untouched one still decrypts. */
        ptlen = sizeof(pt);
        if (!decrypt(imp.tok, NULL, s, ct, ctlen, pt, &ptlen) || ptlen != 32 ||
            memcmp(pt, m, 32) != 0)
            ct_fail("%s: the good ciphertext after the bad ones", s->name);
    }
    /* A buffer too small for the plaintext. */
    ctlen = sizeof(ct);
    encrypt(imp.pub, "provider=default", &schemes[0], m, 32, ct, &ctlen);
    c = pctx(imp.tok, NULL, 0, &schemes[0]);
    ptlen = 16;
    if (c == NULL || EVP_PKEY_decrypt(c, pt, &ptlen, ct, ctlen) > 0)
        ct_fail("decryption into a 16-byte buffer succeeded");
    ct_errors(errs, sizeof(errs));
    if (strstr(errs, "too small") == NULL)
        ct_fail("the error for a small buffer does not say so: %s", errs);
    /* ... but one as large as the plaintext is enough. */
    ptlen = 32;
    if (c == NULL || EVP_PKEY_decrypt(c, pt, &ptlen, ct, ctlen) <= 0 || ptlen != 32 ||
        memcmp(pt, m, 32) != 0)
        ct_fail("decryption into a buffer of the plaintext's size");
    EVP_PKEY_CTX_free(c);
    /* TLS padding (TLS 1.2 RSA key exchange): a premaster secret with the
     * client's version comes out; anything else (here the 32-byte message
     * of the ciphertext above, or the wrong version) gives 48 other bytes
     * and no error, so that a server cannot tell (no padding oracle). */
    {
        unsigned char pms[48], tct[512];
        size_t tctlen = sizeof(tct);
        unsigned int ver = 0x0303, other = 0x0302;

        RAND_bytes(pms, sizeof(pms));
        pms[0] = 0x03;
        pms[1] = 0x03;
        encrypt(imp.pub, "provider=default", &schemes[0], pms, sizeof(pms), tct, &tctlen);
        for (int round = 0; round < 3; round++) {
            const unsigned char *in = round == 1 ? ct : tct;
            size_t inlen = round == 1 ? ctlen : tctlen;
            OSSL_PARAM vp[] = {
                OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION,
                                round == 2 ? &other : &ver),
                OSSL_PARAM_END,
            };

            c = EVP_PKEY_CTX_new_from_pkey(NULL, imp.tok, NULL);
            ptlen = sizeof(pt);
            if (c == NULL || EVP_PKEY_decrypt_init(c) <= 0 ||
                EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_WITH_TLS_PADDING) <= 0 ||
                EVP_PKEY_CTX_set_params(c, vp) <= 0) {
                ct_fail("setting TLS padding");
            } else if (EVP_PKEY_decrypt(c, pt, &ptlen, in, inlen) <= 0 || ptlen != 48) {
                ct_errors(errs, sizeof(errs));
                ct_fail("TLS padding, round %d: an error or not 48 bytes: %s", round,
                        errs);
            } else if ((memcmp(pt, pms, 48) == 0) != (round == 0)) {
                ct_fail("TLS padding, round %d: %s", round,
                        round == 0 ? "the premaster secret did not come out"
                                   : "a bad premaster secret came out");
            }
            EVP_PKEY_CTX_free(c);
        }
    }
    /* A message too long for OAEP with SHA-512 on a 2048-bit key. */
    ctlen = sizeof(ct);
    if (encrypt(imp.tok, NULL, &schemes[4], m, 200, ct, &ctlen))
        ct_fail("a 200-byte message was OAEP-SHA-512-encrypted with RSA-2048");
    if (ERR_peek_error() == 0)
        ct_fail("an oversized message was refused without an error");
    ERR_clear_error();
    /* The public half cannot decrypt. */
    {
        EVP_PKEY *pub = NULL;
        OSSL_STORE_CTX *st = OSSL_STORE_open(
            "pkcs11:token=demo;object=rsaimp;type=public", NULL, NULL, NULL, NULL);

        while (st != NULL && pub == NULL && !OSSL_STORE_eof(st)) {
            OSSL_STORE_INFO *info = OSSL_STORE_load(st);

            if (info != NULL && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PUBKEY)
                pub = OSSL_STORE_INFO_get1_PUBKEY(info);
            OSSL_STORE_INFO_free(info);
        }
        OSSL_STORE_close(st);
        ERR_clear_error();
        if (pub == NULL)
            ct_fail("no public key at pkcs11:token=demo;object=rsaimp;type=public");
        ctlen = sizeof(ct);
        encrypt(imp.pub, "provider=default", &schemes[0], m, 32, ct, &ctlen);
        /* OpenSSL 3.0 may hand a public key to the default provider's RSA
         * (it exports); either way there is no plaintext and an error. */
        if (pub != NULL)
            must_refuse(pub, &schemes[0], ct, ctlen, "decryption with a public key");
        EVP_PKEY_free(pub);
    }
    ct_key_free(&imp);
    printf("errors: tampering, wrong labels and digests refused with errors\n");
    return ct_result("errors");
}

enum raw_op { RAW_SIGN, RAW_VERIFY, RAW_ENCRYPT, RAW_DECRYPT };
static const char *const raw_op_names[] = {"sign", "verify", "encrypt", "decrypt"};

/* One operation without padding. 1: done (out, *outlen; for VERIFY, sig is
 * checked and 1 means it matched); 0: refused, with the reason of the first
 * error in why (empty when there was none). */
static int raw_op(EVP_PKEY *k, const char *propq, enum raw_op op, const unsigned char *in,
                  size_t inlen, const unsigned char *sig, size_t siglen,
                  unsigned char *out, size_t *outlen, char *why, size_t whylen)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k, propq);
    int ok = c != NULL;
    char errs[1024];

    why[0] = '\0';
    if (ok)
        ok = (op == RAW_SIGN      ? EVP_PKEY_sign_init(c)
              : op == RAW_VERIFY  ? EVP_PKEY_verify_init(c)
              : op == RAW_ENCRYPT ? EVP_PKEY_encrypt_init(c)
                                  : EVP_PKEY_decrypt_init(c)) > 0 &&
             EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) > 0;
    if (!ok) {
        ct_fail("%s: set-up without padding (%s)", raw_op_names[op],
                propq != NULL ? propq : "token key");
    } else {
        switch (op) {
        case RAW_SIGN:
            ok = EVP_PKEY_sign(c, out, outlen, in, inlen) > 0;
            break;
        case RAW_VERIFY:
            ok = EVP_PKEY_verify(c, sig, siglen, in, inlen) > 0;
            break;
        case RAW_ENCRYPT:
            ok = EVP_PKEY_encrypt(c, out, outlen, in, inlen) > 0;
            break;
        case RAW_DECRYPT:
            ok = EVP_PKEY_decrypt(c, out, outlen, in, inlen) > 0;
            break;
        }
        if (!ok && ERR_peek_error() != 0) {
            const char *r = ERR_reason_error_string(ERR_peek_error());

            snprintf(why, whylen, "%s", r != NULL ? r : "");
        }
    }
    ct_errors(errs, sizeof(errs));
    if (!ok && why[0] != '\0')
        snprintf(why + strlen(why), whylen - strlen(why), " [%s]", errs);
    EVP_PKEY_CTX_free(c);
    return ok;
}

static int run_raw(void)
{
    ct_key imp = {0};
    EVP_PKEY *priv = soft_private();
    BIGNUM *n = NULL;
    unsigned char nbytes[512], below[512], sig[512];
    size_t k, siglen = sizeof(sig);
    char w[1024];
    int cases = 0;

    if (priv == NULL || !ct_key_load(&imp, "rsaimp") ||
        !EVP_PKEY_get_bn_param(imp.pub, OSSL_PKEY_PARAM_RSA_N, &n))
        return ct_result("raw");
    k = (size_t)EVP_PKEY_get_size(imp.tok);
    BN_bn2binpad(n, nbytes, (int)k);
    RAND_bytes(below, (int)k);
    below[0] = 0;
    if (!raw_op(priv, "provider=default", RAW_SIGN, below, k, NULL, 0, sig, &siglen, w,
                sizeof(w)))
        ct_fail("software raw signature: %s", w);
    for (int op = RAW_SIGN; op <= RAW_DECRYPT; op++) {
        /* Inputs: shorter than the modulus, one byte short, its length below
         * it, the modulus itself, all ones, one byte longer; for
         * verification the signed number in several lengths. */
        struct {
            const char *name;
            unsigned char v[520];
            size_t len;
        } in[8];
        size_t nin = 0;

        memset(in, 0, sizeof(in));
        in[nin].name = "64 bytes";
        RAND_bytes(in[nin].v, 64);
        in[nin].v[0] |= 0x80;
        in[nin++].len = 64;
        in[nin].name = "one byte less than the modulus";
        RAND_bytes(in[nin].v, (int)k - 1);
        in[nin].v[0] |= 0x80;
        in[nin++].len = k - 1;
        in[nin].name = "the modulus' length, below it";
        memcpy(in[nin].v, below, k);
        in[nin++].len = k;
        in[nin].name = "the modulus itself";
        memcpy(in[nin].v, nbytes, k);
        in[nin++].len = k;
        in[nin].name = "the modulus' length, all ones";
        memset(in[nin].v, 0xff, k);
        in[nin++].len = k;
        in[nin].name = "one byte more than the modulus";
        RAND_bytes(in[nin].v, (int)k + 1);
        in[nin++].len = k + 1;
        if (op == RAW_VERIFY) {
            in[nin].name = "the signed number without its leading zero";
            memcpy(in[nin].v, below + 1, k - 1);
            in[nin++].len = k - 1;
            in[nin].name = "the signed number with one more leading zero";
            memcpy(in[nin].v + 1, below, k);
            in[nin++].len = k + 1;
        }
        for (size_t i = 0; i < nin; i++) {
            int private_op = op == RAW_SIGN || op == RAW_DECRYPT;
            EVP_PKEY *ref = private_op ? priv : imp.pub;
            unsigned char o1[520], o2[520];
            size_t l1 = sizeof(o1), l2 = sizeof(o2);
            char w1[1024], w2[1024];
            int r1 = raw_op(ref, "provider=default", (enum raw_op)op, in[i].v, in[i].len,
                            sig, siglen, o1, &l1, w1, sizeof(w1));
            int r2 = raw_op(imp.tok, NULL, (enum raw_op)op, in[i].v, in[i].len, sig,
                            siglen, o2, &l2, w2, sizeof(w2));
            const char *what = raw_op_names[op];

            cases++;
            if (r1 && !r2) {
                ct_fail("%s of %s: the default provider accepts, the token key refuses: "
                        "%s",
                        what, in[i].name, w2);
            } else if (!r1 && r2) {
                ct_fail("%s of %s: the default provider refuses (%s), the token key "
                        "accepts",
                        what, in[i].name, w1);
            } else if (r1 && op != RAW_VERIFY && (l1 != l2 || memcmp(o1, o2, l1) != 0)) {
                ct_fail("%s of %s: the token key's result differs from the default "
                        "provider's",
                        what, in[i].name);
            } else if (!r1) {
                /* The same refusal: the default's reason in the token key's
                 * error (for verification, a mismatch is no error). */
                char reason[1024];

                snprintf(reason, sizeof(reason), "%s", w1);
                if (strchr(reason, '[') != NULL)
                    *strchr(reason, '[') = '\0';
                while (reason[0] != '\0' && reason[strlen(reason) - 1] == ' ')
                    reason[strlen(reason) - 1] = '\0';
                if (reason[0] != '\0' && strstr(w2, reason) == NULL)
                    ct_fail("%s of %s: the default provider says \"%s\", the token key "
                            "says: %s",
                            what, in[i].name, reason, w2[0] ? w2 : "(no error)");
                else if (op != RAW_VERIFY && w2[0] == '\0')
                    ct_fail("%s of %s refused without an error", what, in[i].name);
                else
                    printf("raw: %s of %s: refused by both: %s\n", what, in[i].name,
                           reason[0] ? reason : "no match");
            } else {
                printf("raw: %s of %s: same result\n", what, in[i].name);
            }
        }
    }
    printf("raw: %d cases\n", cases);
    BN_free(n);
    ct_key_free(&imp);
    EVP_PKEY_free(priv);
    return ct_result("raw");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    if (!ct_init())
        return 1;
    if (strcmp(mode, "roundtrip") == 0)
        return run_roundtrip();
    if (strcmp(mode, "errors") == 0)
        return run_errors();
    if (strcmp(mode, "raw") == 0)
        return run_raw();
    fprintf(stderr, "usage: cipher_rsa roundtrip|errors|raw\n");
    return 2;
}
