/*
** conn.c — stream connections (TCP and unix): connect, framed send/recv,
** raw write/read/readline, close with flush.
**
** The socket is driven by two plain events and two evbuffers, not a
** bufferevent: one large readv per readiness event, and output coalesced
** for a whole scheduler pass, then written with one writev (evbuffer_write).
** Callbacks only move bytes and wake the waiting task.
**
** Ownership: the Lua userdata holds a pointer to a malloc'ed lc_conn. On
** close, unsent output keeps the lc_conn alive ("lingering") after the
** userdata lets go of it; the write callback frees it once flushed.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lc.h"
#include "tlsmod.h"

#define READ_SCRATCH (256 * 1024)
#define READ_DIRECT_MIN (8 * 1024)
#define ZERO_COPY_MIN (8 * 1024)
#define SMALL_FRAME 256
#define READ_MAX_CHUNK (1024 * 1024)
#define READ_BLOCK (128 * 1024 - 256) /* under malloc's mmap threshold */
#define READ_HANDOVER_MIN (8 * 1024)
#define READ_CARRY_MAX (32 * 1024)
/* A direct read reserves at most what already arrived, and at least this
** (a power of two less libevent's chain header, so no chain is wasted). */
#define READ_GROW_MIN (16 * 1024 - 256)
#define OUT_CACHE 128 /* twice the tasks a pass may wake from I/O (LC_PASS_MAX) */

struct lc_conn {
  lc_handle h; /* first: the handle list hands us back this pointer */
  lc_ctx *ctx;
  evutil_socket_t fd;
  struct event *rev, *wev; /* wev made on first need (arm_write) */
  /* out is NULL while nothing is pending (out_take) */
  struct evbuffer *in, *out;
  lc_waitq readers; /* at most one task (a second reader raises) */
  lc_waitq writers; /* tasks held back by the high-water mark */
  size_t want;      /* bytes of input the reader needs before waking */
  size_t hwm;
  uint32_t max_frame;
  int err;              /* errno of a failed read/write/connect, or 0 */
  unsigned eof : 1;     /* the peer closed its side */
  unsigned reading : 1; /* rev is added */
  unsigned writing : 1; /* wev is added */
  unsigned dirty : 1;   /* on ctx->dirty, to flush at the end of the pass */
  unsigned closed : 1;  /* closed by the user: lingering until flushed */
  unsigned connecting : 1;
  unsigned unread : 1;   /* closed with input nobody read */
  unsigned draining : 1; /* closed, output sent: discarding input until EOF */
  struct lc_conn *next_dirty;
  lc_tls *tls; /* NULL on plain TCP; reads and writes go through it */
  uint64_t frames_in, frames_out, bytes_in, bytes_out;
  size_t counted;          /* bytes of in counted in ctx->buffered_in */
  size_t peak_out;         /* the most out held, to know a big buffer went */
  lc_slots *slots;         /* of the listener that accepted us, or NULL */
  struct event *idle_ev;   /* closes us after idle seconds without I/O */
  struct event *linger_ev; /* ends the discarding of input after close */
  double idle, last_io;
};

typedef struct lc_conn lc_conn;

/* What this file keeps per context (lc_module_state, slot LC_MOD_CONN). */
typedef struct conn_state {
  lc_conn *dirty;   /* connections with output to flush after the pass */
  char *scratch;    /* the read buffer every connection shares */
  char *spare;      /* READ_BLOCK bytes read into first, see read_some */
  int lingering;    /* closed by the user, still flushing */
  lc_waitq drained; /* tasks in core.drained(): woken as connections go */
  int nfree_out;    /* empty output buffers kept for reuse (out_take) */
  struct evbuffer *free_out[OUT_CACHE];
} conn_state;

#define cstate(c) ((conn_state *)(c)->mods[LC_MOD_CONN].state)

static const lc_class conn_class;

/* The connection behind a userdata, NULL once closed (object.c). */
#define udconn(u) ((lc_conn *)(u)->h)

#define CHECKOPEN(s, L) \
  if (((s) = (lc_conn *)lc_checkopen(L, 1, &conn_class)) == NULL) return lc_fail(L, "closed")

/* In a continuation, argument 1 was checked by the first call. */
#define argconn(L) ((lc_hud *)lua_touserdata(L, 1))

/* ---- output buffers ----
**
** A connection holds an output buffer only while output is pending: an
** idle one holds none (144 bytes each, 1.4 MiB for 10,000 idle
** connections). Emptied buffers wait in a small cache of the context (at
** most 128: 18 KiB), so a busy connection pays a few instructions per
** flush, not an allocation. */

#define out_len(s) ((s)->out ? evbuffer_get_length((s)->out) : 0)

/* s->out, made (or taken from the cache) when missing; NULL: no memory. */
static struct evbuffer *out_take (lc_conn *s) {
  conn_state *cs;
  if (s->out != NULL) return s->out;
  cs = cstate(s->ctx);
  s->out = cs->nfree_out > 0 ? cs->free_out[--cs->nfree_out] : evbuffer_new();
  return s->out;
}

/* Gives back s->out: to the cache when empty and there is room. */
static void out_release (lc_conn *s) {
  conn_state *cs = cstate(s->ctx);
  if (s->out == NULL) return;
  if (evbuffer_get_length(s->out) == 0 && cs->nfree_out < OUT_CACHE) cs->free_out[cs->nfree_out++] = s->out;
  else evbuffer_free(s->out);
  s->out = NULL;
}

/* ---- lifetime ---- */

static void destroy (lc_conn *s) {
  lc_ctx *c = s->ctx;
  conn_state *cs = cstate(c);
  lc_handle_unlink(c, &s->h);
  /* Parked tasks point into our wait queues: they must leave before the
  ** free, and find the userdata detached ("closed") when they resume. */
  lc_wake_all(c, &s->readers);
  lc_wake_all(c, &s->writers);
  lc_limits_of(c)->buffered_in -= s->counted;
  if (s->counted >= LC_BIG_BUFFER || s->peak_out >= LC_BIG_BUFFER) lc_big_released(c);
  if (s->slots) {
    s->slots->used--;
    lc_slots_release(s->slots);
  }
  if (s->idle_ev) event_free(s->idle_ev);
  if (s->linger_ev) event_free(s->linger_ev);
  if (s->tls) lc_tlsapi->free(s->tls, s->err == 0); /* close_notify unless the link broke */
  if (s->rev) event_free(s->rev);
  if (s->wev) event_free(s->wev);
  if (s->in) evbuffer_free(s->in);
  out_release(s);
  if (s->fd >= 0) evutil_closesocket(s->fd);
  if (s->dirty) { /* unlink from the flush list */
    lc_conn **p = &cs->dirty;
    while (*p != s) p = &(*p)->next_dirty;
    *p = s->next_dirty;
  }
  if (s->closed) cs->lingering--;
  free(s);
  lc_wake_all(c, &cs->drained); /* they re-check their condition */
  lc_maybe_idle(c);
}

/* lc_handle.destroy: core.shutdown("all") and the context's end cut the
** connection without flushing. */
static void handle_destroy (lc_handle *h) {
  destroy((lc_conn *)h);
}

static void close_graceful(lc_conn *s);

static void handle_close (lc_handle *h) {
  close_graceful((lc_conn *)h);
}

/* The read event is armed only while input is wanted, so a peer that
** sends faster than we read fills its own socket buffer, not our memory. */
static void stop_reading (lc_conn *s) {
  if (s->reading) event_del(s->rev);
  s->reading = 0;
}

static void start_reading (lc_conn *s) {
  if (!s->reading && !s->eof && !s->err && (s->tls == NULL || lc_tlsapi->ready(s->tls))) {
    event_add(s->rev, NULL);
    s->reading = 1;
    /* Input TLS decrypted and kept while we were not reading: the socket
    ** will not announce it. */
    if (s->tls && lc_tlsapi->pending(s->tls)) event_active(s->rev, EV_READ, 0);
  }
}

/* Keeps the process-wide buffered_in true after input came or went. */
static void account (lc_conn *s) {
  size_t now = evbuffer_get_length(s->in);
  lc_limits_of(s->ctx)->buffered_in += now - s->counted; /* modular: a drop subtracts */
  if (s->counted >= now + LC_BIG_BUFFER) lc_big_released(s->ctx);
  s->counted = now;
}

/* Activity, for the idle timeout: only the time is taken here. */
#define touch(s) \
  if ((s)->idle_ev) (s)->last_io = lc_now()

/* A read or write failed: remember the first errno (the one the user
** sees), stop both directions and wake everyone, whose continuations then
** report it. */
static void fail_io (lc_conn *s, int err) {
  lc_ctx *c = s->ctx;
  if (s->err == 0) s->err = err;
  stop_reading(s);
  if (s->writing) event_del(s->wev);
  s->writing = 0;
  lc_wake_all(c, &s->readers);
  lc_wake_all(c, &s->writers);
}

/* ---- writing ---- */

#define WRITE_IOVECS 64

/* One sendmsg of up to WRITE_IOVECS chains of out. Not evbuffer_write:
** its writev raises SIGPIPE when the peer is gone, which kills a stock
** lua5.4 (the host ignores SIGPIPE; a library must not decide that). */
static ssize_t write_some (lc_conn *s, size_t cap) {
  struct evbuffer_iovec vec[WRITE_IOVECS];
  struct msghdr msg;
  int n = evbuffer_peek(s->out, (ev_ssize_t)cap, NULL, vec, WRITE_IOVECS), i;
  size_t total = 0;
  ssize_t w;
  if (s->tls) return lc_tlsapi->write(s->tls, s->out, cap);
  if (n > WRITE_IOVECS) n = WRITE_IOVECS;
  for (i = 0; i < n; i++) {
    if (total + vec[i].iov_len > cap) vec[i].iov_len = cap - total;
    total += vec[i].iov_len;
  }
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = (struct iovec *)vec;
  msg.msg_iovlen = (size_t)n;
  w = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
  if (w > 0) evbuffer_drain(s->out, (size_t)w);
  return w;
}

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* Adds the write event, made on first need: most connections never fill
** the socket, and 10,000 idle ones need not carry 10,000 events. */
static int arm_write (lc_conn *s) {
  if (s->wev == NULL && (s->wev = event_new(s->ctx->base, s->fd, EV_WRITE | EV_PERSIST, on_writable, s)) == NULL) {
    fail_io(s, ENOMEM);
    return -1;
  }
  event_add(s->wev, NULL);
  s->writing = 1;
  return 0;
}

/* Writes what it can now; arms the write event for the rest. */
static void flush (lc_conn *s) {
  lc_ctx *c = s->ctx;
  size_t before = out_len(s), left;
  ssize_t n;
  if (before == 0) out_release(s); /* a write of nothing */
  if (before == 0 || s->err || s->connecting) return;
  n = write_some(s, c->max_io > 0 ? (size_t)c->max_io : before);
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    fail_io(s, errno);
    return;
  }
  if (n > 0) touch(s);
  left = evbuffer_get_length(s->out);
  if (left == 0) out_release(s);
  if (left > 0 && !s->writing) {
    if (arm_write(s) != 0) return;
  } else if (left == 0 && s->writing) {
    event_del(s->wev);
    s->writing = 0;
  }
  if (before > s->hwm && left <= s->hwm) lc_wake_all(c, &s->writers);
}

#define LINGER_SECONDS 2.0

static void on_linger (evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  destroy(arg);
}

/* A closed connection has sent all it had (or failed). Closing a socket
** with input it never read makes the kernel reset the connection, and the
** peer may then lose the answers just sent (a valid frame followed by an
** oversized header in one write). So when input was left unread: send
** FIN, discard what comes until the peer closes too, for a while at most.
** Not under TLS: a FIN before close_notify would be a truncation, and the
** close_notify written after it would meet a shut socket. */
static void finish_close (lc_conn *s) {
  int pending = 0;
  struct timeval tv = lc_timeval(LINGER_SECONDS);
  if (s->err || s->eof || s->draining || s->tls ||
      (!s->unread && (ioctl(s->fd, FIONREAD, &pending) != 0 || pending == 0))) {
    destroy(s);
    return;
  }
  s->linger_ev = evtimer_new(s->ctx->base, on_linger, s);
  if (s->linger_ev == NULL || shutdown(s->fd, SHUT_WR) != 0) {
    destroy(s);
    return;
  }
  s->draining = 1;
  evtimer_add(s->linger_ev, &tv);
  if (!s->reading) {
    event_add(s->rev, NULL);
    s->reading = 1;
  }
}

/* Queues s to be flushed when the current scheduler pass ends, so that
** everything the pass sent goes out in one sendmsg. Outside a pass, now. */
static void mark_dirty (lc_conn *s) {
  lc_ctx *c = s->ctx;
  conn_state *cs = cstate(c);
  if (c->current == NULL) {
    flush(s);
    return;
  }
  if (s->dirty) return;
  s->dirty = 1;
  s->next_dirty = cs->dirty;
  cs->dirty = s;
}

/* The end-of-pass hook (lc_on_pass_end): one write per connection for all
** the pass sent; a closed connection with nothing left goes now. */
static void free_state (lc_ctx *c, void *state) {
  conn_state *cs = state;
  (void)c;
  free(cs->scratch);
  free(cs->spare);
  while (cs->nfree_out > 0) evbuffer_free(cs->free_out[--cs->nfree_out]);
}

static void flush_dirty (lc_ctx *c) {
  conn_state *cs = cstate(c);
  lc_conn *s;
  while ((s = cs->dirty) != NULL) {
    cs->dirty = s->next_dirty;
    s->dirty = 0;
    flush(s);
    if (s->closed && (out_len(s) == 0 || s->err)) finish_close(s);
  }
}

/* The socket can take more: finish a non-blocking connect (its result is
** in SO_ERROR), or write what is left. A closed connection that has
** flushed everything is freed here: this callback owns it then. */
static void on_writable (evutil_socket_t fd, short what, void *arg) {
  lc_conn *s = arg;
  (void)fd, (void)what;
  if (s->connecting) {
    socklen_t len = sizeof s->err;
    s->connecting = 0;
    event_del(s->wev);
    s->writing = 0;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &s->err, &len) != 0) s->err = errno;
    lc_wake_all(s->ctx, &s->readers);
    return;
  }
  flush(s);
  if (s->closed && (out_len(s) == 0 || s->err)) finish_close(s);
}

/* ---- reading ---- */

/* TLS: decrypted into the scratch buffer, then appended. What OpenSSL
** still holds once a piece is taken (the test knob) is read on the next
** pass, as the socket would announce more. */
static ssize_t read_tls (lc_conn *s, size_t cap) {
  lc_ctx *c = s->ctx;
  conn_state *cs = cstate(c);
  ssize_t n = lc_tlsapi->read(s->tls, cs->scratch, cap < READ_SCRATCH ? cap : READ_SCRATCH);
  if (n > 0 && evbuffer_add(s->in, cs->scratch, (size_t)n) != 0) return errno = ENOMEM, -1;
  if (lc_tlsapi->pending(s->tls)) event_active(s->rev, EV_READ, 0);
  return n;
}

/* libevent's cleanup for a block handed over by read_into_spare. */
static void free_block (const void *data, size_t len, void *arg) {
  (void)len, (void)arg;
  free((void *)data);
}

/* The common read: into the spare block, then the scratch buffer, in one
** readv. A large read hands the block itself to the input buffer, cut to
** size, instead of copying it (libevent frees it once drained); a small
** one is copied and the block stays for the next read. Either way the
** input buffer holds what came, not a power-of-two chain around it.
** carry: bytes of s->in (all of it) moved to the block's start first, so
** that a frame begun in an earlier read ends up in one piece: a frame
** split over two chains costs recv two copies (luaL_Buffer) instead of
** one, and with large frames that is every other frame. */
static ssize_t read_into_spare (lc_conn *s, conn_state *cs, size_t carry) {
  struct iovec vec[2];
  size_t first;
  char *b;
  ssize_t n;
  if (cs->spare == NULL && (cs->spare = malloc(READ_BLOCK)) == NULL) return -1;
  if (carry > 0) evbuffer_remove(s->in, cs->spare, carry);
  vec[0].iov_base = cs->spare + carry;
  vec[0].iov_len = READ_BLOCK - carry;
  vec[1].iov_base = cs->scratch;
  vec[1].iov_len = READ_SCRATCH;
  n = readv(s->fd, vec, 2);
  if (n <= 0) {
    int err = errno;
    if (carry > 0 && evbuffer_add(s->in, cs->spare, carry) != 0) return errno = ENOMEM, -1; /* put back */
    errno = err;
    return n;
  }
  first = carry + ((size_t)n < READ_BLOCK - carry ? (size_t)n : READ_BLOCK - carry);
  if (first < READ_HANDOVER_MIN) {
    if (evbuffer_add(s->in, cs->spare, first) != 0) return errno = ENOMEM, -1;
  } else {
    b = first < READ_BLOCK ? realloc(cs->spare, first) : cs->spare; /* shrinks in place */
    if (b == NULL) b = cs->spare;
    cs->spare = NULL;
    if (evbuffer_add_reference(s->in, b, first, free_block, NULL) != 0) {
      free(b);
      return errno = ENOMEM, -1;
    }
  }
  if (carry + (size_t)n > first && evbuffer_add(s->in, cs->scratch, carry + (size_t)n - first) != 0)
    return errno = ENOMEM, -1;
  return n;
}

/* Reads straight into the input buffer when a large frame is expected (one
** copy); otherwise through read_into_spare: a big chain reserved per read
** and freed once drained would make malloc grow and trim the heap on every
** readiness event. */
static ssize_t read_some (lc_conn *s) {
  lc_ctx *c = s->ctx;
  conn_state *cs = cstate(c);
  size_t have = evbuffer_get_length(s->in), cap = c->max_io > 0 ? (size_t)c->max_io : SIZE_MAX;
  struct evbuffer_iovec vec[2];
  int direct = 0;
  ssize_t n;
  errno = ENOMEM; /* for the allocation failures below */
  if (cs->scratch == NULL && (cs->scratch = malloc(READ_SCRATCH)) == NULL) return -1;
  if (s->tls) return read_tls(s, cap);
  /* A reader waits for more than is in: all of it is the start of what it
  ** waits for (see read_into_spare). */
  if (cap == SIZE_MAX && s->readers.head && have > 0 && have <= READ_CARRY_MAX && s->want <= READ_BLOCK)
    return read_into_spare(s, cs, have);
  if (s->want >= have + READ_DIRECT_MIN) {
    /* The rest of a big frame goes straight into the buffer, whatever
    ** follows it into the scratch buffer, in one readv. The space grows
    ** with what came, never with what the peer announced: a header
    ** promising 16 MiB followed by silence costs kilobytes. */
    size_t rest = s->want - have < READ_MAX_CHUNK ? s->want - have : READ_MAX_CHUNK;
    size_t grow = have > READ_GROW_MIN ? have : READ_GROW_MIN;
    if (rest > grow) rest = grow;
    if (evbuffer_reserve_space(s->in, (ev_ssize_t)rest, vec, 1) < 1) return -1;
    vec[0].iov_len = rest;
    direct = 1;
  } else if (cap == SIZE_MAX) {
    return read_into_spare(s, cs, 0);
  }
  vec[direct].iov_base = cs->scratch;
  vec[direct].iov_len = READ_SCRATCH;
  if (cap < SIZE_MAX) { /* the test knob: one piece of at most cap bytes */
    if (vec[0].iov_len > cap) vec[0].iov_len = cap;
    n = readv(s->fd, (struct iovec *)vec, 1);
  } else {
    n = readv(s->fd, (struct iovec *)vec, direct + 1);
  }
  if (direct) {
    size_t first = n > 0 ? ((size_t)n < vec[0].iov_len ? (size_t)n : vec[0].iov_len) : 0;
    size_t more = n > 0 ? (size_t)n - first : 0;
    vec[0].iov_len = first;
    evbuffer_commit_space(s->in, vec, first > 0 ? 1 : 0);
    if (more > 0 && evbuffer_add(s->in, cs->scratch, more) != 0) return errno = ENOMEM, -1;
  } else if (n > 0 && evbuffer_add(s->in, cs->scratch, (size_t)n) != 0) {
    return errno = ENOMEM, -1;
  }
  return n;
}

static void close_graceful(lc_conn *s);

static lc_conn *largest_input (lc_ctx *c) {
  lc_handle *h;
  lc_conn *big = NULL;
  for (h = c->handles.next; h != &c->handles; h = h->next)
    if (h->kind == LC_H_CONN && (big == NULL || ((lc_conn *)h)->counted > big->counted)) big = (lc_conn *)h;
  return big;
}

/* Over the process-wide input budget: the connections holding the most
** input go first, until the rest fit. Returns 1 when s itself went. */
static int enforce_budget (lc_ctx *c, lc_conn *s) {
  lc_limits *lim = lc_limits_of(c);
  int self = 0;
  while (lim->buffered_in > lim->input_budget) {
    lc_conn *big = largest_input(c);
    if (big == NULL || big->counted == 0) break;
    c->n.budget_closed++;
    lc_lograte(c,
               &lim->rl.budget,
               LC_WARN,
               "connection closed: it held %zu bytes of input, and all connections together "
               "were over the input budget (%zu bytes)",
               big->counted,
               lim->input_budget);
    if (big == s) self = 1;
    close_graceful(big); /* as conn:close(): its tasks see "closed" */
  }
  return self;
}

/* Moves what the kernel has into s->in and wakes the reader once its
** frame (s->want bytes) is complete; no reader and over the hwm: stop
** reading, so TCP pushes back on the peer. Never runs Lua. */
static void on_readable (evutil_socket_t fd, short what, void *arg) {
  lc_conn *s = arg;
  lc_ctx *c = s->ctx;
  size_t have;
  ssize_t n;
  (void)fd, (void)what;
  if (s->draining) { /* closed: what comes is thrown away */
    char junk[16384];
    n = read(s->fd, junk, sizeof junk);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) destroy(s);
    return;
  }
  n = read_some(s);
  if (n > 0) {
    s->bytes_in += (uint64_t)n;
    c->n.bytes_in += (uint64_t)n;
    c->pass_in += (size_t)n;
    touch(s);
  } else if (n == 0) {
    s->eof = 1;
    stop_reading(s);
  } else if (errno != EAGAIN && errno != EINTR) {
    if (errno == ENOMEM) /* never silently: the peer did nothing wrong */
      lc_lograte(c,
                 &lc_limits_of(c)->rl.nomem,
                 LC_WARN,
                 "connection failed: out of memory for its input (%zu bytes held)",
                 evbuffer_get_length(s->in));
    account(s);
    fail_io(s, errno);
    return;
  } else {
    return;
  }
  account(s);
  if (lc_limits_of(c)->buffered_in > lc_limits_of(c)->input_budget && enforce_budget(c, s)) return;
  have = evbuffer_get_length(s->in);
  if (s->readers.head) {
    if (have >= s->want || s->eof) lc_wake_one(c, &s->readers);
  } else if (have >= s->hwm) {
    stop_reading(s); /* nobody reads: let TCP push back on the peer */
  }
  lc_pass_if_full(c); /* last: the pass may close s */
}

/* ---- construction ---- */

/* Pushes a connection userdata owning fd (closed on failure). */
void lc_conn_push (lua_State *L, lc_ctx *c, evutil_socket_t fd, uint32_t max_frame, size_t hwm) {
  lc_hud *u = lc_newhud(L, &conn_class); /* "closed" until fully built (R5) */
  lc_conn *s;
  s = calloc(1, sizeof *s);
  if (s == NULL) {
    evutil_closesocket(fd);
    luaL_error(L, "luacomm: out of memory");
  }
  s->ctx = c;
  s->fd = fd;
  s->max_frame = max_frame;
  s->hwm = hwm;
  s->rev = event_new(c->base, fd, EV_READ | EV_PERSIST, on_readable, s);
  s->in = evbuffer_new();
  s->h.destroy = handle_destroy;
  s->h.close = handle_close;
  lc_handle_add(c, &s->h, LC_H_CONN);
  if (!s->rev || !s->in) {
    destroy(s);
    luaL_error(L, "luacomm: out of memory");
  }
  lc_hud_attach(u, &s->h);
  start_reading(s);
}

void lc_slots_release (lc_slots *slots) {
  if (--slots->refs == 0) free(slots);
}

/* No byte read or written for s->idle seconds: the connection goes. The
** timer fires at the idle deadline of the last I/O it knew, and looks
** again at when I/O last happened (I/O only takes the time). */
static void on_idle (evutil_socket_t fd, short what, void *arg) {
  lc_conn *s = arg;
  lc_ctx *c = s->ctx;
  double left = s->last_io + s->idle - lc_now();
  (void)fd, (void)what;
  if (left > 0) {
    struct timeval tv = lc_timeval(left);
    evtimer_add(s->idle_ev, &tv);
    return;
  }
  c->n.idle_closed++;
  lc_lograte(c, &lc_limits_of(c)->rl.idle, LC_INFO, "connection closed: idle for %g s", s->idle);
  /* Nothing moved for that long: no output to wait for, no lingering. */
  destroy(s);
}

/* The listener's limits for the connection at idx, just accepted: it
** takes a share of slots (released when it goes), and an idle timeout
** (seconds; 0 = none). */
void lc_conn_limit (lua_State *L, int idx, lc_slots *slots, double idle) {
  lc_conn *s = udconn(lc_tohud(L, idx, &conn_class));
  if (slots) {
    s->slots = slots;
    slots->refs++;
    slots->used++;
  }
  if (idle > 0) {
    struct timeval tv = lc_timeval(idle);
    s->idle_ev = evtimer_new(s->ctx->base, on_idle, s);
    if (s->idle_ev == NULL) luaL_error(L, "luacomm: out of memory");
    s->idle = idle;
    s->last_io = lc_now();
    evtimer_add(s->idle_ev, &tv);
  }
}

static uint32_t opt_max_frame (lua_State *L, int idx) {
  return (uint32_t)lc_opt_int(L, idx, "max_frame", LC_DEFAULT_MAX_FRAME, 0);
}

/* nil, the errno's text (R8 vocabulary where lc_strerror has a word). */
static int io_error (lua_State *L, int err) {
  char buf[128];
  return lc_fail(L, lc_strerror(err, buf, sizeof buf));
}

/* The TLS handshake of a connect ended (either way): its continuation
** reads the outcome. */
static void tls_handshake_done (lc_tls *t, const char *err, void *arg) {
  lc_conn *s = arg;
  (void)t, (void)err;
  lc_wake_all(s->ctx, &s->readers);
}

/* Stack: addr, opts, deadline (slot kc), conn. Yields until connected, and
** for TLS until the handshake ended. */
static int conn_connect_k (lua_State *L, int status, lua_KContext kc) {
  lc_ctx *c = lc_getctx(L);
  lc_hud *u = lua_touserdata(L, 4);
  lc_conn *s = udconn(u);
  (void)status;
  if (s == NULL) return lc_fail(L, "closed"); /* cut by core.shutdown("all") */
  if (s->connecting && !lc_expired(L, kc)) return lc_wait(c, L, &s->readers, kc, conn_connect_k);
  if (s->connecting || s->err) {
    int err = s->connecting ? ETIMEDOUT : s->err;
    u->h = NULL;
    destroy(s);
    return io_error(L, err);
  }
  if (s->tls && !lc_tlsapi->ready(s->tls)) { /* connected: now the TLS handshake */
    const char *why = lc_tlsapi->failure(s->tls);
    if (why == NULL && !lc_expired(L, kc)) {
      lc_tlsapi->start(s->tls, 0, tls_handshake_done, s);
      return lc_wait(c, L, &s->readers, kc, conn_connect_k);
    }
    lua_pushstring(L, why ? why : "timeout");
    u->h = NULL;
    destroy(s);
    return lc_fail(L, lua_tostring(L, -1));
  }
  start_reading(s); /* held back during the handshake */
  return 1;
}

/* The client context for opts.tls (opts at 2), or NULL: with err empty
** when there is no tls option, else with the reason. Raises on misuse. */
static struct ssl_ctx_st *client_ctx (lua_State *L, char *err, size_t errlen) {
  struct ssl_ctx_st *ctx = NULL;
  int top = lua_gettop(L);
  err[0] = '\0';
  if (!lc_has_tls_opt(L, 2)) return NULL; /* plain TCP never loads luacomm.tls */
  lc_tls_load(L);
  if (lua_getfield(L, 2, "tls") != LUA_TNIL) ctx = lc_tlsapi->ctx_new(L, top + 1, 0, err, errlen);
  lua_settop(L, top);
  return ctx;
}

/* The client session on fd, checking the name opts.tls.server_name or the
** host part of the address (arg 1). */
static lc_tls *client_session (lua_State *L, lc_ctx *c, struct ssl_ctx_st *ctx, evutil_socket_t fd, char *err,
                               size_t errlen) {
  char buf[512];
  const char *host = NULL, *port;
  lc_tls *t;
  int top = lua_gettop(L);
  if (lc_split_addr(lua_tostring(L, 1), buf, sizeof buf, &host, &port) != 0) host = NULL;
  lua_getfield(L, 2, "tls");
  t = lc_tlsapi->session_new(c, ctx, fd, 0, lc_tlsapi->server_name(L, top + 1, host), err, errlen);
  lua_settop(L, top);
  return t;
}

/* Creates the socket and starts connecting to a; pushes the connection
** (at index 4) or returns nil, err. Yields until the deadline in slot kc. */
static int start_connect (lua_State *L, lc_ctx *c, const lc_addr *a, lua_KContext kc) {
  uint32_t max_frame = opt_max_frame(L, 2);
  size_t hwm = (size_t)lc_opt_int(L, 2, "hwm", LC_DEFAULT_HWM, 1);
  evutil_socket_t fd;
  char why[256];
  lc_hud *u;
  lc_tls *t = NULL;
  struct ssl_ctx_st *tctx;
  lua_settop(L, 3);
  tctx = client_ctx(L, why, sizeof why); /* before the socket: it may raise */
  if (tctx == NULL && why[0] != '\0') return lc_fail(L, why);
  if ((fd = lc_socket(a, SOCK_STREAM)) < 0) {
    int e = errno;
    if (tctx) lc_tlsapi->ctx_free(tctx);
    return io_error(L, e);
  }
  if (tctx != NULL) {
    t = client_session(L, c, tctx, fd, why, sizeof why);
    lc_tlsapi->ctx_free(tctx); /* the session holds its own reference */
    if (t == NULL) {
      evutil_closesocket(fd);
      return lc_fail(L, why);
    }
  }
  lc_conn_push(L, c, fd, max_frame, hwm); /* addr, opts, deadline, conn */
  u = lua_touserdata(L, 4);
  if (t != NULL) {
    udconn(u)->tls = t;
    stop_reading(udconn(u)); /* the handshake reads first */
  }
  if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
    if (t == NULL) return 1;
    return conn_connect_k(L, LUA_OK, kc);
  }
  if (errno != EINPROGRESS && errno != EAGAIN) {
    int err = errno;
    destroy(udconn(u));
    return io_error(L, err);
  }
  udconn(u)->connecting = 1;
  if (arm_write(udconn(u)) != 0) {
    destroy(udconn(u));
    return io_error(L, ENOMEM);
  }
  return lc_wait(c, L, &udconn(u)->readers, kc, conn_connect_k);
}

/* Stack: addr, opts, deadline (slot kc), lookup. Yields until the name
** lookup answered or the deadline passed. */
static int conn_resolve_k (lua_State *L, int status, lua_KContext kc) {
  lc_addr a;
  int nret;
  (void)status;
  if (!lc_lookup_await(L, 4, kc, conn_resolve_k, &a, &nret)) return nret;
  return start_connect(L, lc_getctx(L), &a, kc);
}

/* comm.connect(addr, [opts]) -> conn | nil, err. May block (in a task):
** for the name lookup, then for the connection, within opts.timeout. */
static int conn_connect (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  const char *where = luaL_checkstring(L, 1);
  double timeout = 10;
  const char *bad;
  lc_addr a;
  if (lua_istable(L, 2) && lua_getfield(L, 2, "timeout") != LUA_TNIL) {
    timeout = luaL_checknumber(L, -1);
    luaL_argcheck(L, timeout >= 0, 2, "timeout must be >= 0");
  }
  lua_settop(L, 2);
  opt_max_frame(L, 2); /* bad options raise now */
  lc_opt_int(L, 2, "hwm", LC_DEFAULT_HWM, 1);
  bad = lc_parse_addr_opt(where, SOCK_STREAM, &a, 1);
  lc_push_deadline(L, lc_now() + timeout); /* addr, opts, deadline */
  if (bad == NULL) return start_connect(L, c, &a, 3);
  if (bad[0] == '!') return luaL_argerror(L, 1, bad + 1);
  if (bad[0] == LC_NEEDS_DNS[0]) {
    char buf[512];
    const char *host, *port;
    lc_split_addr(where, buf, sizeof buf, &host, &port);
    if (lc_lookup_start(L, c, host, port, SOCK_STREAM) == NULL) return lc_fail(L, lua_tostring(L, -1));
    return conn_resolve_k(L, LUA_OK, 3);
  }
  return lc_fail(L, bad);
}

/* ---- frames ---- */

static int frame_closed_error (lua_State *L, lc_conn *s, size_t have) {
  if (s->err && s->err != EPIPE && s->err != ECONNRESET) return io_error(L, s->err);
  return lc_fail(L, have == 0 ? "closed" : "truncated");
}

/* Pushes the first len bytes of in as a string and drains them. One copy
** when they are contiguous in the buffer, which one large readv makes the
** common case. */
static void push_bytes (lua_State *L, struct evbuffer *in, size_t len) {
  if ((size_t)evbuffer_get_contiguous_space(in) >= len) {
    lua_pushlstring(L, (const char *)evbuffer_pullup(in, (ev_ssize_t)len), len);
    evbuffer_drain(in, len);
  } else {
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len);
    evbuffer_remove(in, p, len);
    luaL_pushresultsize(&b, len);
  }
}

/* Oversized announcement: the connection is unusable; close it as
** conn:close() would, so answers to the frames before it still go out. */
static int frame_too_large (lua_State *L, lc_hud *u) {
  lc_conn *s = udconn(u);
  lc_ctx *c = s->ctx;
  c->n.frames_too_large++;
  lc_lograte(
    c, &lc_limits_of(c)->rl.too_large, LC_WARN, "connection closed: frame announced over max_frame (%u)", s->max_frame);
  close_graceful(s); /* detaches the userdata: u->h is NULL */
  return lc_fail(L, "frame too large");
}

/* Input was taken: count it, and read again. */
static void consumed (lc_conn *s) {
  account(s);
  start_reading(s);
}

/* Whether the next frame is all in s->in (1, its payload length in *len),
** or not yet (0, s->want set to what it needs); -1 when its header
** announces more than max_frame. *h: the header, in place or copied to hb;
** *contiguous: the bytes readable at *h. */
static int frame_in (lc_conn *s, unsigned char hb[4], const unsigned char **h, size_t *contiguous, uint32_t *len) {
  size_t have = evbuffer_get_length(s->in);
  struct evbuffer_iovec first;
  s->want = 4;
  if (have < 4) return 0;
  evbuffer_peek(s->in, -1, NULL, &first, 1);
  *contiguous = first.iov_len;
  if (first.iov_len >= 4) {
    *h = first.iov_base;
  } else {
    evbuffer_copyout(s->in, hb, 4);
    *h = hb;
  }
  *len = (uint32_t)(*h)[0] << 24 | (uint32_t)(*h)[1] << 16 | (uint32_t)(*h)[2] << 8 | (*h)[3];
  if (*len > s->max_frame) return -1;
  if (have < 4 + (size_t)*len) {
    s->want = 4 + (size_t)*len;
    return 0;
  }
  return 1;
}

/* Pushes the next frame when it is all in s->in (1), or sets s->want to
** what it needs and returns 0; -1 when its header announces more than
** max_frame. */
static int take_frame (lua_State *L, lc_conn *s) {
  unsigned char hb[4];
  const unsigned char *h;
  size_t contiguous;
  uint32_t len;
  int got = frame_in(s, hb, &h, &contiguous, &len);
  if (got <= 0) return got;
  if (contiguous >= 4 + (size_t)len) { /* the common case: one copy, no calls */
    lua_pushlstring(L, (const char *)h + 4, len);
    evbuffer_drain(s->in, 4 + (size_t)len);
  } else {
    evbuffer_drain(s->in, 4);
    push_bytes(L, s->in, len);
  }
  s->frames_in++;
  s->ctx->n.frames_in++;
  consumed(s);
  return 1;
}

/* Stack: conn, deadline (slot kc). Yields until a whole frame is in. */
static int conn_recv_k (lua_State *L, int status, lua_KContext kc) {
  lc_hud *u = argconn(L);
  lc_conn *s = udconn(u);
  int got;
  (void)status;
  if (s == NULL) return lc_fail(L, "closed");
  got = take_frame(L, s);
  if (got > 0) return 1;
  if (got < 0) return frame_too_large(L, u);
  if (s->eof || s->err) return frame_closed_error(L, s, evbuffer_get_length(s->in));
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  start_reading(s);
  return lc_wait(s->ctx, L, &s->readers, kc, conn_recv_k);
}

/* Common entry of the reading calls: one reader at a time. */
static double begin_read (lua_State *L, lc_conn *s, int timeout_idx) {
  double deadline = lc_deadline(L, timeout_idx);
  if (s->readers.head) luaL_error(L, "luacomm: another task is already reading this connection");
  return deadline;
}

/* Runs k as if resumed, the deadline pushed at the top: the first attempt
** and every retry share one path (lc_push_deadline). Every so often a task
** whose calls never wait first gives the others a turn (lc_fair; c NULL:
** not a call of a task's own I/O). */
static int first_try (lua_State *L, lc_ctx *c, double deadline, lua_KFunction k) {
  lua_KContext kc = lc_push_deadline(L, deadline);
  if (c != NULL && lc_fair(c, L)) return lua_yieldk(L, 0, kc, k);
  return k(L, LUA_OK, kc);
}

/* conn:recv([timeout]) -> frame | nil, err. Yields until a whole frame
** is in (conn_recv_k); results go above the arguments. A frame already
** buffered is returned at once, without the deadline slot: most calls
** under load. */
static int conn_recv (lua_State *L) {
  lc_conn *s;
  int turn;
  CHECKOPEN(s, L);
  double deadline = begin_read(L, s, 2);
  turn = lc_fair(s->ctx, L); /* counted here, once: first_try gets NULL */
  if (!turn && take_frame(L, s) > 0) return 1;
  lua_settop(L, 1);
  if (turn) return lua_yieldk(L, 0, lc_push_deadline(L, deadline), conn_recv_k);
  return first_try(L, NULL, deadline, conn_recv_k);
}

/* Stack: src, dst, deadline (slot kc). Yields until a whole frame is in
** src and dst is under its high-water mark, then moves the frame. */
static int conn_forward_k (lua_State *L, int status, lua_KContext kc) {
  lc_hud *u = argconn(L);
  lc_conn *s = udconn(u), *d = udconn((lc_hud *)lua_touserdata(L, 2));
  unsigned char hb[4];
  const unsigned char *h;
  size_t contiguous;
  uint32_t len;
  int got;
  (void)status;
  if (s == NULL) return lc_fail(L, "closed");
  if (d == NULL || d->err || d->closed) return lc_fail(L, "destination closed");
  got = frame_in(s, hb, &h, &contiguous, &len);
  if (got < 0) return frame_too_large(L, u);
  if (got > 0 && len > d->max_frame) return lc_fail(L, "frame too large"); /* left for recv */
  if (got > 0 && out_len(d) <= d->hwm) {
    if (out_take(d) == NULL) return luaL_error(L, "luacomm: out of memory");
    evbuffer_remove_buffer(s->in, d->out, 4 + (size_t)len); /* whole chains move, no copy */
    s->frames_in++, d->frames_out++;
    s->ctx->n.frames_in++, s->ctx->n.frames_out++;
    d->bytes_out += 4 + (size_t)len;
    s->ctx->n.bytes_out += 4 + (size_t)len;
    mark_dirty(d);
    start_reading(s);
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
  }
  if (got == 0 && (s->eof || s->err)) return frame_closed_error(L, s, evbuffer_get_length(s->in));
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  if (got > 0) return lc_wait(s->ctx, L, &d->writers, kc, conn_forward_k); /* dst backpressure */
  start_reading(s);
  return lc_wait(s->ctx, L, &s->readers, kc, conn_forward_k);
}

/* conn:forward(dst, [timeout]) -> payload size | nil, err. Receives the
** next frame and sends it on dst unchanged, never as a Lua string: the
** bytes move between the two connections' buffers. */
static int conn_forward (lua_State *L) {
  lc_conn *s, *d;
  CHECKOPEN(s, L);
  d = (lc_conn *)lc_checkopen(L, 2, &conn_class);
  double deadline = begin_read(L, s, 3);
  luaL_argcheck(L, d != s, 2, "a connection cannot forward to itself");
  lua_settop(L, 2);
  return first_try(L, s->ctx, deadline, conn_forward_k);
}

/* Whether recv would return without waiting: a whole frame (or an
** oversized announcement) is buffered, or the stream ended. Otherwise,
** when arming, sets s->want to what the next frame needs: on_readable wakes
** the reader then (a poll must leave another reader's want alone). */
static int frame_ready (lc_conn *s, int arming) {
  size_t have = evbuffer_get_length(s->in);
  if (arming) s->want = 4;
  if (have >= 4) {
    unsigned char h[4];
    uint32_t len;
    evbuffer_copyout(s->in, h, 4);
    len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len > s->max_frame || have >= 4 + (size_t)len) return 1;
    if (arming) s->want = 4 + (size_t)len;
  }
  return s->eof || s->err;
}

static int conn_readable_k (lua_State *L, int status, lua_KContext kc) {
  lc_conn *s = udconn(argconn(L));
  (void)status;
  if (s == NULL || frame_ready(s, 1)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  start_reading(s);
  return lc_wait(s->ctx, L, &s->readers, kc, conn_readable_k);
}

/* conn:readable([timeout]) -> true | nil, "timeout": waits, taking
** nothing, until recv would return at once (a frame is in, or the stream
** ended). The waiting task counts as the connection's reader. With a
** timeout of 0 it answers at once and never yields (comm.select polls). */
static int conn_readable (lua_State *L) {
  lc_conn *s = (lc_conn *)lc_checkopen(L, 1, &conn_class); /* NULL: the core closed it */
  double deadline;
  if (lua_isnumber(L, 2) && lua_tonumber(L, 2) == 0) {
    lua_pushboolean(L, s == NULL || frame_ready(s, 0));
    return 1;
  }
  if (s == NULL) {
    lua_pushboolean(L, 1);
    return 1;
  }
  deadline = begin_read(L, s, 2);
  lua_settop(L, 1);
  return first_try(L, NULL, deadline, conn_readable_k);
}

/* A Lua string handed to the output buffer by reference: anchored in the
** registry until libevent has written it (or freed the buffer). */
typedef struct pin {
  lua_State *mainL;
  int ref;
} pin;

/* libevent's cleanup for a referenced string: drops the registry anchor
** and frees the pin. It may run from evbuffer_free at the context's end,
** which is why the pin carries the main thread, not the sender's. */
static void unpin (const void *data, size_t len, void *arg) {
  pin *p = arg;
  (void)data, (void)len;
  luaL_unref(p->mainL, LUA_REGISTRYINDEX, p->ref);
  free(p);
}

/* Large payloads are not copied: one memcpy of a 16 KiB frame costs more
** than the anchor. Falls back to a copy when out of memory. */
static void add_pinned (lua_State *L, lc_conn *s, int idx, const char *data, size_t len) {
  pin *p = malloc(sizeof *p);
  if (p != NULL) {
    p->mainL = s->ctx->mainL;
    lua_pushvalue(L, idx);
    p->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (evbuffer_add_reference(s->out, data, len, unpin, p) == 0) return;
    unpin(data, len, p);
  }
  evbuffer_add(s->out, data, len);
}

/* Appends p (arg 2, with a frame header when framed) once the output is
** under the high-water mark. Appending the whole frame in one step is what
** keeps frames from several tasks from interleaving. */
static int append (lua_State *L, lc_conn *s, const char *p, size_t len, int framed, lua_KContext kc, lua_KFunction k) {
  size_t wire = len + (framed ? 4 : 0);
  if (s->err || s->closed) return frame_closed_error(L, s, 0);
  if (out_len(s) > s->hwm) {
    if (lc_expired(L, kc)) return lc_fail(L, "timeout"); /* send's timeout: nothing queued */
    return lc_wait(s->ctx, L, &s->writers, kc, k);
  }
  if (out_take(s) == NULL) return luaL_error(L, "luacomm: out of memory");
  if (framed) {
    unsigned char h[4 + SMALL_FRAME];
    h[0] = (unsigned char)(len >> 24), h[1] = (unsigned char)(len >> 16);
    h[2] = (unsigned char)(len >> 8), h[3] = (unsigned char)len;
    s->frames_out++;
    s->ctx->n.frames_out++;
    if (len <= SMALL_FRAME) { /* header and payload in one append */
      memcpy(h + 4, p, len);
      evbuffer_add(s->out, h, 4 + len);
      len = 0;
    } else {
      evbuffer_add(s->out, h, 4);
    }
  }
  if (len >= ZERO_COPY_MIN) add_pinned(L, s, 2, p, len);
  else if (len > 0) evbuffer_add(s->out, p, len);
  s->bytes_out += wire;
  s->ctx->n.bytes_out += wire;
  if (evbuffer_get_length(s->out) > s->peak_out) s->peak_out = evbuffer_get_length(s->out);
  mark_dirty(s);
  lua_pushboolean(L, 1);
  return 1;
}

/* A retry after waiting (or a turn given away): the connection may have
** closed meanwhile, so it is looked up again. */
static int do_send (lua_State *L, int framed, lua_KContext kc, lua_KFunction k) {
  lc_conn *s = udconn(argconn(L));
  size_t len;
  const char *p = lua_tolstring(L, 2, &len);
  if (s == NULL) return lc_fail(L, "closed");
  return append(L, s, p, len, framed, kc, k);
}

/* Continuations of send/write: yield while the output is over the
** high-water mark (backpressure), until send's deadline if it has one
** (kc, lc_push_deadline; 0: none). */
static int conn_send_k (lua_State *L, int status, lua_KContext kc) {
  (void)status;
  return do_send(L, 1, kc, conn_send_k);
}

static int conn_write_k (lua_State *L, int status, lua_KContext kc) {
  (void)status;
  return do_send(L, 0, kc, conn_write_k);
}

/* conn:send(frame, [timeout]) -> true | nil, err. Yields while over the
** hwm, at most timeout seconds ("timeout": the frame was not queued). The
** first attempt appends without reading its arguments again. */
static int conn_send (lua_State *L) {
  lc_conn *s;
  size_t len;
  const char *p;
  lua_KContext kc;
  CHECKOPEN(s, L);
  p = luaL_checklstring(L, 2, &len);
  kc = lua_isnoneornil(L, 3) ? 0 : lc_push_deadline(L, lc_deadline(L, 3));
  if (len > s->max_frame) return lc_fail(L, "frame too large");
  if (lc_fair(s->ctx, L)) return lua_yieldk(L, 0, kc, conn_send_k); /* the others' turn first */
  return append(L, s, p, len, 1, kc, conn_send_k);
}

/* conn:try_send(frame) -> true | nil, "full" (over the hwm: nothing
** queued) | nil, err. Never yields. */
static int conn_try_send (lua_State *L) {
  lc_conn *s;
  size_t len;
  const char *p;
  CHECKOPEN(s, L);
  p = luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  if (len > s->max_frame) return lc_fail(L, "frame too large");
  if (!s->err && !s->closed && out_len(s) > s->hwm) return lc_fail(L, "full");
  return append(L, s, p, len, 1, 0, conn_send_k);
}

/* conn:write(data) -> true | nil, err: raw bytes, no header. */
static int conn_write (lua_State *L) {
  lc_conn *s;
  size_t len;
  const char *p;
  CHECKOPEN(s, L);
  p = luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  if (lc_fair(s->ctx, L)) return lua_yieldk(L, 0, 0, conn_write_k);
  return append(L, s, p, len, 0, 0, conn_write_k);
}

/* ---- raw reads ---- */

/* Stack: conn, n, deadline (slot kc). Yields until n bytes are in. */
static int conn_read_k (lua_State *L, int status, lua_KContext kc) {
  lc_hud *u = argconn(L);
  lc_conn *s = udconn(u);
  size_t n = (size_t)lua_tointeger(L, 2), have;
  (void)status;
  if (s == NULL) return lc_fail(L, "closed");
  have = evbuffer_get_length(s->in);
  if (have >= n) {
    push_bytes(L, s->in, n);
    consumed(s);
    return 1;
  }
  s->want = n;
  if (s->eof || s->err) return frame_closed_error(L, s, have);
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  start_reading(s);
  return lc_wait(s->ctx, L, &s->readers, kc, conn_read_k);
}

/* conn:read(n, [timeout]) -> exactly n bytes | nil, err */
static int conn_read (lua_State *L) {
  lc_conn *s;
  CHECKOPEN(s, L);
  lua_Integer n = luaL_checkinteger(L, 2);
  double deadline;
  luaL_argcheck(L, n >= 0, 2, "size must be >= 0");
  deadline = begin_read(L, s, 3);
  lua_settop(L, 2);
  return first_try(L, s->ctx, deadline, conn_read_k);
}

/* Stack: conn, deadline (slot kc). Yields until a whole line is in. */
static int conn_readline_k (lua_State *L, int status, lua_KContext kc) {
  lc_hud *u = argconn(L);
  lc_conn *s = udconn(u);
  struct evbuffer_ptr eol;
  size_t eol_len = 0, have;
  (void)status;
  if (s == NULL) return lc_fail(L, "closed");
  have = evbuffer_get_length(s->in);
  eol = evbuffer_search_eol(s->in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
  if (eol.pos >= 0) {
    push_bytes(L, s->in, (size_t)eol.pos);
    evbuffer_drain(s->in, eol_len);
    consumed(s);
    return 1;
  }
  if (have > s->max_frame) {
    close_graceful(s);
    return lc_fail(L, "line too long");
  }
  s->want = have + 1;
  if ((s->eof || s->err) && have > 0 && !s->err) { /* the last line has no end */
    push_bytes(L, s->in, have);
    account(s);
    return 1;
  }
  if (s->eof || s->err) return frame_closed_error(L, s, 0);
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  start_reading(s);
  return lc_wait(s->ctx, L, &s->readers, kc, conn_readline_k);
}

/* conn:readline([timeout]) -> line without "\n" / "\r\n" | nil, err */
static int conn_readline (lua_State *L) {
  lc_conn *s;
  CHECKOPEN(s, L);
  double deadline = begin_read(L, s, 2);
  lua_settop(L, 1);
  return first_try(L, s->ctx, deadline, conn_readline_k);
}

/* ---- closing and inspection ---- */

/* Idempotent (R6). Unsent output is still flushed: the lc_conn lingers,
** detached from the userdata, until it is written or the peer is gone. */
static void close_graceful (lc_conn *s) {
  lc_handle_detach(&s->h);
  if (!s->closed) cstate(s->ctx)->lingering++;
  s->closed = 1;
  stop_reading(s);
  if (evbuffer_get_length(s->in) > 0) s->unread = 1;
  evbuffer_drain(s->in, evbuffer_get_length(s->in)); /* nobody will read it */
  account(s);
  lc_wake_all(s->ctx, &s->readers);
  lc_wake_all(s->ctx, &s->writers);
  if (!s->dirty) flush(s);
  if (!s->dirty && (out_len(s) == 0 || s->err)) finish_close(s);
}

/* close(), __close, __gc: idempotent (object.c); see close_graceful. */
static int conn_close (lua_State *L) {
  return lc_hud_close(L, &conn_class);
}

/* Closed connections still flushing what was sent before close(). */
int lc_conn_lingering (lc_ctx *c) {
  return cstate(c)->lingering;
}

/* Stack: what, deadline (slot kc). */
static int drained_k (lua_State *L, int status, lua_KContext kc) {
  lc_ctx *c = lc_getctx(L);
  int what = (int)lua_tointeger(L, 1);
  (void)status;
  if ((what == 0 ? c->nhandles[LC_H_CONN] : cstate(c)->lingering) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  return lc_wait(c, L, &cstate(c)->drained, kc, drained_k);
}

/* core.drained(what, [timeout]) -> true | nil, "timeout". Blocks the task
** until no connection is left ("conns") or none is still flushing after its
** close ("lingering"): the core wakes it as connections go, instead of a
** graceful stop polling the counts. */
static int conn_drained (lua_State *L) {
  static const char *const whats[] = {"conns", "lingering", NULL};
  int what = luaL_checkoption(L, 1, NULL, whats);
  double deadline = lc_deadline(L, 2);
  lua_settop(L, 0);
  lua_pushinteger(L, what);
  return first_try(L, NULL, deadline, drained_k);
}

/* For a graceful stop: every connection closes as conn:close() would. */
int lc_conn_close_all (lc_ctx *c) {
  lc_handle *h, *next;
  int n = 0;
  for (h = c->handles.next; h != &c->handles; h = next) {
    next = h->next;
    if (h->kind == LC_H_CONN && !((lc_conn *)h)->closed) {
      close_graceful((lc_conn *)h);
      n++;
    }
  }
  return n;
}

/* host, port of one end (getpeername/getsockname). */
static int push_name (lua_State *L, int peer) {
  lc_conn *s;
  CHECKOPEN(s, L);
  lc_addr a;
  a.len = sizeof a.ss;
  if ((peer ? getpeername(s->fd, (struct sockaddr *)&a.ss, &a.len)
            : getsockname(s->fd, (struct sockaddr *)&a.ss, &a.len)) != 0)
    return io_error(L, errno);
  return lc_push_sockaddr(L, (struct sockaddr *)&a.ss, a.len);
}

static int conn_peer (lua_State *L) {
  return push_name(L, 1);
}

static int conn_addr (lua_State *L) {
  return push_name(L, 0);
}

static void setnum (lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* conn:stats() -> this connection's counters and what its buffers hold. */
static int conn_stats (lua_State *L) {
  lc_conn *s;
  CHECKOPEN(s, L);
  lua_createtable(L, 0, 6);
  setnum(L, "frames_in", s->frames_in);
  setnum(L, "frames_out", s->frames_out);
  setnum(L, "bytes_in", s->bytes_in);
  setnum(L, "bytes_out", s->bytes_out);
  setnum(L, "pending_in", evbuffer_get_length(s->in));
  setnum(L, "pending_out", out_len(s));
  return 1;
}

/* conn:set_max_frame(n) -> true | nil, "closed": the largest frame this
** connection accepts from now on, either way (a node holds it low until a
** peer has completed its handshake). A reader already waiting re-checks
** the announced length when it wakes. */
static int conn_set_max_frame (lua_State *L) {
  lc_conn *s;
  lua_Integer n;
  CHECKOPEN(s, L);
  n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0 && n <= (lua_Integer)UINT32_MAX, 2, "0 to 4294967295 bytes");
  s->max_frame = (uint32_t)n;
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:tls() -> nil on plain TCP, else { version, cipher, peer, ... } */
static int conn_tls (lua_State *L) {
  lc_conn *s;
  CHECKOPEN(s, L);
  if (s->tls == NULL) {
    lua_pushnil(L);
    return 1;
  }
  return lc_tlsapi->push_info(L, s->tls);
}

void lc_conn_set_tls (lua_State *L, int idx, lc_tls *t) {
  lc_conn *s = udconn(lc_tohud(L, idx, &conn_class));
  s->tls = t;
  if (lc_tlsapi->pending(t)) event_active(s->rev, EV_READ, 0);
}

/* conn:closed() -> true once closed by either side of the seam. */
static int conn_is_closed (lua_State *L) {
  lua_pushboolean(L, lc_tohud(L, 1, &conn_class)->h == NULL);
  return 1;
}

/* For __tostring. */
static evutil_socket_t conn_fd (lc_handle *h) {
  return ((lc_conn *)h)->fd;
}

static const luaL_Reg conn_methods[] = {
  {"send", conn_send},
  {"try_send", conn_try_send},
  {"recv", conn_recv},
  {"forward", conn_forward},
  {"readable", conn_readable},
  {"write", conn_write},
  {"read", conn_read},
  {"readline", conn_readline},
  {"close", conn_close},
  {"peer", conn_peer},
  {"addr", conn_addr},
  {"stats", conn_stats},
  {"closed", conn_is_closed},
  {"set_max_frame", conn_set_max_frame},
  {"tls", conn_tls},
  {NULL, NULL},
};

static const luaL_Reg conn_funcs[] = {
  {"connect", conn_connect},
  {"drained", conn_drained},
  {NULL, NULL},
};

static const lc_class conn_class = {
  .name = LC_CONN_T,
  .what = "connection",
  .methods = conn_methods,
  .funcs = conn_funcs,
  .close = conn_close,
  .fd = conn_fd,
};

/* Module table at -2, ctx at -1; both stay. */
int lc_conn_open (lua_State *L) {
  lc_ctx *c = lua_touserdata(L, -1);
  if (lc_module_state(c, LC_MOD_CONN, sizeof(conn_state), free_state) == NULL)
    return luaL_error(L, "luacomm: out of memory");
  if (lc_on_pass_end(c, flush_dirty) != 0) return luaL_error(L, "luacomm: too many end-of-pass hooks");
  lc_newclass(L, &conn_class);
  return 0;
}
