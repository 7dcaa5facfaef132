/* The token calls that go through the recovery policy (p11_recover): the
 * login, and the objects made on the token's object session. They sit above
 * both the token records (p11_token.c) and the policy, which depends on the
 * token records: nothing below calls back up into them, except the policy's
 * re-login, handed in as P11_RECOVERY_INIT's relogin. */
#include "p11_token.h"

#include "p11_failure.h"
#include "p11_recover.h"
#include "p11_secmem.h"

#include <openssl/crypto.h>

/* Every PIN we keep lives in p11_secmem pages: locked, out of core dumps,
 * wiped when replaced or when the token goes. */
static void pin_replace(char **slot, size_t *slot_len, const char *pin, size_t len)
{
    char *copy = p11_secmem_dup(pin, len);

    if (copy == NULL)
        return;
    p11_secmem_free(*slot);
    *slot = copy;
    *slot_len = len;
}

static int pin_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    return a != NULL && alen == blen && CRYPTO_memcmp(a, b, alen) == 0;
}

/* Called with login_lock held. */
static CK_RV do_login(p11_token *t, const char *pin, size_t len)
{
    p11_recovery r = P11_RECOVERY_INIT;
    p11_lease l = P11_LEASE_INIT;
    int called = 0;
    CK_RV rv;

    if (pin_equal(t->bad_pin, t->bad_pin_len, pin, len))
        return p11_fail(CKR_PIN_INCORRECT, "C_Login",
                        "token \"%s\" already rejected this PIN; it is not offered "
                        "again, so that the token does not lock",
                        t->label);
    /* A lost session is recovered, and a passing general error retried
     * once; nothing else: the login is what is being redone (and login_lock
     * is held). */
    r.allow = P11_ALLOW(P11_ACT_SESSION) | P11_ALLOW(P11_ACT_TRANSIENT);
    do {
        rv = p11_lease_acquire(t->pool, &l);
        called = rv == CKR_OK;
        if (rv == CKR_OK)
            rv =
                P11_CALL(t->m, C_Login, l.h, CKU_USER, (CK_UTF8CHAR *)pin, (CK_ULONG)len);
    } while (p11_recover(&r, t, &l, rv) == P11_RETRY);
    p11_lease_release(&l);
    if (rv == CKR_USER_ALREADY_LOGGED_IN)
        rv = CKR_OK;
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_LEN_RANGE)
        pin_replace(&t->bad_pin, &t->bad_pin_len, pin, len);
    /* No session to log in on: the pool's failure (which call, which slot)
     * is the one to report. */
    if (rv != CKR_OK && !called)
        return rv;
    if (rv != CKR_OK)
        return p11_fail(rv, "C_Login", "token \"%s\"", t->label);
    atomic_store(&t->login_gen, atomic_load(&t->m->gen));
    return CKR_OK;
}

CK_RV p11_token_login(p11_token *t, const char *pin, size_t len)
{
    CK_RV rv = CKR_OK;

    pthread_mutex_lock(&t->login_lock);
    if (atomic_load(&t->login_gen) != atomic_load(&t->m->gen) ||
        !pin_equal(t->pin, t->pin_len, pin, len)) {
        rv = do_login(t, pin, len);
        if (rv == CKR_OK && !pin_equal(t->pin, t->pin_len, pin, len))
            pin_replace(&t->pin, &t->pin_len, pin, len);
    }
    pthread_mutex_unlock(&t->login_lock);
    return rv;
}

CK_RV p11_token_relogin(p11_token *t)
{
    CK_RV rv;

    pthread_mutex_lock(&t->login_lock);
    if (t->pin == NULL)
        rv = p11_fail(CKR_USER_NOT_LOGGED_IN, "C_Login",
                      "token \"%s\" forgot the login and no PIN is known to log in "
                      "again",
                      t->label);
    else
        rv = do_login(t, t->pin, t->pin_len);
    pthread_mutex_unlock(&t->login_lock);
    return rv;
}

CK_RV p11_token_context_login(p11_token *t, CK_SESSION_HANDLE h, const char *name)
{
    CK_RV rv;

    pthread_mutex_lock(&t->login_lock);
    if (t->pin == NULL) {
        pthread_mutex_unlock(&t->login_lock);
        return p11_fail(CKR_USER_NOT_LOGGED_IN, "C_Login",
                        "%s needs the PIN for each use (CKA_ALWAYS_AUTHENTICATE) and no "
                        "PIN is known for token \"%s\"",
                        name, t->label);
    }
    /* Never a PIN the token rejected: repeats lock tokens. */
    if (pin_equal(t->bad_pin, t->bad_pin_len, t->pin, t->pin_len))
        rv = CKR_PIN_INCORRECT;
    else
        rv = P11_CALL(t->m, C_Login, h, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR *)t->pin,
                      (CK_ULONG)t->pin_len);
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED)
        pin_replace(&t->bad_pin, &t->bad_pin_len, t->pin, t->pin_len);
    pthread_mutex_unlock(&t->login_lock);
    if (rv != CKR_OK)
        return p11_fail(rv, "C_Login",
                        "context-specific login for %s (CKA_ALWAYS_AUTHENTICATE)", name);
    return CKR_OK;
}

/* Called with obj_lock held. */
static CK_RV object_session(p11_token *t, unsigned *gen)
{
    unsigned g = atomic_load(&t->m->gen), e = atomic_load(&t->epoch);
    CK_RV rv;

    if (t->obj_session_gen != g || t->obj_session_epoch != e) {
        CK_SESSION_INFO si;

        /* The epoch moved (a recovery), but this session may have lived
         * through it: then other threads may still be starting operations
         * with the key copies made in it, and closing it would destroy them
         * under those calls (SoftHSM2 empties a session object's attributes
         * when its session closes, and a C_SignInit reading them then signs
         * with an empty key and crashes). It is kept; copies of the old
         * epoch in it are not used again and go with it. */
        if (t->obj_session_gen == g &&
            P11_CALL(t->m, C_GetSessionInfo, t->obj_session, &si) == CKR_OK) {
            t->obj_session_epoch = e;
            *gen = g;
            return CKR_OK;
        }
        if (t->obj_session_gen == g)
            P11_CALL(t->m, C_CloseSession, t->obj_session); /* dead: its handle freed */
        rv = P11_CALL(t->m, C_OpenSession, t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                      NULL, NULL, &t->obj_session);
        if (rv != CKR_OK)
            return p11_fail(rv, "C_OpenSession", "token \"%s\" (object session)",
                            t->label);
        p11_token_check_session(t, t->obj_session);
        t->obj_session_gen = g;
        t->obj_session_epoch = atomic_load(&t->epoch);
    }
    *gen = g;
    return CKR_OK;
}

static CK_RV make_object(p11_token *t, CK_OBJECT_HANDLE src, CK_ATTRIBUTE *tmpl,
                         CK_ULONG n, CK_OBJECT_HANDLE *out, unsigned *gen)
{
    const char *call = src == CK_INVALID_HANDLE ? "C_CreateObject" : "C_CopyObject";
    p11_recovery r = P11_RECOVERY_INIT;
    CK_RV rv;

    rv = p11_module_ready(t->m);
    if (rv != CKR_OK)
        return rv;
    /* A copy is not retried after a loss: its source handle is of the old
     * epoch and may now name another object; the caller finds it again. A
     * cipher key made from raw bytes is made again after a lost session, and
     * after a lost login (all sessions closed: the token wants the login
     * back before it makes objects). */
    r.allow = src == CK_INVALID_HANDLE
                  ? P11_ALLOW(P11_ACT_SESSION) | P11_ALLOW(P11_ACT_LOGIN)
                  : 0;
    do {
        pthread_mutex_lock(&t->obj_lock);
        rv = object_session(t, gen);
        if (rv == CKR_OK) {
            if (src == CK_INVALID_HANDLE)
                rv = P11_CALL(t->m, C_CreateObject, t->obj_session, tmpl, n, out);
            else
                rv = P11_CALL(t->m, C_CopyObject, t->obj_session, src, tmpl, n, out);
            if (p11_recover_classify(rv) == P11_ACT_SESSION)
                t->obj_session_gen = 0; /* dead: not closed, a new one opened */
        }
        /* Not held while recovering: p11_token_lost takes the pool's lock,
         * and a login leases a pool session. */
        pthread_mutex_unlock(&t->obj_lock);
    } while (p11_recover(&r, t, NULL, rv) == P11_RETRY);
    if (rv != CKR_OK)
        rv = p11_fail(rv, call, "token \"%s\"", t->label);
    return rv;
}

CK_RV p11_token_create_object(p11_token *t, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                              CK_OBJECT_HANDLE *out, unsigned *gen)
{
    return make_object(t, CK_INVALID_HANDLE, tmpl, n, out, gen);
}

CK_RV p11_token_copy_object(p11_token *t, CK_OBJECT_HANDLE src, CK_ATTRIBUTE *tmpl,
                            CK_ULONG n, CK_OBJECT_HANDLE *out, unsigned *gen)
{
    return make_object(t, src, tmpl, n, out, gen);
}

void p11_token_destroy_object(p11_token *t, CK_OBJECT_HANDLE o, unsigned gen)
{
    if (p11_process_exiting() || t->m->fl == NULL)
        return;
    pthread_mutex_lock(&t->obj_lock);
    if (gen == atomic_load(&t->m->gen) && t->obj_session_gen == gen &&
        t->obj_session_epoch == atomic_load(&t->epoch) &&
        atomic_load(&t->m->ready_fork_gen) == p11_fork_generation())
        P11_CALL(t->m, C_DestroyObject, t->obj_session, o);
    pthread_mutex_unlock(&t->obj_lock);
}
