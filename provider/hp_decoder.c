/* Decoders for key files that refer to a token key (hp_uri_pem.h):
 * PEM_read_bio_PrivateKey, OSSL_DECODER, d2i_PrivateKey and every
 * `openssl … -key file.pem` read such a file as the token key.
 *
 * Two steps, as OpenSSL's own decoders go: PEM with our label to DER, with
 * the structure named HP_URI_FILE_STRUCTURE, then that DER to a key.
 * OpenSSL 3.0's own PEM decoder hands DER under a label it does not know on
 * with the label as its data type, which no key decoder answers to; ours
 * names the structure instead. Both steps decline (return 1 having called
 * nothing) whatever is not exactly ours, so that ordinary keys stay with the
 * default provider. The DER step has one decoder per key type, since a
 * decoder is named by the key type it makes: the one for the type the token
 * says the key has claims it. Once the structure is ours, a bad version
 * string, a PIN in the URI or a key that is not there is an error
 * (return 0), which ends OpenSSL's search with our message.
 *
 * The key found is handed back by reference, in the form hp_keymgmt.c's
 * load takes ({p11_key *, hp_provctx *, public only}, as hp_store.c does). */
#include "hp_provider.h"
#include "hp_uri_pem.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A key file is a few hundred bytes; anything much larger is not ours. */
#define MAX_KEY_FILE 16384

static OSSL_FUNC_decoder_newctx_fn dec_pem_newctx;
static OSSL_FUNC_decoder_freectx_fn dec_pem_freectx;
static OSSL_FUNC_decoder_decode_fn dec_pem_decode;
static OSSL_FUNC_decoder_newctx_fn dec_rsa_newctx, dec_ec_newctx, dec_ed25519_newctx;
static OSSL_FUNC_decoder_freectx_fn dec_freectx;
static OSSL_FUNC_decoder_does_selection_fn dec_does_selection;
static OSSL_FUNC_decoder_decode_fn dec_decode;

typedef struct dec_ctx {
    hp_provctx *pctx;
    const char *type; /* hp_key_type_name of the keys this decoder makes */
} dec_ctx;

static void *dec_new(void *provctx, const char *type)
{
    dec_ctx *c = calloc(1, sizeof(*c));

    if (c != NULL) {
        c->pctx = provctx;
        c->type = type;
    }
    return c;
}

static void *dec_rsa_newctx(void *provctx)
{
    return dec_new(provctx, "RSA");
}

static void *dec_ec_newctx(void *provctx)
{
    return dec_new(provctx, "EC");
}

static void *dec_ed25519_newctx(void *provctx)
{
    return dec_new(provctx, "ED25519");
}

static void dec_freectx(void *vctx)
{
    free(vctx);
}

static int dec_does_selection(void *vctx, int selection)
{
    return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

/* All of in, up to MAX_KEY_FILE bytes; 0 when larger or unreadable. */
static int read_all(hp_provctx *pctx, OSSL_CORE_BIO *in, unsigned char **out, size_t *len)
{
    BIO *b = BIO_new_from_core_bio(pctx->libctx, in);
    unsigned char *buf = malloc(MAX_KEY_FILE + 1);
    size_t n = 0, got;

    while (b != NULL && buf != NULL && n <= MAX_KEY_FILE &&
           BIO_read_ex(b, buf + n, MAX_KEY_FILE + 1 - n, &got) && got > 0)
        n += got;
    BIO_free(b);
    if (buf == NULL || n == 0 || n > MAX_KEY_FILE) {
        free(buf);
        return 0;
    }
    *out = buf;
    *len = n;
    return 1;
}

/* The first key of class cls the URI names, on the first token (in slot
 * order) that has one; logs in first for a private key. */
static CK_RV find_key(hp_provctx *pctx, p11_module *m, const p11_uri *uri,
                      CK_OBJECT_CLASS cls, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                      void *pw_cbarg, p11_key **out)
{
    static CK_BBOOL on_token = CK_TRUE;
    p11_token **toks = NULL;
    size_t ntok = 0;
    CK_ATTRIBUTE *attrs, *tmpl;
    CK_ULONG nattrs, n;
    CK_RV rv;

    *out = NULL;
    rv = p11_token_list_matching(m, uri, &toks, &ntok);
    if (rv != CKR_OK)
        return rv;
    attrs = p11_uri_object_attrs(uri, &nattrs);
    tmpl = calloc(nattrs + 2, sizeof(*tmpl));
    if (tmpl == NULL) {
        free(toks);
        return p11_fail(CKR_HOST_MEMORY, "C_FindObjectsInit", "search for %s",
                        uri->shown);
    }
    if (nattrs > 0)
        memcpy(tmpl, attrs, nattrs * sizeof(*attrs));
    n = nattrs;
    if (!uri->has_class)
        tmpl[n++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    /* Token objects only: session objects are this process's own copies. */
    tmpl[n++] = (CK_ATTRIBUTE){CKA_TOKEN, &on_token, sizeof(on_token)};
    rv = CKR_OK;
    for (size_t i = 0; i < ntok && *out == NULL; i++) {
        CK_OBJECT_HANDLE *hs;
        CK_ULONG nh;

        if (cls == CKO_PRIVATE_KEY &&
            (rv = hp_login(pctx, toks[i], uri, pw_cb, pw_cbarg)) != CKR_OK)
            break;
        if ((rv = p11_find_objects(toks[i], tmpl, n, &hs, &nh)) != CKR_OK)
            break;
        if (nh > 0)
            rv = p11_key_load(toks[i], hs[0], out);
        free(hs);
        if (rv != CKR_OK)
            break;
    }
    free(tmpl);
    free(toks);
    if (rv == CKR_OK && *out == NULL)
        rv = p11_fail(P11_RV_NOT_FOUND, "C_FindObjects",
                      "the key file names %s, and no %s key on the token(s) matches it",
                      uri->shown, cls == CKO_PRIVATE_KEY ? "private" : "public");
    return rv;
}

static int hand_over(dec_ctx *c, p11_key *k, int public_only, OSSL_CALLBACK *data_cb,
                     void *data_cbarg)
{
    int type = OSSL_OBJECT_PKEY;
    void *ref[3] = {k, c->pctx, (void *)(intptr_t)public_only};
    OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_OBJECT_PARAM_TYPE, &type),
        OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)c->type, 0),
        OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_REFERENCE, ref, sizeof(ref)),
        OSSL_PARAM_END,
    };

    params[1].data_size = strlen(c->type);
    /* The reference is valid during the callback only: keymgmt's load
     * takes its own reference to k. */
    return data_cb(params, data_cbarg);
}

/* The type of the key a key file named, last time this thread looked it up:
 * OpenSSL offers one file to each of our per-type decoders in turn (and
 * first to the PEM step), and a token search for each of them made loading
 * a key file several times slower than loading its URI. Only the decision
 * "this file is for another decoder" is taken from here; the decoder that
 * claims the file always searches the token. Key files are small: larger
 * DER is not remembered. */
static _Thread_local struct {
    unsigned char der[1024];
    size_t len;
    const char *type;
} last_file;

static void remember_type(const unsigned char *der, size_t len, const char *type)
{
    if (len > sizeof(last_file.der))
        return;
    memcpy(last_file.der, der, len);
    last_file.len = len;
    last_file.type = type;
}

static int for_another_type(const unsigned char *der, size_t len, const char *type)
{
    return last_file.type != NULL && len == last_file.len &&
           memcmp(der, last_file.der, len) == 0 && strcmp(last_file.type, type) != 0;
}

/* The key a key file's DER names. 1: found (*out, *public_only set); -1:
 * not our structure (nothing raised); 0: ours but unusable (raised). */
static int resolve(hp_provctx *pctx, const unsigned char *der, size_t der_len,
                   int selection, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg,
                   p11_key **out, int *public_only)
{
    char *text = NULL;
    p11_uri *uri = NULL;
    p11_module *m;
    CK_OBJECT_CLASS cls;
    int ret = 0, st;
    CK_RV rv;

    *out = NULL;
    st = hp_uri_file_parse(der, der_len, &text);
    if (st == HP_URI_FILE_NOT_OURS)
        return -1;
    if (st == HP_URI_FILE_BAD_VERSION) {
        hp_raise(pctx, HP_R_UNSUPPORTED,
                 "a PKCS#11 URI key file of another version: hsmprov reads version "
                 "\"%s\" only",
                 HP_URI_FILE_VERSION);
        return 0;
    }
    rv = p11_uri_parse(text, &uri);
    if (rv != CKR_OK) {
        hp_raise_p11(pctx, rv);
        goto end;
    }
    /* A file is copied, backed up and read by others: the PIN belongs in
     * the configuration, a pin-source file or the prompt, never in it. */
    if (uri->pin_value != NULL) {
        hp_raise(pctx, HP_R_URI,
                 "the key file's URI %s holds a pin-value: a key file must not carry "
                 "a PIN; remove it and give the PIN by pin-source, the configuration "
                 "or the prompt",
                 uri->shown);
        goto end;
    }
    if (uri->has_class && uri->cls != CKO_PRIVATE_KEY && uri->cls != CKO_PUBLIC_KEY) {
        hp_raise(pctx, HP_R_KEY_TYPE, "the key file's URI %s names no key", uri->shown);
        goto end;
    }
    cls = uri->has_class ? uri->cls : CKO_PRIVATE_KEY;
    if ((m = hp_module(pctx)) == NULL) /* raised there */
        goto end;
    rv = find_key(pctx, m, uri, cls, pw_cb, pw_cbarg, out);
    if (rv != CKR_OK) {
        hp_raise_p11(pctx, rv);
        goto end;
    }
    if (hp_key_type_name(*out) == NULL) {
        hp_raise(pctx, HP_R_UNSUPPORTED, "%s: key type 0x%lx is not supported",
                 (*out)->name, (unsigned long)(*out)->type);
        p11_key_free(*out);
        *out = NULL;
        goto end;
    }
    *public_only =
        cls == CKO_PUBLIC_KEY || !(selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY);
    remember_type(der, der_len, hp_key_type_name(*out));
    ret = 1;
end:
    p11_uri_free(uri);
    OPENSSL_free(text);
    return ret;
}

static int dec_decode(void *vctx, OSSL_CORE_BIO *cin, int selection,
                      OSSL_CALLBACK *data_cb, void *data_cbarg,
                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    dec_ctx *c = vctx;
    unsigned char *der = NULL;
    size_t der_len;
    p11_key *k = NULL;
    int ok, public_only = 0;

    if (!read_all(c->pctx, cin, &der, &der_len))
        return 1;
    if (for_another_type(der, der_len, c->type)) {
        free(der);
        return 1;
    }
    ok = resolve(c->pctx, der, der_len, selection, pw_cb, pw_cbarg, &k, &public_only);
    free(der);
    if (ok < 0)
        return 1;
    /* Another of our decoders makes keys of other types. */
    if (ok > 0 && strcmp(hp_key_type_name(k), c->type) == 0)
        ok = hand_over(c, k, public_only, data_cb, data_cbarg);
    p11_key_free(k);
    return ok;
}

/* PEM to DER: one PEM block, read as far as its end line only (a file may
 * hold more objects after it, such as a certificate). */
static void *dec_pem_newctx(void *provctx)
{
    return provctx;
}

static void dec_pem_freectx(void *vctx)
{
}

static int dec_pem_decode(void *vctx, OSSL_CORE_BIO *cin, int selection,
                          OSSL_CALLBACK *data_cb, void *data_cbarg,
                          OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    hp_provctx *pctx = vctx;
    BIO *in = BIO_new_from_core_bio(pctx->libctx, cin);
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long len = 0;
    int ok = 1;

    if (in != NULL && PEM_read_bio(in, &name, &header, &der, &len) > 0 &&
        strcmp(name, HP_URI_PEM_LABEL) == 0) {
        p11_key *k = NULL;
        int public_only, st;
        OSSL_PARAM params[] = {
            OSSL_PARAM_octet_string(OSSL_OBJECT_PARAM_DATA, der, (size_t)len),
            OSSL_PARAM_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                   (char *)HP_URI_FILE_STRUCTURE,
                                   sizeof(HP_URI_FILE_STRUCTURE) - 1),
            OSSL_PARAM_END,
        };
        /* The key is looked for here already, although the DER step finds
         * it again: OSSL_STORE's file loader drops the errors of that step,
         * and these are the ones the user must read. */
        st =
            resolve(pctx, der, (size_t)len, selection, pw_cb, pw_cbarg, &k, &public_only);
        p11_key_free(k);
        if (st < 0)
            hp_raise(pctx, HP_R_BAD_PARAM,
                     "a \"%s\" PEM block that does not hold a key file's structure",
                     HP_URI_PEM_LABEL);
        ok = st > 0 && data_cb(params, data_cbarg);
    }
    BIO_free(in);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    return ok;
}

const OSSL_DISPATCH hp_urifile_pem_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_pem_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_pem_freectx},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))dec_pem_decode},
    {0, NULL},
};

#define DECODER(name, newfn)                                                             \
    const OSSL_DISPATCH name[] = {                                                       \
        {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))newfn},                               \
        {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx},                        \
        {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))dec_does_selection},          \
        {OSSL_FUNC_DECODER_DECODE, (void (*)(void))dec_decode},                          \
        {0, NULL},                                                                       \
    }

DECODER(hp_rsa_urifile_decoder_functions, dec_rsa_newctx);
DECODER(hp_ec_urifile_decoder_functions, dec_ec_newctx);
DECODER(hp_ed25519_urifile_decoder_functions, dec_ed25519_newctx);
