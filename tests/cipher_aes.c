/*
 * AES through hsmprov (the token runs it), checked against published vectors
 * and against OpenSSL's default provider, call by call.
 *
 *   cipher_aes MODE
 *
 *   kat        NIST SP 800-38A (ECB, CBC, CTR) and the GCM specification's
 *              test cases, every key size, encrypt and decrypt, with raw
 *              keys and with the same keys in the token (pkcs11-key-uri).
 *   chunks     every algorithm, encrypt and decrypt, padding on and off,
 *              fed update by update in chunks of 1 byte to 64 KiB: every
 *              update's output and final's equal the default provider's,
 *              byte for byte and in length; raw keys and token keys.
 *   gcm        wrong tag, changed AAD, changed ciphertext, no tag: decryption
 *              fails; short tags and long IVs work; an IV is not reused.
 *   params     algorithm and context parameters as the default provider's;
 *              padding errors and bad keys fail cleanly.
 *   dup        EVP_CIPHER_CTX_copy of an idle context works; of a context
 *              mid-operation fails with a clear error (SoftHSM2 cannot save
 *              operation state); re-init and re-key mid-operation work.
 *   threads    8 threads, each streaming distinct data through its own
 *              contexts on one shared token key, update by update with
 *              random chunk sizes; every output compared with the software
 *              answer; the shim checks that no operations interleaved.
 *   abandon    many more contexts abandoned mid-stream than the pool has
 *              sessions (run with pkcs11-pool-size = 2): the pool stays
 *              whole; a thread holding every lease gets an immediate error
 *              for one more context, not a hang.
 *   recover    the token loses every session (shim): the raw key's session
 *              object and the token key are made/found again, once.
 *   fork       a context keyed in the parent works in the child (its key
 *              object is made again there), and the parent goes on.
 *
 * The provider comes from OPENSSL_CONF (tests/cipher.sh), over the
 * fault-injection shim. Any wrong byte, failed call, or error left on the
 * queue by a call that succeeded makes the exit status non-zero.
 */
#include "conc_util.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXBUF (300 * 1024)

enum { ECB, CBC, CTR, GCM };
static const char *const mode_names[] = {"ECB", "CBC", "CTR", "GCM"};
static const int key_bits[] = {128, 192, 256};

/* Keys the token holds too (tests/cipher.sh imports them): SP 800-38A's as
 * "kat128/192/256", the GCM specification's as "gcm128/192/256". */
static const char *const kat_keys[] = {
    "2b7e151628aed2a6abf7158809cf4f3c",
    "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
    "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
};
static const char *const gcm_keys[] = {
    "feffe9928665731c6d6a8f9467308308",
    "feffe9928665731c6d6a8f9467308308feffe9928665731c",
    "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
};

static struct p11shim_api shim;
static int have_shim;

/* ---- helpers --------------------------------------------------------------- */

static size_t unhex(const char *h, unsigned char *out)
{
    size_t n = 0;

    for (; h[0] != '\0' && h[1] != '\0'; h += 2) {
        unsigned int v;

        sscanf(h, "%2x", &v);
        out[n++] = (unsigned char)v;
    }
    return n;
}

static const char *alg_name(int mode, int bits)
{
    static __thread char name[32];

    snprintf(name, sizeof(name), "AES-%d-%s", bits, mode_names[mode]);
    return name;
}

static EVP_CIPHER *fetch(int mode, int bits, const char *prov)
{
    char q[64];
    EVP_CIPHER *c;

    snprintf(q, sizeof(q), "provider=%s", prov);
    c = EVP_CIPHER_fetch(NULL, alg_name(mode, bits), q);
    if (c == NULL)
        ct_fail("EVP_CIPHER_fetch(%s, %s)", alg_name(mode, bits), q);
    else if (strcmp(OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(c)), prov) != 0)
        ct_fail("%s came from %s, not %s", alg_name(mode, bits),
                OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(c)), prov);
    return c;
}

/* Nothing may be left on the error queue by calls that succeeded. */
static void queue_clean(const char *where)
{
    if (ERR_peek_error() != 0)
        ct_fail("stale error on the queue after %s", where);
}

/* A key for a context: raw bytes, or a token key named by URI. */
typedef struct keyspec {
    const unsigned char *raw; /* NULL: token key */
    size_t len;
    const char *uri;
} keyspec;

static void token_uri(char *buf, size_t len, const char *prefix, int bits)
{
    snprintf(buf, len, "pkcs11:token=demo;object=%s%d;type=secret-key", prefix, bits);
}

/* EVP_CipherInit_ex2 as an application does it: the cipher and key (or the
 * key URI) first, IV length for GCM, then the IV. */
static EVP_CIPHER_CTX *ctx_init(EVP_CIPHER *c, const keyspec *k, const unsigned char *iv,
                                size_t ivlen, int enc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    OSSL_PARAM p[2] = {OSSL_PARAM_END, OSSL_PARAM_END};
    int ok;

    if (ctx == NULL)
        return NULL;
    if (k->raw == NULL)
        p[0] = OSSL_PARAM_construct_utf8_string("pkcs11-key-uri", (char *)k->uri, 0);
    ok = EVP_CipherInit_ex2(ctx, c, k->raw, NULL, enc, k->raw == NULL ? p : NULL);
    if (ok && EVP_CIPHER_get_mode(c) == EVP_CIPH_GCM_MODE && ivlen != 12)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)ivlen, NULL) > 0;
    if (ok)
        ok = EVP_CipherInit_ex2(ctx, NULL, NULL, iv, enc, NULL);
    if (!ok) {
        ct_fail("init of %s (%s key)", EVP_CIPHER_get0_name(c),
                k->raw == NULL ? "token" : "raw");
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- kat ------------------------------------------------------------------- */

struct vector {
    int mode, bits;
    const char *key, *iv, *aad, *pt, *ct, *tag;
    const char *token_key; /* "kat" or "gcm": the token has this key; NULL: raw only */
};

#define SP_PT                                                                            \
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"                   \
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
#define GCM_PT                                                                           \
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"                   \
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
#define GCM_AAD "feedfacedeadbeeffeedfacedeadbeefabaddad2"
#define IV_CBC "000102030405060708090a0b0c0d0e0f"
#define IV_CTR "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"

static const struct vector vectors[] = {
    /* NIST SP 800-38A, F.1 (ECB), F.2 (CBC), F.5 (CTR). */
    {ECB, 128, NULL, "", "", SP_PT,
     "3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf"
     "43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4",
     NULL, "kat"},
    {ECB, 192, NULL, "", "", SP_PT,
     "bd334f1d6e45f25ff712a214571fa5cc974104846d0ad3ad7734ecb3ecee4eef"
     "ef7afd2270e2e60adce0ba2face6444e9a4b41ba738d6c72fb16691603c18e0e",
     NULL, "kat"},
    {ECB, 256, NULL, "", "", SP_PT,
     "f3eed1bdb5d2a03c064b5a7e3db181f8591ccb10d410ed26dc5ba74a31362870"
     "b6ed21b99ca6f4f9f153e7b1beafed1d23304b7a39f9f3ff067d8d8f9e24ecc7",
     NULL, "kat"},
    {CBC, 128, NULL, IV_CBC, "", SP_PT,
     "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
     "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7",
     NULL, "kat"},
    {CBC, 192, NULL, IV_CBC, "", SP_PT,
     "4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a"
     "571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd",
     NULL, "kat"},
    {CBC, 256, NULL, IV_CBC, "", SP_PT,
     "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
     "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
     NULL, "kat"},
    {CTR, 128, NULL, IV_CTR, "", SP_PT,
     "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
     "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee",
     NULL, "kat"},
    {CTR, 192, NULL, IV_CTR, "", SP_PT,
     "1abc932417521ca24f2b0459fe7e6e0b090339ec0aa6faefd5ccc2c6f4ce8e94"
     "1e36b26bd1ebc670d1bd1d665620abf74f78a7f6d29809585a97daec58c6b050",
     NULL, "kat"},
    {CTR, 256, NULL, IV_CTR, "", SP_PT,
     "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
     "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
     NULL, "kat"},
    /* The GCM specification (McGrew, Viega), test cases 2-6, 8, 10, 14, 16. */
    {GCM, 128, "00000000000000000000000000000000", "000000000000000000000000", "",
     "00000000000000000000000000000000", "0388dace60b6a392f328c2b971b2fe78",
     "ab6e47d42cec13bdf53a67b21257bddf", NULL},
    {GCM, 128, NULL, "cafebabefacedbaddecaf888", "",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
     "4d5c2af327cd64a62cf35abd2ba6fab4", "gcm"},
    {GCM, 128, NULL, "cafebabefacedbaddecaf888", GCM_AAD, GCM_PT,
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47", "gcm"},
    {GCM, 128, NULL, "cafebabefacedbad", GCM_AAD, GCM_PT,
     "61353b4c2806934a777ff51fa22a4755699b2a714fcdc6f83766e5f97b6c7423"
     "73806900e49f24b22b097544d4896b424989b5e1ebac0f07c23f4598",
     "3612d2e79e3b0785561be14aaca2fccb", "gcm"},
    {GCM, 128, NULL,
     "9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728"
     "c3c0c95156809539fcf0e2429a6b525416aedbf5a0de6a57a637b39b",
     GCM_AAD, GCM_PT,
     "8ce24998625615b603a033aca13fb894be9112a5c3a211a8ba262a3cca7e2ca7"
     "01e4a9a4fba43c90ccdcb281d48c7c6fd62875d2aca417034c34aee5",
     "619cc5aefffe0bfa462af43c1699d050", "gcm"},
    {GCM, 192, "000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "", "00000000000000000000000000000000",
     "98e7247c07f0fe411c267e4384b0f600", "2ff58d80033927ab8ef4d4587514f0fb", NULL},
    {GCM, 192, NULL, "cafebabefacedbaddecaf888", GCM_AAD, GCM_PT,
     "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c"
     "7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710",
     "2519498e80f1478f37ba55bd6d27618c", "gcm"},
    {GCM, 256, "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "", "00000000000000000000000000000000",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919", NULL},
    {GCM, 256, NULL, "cafebabefacedbaddecaf888", GCM_AAD, GCM_PT,
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b", "gcm"},
};

static int bits_index(int bits)
{
    return bits == 128 ? 0 : bits == 192 ? 1 : 2;
}

/* One direction of one vector, in one go. */
static void kat_one(const struct vector *v, EVP_CIPHER *c, const keyspec *k, int enc,
                    const char *provname)
{
    unsigned char iv[128], aad[64], pt[128], ct[128], tag[16], out[256];
    size_t ivlen = unhex(v->iv, iv), aadlen = unhex(v->aad, aad),
           ptlen = unhex(v->pt, pt);
    size_t ctlen = unhex(v->ct, ct), taglen = v->tag ? unhex(v->tag, tag) : 0;
    const unsigned char *in = enc ? pt : ct, *want = enc ? ct : pt;
    size_t inlen = enc ? ptlen : ctlen;
    EVP_CIPHER_CTX *ctx = ctx_init(c, k, iv, ivlen, enc);
    int l1 = 0, l2 = 0, tmp, ok;
    char what[128];

    snprintf(what, sizeof(what), "%s %s KAT (%s, %s key)", alg_name(v->mode, v->bits),
             enc ? "encrypt" : "decrypt", provname, k->raw ? "raw" : "token");
    if (ctx == NULL)
        return;
    ok = EVP_CIPHER_CTX_set_padding(ctx, 0) == 1;
    if (ok && aadlen > 0)
        ok = EVP_CipherUpdate(ctx, NULL, &tmp, aad, (int)aadlen) == 1;
    if (ok)
        ok = EVP_CipherUpdate(ctx, out, &l1, in, (int)inlen) == 1;
    if (ok && v->mode == GCM && !enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, (int)taglen, tag) > 0;
    if (ok)
        ok = EVP_CipherFinal_ex(ctx, out + l1, &l2) == 1;
    if (!ok)
        ct_fail("%s: a call failed", what);
    else if ((size_t)(l1 + l2) != inlen || memcmp(out, want, inlen) != 0)
        ct_fail("%s: wrong result", what);
    if (ok && v->mode == GCM && enc) {
        unsigned char t[16];

        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, (int)taglen, t) <= 0 ||
            memcmp(t, tag, taglen) != 0)
            ct_fail("%s: wrong tag", what);
    }
    queue_clean(what);
    EVP_CIPHER_CTX_free(ctx);
}

static int run_kat(void)
{
    size_t n = 0;

    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vector *v = &vectors[i];
        int bi = bits_index(v->bits);
        const char *khex = v->key != NULL   ? v->key
                           : v->mode == GCM ? gcm_keys[bi]
                                            : kat_keys[bi];
        unsigned char key[32];
        keyspec raw = {key, unhex(khex, key), NULL}, tok = {NULL, 0, NULL};
        char uri[96];
        EVP_CIPHER *hsm = fetch(v->mode, v->bits, "hsmprov");
        EVP_CIPHER *soft = fetch(v->mode, v->bits, "default");

        if (hsm == NULL || soft == NULL)
            return ct_result("kat");
        if (v->token_key != NULL) {
            token_uri(uri, sizeof(uri), v->token_key, v->bits);
            tok.uri = uri;
        }
        for (int enc = 1; enc >= 0; enc--) {
            kat_one(v, soft, &raw, enc, "default"); /* the vector itself */
            kat_one(v, hsm, &raw, enc, "hsmprov");
            if (tok.uri != NULL)
                kat_one(v, hsm, &tok, enc, "hsmprov");
            n++;
        }
        EVP_CIPHER_free(hsm);
        EVP_CIPHER_free(soft);
    }
    printf("kat: %zu vector directions, raw and token keys\n", n);
    return ct_result("kat");
}

/* ---- chunks ---------------------------------------------------------------- */

/* Streams in (len bytes) through the pair of contexts chunk by chunk,
 * comparing every update's output; then final. GCM: AAD first, and for
 * decryption the tag the software encryption made. */
static void stream_pair(EVP_CIPHER_CTX *hc, EVP_CIPHER_CTX *sc, const unsigned char *in,
                        size_t len, size_t chunk, const unsigned char *aad, size_t aadlen,
                        const unsigned char *tag, int enc, const char *what)
{
    static __thread unsigned char ho[MAXBUF + 64], so[MAXBUF + 64];
    size_t off = 0, total = 0;
    int hl, sl, hok, sok;

    if (aadlen > 0 && (EVP_CipherUpdate(hc, NULL, &hl, aad, (int)aadlen) != 1 ||
                       EVP_CipherUpdate(sc, NULL, &sl, aad, (int)aadlen) != 1)) {
        ct_fail("%s: AAD", what);
        return;
    }
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;

        hok = EVP_CipherUpdate(hc, ho + total, &hl, in + off, (int)n);
        sok = EVP_CipherUpdate(sc, so + total, &sl, in + off, (int)n);
        if (hok != 1 || sok != 1 || hl != sl || memcmp(ho + total, so + total, hl) != 0) {
            ct_fail("%s: update at %zu (+%zu): hsmprov %d/%d bytes, default %d/%d", what,
                    off, n, hok, hl, sok, sl);
            return;
        }
        total += (size_t)hl;
        off += n;
    }
    if (tag != NULL &&
        (EVP_CIPHER_CTX_ctrl(hc, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) <= 0 ||
         EVP_CIPHER_CTX_ctrl(sc, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) <= 0)) {
        ct_fail("%s: set tag", what);
        return;
    }
    hok = EVP_CipherFinal_ex(hc, ho + total, &hl);
    sok = EVP_CipherFinal_ex(sc, so + total, &sl);
    if (hok != sok ||
        (hok == 1 && (hl != sl || memcmp(ho + total, so + total, hl) != 0))) {
        ct_fail("%s: final: hsmprov %d/%d bytes, default %d/%d", what, hok, hl, sok, sl);
        return;
    }
    ERR_clear_error(); /* both failed alike (wrong final block length): expected */
    if (hok == 1 && enc && EVP_CIPHER_CTX_get_mode(hc) == EVP_CIPH_GCM_MODE) {
        unsigned char ht[16], st[16];

        if (EVP_CIPHER_CTX_ctrl(hc, EVP_CTRL_AEAD_GET_TAG, 16, ht) <= 0 ||
            EVP_CIPHER_CTX_ctrl(sc, EVP_CTRL_AEAD_GET_TAG, 16, st) <= 0 ||
            memcmp(ht, st, 16) != 0)
            ct_fail("%s: tags differ", what);
    }
}

/* In place (out == in), as applications often call: with whole blocks for
 * ECB/CBC (OpenSSL's own block ciphers garble in-place data that does not
 * start on a block boundary), any sizes for CTR/GCM. Compared with the
 * default provider working out of place. */
static void run_inplace(void)
{
    static const size_t chunks[] = {16, 48, 4096, 16384};
    static unsigned char msg[70000], buf[70100], ref[70100];
    unsigned char key[32], iv[16], tag[16], htag[16];
    keyspec raw = {key, 32, NULL};

    RAND_bytes(msg, sizeof(msg));
    RAND_bytes(key, sizeof(key));
    for (int mode = ECB; mode <= GCM; mode++) {
        EVP_CIPHER *h = fetch(mode, 256, "hsmprov"), *s = fetch(mode, 256, "default");

        for (size_t ci = 0; h != NULL && s != NULL && ci < 4; ci++) {
            size_t chunk = mode >= CTR ? chunks[ci] + 5 : chunks[ci], len = 65536;
            EVP_CIPHER_CTX *hc, *sc;
            int rl = 0, rf = 0, l;
            size_t off, total;

            RAND_bytes(iv, sizeof(iv));
            for (int enc = 1; enc >= 0; enc--) {
                /* Decryption takes software's ciphertext of the encryption. */
                const unsigned char *in = enc ? msg : ref;

                /* software, out of place */
                sc = ctx_init(s, &raw, iv, mode == GCM ? 12 : 16, enc);
                hc = ctx_init(h, &raw, iv, mode == GCM ? 12 : 16, enc);
                if (sc == NULL || hc == NULL)
                    return;
                EVP_CIPHER_CTX_set_padding(sc, 0);
                EVP_CIPHER_CTX_set_padding(hc, 0);
                if (enc) {
                    EVP_CipherUpdate(sc, ref, &rl, msg, (int)len);
                    EVP_CipherFinal_ex(sc, ref + rl, &rf);
                    if (mode == GCM)
                        EVP_CIPHER_CTX_ctrl(sc, EVP_CTRL_AEAD_GET_TAG, 16, tag);
                }
                /* hsmprov, in place, chunk by chunk */
                memcpy(buf, in, len);
                for (off = total = 0; off < len; off += chunk) {
                    size_t n = len - off < chunk ? len - off : chunk;

                    if (EVP_CipherUpdate(hc, buf + off, &l, buf + off, (int)n) != 1 ||
                        (size_t)l != n) {
                        ct_fail("%s in place: update", alg_name(mode, 256));
                        break;
                    }
                    total += (size_t)l;
                }
                if (!enc && mode == GCM)
                    EVP_CIPHER_CTX_ctrl(hc, EVP_CTRL_AEAD_SET_TAG, 16, tag);
                if (EVP_CipherFinal_ex(hc, buf + total, &l) != 1 ||
                    memcmp(buf, enc ? ref : msg, len) != 0)
                    ct_fail("%s in place (%s, chunks of %zu) differs",
                            alg_name(mode, 256), enc ? "encrypt" : "decrypt", chunk);
                if (enc && mode == GCM &&
                    (EVP_CIPHER_CTX_ctrl(hc, EVP_CTRL_AEAD_GET_TAG, 16, htag) <= 0 ||
                     memcmp(htag, tag, 16) != 0))
                    ct_fail("%s in place: tag differs", alg_name(mode, 256));
                EVP_CIPHER_CTX_free(hc);
                EVP_CIPHER_CTX_free(sc);
            }
        }
        EVP_CIPHER_free(h);
        EVP_CIPHER_free(s);
    }
    queue_clean("in place");
    printf("chunks: in-place encryption and decryption as the default provider's\n");
}

static int run_chunks(void)
{
    static const size_t chunks[] = {1, 7, 15, 16, 17, 100, 1000, 4096, 16384, 65536};
    static unsigned char msg[MAXBUF], enc_soft[MAXBUF + 64];
    unsigned char iv[16], aad[40], tag[16];
    size_t cases = 0;

    RAND_bytes(msg, sizeof(msg));
    RAND_bytes(aad, sizeof(aad));
    for (int mode = ECB; mode <= GCM; mode++) {
        for (int b = 0; b < 3; b++) {
            EVP_CIPHER *hsm = fetch(mode, key_bits[b], "hsmprov");
            EVP_CIPHER *soft = fetch(mode, key_bits[b], "default");
            unsigned char key[32];
            char uri[96];
            keyspec raw = {key, (size_t)key_bits[b] / 8, NULL};
            keyspec tok = {NULL, 0, uri};

            if (hsm == NULL || soft == NULL)
                return ct_result("chunks");
            /* The token key "kat<bits>" has this value; a raw key too. */
            unhex(kat_keys[b], key);
            token_uri(uri, sizeof(uri), "kat", key_bits[b]);
            for (size_t ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
                size_t chunk = chunks[ci];
                /* Around block edges, and several chunks long. */
                size_t lens[] = {0, 15, 16, 33, chunk * 3 + 13, chunk * 4};

                for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
                    size_t len = lens[li];

                    if (len > MAXBUF || (chunk < 16 && len > 2000))
                        continue;
                    for (int pad = (mode == ECB || mode == CBC); pad >= 0; pad--) {
                        for (int kk = 0; kk < 2; kk++) {
                            const keyspec *k = kk ? &tok : &raw;
                            char what[160];
                            int sl1 = 0, sl2 = 0;
                            EVP_CIPHER_CTX *hc, *sc;

                            RAND_bytes(iv, sizeof(iv));
                            snprintf(what, sizeof(what),
                                     "%s %s key, %zu bytes in chunks of %zu, padding %s",
                                     alg_name(mode, key_bits[b]), kk ? "token" : "raw",
                                     len, chunk, pad ? "on" : "off");
                            /* Encrypt. */
                            hc = ctx_init(hsm, k, iv, mode == GCM ? 12 : 16, 1);
                            sc = ctx_init(soft, &raw, iv, mode == GCM ? 12 : 16, 1);
                            if (hc == NULL || sc == NULL) {
                                EVP_CIPHER_CTX_free(hc);
                                EVP_CIPHER_CTX_free(sc);
                                continue;
                            }
                            EVP_CIPHER_CTX_set_padding(hc, pad);
                            EVP_CIPHER_CTX_set_padding(sc, pad);
                            stream_pair(hc, sc, msg, len, chunk, mode == GCM ? aad : NULL,
                                        mode == GCM ? sizeof(aad) : 0, NULL, 1, what);
                            EVP_CIPHER_CTX_free(hc);
                            EVP_CIPHER_CTX_free(sc);
                            /* The software ciphertext, to decrypt. */
                            sc = ctx_init(soft, &raw, iv, mode == GCM ? 12 : 16, 1);
                            EVP_CIPHER_CTX_set_padding(sc, pad);
                            if (mode == GCM)
                                EVP_CipherUpdate(sc, NULL, &sl1, aad, sizeof(aad));
                            if (EVP_CipherUpdate(sc, enc_soft, &sl1, msg, (int)len) !=
                                    1 ||
                                EVP_CipherFinal_ex(sc, enc_soft + sl1, &sl2) != 1) {
                                /* no padding, partial block: nothing to decrypt */
                                ERR_clear_error();
                                EVP_CIPHER_CTX_free(sc);
                                cases++;
                                continue;
                            }
                            if (mode == GCM)
                                EVP_CIPHER_CTX_ctrl(sc, EVP_CTRL_AEAD_GET_TAG, 16, tag);
                            EVP_CIPHER_CTX_free(sc);
                            /* Decrypt. */
                            hc = ctx_init(hsm, k, iv, mode == GCM ? 12 : 16, 0);
                            sc = ctx_init(soft, &raw, iv, mode == GCM ? 12 : 16, 0);
                            if (hc != NULL && sc != NULL) {
                                EVP_CIPHER_CTX_set_padding(hc, pad);
                                EVP_CIPHER_CTX_set_padding(sc, pad);
                                stream_pair(hc, sc, enc_soft, (size_t)(sl1 + sl2), chunk,
                                            mode == GCM ? aad : NULL,
                                            mode == GCM ? sizeof(aad) : 0,
                                            mode == GCM ? tag : NULL, 0, what);
                            }
                            EVP_CIPHER_CTX_free(hc);
                            EVP_CIPHER_CTX_free(sc);
                            queue_clean(what);
                            cases++;
                        }
                    }
                }
            }
            EVP_CIPHER_free(hsm);
            EVP_CIPHER_free(soft);
            if (ct_failures() > 10)
                return ct_result("chunks");
        }
    }
    printf("chunks: %zu cases (each encrypt and decrypt) identical to the default "
           "provider\n",
           cases);
    run_inplace();
    return ct_result("chunks");
}

/* ---- gcm ------------------------------------------------------------------- */

/* GCM decryption of ct with the given tag and AAD: 1 if final accepts. */
static int gcm_decrypts(EVP_CIPHER *c, const keyspec *k, const unsigned char *iv,
                        size_t ivlen, const unsigned char *aad, size_t aadlen,
                        const unsigned char *ct, size_t ctlen, const unsigned char *tag,
                        size_t taglen, const unsigned char *want)
{
    unsigned char out[1024];
    EVP_CIPHER_CTX *ctx = ctx_init(c, k, iv, ivlen, 0);
    int l1 = 0, l2 = 0, tmp, ok;

    if (ctx == NULL)
        return -1;
    ok = (aadlen == 0 || EVP_DecryptUpdate(ctx, NULL, &tmp, aad, (int)aadlen) == 1) &&
         EVP_DecryptUpdate(ctx, out, &l1, ct, (int)ctlen) == 1 &&
         (tag == NULL || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, (int)taglen,
                                             (void *)tag) > 0) &&
         EVP_DecryptFinal_ex(ctx, out + l1, &l2) == 1;
    if (ok && want != NULL &&
        ((size_t)(l1 + l2) != ctlen || memcmp(out, want, ctlen) != 0))
        ct_fail("GCM decryption accepted but returned the wrong plaintext");
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

static int run_gcm(void)
{
    unsigned char key[32], iv[64], aad[20], pt[300], ct[300], tag[16], bad[16];
    EVP_CIPHER *hsm = fetch(GCM, 256, "hsmprov"), *soft = fetch(GCM, 256, "default");
    keyspec raw = {key, 32, NULL}, tok = {NULL, 0, "pkcs11:token=demo;object=gcm256"};
    EVP_CIPHER_CTX *ctx;
    int l1, l2, tmp;

    if (hsm == NULL || soft == NULL)
        return ct_result("gcm");
    unhex(gcm_keys[2], key);
    RAND_bytes(iv, sizeof(iv));
    RAND_bytes(aad, sizeof(aad));
    RAND_bytes(pt, sizeof(pt));
    for (int kk = 0; kk < 2; kk++) {
        const keyspec *k = kk ? &tok : &raw;
        const char *kn = kk ? "token key" : "raw key";

        /* A good message, encrypted in software. */
        ctx = ctx_init(soft, &raw, iv, 12, 1);
        EVP_EncryptUpdate(ctx, NULL, &tmp, aad, sizeof(aad));
        EVP_EncryptUpdate(ctx, ct, &l1, pt, sizeof(pt));
        EVP_EncryptFinal_ex(ctx, ct + l1, &l2);
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
        EVP_CIPHER_CTX_free(ctx);

        if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), tag, 16, pt) !=
            1)
            ct_fail("GCM (%s): a good message does not decrypt", kn);
        queue_clean("GCM good decryption");
        memcpy(bad, tag, 16);
        bad[5] ^= 0x20;
        if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), bad, 16,
                         NULL) != 0)
            ct_fail("GCM (%s): a wrong tag is accepted", kn);
        ERR_clear_error();
        aad[3] ^= 1;
        if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), tag, 16,
                         NULL) != 0)
            ct_fail("GCM (%s): a changed AAD is accepted", kn);
        ERR_clear_error();
        aad[3] ^= 1;
        if (gcm_decrypts(hsm, k, iv, 12, NULL, 0, ct, sizeof(pt), tag, 16, NULL) != 0)
            ct_fail("GCM (%s): a missing AAD is accepted", kn);
        ERR_clear_error();
        ct[100] ^= 0x80;
        if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), tag, 16,
                         NULL) != 0)
            ct_fail("GCM (%s): a changed ciphertext is accepted", kn);
        ERR_clear_error();
        ct[100] ^= 0x80;
        if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), NULL, 0,
                         NULL) != 0)
            ct_fail("GCM (%s): decryption without a tag is accepted", kn);
        ERR_clear_error();
        /* Truncated tags: the leading bytes of the full one. */
        for (size_t tl = 4; tl <= 16; tl += 4) {
            if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), tag, tl,
                             pt) != 1)
                ct_fail("GCM (%s): a %zu-byte tag is refused", kn, tl);
            memcpy(bad, tag, tl);
            bad[tl - 1] ^= 1;
            if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), bad, tl,
                             NULL) != 0)
                ct_fail("GCM (%s): a wrong %zu-byte tag is accepted", kn, tl);
            ERR_clear_error();
        }
        /* IV lengths other than 12: the same bytes as software. */
        for (size_t ivl = 1; ivl <= 64; ivl = ivl * 2 + 1) {
            unsigned char hct[300], stag[16], htag[16];
            EVP_CIPHER_CTX *h = ctx_init(hsm, k, iv, ivl, 1),
                           *s = ctx_init(soft, &raw, iv, ivl, 1);
            int hl = 0, hf = 0;

            if (h == NULL || s == NULL ||
                EVP_EncryptUpdate(h, hct, &hl, pt, sizeof(pt)) != 1 ||
                EVP_EncryptFinal_ex(h, hct + hl, &hf) != 1 ||
                EVP_CIPHER_CTX_ctrl(h, EVP_CTRL_AEAD_GET_TAG, 16, htag) <= 0 ||
                EVP_EncryptUpdate(s, ct, &l1, pt, sizeof(pt)) != 1 ||
                EVP_EncryptFinal_ex(s, ct + l1, &l2) != 1 ||
                EVP_CIPHER_CTX_ctrl(s, EVP_CTRL_AEAD_GET_TAG, 16, stag) <= 0 ||
                memcmp(hct, ct, sizeof(pt)) != 0 || memcmp(htag, stag, 16) != 0)
                ct_fail("GCM (%s) with a %zu-byte IV differs from software", kn, ivl);
            else if (gcm_decrypts(hsm, k, iv, ivl, NULL, 0, hct, sizeof(pt), htag, 16,
                                  pt) != 1)
                ct_fail("GCM (%s) with a %zu-byte IV does not decrypt", kn, ivl);
            EVP_CIPHER_CTX_free(h);
            EVP_CIPHER_CTX_free(s);
        }
        queue_clean("GCM IV lengths");
        /* An empty message with AAD only: the tag is software's. */
        {
            unsigned char htag[16], stag[16];
            EVP_CIPHER_CTX *h = ctx_init(hsm, k, iv, 12, 1),
                           *s = ctx_init(soft, &raw, iv, 12, 1);

            if (h == NULL || s == NULL ||
                EVP_EncryptUpdate(h, NULL, &tmp, aad, sizeof(aad)) != 1 ||
                EVP_EncryptFinal_ex(h, ct, &l1) != 1 || l1 != 0 ||
                EVP_CIPHER_CTX_ctrl(h, EVP_CTRL_AEAD_GET_TAG, 16, htag) <= 0 ||
                EVP_EncryptUpdate(s, NULL, &tmp, aad, sizeof(aad)) != 1 ||
                EVP_EncryptFinal_ex(s, ct, &l2) != 1 ||
                EVP_CIPHER_CTX_ctrl(s, EVP_CTRL_AEAD_GET_TAG, 16, stag) <= 0 ||
                memcmp(htag, stag, 16) != 0)
                ct_fail("GCM (%s): AAD-only message differs from software", kn);
            else if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, 0, htag, 16,
                                  NULL) != 1)
                ct_fail("GCM (%s): AAD-only message does not verify", kn);
            /* The IV of a finished encryption is not used again. */
            if (h != NULL && EVP_EncryptUpdate(h, ct, &l1, pt, 16) == 1)
                ct_fail("GCM (%s): a second message with the same IV was accepted", kn);
            ERR_clear_error();
            /* A new IV on the same context: fine again. */
            if (h != NULL && (EVP_EncryptInit_ex2(h, NULL, NULL, iv + 12, NULL) != 1 ||
                              EVP_EncryptUpdate(h, ct, &l1, pt, 16) != 1 ||
                              EVP_EncryptFinal_ex(h, ct + l1, &l2) != 1))
                ct_fail("GCM (%s): re-init with a new IV fails", kn);
            /* AAD after data is refused, as by OpenSSL. */
            if (h != NULL && (EVP_EncryptInit_ex2(h, NULL, NULL, iv + 24, NULL) != 1 ||
                              EVP_EncryptUpdate(h, ct, &l1, pt, 16) != 1 ||
                              EVP_EncryptUpdate(h, NULL, &tmp, aad, 4) == 1))
                ct_fail("GCM (%s): AAD after data is accepted", kn);
            ERR_clear_error();
            EVP_CIPHER_CTX_free(h);
            EVP_CIPHER_CTX_free(s);
        }
    }
    EVP_CIPHER_free(hsm);
    EVP_CIPHER_free(soft);
    printf("gcm: tampering fails decryption; tags, IVs and AAD as in software\n");
    return ct_result("gcm");
}

/* ---- params ---------------------------------------------------------------- */

static void compare_cipher_params(EVP_CIPHER *h, EVP_CIPHER *s)
{
    const char *n = EVP_CIPHER_get0_name(s);

    if (EVP_CIPHER_get_mode(h) != EVP_CIPHER_get_mode(s) ||
        EVP_CIPHER_get_key_length(h) != EVP_CIPHER_get_key_length(s) ||
        EVP_CIPHER_get_iv_length(h) != EVP_CIPHER_get_iv_length(s) ||
        EVP_CIPHER_get_block_size(h) != EVP_CIPHER_get_block_size(s) ||
        EVP_CIPHER_get_flags(h) != EVP_CIPHER_get_flags(s) ||
        EVP_CIPHER_get_nid(h) != EVP_CIPHER_get_nid(s))
        ct_fail("%s: algorithm parameters differ from the default provider's: mode %d/%d "
                "key %d/%d iv %d/%d block %d/%d flags %lx/%lx nid %d/%d",
                n, EVP_CIPHER_get_mode(h), EVP_CIPHER_get_mode(s),
                EVP_CIPHER_get_key_length(h), EVP_CIPHER_get_key_length(s),
                EVP_CIPHER_get_iv_length(h), EVP_CIPHER_get_iv_length(s),
                EVP_CIPHER_get_block_size(h), EVP_CIPHER_get_block_size(s),
                EVP_CIPHER_get_flags(h), EVP_CIPHER_get_flags(s), EVP_CIPHER_get_nid(h),
                EVP_CIPHER_get_nid(s));
    /* Every context parameter the default provider lists (but TLS record
     * protection's, which hsmprov does not do) is listed. */
    for (int set = 0; set < 2; set++) {
        const OSSL_PARAM *sp =
            set ? EVP_CIPHER_settable_ctx_params(s) : EVP_CIPHER_gettable_ctx_params(s);
        const OSSL_PARAM *hp =
            set ? EVP_CIPHER_settable_ctx_params(h) : EVP_CIPHER_gettable_ctx_params(h);

        for (; sp != NULL && sp->key != NULL; sp++) {
            if (strncmp(sp->key, "tls", 3) == 0 || strcmp(sp->key, "use-bits") == 0)
                continue;
            if (OSSL_PARAM_locate_const(hp, sp->key) == NULL)
                ct_fail("%s: %s context parameter \"%s\" is missing", n,
                        set ? "settable" : "gettable", sp->key);
        }
    }
}

static void compare_ctx_params(EVP_CIPHER_CTX *h, EVP_CIPHER_CTX *s, const char *what)
{
    unsigned char hiv[16], siv[16];

    if (EVP_CIPHER_CTX_get_iv_length(h) != EVP_CIPHER_CTX_get_iv_length(s) ||
        EVP_CIPHER_CTX_get_key_length(h) != EVP_CIPHER_CTX_get_key_length(s) ||
        EVP_CIPHER_CTX_get_num(h) != EVP_CIPHER_CTX_get_num(s))
        ct_fail("%s: context parameters differ", what);
    if (EVP_CIPHER_CTX_get_iv_length(s) > 0 &&
        (EVP_CIPHER_CTX_get_updated_iv(h, hiv, sizeof(hiv)) != 1 ||
         EVP_CIPHER_CTX_get_updated_iv(s, siv, sizeof(siv)) != 1 ||
         memcmp(hiv, siv, (size_t)EVP_CIPHER_CTX_get_iv_length(s)) != 0))
        ct_fail("%s: updated IV differs", what);
    if (EVP_CIPHER_CTX_get_iv_length(s) > 0 &&
        (EVP_CIPHER_CTX_get_original_iv(h, hiv, sizeof(hiv)) != 1 ||
         EVP_CIPHER_CTX_get_original_iv(s, siv, sizeof(siv)) != 1 ||
         memcmp(hiv, siv, (size_t)EVP_CIPHER_CTX_get_iv_length(s)) != 0))
        ct_fail("%s: original IV differs", what);
}

static int run_params(void)
{
    unsigned char key[32], iv[16], msg[100], out[200];
    int l;

    RAND_bytes(key, sizeof(key));
    RAND_bytes(iv, sizeof(iv));
    RAND_bytes(msg, sizeof(msg));
    for (int mode = ECB; mode <= GCM; mode++) {
        for (int b = 0; b < 3; b++) {
            EVP_CIPHER *h = fetch(mode, key_bits[b], "hsmprov");
            EVP_CIPHER *s = fetch(mode, key_bits[b], "default");
            keyspec raw = {key, (size_t)key_bits[b] / 8, NULL};
            EVP_CIPHER_CTX *hc, *sc;

            if (h == NULL || s == NULL)
                return ct_result("params");
            compare_cipher_params(h, s);
            if (mode == GCM) {
                EVP_CIPHER_free(h);
                EVP_CIPHER_free(s);
                continue;
            }
            /* Running values after partial data, both directions. */
            for (int enc = 0; enc < 2; enc++) {
                hc = ctx_init(h, &raw, iv, 16, enc);
                sc = ctx_init(s, &raw, iv, 16, enc);
                if (hc == NULL || sc == NULL)
                    return ct_result("params");
                compare_ctx_params(hc, sc, "after init");
                EVP_CipherUpdate(hc, out, &l, msg, 37);
                EVP_CipherUpdate(sc, out, &l, msg, 37);
                compare_ctx_params(hc, sc, alg_name(mode, key_bits[b]));
                EVP_CIPHER_CTX_free(hc);
                EVP_CIPHER_CTX_free(sc);
            }
            EVP_CIPHER_free(h);
            EVP_CIPHER_free(s);
        }
    }
    queue_clean("parameters");

    /* GCM context parameters. */
    {
        EVP_CIPHER *h = fetch(GCM, 128, "hsmprov");
        keyspec raw = {key, 16, NULL};
        EVP_CIPHER_CTX *hc = ctx_init(h, &raw, iv, 12, 1);
        unsigned char tag[16];
        size_t taglen = 0;
        OSSL_PARAM p[] = {OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_AEAD_TAGLEN, &taglen),
                          OSSL_PARAM_END};

        if (hc == NULL || EVP_CIPHER_CTX_get_params(hc, p) != 1 || taglen != 16)
            ct_fail("GCM: tag length is not 16 before a tag is set");
        if (hc != NULL && EVP_CIPHER_CTX_ctrl(hc, EVP_CTRL_AEAD_GET_TAG, 16, tag) > 0)
            ct_fail("GCM: a tag is returned before final");
        ERR_clear_error();
        if (hc != NULL && EVP_CIPHER_CTX_ctrl(hc, EVP_CTRL_AEAD_SET_TAG, 16, tag) > 0)
            ct_fail("GCM: a tag can be set for encryption");
        ERR_clear_error();
        EVP_CIPHER_CTX_free(hc);
        EVP_CIPHER_free(h);
    }

    /* Errors: wrong final block length, bad padding, wrong key length, key
     * URI of a missing key or of the wrong size. */
    {
        EVP_CIPHER *h = fetch(CBC, 256, "hsmprov"), *s = fetch(CBC, 256, "default");
        keyspec raw = {key, 32, NULL};
        EVP_CIPHER_CTX *hc = ctx_init(h, &raw, iv, 16, 1);
        unsigned char ct[64];
        int l2, cl;

        EVP_CIPHER_CTX_set_padding(hc, 0);
        if (EVP_EncryptUpdate(hc, out, &l, msg, 20) != 1 || l != 16 ||
            EVP_EncryptFinal_ex(hc, out + l, &l2) == 1)
            ct_fail("CBC without padding: 20 bytes are accepted");
        ERR_clear_error();
        EVP_CIPHER_CTX_free(hc);
        /* Bad padding in software's ciphertext of 32 bytes. */
        hc = ctx_init(s, &raw, iv, 16, 1);
        EVP_CIPHER_CTX_set_padding(hc, 0);
        memset(msg, 0x11, 32);
        EVP_EncryptUpdate(hc, ct, &cl, msg, 32);
        EVP_CIPHER_CTX_free(hc);
        hc = ctx_init(h, &raw, iv, 16, 0);
        if (EVP_DecryptUpdate(hc, out, &l, ct, cl) != 1 || l != 16 ||
            EVP_DecryptFinal_ex(hc, out + l, &l2) == 1)
            ct_fail("CBC with padding: bad padding is accepted");
        if (ERR_peek_error() == 0)
            ct_fail("CBC bad padding raised no error");
        ERR_clear_error();
        EVP_CIPHER_CTX_free(hc);
        /* Wrong key length (EVP checks it too) and a key URI that names
         * nothing, or an AES-128 key for AES-256. */
        hc = EVP_CIPHER_CTX_new();
        {
            OSSL_PARAM p1[] = {OSSL_PARAM_utf8_string("pkcs11-key-uri",
                                                      "pkcs11:token=demo;object=nosuch",
                                                      0),
                               OSSL_PARAM_END};
            OSSL_PARAM p2[] = {OSSL_PARAM_utf8_string("pkcs11-key-uri",
                                                      "pkcs11:token=demo;object=kat128",
                                                      0),
                               OSSL_PARAM_END};
            char errs[1024];

            p1[0].data_size = strlen(p1[0].data);
            p2[0].data_size = strlen(p2[0].data);
            if (EVP_CipherInit_ex2(hc, h, NULL, iv, 1, p1) == 1)
                ct_fail("a key URI naming no key is accepted");
            ct_errors(errs, sizeof(errs));
            if (strstr(errs, "object=nosuch") == NULL)
                ct_fail("the error for a missing key does not name it: %s", errs);
            if (EVP_CipherInit_ex2(hc, h, NULL, iv, 1, p2) == 1)
                ct_fail("an AES-128 token key is accepted for AES-256");
            ct_errors(errs, sizeof(errs));
            if (strstr(errs, "AES-128") == NULL)
                ct_fail("the error for a wrong-size key does not say so: %s", errs);
            /* No key at all: the first update says so. */
            if (EVP_CipherInit_ex2(hc, h, NULL, iv, 1, NULL) != 1 ||
                EVP_EncryptUpdate(hc, out, &l, msg, 32) == 1)
                ct_fail("encryption without a key works");
            ct_errors(errs, sizeof(errs));
            if (strstr(errs, "no key") == NULL)
                ct_fail("the error for no key does not say so: %s", errs);
        }
        EVP_CIPHER_CTX_free(hc);
        EVP_CIPHER_free(h);
        EVP_CIPHER_free(s);
    }
    /* Fetching without a property query finds the default provider's AES:
     * software keys stay in software (DESIGN §2.12). */
    {
        EVP_CIPHER *any = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);

        if (any == NULL || strcmp(OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(any)),
                                  "default") != 0)
            ct_fail("AES-256-GCM without a property query comes from %s",
                    any ? OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(any))
                        : "nowhere");
        EVP_CIPHER_free(any);
    }
    printf("params: algorithm and context parameters as the default provider's\n");
    return ct_result("params");
}

/* ---- dup ------------------------------------------------------------------- */

static int run_dup(void)
{
    unsigned char key[32], iv[16], msg[64], a[128], b[128], ref[128];
    EVP_CIPHER *h = fetch(CBC, 256, "hsmprov"), *s = fetch(CBC, 256, "default");
    keyspec raw = {key, 32, NULL};
    EVP_CIPHER_CTX *orig, *copy, *sc;
    int l1, l2, r1, r2;
    char errs[1024];

    RAND_bytes(key, sizeof(key));
    RAND_bytes(iv, sizeof(iv));
    RAND_bytes(msg, sizeof(msg));
    sc = ctx_init(s, &raw, iv, 16, 1);
    EVP_EncryptUpdate(sc, ref, &r1, msg, sizeof(msg));
    EVP_EncryptFinal_ex(sc, ref + r1, &r2);
    EVP_CIPHER_CTX_free(sc);

    /* Idle (keyed, no data yet): both copies work, the copy after the
     * original is freed too. */
    orig = ctx_init(h, &raw, iv, 16, 1);
    copy = EVP_CIPHER_CTX_new();
    if (orig == NULL || copy == NULL || EVP_CIPHER_CTX_copy(copy, orig) != 1) {
        ct_fail("EVP_CIPHER_CTX_copy of an idle context");
    } else {
        if (EVP_EncryptUpdate(orig, a, &l1, msg, sizeof(msg)) != 1 ||
            EVP_EncryptFinal_ex(orig, a + l1, &l2) != 1 || l1 + l2 != r1 + r2 ||
            memcmp(a, ref, (size_t)(l1 + l2)) != 0)
            ct_fail("the original after a copy");
        EVP_CIPHER_CTX_free(orig);
        orig = NULL;
        if (EVP_EncryptUpdate(copy, b, &l1, msg, sizeof(msg)) != 1 ||
            EVP_EncryptFinal_ex(copy, b + l1, &l2) != 1 || l1 + l2 != r1 + r2 ||
            memcmp(b, ref, (size_t)(l1 + l2)) != 0)
            ct_fail("the copy of an idle context, after its original was freed");
        /* After final the copy is idle again and can itself be copied. */
        sc = EVP_CIPHER_CTX_new();
        if (EVP_CIPHER_CTX_copy(sc, copy) != 1)
            ct_fail("EVP_CIPHER_CTX_copy after final");
        EVP_CIPHER_CTX_free(sc);
    }
    EVP_CIPHER_CTX_free(orig);
    EVP_CIPHER_CTX_free(copy);
    queue_clean("dup of idle contexts");

    /* Mid-operation: the token cannot hand the state over. */
    orig = ctx_init(h, &raw, iv, 16, 1);
    copy = EVP_CIPHER_CTX_new();
    if (orig == NULL || EVP_EncryptUpdate(orig, a, &l1, msg, 32) != 1) {
        ct_fail("update before dup");
    } else if (EVP_CIPHER_CTX_copy(copy, orig) == 1) {
        printf("dup: the token saved the operation state; the copy is checked\n");
        if (EVP_EncryptUpdate(copy, b, &l2, msg + 32, 32) != 1 ||
            memcmp(b, ref + 32, (size_t)l2) != 0)
            ct_fail("the mid-operation copy");
    } else {
        ct_errors(errs, sizeof(errs));
        if (strstr(errs, "C_GetOperationState") == NULL ||
            strstr(errs, "cannot be duplicated") == NULL)
            ct_fail("the dup error does not explain itself: %s", errs);
        else
            printf("dup mid-operation refused: %s\n", errs);
        /* The original goes on as if nothing happened. */
        if (EVP_EncryptUpdate(orig, a + l1, &l2, msg + 32, 32) != 1 ||
            EVP_EncryptFinal_ex(orig, a + l1 + l2, &r2) != 1 ||
            memcmp(a, ref, (size_t)(l1 + l2 + r2)) != 0)
            ct_fail("the original after a refused dup");
    }
    EVP_CIPHER_CTX_free(orig);
    EVP_CIPHER_CTX_free(copy);
    queue_clean("dup mid-operation");

    /* Re-init and re-key mid-operation cancel the running operation. */
    orig = ctx_init(h, &raw, iv, 16, 1);
    if (orig == NULL || EVP_EncryptUpdate(orig, a, &l1, msg, 48) != 1 ||
        EVP_EncryptInit_ex2(orig, NULL, NULL, iv, NULL) != 1 ||
        EVP_EncryptUpdate(orig, a, &l1, msg, sizeof(msg)) != 1 ||
        EVP_EncryptFinal_ex(orig, a + l1, &l2) != 1 ||
        memcmp(a, ref, (size_t)(l1 + l2)) != 0)
        ct_fail("re-init mid-operation");
    key[0] ^= 1;
    if (orig == NULL || EVP_EncryptUpdate(orig, a, &l1, msg, 48) != 1 ||
        EVP_EncryptInit_ex2(orig, NULL, key, iv, NULL) != 1 ||
        EVP_EncryptUpdate(orig, a, &l1, msg, sizeof(msg)) != 1 ||
        EVP_EncryptFinal_ex(orig, a + l1, &l2) != 1 ||
        memcmp(a, ref, (size_t)(l1 + l2)) == 0)
        ct_fail("re-key mid-operation");
    EVP_CIPHER_CTX_free(orig);
    queue_clean("re-init");
    EVP_CIPHER_free(h);
    EVP_CIPHER_free(s);
    return ct_result("dup");
}

/* ---- threads --------------------------------------------------------------- */

static int per_thread = 60;

struct thread_arg {
    int id;
    EVP_CIPHER *hsm[4], *soft[4];
    unsigned char key[32];
};

static void *stream_thread(void *varg)
{
    struct thread_arg *t = varg;
    static const char uri[] = "pkcs11:token=demo;object=kat256";
    keyspec tok = {NULL, 0, uri}, raw = {t->key, 32, NULL};
    unsigned char *msg = malloc(70000), *ho = malloc(70100), *so = malloc(70100);
    unsigned int seed = (unsigned int)t->id * 7919u;

    for (int i = 0; i < per_thread && ct_failures() < 10 && msg && ho && so; i++) {
        int mode = (t->id + i) % 4;
        size_t len = 1 + (size_t)rand_r(&seed) % 65000;
        unsigned char iv[16];
        EVP_CIPHER_CTX *hc, *sc;
        size_t off = 0, total = 0;
        int hl, sl, ok = 1;

        ct_message(msg, len, t->id, i);
        memset(iv, 0, sizeof(iv));
        memcpy(iv, &t->id, sizeof(t->id));
        memcpy(iv + 8, &i, sizeof(i));
        hc = ctx_init(t->hsm[mode], &tok, iv, mode == GCM ? 12 : 16, 1);
        sc = ctx_init(t->soft[mode], &raw, iv, mode == GCM ? 12 : 16, 1);
        /* Update by update, random sizes: other threads' calls fall in
         * between, on their own sessions. */
        while (ok && hc != NULL && sc != NULL && off < len) {
            size_t n = 1 + (size_t)rand_r(&seed) % 9000;

            if (n > len - off)
                n = len - off;
            ok = EVP_EncryptUpdate(hc, ho + total, &hl, msg + off, (int)n) == 1 &&
                 EVP_EncryptUpdate(sc, so + total, &sl, msg + off, (int)n) == 1 &&
                 hl == sl && memcmp(ho + total, so + total, (size_t)hl) == 0;
            total += (size_t)hl;
            off += n;
            if (rand_r(&seed) % 4 == 0)
                sched_yield();
        }
        if (ok && hc != NULL && sc != NULL) {
            ok = EVP_EncryptFinal_ex(hc, ho + total, &hl) == 1 &&
                 EVP_EncryptFinal_ex(sc, so + total, &sl) == 1 && hl == sl &&
                 memcmp(ho + total, so + total, (size_t)hl) == 0;
            if (ok && mode == GCM) {
                unsigned char ht[16], st[16];

                ok = EVP_CIPHER_CTX_ctrl(hc, EVP_CTRL_AEAD_GET_TAG, 16, ht) > 0 &&
                     EVP_CIPHER_CTX_ctrl(sc, EVP_CTRL_AEAD_GET_TAG, 16, st) > 0 &&
                     memcmp(ht, st, 16) == 0;
            }
        }
        if (!ok || hc == NULL || sc == NULL)
            ct_fail("thread %d message %d (%s, %zu bytes): output differs from software",
                    t->id, i, mode_names[mode], len);
        else if (ERR_peek_error() != 0)
            ct_fail("thread %d: stale error after a good message", t->id);
        EVP_CIPHER_CTX_free(hc);
        EVP_CIPHER_CTX_free(sc);
    }
    free(msg);
    free(ho);
    free(so);
    OPENSSL_thread_stop();
    return NULL;
}

static int run_threads(int nthreads)
{
    pthread_t tid[64];
    struct thread_arg args[64];

    ct_watchdog(240, "cipher threads");
    for (int i = 0; i < nthreads; i++) {
        args[i].id = i;
        unhex(kat_keys[2], args[i].key);
        for (int m = 0; m < 4; m++) {
            args[i].hsm[m] = fetch(m, 256, "hsmprov");
            args[i].soft[m] = fetch(m, 256, "default");
        }
    }
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&tid[i], NULL, stream_thread, &args[i]) != 0)
            ct_fail("pthread_create");
    for (int i = 0; i < nthreads; i++)
        pthread_join(tid[i], NULL);
    for (int i = 0; i < nthreads; i++)
        for (int m = 0; m < 4; m++) {
            EVP_CIPHER_free(args[i].hsm[m]);
            EVP_CIPHER_free(args[i].soft[m]);
        }
    printf("threads: %d threads x %d messages on one token key\n", nthreads, per_thread);
    if (have_shim)
        ct_shim_clean(&shim, "threads");
    ct_watchdog(0, NULL);
    return ct_result("threads");
}

/* ---- abandon ---------------------------------------------------------------- */

static int run_abandon(int n)
{
    unsigned char key[32], iv[16], msg[4096], out[4200];
    EVP_CIPHER *h[4];
    keyspec raw = {key, 32, NULL}, tok = {NULL, 0, "pkcs11:token=demo;object=kat256"};
    EVP_CIPHER_CTX *held[3];
    int l;
    char errs[1024];

    ct_watchdog(120, "abandoned contexts");
    RAND_bytes(key, sizeof(key));
    RAND_bytes(iv, sizeof(iv));
    RAND_bytes(msg, sizeof(msg));
    for (int m = 0; m < 4; m++)
        h[m] = fetch(m, 256, "hsmprov");
    /* Abandoned mid-stream (and, for padded CBC decryption, with a block
     * held back), in every mode, with raw and token keys. */
    for (int i = 0; i < n; i++) {
        int mode = i % 4;
        EVP_CIPHER_CTX *c =
            ctx_init(h[mode], i % 3 ? &raw : &tok, iv, mode == GCM ? 12 : 16, i % 2);

        if (c == NULL || EVP_CipherUpdate(c, out, &l, msg, 1000 + i % 77) != 1)
            ct_fail("abandoned context %d: update", i);
        EVP_CIPHER_CTX_free(c);
    }
    queue_clean("abandoned contexts");
    printf("abandon: %d contexts freed mid-operation\n", n);
    /* The pool is whole: as many contexts as it has sessions run at once. */
    for (int i = 0; i < 2; i++) {
        held[i] = ctx_init(h[CBC], &raw, iv, 16, 1);
        if (held[i] == NULL || EVP_EncryptUpdate(held[i], out, &l, msg, 100) != 1)
            ct_fail("context %d of 2 after the abandoned ones", i);
    }
    /* This thread holds every lease: one more fails at once (DESIGN §2.6). */
    held[2] = ctx_init(h[CBC], &raw, iv, 16, 1);
    if (held[2] != NULL && EVP_EncryptUpdate(held[2], out, &l, msg, 100) == 1)
        ct_fail("a third context ran with a pool of 2 held by this thread");
    ct_errors(errs, sizeof(errs));
    if (strstr(errs, "POOL") == NULL && strstr(errs, "pool") == NULL)
        ct_fail("the exhausted pool's error does not say so: %s", errs);
    else
        printf("abandon: a third context with both leases held: %s\n", errs);
    /* Finishing one frees its lease for the third. */
    if (held[0] != NULL && EVP_EncryptFinal_ex(held[0], out, &l) != 1)
        ct_fail("final of a held context");
    if (held[2] != NULL && (EVP_EncryptInit_ex2(held[2], NULL, NULL, iv, NULL) != 1 ||
                            EVP_EncryptUpdate(held[2], out, &l, msg, 100) != 1 ||
                            EVP_EncryptFinal_ex(held[2], out, &l) != 1))
        ct_fail("the third context once a lease was free");
    for (int i = 0; i < 3; i++)
        EVP_CIPHER_CTX_free(held[i]);
    queue_clean("after the pool test");
    for (int m = 0; m < 4; m++)
        EVP_CIPHER_free(h[m]);
    if (have_shim) {
        ct_shim_clean(&shim, "abandon");
        printf("abandon: sessions open in the shim: %lu\n", shim.open_sessions());
    }
    ct_watchdog(0, NULL);
    return ct_result("abandon");
}

/* ---- GCM on a token that does it in one call only (P11SHIM_GCM_ONE_PART) ---- */

static int one_message(EVP_CIPHER_CTX *hc, EVP_CIPHER *soft, const unsigned char *key,
                       const unsigned char *iv, const char *what);

/* hsmprov's GCM encryption of pt in `parts` updates, with aad; compared with
 * the default provider's (ciphertext and tag). */
static void gcm_one_part_encrypt(EVP_CIPHER *hsm, EVP_CIPHER *soft, const keyspec *k,
                                 const unsigned char *key, const unsigned char *iv,
                                 const unsigned char *aad, size_t aadlen,
                                 const unsigned char *pt, size_t len, int parts,
                                 const char *what)
{
    unsigned char hc[300], sc[300], ht[16], st[16];
    keyspec raw = {key, 32, NULL};
    EVP_CIPHER_CTX *h = ctx_init(hsm, k, iv, 12, 1), *s = ctx_init(soft, &raw, iv, 12, 1);
    int hl = 0, sl = 0, l, tmp, ok;
    size_t off = 0;

    ok = h != NULL && s != NULL &&
         (aadlen == 0 || (EVP_EncryptUpdate(h, NULL, &tmp, aad, (int)aadlen) == 1 &&
                          EVP_EncryptUpdate(s, NULL, &tmp, aad, (int)aadlen) == 1));
    for (int i = 0; ok && i < parts; i++) {
        size_t n = i == parts - 1 ? len - off : len / (size_t)parts;

        ok = EVP_EncryptUpdate(h, hc + hl, &l, pt + off, (int)n) == 1 && l == (int)n;
        hl += l;
        off += n;
    }
    ok = ok && EVP_EncryptFinal_ex(h, hc + hl, &l) == 1 && l == 0 &&
         EVP_CIPHER_CTX_ctrl(h, EVP_CTRL_AEAD_GET_TAG, 16, ht) > 0 &&
         EVP_EncryptUpdate(s, sc, &sl, pt, (int)len) == 1 &&
         EVP_EncryptFinal_ex(s, sc + sl, &l) == 1 &&
         EVP_CIPHER_CTX_ctrl(s, EVP_CTRL_AEAD_GET_TAG, 16, st) > 0;
    if (!ok)
        ct_fail("GCM encryption %s", what);
    else if ((size_t)hl != len || memcmp(hc, sc, len) != 0 || memcmp(ht, st, 16) != 0)
        ct_fail("GCM encryption %s: not what the default provider makes", what);
    EVP_CIPHER_CTX_free(h);
    EVP_CIPHER_CTX_free(s);
}

/* NSS's softokn does AES-GCM in one call only: C_EncryptUpdate answers
 * CKR_OPERATION_NOT_INITIALIZED and the operation stays active. hsmprov does
 * GCM in one call there, and the session it used never goes back to the
 * pool with the operation running: with one session in the pool, the next,
 * unrelated cipher would meet CKR_OPERATION_ACTIVE. With the shim, raw keys
 * and the token keys of tests/lib/cipher_keys.sh; without (NSS's softokn
 * itself, tests/nss.sh), raw keys only. */
static int run_gcm_one_part(void)
{
    unsigned char key[32], katkey[32], iv[12], cbciv[16], aad[20], pt[300], ct[300],
        tag[16];
    EVP_CIPHER *hsm = fetch(GCM, 256, "hsmprov"), *soft = fetch(GCM, 256, "default");
    EVP_CIPHER *cbc = fetch(CBC, 256, "hsmprov"), *scbc = fetch(CBC, 256, "default");
    keyspec raw = {key, 32, NULL}, tok = {NULL, 0, "pkcs11:token=demo;object=gcm256"};
    keyspec kat = {NULL, 0, "pkcs11:token=demo;object=kat256"};
    keyspec cbcraw = {katkey, 32, NULL};
    EVP_CIPHER_CTX *ctx, *cc;
    int l1, l2, tmp;

    if (hsm == NULL || soft == NULL || cbc == NULL || scbc == NULL)
        return ct_result("gcm_one_part");
    unhex(gcm_keys[2], key);
    if (have_shim)
        unhex(kat_keys[2], katkey);
    else
        RAND_bytes(katkey, sizeof(katkey));
    RAND_bytes(iv, sizeof(iv));
    RAND_bytes(cbciv, sizeof(cbciv));
    RAND_bytes(aad, sizeof(aad));
    RAND_bytes(pt, sizeof(pt));
    cc = ctx_init(cbc, have_shim ? &kat : &cbcraw, cbciv, 16, 1);
    if (cc == NULL)
        return ct_result("gcm_one_part");
    for (int kk = 0; kk < (have_shim ? 2 : 1); kk++) {
        const keyspec *k = kk ? &tok : &raw;

        gcm_one_part_encrypt(hsm, soft, k, key, iv, aad, sizeof(aad), pt, sizeof(pt), 1,
                             kk ? "(token key, one update)" : "(raw key, one update)");
        one_message(cc, scbc, katkey, cbciv, "CBC after GCM refused in parts");
        gcm_one_part_encrypt(hsm, soft, k, key, iv, aad, sizeof(aad), pt, sizeof(pt), 3,
                             kk ? "(token key, 3 updates)" : "(raw key, 3 updates)");
        gcm_one_part_encrypt(hsm, soft, k, key, iv, NULL, 0, pt, 0, 1,
                             kk ? "(token key, empty)" : "(raw key, empty)");
        queue_clean("GCM encryption in one part");

        ctx = ctx_init(soft, &raw, iv, 12, 1);
        EVP_EncryptUpdate(ctx, NULL, &tmp, aad, sizeof(aad));
        EVP_EncryptUpdate(ctx, ct, &l1, pt, sizeof(pt));
        EVP_EncryptFinal_ex(ctx, ct + l1, &l2);
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
        EVP_CIPHER_CTX_free(ctx);
        if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), tag, 16, pt) !=
            1)
            ct_fail("GCM decryption in one part: a good message does not decrypt");
        queue_clean("GCM decryption in one part");
        one_message(cc, scbc, katkey, cbciv, "CBC after GCM decryption");
        tag[0] ^= 1;
        if (gcm_decrypts(hsm, k, iv, 12, aad, sizeof(aad), ct, sizeof(pt), tag, 16,
                         NULL) != 0)
            ct_fail("GCM decryption in one part: a wrong tag is accepted");
        ERR_clear_error();
        one_message(cc, scbc, katkey, cbciv, "CBC after a GCM tag refused");
    }
    if (have_shim &&
        ct_shim_count_rv(&shim, "C_EncryptUpdate", CKR_OPERATION_NOT_INITIALIZED) == 0)
        ct_fail("the shim never refused GCM in parts: P11SHIM_GCM_ONE_PART unset?");
    queue_clean("gcm_one_part");
    EVP_CIPHER_CTX_free(cc);
    EVP_CIPHER_free(hsm);
    EVP_CIPHER_free(soft);
    EVP_CIPHER_free(cbc);
    EVP_CIPHER_free(scbc);
    if (have_shim)
        ct_shim_clean(&shim, "gcm_one_part");
    return ct_result("gcm_one_part");
}

/* ---- recover and fork ------------------------------------------------------ */

/* One CBC message with ctx re-initialised with iv, checked against software. */
static int one_message(EVP_CIPHER_CTX *hc, EVP_CIPHER *soft, const unsigned char *key,
                       const unsigned char *iv, const char *what)
{
    unsigned char msg[200], ho[300], so[300];
    keyspec raw = {key, 32, NULL};
    EVP_CIPHER_CTX *sc = ctx_init(soft, &raw, iv, 16, 1);
    int h1 = 0, h2 = 0, s1 = 0, s2 = 0, ok;

    ct_message(msg, sizeof(msg), 99, 1);
    ok = sc != NULL && EVP_EncryptInit_ex2(hc, NULL, NULL, iv, NULL) == 1 &&
         EVP_EncryptUpdate(hc, ho, &h1, msg, sizeof(msg)) == 1 &&
         EVP_EncryptFinal_ex(hc, ho + h1, &h2) == 1 &&
         EVP_EncryptUpdate(sc, so, &s1, msg, sizeof(msg)) == 1 &&
         EVP_EncryptFinal_ex(sc, so + s1, &s2) == 1 && h1 + h2 == s1 + s2 &&
         memcmp(ho, so, (size_t)(h1 + h2)) == 0;
    EVP_CIPHER_CTX_free(sc);
    if (!ok)
        ct_fail("%s", what);
    return ok;
}

static int run_recover(void)
{
    unsigned char rawkey[32], katkey[32], iv[16];
    EVP_CIPHER *h = fetch(CBC, 256, "hsmprov"), *s = fetch(CBC, 256, "default");
    keyspec raw = {rawkey, 32, NULL}, tok = {NULL, 0, "pkcs11:token=demo;object=kat256"};
    EVP_CIPHER_CTX *rc, *tc;

    if (!have_shim) {
        ct_fail("recover needs the shim");
        return ct_result("recover");
    }
    RAND_bytes(rawkey, sizeof(rawkey));
    RAND_bytes(iv, sizeof(iv));
    unhex(kat_keys[2], katkey);
    rc = ctx_init(h, &raw, iv, 16, 1);
    tc = ctx_init(h, &tok, iv, 16, 1);
    if (rc == NULL || tc == NULL)
        return ct_result("recover");
    one_message(rc, s, rawkey, iv, "raw key before session loss");
    one_message(tc, s, katkey, iv, "token key before session loss");
    /* Every session dies; SoftHSM2 drops the login and the session objects
     * with them. */
    shim.invalidate_sessions();
    one_message(rc, s, rawkey, iv, "raw key after session loss (object made again)");
    one_message(tc, s, katkey, iv, "token key after session loss (found again)");
    queue_clean("recovery");
    shim.logout();
    one_message(rc, s, rawkey, iv, "raw key after logout");
    one_message(tc, s, katkey, iv, "token key after logout");
    queue_clean("recovery after logout");
    EVP_CIPHER_CTX_free(rc);
    EVP_CIPHER_CTX_free(tc);
    EVP_CIPHER_free(h);
    EVP_CIPHER_free(s);
    ct_shim_clean(&shim, "recover");
    return ct_result("recover");
}

static int run_fork(void)
{
    unsigned char rawkey[32], katkey[32], iv[16];
    EVP_CIPHER *s = fetch(CBC, 256, "default"), *hc = fetch(CBC, 256, "hsmprov");
    keyspec raw = {rawkey, 32, NULL}, tok = {NULL, 0, "pkcs11:token=demo;object=kat256"};
    EVP_CIPHER_CTX *rc, *tc;
    pid_t pid;
    int status;

    RAND_bytes(rawkey, sizeof(rawkey));
    RAND_bytes(iv, sizeof(iv));
    unhex(kat_keys[2], katkey);
    rc = ctx_init(hc, &raw, iv, 16, 1);
    tc = ctx_init(hc, &tok, iv, 16, 1);
    if (rc == NULL || tc == NULL)
        return ct_result("fork");
    one_message(rc, s, rawkey, iv, "parent, raw key, before fork");
    one_message(tc, s, katkey, iv, "parent, token key, before fork");
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        /* The child: the parent's sessions and objects are not ours. */
        one_message(rc, s, rawkey, iv, "child, raw key");
        one_message(tc, s, katkey, iv, "child, token key");
        queue_clean("child");
        EVP_CIPHER_CTX_free(rc);
        EVP_CIPHER_CTX_free(tc);
        _exit(ct_failures() == 0 ? 0 : 1);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        ct_fail("the child failed");
    one_message(rc, s, rawkey, iv, "parent, raw key, after fork");
    one_message(tc, s, katkey, iv, "parent, token key, after fork");
    queue_clean("parent after fork");
    EVP_CIPHER_CTX_free(rc);
    EVP_CIPHER_CTX_free(tc);
    EVP_CIPHER_free(hc);
    EVP_CIPHER_free(s);
    return ct_result("fork");
}

/* The module's own AES inside its calls. SoftHSM2 uses OpenSSL: with
 * hsmprov preferred (here set after the random generator is up, so that it
 * does not take hsmprov's AES), the AES it uses inside C_Login comes to
 * hsmprov; hsmprov must not call the token from there (a deadlock) but hand
 * it to the default provider. */
static int run_nested(void)
{
    unsigned char katkey[32], iv[16], b[16];
    EVP_CIPHER *h = fetch(CBC, 256, "hsmprov"), *s = fetch(CBC, 256, "default");
    keyspec tok = {NULL, 0, "pkcs11:token=demo;object=kat256"};
    EVP_CIPHER_CTX *tc;

    ct_watchdog(60, "nested use");
    RAND_bytes(b, sizeof(b));
    RAND_bytes(iv, sizeof(iv));
    unhex(kat_keys[2], katkey);
    if (h == NULL || s == NULL)
        return ct_result("nested");
    if (!EVP_set_default_properties(NULL, "?provider=hsmprov")) {
        ct_fail("EVP_set_default_properties");
        return ct_result("nested");
    }
    /* hsmprov's first use: the module is loaded and logged in now, with
     * hsmprov preferred. SoftHSM2 derives its key store key and decrypts it
     * with AES inside C_Login. */
    tc = ctx_init(h, &tok, iv, 16, 1);
    if (tc != NULL)
        one_message(tc, s, katkey, iv, "token key with hsmprov preferred");
    EVP_CIPHER_CTX_free(tc);
    EVP_set_default_properties(NULL, "");
    if (!ct_shim(&shim))
        return ct_result("nested");
    have_shim = 1;
    if (shim.call_count("C_Login") == 0)
        ct_fail("no C_Login happened: the nested case was not exercised");
    queue_clean("nested use");
    EVP_CIPHER_free(h);
    EVP_CIPHER_free(s);
    ct_shim_clean(&shim, "nested");
    ct_watchdog(0, NULL);
    return ct_result("nested");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    int rc;

    if (!ct_init())
        return 1;
    /* The shim, when the provider loaded it (tests/cipher.sh does). The
     * nested test wants hsmprov's first use for itself. */
    if (getenv("HSMPROV_SHIM") != NULL && strcmp(mode, "nested") != 0) {
        EVP_CIPHER *c = fetch(ECB, 128, "hsmprov");
        unsigned char k[16] = {0}, o[32];
        EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
        int l;

        /* Load the module (it loads lazily) so that the shim is there. */
        if (x == NULL || EVP_EncryptInit_ex2(x, c, k, NULL, NULL) != 1 ||
            EVP_EncryptUpdate(x, o, &l, k, 16) != 1)
            ct_fail("first use of hsmprov");
        EVP_CIPHER_CTX_free(x);
        EVP_CIPHER_free(c);
        have_shim = ct_shim(&shim);
    }
    if (strcmp(mode, "kat") == 0)
        rc = run_kat();
    else if (strcmp(mode, "chunks") == 0)
        rc = run_chunks();
    else if (strcmp(mode, "gcm") == 0)
        rc = run_gcm();
    else if (strcmp(mode, "params") == 0)
        rc = run_params();
    else if (strcmp(mode, "dup") == 0)
        rc = run_dup();
    else if (strcmp(mode, "threads") == 0)
        rc = run_threads(argc > 2 ? atoi(argv[2]) : 8);
    else if (strcmp(mode, "abandon") == 0)
        rc = run_abandon(argc > 2 ? atoi(argv[2]) : 200);
    else if (strcmp(mode, "gcm_one_part") == 0)
        rc = run_gcm_one_part();
    else if (strcmp(mode, "recover") == 0)
        rc = run_recover();
    else if (strcmp(mode, "fork") == 0)
        rc = run_fork();
    else if (strcmp(mode, "nested") == 0)
        rc = run_nested();
    else {
        fprintf(stderr,
                "usage: cipher_aes kat|chunks|gcm|params|dup|threads [N]|abandon [N]|"
                "gcm_one_part|recover|fork|nested\n");
        return 2;
    }
    return rc;
}
