/*
 * A TLS 1.2 client with RSA key exchange whose ClientKeyExchange can be
 * replaced, on the wire, by an encryption of a premaster secret of our own
 * making: well-formed but not the client's, or malformed in one way or
 * another. A server that answers a malformed one differently from a
 * well-formed wrong one (another alert, an earlier alert, a dropped
 * connection) is a padding oracle.
 *
 *   tls_cke_tamper HOST PORT CERT MODE
 *
 *   CERT  the server's certificate (PEM), also the trust anchor
 *   MODE  none          the client's own ClientKeyExchange (must succeed)
 *         wrong_secret  00 02 PS 00 03 03 R[46]: well-formed, another secret
 *         bad_head      00 01 instead of 00 02
 *         zero_in_ps    a zero byte in the 4th byte of PS (|PS| < 8)
 *         no_separator  no zero byte before the secret (another length)
 *         bad_version   03 02 (TLS 1.1) as the client version of the secret
 *
 * Prints "handshake ok" or "handshake failed: ALERT-OR-REASON" and exits 0
 * when the handshake completed, 1 when it failed, 2 on a failure of the
 * test itself. The client's TLS runs over memory BIOs; this program carries
 * the records between them and the socket and rewrites the one it must.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char *mode;
static EVP_PKEY *server_pub;
static char alert[128];
static int tampered;

static void die(const char *what)
{
    fprintf(stderr, "tls_cke_tamper: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void on_info(const SSL *ssl, int where, int ret)
{
    (void)ssl;
    if ((where & SSL_CB_READ_ALERT) != 0 && alert[0] == '\0')
        snprintf(alert, sizeof(alert), "alert %s from the server",
                 SSL_alert_desc_string_long(ret));
}

/* The encrypted premaster secret of MODE, k bytes, into out. */
static void forge(unsigned char *out, size_t k)
{
    unsigned char *em = malloc(k);
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(server_pub, NULL);
    size_t i, outlen = k;

    if (em == NULL || pc == NULL || RAND_bytes(em, (int)k) != 1)
        die("no memory or no random bytes");
    em[0] = 0x00;
    em[1] = 0x02;
    for (i = 2; i < k - 49; i++)
        em[i] |= 0x01; /* PS: no zero */
    em[k - 49] = 0x00;
    em[k - 48] = 0x03;
    em[k - 47] = 0x03;
    if (strcmp(mode, "bad_head") == 0)
        em[1] = 0x01;
    else if (strcmp(mode, "zero_in_ps") == 0)
        em[5] = 0x00;
    else if (strcmp(mode, "no_separator") == 0)
        em[k - 49] = 0x01;
    else if (strcmp(mode, "bad_version") == 0)
        em[k - 47] = 0x02;
    else if (strcmp(mode, "wrong_secret") != 0)
        die("unknown mode");
    if (EVP_PKEY_encrypt_init(pc) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(pc, RSA_NO_PADDING) <= 0 ||
        EVP_PKEY_encrypt(pc, out, &outlen, em, k) <= 0 || outlen != k)
        die("RSA encryption of the forged premaster secret");
    EVP_PKEY_CTX_free(pc);
    free(em);
}

/* Rewrites the ClientKeyExchange in one handshake record, if it is there. */
static void rewrite_record(unsigned char *body, size_t len)
{
    size_t off = 0;

    while (off + 4 <= len) {
        size_t mlen =
            (size_t)body[off + 1] << 16 | (size_t)body[off + 2] << 8 | body[off + 3];

        if (off + 4 + mlen > len)
            die("a handshake message split over records");
        if (body[off] == 16 /* client_key_exchange */) {
            size_t k = (size_t)body[off + 4] << 8 | body[off + 5];

            if (k + 2 != mlen || k != (size_t)EVP_PKEY_get_size(server_pub))
                die("ClientKeyExchange of an unexpected length");
            forge(body + off + 6, k);
            tampered = 1;
        }
        off += 4 + mlen;
    }
}

/* Sends what the client wrote, whole records only; keeps the rest. */
static void flush_out(int fd, BIO *wb, unsigned char *buf, size_t *have, size_t cap)
{
    size_t off = 0;
    int n;

    while ((n = BIO_read(wb, buf + *have, (int)(cap - *have))) > 0)
        *have += (size_t)n;
    while (off + 5 <= *have) {
        size_t rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];

        if (off + 5 + rlen > *have)
            break;
        /* Only the plaintext handshake records before ChangeCipherSpec. */
        if (buf[off] == 22 && !tampered && strcmp(mode, "none") != 0)
            rewrite_record(buf + off + 5, rlen);
        if (send(fd, buf + off, 5 + rlen, MSG_NOSIGNAL) != (ssize_t)(5 + rlen))
            die("send");
        off += 5 + rlen;
    }
    memmove(buf, buf + off, *have - off);
    *have -= off;
}

int main(int argc, char **argv)
{
    static unsigned char out[1 << 16], in[1 << 16];
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval tv = {.tv_sec = 60};
    size_t have = 0;
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rb, *wb, *certbio;
    X509 *cert;
    int fd, r, err;

    if (argc != 5)
        die("usage: tls_cke_tamper HOST PORT CERT MODE");
    mode = argv[4];
    if ((certbio = BIO_new_file(argv[3], "r")) == NULL ||
        (cert = PEM_read_bio_X509(certbio, NULL, NULL, NULL)) == NULL ||
        (server_pub = X509_get_pubkey(cert)) == NULL)
        die("cannot read the certificate");
    BIO_free(certbio);
    X509_free(cert);

    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, "AES128-GCM-SHA256") ||
        !SSL_CTX_load_verify_file(ctx, argv[3]))
        die("client context");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(ctx);
    rb = BIO_new(BIO_s_mem());
    wb = BIO_new(BIO_s_mem());
    if (ssl == NULL || rb == NULL || wb == NULL)
        die("client connection");
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(ssl, rb, wb);
    SSL_set_info_callback(ssl, on_info);
    SSL_set_connect_state(ssl);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_port = htons((unsigned short)atoi(argv[2]));
    if (fd < 0 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("connect");

    for (;;) {
        r = SSL_do_handshake(ssl);
        flush_out(fd, wb, out, &have, sizeof(out));
        if (r == 1)
            break;
        err = SSL_get_error(ssl, r);
        if (err == SSL_ERROR_WANT_READ) {
            ssize_t n = recv(fd, in, sizeof(in), 0);

            if (n > 0) {
                BIO_write(rb, in, (int)n);
            } else {
                if (n < 0)
                    snprintf(alert, sizeof(alert), "no answer within %ld s",
                             (long)tv.tv_sec);
                else if (alert[0] == '\0')
                    snprintf(alert, sizeof(alert), "connection closed by the server");
                break;
            }
            continue;
        }
        if (alert[0] == '\0')
            snprintf(alert, sizeof(alert), "%s",
                     ERR_reason_error_string(ERR_peek_last_error()) != NULL
                         ? ERR_reason_error_string(ERR_peek_last_error())
                         : "error");
        break;
    }
    close(fd);
    if (strcmp(mode, "none") != 0 && !tampered)
        die("no ClientKeyExchange went out");
    if (r == 1)
        printf("handshake ok: %s %s\n", SSL_get_version(ssl), SSL_get_cipher(ssl));
    else
        printf("handshake failed: %s\n", alert);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    EVP_PKEY_free(server_pub);
    return r == 1 ? 0 : 1;
}
