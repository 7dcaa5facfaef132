/* Unit tests of small parts of the core (src/), linked with it, no token:
 * return-value names, failure records and their escaping, secret memory.
 *
 *   unit_core CASE
 */
#include "p11_failure.h"
#include "unit_check.h"
#include "p11_names.h"
#include "p11_secmem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void names(void)
{
    CHECK(strcmp(p11_rv_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT") == 0, "PIN");
    CHECK(strcmp(p11_rv_name(CKR_OK), "CKR_OK") == 0, "OK");
    CHECK(strcmp(p11_rv_name(CKR_SESSION_HANDLE_INVALID), "CKR_SESSION_HANDLE_INVALID") ==
              0,
          "session");
    CHECK(p11_mech_name(CKM_ECDSA) != NULL &&
              strcmp(p11_mech_name(CKM_ECDSA), "CKM_ECDSA") == 0,
          "mechanism");
    /* A module's own vendor code has no name: it is shown in hex. */
    CHECK(p11_rv_name(CKR_VENDOR_DEFINED | 0x1234) == NULL, "vendor code named");
    CHECK(p11_rv_name(0x0badc0deUL) == NULL, "unknown code named");
}

/* Codes without a name are shown by value; a vendor code as the offset from
 * CKR_VENDOR_DEFINED its module documents, and in full. */
static void unnamed_shown(void)
{
    char buf[P11_RV_TEXT_MAX];

    CHECK(strcmp(p11_rv_text(CKR_PIN_INCORRECT, buf), "CKR_PIN_INCORRECT") == 0, "named");
    CHECK(strcmp(p11_rv_text(0xCE534351UL, buf),
                 "CKR_VENDOR_DEFINED+0x4e534351 (0xce534351)") == 0,
          "NSS vendor code");
    CHECK(strcmp(p11_rv_text(0x0badc0deUL, buf), "CKR 0xbadc0de") == 0, "unnamed code");
    CHECK(strlen(p11_rv_text(~0UL, buf)) < sizeof(buf), "largest value");
}

static void ours(void)
{
    CHECK(p11_rv_is_ours(P11_RV_NOT_FOUND) && p11_rv_is_ours(P11_RV_BAD_URI) &&
              p11_rv_is_ours(P11_RV_NEED_PIN) && p11_rv_is_ours(P11_RV_TIMEOUT),
          "our codes");
    CHECK(!p11_rv_is_ours(CKR_VENDOR_DEFINED) &&
              !p11_rv_is_ours(CKR_VENDOR_DEFINED | 1) &&
              !p11_rv_is_ours(CKR_GENERAL_ERROR),
          "a module's code taken for ours");
}

static void escaping(void)
{
    char big[2000];

    p11_fail(CKR_GENERAL_ERROR, "C_Test", "label \"%s\"",
             "a\nhsmprov: C_Login -> CKR_OK\x1b");
    CHECK(strcmp(p11_last_failure()->what,
                 "label \"a\\x0ahsmprov: C_Login -> CKR_OK\\x1b\"") == 0,
          "escaped: %s", p11_last_failure()->what);
    /* Long text is cut, never overruns, and stays terminated. */
    memset(big, '\n', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    p11_fail(CKR_GENERAL_ERROR, "C_Test", "%s", big);
    CHECK(strlen(p11_last_failure()->what) < sizeof(p11_last_failure()->what),
          "overlong failure text");
    CHECK(strncmp(p11_last_failure()->what, "\\x0a\\x0a", 8) == 0, "cut text escaped");
    p11_failure_clear();
    CHECK(p11_last_failure() == NULL, "cleared");
}

static void note(void)
{
    p11_failure_note(CKR_FUNCTION_NOT_SUPPORTED, "C_Sign", "module %s lacks C_Sign",
                     "m.so");
    p11_fail(CKR_FUNCTION_NOT_SUPPORTED, "C_Sign", "key %s", "k");
    CHECK(strcmp(p11_last_failure()->what, "module m.so lacks C_Sign; key k") == 0,
          "note leads: %s", p11_last_failure()->what);
    /* Used once: a later failure of the same call does not repeat it. */
    p11_fail(CKR_FUNCTION_NOT_SUPPORTED, "C_Sign", "key %s", "k");
    CHECK(strcmp(p11_last_failure()->what, "key k") == 0, "note repeated: %s",
          p11_last_failure()->what);
    /* Another call's failure does not take it. */
    p11_failure_note(CKR_FUNCTION_NOT_SUPPORTED, "C_Sign", "module lacks C_Sign");
    p11_fail(CKR_FUNCTION_NOT_SUPPORTED, "C_Decrypt", "key %s", "k");
    CHECK(strcmp(p11_last_failure()->what, "key k") == 0, "note on another call: %s",
          p11_last_failure()->what);
    p11_failure_clear();
}

/* The VmFlags of the mapping holding addr, from /proc/self/smaps. */
static int vm_flags(const void *addr, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;

        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
            strchr(line, '-') < strchr(line, ' '))
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, n, "%s", line + 8);
            fclose(f);
            return 1;
        }
    }
    fclose(f);
    return 0;
}

static void secmem(void)
{
    char *p = p11_secmem_dup("s3cr3t\0tail", 11), flags[600];

    CHECK(p != NULL, "no copy");
    if (p == NULL)
        return;
    CHECK(memcmp(p, "s3cr3t\0tail", 11) == 0 && p[11] == '\0', "copy differs");
    CHECK(vm_flags(p, flags, sizeof(flags)), "no mapping for the copy");
    CHECK(strstr(flags, " dd") != NULL, "not excluded from core dumps: %s", flags);
    p11_secmem_free(p);
    p11_secmem_free(NULL);
    p = p11_secmem_dup("", 0);
    CHECK(p != NULL && p[0] == '\0', "empty copy");
    p11_secmem_free(p);
}

static const unit_case cases[] = {
    {"names", names}, {"ours", ours},     {"escaping", escaping},
    {"note", note},   {"secmem", secmem}, {"unnamed_shown", unnamed_shown},
};

int main(int argc, char **argv)
{
    return unit_run("unit_core", cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
