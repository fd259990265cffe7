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
/* The host's hooks (core.set_host): a table of functions. */
#define LC_HOST_KEY "luacomm.host"

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

/* Log levels. The core owns the minimum level (ctx->log_level); a sink only
** formats and writes what it is handed. lc_level_names (core.c) is the one
** spelling of the names, NULL-terminated for luaL_checkoption. */
enum lc_level { LC_DEBUG, LC_INFO, LC_WARN, LC_ERROR };
extern const char *const lc_level_names[];

typedef struct lc_ctx lc_ctx;
typedef struct lc_task lc_task;
typedef struct lc_guard lc_guard;

/* A FIFO of parked tasks. Embedded in whatever they wait on. */
typedef struct lc_waitq {
  lc_task *head, *tail;
} lc_waitq;

/* Objects whose life keeps the process alive, and which a graceful stop
** must find: listeners, connections, UDP sockets, timers. */
typedef struct lc_handle {
  struct lc_handle *prev, *next;
  struct lc_handle **owner;             /* its userdata's pointer (lc_hud.h), or NULL */
  int kind;                             /* LC_H_* */
  void (*destroy)(struct lc_handle *h); /* frees it at once, no flush */
  void (*close)(struct lc_handle *h);   /* close() from Lua: may linger to flush */
} lc_handle;

/* A userdata type (object.c): one metatable shape for all of them. */
typedef struct lc_class {
  const char *name; /* LC_*_T */
  const char *what; /* "connection": "attempt to use a closed ..." */
  const luaL_Reg *methods;
  const luaL_Reg *funcs;               /* module functions (ctx as upvalue 1), or NULL */
  lua_CFunction close;                 /* close(), __close, and __gc unless gc is set (R6) */
  lua_CFunction gc;                    /* or NULL */
  lua_CFunction tostring;              /* or NULL: "name (fd N)" with fd, else "name (0x...)" */
  evutil_socket_t (*fd)(lc_handle *h); /* handle classes only, else NULL */
} lc_class;

/* What Lua holds of a handle that may outlive its userdata (object.c). */
typedef struct lc_hud {
  const lc_class *cls; /* first: the cheap type check of lc_tohud */
  lc_handle *h;        /* NULL once closed */
  int user_closed;     /* closed by close(), not by the core */
} lc_hud;

/* LC_H_AUX: a listener that serves the operator, not the script (the
** metrics endpoint): it stays open through a stop's "listeners" step and
** does not keep the process alive by itself. */
enum { LC_H_LISTENER, LC_H_CONN, LC_H_UDP, LC_H_TIMER, LC_H_AUX, LC_H_KINDS };

typedef void (*lc_log_fn)(void *ud, int level, const char *msg, size_t len);

/* State a file keeps per context, behind its own slot: lc_ctx knows the
** slot, not the type (conn.c's read buffer and flush list, resolve.c's
** resolver, limits.c's budget, tls_conn.c's BIO method). Freed by fini,
** then free(), when the context ends. */
enum { LC_MOD_CONN, LC_MOD_RESOLVE, LC_MOD_LIMITS, LC_MOD_TLS, LC_MOD_GUARD, LC_MODS };
typedef void (*lc_fini_fn)(lc_ctx *c, void *state);
typedef struct lc_module {
  void *state;
  lc_fini_fn fini;
} lc_module;

/* Runs after every scheduler pass, once the pass's tasks have run (conn.c
** flushes the output the pass queued, in one write per connection). */
typedef void (*lc_pass_fn)(lc_ctx *c);
#define LC_MAX_PASS_HOOKS 4

typedef struct lc_counters {
  uint64_t frames_in, frames_out, bytes_in, bytes_out;
  uint64_t task_errors, tasks_spawned, reloads, reload_failures;
  uint64_t refused;          /* over a listener's max_conns */
  uint64_t accept_errors;    /* accept() failed (EMFILE, ENFILE, ...) */
  uint64_t idle_closed;      /* idle_timeout passed */
  uint64_t budget_closed;    /* cut to keep input under the budget */
  uint64_t frames_too_large; /* announced over max_frame */
  uint64_t tls_failures;     /* accepted connections whose TLS handshake failed */
} lc_counters;

/* One warning line a second at most (limits.c). */
typedef struct lc_ratelog {
  double next;      /* comm.now() time the next line may go out */
  uint64_t held;    /* lines held back since the last one */
  int level;        /* of the last one held back */
  struct event *ev; /* logs the held-back count when nothing else does */
  struct lc_ctx *ctx;
  char last[256]; /* the last one held back */
} lc_ratelog;

/* limits.c's state (slot LC_MOD_LIMITS, made when the module opens): the
** process-wide input budget, and the rate of the core's warnings. */
typedef struct lc_limits {
  size_t buffered_in;    /* input bytes every connection holds, together */
  size_t input_budget;   /* ... and how many they may hold (core.limits) */
  struct event *trim_ev; /* gives memory back after big buffers */
  struct {
    lc_ratelog accept, refused, idle, budget, too_large, nomem;
  } rl;
} lc_limits;

#define lc_limits_of(c) ((lc_limits *)(c)->mods[LC_MOD_LIMITS].state)

/* ---- guard.c: the runaway guard (slot LC_MOD_GUARD; none: off) ---- */
#define lc_guard_of(c) ((lc_guard *)(c)->mods[LC_MOD_GUARD].state)
int lc_guard_start(lua_State *L, lc_ctx *c, double budget);
void lc_guard_enter(lc_guard *g, lua_State *co);
void lc_guard_leave(lc_guard *g);

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
  int woken;            /* tasks made ready since the last pass began */
  unsigned long passes; /* numbers each pass, for a task's last one */
  size_t pass_in;       /* bytes read by connections since then */
  lc_task *current;     /* task being resumed, or NULL */
  int running;          /* inside core.loop */
  int draining;         /* inside the ready queue's pass */
  int stopping;         /* comm.stop() was called */
  lc_task *run_task;    /* that task, weakly */
  int live_tasks;       /* spawned, not finished */
  int sleepers;         /* tasks parked with a deadline */
  lc_handle handles;    /* sentinel of a circular list */
  int nhandles[LC_H_KINDS];
  lc_counters n;
  int max_io;                             /* test knob: cap every read/write at this many bytes */
  lc_module mods[LC_MODS];                /* per-file state, see lc_module_state */
  lc_pass_fn pass_end[LC_MAX_PASS_HOOKS]; /* see lc_on_pass_end */
  int npass_end;
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
int lc_level_from(const char *name);
void lc_set_log(lc_ctx *c, lc_log_fn fn, void *ud, int level);
double lc_now(void);
struct timeval lc_timeval(double seconds);
void lc_handle_add(lc_ctx *c, lc_handle *h, int kind);
void lc_handle_remove(lc_ctx *c, lc_handle *h);
void *lc_module_state(lc_ctx *c, int slot, size_t size, lc_fini_fn fini);
int lc_on_pass_end(lc_ctx *c, lc_pass_fn fn);
int lc_push_host_hook(lua_State *L, const char *name);
int lc_opt_int(lua_State *L, int idx, const char *k, lua_Integer def, lua_Integer min);
int luaopen_luacomm_core(lua_State *L);

/* ---- object.c ---- */
void lc_newclass(lua_State *L, const lc_class *k);
lc_hud *lc_newhud(lua_State *L, const lc_class *k);
void lc_hud_attach(lc_hud *u, lc_handle *h);
int lc_hud_close(lua_State *L, const lc_class *k);
void lc_handle_detach(lc_handle *h);
void lc_handle_unlink(lc_ctx *c, lc_handle *h);

/* Inline: they run on every send and recv.
**
** The userdata of class k at i. A full userdata of our size whose first
** field is the class's address is ours (no other memory holds that
** address): this skips luaL_checkudata's registry lookup by name on every
** send and recv; anything else still gets luaL_checkudata's error. */
static inline lc_hud *lc_tohud (lua_State *L, int i, const lc_class *k) {
  lc_hud *u = lua_touserdata(L, i);
  if (u != NULL && lua_type(L, i) == LUA_TUSERDATA && lua_rawlen(L, i) == sizeof *u && u->cls == k) return u;
  return luaL_checkudata(L, i, k->name);
}

/* Using an object one closed oneself is a programming error (it raises,
** as for a closed file); one the core closed (the peer went away, a frame
** too large, a graceful stop) is a condition: NULL, and the caller returns
** nil, "closed" — another task sharing it must not blow up. */
static inline lc_handle *lc_checkopen (lua_State *L, int i, const lc_class *k) {
  lc_hud *u = lc_tohud(L, i, k);
  if (u->h == NULL && u->user_closed) luaL_error(L, "attempt to use a closed %s", k->what);
  return u->h;
}

/* ---- sched.c ---- */
int lc_wait(lc_ctx *c, lua_State *L, lc_waitq *q, lua_KContext kc, lua_KFunction k);
lua_KContext lc_push_deadline(lua_State *L, double deadline);
double lc_kdeadline(lua_State *L, lua_KContext kc);
int lc_expired(lua_State *L, lua_KContext kc);
void lc_wake(lc_ctx *c, lc_task *t);
void lc_wake_one(lc_ctx *c, lc_waitq *q);
void lc_wake_all(lc_ctx *c, lc_waitq *q);
double lc_deadline(lua_State *L, int idx);
void lc_waitq_remove(lc_waitq *q, lc_task *t);
int lc_spawn_top(lua_State *L, int nargs);
void lc_maybe_idle(lc_ctx *c);
/* Tasks woken, or input bytes held, before a pass runs at once
** (lc_pass_if_full). */
#define LC_PASS_MAX 64
#define LC_PASS_BYTES ((size_t)256 * 1024)
void lc_pass_if_full(lc_ctx *c);
int lc_fair(lc_ctx *c, lua_State *L);
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
int lc_lookup_await(lua_State *L, int idx, lua_KContext kc, lua_KFunction k, lc_addr *a, int *nret);

/* ---- limits.c ---- */
void lc_lograte(lc_ctx *c, lc_ratelog *r, int level, const char *fmt, ...);
void lc_big_released(lc_ctx *c);
int lc_limits_open(lua_State *L);

/* ---- timer.c, cond.c, conn.c, listener.c, udp.c, addr.c ---- */
int lc_timer_open(lua_State *L);
int lc_cond_open(lua_State *L);
int lc_conn_open(lua_State *L);
int lc_listener_open(lua_State *L);
int lc_udp_open(lua_State *L);
int lc_crypto_open(lua_State *L);
int lc_http_open(lua_State *L);
int lc_conn_close_all(lc_ctx *c);
int lc_conn_lingering(lc_ctx *c);
void lc_conn_push(lua_State *L, lc_ctx *c, evutil_socket_t fd, uint32_t max_frame, size_t hwm);
void lc_conn_limit(lua_State *L, int idx, lc_slots *slots, double idle_timeout);
void lc_slots_release(lc_slots *slots);

#endif
