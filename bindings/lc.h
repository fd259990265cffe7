/*
** lc.h — the one header shared by the luacomm.core bindings and the host.
**
** The model: every blocking call runs inside a task (a Lua thread owned by
** the scheduler). A call that cannot complete parks its task on a wait queue
** with lc_wait(), which yields with a continuation; libevent callbacks never
** resume Lua themselves, they only call lc_wake(), which puts the task on the
** ready queue. One internal event drains that queue, so every resume happens
** at one safe point and never inside another resume.
*/
#ifndef LC_H
#define LC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "lua.h"
#include "lauxlib.h"

#define LC_VERSION "0.1.0"

/* Registry keys. Strings, not addresses of statics, so that two copies of
** the code (host and a stray core.so) would still share one context. */
#define LC_CTX_KEY "luacomm.ctx"

/* Userdata type names (R4). */
#define LC_TASK_T "luacomm.task"
#define LC_TIMER_T "luacomm.timer"
#define LC_CONN_T "luacomm.conn"
#define LC_LISTENER_T "luacomm.listener"
#define LC_UDP_T "luacomm.udp"
#define LC_COND_T "luacomm.cond"

#define LC_DEFAULT_MAX_FRAME (16u * 1024u * 1024u)
#define LC_DEFAULT_HWM (1024u * 1024u)
/* Input all connections together may buffer: enough for sixteen frames of
** the default maximum in flight, small enough for a 1 GiB, 2-core box. */
#define LC_DEFAULT_INPUT_BUDGET ((size_t)256 * 1024 * 1024)
/* Releasing a buffer this big asks for memory to go back to the system. */
#define LC_BIG_BUFFER ((size_t)1024 * 1024)

/* Debian 12 ships Lua 5.4.4, which predates lua_closethread. */
#if LUA_VERSION_RELEASE_NUM >= 50406
#define lc_closethread(co, from) lua_closethread((co), (from))
#else
#define lc_closethread(co, from) ((void)(from), lua_resetthread(co))
#endif

enum lc_level { LC_DEBUG, LC_INFO, LC_WARN, LC_ERROR };

typedef struct lc_ctx lc_ctx;
struct evdns_base;
typedef struct lc_task lc_task;

/* A FIFO of parked tasks. Embedded in whatever they wait on. */
typedef struct lc_waitq {
  lc_task *head, *tail;
} lc_waitq;

/* Objects whose life keeps the process alive, and which a graceful stop
** must find: listeners, connections, UDP sockets, timers. */
typedef struct lc_handle {
  struct lc_handle *prev, *next;
  int kind;                               /* LC_H_* */
  void (*destroy)(struct lc_handle *h);   /* frees it at once, no flush */
} lc_handle;

enum { LC_H_LISTENER, LC_H_CONN, LC_H_UDP, LC_H_TIMER, LC_H_KINDS };

typedef void (*lc_log_fn)(void *ud, int level, const char *msg, size_t len);

typedef struct lc_counters {
  uint64_t frames_in, frames_out, bytes_in, bytes_out;
  uint64_t task_errors, tasks_spawned, reloads, reload_failures;
  uint64_t refused;          /* over a listener's max_conns */
  uint64_t accept_errors;    /* accept() failed (EMFILE, ENFILE, ...) */
  uint64_t idle_closed;      /* idle_timeout passed */
  uint64_t budget_closed;    /* cut to keep input under the budget */
  uint64_t frames_too_large; /* announced over max_frame */
  uint64_t tls_failures; /* accepted connections whose TLS handshake failed */
} lc_counters;

/* One warning line a second at most (limits.c). */
typedef struct lc_ratelog {
  double next;   /* comm.now() time the next line may go out */
  uint64_t held; /* lines held back since the last one */
  int level;     /* of the last one held back */
  struct event *ev; /* logs the held-back count when nothing else does */
  struct lc_ctx *ctx;
  char last[256]; /* the last one held back */
} lc_ratelog;

/* Connections one listener accepted and that are still open, shared by
** the listener and those connections so that either may go first. */
typedef struct lc_slots {
  int refs; /* the listener, and each connection */
  int used; /* queued for accept() or open */
} lc_slots;

struct lc_ctx {
  struct event_base *base;
  int own_base;           /* created by us (stock Lua): freed in __gc */
  lua_State *L;           /* thread running core.loop; used by callbacks */
  lua_State *mainL;       /* the state's main thread: for registry work anywhere */
  struct event *drain_ev; /* drains the ready queue */
  lc_waitq ready;
  lc_task *current;     /* task being resumed, or NULL */
  int running;          /* inside core.loop */
  int draining;         /* inside the ready queue's pass */
  int stopping;         /* comm.stop() was called */
  lc_task *run_task;    /* that task, weakly */
  int live_tasks;       /* spawned, not finished */
  int sleepers;         /* tasks parked with a deadline */
  lc_handle handles;    /* sentinel of a circular list */
  int nhandles[LC_H_KINDS];
  struct lc_conn *dirty;   /* connections with output to flush after the pass */
  lc_counters n;
  int max_io;           /* test knob: cap every read/write at this many bytes */
  char *scratch;        /* conn.c's read buffer, shared by every connection */
  struct evdns_base *dns; /* resolve.c's resolver, created on first use */
  double task_budget;   /* seconds a task may run without yielding; 0 = off */
  size_t buffered_in;   /* input bytes every connection holds, together */
  size_t input_budget;  /* ... and how many they may hold (core.limits) */
  struct event *trim_ev; /* limits.c: gives memory back after big buffers */
  struct {
    lc_ratelog accept, refused, idle, budget, too_large, nomem;
  } rl;
  lc_log_fn log;
  void *log_ud;
  int log_level;
};

/* ---- core.c ---- */
lc_ctx *lc_getctx(lua_State *L);
void lc_set_base(lua_State *L, struct event_base *base);
struct event_base *lc_event_base_new(void);
int lc_fail(lua_State *L, const char *err);
void lc_logf(lc_ctx *c, int level, const char *fmt, ...);
double lc_now(void);
struct timeval lc_timeval(double seconds);
void lc_handle_add(lc_ctx *c, lc_handle *h, int kind);
void lc_handle_remove(lc_ctx *c, lc_handle *h);
int lc_opt_int(lua_State *L, int idx, const char *k, lua_Integer def, lua_Integer min);
int luaopen_luacomm_core(lua_State *L);

/* ---- sched.c ---- */
int lc_wait(lc_ctx *c, lua_State *L, lc_waitq *q, double deadline, lua_KFunction k);
int lc_timedout(lc_ctx *c);
double lc_wait_deadline(lc_ctx *c);
void lc_set_wait_deadline(lc_ctx *c, double deadline);
void lc_wake(lc_ctx *c, lc_task *t);
void lc_wake_one(lc_ctx *c, lc_waitq *q);
void lc_wake_all(lc_ctx *c, lc_waitq *q);
double lc_deadline(lua_State *L, int idx);
void lc_waitq_remove(lc_waitq *q, lc_task *t);
int lc_spawn_top(lua_State *L, int nargs);
void lc_maybe_idle(lc_ctx *c);
int lc_sched_open(lua_State *L);

/* ---- addr.c ---- */
typedef struct lc_addr {
  struct sockaddr_storage ss;
  socklen_t len;
} lc_addr;
const char *lc_strerror(int err, char *buf, size_t size);
#define LC_NEEDS_DNS "?"
const char *lc_parse_addr(const char *s, int socktype, lc_addr *a);
const char *lc_parse_addr_opt(const char *s, int socktype, lc_addr *a, int numeric);
int lc_split_addr(const char *s, char *buf, size_t size, const char **host, const char **port);
int lc_push_sockaddr(lua_State *L, const struct sockaddr *sa, socklen_t len);
void lc_push_addrstring(lua_State *L, const struct sockaddr *sa, socklen_t len);
evutil_socket_t lc_socket(const lc_addr *a, int socktype);

/* ---- resolve.c ---- */
typedef struct lc_lookup lc_lookup;
lc_lookup *lc_lookup_start(lua_State *L, lc_ctx *c, const char *host, const char *port, int socktype);
lc_waitq *lc_lookup_waiters(lc_lookup *lk);
int lc_lookup_result(lc_lookup *lk, lc_addr *a, const char **err);
void lc_resolver_free(lc_ctx *c);

/* ---- limits.c ---- */
void lc_lograte(lc_ctx *c, lc_ratelog *r, int level, const char *fmt, ...);
void lc_big_released(lc_ctx *c);
void lc_limits_free(lc_ctx *c);
int lc_limits_open(lua_State *L);

/* ---- timer.c, cond.c, conn.c, listener.c, udp.c, addr.c ---- */
int lc_timer_open(lua_State *L);
int lc_cond_open(lua_State *L);
int lc_conn_open(lua_State *L);
int lc_listener_open(lua_State *L);
int lc_udp_open(lua_State *L);
void lc_conn_flush_dirty(lc_ctx *c);
int lc_conn_close_all(lc_ctx *c);
int lc_conn_lingering(lc_ctx *c);
void lc_conn_push(lua_State *L, lc_ctx *c, evutil_socket_t fd, uint32_t max_frame, size_t hwm);
void lc_conn_limit(lua_State *L, int idx, lc_slots *slots, double idle_timeout);
void lc_slots_release(lc_slots *slots);

#endif
