/*
 * tlsload: fresh TLS handshakes against a real server, from many threads at
 * once, for a fixed time; prints how many succeeded and the rate.
 *
 * Each thread loops: TCP connect, a full handshake with SNI (no session
 * ticket, no session cache: never a resumption), the server's chain verified
 * against the CA file and its name, one HTTP GET, the whole response read
 * (until the server closes) and its status and body checked, close. A
 * connection counts as a success only when all of that went right. Threads
 * start no new connection once the time is up; the rate is the successes
 * divided by the time from the common start to the end of the last thread's
 * last connection, so that no connection is counted without its time.
 *
 * The client must not load a provider that touches the server's token: run
 * it with OPENSSL_CONF=/dev/null (bench/servers.sh does).
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define MAX_THREADS 256
#define RESP_MAX 16384
#define MAX_REPORTED 5
#define IO_TIMEOUT_S 10

static struct {
    const char *host;
    const char *port;
    const char *sni;
    const char *ca;
    const char *path;
    const char *expect;
    const char *ciphers;
    int threads;
    double seconds;
    int version; /* TLS1_3_VERSION or TLS1_2_VERSION */
} opt = {
    .host = "127.0.0.1",
    .path = "/hello.txt",
    .expect = "hsmprov TLS test page",
    .threads = 16,
    .seconds = 10.0,
    .version = TLS1_3_VERSION,
};

static SSL_CTX *ctx;
static struct addrinfo *addr;
static char request[512];
static long long deadline_ns;
static atomic_int reported;
static pthread_barrier_t start_bar;

struct worker {
    pthread_t th;
    unsigned long ok, failed;
    long long t0, t1;
};

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("tlsload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static long long now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Only the first few failures are described: a server that fails every
 * connection would otherwise flood the output and slow the other threads. */
static void report(const char *what, SSL *ssl, int ret)
{
    char buf[256] = "";
    unsigned long e;

    if (atomic_fetch_add(&reported, 1) >= MAX_REPORTED)
        return;
    if (ssl != NULL) {
        int se = SSL_get_error(ssl, ret);
        long vr = SSL_get_verify_result(ssl);

        e = ERR_peek_last_error();
        if (e != 0)
            ERR_error_string_n(e, buf, sizeof(buf));
        else if (se == SSL_ERROR_SYSCALL)
            snprintf(buf, sizeof(buf), "%s", errno ? strerror(errno) : "unexpected EOF");
        fprintf(stderr, "tlsload: failed: %s: SSL error %d%s%s%s%s\n", what, se,
                buf[0] ? ": " : "", buf, vr != X509_V_OK ? "; verify: " : "",
                vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
    } else {
        fprintf(stderr, "tlsload: failed: %s%s%s\n", what, ret ? ": " : "",
                ret ? strerror(ret) : "");
    }
}

static int tcp_connect(void)
{
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    int one = 1, fd;

    fd = socket(addr->ai_family, addr->ai_socktype | SOCK_CLOEXEC, addr->ai_protocol);
    if (fd < 0) {
        report("socket", NULL, errno);
        return -1;
    }
    /* A server that stops answering must end in a failure, not a hang. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, addr->ai_addr, addr->ai_addrlen) != 0) {
        report("connect", NULL, errno);
        close(fd);
        return -1;
    }
    return fd;
}

/* The response is complete when the server closes; it must be a 200 whose
 * body holds the expected text. */
static int check_response(const char *resp, size_t len)
{
    const char *body = strstr(resp, "\r\n\r\n");
    char what[160];

    if (len < 12 ||
        (strncmp(resp, "HTTP/1.1 200", 12) && strncmp(resp, "HTTP/1.0 200", 12)) ||
        body == NULL || strstr(body + 4, opt.expect) == NULL) {
        snprintf(what, sizeof(what), "unexpected response (%zu bytes): %.60s", len, resp);
        for (char *c = what; *c; c++)
            if (*c == '\r' || *c == '\n')
                *c = ' ';
        report(what, NULL, 0);
        return 0;
    }
    return 1;
}

static int one_connection(void)
{
    char resp[RESP_MAX + 1];
    size_t len = 0;
    int fd, ret, ok = 0;
    SSL *ssl;

    if ((fd = tcp_connect()) < 0)
        return 0;
    ssl = SSL_new(ctx);
    if (ssl == NULL || !SSL_set_fd(ssl, fd) || !SSL_set_tlsext_host_name(ssl, opt.sni) ||
        !SSL_set1_host(ssl, opt.sni)) {
        report("SSL_new", ssl, 0);
        goto out;
    }
    if ((ret = SSL_connect(ssl)) != 1) {
        report("handshake", ssl, ret);
        goto out;
    }
    if ((ret = SSL_write(ssl, request, (int)strlen(request))) <= 0) {
        report("write", ssl, ret);
        goto out;
    }
    for (;;) {
        if (len == RESP_MAX) {
            report("response longer than 16 KiB", NULL, 0);
            goto out;
        }
        ret = SSL_read(ssl, resp + len, (int)(RESP_MAX - len));
        if (ret > 0) {
            len += (size_t)ret;
            continue;
        }
        if (SSL_get_error(ssl, ret) == SSL_ERROR_ZERO_RETURN)
            break;
        report("read", ssl, ret);
        goto out;
    }
    resp[len] = '\0';
    ok = check_response(resp, len);
out:
    /* The server closed first (Connection: close) and holds the TIME_WAIT;
     * nothing more to say to it. */
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return ok;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    pthread_barrier_wait(&start_bar);
    w->t0 = now_ns();
    while (now_ns() < deadline_ns) {
        if (one_connection())
            w->ok++;
        else
            w->failed++;
    }
    w->t1 = now_ns();
    OPENSSL_thread_stop();
    return NULL;
}

static void usage(int status)
{
    fputs("usage: tlsload --port PORT --sni NAME --ca FILE [options]\n"
          "  --host HOST        server address (default 127.0.0.1)\n"
          "  --port PORT        server port\n"
          "  --sni NAME         server name: sent as SNI, checked in the certificate\n"
          "  --ca FILE          CA certificates to verify the server's chain\n"
          "  --threads N        parallel clients (default 16)\n"
          "  --seconds S        how long to start new connections (default 10)\n"
          "  --tls 1.3|1.2      protocol version (default 1.3)\n"
          "  --ciphers LIST     TLS 1.3 cipher suites, or the TLS 1.2 cipher list\n"
          "  --path PATH        what to GET (default /hello.txt)\n"
          "  --expect TEXT      the response body must contain it\n"
          "                     (default \"hsmprov TLS test page\")\n"
          "Prints: handshakes N failed N seconds S rate R\n",
          status ? stderr : stdout);
    exit(status);
}

/* A host name as SNI and in the Host header: letters, digits, '-' and '.'. */
static int valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 253)
        return 0;
    return strspn(s,
                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
           n;
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, NULL, 'H'},   {"port", 1, NULL, 'p'},    {"sni", 1, NULL, 'n'},
        {"ca", 1, NULL, 'c'},     {"threads", 1, NULL, 't'}, {"seconds", 1, NULL, 's'},
        {"tls", 1, NULL, 'v'},    {"ciphers", 1, NULL, 'C'}, {"path", 1, NULL, 'P'},
        {"expect", 1, NULL, 'e'}, {"help", 0, NULL, 'h'},    {NULL, 0, NULL, 0},
    };
    char *end;
    long l;
    int ch;

    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            l = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || l < 1 || l > 65535)
                die("bad port: %s", optarg);
            opt.port = optarg;
            break;
        case 'n':
            if (!valid_name(optarg))
                die("bad server name: %s", optarg);
            opt.sni = optarg;
            break;
        case 'c':
            opt.ca = optarg;
            break;
        case 't':
            l = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || l < 1 || l > MAX_THREADS)
                die("bad thread count (1 to %d): %s", MAX_THREADS, optarg);
            opt.threads = (int)l;
            break;
        case 's':
            opt.seconds = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' ||
                !(opt.seconds > 0 && opt.seconds <= 86400))
                die("bad seconds: %s", optarg);
            break;
        case 'v':
            if (strcmp(optarg, "1.3") == 0)
                opt.version = TLS1_3_VERSION;
            else if (strcmp(optarg, "1.2") == 0)
                opt.version = TLS1_2_VERSION;
            else
                die("bad TLS version (1.3 or 1.2): %s", optarg);
            break;
        case 'C':
            opt.ciphers = optarg;
            break;
        case 'P':
            if (optarg[0] != '/' || strlen(optarg) > 200 ||
                strpbrk(optarg, " \r\n\t") != NULL)
                die("bad path: %s", optarg);
            opt.path = optarg;
            break;
        case 'e':
            if (optarg[0] == '\0')
                die("empty --expect");
            opt.expect = optarg;
            break;
        case 'h':
            usage(0);
            break;
        default:
            usage(2);
        }
    }
    if (optind != argc || opt.port == NULL || opt.sni == NULL || opt.ca == NULL)
        usage(2);
}

static void setup(void)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int rc;

    if ((rc = getaddrinfo(opt.host, opt.port, &hints, &addr)) != 0)
        die("%s port %s: %s", opt.host, opt.port, gai_strerror(rc));
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, opt.version) ||
        !SSL_CTX_set_max_proto_version(ctx, opt.version))
        die("cannot make the TLS context");
    /* Every connection a full handshake: no ticket asked for, nothing kept.
     * A server that closes without close_notify after a complete response
     * is not a failed handshake; the response itself is checked. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != 1)
        die("cannot read CA certificates from %s", opt.ca);
    if (opt.ciphers != NULL) {
        rc = opt.version == TLS1_3_VERSION ? SSL_CTX_set_ciphersuites(ctx, opt.ciphers)
                                           : SSL_CTX_set_cipher_list(ctx, opt.ciphers);
        if (rc != 1)
            die("bad cipher list: %s", opt.ciphers);
    }
    rc = snprintf(request, sizeof(request),
                  "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", opt.path,
                  opt.sni);
    if (rc < 0 || (size_t)rc >= sizeof(request))
        die("request too long");
}

int main(int argc, char **argv)
{
    struct worker *w;
    unsigned long ok = 0, failed = 0;
    long long t0 = 0, t1 = 0;
    double secs;
    int i;

    parse_args(argc, argv);
    /* A server that closes while we write must give an error, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    setup();

    w = calloc((size_t)opt.threads, sizeof(*w));
    if (w == NULL ||
        pthread_barrier_init(&start_bar, NULL, (unsigned)opt.threads + 1) != 0)
        die("out of memory");
    for (i = 0; i < opt.threads; i++)
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
            die("cannot start thread %d", i);
    /* The deadline is set before the threads are released, so all of them
     * see it. */
    deadline_ns = now_ns() + (long long)(opt.seconds * 1e9);
    pthread_barrier_wait(&start_bar);
    for (i = 0; i < opt.threads; i++) {
        pthread_join(w[i].th, NULL);
        ok += w[i].ok;
        failed += w[i].failed;
        if (i == 0 || w[i].t0 < t0)
            t0 = w[i].t0;
        if (i == 0 || w[i].t1 > t1)
            t1 = w[i].t1;
    }
    secs = (double)(t1 - t0) / 1e9;
    printf("handshakes %lu failed %lu seconds %.2f rate %.1f\n", ok, failed, secs,
           secs > 0 ? (double)ok / secs : 0.0);
    free(w);
    freeaddrinfo(addr);
    SSL_CTX_free(ctx);
    return 0;
}
