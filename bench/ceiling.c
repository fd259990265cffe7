/*
 * ceiling: the fastest length-prefixed echo server we know how to write on
 * libevent, as the reference the other servers are compared against.
 *
 * Wire format: u32 big-endian length (at most 16 MiB, else the connection is
 * closed), then that many payload bytes. Every frame is echoed unchanged.
 *
 * Instead of bufferevents (which read 4 KiB at a time into an evbuffer and
 * copy again on write) each readiness event does one read() into a shared
 * 256 KiB buffer, and all complete frames in it go back with one write().
 * Per-connection memory is only used for an incomplete trailing frame and
 * for bytes the socket would not take (the backlog, an evbuffer); EV_WRITE is
 * enabled only while there is a backlog, and reading stops while the backlog
 * is large so a client that does not read cannot make us buffer without end.
 *
 * usage: ceiling [--fault flip|drop|reorder|dup] PORT|unix:PATH
 *   --fault corrupts the FAULT_AT-th frame the server sees (counting
 *   non-empty frames over all connections), to check that a load generator
 *   notices: flip one bit of its last byte, drop it, send it after the next
 *   frame of its connection, or send it twice.
 * Listens on 127.0.0.1:PORT (or a unix socket) until SIGINT/SIGTERM, exit 0.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bench.h"

#define RBUF_SIZE (256 * 1024)
#define BIG_FRAME (RBUF_SIZE / 4)    /* frames above this bypass the shared buffer */
#define BACKLOG_HIGH (4u << 20)      /* stop reading above this much unsent */
#define BACKLOG_LOW (1u << 20)       /* and resume below this */
#define FAULT_AT 100

enum fault { FAULT_NONE, FAULT_FLIP, FAULT_DROP, FAULT_REORDER, FAULT_DUP };

struct conn {
    int fd;
    short events;                    /* current interest, EV_READ/EV_WRITE */
    struct event *ev;
    struct evbuffer *backlog;        /* created on first short write */
    uint8_t *part;                   /* incomplete frame from the last read */
    size_t part_len, part_cap;
};

static uint8_t rbuf[RBUF_SIZE];

static struct {
    struct event_base *base;
    const char *unix_path;
    enum fault fault;
    bool fault_done;
    uint64_t frames_seen;
    struct conn *held_conn;          /* FAULT_REORDER: frame waiting to go out */
    uint8_t *held;
    size_t held_len;
} g;

/* ---- connection lifetime ---------------------------------------------- */

static void drop_held_frame(void)
{
    free(g.held);
    g.held = NULL;
    g.held_conn = NULL;
    g.fault_done = true;
}

static void conn_close(struct conn *c)
{
    if (c == g.held_conn)
        drop_held_frame();
    event_free(c->ev);
    close(c->fd);
    if (c->backlog)
        evbuffer_free(c->backlog);
    free(c->part);
    free(c);
}

static size_t backlog_len(const struct conn *c)
{
    return c->backlog ? evbuffer_get_length(c->backlog) : 0;
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg);

/* Write interest only while there is a backlog; read interest off above the
 * high-water mark until the backlog drains below the low one. */
static void conn_update_interest(struct conn *c)
{
    size_t pending = backlog_len(c);
    short want = c->events;
    if (pending > 0)
        want |= EV_WRITE;
    else
        want &= ~EV_WRITE;
    if (pending >= BACKLOG_HIGH)
        want &= ~EV_READ;
    else if (pending <= BACKLOG_LOW)
        want |= EV_READ;
    if (want == c->events)
        return;
    event_del(c->ev);
    event_assign(c->ev, g.base, c->fd, want | EV_PERSIST, on_conn_event, c);
    event_add(c->ev, NULL);
    c->events = want;
}

/* ---- output ----------------------------------------------------------- */

/* Writes directly when nothing is queued; otherwise (or for what the socket
 * does not take) appends to the backlog to keep order. False if closed. */
static bool conn_send(struct conn *c, const uint8_t *data, size_t len)
{
    if (backlog_len(c) == 0) {
        ssize_t n;
        do
            n = write(c->fd, data, len);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN) {
            conn_close(c);
            return false;
        }
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        }
        if (len == 0)
            return true;
    }
    if (!c->backlog && !(c->backlog = evbuffer_new())) {
        conn_close(c);
        return false;
    }
    evbuffer_add(c->backlog, data, len);
    conn_update_interest(c);
    return true;
}

static bool conn_flush_backlog(struct conn *c)
{
    if (evbuffer_write(c->backlog, c->fd) < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(c);
        return false;
    }
    conn_update_interest(c);
    return true;
}

/* ---- fault injection -------------------------------------------------- */

static bool fault_frame(struct conn *c, uint8_t *f, size_t len)
{
    if (g.held) {
        if (c != g.held_conn)
            return conn_send(c, f, len);
        bool alive = conn_send(c, f, len) && conn_send(c, g.held, g.held_len);
        if (alive)
            drop_held_frame();
        return alive;
    }
    if (len == 4 || ++g.frames_seen != FAULT_AT)
        return conn_send(c, f, len);

    g.fault_done = g.fault != FAULT_REORDER;
    switch (g.fault) {
    case FAULT_FLIP:
        f[len - 1] ^= 0x01;
        return conn_send(c, f, len);
    case FAULT_DROP:
        return true;
    case FAULT_DUP:
        return conn_send(c, f, len) && conn_send(c, f, len);
    case FAULT_REORDER:
        if (!(g.held = malloc(len)))
            die("malloc");
        memcpy(g.held, f, len);
        g.held_len = len;
        g.held_conn = c;
        return true;
    case FAULT_NONE:
        break;
    }
    return conn_send(c, f, len);
}

/* ---- input ------------------------------------------------------------ */

/* Echoes a run of complete frames. False if the connection was closed. */
static bool conn_echo(struct conn *c, uint8_t *data, size_t len)
{
    if (g.fault == FAULT_NONE || g.fault_done)
        return conn_send(c, data, len);
    for (size_t off = 0; off < len;) {
        size_t flen = 4 + (size_t)load_be32(data + off);
        if (!fault_frame(c, data + off, flen))
            return false;
        off += flen;
    }
    return true;
}

/* Length of the complete frames at the start of buf, or SIZE_MAX if a frame
 * header announces more than MAX_FRAME. */
static size_t complete_frames(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (len - off >= 4) {
        uint32_t flen = load_be32(buf + off);
        if (flen > MAX_FRAME)
            return SIZE_MAX;
        if (len - off - 4 < flen)
            break;
        off += 4 + (size_t)flen;
    }
    return off;
}

static bool part_reserve(struct conn *c, size_t len)
{
    if (len <= c->part_cap)
        return true;
    uint8_t *p = realloc(c->part, len);
    if (!p)
        return false;
    c->part = p;
    c->part_cap = len;
    return true;
}

/* Keeps small buffers for the next frame; frees big ones so that one large
 * frame does not pin memory for the connection's lifetime. */
static void part_clear(struct conn *c)
{
    c->part_len = 0;
    if (c->part_cap > BIG_FRAME) {
        free(c->part);
        c->part = NULL;
        c->part_cap = 0;
    }
}

/* Returns -1 (and closes) on EOF or error, 0 if nothing to read, else n. */
static ssize_t conn_recv(struct conn *c, uint8_t *dst, size_t len)
{
    ssize_t n = read(c->fd, dst, len);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    conn_close(c);
    return -1;
}

/* The common path: carried-over bytes and new data meet in the shared
 * buffer, complete frames go straight back from it. */
static void conn_read_batch(struct conn *c)
{
    size_t have = c->part_len;
    if (have > 0)
        memcpy(rbuf, c->part, have);
    ssize_t n = conn_recv(c, rbuf + have, RBUF_SIZE - have);
    if (n <= 0)
        return;
    size_t len = have + (size_t)n;
    size_t done = complete_frames(rbuf, len);
    if (done == SIZE_MAX) {
        fprintf(stderr, "ceiling: closing a connection that announced a frame "
                "over %u bytes\n", MAX_FRAME);
        conn_close(c);
        return;
    }
    if (done > 0 && !conn_echo(c, rbuf, done))
        return;
    if (done == len) {
        part_clear(c);
        return;
    }
    if (!part_reserve(c, len - done)) {
        conn_close(c);
        return;
    }
    memcpy(c->part, rbuf + done, len - done);
    c->part_len = len - done;
}

/* A frame too big to share the buffer is read into its own buffer. */
static void conn_read_big(struct conn *c, size_t frame_len)
{
    if (!part_reserve(c, frame_len)) {
        conn_close(c);
        return;
    }
    ssize_t n = conn_recv(c, c->part + c->part_len, frame_len - c->part_len);
    if (n <= 0)
        return;
    c->part_len += (size_t)n;
    if (c->part_len == frame_len && conn_echo(c, c->part, frame_len))
        part_clear(c);
}

static void conn_read(struct conn *c)
{
    size_t frame_len = c->part_len >= 4 ? 4 + (size_t)load_be32(c->part) : 0;
    if (frame_len > BIG_FRAME)
        conn_read_big(c, frame_len);
    else
        conn_read_batch(c);
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
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
    c->events = EV_READ;
    c->ev = event_new(g.base, fd, EV_READ | EV_PERSIST, on_conn_event, c);
    if (!c->ev || event_add(c->ev, NULL) < 0) {
        if (c->ev)
            event_free(c->ev);
        close(fd);
        free(c);
    }
}

/* ---- setup ------------------------------------------------------------ */

static int listen_on(const char *where)
{
    struct sockaddr_storage ss;
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    if (strncmp(where, "unix:", 5) != 0)
        return bench_listen_port(where);
    memset(&ss, 0, sizeof ss);
    g.unix_path = where + 5;
    if (strlen(g.unix_path) >= sizeof un->sun_path) {
        fprintf(stderr, "ceiling: unix socket path too long\n");
        exit(2);
    }
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, g.unix_path);
    unlink(g.unix_path);    /* a stale socket from an earlier run */
    return bench_listen(&ss, sizeof *un);
}

_Noreturn static void usage(void)
{
    fputs("usage: ceiling [--fault flip|drop|reorder|dup] PORT|unix:PATH\n", stderr);
    exit(2);
}

static enum fault parse_fault(const char *s)
{
    static const char *const names[] = { "", "flip", "drop", "reorder", "dup" };
    for (int i = FAULT_FLIP; i <= FAULT_DUP; i++)
        if (strcmp(s, names[i]) == 0)
            return (enum fault)i;
    usage();
}

int main(int argc, char **argv)
{
    bench_name = "ceiling";
    if (argc == 4 && strcmp(argv[1], "--fault") == 0)
        g.fault = parse_fault(argv[2]);
    else if (argc != 2)
        usage();

    int lfd = listen_on(argv[argc - 1]);
    g.base = event_base_new();
    if (!g.base)
        die("event_base_new");
    bench_serve(g.base, lfd, conn_open);
    if (g.unix_path)
        unlink(g.unix_path);
    event_base_free(g.base);
    return 0;
}
