/*
 * ceiling_tls: the TLS twin of ceiling.c — the fastest length-prefixed echo
 * over TLS we know how to write on libevent + OpenSSL, as the reference
 * luacomm's TLS is compared against (`make bench`).
 *
 * Same wire format and the same shape as ceiling.c: one event per
 * connection; each readiness event runs SSL_read into a shared 256 KiB
 * buffer until OpenSSL has nothing more, and every run of complete frames
 * goes back with one SSL_write straight from that buffer. Only an
 * incomplete trailing frame is kept per connection (an evbuffer), and bytes
 * the socket would not take wait in a backlog with EV_WRITE on; reading
 * stops while the backlog is large. The handshake runs on the same event.
 *
 * The context is what luacomm's defaults amount to: TLS 1.2 minimum,
 * OpenSSL's default ciphers and groups, session tickets on, no client
 * certificate asked for.
 *
 * usage: ceiling_tls PORT CERT KEY   (listens on 127.0.0.1:PORT until
 * SIGINT/SIGTERM, exit 0)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define RBUF_SIZE (256 * 1024)
#define MAX_FRAME (16u << 20)
#define BACKLOG_HIGH (4u << 20)
#define BACKLOG_LOW (1u << 20)
#define WRITE_CHUNK (16 * 1024)

struct conn {
    int fd;
    bool handshaking;
    short events;
    struct event *ev;
    SSL *ssl;
    struct evbuffer *part;           /* an incomplete frame, when there is one */
    struct evbuffer *backlog;        /* what the socket did not take */
};

static uint8_t rbuf[RBUF_SIZE];

static struct {
    struct event_base *base;
    struct event *listener, *accept_retry;
    SSL_CTX *ctx;
} g;

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void die(const char *what)
{
    fprintf(stderr, "ceiling_tls: %s: %s\n", what, strerror(errno));
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void conn_close(struct conn *c)
{
    event_free(c->ev);
    SSL_free(c->ssl);
    close(c->fd);
    evbuffer_free(c->part);
    evbuffer_free(c->backlog);
    free(c);
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg);

/* Sets the event's interest; EV_WRITE while there is a backlog (or the
 * handshake or a write wants it), EV_READ off above the high-water mark. */
static void conn_set_interest(struct conn *c, short want)
{
    if (want == c->events)
        return;
    event_del(c->ev);
    event_assign(c->ev, g.base, c->fd, want | EV_PERSIST, on_conn_event, c);
    event_add(c->ev, NULL);
    c->events = want;
}

static void conn_update_interest(struct conn *c)
{
    size_t pending = evbuffer_get_length(c->backlog);
    short want = c->events;
    if (pending > 0)
        want |= EV_WRITE;
    else
        want &= ~EV_WRITE;
    if (pending >= BACKLOG_HIGH)
        want &= ~EV_READ;
    else if (pending <= BACKLOG_LOW)
        want |= EV_READ;
    conn_set_interest(c, want);
}

/* SSL_write of data; what the socket does not take now goes to the backlog
 * (OpenSSL accepts the retry from there: moving-buffer mode). False if the
 * connection was closed. */
static bool conn_send(struct conn *c, const uint8_t *data, size_t len)
{
    while (len > 0 && evbuffer_get_length(c->backlog) == 0) {
        size_t n;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, data, len, &n) != 1) {
            int e = SSL_get_error(c->ssl, 0);
            if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
                conn_close(c);
                return false;
            }
            break;
        }
        data += n;
        len -= n;
    }
    if (len > 0) {
        evbuffer_add(c->backlog, data, len);
        conn_update_interest(c);
    }
    return true;
}

static bool conn_flush_backlog(struct conn *c)
{
    size_t len;
    while ((len = evbuffer_get_length(c->backlog)) > 0) {
        size_t n, chunk = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        const uint8_t *p = evbuffer_pullup(c->backlog, (ev_ssize_t)chunk);
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, p, chunk, &n) != 1) {
            int e = SSL_get_error(c->ssl, 0);
            if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
                conn_close(c);
                return false;
            }
            break;
        }
        evbuffer_drain(c->backlog, n);
    }
    conn_update_interest(c);
    return true;
}

/* Length of the complete frames at the start of buf[0..len); *bad is set on
 * an oversized announcement. */
static size_t complete_frames(const uint8_t *buf, size_t len, bool *bad)
{
    size_t off = 0;
    while (len - off >= 4) {
        uint32_t flen = load_be32(buf + off);
        if (flen > MAX_FRAME) {
            *bad = true;
            return off;
        }
        if (len - off - 4 < flen)
            break;
        off += 4 + (size_t)flen;
    }
    return off;
}

/* The bytes in buf: complete frames go back, the rest waits in part. With a
 * part already waiting, buf joins it first (the slow path: one copy). */
static bool conn_consume(struct conn *c, const uint8_t *buf, size_t len)
{
    bool bad = false;
    size_t done;
    if (evbuffer_get_length(c->part) > 0) {
        uint8_t hdr[4];
        evbuffer_add(c->part, buf, len);
        len = evbuffer_get_length(c->part);
        if (len < 4)
            return true;
        evbuffer_copyout(c->part, hdr, 4);
        if (load_be32(hdr) <= MAX_FRAME && len < 4 + (size_t)load_be32(hdr))
            return true;            /* still incomplete: no pullup yet */
        buf = evbuffer_pullup(c->part, -1);
        done = complete_frames(buf, len, &bad);
        if (bad) {
            conn_close(c);
            return false;
        }
        if (!conn_send(c, buf, done))
            return false;
        evbuffer_drain(c->part, done);
        return true;
    }
    done = complete_frames(buf, len, &bad);
    if (bad) {
        conn_close(c);
        return false;
    }
    if (done > 0 && !conn_send(c, buf, done))
        return false;
    evbuffer_add(c->part, buf + done, len - done);
    return true;
}

/* Until OpenSSL has nothing more: decrypted bytes left inside it would never
 * make the socket readable again. */
static void conn_read(struct conn *c)
{
    for (;;) {
        size_t n;
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, rbuf, sizeof rbuf, &n) != 1) {
            int e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            conn_close(c);
            return;
        }
        if (!conn_consume(c, rbuf, n))
            return;
        if (!(c->events & EV_READ))
            return;                 /* backlog above the mark: stop reading */
    }
}

static void conn_handshake(struct conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshaking = false;
        conn_set_interest(c, EV_READ);
        conn_read(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        conn_set_interest(c, EV_READ);
    else if (e == SSL_ERROR_WANT_WRITE)
        conn_set_interest(c, EV_WRITE);
    else
        conn_close(c);
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    if (c->handshaking) {
        conn_handshake(c);
        return;
    }
    if ((what & EV_WRITE) && !conn_flush_backlog(c))
        return;
    if ((what & EV_READ) && (c->events & EV_READ))
        conn_read(c);
}

/* ---- accepting -------------------------------------------------------- */

static void conn_open(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->handshaking = true;
    c->events = EV_READ;
    c->ssl = SSL_new(g.ctx);
    c->part = evbuffer_new();
    c->backlog = evbuffer_new();
    c->ev = event_new(g.base, fd, EV_READ | EV_PERSIST, on_conn_event, c);
    if (!c->ssl || !c->part || !c->backlog || !c->ev || SSL_set_fd(c->ssl, fd) != 1 ||
        event_add(c->ev, NULL) < 0) {
        if (c->ev)
            event_free(c->ev);
        SSL_free(c->ssl);
        if (c->part)
            evbuffer_free(c->part);
        if (c->backlog)
            evbuffer_free(c->backlog);
        close(fd);
        free(c);
        return;
    }
    SSL_set_accept_state(c->ssl);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    event_add(g.listener, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what, (void)arg;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_open(fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
            struct timeval pause = { 0, 100 * 1000 };
            perror("ceiling_tls: accept");
            event_del(g.listener);
            evtimer_add(g.accept_retry, &pause);
            return;
        }
        if (errno != EINTR && errno != ECONNABORTED)
            return;
    }
}

/* ---- setup ------------------------------------------------------------ */

static int listen_on(const char *port_s)
{
    char *end;
    long port = strtol(port_s, &end, 10);
    if (*port_s == '\0' || *end || port < 1 || port > 65535) {
        fprintf(stderr, "ceiling_tls: bad port '%s'\n", port_s);
        exit(2);
    }
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t)port);
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        die("socket");
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("SO_REUSEADDR");
    if (bind(fd, (struct sockaddr *)&in, sizeof in) < 0)
        die("bind");
    if (listen(fd, SOMAXCONN) < 0)
        die("listen");
    return fd;
}

static SSL_CTX *make_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        die(cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        die(key);
    return ctx;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what, (void)arg;
    event_base_loopbreak(g.base);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fputs("usage: ceiling_tls PORT CERT KEY\n", stderr);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    g.ctx = make_ctx(argv[2], argv[3]);
    int lfd = listen_on(argv[1]);
    g.base = event_base_new();
    if (!g.base)
        die("event_base_new");
    g.listener = event_new(g.base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
    g.accept_retry = evtimer_new(g.base, on_accept_retry, NULL);
    struct event *sigint = evsignal_new(g.base, SIGINT, on_signal, NULL);
    struct event *sigterm = evsignal_new(g.base, SIGTERM, on_signal, NULL);
    if (!g.listener || !g.accept_retry || !sigint || !sigterm || event_add(g.listener, NULL) < 0 ||
        event_add(sigint, NULL) < 0 || event_add(sigterm, NULL) < 0)
        die("event setup");

    event_base_dispatch(g.base);

    event_free(sigterm);
    event_free(sigint);
    event_free(g.accept_retry);
    event_free(g.listener);
    close(lfd);
    event_base_free(g.base);
    SSL_CTX_free(g.ctx);
    return 0;
}
