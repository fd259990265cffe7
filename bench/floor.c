/*
 * floor: a libevent echo server that does what any runtime handing frames
 * to a script as strings must do at least: every frame's payload is copied
 * into a fresh malloc'ed buffer, and that buffer is freed once written to
 * the output.
 *
 * Wire format as bench/ceiling.c: u32 big-endian length (at most 16 MiB,
 * else the connection is closed), then that many payload bytes.
 *
 * Otherwise it is as lean as the ceiling: per readiness event one read()
 * into a shared buffer, every complete frame copied out into its own
 * allocation, which is written from (8 KiB and up) or copied into the
 * output buffer (smaller), then freed; one write for all of them. Reading
 * stops while the unsent output is large, so a client that does not read
 * cannot make us buffer without end.
 *
 * usage: floor PORT
 * Listens on 127.0.0.1:PORT until SIGINT/SIGTERM, exit 0.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bench.h"

#define RBUF_SIZE (256 * 1024)
#define OUT_HIGH (4u << 20)     /* stop reading above this much unsent */
#define BY_REFERENCE_MIN (8 * 1024)

struct conn {
    int fd;
    short events;
    struct event *ev;
    struct evbuffer *in, *out;
};

static struct event_base *base;
static uint8_t rbuf[RBUF_SIZE];

static void conn_close(struct conn *c)
{
    event_free(c->ev);
    close(c->fd);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    free(c);
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg);

/* Write interest only while output is pending; read interest off while
 * the output is over OUT_HIGH. */
static void conn_update_interest(struct conn *c)
{
    size_t pending = evbuffer_get_length(c->out);
    short want = (short)((pending > 0 ? EV_WRITE : 0) | (pending < OUT_HIGH ? EV_READ : 0));
    if (want == c->events)
        return;
    event_del(c->ev);
    event_assign(c->ev, base, c->fd, want | EV_PERSIST, on_conn_event, c);
    event_add(c->ev, NULL);
    c->events = want;
}

static void free_payload(const void *data, size_t len, void *arg)
{
    (void)len, (void)arg;
    free((void *)data);
}

/* Appends a malloc'ed payload and owns it from then on: a large one is
 * written from where it is and freed once written, a small one is copied
 * into the output and freed now (a buffer chain per small frame would cost
 * more than the copy). */
static int add_payload(struct conn *c, char *p, size_t len)
{
    if (len >= BY_REFERENCE_MIN) {
        if (evbuffer_add_reference(c->out, p, len, free_payload, NULL) == 0)
            return 0;
        free(p);
        return -1;
    }
    int rc = evbuffer_add(c->out, p, len);
    free(p);
    return rc;
}

/* Echoes the complete frames at the start of buf, each payload through
 * its own malloc'ed copy (the "string" a script would get), handed to
 * add_payload. Returns the bytes used, or SIZE_MAX on
 * a frame over MAX_FRAME or out of memory. */
static size_t echo_frames(struct conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (len - off >= 4) {
        const uint8_t *h = buf + off;
        uint32_t flen = load_be32(h);
        if (flen > MAX_FRAME)
            return SIZE_MAX;
        if (len - off - 4 < flen)
            break;
        char *p = malloc(flen ? flen : 1);
        if (!p)
            return SIZE_MAX;
        memcpy(p, h + 4, flen);
        if (evbuffer_add(c->out, h, 4) != 0 || add_payload(c, p, flen) != 0)
            return SIZE_MAX;
        off += 4 + (size_t)flen;
    }
    return off;
}

/* One read() into the shared buffer; frames are taken from it directly,
 * or, behind an incomplete frame kept from an earlier read, from the
 * connection's input buffer. False if the connection must close. */
static int conn_read(struct conn *c)
{
    ssize_t n = read(c->fd, rbuf, sizeof rbuf);
    size_t used;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    if (n == 0)
        return 0;
    if (evbuffer_get_length(c->in) == 0) {
        used = echo_frames(c, rbuf, (size_t)n);
        return used != SIZE_MAX && evbuffer_add(c->in, rbuf + used, (size_t)n - used) == 0;
    }
    if (evbuffer_add(c->in, rbuf, (size_t)n) != 0)
        return 0;
    used = echo_frames(c, evbuffer_pullup(c->in, -1), evbuffer_get_length(c->in));
    return used != SIZE_MAX && evbuffer_drain(c->in, used) == 0;
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if ((what & EV_READ) && !conn_read(c)) {
        conn_close(c);
        return;
    }
    if (evbuffer_get_length(c->out) > 0 && evbuffer_write(c->out, fd) < 0 &&
        errno != EAGAIN && errno != EINTR) {
        conn_close(c);
        return;
    }
    conn_update_interest(c);
}

static void conn_open(int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->events = EV_READ;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_conn_event, c);
    if (!c->in || !c->out || !c->ev || event_add(c->ev, NULL) < 0) {
        if (c->ev)
            event_free(c->ev);
        if (c->in)
            evbuffer_free(c->in);
        if (c->out)
            evbuffer_free(c->out);
        close(fd);
        free(c);
    }
}

int main(int argc, char **argv)
{
    bench_name = "floor";
    if (argc != 2) {
        fputs("usage: floor PORT\n", stderr);
        return 2;
    }
    int lfd = bench_listen_port(argv[1]);
    if (!(base = event_base_new()))
        die("event_base_new");
    bench_serve(base, lfd, conn_open);
    event_base_free(base);
    return 0;
}
