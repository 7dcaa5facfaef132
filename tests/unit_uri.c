/* Unit test of src/p11_uri.c and the failure text, linked with the core and
 * no token: what a URI parses to, what is refused, what a message shows. */
#include "p11_failure.h"
#include "p11_names.h"
#include "p11_uri.h"
#include "unit_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses text; expects success and the given shown form. */
static void parses_as(const char *text, const char *shown, const char *pin)
{
    p11_uri *u = NULL;
    CK_RV rv = p11_uri_parse(text, &u);

    CHECK(rv == CKR_OK, "%s: rv 0x%lx (%s)", text, (unsigned long)rv,
          p11_last_failure() ? p11_last_failure()->what : "");
    if (u == NULL)
        return;
    CHECK(strcmp(u->shown, shown) == 0, "%s: shown as %s, expected %s", text, u->shown,
          shown);
    if (pin == NULL)
        CHECK(u->pin_value == NULL, "%s: a pin-value where none was given", text);
    else
        CHECK(u->pin_value != NULL && strcmp(u->pin_value, pin) == 0, "%s: pin-value %s",
              text, u->pin_value ? u->pin_value : "(none)");
    p11_uri_free(u);
}

/* Parses text; expects P11_RV_BAD_URI with msg in the failure text, and the
 * failure text free of secret. */
static void refused(const char *text, const char *msg, const char *secret)
{
    p11_uri *u = NULL;
    CK_RV rv;
    const p11_failure *f;

    p11_failure_clear();
    rv = p11_uri_parse(text, &u);
    f = p11_last_failure();
    CHECK(rv == P11_RV_BAD_URI && u == NULL, "%s: accepted", text);
    CHECK(f != NULL && strstr(f->what, msg) != NULL, "%s: message \"%s\" lacks \"%s\"",
          text, f ? f->what : "", msg);
    if (secret != NULL && f != NULL)
        CHECK(strstr(f->what, secret) == NULL, "%s: message holds %s", text, secret);
    p11_uri_free(u);
}

static void matching(void)
{
    CK_TOKEN_INFO ti;
    CK_SLOT_INFO si;
    CK_INFO mi;
    p11_uri *u;

    memset(&ti, ' ', sizeof(ti));
    memset(&si, ' ', sizeof(si));
    memset(&mi, ' ', sizeof(mi));
    memcpy(ti.label, "demo", 4);
    memcpy(si.slotDescription, "slot one", 8);
    memcpy(mi.manufacturerID, "SoftHSM", 7);
    mi.libraryVersion.major = 2;
    mi.libraryVersion.minor = 6;

    CHECK(p11_uri_parse("pkcs11:token=demo;slot-id=7", &u) == CKR_OK, "slot-id parse");
    CHECK(p11_uri_matches_token(u, 7, &ti, &si, &mi), "slot-id 7 matches slot 7");
    CHECK(!p11_uri_matches_token(u, 8, &ti, &si, &mi), "slot-id 7 matches slot 8");
    p11_uri_free(u);
    CHECK(p11_uri_parse("pkcs11:slot-description=slot%20one;library-version=2.6", &u) ==
              CKR_OK,
          "slot-description parse");
    CHECK(p11_uri_matches_token(u, 1, &ti, &si, &mi), "slot-description matches");
    memcpy(si.slotDescription, "slot two", 8);
    CHECK(!p11_uri_matches_token(u, 1, &ti, &si, &mi),
          "another slot-description matches");
    p11_uri_free(u);
    CHECK(p11_uri_parse("pkcs11:library-manufacturer=Other", &u) == CKR_OK, "lib parse");
    CHECK(!p11_uri_matches_token(u, 1, &ti, &si, &mi), "another library-manufacturer");
    p11_uri_free(u);
}

static void module_check(void)
{
    p11_uri *u;

    CHECK(p11_uri_parse("pkcs11:?module-name=softhsm2", &u) == CKR_OK, "module-name");
    CHECK(p11_uri_check_module(u, "/usr/lib/softhsm/libsofthsm2.so") == CKR_OK,
          "softhsm2 is libsofthsm2.so");
    CHECK(p11_uri_check_module(u, "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so") ==
              P11_RV_BAD_URI,
          "softhsm2 is not the proxy");
    p11_uri_free(u);
    CHECK(p11_uri_parse("pkcs11:?module-path=/nonexistent/a.so", &u) == CKR_OK, "path");
    CHECK(p11_uri_check_module(u, "/nonexistent/a.so") == CKR_OK, "same path");
    CHECK(p11_uri_check_module(u, "/nonexistent/b.so") == P11_RV_BAD_URI, "other path");
    p11_uri_free(u);
}

static void formatting(void)
{
    unsigned char label[32];
    unsigned char id[2] = {0x01, 0xff};
    char *s;

    memset(label, ' ', sizeof(label));
    memcpy(label, "my\ntoken", 8);
    s = p11_uri_format_object(label, "a;b\x1b", id, sizeof(id), CKO_PRIVATE_KEY);
    CHECK(s != NULL && strcmp(s, "pkcs11:token=my%0Atoken;id=%01%FF;object=a%3Bb%1B;"
                                 "type=private") == 0,
          "object URI: %s", s ? s : "(null)");
    free(s);
}

static void escaping(void)
{
    char out[32];

    p11_escape_controls(out, sizeof(out), "a\nb\x1b[2Jc\x7f");
    CHECK(strcmp(out, "a\\x0ab\\x1b[2Jc\\x7f") == 0, "escaped: %s", out);
    p11_escape_controls(out, 6, "abc\n");
    CHECK(strcmp(out, "abc") == 0, "no half escape at the end: %s", out);
    p11_fail(CKR_GENERAL_ERROR, "C_Test", "label %s", "x\ny");
    CHECK(strcmp(p11_last_failure()->what, "label x\\x0ay") == 0, "p11_fail escapes: %s",
          p11_last_failure()->what);
    p11_failure_clear();
}

int main(void)
{
    const char *pin = "s3cr3t-PIN";
    char long_uri[8192];

    parses_as("pkcs11:token=demo;object=ec;type=private",
              "pkcs11:token=demo;object=ec;type=private", NULL);
    /* Every spelling of the PIN is taken out, and never shown. */
    parses_as("pkcs11:token=demo;object=ec;type=private; pin-value=s3cr3t-PIN",
              "pkcs11:token=demo;object=ec;type=private", pin);
    parses_as("pkcs11:pin-value=s3cr3t-PIN;token=demo", "pkcs11:token=demo", pin);
    parses_as("pkcs11:token=demo?pin-value=s3cr3t-PIN", "pkcs11:token=demo", pin);
    parses_as("pkcs11:token=demo?pin-value=s3cr3t%2DPIN", "pkcs11:token=demo", pin);
    parses_as("pkcs11:token=demo?x-vendor=s3cr3t-PIN", "pkcs11:token=demo", NULL);
    parses_as("pkcs11:token=demo?pin-source=file:/etc/pin",
              "pkcs11:token=demo?pin-source=file%3A%2Fetc%2Fpin", NULL);
    parses_as("pkcs11:object=my%20key;type=cert", "pkcs11:object=my%20key;type=cert",
              NULL);
    parses_as("pkcs11:", "pkcs11:", NULL);

    refused("pkcs11:token=demo;object=ec;pin-value=;pin-value=;pin-value=;pin-value=",
            "attribute pin-value given more than once", NULL);
    refused("pkcs11:object=rsa;object=ec", "attribute object given more than once", NULL);
    refused("pkcs11:type=private;objecttype=public",
            "attribute type given more than once", NULL);
    refused("pkcs11:?pinfile=/a&pin-source=/b",
            "attribute pin-source given more than once", NULL);
    refused("pkcs11:pin-value=s3cr3t-PIN?pin-value=s3cr3t-PIN",
            "attribute pin-value given more than once", pin);
    refused("pkcs11:token=demo;pin-v%61lue=s3cr3t-PIN", "path attribute 2 is none of",
            pin);
    refused("pkcs11:token=demo;s3cr3t-PIN=x", "path attribute 2 is none of", pin);
    refused("pkcs11:type=privat", "the value of type is not valid", NULL);
    refused("pkcs11:serial=0123456789abcdef0", "the value of serial is not valid", NULL);
    refused("pkcs11:object=%zz;pin-value=s3cr3t-PIN", "malformed pkcs11 URI", pin);
    refused("pkcs11:token=demo;pin-value=s3cr3t-PIN;noequals", "malformed pkcs11 URI",
            pin);
    refused("file:/etc/key.pem", "malformed pkcs11 URI", NULL);

    /* Long input: no overflow, whatever it holds. */
    strcpy(long_uri, "pkcs11:token=demo");
    for (int i = 0; i < 600; i++)
        strcat(long_uri, ";pin-value=");
    refused(long_uri, "given more than once", NULL);

    matching();
    module_check();
    formatting();
    escaping();

    if (unit_failures != 0) {
        fprintf(stderr, "%d unit_failures\n", unit_failures);
        return 1;
    }
    printf("PASS: unit_uri\n");
    return 0;
}
