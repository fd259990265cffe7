/*
 * loadgen: closed-loop load generator and verifier for length-prefixed echo
 * servers.
 *
 * Wire format: u32 big-endian length, then that many payload bytes. Every
 * payload starts with a tag (u32 connection id, u64 sequence number, both
 * big-endian) followed by a pattern derived from (id, seq). Each connection
 * keeps `window` frames in flight; every echoed frame is checked for length,
 * tag, order and the full pattern. Any deviation is reported on stderr and
 * the process exits with status 1.
 *
 * Modes:
 *   throughput (default): prints one line, e.g.
 *     conns=64 window=16 size=64 secs=5.00 msgs=... msgs_per_s=... mb_per_s=...
 *     p50_us=... p99_us=... p999_us=... errors=0
 *   --count N: every connection sends exactly N frames (window as given),
 *     waits for all of them to come back verified, and prints
 *     "count_msgs=TOTAL ok": a fixed amount of work, for instruction counts
 *     under callgrind.
 *   --idle N: opens N connections, does one verified round trip on each, then
 *     holds them open for --duration seconds and prints "idle_conns=N ok".
 *   --tls: every connection speaks TLS (OpenSSL; the server's certificate is
 *     not verified: this measures speed, the specs check verification).
 *   --handshakes (with --tls): each of --conns slots repeatedly connects, does
 *     a full TLS handshake (no resumption), one verified echo of one frame,
 *     and closes; msgs_per_s is then completed handshakes per second and the
 *     latencies are those of the whole cycle.
 *
 * Single-threaded epoll loop with non-blocking sockets; all frames a
 * connection may send are built into one buffer and written with one call.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define NS_PER_S 1000000000ull
#define TAG_LEN 12                   /* u32 conn id + u64 seq */
#define MIN_SIZE 16                  /* tag plus at least 4 pattern bytes */
#define MAX_SIZE (16u << 20)         /* servers may reject larger frames */
#define CONNECT_BATCH 256            /* connects in progress at once */
#define CONNECT_TIMEOUT_NS (10 * NS_PER_S) /* without any connect completing */
#define DRAIN_TIMEOUT_NS (5 * NS_PER_S)    /* for in-flight frames at the end */
#define COUNT_TIMEOUT_NS (600 * NS_PER_S)    /* --count: all frames back */
#define ROUNDTRIP_TIMEOUT_NS (30 * NS_PER_S) /* --idle: first echo on all conns */
#define GAP_GRACE_NS (NS_PER_S)      /* how long a skipped frame may be late */
#define MAX_EVENTS 512

/* Log-linear latency histogram: values below 2^(SUB_BITS+1) ns are exact,
 * above that each power of two is split into 2^SUB_BITS buckets (<1.6%
 * error). Values are clamped to 2^MAX_EXP ns (~18 minutes). */
#define SUB_BITS 6
#define MAX_EXP 40
#define HIST_BUCKETS (((MAX_EXP - SUB_BITS) + 2) << SUB_BITS)

struct opts {
    const char *addr;
    uint32_t conns, window, size, idle, count;
    double duration, warmup;
    bool tls, handshakes;
};

struct buf {
    uint8_t *data;
    size_t off, len, cap;           /* unconsumed bytes are [off, len) */
};

struct conn {
    int fd;
    uint32_t id;
    bool connected, want_out;
    uint32_t inflight;               /* sent (or queued) but not echoed */
    uint64_t next_seq;               /* next seq to send */
    uint64_t expect_seq;             /* next seq expected back */
    uint64_t gap_seq, gap_len;       /* seqs skipped by the server; 0 = none */
    uint64_t *sent_ns;               /* send time of seq s at [s % window] */
    struct buf in, out;
    SSL *ssl;                        /* --tls */
};

struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
};

static struct {
    struct opts o;
    size_t frame_len;                /* 4 + size */
    struct sockaddr_storage sa;
    socklen_t sa_len;
    bool is_unix;
    int epfd;
    struct conn *conns;
    uint8_t *pattern;                /* base pattern, XORed with a per-frame key */
    bool sending;
    uint64_t seq_limit;              /* frames each connection may send */
    uint64_t total_inflight;
    uint64_t t_warm, t_end;          /* measurement window [t_warm, t_end) */
    uint64_t msgs;
    struct hist hist;
    struct conn *gap_conn;           /* first connection that saw a gap */
    uint64_t gap_deadline;
    SSL_CTX *tls;                    /* --tls */
} g;

_Noreturn static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

_Noreturn static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("loadgen: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p)
        die("out of memory");
    return p;
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t load_be64(const uint8_t *p)
{
    return (uint64_t)load_be32(p) << 32 | load_be32(p + 4);
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void store_be64(uint8_t *p, uint64_t v)
{
    store_be32(p, (uint32_t)(v >> 32));
    store_be32(p + 4, (uint32_t)v);
}

/* ---- payload pattern ------------------------------------------------- */

static uint64_t mix64(uint64_t x)   /* splitmix64 finaliser */
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The base pattern is random-looking so that shifted or spliced data does not
 * match; the per-frame key makes a payload from another frame fail too. */
static void pattern_init(size_t len)
{
    size_t words = (len + 7) / 8;
    g.pattern = xcalloc(words, 8);
    for (size_t i = 0; i < words; i++) {
        uint64_t w = mix64(i);
        memcpy(g.pattern + 8 * i, &w, 8);
    }
}

static uint64_t frame_key(uint32_t id, uint64_t seq)
{
    return mix64(mix64(id) ^ seq);
}

/* Pattern byte i: the key's bytes in memory order, so the byte loops agree
 * with the word loops on any endianness. */
static uint8_t pattern_byte(size_t i, uint64_t key)
{
    return g.pattern[i] ^ ((const uint8_t *)&key)[i % 8];
}

/* Whole words first (the compiler vectorises these loops: with 16 KiB frames
 * the pattern work dominates the load generator's CPU time), then the tail. */
static void pattern_fill(uint8_t *dst, size_t len, uint64_t key)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, g.pattern + i, 8);
        w ^= key;
        memcpy(dst + i, &w, 8);
    }
    for (; i < len; i++)
        dst[i] = pattern_byte(i, key);
}

/* Returns the offset of the first wrong byte, or len if all match. */
static size_t pattern_check(const uint8_t *src, size_t len, uint64_t key)
{
    uint64_t diff = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w, p;
        memcpy(&w, src + i, 8);
        memcpy(&p, g.pattern + i, 8);
        diff |= w ^ p ^ key;
    }
    for (; i < len; i++)
        diff |= src[i] ^ pattern_byte(i, key);
    if (diff == 0)
        return len;
    for (i = 0; i < len; i++)   /* rare: find the first bad byte */
        if (src[i] != pattern_byte(i, key))
            break;
    return i;
}

static void frame_build(uint8_t *dst, uint32_t id, uint64_t seq)
{
    store_be32(dst, g.o.size);
    store_be32(dst + 4, id);
    store_be64(dst + 8, seq);
    pattern_fill(dst + 4 + TAG_LEN, g.o.size - TAG_LEN, frame_key(id, seq));
}

/* ---- latency histogram ----------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
    if (v >= (1ull << MAX_EXP))
        v = (1ull << MAX_EXP) - 1;
    if (v < (1ull << (SUB_BITS + 1)))
        return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - SUB_BITS;
    return (shift << SUB_BITS) + (unsigned)(v >> shift);
}

/* Midpoint of the bucket's value range. */
static double hist_value(unsigned idx)
{
    if (idx < (2u << SUB_BITS))
        return idx;
    unsigned shift = (idx >> SUB_BITS) - 1;
    uint64_t top = (idx & ((1u << SUB_BITS) - 1)) | (1u << SUB_BITS);
    return (double)(top << shift) + (double)(1ull << shift) / 2;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->total++;
}

static double hist_percentile_us(const struct hist *h, double p)
{
    uint64_t rank = (uint64_t)(p * (double)h->total);
    if (rank >= h->total)
        rank = h->total - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen > rank)
            return hist_value(i) / 1000.0;
    }
    return 0;
}

/* ---- verification ----------------------------------------------------- */

/* Sequence check: a seq ahead of the expected one opens a gap that must be
 * filled quickly (then it was reordering) or it counts as loss; a seq behind
 * is either the late frame of a gap or a duplicate. */
static void check_seq(struct conn *c, uint64_t seq, uint64_t now)
{
    if (seq == c->expect_seq) {
        c->expect_seq++;
        return;
    }
    if (seq >= c->next_seq)
        die("conn %" PRIu32 ": received seq %" PRIu64 " that was never sent "
            "(next to send: %" PRIu64 ")", c->id, seq, c->next_seq);
    if (seq > c->expect_seq) {
        if (c->gap_len)
            die("conn %" PRIu32 ": frames lost: seq %" PRIu64 " and seq %" PRIu64
                " were skipped", c->id, c->gap_seq, c->expect_seq);
        c->gap_seq = c->expect_seq;
        c->gap_len = seq - c->expect_seq;
        c->expect_seq = seq + 1;
        if (!g.gap_conn) {
            g.gap_conn = c;
            g.gap_deadline = now + GAP_GRACE_NS;
        }
        return;
    }
    if (c->gap_len && seq >= c->gap_seq && seq < c->gap_seq + c->gap_len)
        die("conn %" PRIu32 ": frames reordered: seq %" PRIu64
            " arrived after seq %" PRIu64, c->id, seq, c->gap_seq + c->gap_len);
    die("conn %" PRIu32 ": duplicate frame: seq %" PRIu64
        " received again (expected seq %" PRIu64 ")", c->id, seq, c->expect_seq);
}

static void check_gap_deadline(uint64_t now)
{
    struct conn *c = g.gap_conn;
    if (!c || now < g.gap_deadline)
        return;
    uint64_t last = c->gap_seq + c->gap_len - 1;
    if (c->gap_len == 1)
        die("conn %" PRIu32 ": frame lost: seq %" PRIu64 " never echoed, seq %"
            PRIu64 " arrived instead", c->id, c->gap_seq, last + 1);
    die("conn %" PRIu32 ": frames lost: seq %" PRIu64 "..%" PRIu64 " never "
        "echoed, seq %" PRIu64 " arrived instead", c->id, c->gap_seq, last, last + 1);
}

/* Verifies one frame's payload (length already checked) and accounts it. */
static void on_frame(struct conn *c, const uint8_t *payload, uint64_t now)
{
    uint32_t id = load_be32(payload);
    uint64_t seq = load_be64(payload + 4);
    if (id != c->id)
        die("conn %" PRIu32 ": received a frame tagged for conn %" PRIu32
            " (seq %" PRIu64 ")", c->id, id, seq);
    check_seq(c, seq, now);

    size_t plen = g.o.size - TAG_LEN;
    size_t bad = pattern_check(payload + TAG_LEN, plen, frame_key(id, seq));
    if (bad != plen)
        die("conn %" PRIu32 ": payload corrupted in seq %" PRIu64
            " at payload byte %zu", c->id, seq, bad + TAG_LEN);

    c->inflight--;
    g.total_inflight--;
    if (now >= g.t_warm && now < g.t_end) {
        g.msgs++;
        hist_add(&g.hist, now - c->sent_ns[seq % g.o.window]);
    }
}

/* ---- connection I/O --------------------------------------------------- */

static void epoll_set(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(g.epfd, op, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void conn_parse(struct conn *c);

/* TLS: until OpenSSL has nothing more, since bytes it decrypted and we did
 * not take would never make the socket readable again. */
static void conn_read_tls(struct conn *c)
{
    for (;;) {
        size_t n;
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, c->in.data + c->in.len, c->in.cap - c->in.len, &n) != 1) {
            int e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            die("conn %" PRIu32 ": TLS read failed (%d: %s; %" PRIu32 " frames in flight)", c->id,
                e, ERR_reason_error_string(ERR_get_error()), c->inflight);
        }
        c->in.len += n;
        conn_parse(c);
    }
}

static void conn_read(struct conn *c)
{
    if (c->ssl) {
        conn_read_tls(c);
        return;
    }
    ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (n == 0)
        die("conn %" PRIu32 ": server closed the connection (%" PRIu32
            " frames in flight)", c->id, c->inflight);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        die("conn %" PRIu32 ": read: %s", c->id, strerror(errno));
    }
    c->in.len += (size_t)n;
    conn_parse(c);
}

static void conn_parse(struct conn *c)
{
    uint64_t now = now_ns();
    size_t off = 0;
    while (c->in.len - off >= 4) {
        uint32_t len = load_be32(c->in.data + off);
        if (len != g.o.size)
            die("conn %" PRIu32 ": frame length %" PRIu32 ", expected %" PRIu32
                " (stream corrupted or misframed)", c->id, len, g.o.size);
        if (c->in.len - off < g.frame_len)
            break;
        on_frame(c, c->in.data + off + 4, now);
        off += g.frame_len;
    }
    /* At most one partial frame is left, so the buffer (window frames) never
     * fills up even if the server sends more than was asked for. */
    memmove(c->in.data, c->in.data + off, c->in.len - off);
    c->in.len -= off;
}

/* Queues frames until the window is full; all get one timestamp since they
 * leave in the same write. */
static void conn_fill(struct conn *c)
{
    if (!g.sending || c->inflight >= g.o.window || c->next_seq >= g.seq_limit)
        return;
    if (c->out.off > 0) {
        memmove(c->out.data, c->out.data + c->out.off, c->out.len - c->out.off);
        c->out.len -= c->out.off;
        c->out.off = 0;
    }
    uint64_t now = now_ns();
    while (c->inflight < g.o.window && c->next_seq < g.seq_limit) {
        frame_build(c->out.data + c->out.len, c->id, c->next_seq);
        c->sent_ns[c->next_seq % g.o.window] = now;
        c->out.len += g.frame_len;
        c->next_seq++;
        c->inflight++;
        g.total_inflight++;
    }
}

static void conn_flush(struct conn *c)
{
    while (c->out.off < c->out.len && c->ssl) {
        size_t n;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, c->out.data + c->out.off, c->out.len - c->out.off, &n) != 1) {
            int e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                break;
            die("conn %" PRIu32 ": TLS write failed (%d)", c->id, e);
        }
        c->out.off += n;
    }
    while (c->out.off < c->out.len && !c->ssl) {
        ssize_t n = write(c->fd, c->out.data + c->out.off, c->out.len - c->out.off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            die("conn %" PRIu32 ": write: %s", c->id, strerror(errno));
        }
        c->out.off += (size_t)n;
    }
    if (c->out.off == c->out.len)
        c->out.off = c->out.len = 0;
    bool want_out = c->out.len > 0;
    if (want_out != c->want_out) {
        c->want_out = want_out;
        epoll_set(c, EPOLL_CTL_MOD, EPOLLIN | (want_out ? EPOLLOUT : 0));
    }
}

/* ---- connection setup ------------------------------------------------- */

static void conn_init(struct conn *c, uint32_t id)
{
    size_t bytes = (size_t)g.o.window * g.frame_len;
    c->id = id;
    c->fd = -1;
    c->sent_ns = xcalloc(g.o.window, sizeof *c->sent_ns);
    c->in.data = xcalloc(1, bytes);
    c->in.cap = bytes;
    c->out.data = xcalloc(1, bytes);
    c->out.cap = bytes;
}

static void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        die("fcntl: %s", strerror(errno));
}

/* Returns true if the connection completed immediately. */
static bool conn_start_connect(struct conn *c)
{
    c->fd = socket(g.sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s (conn %" PRIu32 ")", strerror(errno), c->id);
    if (g.is_unix) {
        /* A non-blocking unix connect fails with EAGAIN when the backlog is
         * full instead of completing later; blocking just waits. */
        if (connect(c->fd, (struct sockaddr *)&g.sa, g.sa_len) < 0)
            die("connect %s: %s", g.o.addr, strerror(errno));
        set_nonblocking(c->fd);
        return true;
    }
    int one = 1;
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        die("TCP_NODELAY: %s", strerror(errno));
    set_nonblocking(c->fd);
    if (connect(c->fd, (struct sockaddr *)&g.sa, g.sa_len) == 0)
        return true;
    if (errno != EINPROGRESS)
        die("connect %s: %s (conn %" PRIu32 ")", g.o.addr, strerror(errno), c->id);
    return false;
}

/* A fresh client session on fd: no resumption, so every handshake is full. */
static SSL *tls_new(int fd)
{
    SSL *ssl = SSL_new(g.tls);
    if (!ssl || SSL_set_fd(ssl, fd) != 1)
        die("SSL_new failed");
    SSL_set_connect_state(ssl);
    return ssl;
}

/* Setup, not measured: the handshake runs to its end before the load. */
static void conn_tls_handshake(struct conn *c)
{
    uint64_t deadline = now_ns() + CONNECT_TIMEOUT_NS;
    c->ssl = tls_new(c->fd);
    for (;;) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r == 1)
            return;
        int e = SSL_get_error(c->ssl, r);
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || now_ns() > deadline)
            die("conn %" PRIu32 ": TLS handshake failed (%d: %s)", c->id, e,
                ERR_reason_error_string(ERR_get_error()));
        struct pollfd pfd = { .fd = c->fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT };
        poll(&pfd, 1, 100);
    }
}

static void conn_finish_connect(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        die("connect %s: %s (conn %" PRIu32 ")", g.o.addr, strerror(err), c->id);
    c->connected = true;
    if (g.tls)
        conn_tls_handshake(c);
    epoll_set(c, EPOLL_CTL_MOD, EPOLLIN);
}

/* Connects all connections, at most CONNECT_BATCH in progress at a time so a
 * server's listen backlog is not overrun. */
static void connect_all(void)
{
    uint32_t next = 0, pending = 0, done = 0;
    uint64_t deadline = now_ns() + CONNECT_TIMEOUT_NS;
    struct epoll_event ev[MAX_EVENTS];

    while (done < g.o.conns) {
        for (; next < g.o.conns && pending < CONNECT_BATCH; next++) {
            struct conn *c = &g.conns[next];
            if (conn_start_connect(c)) {
                c->connected = true;
                if (g.tls)
                    conn_tls_handshake(c);
                epoll_set(c, EPOLL_CTL_ADD, EPOLLIN);
                done++;
            } else {
                epoll_set(c, EPOLL_CTL_ADD, EPOLLOUT);
                pending++;
            }
        }
        if (done == g.o.conns)
            break;
        int n = epoll_wait(g.epfd, ev, MAX_EVENTS, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct conn *c = ev[i].data.ptr;
            if (c->connected) {     /* the server closed or sent unasked */
                conn_read(c);
                continue;
            }
            conn_finish_connect(c);
            pending--;
            done++;
            deadline = now_ns() + CONNECT_TIMEOUT_NS;
        }
        if (now_ns() > deadline)
            die("connect %s: timed out with %" PRIu32 " of %" PRIu32
                " connections established", g.o.addr, done, g.o.conns);
    }
}

/* ---- event loop ------------------------------------------------------- */

static int ms_until(uint64_t deadline, uint64_t now)
{
    if (g.gap_conn && g.gap_deadline < deadline)
        deadline = g.gap_deadline;
    if (deadline <= now)
        return 0;
    return (int)((deadline - now + 999999) / 1000000);
}

static void poll_once(int timeout_ms)
{
    struct epoll_event ev[MAX_EVENTS];
    int n = epoll_wait(g.epfd, ev, MAX_EVENTS, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return;
        die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        struct conn *c = ev[i].data.ptr;
        if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_read(c);
        conn_fill(c);
        conn_flush(c);
    }
}

/* Runs the loop until the deadline, or earlier once nothing is in flight if
 * until_drained is set. */
static void run_until(uint64_t deadline, bool until_drained)
{
    for (;;) {
        uint64_t now = now_ns();
        check_gap_deadline(now);
        if ((until_drained && g.total_inflight == 0) || now >= deadline)
            return;
        poll_once(ms_until(deadline, now));
    }
}

static void die_if_outstanding(void)
{
    if (g.total_inflight == 0)
        return;
    for (uint32_t i = 0; i < g.o.conns; i++) {
        struct conn *c = &g.conns[i];
        if (c->inflight)
            die("conn %" PRIu32 ": %" PRIu32 " frame(s) never echoed, first "
                "missing seq %" PRIu64 " (%" PRIu64 " frames in flight in total)",
                c->id, c->inflight, c->gap_len ? c->gap_seq : c->expect_seq,
                g.total_inflight);
    }
}

static void start_all(void)
{
    g.sending = true;
    for (uint32_t i = 0; i < g.o.conns; i++) {
        conn_fill(&g.conns[i]);
        conn_flush(&g.conns[i]);
    }
}

static void run_throughput(void)
{
    g.seq_limit = UINT64_MAX;
    g.t_warm = now_ns() + (uint64_t)(g.o.warmup * NS_PER_S);
    g.t_end = g.t_warm + (uint64_t)(g.o.duration * NS_PER_S);
    start_all();
    run_until(g.t_end, false);
    g.sending = false;          /* let what is in flight come back, verified */
    run_until(g.t_end + DRAIN_TIMEOUT_NS, true);
    die_if_outstanding();
    if (g.msgs == 0)
        die("no frame completed during the %.2f s measurement window", g.o.duration);

    double bytes = (double)g.msgs * g.o.size;   /* payload, one direction */
    printf("conns=%" PRIu32 " window=%" PRIu32 " size=%" PRIu32 " secs=%.2f "
           "msgs=%" PRIu64 " msgs_per_s=%.0f mb_per_s=%.2f p50_us=%.1f "
           "p99_us=%.1f p999_us=%.1f errors=0\n",
           g.o.conns, g.o.window, g.o.size, g.o.duration, g.msgs,
           (double)g.msgs / g.o.duration, bytes / g.o.duration / 1e6,
           hist_percentile_us(&g.hist, 0.50), hist_percentile_us(&g.hist, 0.99),
           hist_percentile_us(&g.hist, 0.999));
}

static void run_count(void)
{
    g.seq_limit = g.o.count;
    start_all();
    run_until(now_ns() + COUNT_TIMEOUT_NS, true);
    die_if_outstanding();
    printf("count_msgs=%" PRIu64 " ok\n", (uint64_t)g.o.count * g.o.conns);
}

static void run_idle(void)
{
    g.seq_limit = 1;
    start_all();
    run_until(now_ns() + ROUNDTRIP_TIMEOUT_NS, true);
    die_if_outstanding();
    /* run.sh waits for this line before sampling the server's RSS. */
    fprintf(stderr, "loadgen: %" PRIu32 " connections verified, holding idle "
            "for %.2f s\n", g.o.conns, g.o.duration);
    run_until(now_ns() + (uint64_t)(g.o.duration * NS_PER_S), false);
    printf("idle_conns=%" PRIu32 " ok\n", g.o.conns);
}

/* ---- --handshakes ----------------------------------------------------- */

enum { HS_CONNECT, HS_HANDSHAKE, HS_ECHO };

struct hs_slot {
    int fd, state;
    uint32_t id;
    uint64_t seq, t0;
    SSL *ssl;
    uint8_t *frame, *back;           /* the frame sent, what came back */
    size_t sent, got;
};

static void hs_start(struct hs_slot *h)
{
    struct conn tmp = { .id = h->id };
    conn_start_connect(&tmp);        /* completes later: state HS_CONNECT */
    h->fd = tmp.fd;
    h->ssl = tls_new(h->fd);
    h->state = HS_CONNECT;
    h->sent = h->got = 0;
    h->t0 = now_ns();
    frame_build(h->frame, h->id, ++h->seq);
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = h };
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void hs_want(struct hs_slot *h, int e)
{
    struct epoll_event ev = { .events = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN, .data.ptr = h };
    epoll_ctl(g.epfd, EPOLL_CTL_MOD, h->fd, &ev);
}

/* One cycle done: count it, close, start the next. */
static void hs_done(struct hs_slot *h)
{
    uint64_t now = now_ns();
    if (memcmp(h->frame, h->back, g.frame_len) != 0)
        die("slot %" PRIu32 ": the echo after a handshake differs from the frame sent", h->id);
    if (now >= g.t_warm && now < g.t_end) {
        g.msgs++;
        hist_add(&g.hist, now - h->t0);
    }
    SSL_free(h->ssl);
    close(h->fd);
    if (now < g.t_end)
        hs_start(h);
    else
        h->fd = -1;
}

static void hs_step(struct hs_slot *h)
{
    int r, e;
    size_t n;
    ERR_clear_error();
    switch (h->state) {
    case HS_CONNECT: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err)
            die("connect %s: %s", g.o.addr, strerror(err));
        h->state = HS_HANDSHAKE;
    }
    /* fall through */
    case HS_HANDSHAKE:
        if ((r = SSL_do_handshake(h->ssl)) != 1) {
            e = SSL_get_error(h->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                die("slot %" PRIu32 ": TLS handshake failed (%d: %s)", h->id, e,
                    ERR_reason_error_string(ERR_get_error()));
            hs_want(h, e);
            return;
        }
        h->state = HS_ECHO;
    /* fall through */
    case HS_ECHO:
        while (h->sent < g.frame_len) {
            if (SSL_write_ex(h->ssl, h->frame + h->sent, g.frame_len - h->sent, &n) != 1) {
                hs_want(h, SSL_get_error(h->ssl, 0));
                return;
            }
            h->sent += n;
        }
        while (h->got < g.frame_len) {
            if (SSL_read_ex(h->ssl, h->back + h->got, g.frame_len - h->got, &n) != 1) {
                e = SSL_get_error(h->ssl, 0);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    die("slot %" PRIu32 ": the server closed before echoing (%d)", h->id, e);
                hs_want(h, e);
                return;
            }
            h->got += n;
        }
        hs_done(h);
    }
}

static void run_handshakes(void)
{
    struct hs_slot *slots = xcalloc(g.o.conns, sizeof *slots);
    struct epoll_event ev[MAX_EVENTS];
    uint32_t live = g.o.conns;
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    pattern_init(g.o.size - TAG_LEN);
    g.t_warm = now_ns() + (uint64_t)(g.o.warmup * NS_PER_S);
    g.t_end = g.t_warm + (uint64_t)(g.o.duration * NS_PER_S);
    for (uint32_t i = 0; i < g.o.conns; i++) {
        slots[i].id = i;
        slots[i].frame = xcalloc(1, g.frame_len);
        slots[i].back = xcalloc(1, g.frame_len);
        hs_start(&slots[i]);
    }
    while (live > 0) {
        uint64_t now = now_ns();
        if (now > g.t_end + DRAIN_TIMEOUT_NS)
            die("%" PRIu32 " handshake cycle(s) did not finish", live);
        int n = epoll_wait(g.epfd, ev, MAX_EVENTS, 100);
        for (int i = 0; i < n; i++) {
            struct hs_slot *h = ev[i].data.ptr;
            hs_step(h);
            if (h->fd < 0)
                live--;
        }
    }
    if (g.msgs == 0)
        die("no handshake completed during the %.2f s measurement window", g.o.duration);
    printf("conns=%" PRIu32 " window=1 size=%" PRIu32 " secs=%.2f msgs=%" PRIu64
           " msgs_per_s=%.0f mb_per_s=0 p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=0\n",
           g.o.conns, g.o.size, g.o.duration, g.msgs, (double)g.msgs / g.o.duration,
           hist_percentile_us(&g.hist, 0.50), hist_percentile_us(&g.hist, 0.99),
           hist_percentile_us(&g.hist, 0.999));
}

/* ---- options ---------------------------------------------------------- */

_Noreturn static void usage(void)
{
    fputs("usage: loadgen --addr HOST:PORT|unix:PATH [--conns N] [--window W]\n"
          "               [--size BYTES] [--duration S] [--warmup S]\n"
          "       loadgen --addr ADDR --count N [--conns N] [--window W] [--size BYTES]\n"
          "       loadgen --addr ADDR --idle N [--duration S]\n"
          "       (--tls: over TLS; --tls --handshakes: full handshakes per second)\n", stderr);
    exit(2);
}

static uint32_t parse_u32(const char *name, const char *s, uint32_t min, uint32_t max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        die("--%s: expected an integer in [%" PRIu32 ", %" PRIu32 "], got '%s'",
            name, min, max, s);
    return (uint32_t)v;
}

static double parse_secs(const char *name, const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0 && v <= 86400))
        die("--%s: expected seconds in [0, 86400], got '%s'", name, s);
    return v;
}

static void parse_addr(const char *addr)
{
    memset(&g.sa, 0, sizeof g.sa);
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&g.sa;
        if (strlen(addr + 5) >= sizeof un->sun_path)
            die("--addr: unix socket path too long");
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, addr + 5);
        g.sa_len = sizeof *un;
        g.is_unix = true;
        return;
    }
    const char *colon = strrchr(addr, ':');
    if (!colon || colon - addr >= 64)
        die("--addr: expected HOST:PORT or unix:PATH, got '%s'", addr);
    char host[64];
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct sockaddr_in *in = (struct sockaddr_in *)&g.sa;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)parse_u32("addr port", colon + 1, 1, 65535));
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
        die("--addr: '%s' is not an IPv4 address", host);
    g.sa_len = sizeof *in;
}

static void parse_opts(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "addr", required_argument, NULL, 'a' },
        { "conns", required_argument, NULL, 'c' },
        { "window", required_argument, NULL, 'w' },
        { "size", required_argument, NULL, 's' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'u' },
        { "idle", required_argument, NULL, 'i' },
        { "tls", no_argument, NULL, 't' },
        { "handshakes", no_argument, NULL, 'h' },
        { "count", required_argument, NULL, 'n' },
        { NULL, 0, NULL, 0 },
    };
    g.o = (struct opts){ .conns = 1, .window = 1, .size = 64, .duration = 5, .warmup = 1 };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'a': g.o.addr = optarg; break;
        case 'c': g.o.conns = parse_u32("conns", optarg, 1, 1000000); break;
        case 'w': g.o.window = parse_u32("window", optarg, 1, 1000000); break;
        case 's': g.o.size = parse_u32("size", optarg, MIN_SIZE, MAX_SIZE); break;
        case 'd': g.o.duration = parse_secs("duration", optarg); break;
        case 'u': g.o.warmup = parse_secs("warmup", optarg); break;
        case 'i': g.o.idle = parse_u32("idle", optarg, 1, 1000000); break;
        case 't': g.o.tls = true; break;
        case 'h': g.o.handshakes = true; break;
        case 'n': g.o.count = parse_u32("count", optarg, 1, UINT32_MAX); break;
        default: usage();
        }
    }
    if (optind != argc || !g.o.addr || (g.o.handshakes && (!g.o.tls || g.o.idle)))
        usage();
    if (g.o.idle) {
        g.o.conns = g.o.idle;
        g.o.window = 1;
    } else if (g.o.duration <= 0) {
        die("--duration must be positive");
    }
    g.frame_len = 4 + (size_t)g.o.size;
    if ((uint64_t)g.o.window * g.frame_len > (1u << 30))
        die("--window x --size needs more than 1 GiB of buffer per connection");
    parse_addr(g.o.addr);
}

/* Each connection needs a descriptor; use all the hard limit allows. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g.o.conns + 16)
        die("%" PRIu32 " connections need more descriptors than RLIMIT_NOFILE "
            "allows (%llu)", g.o.conns, (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv);
    raise_nofile();
    pattern_init(g.o.size - TAG_LEN);
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    if (g.o.tls) {
        g.tls = SSL_CTX_new(TLS_client_method());
        if (!g.tls)
            die("SSL_CTX_new failed");
        SSL_CTX_set_min_proto_version(g.tls, TLS1_2_VERSION);
        SSL_CTX_set_mode(g.tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_session_cache_mode(g.tls, SSL_SESS_CACHE_OFF);
        signal(SIGPIPE, SIG_IGN);
    }
    if (g.o.handshakes) {
        run_handshakes();
        return 0;
    }
    g.conns = xcalloc(g.o.conns, sizeof *g.conns);
    for (uint32_t i = 0; i < g.o.conns; i++)
        conn_init(&g.conns[i], i);

    connect_all();
    if (g.o.idle)
        run_idle();
    else if (g.o.count)
        run_count();
    else
        run_throughput();
    return 0;
}
