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
#include "tls.h"

#define ACCEPT_QUEUE 64
#define MAX_HANDSHAKES 1024 /* TLS handshakes under way at once, per listener */

typedef struct lc_listener {
  lc_handle h;
  lc_ctx *ctx;
  struct lc_listener **owner; /* the userdata's pointer to us, cleared on destroy */
  struct evconnlistener *lev;
  lc_waitq accepters;
  evutil_socket_t queue[ACCEPT_QUEUE];
  lc_tls_server *tls;           /* NULL on plain TCP; else it holds the queue */
  int head, count;
  int enabled;
  uint32_t max_frame;
  size_t hwm;
  char *unix_path; /* unlinked at close */
} lc_listener;

typedef struct {
  lc_listener *l; /* NULL once closed */
} listener_ud;

static lc_listener *checkopen (lua_State *L, int i) {
  listener_ud *u = luaL_checkudata(L, i, LC_LISTENER_T);
  if (u->l == NULL) luaL_error(L, "attempt to use a closed listener");
  return u->l;
}

static void destroy (lc_listener *l) {
  lc_ctx *c = l->ctx;
  if (l->owner) *l->owner = NULL;
  lc_handle_remove(c, &l->h);
  if (l->lev) evconnlistener_free(l->lev);
  lc_tls_server_free(l->tls); /* handshakes under way end here */
  while (l->count > 0) {
    evutil_closesocket(l->queue[l->head]);
    l->head = (l->head + 1) % ACCEPT_QUEUE;
    l->count--;
  }
  if (l->unix_path) {
    unlink(l->unix_path);
    free(l->unix_path);
  }
  lc_wake_all(c, &l->accepters);
  free(l);
  lc_maybe_idle(c);
}

static void handle_destroy (lc_handle *h) {
  destroy((lc_listener *)h);
}

/* Accepting pauses while the queue is full (for TLS: of connections whose
** handshake is done, or of handshakes under way); it resumes once a task
** takes from it or a handshake ends. */
static void throttle (lc_listener *l) {
  int busy = l->tls ? lc_tls_server_ready(l->tls) >= ACCEPT_QUEUE || lc_tls_server_inflight(l->tls) >= MAX_HANDSHAKES
                    : l->count >= ACCEPT_QUEUE;
  if (busy && l->enabled) evconnlistener_disable(l->lev);
  else if (!busy && !l->enabled) evconnlistener_enable(l->lev);
  l->enabled = !busy;
}

/* A TLS handshake ended (in the server's ready list, or refused). */
static void on_tls_done (void *arg) {
  lc_listener *l = arg;
  throttle(l);
  if (lc_tls_server_ready(l->tls) > 0) lc_wake_one(l->ctx, &l->accepters);
}

static void on_accept (struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                       int socklen, void *arg) {
  lc_listener *l = arg;
  (void)lev, (void)sa, (void)socklen;
  evutil_make_socket_nonblocking(fd);
  if (sa->sa_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (l->tls != NULL) { /* the handshake runs before any task sees it */
    lc_tls_accept(l->tls, l->ctx, fd, on_tls_done, l);
    throttle(l);
    return;
  }
  l->queue[(l->head + l->count) % ACCEPT_QUEUE] = fd;
  l->count++;
  throttle(l);
  lc_wake_one(l->ctx, &l->accepters);
}

static void on_listen_error (struct evconnlistener *lev, void *arg) {
  lc_listener *l = arg;
  (void)lev;
  /* EMFILE and friends: log and keep listening; the loop retries. */
  lc_logf(l->ctx, LC_WARN, "accept failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static int listener_accept_k (lua_State *L, int status, lua_KContext kc) {
  listener_ud *u = luaL_checkudata(L, 1, LC_LISTENER_T);
  lc_listener *l = u->l;
  (void)status, (void)kc;
  if (l == NULL) return lc_fail(L, "closed");
  if (l->tls != NULL) {
    evutil_socket_t fd;
    lc_tls *t = lc_tls_server_pop(l->tls, &fd);
    if (t != NULL) {
      throttle(l);
      lc_conn_push(L, l->ctx, fd, l->max_frame, l->hwm);
      lc_conn_set_tls(L, -1, t);
      return 1;
    }
  } else if (l->count > 0) {
    evutil_socket_t fd = l->queue[l->head];
    l->head = (l->head + 1) % ACCEPT_QUEUE;
    l->count--;
    throttle(l);
    lc_conn_push(L, l->ctx, fd, l->max_frame, l->hwm);
    return 1;
  }
  if (lc_timedout(l->ctx)) return lc_fail(L, "timeout");
  return lc_wait(l->ctx, L, &l->accepters, lc_wait_deadline(l->ctx), listener_accept_k);
}

/* listener:accept([timeout]) -> conn | nil, err */
static int listener_accept (lua_State *L) {
  lc_listener *l = checkopen(L, 1);
  double deadline = lc_deadline(L, 2);
  lua_settop(L, 1);
  lc_set_wait_deadline(l->ctx, deadline);
  return listener_accept_k(L, LUA_OK, 0);
}

static int listener_close (lua_State *L) {
  listener_ud *u = luaL_checkudata(L, 1, LC_LISTENER_T);
  if (u->l) destroy(u->l);
  u->l = NULL;
  return 0;
}

static int listener_addr (lua_State *L) {
  lc_listener *l = checkopen(L, 1);
  lc_addr a;
  a.len = sizeof a.ss;
  if (getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)&a.ss, &a.len) != 0)
    return lc_fail(L, strerror(errno));
  return lc_push_sockaddr(L, (struct sockaddr *)&a.ss, a.len);
}

static int listener_tostring (lua_State *L) {
  listener_ud *u = luaL_checkudata(L, 1, LC_LISTENER_T);
  if (u->l == NULL) lua_pushliteral(L, "luacomm.listener (closed)");
  else lua_pushfstring(L, "luacomm.listener (fd %d)", (int)evconnlistener_get_fd(u->l->lev));
  return 1;
}

/* A unix socket file left by a dead process is removed; a live one is not. */
static void clear_stale_unix (const lc_addr *a) {
  const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
  struct stat st;
  evutil_socket_t probe;
  if (stat(un->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return;
  if (connect(probe, (const struct sockaddr *)&a->ss, a->len) != 0 && errno == ECONNREFUSED)
    unlink(un->sun_path);
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
  if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == 0 && listen(fd, backlog) == 0)
    return fd;
  err = errno;
  close(fd);
  errno = err;
  return -1;
}

/* comm.listen(addr, [opts]) -> listener | nil, err */
static int listener_listen (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  const char *where = luaL_checkstring(L, 1);
  int backlog = lc_opt_int(L, 2, "backlog", 511, 1);
  uint32_t max_frame = (uint32_t)lc_opt_int(L, 2, "max_frame", LC_DEFAULT_MAX_FRAME, 0);
  size_t hwm = (size_t)lc_opt_int(L, 2, "hwm", LC_DEFAULT_HWM, 1);
  int reuseport = 0;
  const char *bad;
  listener_ud *u;
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
  tls = lc_tls_server_new(L, 2, why, sizeof why); /* files are read now */
  if (tls == NULL && why[0] != '\0') return lc_fail(L, why);
  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->l = NULL;
  luaL_setmetatable(L, LC_LISTENER_T);
  fd = bind_listen(&a, backlog, reuseport);
  if (fd < 0) {
    char buf[128];
    lc_tls_server_free(tls);
    return lc_fail(L, lc_strerror(errno, buf, sizeof buf));
  }
  l = calloc(1, sizeof *l);
  if (l == NULL) {
    close(fd);
    lc_tls_server_free(tls);
    return luaL_error(L, "luacomm: out of memory");
  }
  l->tls = tls;
  l->ctx = c;
  l->max_frame = max_frame;
  l->hwm = hwm;
  l->enabled = 1;
  l->h.destroy = handle_destroy;
  if (a.ss.ss_family == AF_UNIX) l->unix_path = strdup(((struct sockaddr_un *)&a.ss)->sun_path);
  lc_handle_add(c, &l->h, LC_H_LISTENER);
  l->lev = evconnlistener_new(c->base, on_accept, l, LEV_OPT_CLOSE_ON_FREE, -1, fd);
  if (l->lev == NULL) {
    close(fd);
    destroy(l);
    return luaL_error(L, "luacomm: cannot create a listener");
  }
  evconnlistener_set_error_cb(l->lev, on_listen_error);
  u->l = l;
  l->owner = &u->l;
  return 1;
}

static const luaL_Reg listener_methods[] = {
  {"accept", listener_accept},
  {"addr", listener_addr},
  {"close", listener_close},
  {NULL, NULL}
};

static const luaL_Reg listener_metameth[] = {
  {"__index", NULL},
  {"__gc", listener_close},
  {"__close", listener_close},
  {"__tostring", listener_tostring},
  {NULL, NULL}
};

int lc_listener_open (lua_State *L) {
  luaL_newmetatable(L, LC_LISTENER_T);
  luaL_setfuncs(L, listener_metameth, 0);
  luaL_newlibtable(L, listener_methods);
  luaL_setfuncs(L, listener_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, listener_listen);
  lua_setfield(L, -3, "listen");
  return 0;
}
