/*
 * EVP_PKEY_copy_parameters from a token key: into an empty EVP_PKEY it
 * returns 1, and the copy has the key's domain parameters (for EC, its
 * curve), which compare equal to the token key's.
 *
 *   keyinfo_params URI [CURVE]
 *
 * CURVE: the group name the copy must have (EC keys). The provider comes
 * from OPENSSL_CONF (tests/keyinfo.sh writes it).
 */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/store.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what)
{
    fprintf(stderr, "FAIL: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

int main(int argc, char **argv)
{
    OSSL_STORE_CTX *st;
    OSSL_STORE_INFO *info;
    EVP_PKEY *key = NULL, *copy;
    char group[64];

    if (argc < 2)
        return fail("usage: keyinfo_params URI [CURVE]");
    st = OSSL_STORE_open(argv[1], NULL, NULL, NULL, NULL);
    if (st == NULL || !OSSL_STORE_expect(st, OSSL_STORE_INFO_PKEY))
        return fail("cannot open the URI");
    while (key == NULL && (info = OSSL_STORE_load(st)) != NULL) {
        key = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(st);
    if (key == NULL)
        return fail("no key loaded");

    ERR_clear_error();
    copy = EVP_PKEY_new();
    if (copy == NULL || EVP_PKEY_copy_parameters(copy, key) != 1)
        return fail("EVP_PKEY_copy_parameters from the token key");
    if (EVP_PKEY_parameters_eq(copy, key) != 1)
        return fail("the copied parameters differ from the key's");
    if (argc > 2) {
        if (!EVP_PKEY_get_utf8_string_param(copy, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                            sizeof(group), NULL))
            return fail("the copy has no group name");
        if (strcmp(group, argv[2]) != 0) {
            fprintf(stderr, "FAIL: group %s, expected %s\n", group, argv[2]);
            return 1;
        }
        if (EVP_PKEY_missing_parameters(copy))
            return fail("the copy still misses parameters");
    }
    EVP_PKEY_free(copy);
    EVP_PKEY_free(key);
    printf("PASS: parameters of %s copied\n", argv[1]);
    return 0;
}
