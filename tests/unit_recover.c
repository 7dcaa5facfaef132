/* Unit test of src/p11_recover.c, linked with the core and no token module:
 * for each kind of CK_RV, the decision of the recovery policy (retry or not,
 * after which repair), what it declares to the token (epoch, login), its
 * budget, and the failure record it clears or keeps.
 *
 * The token is a record with a session pool and no module: the repairs that
 * would call the module (a login with a known PIN) are not reached, or fail
 * before any call (no PIN known). Usage: unit_recover GROUP. */
#include "p11_failure.h"
#include "p11_names.h"
#include "p11_recover.h"
#include "unit_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static p11_module mod;
static p11_token tok;

/* A token logged in (login_gen 1), epoch 7, no PIN kept, no module. */
static p11_token *fresh_token(void)
{
    if (tok.pool != NULL)
        p11_pool_free(tok.pool);
    memset(&tok, 0, sizeof(tok));
    tok.m = &mod;
    strcpy(tok.label, "unit");
    tok.info.flags = CKF_LOGIN_REQUIRED;
    pthread_mutex_init(&tok.login_lock, NULL);
    pthread_mutex_init(&tok.obj_lock, NULL);
    {
        const p11_pool_owner owner = {&mod, 0, tok.label, NULL, NULL};

        tok.pool = p11_pool_new(&owner, 1, 0);
    }
    atomic_store(&tok.epoch, 7);
    atomic_store(&tok.login_gen, 1);
    p11_failure_clear();
    return &tok;
}

static unsigned epoch(void)
{
    return atomic_load(&tok.epoch);
}

static int stale_calls, stale_answer = 1;
static CK_OBJECT_HANDLE stale_handle;

static int fake_stale(void *obj, CK_OBJECT_HANDLE h)
{
    (void)obj;
    stale_calls++;
    stale_handle = h;
    return stale_answer;
}

/* What the step records before the policy sees its answer. */
static void step_failed(CK_RV rv)
{
    p11_fail(rv, "C_SignInit", "unit step");
}

static int failure_is(const char *call, CK_RV rv)
{
    const p11_failure *f = p11_last_failure();

    return f != NULL && strcmp(f->call, call) == 0 && f->rv == rv;
}

/* CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED: every session is declared
 * lost (new epoch, login forgotten, sessions discarded) and the step runs
 * again; chained losses earn new rounds. */
static void session(void)
{
    p11_lease none = P11_LEASE_INIT;
    CK_RV rvs[] = {CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED};

    for (size_t i = 0; i < 2; i++) {
        p11_recovery r = P11_RECOVERY_INIT;
        p11_token *t = fresh_token();

        CHECK(p11_recover_classify(rvs[i]) == P11_ACT_SESSION,
              "rv 0x%lx: not a session loss", rvs[i]);
        CHECK(p11_recover_discards_session(rvs[i]),
              "a dead session goes back to the pool");
        step_failed(rvs[i]);
        CHECK(p11_recover(&r, t, &none, rvs[i]) == P11_RETRY, "session loss not retried");
        CHECK(epoch() == 8, "no new epoch after a session loss (%u)", epoch());
        CHECK(atomic_load(&t->login_gen) == 0, "login kept after a session loss");
        /* The step's own loss moved the epoch: the next loss is a new one. */
        CHECK(p11_recover(&r, t, &none, rvs[i]) == P11_RETRY, "second loss not retried");
        CHECK(epoch() == 9, "no new epoch after the second loss");
    }
}

/* The plan alone: once per epoch. */
static void session_plan(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_action a;

    CHECK(p11_recover_plan(&r, CKR_SESSION_CLOSED, 3, &a) == P11_RETRY &&
              a == P11_ACT_SESSION,
          "first loss in epoch 3 not retried");
    CHECK(p11_recover_plan(&r, CKR_SESSION_CLOSED, 3, &a) == P11_DONE,
          "a second loss in the same epoch retried");
    CHECK(p11_recover_plan(&r, CKR_SESSION_CLOSED, 4, &a) == P11_RETRY,
          "a loss in a new epoch not retried");
}

/* CKR_USER_NOT_LOGGED_IN: the login is declared lost (new epoch) and made
 * again before the retry; with no PIN to log in with, the call gives up
 * and the step's failure, not the login's, is what is reported. */
static void login(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();
    p11_action a;

    CHECK(p11_recover_classify(CKR_USER_NOT_LOGGED_IN) == P11_ACT_LOGIN,
          "not a login loss");
    CHECK(!p11_recover_discards_session(CKR_USER_NOT_LOGGED_IN),
          "a live session discarded after a login loss");
    step_failed(CKR_USER_NOT_LOGGED_IN);
    CHECK(p11_recover(&r, t, NULL, CKR_USER_NOT_LOGGED_IN) == P11_DONE,
          "retried without a login");
    CHECK(epoch() == 8, "no new epoch after a login loss");
    CHECK(atomic_load(&t->login_gen) == 0, "login not forgotten");
    CHECK(failure_is("C_SignInit", CKR_USER_NOT_LOGGED_IN),
          "the failed re-login replaced the step's failure (%s)",
          p11_last_failure() ? p11_last_failure()->call : "none");

    /* The plan: once per epoch, like every recovery. */
    memset(&r, 0, sizeof(r));
    r.allow = P11_ALLOW_ALL;
    CHECK(p11_recover_plan(&r, CKR_USER_NOT_LOGGED_IN, 1, &a) == P11_RETRY &&
              a == P11_ACT_LOGIN,
          "login loss not planned for a retry");
    CHECK(p11_recover_plan(&r, CKR_USER_NOT_LOGGED_IN, 1, &a) == P11_DONE,
          "a second login loss in the same epoch retried");
}

/* A call site that may not retry a session loss still declares it; one
 * that may not log in (C_Login itself, a key copy) leaves the login alone. */
static void not_allowed(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();

    r.allow = P11_ALLOW(P11_ACT_SESSION);
    CHECK(p11_recover(&r, t, NULL, CKR_USER_NOT_LOGGED_IN) == P11_DONE,
          "a login retried where it is not allowed");
    CHECK(epoch() == 7 && atomic_load(&t->login_gen) == 1,
          "a login loss declared where nobody logs in again");
    r.allow = 0;
    CHECK(p11_recover(&r, t, NULL, CKR_SESSION_HANDLE_INVALID) == P11_DONE,
          "a session loss retried where no retry is allowed");
    CHECK(epoch() == 8 && atomic_load(&t->login_gen) == 0, "a session loss not declared");
}

/* CKR_OBJECT_HANDLE_INVALID and its kin: the handle the step used is
 * forgotten (stale callback) and the step runs again; no new epoch. Twice
 * per epoch (a key's copy and its token object), not three times. */
static void object(void)
{
    CK_RV rvs[] = {CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID,
                   CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_KEY_TYPE_INCONSISTENT};

    for (size_t i = 0; i < 4; i++) {
        p11_recovery r = P11_RECOVERY_INIT;
        p11_token *t = fresh_token();

        CHECK(p11_recover_classify(rvs[i]) == P11_ACT_OBJECT, "rv 0x%lx: not stale",
              rvs[i]);
        r.stale = fake_stale;
        r.h = 42;
        stale_calls = 0;
        stale_answer = 1;
        step_failed(rvs[i]);
        CHECK(p11_recover(&r, t, NULL, rvs[i]) == P11_RETRY, "stale handle not retried");
        CHECK(stale_calls == 1 && stale_handle == 42, "handle 42 not forgotten");
        CHECK(epoch() == 7, "a stale handle moved the epoch");
        /* A key's copy and its token object may each be stale once. */
        CHECK(p11_recover(&r, t, NULL, rvs[i]) == P11_RETRY,
              "the second stale handle of an epoch not retried");
        CHECK(stale_calls == 2, "second stale handle not forgotten");
        CHECK(p11_recover(&r, t, NULL, rvs[i]) == P11_DONE,
              "a third stale handle retried in the same epoch");
        CHECK(stale_calls == 2, "stale callback called without a retry");
        CHECK(failure_is("C_SignInit", rvs[i]), "the step's failure lost");
    }
}

/* Without a way to find the object again (no callback, or it says no: the
 * key was deleted) a stale handle is final. */
static void object_final(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();

    CHECK(p11_recover(&r, t, NULL, CKR_OBJECT_HANDLE_INVALID) == P11_DONE,
          "retried with no way to find the object again");
    memset(&r, 0, sizeof(r));
    r.allow = P11_ALLOW_ALL;
    r.stale = fake_stale;
    stale_answer = 0;
    stale_calls = 0;
    step_failed(CKR_OBJECT_HANDLE_INVALID);
    CHECK(p11_recover(&r, t, NULL, CKR_OBJECT_HANDLE_INVALID) == P11_DONE,
          "retried an object that cannot be found again");
    CHECK(stale_calls == 1, "stale callback not asked");
    CHECK(failure_is("C_SignInit", CKR_OBJECT_HANDLE_INVALID), "the step's failure lost");
    stale_answer = 1;
}

/* The object's epoch: taken at the first attempt, kept across a session
 * loss (so that the old handle is refused), taken anew once the object was
 * found again. */
static void object_epoch(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();

    r.stale = fake_stale;
    CHECK(p11_recovery_epoch(&r, t) == 7, "first attempt not in epoch 7");
    CHECK(p11_recover(&r, t, NULL, CKR_SESSION_CLOSED) == P11_RETRY, "loss not retried");
    CHECK(p11_recovery_epoch(&r, t) == 7, "the handle's epoch moved with the loss");
    CHECK(p11_recover(&r, t, NULL, CKR_OBJECT_HANDLE_INVALID) == P11_RETRY,
          "stale handle not retried");
    CHECK(p11_recovery_epoch(&r, t) == 8, "the object found again is not of epoch 8");
}

/* CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_ERROR: everything
 * is declared lost and the call fails now; no retry. */
static void token_gone(void)
{
    CK_RV rvs[] = {CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_ERROR};

    for (size_t i = 0; i < 3; i++) {
        p11_recovery r = P11_RECOVERY_INIT;
        p11_token *t = fresh_token();

        CHECK(p11_recover_classify(rvs[i]) == P11_ACT_TOKEN_GONE, "rv 0x%lx: not gone",
              rvs[i]);
        CHECK(p11_recover_discards_session(rvs[i]), "a removed token's session kept");
        step_failed(rvs[i]);
        CHECK(p11_recover(&r, t, NULL, rvs[i]) == P11_DONE, "removed token retried");
        CHECK(epoch() == 8, "removal not declared (epoch %u)", epoch());
        CHECK(atomic_load(&t->login_gen) == 0, "login kept after removal");
        CHECK(failure_is("C_SignInit", rvs[i]), "the step's failure lost");
    }
}

/* CKR_GENERAL_ERROR from a module that still answers for the slot: retried
 * three times after growing pauses, nothing declared lost, the session kept;
 * a fourth one is the answer; a call site that does not allow it gets no
 * retry. */
static void transient(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();

    CHECK(p11_recover_classify(CKR_GENERAL_ERROR) == P11_ACT_TRANSIENT,
          "general error not seen as passing");
    CHECK(!p11_recover_discards_session(CKR_GENERAL_ERROR), "session dropped");
    for (int i = 0; i < P11_TRANSIENT_RETRIES; i++) {
        step_failed(CKR_GENERAL_ERROR);
        CHECK(p11_recover(&r, t, NULL, CKR_GENERAL_ERROR) == P11_RETRY,
              "passing general error %d not retried", i + 1);
    }
    CHECK(P11_TRANSIENT_RETRIES == 3, "%d retries of a passing fault",
          P11_TRANSIENT_RETRIES);
    CHECK(epoch() == 7 && atomic_load(&t->login_gen) == 1, "a loss declared");
    step_failed(CKR_GENERAL_ERROR);
    CHECK(p11_recover(&r, t, NULL, CKR_GENERAL_ERROR) == P11_DONE,
          "a fourth general error retried");
    CHECK(failure_is("C_SignInit", CKR_GENERAL_ERROR), "the step's failure lost");
    {
        p11_recovery r2 = P11_RECOVERY_INIT;

        r2.allow = P11_ALLOW(P11_ACT_SESSION);
        CHECK(p11_recover(&r2, t, NULL, CKR_GENERAL_ERROR) == P11_DONE,
              "retried where it is not allowed");
    }
}

/* A local software token (SoftHSM2, softokn) fixes its slots when it starts:
 * an invalid slot stays so until the next start, which p11_module_ready
 * checks, so the answer stands: no retry, never a module to start again. From
 * any other module, p11_recover_action asks the module whether its
 * connection was lost. */
static void local_slot(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();

    mod.local = 1;
    CHECK(p11_recover_action(t, CKR_SLOT_ID_INVALID, 0) == P11_ACT_NONE,
          "invalid slot of a local token not taken as the answer");
    CHECK(p11_module_lost(&mod, 0, 0) == 0, "a local module declared lost");
    step_failed(CKR_SLOT_ID_INVALID);
    CHECK(p11_recover(&r, t, NULL, CKR_SLOT_ID_INVALID) == P11_DONE,
          "an invalid slot of a local token retried");
    CHECK(epoch() == 7 && atomic_load(&t->login_gen) == 1, "a loss declared");
    CHECK(failure_is("C_SignInit", CKR_SLOT_ID_INVALID), "the step's failure lost");
    mod.local = 0;
}

/* CKR_USER_PIN_NOT_INITIALIZED from C_Login: a passing fault (retried three
 * times, nothing declared lost) from a token that said its user PIN is set;
 * from one that said otherwise, the answer at once. */
static void pin_not_initialized(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();

    t->info.flags |= CKF_USER_PIN_INITIALIZED;
    CHECK(p11_recover_action(t, CKR_USER_PIN_NOT_INITIALIZED, 0) == P11_ACT_TRANSIENT,
          "a set user PIN said missing not taken as passing");
    for (int i = 0; i < P11_TRANSIENT_RETRIES; i++) {
        step_failed(CKR_USER_PIN_NOT_INITIALIZED);
        CHECK(p11_recover(&r, t, NULL, CKR_USER_PIN_NOT_INITIALIZED) == P11_RETRY,
              "passing CKR_USER_PIN_NOT_INITIALIZED %d not retried", i + 1);
    }
    step_failed(CKR_USER_PIN_NOT_INITIALIZED);
    CHECK(p11_recover(&r, t, NULL, CKR_USER_PIN_NOT_INITIALIZED) == P11_DONE,
          "a fourth CKR_USER_PIN_NOT_INITIALIZED retried");
    CHECK(epoch() == 7 && atomic_load(&t->login_gen) == 1, "a loss declared");
    CHECK(failure_is("C_SignInit", CKR_USER_PIN_NOT_INITIALIZED),
          "the step's failure lost");

    t = fresh_token();
    {
        p11_recovery r2 = P11_RECOVERY_INIT;

        CHECK(p11_recover_action(t, CKR_USER_PIN_NOT_INITIALIZED, 0) == P11_ACT_NONE,
              "a token without a user PIN retried");
        step_failed(CKR_USER_PIN_NOT_INITIALIZED);
        CHECK(p11_recover(&r2, t, NULL, CKR_USER_PIN_NOT_INITIALIZED) == P11_DONE,
              "a token without a user PIN retried");
    }
}

/* Answers no recovery mends: CKR_PIN_INCORRECT (never retried: repeats lock
 * tokens), CKR_PIN_LOCKED, a vendor code, hsmprov's own codes, plain errors.
 * Nothing is declared, the token is not even looked at. */
static void final(void)
{
    CK_RV rvs[] = {
        CKR_PIN_INCORRECT,         CKR_PIN_LOCKED,        CKR_PIN_LEN_RANGE,
        CKR_VENDOR_DEFINED | 0x42, P11_RV_POOL_EXHAUSTED, P11_RV_TIMEOUT,
        CKR_MECHANISM_INVALID,     CKR_DATA_LEN_RANGE,    CKR_SIGNATURE_INVALID};

    for (size_t i = 0; i < sizeof(rvs) / sizeof(rvs[0]); i++) {
        p11_recovery r = P11_RECOVERY_INIT;
        p11_action a;

        CHECK(p11_recover_classify(rvs[i]) == P11_ACT_NONE, "rv 0x%lx: recovered",
              rvs[i]);
        CHECK(p11_recover_plan(&r, rvs[i], 1, &a) == P11_DONE && a == P11_ACT_NONE,
              "rv 0x%lx: retried", rvs[i]);
        step_failed(rvs[i]);
        CHECK(p11_recover(&r, NULL, NULL, rvs[i]) == P11_DONE, "rv 0x%lx: retried",
              rvs[i]);
        CHECK(failure_is("C_SignInit", rvs[i]), "rv 0x%lx: failure lost", rvs[i]);
        CHECK(r.retries == 0, "budget spent on a final answer");
    }
    /* An operation may still run on the session: it is closed, not reused. */
    CHECK(p11_recover_discards_session(CKR_BUFFER_TOO_SMALL) &&
              p11_recover_discards_session(CKR_FUNCTION_NOT_SUPPORTED) &&
              p11_recover_discards_session(CKR_OPERATION_ACTIVE),
          "a session with an operation active goes back to the pool");
    CHECK(!p11_recover_discards_session(CKR_PIN_INCORRECT) &&
              !p11_recover_discards_session(CKR_VENDOR_DEFINED | 0x42),
          "a sound session discarded");
}

/* CKR_OK: done; the unit_failures of the attempts before a successful retry are
 * cleared, and only then. */
static void ok(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_token *t = fresh_token();

    CHECK(p11_recover_classify(CKR_OK) == P11_ACT_NONE, "CKR_OK recovered");
    step_failed(CKR_GENERAL_ERROR); /* an earlier, unrelated failure */
    CHECK(p11_recover(&r, NULL, NULL, CKR_OK) == P11_DONE, "success retried");
    CHECK(failure_is("C_SignInit", CKR_GENERAL_ERROR),
          "a first-time success cleared a failure it did not cause");
    step_failed(CKR_SESSION_HANDLE_INVALID);
    CHECK(p11_recover(&r, t, NULL, CKR_SESSION_HANDLE_INVALID) == P11_RETRY,
          "not retried");
    CHECK(p11_recover(&r, t, NULL, CKR_OK) == P11_DONE, "success retried");
    CHECK(p11_last_failure() == NULL,
          "the failure of a recovered attempt stays recorded");
}

/* One budget per call: each recovery once per epoch, at most
 * P11_RECOVER_ROUNDS new epochs, at most P11_RECOVER_MAX_RETRIES retries;
 * a new call has its own. */
static void budget(void)
{
    p11_recovery r = P11_RECOVERY_INIT;
    CK_RV cycle[] = {CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN,
                     CKR_OBJECT_HANDLE_INVALID};
    int retries = 0, i;
    p11_action a;

    /* A session lost at every attempt, each loss a new epoch. */
    for (i = 0; i < 100 &&
                p11_recover_plan(&r, CKR_SESSION_CLOSED, (unsigned)i, &a) == P11_RETRY;
         i++)
        retries++;
    CHECK(retries == 1 + P11_RECOVER_ROUNDS, "%d retries of endless session losses",
          retries);

    /* Everything lost over and over: the hard cap ends it. */
    memset(&r, 0, sizeof(r));
    r.allow = P11_ALLOW_ALL;
    retries = 0;
    for (i = 0; i < 100; i++)
        if (p11_recover_plan(&r, cycle[i % 3], (unsigned)(i / 3), &a) == P11_RETRY)
            retries++;
    CHECK(retries == P11_RECOVER_MAX_RETRIES, "%d retries in all", retries);

    /* The same epoch: one of each kind (two of a stale object: a key's copy
     * and its token object), then no more. */
    memset(&r, 0, sizeof(r));
    r.allow = P11_ALLOW_ALL;
    retries = 0;
    for (i = 0; i < 30; i++)
        if (p11_recover_plan(&r, cycle[i % 3], 5, &a) == P11_RETRY)
            retries++;
    CHECK(retries == 4, "%d retries within one epoch", retries);

    /* A new call starts with a whole budget. */
    {
        p11_recovery r2 = P11_RECOVERY_INIT;

        CHECK(p11_recover_plan(&r2, CKR_SESSION_CLOSED, 5, &a) == P11_RETRY,
              "the budget of one call spent by another");
    }
}

static const struct {
    const char *name;
    void (*fn)(void);
} groups[] = {
    {"session", session},
    {"session_plan", session_plan},
    {"login", login},
    {"not_allowed", not_allowed},
    {"object", object},
    {"object_final", object_final},
    {"object_epoch", object_epoch},
    {"token_gone", token_gone},
    {"transient", transient},
    {"local_slot", local_slot},
    {"pin_not_initialized", pin_not_initialized},
    {"final", final},
    {"ok", ok},
    {"budget", budget},
};

int main(int argc, char **argv)
{
    int ran = 0;

    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        if (argc < 2 || strcmp(argv[1], groups[i].name) == 0) {
            groups[i].fn();
            ran++;
        }
    if (ran == 0) {
        fprintf(stderr, "unit_recover: no group %s\n", argv[1]);
        return 2;
    }
    if (tok.pool != NULL)
        p11_pool_free(tok.pool);
    if (unit_failures == 0)
        printf("unit_recover %s: all checks passed\n", argc < 2 ? "(all)" : argv[1]);
    return unit_failures != 0;
}
