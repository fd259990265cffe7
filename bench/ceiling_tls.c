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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench.h"

#define RBUF_SIZE (256 * 1024)
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
    SSL_CTX *ctx;
} g;

/* After die's message: what OpenSSL says went wrong. */
static void print_ssl_errors(void)
{
    ERR_print_errors_fp(stderr);
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

/* ---- setup ------------------------------------------------------------ */

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

int main(int argc, char **argv)
{
    bench_name = "ceiling_tls";
    bench_on_die = print_ssl_errors;
    if (argc != 4) {
        fputs("usage: ceiling_tls PORT CERT KEY\n", stderr);
        return 2;
    }
    g.ctx = make_ctx(argv[2], argv[3]);
    int lfd = bench_listen_port(argv[1]);
    g.base = event_base_new();
    if (!g.base)
        die("event_base_new");
    bench_serve(g.base, lfd, conn_open);
    event_base_free(g.base);
    SSL_CTX_free(g.ctx);
    return 0;
}
