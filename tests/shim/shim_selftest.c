/*
 * shim_selftest: proves that p11shim.so forwards to SoftHSM2 and that each
 * of its faults and its interleaving checker behaves as documented.
 *
 *   shim_selftest /path/to/p11shim.so      (P11SHIM_TARGET = SoftHSM2)
 *
 * Makes its own token in a temporary directory; exits non-zero on any failure.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "p11shim.h"

#define PIN "1234"
#define LABEL "t"

static CK_FUNCTION_LIST *p;
static struct p11shim_api api;
static int failures;
static char tmpdir[256];

static const char *rvn(CK_RV rv)
{
    static __thread char buf[32];
    const char *n = api.rv_name != NULL ? api.rv_name(rv) : NULL;

    if (n != NULL)
        return n;
    snprintf(buf, sizeof(buf), "0x%lx", (unsigned long)rv);
    return buf;
}

static void fail(int line, const char *fmt, ...)
{
    va_list ap;

    failures++;
    fprintf(stderr, "FAIL (line %d): ", line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond))                                                                     \
            fail(__LINE__, __VA_ARGS__);                                                 \
    } while (0)

#define EXPECT_RV(expr, want)                                                            \
    do {                                                                                 \
        CK_RV r_ = (expr), w_ = (want);                                                  \
        if (r_ != w_)                                                                    \
            fail(__LINE__, "%s returned %s, expected %s", #expr, rvn(r_), rvn(w_));      \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- token set-up -------------------------------------------------------- */

static int make_token(void)
{
    char path[512], cmd[768];
    const char *base = getenv("TMPDIR");
    FILE *f;

    snprintf(tmpdir, sizeof(tmpdir), "%s/shimtest.XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return -1;
    }
    snprintf(path, sizeof(path), "%s/tokens", tmpdir);
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
    if (system(cmd) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/softhsm2.conf", tmpdir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n",
            tmpdir);
    fclose(f);
    setenv("SOFTHSM2_CONF", path, 1);
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label %s --so-pin 12345678 --pin %s "
             ">/dev/null",
             LABEL, PIN);
    if (system(cmd) != 0) {
        fprintf(stderr, "softhsm2-util --init-token failed\n");
        return -1;
    }
    return 0;
}

static void remove_tmpdir(void)
{
    char cmd[512];

    if (tmpdir[0] == '\0')
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static int find_slot(CK_SLOT_ID *slot)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16, i;
    CK_TOKEN_INFO ti;
    char want[32];

    memset(want, ' ', sizeof(want));
    memcpy(want, LABEL, strlen(LABEL));
    if (p->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return -1;
    for (i = 0; i < n; i++)
        if (p->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
            memcmp(ti.label, want, sizeof(want)) == 0) {
            *slot = slots[i];
            return 0;
        }
    return -1;
}

static int slot_listed(CK_BBOOL present, CK_SLOT_ID slot)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16, i;

    if (p->C_GetSlotList(present, slots, &n) != CKR_OK)
        return -1;
    for (i = 0; i < n; i++)
        if (slots[i] == slot)
            return 1;
    return 0;
}

static CK_SESSION_HANDLE open_session(CK_SLOT_ID slot)
{
    CK_SESSION_HANDLE s = 0;

    EXPECT_RV(p->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
              CKR_OK);
    return s;
}

static void login(CK_SESSION_HANDLE s)
{
    CK_RV rv = p->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, strlen(PIN));

    CHECK(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN, "C_Login: %s", rvn(rv));
}

static CK_OBJECT_HANDLE pub_key, priv_key, hmac_key, aes_key;

static int make_keys(CK_SESSION_HANDLE s)
{
    static CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    static CK_BYTE id[] = {0x42};
    static char label[] = "shimkey";
    CK_BBOOL yes = CK_TRUE;
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pubt[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_EC_PARAMS, p256, sizeof(p256)},   {CKA_ID, id, sizeof(id)},
        {CKA_LABEL, label, sizeof(label) - 1},
    };
    CK_ATTRIBUTE privt[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_ID, id, sizeof(id)},           {CKA_LABEL, label, sizeof(label) - 1},
    };
    CK_MECHANISM gen = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_ULONG vlen = 32;
    static char hlabel[] = "shimhmac";
    CK_ATTRIBUTE sect[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},          {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},         {CKA_VALUE_LEN, &vlen, sizeof(vlen)},
        {CKA_LABEL, hlabel, sizeof(hlabel) - 1},
    };
    CK_RV rv =
        p->C_GenerateKeyPair(s, &mech, pubt, sizeof(pubt) / sizeof(pubt[0]), privt,
                             sizeof(privt) / sizeof(privt[0]), &pub_key, &priv_key);

    CHECK(rv == CKR_OK, "C_GenerateKeyPair: %s", rvn(rv));
    if (rv != CKR_OK)
        return -1;
    rv = p->C_GenerateKey(s, &gen, sect, sizeof(sect) / sizeof(sect[0]), &hmac_key);
    CHECK(rv == CKR_OK, "C_GenerateKey: %s", rvn(rv));
    if (rv != CKR_OK)
        return -1;
    {
        CK_MECHANISM aesgen = {CKM_AES_KEY_GEN, NULL, 0};
        CK_ULONG alen = 16;
        CK_ATTRIBUTE aest[] = {
            {CKA_ENCRYPT, &yes, sizeof(yes)},
            {CKA_DECRYPT, &yes, sizeof(yes)},
            {CKA_VALUE_LEN, &alen, sizeof(alen)},
        }; /* a session object: only used before the sessions are invalidated */

        rv = p->C_GenerateKey(s, &aesgen, aest, sizeof(aest) / sizeof(aest[0]), &aes_key);
        CHECK(rv == CKR_OK, "C_GenerateKey(AES): %s", rvn(rv));
    }
    return rv == CKR_OK ? 0 : -1;
}

static CK_OBJECT_HANDLE find_one(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                                 const char *label)
{
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                        {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG n = 0;

    EXPECT_RV(p->C_FindObjectsInit(s, t, 2), CKR_OK);
    EXPECT_RV(p->C_FindObjects(s, &o, 1, &n), CKR_OK);
    EXPECT_RV(p->C_FindObjectsFinal(s), CKR_OK);
    CHECK(n == 1, "object %s not found", label);
    return o;
}

/* Object handles do not outlive the last session of a token (SoftHSM drops
 * them), so find the keys again after the shim closed every session. */
static void find_keys(CK_SESSION_HANDLE s)
{
    priv_key = find_one(s, CKO_PRIVATE_KEY, "shimkey");
    pub_key = find_one(s, CKO_PUBLIC_KEY, "shimkey");
    hmac_key = find_one(s, CKO_SECRET_KEY, "shimhmac");
}

static CK_BYTE digest[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                             12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                             23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* C_SignInit + C_Sign with CKM_ECDSA; returns the first failure. */
static CK_RV sign_once(CK_SESSION_HANDLE s, CK_BYTE *sig, CK_ULONG *siglen)
{
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CK_BYTE local[128];
    CK_ULONG llen = sizeof(local);
    CK_RV rv = p->C_SignInit(s, &m, priv_key);

    if (sig == NULL) {
        sig = local;
        siglen = &llen;
    }
    if (rv != CKR_OK)
        return rv;
    return p->C_Sign(s, digest, sizeof(digest), sig, siglen);
}

static CK_RV verify_once(CK_SESSION_HANDLE s, CK_BYTE *sig, CK_ULONG siglen)
{
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CK_RV rv = p->C_VerifyInit(s, &m, pub_key);

    if (rv != CKR_OK)
        return rv;
    return p->C_Verify(s, digest, sizeof(digest), sig, siglen);
}

static int check_clean(int line, const char *what)
{
    char why[2048];

    if (api.check_interleaving(why, sizeof(why)) != 0) {
        fail(line, "%s: checker flagged a clean sequence: %s", what, why);
        return -1;
    }
    return 0;
}

static int check_flags(int line, const char *what, const char *needle)
{
    char why[2048];

    if (api.check_interleaving(why, sizeof(why)) != 1) {
        fail(line, "%s: checker did not flag it (%s)", what, why);
        return -1;
    }
    if (strstr(why, needle) == NULL) {
        fail(line, "%s: description lacks \"%s\": %s", what, needle, why);
        return -1;
    }
    printf("  flagged as expected: %s\n", why);
    return 0;
}

/* ---- the checks ------------------------------------------------------------ */

static void test_env_plan(CK_SLOT_ID slot)
{
    CK_INFO info;
    CK_SLOT_INFO si;
    CK_ULONG n = 0;
    double t0;

    /* P11SHIM_FAIL=C_GetInfo:2:CKR_FUNCTION_FAILED,C_GetSlotInfo:1:0x30 */
    EXPECT_RV(p->C_GetInfo(&info), CKR_OK);
    EXPECT_RV(p->C_GetInfo(&info), CKR_FUNCTION_FAILED);
    EXPECT_RV(p->C_GetInfo(&info), CKR_OK);
    CHECK(memcmp(info.manufacturerID, "SoftHSM", 7) == 0,
          "C_GetInfo not forwarded to SoftHSM");
    EXPECT_RV(p->C_GetSlotInfo(slot, &si), CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_GetSlotInfo(slot, &si), CKR_OK);
    /* P11SHIM_DELAY_US=C_GetMechanismList:30000 */
    t0 = now_ms();
    EXPECT_RV(p->C_GetMechanismList(slot, NULL, &n), CKR_OK);
    CHECK(now_ms() - t0 >= 29.0, "P11SHIM_DELAY_US not applied (%.1f ms)", now_ms() - t0);
    CHECK(n > 0, "no mechanisms");
}

static void test_sign(CK_SESSION_HANDLE s)
{
    CK_BYTE sig[128];
    CK_ULONG len = sizeof(sig);

    EXPECT_RV(sign_once(s, sig, &len), CKR_OK);
    CHECK(len == 64, "P-256 signature length %lu", (unsigned long)len);
    EXPECT_RV(verify_once(s, sig, len), CKR_OK);
    sig[5] ^= 1;
    EXPECT_RV(verify_once(s, sig, len), CKR_SIGNATURE_INVALID);
}

static void test_fail_nth(CK_SESSION_HANDLE s)
{
    CK_BYTE buf[16], sig[128];
    CK_ULONG len;
    unsigned long before = api.call_count("C_Sign");
    struct p11shim_call log[4];
    CK_MECHANISM sha = {CKM_SHA256, NULL, 0}, hmac = {CKM_SHA256_HMAC, NULL, 0};
    int i;

    CHECK(api.fail_nth("C_Nonsense", 1, CKR_DEVICE_ERROR) == -1, "unknown name accepted");
    CHECK(api.fail_nth("C_Sign", 2, CKR_DEVICE_ERROR) == 0, "fail_nth refused C_Sign");
    EXPECT_RV(sign_once(s, NULL, NULL), CKR_OK);
    EXPECT_RV(sign_once(s, NULL, NULL), CKR_DEVICE_ERROR);
    CHECK(api.get_log(log, 1) == 1 && strcmp(log[0].fn, "C_Sign") == 0 &&
              log[0].injected && log[0].rv == CKR_DEVICE_ERROR && log[0].session == s,
          "call log does not show the injected C_Sign");
    /* the injected failure ended the operation in SoftHSM too: a new one starts */
    EXPECT_RV(sign_once(s, NULL, NULL), CKR_OK);
    EXPECT_RV(sign_once(s, NULL, NULL), CKR_OK);
    CHECK(api.call_count("C_Sign") - before == 4, "C_Sign count %lu, expected 4",
          api.call_count("C_Sign") - before);

    /* nth = 0: every call until cleared */
    CHECK(api.fail_nth("C_GenerateRandom", 0, CKR_RANDOM_NO_RNG) == 0, "fail_nth(0)");
    for (i = 0; i < 3; i++)
        EXPECT_RV(p->C_GenerateRandom(s, buf, sizeof(buf)), CKR_RANDOM_NO_RNG);
    api.clear();
    EXPECT_RV(p->C_GenerateRandom(s, buf, sizeof(buf)), CKR_OK);

    /* an injected failure in the middle of a streamed operation */
    EXPECT_RV(p->C_DigestInit(s, &sha), CKR_OK);
    EXPECT_RV(p->C_DigestUpdate(s, buf, sizeof(buf)), CKR_OK);
    api.fail_nth("C_DigestUpdate", 1, CKR_DEVICE_MEMORY);
    EXPECT_RV(p->C_DigestUpdate(s, buf, sizeof(buf)), CKR_DEVICE_MEMORY);
    EXPECT_RV(p->C_DigestInit(s, &sha), CKR_OK);
    len = sizeof(sig);
    api.fail_nth("C_DigestFinal", 1, CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_DigestFinal(s, sig, &len), CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_DigestInit(s, &sha), CKR_OK);
    len = sizeof(sig);
    EXPECT_RV(p->C_Digest(s, buf, sizeof(buf), sig, &len), CKR_OK);
    CHECK(len == 32, "SHA-256 length %lu", (unsigned long)len);

    EXPECT_RV(p->C_SignInit(s, &hmac, hmac_key), CKR_OK);
    EXPECT_RV(p->C_SignUpdate(s, buf, sizeof(buf)), CKR_OK);
    api.fail_nth("C_SignFinal", 1, CKR_FUNCTION_FAILED);
    len = sizeof(sig);
    EXPECT_RV(p->C_SignFinal(s, sig, &len), CKR_FUNCTION_FAILED);
    EXPECT_RV(sign_once(s, NULL, NULL), CKR_OK);
    check_clean(__LINE__, "fail_nth");
}

/* An injected failure that ends an operation for the caller ends it in the
 * module too: every kind can start again at once, and nothing is flagged. */
static void test_reconcile(CK_SESSION_HANDLE s)
{
    CK_MECHANISM ec = {CKM_ECDSA, NULL, 0}, ecb = {CKM_AES_ECB, NULL, 0};
    CK_BYTE in[32] = {0}, out[64], sig[64] = {0};
    CK_ULONG len, n;
    CK_OBJECT_HANDLE o;
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}};

    api.reset_log();
    EXPECT_RV(p->C_VerifyInit(s, &ec, pub_key), CKR_OK);
    api.fail_nth("C_Verify", 1, CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_Verify(s, digest, sizeof(digest), sig, sizeof(sig)), CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_VerifyInit(s, &ec, pub_key), CKR_OK);
    EXPECT_RV(p->C_Verify(s, digest, sizeof(digest), sig, sizeof(sig)),
              CKR_SIGNATURE_INVALID);

    EXPECT_RV(p->C_EncryptInit(s, &ecb, aes_key), CKR_OK);
    len = sizeof(out);
    EXPECT_RV(p->C_EncryptUpdate(s, in, 16, out, &len), CKR_OK);
    api.fail_nth("C_EncryptUpdate", 1, CKR_DEVICE_ERROR);
    len = sizeof(out);
    EXPECT_RV(p->C_EncryptUpdate(s, in, 16, out, &len), CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_EncryptInit(s, &ecb, aes_key), CKR_OK);
    len = sizeof(out);
    EXPECT_RV(p->C_Encrypt(s, in, sizeof(in), out, &len), CKR_OK);

    EXPECT_RV(p->C_DecryptInit(s, &ecb, aes_key), CKR_OK);
    api.fail_nth("C_Decrypt", 1, CKR_ENCRYPTED_DATA_INVALID);
    len = sizeof(in);
    EXPECT_RV(p->C_Decrypt(s, out, 32, in, &len), CKR_ENCRYPTED_DATA_INVALID);
    EXPECT_RV(p->C_DecryptInit(s, &ecb, aes_key), CKR_OK);
    len = sizeof(in);
    EXPECT_RV(p->C_DecryptUpdate(s, out, 32, in, &len), CKR_OK);
    api.fail_nth("C_DecryptFinal", 1, CKR_DEVICE_ERROR);
    len = sizeof(in);
    EXPECT_RV(p->C_DecryptFinal(s, in, &len), CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_DecryptInit(s, &ecb, aes_key), CKR_OK);
    len = sizeof(in);
    EXPECT_RV(p->C_Decrypt(s, out, 32, in, &len), CKR_OK);

    EXPECT_RV(p->C_FindObjectsInit(s, t, 1), CKR_OK);
    api.fail_nth("C_FindObjects", 1, CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_FindObjects(s, &o, 1, &n), CKR_DEVICE_ERROR); /* search goes on */
    EXPECT_RV(p->C_FindObjects(s, &o, 1, &n), CKR_OK);
    api.fail_nth("C_FindObjectsFinal", 1, CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_FindObjectsFinal(s), CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_FindObjectsInit(s, t, 1), CKR_OK);
    EXPECT_RV(p->C_FindObjectsFinal(s), CKR_OK);
    check_clean(__LINE__, "injected failures in every operation kind");
}

static void test_invalidate(CK_SLOT_ID slot, CK_SESSION_HANDLE *sp)
{
    CK_SESSION_HANDLE s = *sp, s2;
    CK_SESSION_INFO si;
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};

    CHECK(api.open_sessions() == 1, "open sessions %lu, expected 1", api.open_sessions());
    api.invalidate_sessions();
    CHECK(api.open_sessions() == 0, "open sessions %lu after invalidate",
          api.open_sessions());
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV(p->C_SignInit(s, &m, priv_key), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV(p->C_CloseSession(s), CKR_SESSION_HANDLE_INVALID);
    s2 = open_session(slot);
    CHECK(s2 != s, "session handle reused");
    EXPECT_RV(p->C_GetSessionInfo(s2, &si), CKR_OK);
    CHECK(si.state == CKS_RW_PUBLIC_SESSION, "login survived closing all real sessions");
    login(s2);
    find_keys(s2);
    EXPECT_RV(sign_once(s2, NULL, NULL), CKR_OK);
    *sp = s2;
}

static void test_logout(CK_SESSION_HANDLE s)
{
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CK_SESSION_INFO si;

    EXPECT_RV(sign_once(s, NULL, NULL), CKR_OK);
    api.logout();
    EXPECT_RV(p->C_SignInit(s, &m, priv_key), CKR_USER_NOT_LOGGED_IN);
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_OK);
    CHECK(si.state == CKS_RW_PUBLIC_SESSION, "session state %lu after logout",
          (unsigned long)si.state);
    login(s);
    find_keys(s); /* SoftHSM dropped the private handles at logout */
    EXPECT_RV(sign_once(s, NULL, NULL), CKR_OK);
}

static void test_remove(CK_SLOT_ID slot, CK_SESSION_HANDLE *sp)
{
    CK_SESSION_HANDLE s = *sp, s2 = 0, extra = open_session(slot);
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CK_SESSION_INFO si;
    CK_TOKEN_INFO ti;
    CK_SLOT_INFO sli;
    CK_ULONG n = 99;

    api.remove_token(1);
    CHECK(slot_listed(CK_TRUE, slot) == 0,
          "removed token's slot still listed as present");
    EXPECT_RV(p->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
    CHECK(n == 0, "%lu slots with a token while removed", (unsigned long)n);
    CHECK(slot_listed(CK_FALSE, slot) == 1, "slot vanished from the full slot list");
    EXPECT_RV(p->C_GetSlotInfo(slot, &sli), CKR_OK);
    CHECK(!(sli.flags & CKF_TOKEN_PRESENT), "CKF_TOKEN_PRESENT while removed");
    EXPECT_RV(p->C_GetTokenInfo(slot, &ti), CKR_TOKEN_NOT_PRESENT);
    EXPECT_RV(p->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s2),
              CKR_TOKEN_NOT_PRESENT);
    EXPECT_RV(p->C_SignInit(s, &m, priv_key), CKR_DEVICE_REMOVED);
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_DEVICE_REMOVED);
    CHECK(api.open_sessions() == 0, "sessions open while removed");
    EXPECT_RV(p->C_CloseSession(extra), CKR_DEVICE_REMOVED);
    EXPECT_RV(p->C_GetSessionInfo(extra, &si),
              CKR_SESSION_HANDLE_INVALID); /* now closed */

    api.remove_token(0);
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_SESSION_HANDLE_INVALID);
    EXPECT_RV(p->C_SignInit(s, &m, priv_key), CKR_SESSION_HANDLE_INVALID);
    CHECK(slot_listed(CK_TRUE, slot) == 1, "slot not back after remove_token(0)");
    EXPECT_RV(p->C_GetTokenInfo(slot, &ti), CKR_OK);
    EXPECT_RV(p->C_GetSlotInfo(slot, &sli), CKR_OK);
    CHECK(sli.flags & CKF_TOKEN_PRESENT, "no CKF_TOKEN_PRESENT after reinsertion");
    EXPECT_RV(p->C_CloseSession(s), CKR_SESSION_HANDLE_INVALID);
    s2 = open_session(slot);
    login(s2);
    find_keys(s2);
    EXPECT_RV(sign_once(s2, NULL, NULL), CKR_OK);
    *sp = s2;
}

struct racer {
    CK_SESSION_HANDLE s;
    CK_RV rv;
};

static void *random_thread(void *arg)
{
    struct racer *r = arg;
    CK_BYTE buf[8];

    r->rv = p->C_GenerateRandom(r->s, buf, sizeof(buf));
    return NULL;
}

static void test_checker(CK_SESSION_HANDLE s)
{
    CK_MECHANISM ec = {CKM_ECDSA, NULL, 0}, hmac = {CKM_SHA256_HMAC, NULL, 0},
                 sha = {CKM_SHA256, NULL, 0};
    CK_BYTE sig[128], data[20] = {0};
    CK_ULONG len, count;
    CK_OBJECT_HANDLE objs[4];
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
    CK_SESSION_INFO si;
    struct racer r;
    pthread_t th;

    /* a clean sequence, including size queries, BUFFER_TOO_SMALL and errors
     * that end operations */
    api.reset_log();
    CHECK(api.call_count(NULL) == 0, "reset_log left %lu calls", api.call_count(NULL));
    EXPECT_RV(p->C_SignInit(s, &ec, priv_key), CKR_OK);
    len = 0;
    EXPECT_RV(p->C_Sign(s, digest, sizeof(digest), NULL, &len), CKR_OK);
    CHECK(len == 64, "size query gave %lu", (unsigned long)len);
    len = 10;
    EXPECT_RV(p->C_Sign(s, digest, sizeof(digest), sig, &len), CKR_BUFFER_TOO_SMALL);
    len = sizeof(sig);
    EXPECT_RV(p->C_Sign(s, digest, sizeof(digest), sig, &len), CKR_OK);
    EXPECT_RV(p->C_SignInit(s, &hmac, hmac_key), CKR_OK);
    EXPECT_RV(p->C_SignUpdate(s, data, sizeof(data)), CKR_OK);
    EXPECT_RV(p->C_SignUpdate(s, data, sizeof(data)), CKR_OK);
    len = sizeof(sig);
    EXPECT_RV(p->C_SignFinal(s, sig, &len), CKR_OK);
    EXPECT_RV(p->C_DigestInit(s, &sha), CKR_OK);
    EXPECT_RV(p->C_DigestUpdate(s, data, sizeof(data)), CKR_OK);
    EXPECT_RV(p->C_DigestFinal(s, NULL, &len), CKR_OK);
    EXPECT_RV(p->C_DigestFinal(s, sig, &len), CKR_OK);
    EXPECT_RV(p->C_VerifyInit(s, &ec, pub_key), CKR_OK);
    EXPECT_RV(p->C_Verify(s, digest, sizeof(digest), sig, 64), CKR_SIGNATURE_INVALID);
    EXPECT_RV(p->C_VerifyInit(s, &ec, pub_key), CKR_OK); /* the error ended it */
    EXPECT_RV(p->C_Verify(s, digest, sizeof(digest), sig, 64), CKR_SIGNATURE_INVALID);
    EXPECT_RV(p->C_FindObjectsInit(s, tmpl, 1), CKR_OK);
    EXPECT_RV(p->C_FindObjects(s, objs, 4, &count), CKR_OK);
    CHECK(count == 1, "found %lu private keys", (unsigned long)count);
    EXPECT_RV(p->C_FindObjectsFinal(s), CKR_OK);
    EXPECT_RV(p->C_SignInit(s, &ec, priv_key), CKR_OK);
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_OK);
    len = sizeof(sig);
    EXPECT_RV(p->C_Sign(s, digest, sizeof(digest), sig, &len), CKR_OK);
    check_clean(__LINE__, "clean sequence");

    /* C_SignInit twice on one session */
    api.reset_log();
    EXPECT_RV(p->C_SignInit(s, &ec, priv_key), CKR_OK);
    EXPECT_RV(p->C_SignInit(s, &ec, priv_key), CKR_OPERATION_ACTIVE);
    check_flags(__LINE__, "C_SignInit twice", "C_SignInit");
    /* the same, where the token fails the second init for another reason */
    api.reset_log();
    api.fail_nth("C_SignInit", 1, CKR_DEVICE_ERROR);
    EXPECT_RV(p->C_SignInit(s, &ec, priv_key), CKR_DEVICE_ERROR);
    check_flags(__LINE__, "C_SignInit while active", "while a sign operation is active");
    len = sizeof(sig);
    EXPECT_RV(p->C_Sign(s, digest, sizeof(digest), sig, &len), CKR_OK);

    /* the module refuses an init the checker thought fine: SoftHSM2 runs one
     * operation at a time per session, whatever its kind */
    api.reset_log();
    EXPECT_RV(p->C_DigestInit(s, &sha), CKR_OK);
    EXPECT_RV(p->C_SignInit(s, &ec, priv_key), CKR_OPERATION_ACTIVE);
    check_flags(__LINE__, "C_SignInit during a digest", "returned CKR_OPERATION_ACTIVE");
    len = sizeof(sig);
    EXPECT_RV(p->C_DigestFinal(s, sig, &len), CKR_OK);

    /* C_SignUpdate with no C_SignInit */
    api.reset_log();
    EXPECT_RV(p->C_SignUpdate(s, data, sizeof(data)), CKR_OPERATION_NOT_INITIALIZED);
    check_flags(__LINE__, "C_SignUpdate without init",
                "without an active sign operation");

    /* C_FindObjects after C_FindObjectsFinal */
    api.reset_log();
    EXPECT_RV(p->C_FindObjectsInit(s, tmpl, 1), CKR_OK);
    EXPECT_RV(p->C_FindObjectsFinal(s), CKR_OK);
    EXPECT_RV(p->C_FindObjects(s, objs, 4, &count), CKR_OPERATION_NOT_INITIALIZED);
    check_flags(__LINE__, "C_FindObjects after final",
                "without an active find operation");

    /* two threads on one session at the same time */
    api.reset_log();
    api.delay_us("C_GenerateRandom", 300000);
    r.s = s;
    r.rv = ~0UL;
    pthread_create(&th, NULL, random_thread, &r);
    usleep(100000);
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_OK);
    pthread_join(th, NULL);
    api.delay_us("C_GenerateRandom", 0);
    EXPECT_RV(r.rv, CKR_OK);
    check_flags(__LINE__, "concurrent calls", "in flight");
    api.reset_log();
    check_clean(__LINE__, "after reset_log");
}

/* C_CloseAllSessions while another thread is inside a call on one of the
 * sessions: flagged, and every session of the slot is gone afterwards. */
static void test_close_all_busy(CK_SLOT_ID slot)
{
    struct racer r;
    pthread_t th;

    api.reset_log();
    r.s = open_session(slot);
    r.rv = ~0UL;
    api.delay_us("C_GenerateRandom", 300000);
    pthread_create(&th, NULL, random_thread, &r);
    usleep(100000);
    EXPECT_RV(p->C_CloseAllSessions(slot), CKR_OK);
    pthread_join(th, NULL);
    api.delay_us("C_GenerateRandom", 0);
    check_flags(__LINE__, "C_CloseAllSessions during a call", "C_CloseAllSessions");
    CHECK(api.open_sessions() == 0, "%lu sessions left after C_CloseAllSessions",
          api.open_sessions());
}

/* Threads on sessions of their own: all work, nothing is flagged. */
struct worker {
    CK_SESSION_HANDLE s;
    int errors;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    CK_BYTE sig[128];
    CK_ULONG len;
    int i;

    for (i = 0; i < 20; i++) {
        len = sizeof(sig);
        if (sign_once(w->s, sig, &len) != CKR_OK || verify_once(w->s, sig, len) != CKR_OK)
            w->errors++;
    }
    return NULL;
}

static void test_threads(CK_SLOT_ID slot)
{
    struct worker w[4];
    pthread_t th[4];
    int i;

    api.reset_log();
    for (i = 0; i < 4; i++) {
        w[i].s = open_session(slot);
        w[i].errors = 0;
    }
    api.delay_us(NULL, 50); /* every function: widen the windows a little */
    for (i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    for (i = 0; i < 20; i++) {
        (void)api.call_count("C_Sign");
        (void)api.open_sessions();
        usleep(1000);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].errors == 0, "worker %d: %d failed operations", i, w[i].errors);
        EXPECT_RV(p->C_CloseSession(w[i].s), CKR_OK);
    }
    api.delay_us(NULL, 0);
    CHECK(api.call_count("C_Sign") == 80, "C_Sign count %lu, expected 80",
          api.call_count("C_Sign"));
    check_clean(__LINE__, "threads on their own sessions");
}

static void test_fork(CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;
    CK_INFO info;
    CK_RV rv;
    pid_t pid;
    int status;

    api.fail_nth("C_GetSessionInfo", 0, CKR_DEVICE_ERROR);
    pid = fork();
    if (pid == 0) {
        int bad = 0;

        /* fresh state: no counts, no sessions, no faults */
        bad |= api.call_count(NULL) != 0;
        bad |= api.open_sessions() != 0;
        bad |= (p->C_GetSessionInfo(s, &si) != CKR_SESSION_HANDLE_INVALID) << 1;
        bad |= (api.call_count("C_GetSessionInfo") != 1) << 2;
        /* the child's C_Initialize reads P11SHIM_FAIL again */
        rv = p->C_Initialize(NULL);
        fprintf(stderr, "  child: C_Initialize -> %s\n", rvn(rv));
        bad |= (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) << 3;
        bad |= (p->C_GetInfo(&info) != CKR_OK) << 4;
        bad |= (p->C_GetInfo(&info) != CKR_FUNCTION_FAILED) << 5;
        _exit(bad);
    }
    CHECK(pid > 0, "fork failed");
    if (pid > 0) {
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child after fork did not see a reset shim (status 0x%x)", status);
    }
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_DEVICE_ERROR); /* parent keeps its plan */
    api.clear();
    EXPECT_RV(p->C_GetSessionInfo(s, &si), CKR_OK);
}

static int file_contains(const char *path, const char *needle)
{
    char line[512];
    FILE *f = fopen(path, "r");
    int found = 0;

    if (f == NULL)
        return -1;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    CK_C_INITIALIZE_ARGS init = {0};
    CK_C_GetFunctionList gfl;
    CK_SESSION_HANDLE s;
    CK_SLOT_ID slot;
    char logpath[512], vpath[600];
    void *h, *sym;
    double t0 = now_ms();

    if (argc != 2) {
        fprintf(stderr, "usage: %s /path/to/p11shim.so\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (make_token() != 0)
        return 1;
    snprintf(logpath, sizeof(logpath), "%s/calls.log", tmpdir);
    snprintf(vpath, sizeof(vpath), "%s.verdict", logpath);
    setenv("P11SHIM_FAIL", "C_GetInfo:2:CKR_FUNCTION_FAILED,C_GetSlotInfo:1:0x30", 1);
    setenv("P11SHIM_DELAY_US", "C_GetMechanismList:30000", 1);
    setenv("P11SHIM_LOG", logpath, 1);
    setenv("P11SHIM_CHECK", "1", 1);

    h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL || p11shim_api_load(h, &api) != 0) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
        remove_tmpdir();
        return 1;
    }
    CHECK(dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD) == h, "RTLD_NOLOAD gives another copy");
    dlclose(h); /* the RTLD_NOLOAD reference */
    sym = dlsym(h, "C_GetFunctionList");
    memcpy(&gfl, &sym, sizeof(gfl));
    if (gfl == NULL || gfl(&p) != CKR_OK) {
        fprintf(stderr, "C_GetFunctionList failed\n");
        remove_tmpdir();
        return 1;
    }
    CHECK(p->version.major == 2 && p->version.minor == 40, "function list version %d.%d",
          p->version.major, p->version.minor);
    CHECK(dlsym(h, "C_Sign") == NULL, "the shim exports C_Sign");

    init.flags = CKF_OS_LOCKING_OK;
    EXPECT_RV(p->C_Initialize(&init), CKR_OK);
    EXPECT_RV(p->C_Initialize(&init), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    if (find_slot(&slot) != 0) {
        fprintf(stderr, "token '%s' not found through the shim\n", LABEL);
        remove_tmpdir();
        return 1;
    }

    printf("env fault plan\n");
    test_env_plan(slot);
    s = open_session(slot);
    login(s);
    if (make_keys(s) != 0) {
        remove_tmpdir();
        return 1;
    }
    printf("sign through the shim\n");
    test_sign(s);
    printf("fail_nth\n");
    test_fail_nth(s);
    test_reconcile(s);
    printf("invalidate_sessions\n");
    test_invalidate(slot, &s);
    printf("logout\n");
    test_logout(s);
    printf("remove_token\n");
    test_remove(slot, &s);
    printf("interleaving checker\n");
    test_checker(s);
    printf("threads\n");
    test_threads(slot);
    printf("fork\n");
    test_fork(s);

    EXPECT_RV(p->C_CloseSession(s), CKR_OK);
    CHECK(api.open_sessions() == 0, "%lu sessions left open", api.open_sessions());
    printf("C_CloseAllSessions during a call\n");
    test_close_all_busy(slot);
    api.reset_log(); /* the verdict should cover a clean stretch */
    EXPECT_RV(p->C_Finalize(NULL), CKR_OK);
    CHECK(file_contains(logpath, "C_Sign ") == 1, "P11SHIM_LOG has no C_Sign line");
    CHECK(file_contains(logpath, "C_GetInfo - CKR_FUNCTION_FAILED injected") == 1,
          "P11SHIM_LOG does not show the injected C_GetInfo");
    CHECK(file_contains(vpath, "interleaving check passed") == 1,
          "P11SHIM_CHECK verdict missing from %s", vpath);

    remove_tmpdir();
    printf("%s: %d failure%s, %.0f ms\n", failures ? "FAILED" : "ok", failures,
           failures == 1 ? "" : "s", now_ms() - t0);
    return failures ? 1 : 0;
}
