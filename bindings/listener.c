/*
** listener.c — comm.listen and listener:accept/addr/close, on evconnlistener.
**
** Accepted sockets wait in a small queue until a task accepts them. When the
** queue is full the listener is disabled, so a node that stops accepting
** leaves new connections in the kernel's backlog instead of our memory.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/listener.h>

#include "lc.h"
#include "tlsmod.h"

#define ACCEPT_QUEUE 64
#define MAX_HANDSHAKES 1024 /* TLS handshakes under way at once, per listener */
/* Out of descriptors: how long accepting pauses before it tries again. */
#define ACCEPT_PAUSE 0.1

typedef struct lc_listener {
  lc_handle h;
  lc_ctx *ctx;
  struct evconnlistener *lev;
  lc_waitq accepters;
  evutil_socket_t queue[ACCEPT_QUEUE];
  lc_tls_server *tls; /* NULL on plain TCP; else it holds the queue */
  int tls_held;       /* sockets in its handshakes and ready list (max_conns slots) */
  int head, count;
  int enabled;
  int paused; /* accept() failed: resume_ev will retry */
  struct event *resume_ev;
  lc_slots *slots;     /* connections queued or open, shared with them */
  int max_conns;       /* 0: no limit */
  double idle_timeout; /* for its connections; 0: none */
  uint32_t max_frame;
  size_t hwm;
  char *unix_path; /* unlinked at close */
} lc_listener;

static const lc_class listener_class;

/* The listener at i, raising when closed by close(); NULL when the core
** closed it (a graceful stop): the caller answers nil, "closed". */
#define checkopen(L, i) ((lc_listener *)lc_checkopen(L, i, &listener_class))

/* Frees the listener at once: the accepted sockets nobody took yet are
** closed (they were never handed to Lua), a unix socket's file is
** removed, and tasks parked in accept() wake to find it gone ("closed").
** Ends the loop if this was the last thing pending. */
static void destroy (lc_listener *l) {
  lc_ctx *c = l->ctx;
  lc_handle_unlink(c, &l->h);
  if (l->lev) evconnlistener_free(l->lev);
  if (l->resume_ev) event_free(l->resume_ev);
  if (l->slots) l->slots->used -= l->tls_held;
  if (l->tls) lc_tlsapi->server_free(l->tls); /* handshakes under way end here */
  while (l->count > 0) {
    evutil_closesocket(l->queue[l->head]);
    l->head = (l->head + 1) % ACCEPT_QUEUE;
    l->count--;
    l->slots->used--;
  }
  if (l->slots) lc_slots_release(l->slots);
  if (l->unix_path) {
    unlink(l->unix_path);
    free(l->unix_path);
  }
  lc_wake_all(c, &l->accepters);
  free(l);
  lc_maybe_idle(c);
}

/* lc_handle.destroy and .close: a listener has nothing to flush. */
static void handle_destroy (lc_handle *h) {
  destroy((lc_listener *)h);
}

/* Accepting pauses while the queue is full (for TLS: of connections whose
** handshake is done, or of handshakes under way), or after accept() failed
** (resume_ev ends that); it resumes once a task takes from the queue or a
** handshake ends. */
static void throttle (lc_listener *l) {
  int busy = l->paused ||
    (l->tls ? lc_tlsapi->server_ready(l->tls) >= ACCEPT_QUEUE || lc_tlsapi->server_inflight(l->tls) >= MAX_HANDSHAKES
            : l->count >= ACCEPT_QUEUE);
  if (busy && l->enabled) evconnlistener_disable(l->lev);
  else if (!busy && !l->enabled) evconnlistener_enable(l->lev);
  l->enabled = !busy;
}

static void enqueue (lc_listener *l, evutil_socket_t fd) {
  l->queue[(l->head + l->count) % ACCEPT_QUEUE] = fd;
  l->count++;
  throttle(l);
  lc_wake_one(l->ctx, &l->accepters);
}

/* Handshakes the TLS server refused (and closed) free their max_conns
** slots: what it holds now is what is under way or ready. */
static void tls_reconcile (lc_listener *l) {
  int now = lc_tlsapi->server_inflight(l->tls) + lc_tlsapi->server_ready(l->tls);
  if (now < l->tls_held) l->slots->used -= l->tls_held - now;
  l->tls_held = now;
}

/* A TLS handshake ended (in the server's ready list, or refused). */
static void on_tls_done (void *arg) {
  lc_listener *l = arg;
  tls_reconcile(l);
  throttle(l);
  if (lc_tlsapi->server_ready(l->tls) > 0) lc_wake_one(l->ctx, &l->accepters);
}

/* libevent's accept callback: the new fd is ours until a task takes it
** (then the connection owns it) or destroy() closes it. Only queues and
** wakes: no Lua runs here. */
static void on_accept (struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg) {
  lc_listener *l = arg;
  lc_ctx *c = l->ctx;
  (void)lev, (void)sa, (void)socklen;
  if (l->max_conns > 0 && l->slots->used >= l->max_conns) {
    /* Accepted and closed at once: the peer learns now, not after a
    ** backlog timeout, and the kernel's queue does not fill with them. */
    evutil_closesocket(fd);
    c->n.refused++;
    lc_lograte(c,
               &lc_limits_of(c)->rl.refused,
               LC_WARN,
               "connection refused: the listener has max_conns (%d) open",
               l->max_conns);
    return;
  }
  l->slots->used++;
  evutil_make_socket_nonblocking(fd);
  if (sa->sa_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (l->tls == NULL) {
    enqueue(l, fd);
    return;
  }
  /* The handshake runs before any task sees the connection. */
  l->tls_held++;
  lc_tlsapi->accept(l->tls, l->ctx, fd, on_tls_done, l);
  tls_reconcile(l); /* a session it could not even make */
  throttle(l);
}

static void on_resume (evutil_socket_t fd, short what, void *arg) {
  lc_listener *l = arg;
  (void)fd, (void)what;
  l->paused = 0;
  throttle(l);
}

/* EMFILE, ENFILE, ENOBUFS...: the pending connection stays readable, so
** listening on would spin the loop. Pause, and try again shortly: by then
** other connections may have closed and freed descriptors. */
static void on_listen_error (struct evconnlistener *lev, void *arg) {
  lc_listener *l = arg;
  lc_ctx *c = l->ctx;
  struct timeval tv = lc_timeval(ACCEPT_PAUSE);
  int err = EVUTIL_SOCKET_ERROR();
  (void)lev;
  c->n.accept_errors++;
  lc_lograte(c,
             &lc_limits_of(c)->rl.accept,
             LC_WARN,
             "accept failed: %s; accepting paused for %g s",
             evutil_socket_error_to_string(err),
             ACCEPT_PAUSE);
  l->paused = 1;
  throttle(l);
  evtimer_add(l->resume_ev, &tv);
}

/* Stack: listener, deadline (slot kc). Yields while the queue is empty. The
** connection it returns owns the fd (and TLS session) taken from the queue. */
static int listener_accept_k (lua_State *L, int status, lua_KContext kc) {
  lc_listener *l = (lc_listener *)lc_tohud(L, 1, &listener_class)->h;
  (void)status;
  if (l == NULL) return lc_fail(L, "closed");
  if (l->tls != NULL) {
    evutil_socket_t fd;
    lc_tls *t = lc_tlsapi->server_pop(l->tls, &fd);
    if (t != NULL) {
      l->tls_held--;
      throttle(l);
      l->slots->used--; /* lc_conn_limit takes it again, for the connection */
      lc_conn_push(L, l->ctx, fd, l->max_frame, l->hwm);
      lc_conn_set_tls(L, -1, t);
      lc_conn_limit(L, -1, l->slots, l->idle_timeout);
      return 1;
    }
  } else if (l->count > 0) {
    evutil_socket_t fd = l->queue[l->head];
    l->head = (l->head + 1) % ACCEPT_QUEUE;
    l->count--;
    throttle(l);
    l->slots->used--; /* lc_conn_limit takes it again, for the connection */
    lc_conn_push(L, l->ctx, fd, l->max_frame, l->hwm);
    lc_conn_limit(L, -1, l->slots, l->idle_timeout);
    return 1;
  }
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  return lc_wait(l->ctx, L, &l->accepters, kc, listener_accept_k);
}

/* listener:accept([timeout]) -> conn | nil, err */
static int listener_accept (lua_State *L) {
  lc_listener *l = checkopen(L, 1);
  double deadline = lc_deadline(L, 2);
  if (l == NULL) return lc_fail(L, "closed");
  lua_settop(L, 1);
  return listener_accept_k(L, LUA_OK, lc_push_deadline(L, deadline));
}

/* close(), __close, __gc: idempotent (object.c). */
static int listener_close (lua_State *L) {
  return lc_hud_close(L, &listener_class);
}

/* listener:addr() -> host, port (for unix:, the path). */
static int listener_addr (lua_State *L) {
  lc_listener *l = checkopen(L, 1);
  lc_addr a;
  if (l == NULL) return lc_fail(L, "closed");
  a.len = sizeof a.ss;
  if (getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)&a.ss, &a.len) != 0)
    return lc_fail(L, strerror(errno));
  return lc_push_sockaddr(L, (struct sockaddr *)&a.ss, a.len);
}

/* For __tostring. */
static evutil_socket_t listener_fd (lc_handle *h) {
  return evconnlistener_get_fd(((lc_listener *)h)->lev);
}

/* A unix socket file left by a dead process is removed; a live one is not. */
static void clear_stale_unix (const lc_addr *a) {
  const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
  struct stat st;
  evutil_socket_t probe;
  if (stat(un->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return;
  if (connect(probe, (const struct sockaddr *)&a->ss, a->len) != 0 && errno == ECONNREFUSED) unlink(un->sun_path);
  close(probe);
}

/* Binds and listens; returns the fd or -1 with errno set. */
static evutil_socket_t bind_listen (const lc_addr *a, int backlog, int reuseport) {
  evutil_socket_t fd = lc_socket(a, SOCK_STREAM);
  int one = 1, err;
  if (fd < 0) return -1;
  if (a->ss.ss_family != AF_UNIX) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
#ifdef SO_REUSEPORT
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
#endif
  } else {
    clear_stale_unix(a);
  }
  if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == 0 && listen(fd, backlog) == 0) return fd;
  err = errno;
  close(fd);
  errno = err;
  return -1;
}

/* opts[k] as seconds > 0, or 0 when absent. */
static double opt_seconds (lua_State *L, int idx, const char *k) {
  double v = 0;
  if (!lua_istable(L, idx)) return 0;
  if (lua_getfield(L, idx, k) != LUA_TNIL) {
    int isnum;
    v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(v > 0) || v > 1e9) luaL_error(L, "bad option '%s' (seconds > 0 expected)", k);
  }
  lua_pop(L, 1);
  return v;
}

/* comm.listen(addr, [opts]) -> listener | nil, err */
static int listener_listen (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  const char *where = luaL_checkstring(L, 1);
  int backlog = lc_opt_int(L, 2, "backlog", 511, 1);
  uint32_t max_frame = (uint32_t)lc_opt_int(L, 2, "max_frame", LC_DEFAULT_MAX_FRAME, 0);
  size_t hwm = (size_t)lc_opt_int(L, 2, "hwm", LC_DEFAULT_HWM, 1);
  int max_conns = lc_opt_int(L, 2, "max_conns", 0, 1);
  double idle_timeout = opt_seconds(L, 2, "idle_timeout");
  int reuseport = 0;
  const char *bad;
  lc_hud *u;
  lc_listener *l;
  lc_addr a;
  evutil_socket_t fd;
  lc_tls_server *tls;
  char why[256];
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "reuseport");
    reuseport = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  bad = lc_parse_addr(where, SOCK_STREAM, &a);
  if (bad && bad[0] == '!') return luaL_argerror(L, 1, bad + 1);
  if (bad) return lc_fail(L, bad);
  tls = NULL; /* a plain listener never loads luacomm.tls */
  why[0] = '\0';
  if (lc_has_tls_opt(L, 2)) tls = lc_tls_load(L)->server_new(L, 2, why, sizeof why); /* files are read now */
  if (tls == NULL && why[0] != '\0') return lc_fail(L, why);
  u = lc_newhud(L, &listener_class);
  fd = bind_listen(&a, backlog, reuseport);
  if (fd < 0) {
    char buf[128];
    if (tls) lc_tlsapi->server_free(tls);
    return lc_fail(L, lc_strerror(errno, buf, sizeof buf));
  }
  l = calloc(1, sizeof *l);
  if (l == NULL) {
    close(fd);
    if (tls) lc_tlsapi->server_free(tls);
    return luaL_error(L, "luacomm: out of memory");
  }
  l->tls = tls;
  l->ctx = c;
  l->max_conns = max_conns;
  l->idle_timeout = idle_timeout;
  l->max_frame = max_frame;
  l->hwm = hwm;
  l->enabled = 1;
  l->h.destroy = handle_destroy;
  l->h.close = handle_destroy;
  if (a.ss.ss_family == AF_UNIX) l->unix_path = strdup(((struct sockaddr_un *)&a.ss)->sun_path);
  lc_handle_add(c, &l->h, LC_H_LISTENER);
  l->slots = calloc(1, sizeof *l->slots);
  l->resume_ev = evtimer_new(c->base, on_resume, l);
  /* The backlog again: libevent calls listen() once more, and with -1 it
  ** would put 128 in place of the one asked for. */
  l->lev = evconnlistener_new(c->base, on_accept, l, LEV_OPT_CLOSE_ON_FREE, backlog, fd);
  if (l->lev == NULL || l->slots == NULL || l->resume_ev == NULL) {
    if (l->lev == NULL) close(fd);
    destroy(l);
    return luaL_error(L, "luacomm: cannot create a listener");
  }
  l->slots->refs = 1;
  evconnlistener_set_error_cb(l->lev, on_listen_error);
  lc_hud_attach(u, &l->h);
  return 1;
}

static const luaL_Reg listener_methods[] = {
  {"accept", listener_accept},
  {"addr", listener_addr},
  {"close", listener_close},
  {NULL, NULL},
};

static const luaL_Reg listener_funcs[] = {
  {"listen", listener_listen},
  {NULL, NULL},
};

static const lc_class listener_class = {
  .name = LC_LISTENER_T,
  .what = "listener",
  .methods = listener_methods,
  .funcs = listener_funcs,
  .close = listener_close,
  .fd = listener_fd,
};

/* Module table at -2, ctx at -1; both stay. */
int lc_listener_open (lua_State *L) {
  lc_newclass(L, &listener_class);
  return 0;
}
