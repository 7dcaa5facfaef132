/* Where the PIN comes from: the URI (pin-value, pin-source), the configuration
 * (pkcs11-module-token-pin, a literal or file:PATH), or OpenSSL's passphrase
 * callback, so that `openssl` prompts when nothing else supplies one, else
 * the terminal; and which token each PIN belongs to (pin_belongs). */
#include "hp_provider.h"

#include "p11_failure.h"
#include "p11_names.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/ui.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_PIN 256

/* The path as config or URI text gave it, fit for a message: control
 * characters and backslashes escaped, cut (with "...") to fit out. */
static void shown_path(const char *path, char *out, size_t outlen)
{
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
        char esc[5];
        size_t n;

        if (*p < 0x20 || *p == 0x7f)
            n = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", *p);
        else if (*p == '\\')
            n = (size_t)snprintf(esc, sizeof(esc), "\\\\");
        else
            n = (size_t)snprintf(esc, sizeof(esc), "%c", *p);
        if (o + n + 4 > outlen) {
            memcpy(out + o, "...", 4);
            return;
        }
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = '\0';
}

/* A PIN source we cannot use: refused before any C_Login, so that no PIN
 * try of the token is spent on it. */
static CK_RV no_login(p11_token *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static CK_RV no_login(p11_token *t, const char *fmt, ...)
{
    char what[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return p11_fail(P11_RV_NEED_PIN, "C_Login",
                    "token \"%s\": %s; no login was attempted", t->label, what);
}

static const char *kind_of(mode_t mode)
{
    return S_ISFIFO(mode)   ? "a FIFO"
           : S_ISDIR(mode)  ? "a directory"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISSOCK(mode) ? "a socket"
                            : "of another kind";
}

/* Opens a PIN file that is a regular file, and nothing else: a FIFO would
 * block us (and a writer could feed us anything), a directory or device
 * reads as garbage that C_Login would spend a PIN try on. Symbolic links are
 * followed (secrets are mounted that way, e.g. under /run/secrets); what
 * they lead to must be a regular file. */
static CK_RV open_pin_file(p11_token *t, const char *path, const char *shown, int *fd)
{
    struct stat st;
    char err[128];

    /* Look before opening: opening a device can act (a tape rewinds, a
     * terminal becomes ours) before fstat could refuse it. */
    if (stat(path, &st) != 0)
        goto cannot;
    if (!S_ISREG(st.st_mode))
        goto refuse;
    /* O_NONBLOCK: should a FIFO take the file's place meanwhile, opening it
     * does not wait for a writer. */
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (*fd < 0)
        goto cannot;
    /* What we opened may have been put there after we looked. */
    if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(*fd);
        *fd = -1;
        goto refuse;
    }
    return CKR_OK;
cannot:
    return no_login(t, "cannot read the PIN file %s: %s", shown,
                    strerror_r(errno, err, sizeof(err)));
refuse:
    return no_login(t, "the PIN file %s is %s, not a regular file", shown,
                    kind_of(st.st_mode));
}

/* The first line of buf (n bytes, read from a file that may go on), without
 * its line end (\n or \r\n); a line that does not end within buf is as long
 * as buf, too long for a PIN. */
static size_t first_line(const char *buf, size_t n, size_t cap)
{
    const char *nl = memchr(buf, '\n', n);
    size_t line = nl != NULL ? (size_t)(nl - buf) : n;

    if (nl == NULL && n == cap)
        return cap;
    if (line > 0 && buf[line - 1] == '\r')
        line--;
    return line;
}

/* Reads a PIN file: its first line. A line longer than MAX_PIN, an empty one
 * or one with a NUL byte is refused before any C_Login: cutting or sending
 * it would spend a PIN try on a PIN nobody meant. */
static CK_RV read_pin_file(p11_token *t, const char *spec, char *pin, size_t *len)
{
    const char *path = strncmp(spec, "file:", 5) == 0 ? spec + 5 : spec;
    /* MAX_PIN bytes and "\r\n": a first line that does not end within
     * it is too long. */
    char shown[200], buf[MAX_PIN + 2], err[128];
    size_t n = 0, line;
    int fd = -1;
    CK_RV rv;

    /* pin-source may be a file: URI. */
    if (strncmp(path, "//", 2) == 0)
        path += 2;
    shown_path(path, shown, sizeof(shown));
    rv = open_pin_file(t, path, shown, &fd);
    if (rv != CKR_OK)
        return rv;
    while (n < sizeof(buf)) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rv = no_login(t, "cannot read the PIN file %s: %s", shown,
                          strerror_r(errno, err, sizeof(err)));
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    line = first_line(buf, n, sizeof(buf));
    if (rv == CKR_OK && line > MAX_PIN)
        rv = no_login(t, "the PIN in %s is longer than %d bytes", shown, MAX_PIN);
    else if (rv == CKR_OK && line == 0)
        rv = no_login(t, "the first line of the PIN file %s is empty", shown);
    else if (rv == CKR_OK && memchr(buf, '\0', line) != NULL)
        rv = no_login(t, "the PIN in %s contains a NUL byte", shown);
    if (rv == CKR_OK) {
        memcpy(pin, buf, line);
        *len = line;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return rv;
}

/* A literal PIN (URI pin-value, configuration) within MAX_PIN bytes: a
 * longer one is refused, not cut. */
static CK_RV literal_pin(p11_token *t, const char *value, const char *source, char *pin,
                         size_t *len)
{
    size_t n = strlen(value);

    if (n > MAX_PIN)
        return no_login(t, "the PIN in %s is longer than %d bytes", source, MAX_PIN);
    memcpy(pin, value, n);
    *len = n;
    return CKR_OK;
}

static int ask_callback(p11_token *t, OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg,
                        char *pin, size_t *len)
{
    char info[96];
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PASSPHRASE_PARAM_INFO, info, 0),
        OSSL_PARAM_END,
    };

    snprintf(info, sizeof(info), "PIN for PKCS#11 token \"%s\"", t->label);
    params[0].data_size = strlen(info);
    return cb(pin, MAX_PIN, len, params, cbarg);
}

/* OpenSSL's own terminal prompt (UI_OpenSSL, the default UI method), when
 * the caller's way of asking failed: an OSSL_STORE opened without a UI
 * method hands us a callback that always fails, and the program would never
 * be asked. Only where there is a terminal: without one the default method
 * would read stdin, which in a daemon may be anything, or block. */
static int ask_terminal(p11_token *t, char *pin, size_t *len)
{
    char label[sizeof(t->label) * 4], prompt[200];
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    UI *ui;
    int ok;

    if (fd < 0)
        return 0;
    close(fd);
    if ((ui = UI_new()) == NULL)
        return 0;
    /* The label is the token's text: no control character reaches the
     * terminal through it. */
    p11_escape_controls(label, sizeof(label), t->label);
    snprintf(prompt, sizeof(prompt), "Enter PIN for PKCS#11 token \"%s\": ", label);
    ok = UI_add_input_string(ui, prompt, 0, pin, 1, MAX_PIN) >= 0 && UI_process(ui) == 0;
    UI_free(ui);
    if (ok)
        *len = strnlen(pin, MAX_PIN);
    return ok;
}

/* The PIN asked for: the caller's callback, else the terminal. No callback
 * at all (a cipher's token key) means the caller has no one to ask: a raw
 * cipher key needs no login, and a prompt there would surprise. */
static CK_RV ask(p11_token *t, OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg, char *pin,
                 size_t *len)
{
    if (cb == NULL)
        return p11_fail(P11_RV_NEED_PIN, "C_Login",
                        "token \"%s\" needs a PIN: set pkcs11-module-token-pin, or give "
                        "pin-value or pin-source in the URI",
                        t->label);
    ERR_set_mark();
    if (ask_callback(t, cb, cbarg, pin, len)) {
        ERR_clear_last_mark();
        return CKR_OK;
    }
    if (ask_terminal(t, pin, len)) {
        /* What the failed callback raised is history now. */
        ERR_pop_to_mark();
        return CKR_OK;
    }
    ERR_clear_last_mark();
    return p11_fail(P11_RV_NEED_PIN, "C_Login",
                    "token \"%s\" needs a PIN and none was given", t->label);
}

/* Whether the configured PIN (config_ok) and a prompt (ask_ok) may be spent
 * on t. A PIN belongs to one token: sent to another it costs that token a
 * try (through p11-kit's proxy, any smart card of the system). The
 * configured PIN belongs to the tokens pkcs11-token-pin-for selects, or
 * without it to the token the URI selects alone (the module's only token,
 * for a URI that names none); a prompt names its token, and is made for
 * the token the URI selects alone. Otherwise nothing is spent, and the
 * failure says why. */
static CK_RV pin_belongs(hp_provctx *pctx, p11_token *t, const p11_uri *uri,
                         int *config_ok, int *ask_ok)
{
    size_t n;
    int has_t;
    CK_RV rv = p11_token_count_selected(t, uri, &n, &has_t);

    if (rv != CKR_OK)
        return rv;
    *ask_ok = n == 1 && has_t;
    *config_ok = pctx->pin_for != NULL ? p11_token_matches(t, pctx->pin_for) : *ask_ok;
    if (*ask_ok || (*config_ok && pctx->token_pin != NULL))
        return CKR_OK;
    if (pctx->pin_for != NULL)
        return no_login(t,
                        "no PIN was given for it: the configured PIN is for %s "
                        "(pkcs11-token-pin-for), and %s selects %zu tokens that take one",
                        pctx->pin_for->shown, uri != NULL ? uri->shown : "the search", n);
    return no_login(t,
                    "no PIN was given for it: %s selects %zu tokens that take one, and a "
                    "PIN is spent "
                    "only on a token named alone (name it in the URI, give pin-value or "
                    "pin-source there, or bind the configured PIN with "
                    "pkcs11-token-pin-for)",
                    uri != NULL ? uri->shown : "the search", n);
}

CK_RV hp_login(hp_provctx *pctx, p11_token *t, const p11_uri *uri,
               OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    char pin[MAX_PIN + 1];
    size_t len = 0;
    int config_ok = 0, ask_ok = 0;
    CK_RV rv = CKR_OK;

    if (!p11_token_needs_login(t))
        return CKR_OK;
    /* A PIN in the URI belongs to every token the URI selects. */
    if (uri != NULL && uri->pin_value != NULL) {
        rv = literal_pin(t, uri->pin_value, "the URI's pin-value", pin, &len);
    } else if (uri != NULL && uri->pin_source != NULL) {
        rv = read_pin_file(t, uri->pin_source, pin, &len);
    } else if ((rv = pin_belongs(pctx, t, uri, &config_ok, &ask_ok)) != CKR_OK) {
        /* nothing is spent */
    } else if (pctx->token_pin != NULL && config_ok) {
        if (strncmp(pctx->token_pin, "file:", 5) == 0)
            rv = read_pin_file(t, pctx->token_pin, pin, &len);
        else
            rv = literal_pin(t, pctx->token_pin, "pkcs11-module-token-pin", pin, &len);
    } else {
        rv = ask(t, pw_cb, pw_cbarg, pin, &len);
    }
    if (rv == CKR_OK)
        rv = p11_token_login(t, pin, len);
    OPENSSL_cleanse(pin, sizeof(pin));
    return rv;
}
