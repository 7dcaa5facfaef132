/* Text output of token keys (`openssl pkey -text`, `storeutl -text`,
 * EVP_PKEY_print_*): the public part as OpenSSL prints it, and for a
 * private key a line saying that its private part is in the token, with the
 * URI a user can copy to name the key. Without this encoder OpenSSL asks the
 * default provider's, which needs an export the key refuses, and
 * `pkey -text` exits 1 without a word. */
#include "hp_provider.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <stdlib.h>

static OSSL_FUNC_encoder_newctx_fn text_newctx;
static OSSL_FUNC_encoder_freectx_fn text_freectx;
static OSSL_FUNC_encoder_does_selection_fn text_does_selection;
static OSSL_FUNC_encoder_encode_fn text_encode;

static void *text_newctx(void *provctx)
{
    return provctx;
}

static void text_freectx(void *vctx)
{
}

static int text_does_selection(void *vctx, int selection)
{
    return (selection &
            (OSSL_KEYMGMT_SELECT_KEYPAIR | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS)) != 0;
}

/* The key's URI with the token's whole identity (as in its key file), or
 * the short one when the key has neither label nor id to name it by. */
static void print_uri(BIO *mem, const p11_key *pk)
{
    char *uri = NULL;

    if ((pk->label != NULL && *pk->label != '\0') || pk->id_len > 0)
        uri = p11_uri_format_kept(&pk->tok->info, pk->label, pk->id, pk->id_len, pk->cls);
    BIO_printf(mem, "URI: %s\n", uri != NULL ? uri : pk->name);
    free(uri);
}

static int text_encode(void *vctx, OSSL_CORE_BIO *out, const void *obj_raw,
                       const OSSL_PARAM obj_abstract[], int selection,
                       OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)
{
    hp_provctx *pctx = vctx;
    const hp_key *k = obj_raw;
    int private =
        k != NULL && k->p11 != NULL && !k->public_only && k->p11->cls == CKO_PRIVATE_KEY;
    BIO *mem = BIO_new(BIO_s_mem());
    EVP_PKEY *pub = NULL;
    char *data;
    long len;
    int ok = 0;

    if (k == NULL || mem == NULL)
        goto end;
    if (private && (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY))
        BIO_printf(mem,
                   "Private-Key: (%d bit), in the token: the private part is not "
                   "shown\n",
                   k->bits);
    if (k->p11 != NULL)
        print_uri(mem, k->p11);
    pub = hp_key_public_pkey(k);
    if (pub == NULL) {
        hp_raise(pctx, HP_R_NOT_FOUND,
                 "the public part of %s is not known (no public key object on the "
                 "token)",
                 k->p11 != NULL ? k->p11->name : "the key");
        goto end;
    }
    if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
        ok = EVP_PKEY_print_public(mem, pub, 0, NULL) > 0;
    else
        ok = EVP_PKEY_print_params(mem, pub, 0, NULL) > 0;
    len = BIO_get_mem_data(mem, &data);
    ok = ok && len > 0 && hp_core_write(pctx, out, data, (size_t)len);
end:
    EVP_PKEY_free(pub);
    BIO_free(mem);
    return ok;
}

const OSSL_DISPATCH hp_text_encoder_functions[] = {
    {OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))text_newctx},
    {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))text_freectx},
    {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))text_does_selection},
    {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))text_encode},
    {0, NULL},
};
