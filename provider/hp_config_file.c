/* The names of the directives in this provider's section of openssl.cnf.
 *
 * OpenSSL 3.0's core hands a provider the value of a directive only when the
 * provider asks for it by name (OSSL_FUNC_CORE_GET_PARAMS); there is no way to
 * list what the section holds, so a mistyped name ("pkcs11-pool-sise") would
 * be ignored without a word. Here the section is read from the configuration
 * file itself, as OpenSSL found it: OPENSSL_CONF or the default file, the
 * "openssl_conf" section, its "providers" section, the entry that declared
 * this provider. The file is believed only if every directive hsmprov knows
 * has the same value there as the core gave us; otherwise (an application
 * that loaded another file, or another application section) the check is
 * skipped rather than guessed at. */
#include "hp_provider.h"

#include <openssl/conf.h>
#include <openssl/err.h>
#include <string.h>

static const char *get_string(const CONF *conf, const char *section, const char *name)
{
    const char *v;

    ERR_set_mark();
    v = NCONF_get_string(conf, section, name);
    ERR_pop_to_mark();
    return v;
}

/* The section that declared provname in the providers section, as OpenSSL's
 * provider_conf reads it: "identity" if set, else the entry's name after its
 * first dot. */
static const char *provider_section(const CONF *conf, const char *provname)
{
    const char *init, *providers, *identity, *dot, *name;
    STACK_OF(CONF_VALUE) * entries;

    if ((init = get_string(conf, NULL, "openssl_conf")) == NULL ||
        (providers = get_string(conf, init, "providers")) == NULL)
        return NULL;
    ERR_set_mark();
    entries = NCONF_get_section(conf, providers);
    ERR_pop_to_mark();
    for (int i = 0; i < sk_CONF_VALUE_num(entries); i++) {
        const CONF_VALUE *e = sk_CONF_VALUE_value(entries, i);

        identity = get_string(conf, e->value, "identity");
        if (identity != NULL)
            name = identity;
        else if ((dot = strchr(e->name, '.')) != NULL)
            name = dot + 1;
        else
            name = e->name;
        if (strcmp(name, provname) == 0)
            return e->value;
    }
    return NULL;
}

void hp_config_check_names(OSSL_LIB_CTX *libctx, const char *provname,
                           const char *const core_values[HP_D_COUNT], hp_conf_report *r)
{
    char *file;
    CONF *conf = NULL;
    const char *section;
    STACK_OF(CONF_VALUE) * entries;

    if (provname == NULL)
        return;
    ERR_set_mark();
    file = CONF_get1_default_config_file();
    if (file == NULL || *file == '\0' || (conf = NCONF_new_ex(libctx, NULL)) == NULL ||
        NCONF_load(conf, file, NULL) <= 0 ||
        (section = provider_section(conf, provname)) == NULL)
        goto done;
    for (size_t i = 0; i < HP_D_COUNT; i++) {
        const char *v = get_string(conf, section, hp_directives[i].name);

        if ((v == NULL) != (core_values[i] == NULL) ||
            (v != NULL && strcmp(v, core_values[i]) != 0))
            goto done;
    }
    entries = NCONF_get_section(conf, section);
    for (int i = 0; i < sk_CONF_VALUE_num(entries); i++)
        hp_conf_check_name(sk_CONF_VALUE_value(entries, i)->name, r);
done:
    NCONF_free(conf);
    OPENSSL_free(file);
    ERR_pop_to_mark();
}
