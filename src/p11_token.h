/* Tokens: finding them by URI, their session pool, login and mechanisms. */
#ifndef P11_TOKEN_H
#define P11_TOKEN_H

#include "p11_lease.h"
#include "p11_module.h"
#include "p11_uri.h"

#include <pthread.h>

struct p11_token {
    p11_module *m;
    CK_SLOT_ID slot;
    char label[33]; /* trimmed, NUL-terminated, for messages */
    char serial[17];
    CK_TOKEN_INFO info;
    p11_pool *pool;

    pthread_mutex_t login_lock; /* serialises C_Login; never held across a lease wait */
    atomic_uint login_gen;      /* module generation we are logged in for; 0: not */
    /* The PIN that last worked, kept to log in again after the token forgot
     * (session loss, fork). In p11_secmem pages (locked, not in core dumps);
     * wiped when replaced and when the token is freed. */
    char *pin;
    size_t pin_len;
    /* A PIN the token rejected: the same PIN is never offered again (repeats
     * lock tokens). In p11_secmem pages too; wiped when replaced and when the
     * token is freed. */
    char *bad_pin;
    size_t bad_pin_len;

    /* The token's mechanism list, sorted; read once under login_lock, then
     * read without a lock once mechs_known says so (every signature asks). */
    CK_MECHANISM_TYPE *mechs;
    CK_ULONG n_mechs;
    atomic_int mechs_known;

    /* Bumped whenever the token may have renumbered or dropped objects
     * without a module re-initialisation: its sessions were lost (closed,
     * removed) or its login was. Object handles (key records, key copies)
     * remember the epoch they were found in; a handle from an older epoch is
     * never used, since the token may have given its number to another object. */
    atomic_uint epoch;
    unsigned obj_session_epoch;

    /* Session objects (cipher keys from raw bytes, key copies) are created on
     * a session of their own, outside the pool: a session object dies with
     * the session that made it, and pool sessions may be closed at any time.
     * obj_lock serialises the calls on it (short, single calls). */
    pthread_mutex_t obj_lock;
    CK_SESSION_HANDLE obj_session;
    unsigned obj_session_gen; /* module generation it was opened in; 0: none */
    /* SoftHSM2 2.6 re-indexes its token directory when a search starts
     * (C_FindObjectsInit), and one that ran while another thread of the
     * process generated a key pair left that pair's public key unfindable
     * in this process for good (seen in CI: 8 threads generating while
     * others load keys by URI). Searches share this lock and key
     * generation takes it alone, with every module: a search waits for at
     * most one generation in this process. */
    pthread_rwlock_t index_lock;
    p11_token *next;
};

/* Tokens are those with CKF_TOKEN_INITIALIZED: a blank one is never found,
 * listed nor matched. When none matches, the failure says whether the module
 * reached any token at all (a remote module whose server is down reaches
 * none). */

/* The first token matching the URI's token/slot/module attributes. */
CK_RV p11_token_find(p11_module *m, const p11_uri *uri, p11_token **out);
/* All tokens present now (for listing); *n set to their count. */
CK_RV p11_token_list(p11_module *m, p11_token ***out, size_t *n);
/* The first initialised token that offers mech; CKR_MECHANISM_INVALID
 * (naming it) when none does, CKR_TOKEN_NOT_PRESENT when there is none. */
CK_RV p11_token_with_mechanism(p11_module *m, CK_MECHANISM_TYPE mech, p11_token **out);
/* Every token the URI matches (token, slot and library attributes), after
 * checking its module-name/module-path; none is an error
 * (CKR_TOKEN_NOT_PRESENT naming the URI). Caller frees the array. */
CK_RV p11_token_list_matching(p11_module *m, const p11_uri *uri, p11_token ***out,
                              size_t *n);

/* Whether t matches the URI's token, slot and library attributes. */
int p11_token_matches(p11_token *t, const p11_uri *uri);
/* How many initialised tokens of t's module that take a PIN
 * (CKF_LOGIN_REQUIRED; t counts in any case) uri selects (NULL: all of
 * them), and whether t is one of them: a PIN that is not the URI's own is
 * spent only on a token selected alone (see hp_login.c). */
CK_RV p11_token_count_selected(p11_token *t, const p11_uri *uri, size_t *n, int *has_t);

/* Whether the token wants a C_Login before its private objects can be used. */
int p11_token_needs_login(p11_token *t);
/* C_Login as the user with this PIN (CKR_USER_ALREADY_LOGGED_IN is success).
 * A PIN the token rejected is remembered and refused without calling
 * C_Login again. */
CK_RV p11_token_login(p11_token *t, const char *pin, size_t pin_len);
/* The token was removed: our login is gone with it. */
void p11_token_forget_login(p11_token *t);
/* After C_OpenSession: when we believe we are logged in but the new session
 * says otherwise, the token lost all our sessions (closing the last one logs
 * out): declare the loss now, before any old object handle is used. */
void p11_token_check_session(p11_token *t, CK_SESSION_HANDLE h);
/* C_FindObjectsInit on session h of t, never while this process generates a
 * key pair on t (p11_token.index_lock). */
CK_RV p11_token_find_init(p11_token *t, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl,
                          CK_ULONG n);
/* Around C_GenerateKeyPair: no search on t meanwhile (p11_token.index_lock). */
void p11_token_generating(p11_token *t);
void p11_token_generated(p11_token *t);
/* The token lost our sessions (sessions != 0: every session, e.g. removal or
 * an invalid session handle) or only our login: new epoch, no login, and
 * with sessions every pool session is reopened before use. */
void p11_token_lost(p11_token *t, int sessions);
/* After the token forgot our login: log in again with the PIN that worked. */
CK_RV p11_token_relogin(p11_token *t);
/* C_Login(CKU_CONTEXT_SPECIFIC) on session h, right after C_SignInit or
 * C_DecryptInit with a key whose CKA_ALWAYS_AUTHENTICATE is true, with the
 * PIN the user login was made with; name is the key, for messages. */
CK_RV p11_token_context_login(p11_token *t, CK_SESSION_HANDLE h, const char *name);

/* CKR_OK when the token lists the mechanism; else CKR_MECHANISM_INVALID with a
 * failure text naming it. */
CK_RV p11_token_check_mech(p11_token *t, CK_MECHANISM_TYPE mech);
/* The same question without a failure text, for choosing among mechanisms:
 * 1 when the token lists it or cannot tell (the operation will answer), 0
 * when it does not. */
int p11_token_has_mech(p11_token *t, CK_MECHANISM_TYPE mech);

/* Session objects on the token's object session. The handle is valid in
 * the module generation returned in *gen (objects die with fork or
 * re-initialisation: compare with m->gen before use). */
CK_RV p11_token_create_object(p11_token *t, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                              CK_OBJECT_HANDLE *out, unsigned *gen);
CK_RV p11_token_copy_object(p11_token *t, CK_OBJECT_HANDLE src, CK_ATTRIBUTE *tmpl,
                            CK_ULONG n, CK_OBJECT_HANDLE *out, unsigned *gen);
/* Destroys an object made in generation gen (nothing if that is gone). */
void p11_token_destroy_object(p11_token *t, CK_OBJECT_HANDLE o, unsigned gen);

/* Used by p11_module on re-initialisation and teardown. */
void p11_tokens_forget_sessions(p11_module *m);
/* The fork child handler (one thread): fresh token and pool locks, since a
 * parent thread may have held them at fork time. */
void p11_tokens_reset_locks(p11_module *m);
void p11_tokens_free(p11_module *m);
/* The pools of all of m's tokens, added up (for diagnostics and bench/). */
void p11_tokens_pool_stats(p11_module *m, p11_pool_stat *sum);

#endif
