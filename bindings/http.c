/*
** http.c — HTTP/1.1 on libevent's evhttp: a server whose requests each run
** in a task of their own and are answered later (deferred replies), and a
** client whose calls park the calling task until the response comes.
**
** evhttp parses; nothing here reads HTTP by hand. Callbacks only spawn a
** task (a request came) or wake one (a response came), as elsewhere. A
** task that answered may take the next request (server:next) instead of a
** new coroutine being made per request: requests for idle tasks wait on
** the server's queue, anchored in the registry, until one takes them.
** HTTPS is a bufferevent_openssl under evhttp, made by luacomm.tls
** (tls_http.c), loaded only when a tls table is given.
**
** Server ownership: the server is a handle (a listener, or LC_H_AUX for one
** that must outlive a graceful stop's first step, like /health). Each
** request handed to a task has a malloc'ed record on the server's pending
** list until its reply is written (on_complete) or its connection goes
** (on_conn_close); the task's userdata points at the record until it
** replies. Closing a server stops accepting at once and frees it when no
** reply is pending; the context's end frees it regardless.
*/
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version: no accessor */
#include <event2/keyvalq_struct.h>

#include "lc.h"
#include "tlsmod.h"

#define LC_HTTP_T "luacomm.http.server"
#define LC_HREQ_T "luacomm.http.req"
#define LC_FETCH_T "luacomm.http.fetch"

#define DEFAULT_MAX_BODY (1024 * 1024)
#define DEFAULT_MAX_HEADERS (16 * 1024)
#define DEFAULT_TIMEOUT 30.0

typedef struct lc_http lc_http;
typedef struct hreq_ud hreq_ud;

/* A request handed to a task, until its reply is written or it is cut. */
typedef struct pend {
  struct evhttp_request *req;
  struct evhttp_connection *evcon;
  lc_http *srv;
  hreq_ud *ud; /* the task's handle, until it replies */
  struct pend *prev, *next;
} pend;

struct hreq_ud {
  pend *p; /* NULL once answered, or cut with its connection */
};

/* A request handed to an idle worker: its handle (which holds the request
** table as its user value), anchored. */
typedef struct queued {
  int uref;
  struct queued *next;
} queued;

struct lc_http {
  lc_handle h; /* first: the handle list hands us back this pointer */
  lc_ctx *ctx;
  struct evhttp *http;
  struct evhttp_bound_socket *bound;
  struct event *reap;     /* frees a drained server outside evhttp's callbacks */
  int dispatch_ref;       /* registry: fn(req, hreq) run in a task per request */
  struct ssl_ctx_st *tls; /* HTTPS: each connection gets an SSL of its own */
  pend *pending;
  int npending;
  lc_waitq idle;         /* worker tasks waiting for their next request */
  queued *qhead, *qtail; /* requests handed to woken workers */
  int pool;              /* reuse worker tasks (not for LC_H_AUX servers) */
  int draining;          /* no longer accepting; freed once nothing is pending */
  int freeing;
  time_t date_t; /* the second date holds, for the Date header */
  char date[40];
};

static const lc_class server_class;

/* ---- server: lifetime ---- */

static void reply_now(struct evhttp_request *req, int code, const char *close);

/* Drops the requests no worker took yet: answered 503 when answer is set
** (the server stops accepting), else left to evhttp_free. */
static void queue_flush (lc_http *s, int answer) {
  lua_State *L = s->ctx->mainL;
  while (s->qhead) {
    queued *q = s->qhead;
    s->qhead = q->next;
    if (answer) {
      hreq_ud *u;
      lua_rawgeti(L, LUA_REGISTRYINDEX, q->uref);
      u = lua_touserdata(L, -1);
      lua_pop(L, 1);
      if (u && u->p) {
        pend *p = u->p;
        u->p = NULL;
        p->ud = NULL;
        reply_now(p->req, 503, "close");
      }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, q->uref);
    free(q);
  }
  s->qtail = NULL;
  lc_wake_all(s->ctx, &s->idle); /* idle workers end: nothing more comes */
}

static void srv_free (lc_http *s) {
  lc_ctx *c = s->ctx;
  s->freeing = 1;
  s->draining = 1;
  queue_flush(s, 0);
  while (s->pending) { /* their requests go with evhttp_free */
    pend *p = s->pending;
    s->pending = p->next;
    if (p->ud) p->ud->p = NULL;
    free(p);
  }
  s->npending = 0;
  lc_handle_unlink(c, &s->h);
  if (s->http) evhttp_free(s->http);
  if (s->reap) event_free(s->reap);
  if (s->tls) lc_tlsapi->ctx_free(s->tls);
  if (s->dispatch_ref != LUA_NOREF) luaL_unref(c->mainL, LUA_REGISTRYINDEX, s->dispatch_ref);
  free(s);
  lc_maybe_idle(c);
}

static void on_reap (evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  srv_free(arg);
}

/* Called inside evhttp's callbacks: the free waits for the loop's next turn. */
static void maybe_reap (lc_http *s) {
  static const struct timeval zero = {0, 0};
  if (s->draining && s->npending == 0 && !s->freeing) event_add(s->reap, &zero);
}

static void stop_accepting (lc_http *s) {
  if (s->bound) evhttp_del_accept_socket(s->http, s->bound);
  s->bound = NULL;
  s->draining = 1;
  queue_flush(s, 1);
}

/* First call (a stop's "listeners" step, srv:close()): stop accepting and
** let pending replies go out. A second call, or nothing pending: free. */
static void srv_close (lc_http *s) {
  if (s->draining || s->npending == 0) srv_free(s);
  else stop_accepting(s);
}

static void handle_destroy (lc_handle *h) {
  srv_close((lc_http *)h);
}

static evutil_socket_t server_fd (lc_handle *h) {
  lc_http *s = (lc_http *)h;
  return s->bound ? evhttp_bound_socket_get_fd(s->bound) : -1;
}

static void pend_unlink (lc_http *s, pend *p) {
  if (p->prev) p->prev->next = p->next;
  else s->pending = p->next;
  if (p->next) p->next->prev = p->prev;
  s->npending--;
  if (p->ud) p->ud->p = NULL;
  free(p);
}

/* The reply is written: the request is done. */
static void on_complete (struct evhttp_request *req, void *arg) {
  pend *p = arg;
  lc_http *s = p->srv;
  (void)req;
  pend_unlink(s, p);
  maybe_reap(s);
}

/* A connection goes: whatever it still had pending is cut. */
static void on_conn_close (struct evhttp_connection *evcon, void *arg) {
  lc_http *s = arg;
  pend *p, *next;
  if (s->freeing) return;
  for (p = s->pending; p; p = next) {
    next = p->next;
    if (p->evcon == evcon) pend_unlink(s, p);
  }
  maybe_reap(s);
}

/* ---- server: requests to Lua ---- */

static const char *method_name (enum evhttp_cmd_type t) {
  switch (t) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "?";
  }
}

/* Pushes headers as a table with lower-case keys; a repeated header's
** values are joined with ", " (RFC 9110 5.3). */
static void push_headers (lua_State *L, struct evkeyvalq *hs) {
  struct evkeyval *kv;
  int count = 0;
  for (kv = hs->tqh_first; kv; kv = kv->next.tqe_next) count++;
  lua_createtable(L, 0, count); /* sized once, not grown header by header */
  for (kv = hs->tqh_first; kv; kv = kv->next.tqe_next) {
    char key[128];
    size_t i, n = strlen(kv->key);
    if (n >= sizeof key) n = sizeof key - 1;
    for (i = 0; i < n; i++) key[i] = (char)tolower((unsigned char)kv->key[i]);
    key[n] = '\0';
    if (lua_getfield(L, -1, key) == LUA_TSTRING) {
      lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), kv->value);
      lua_remove(L, -2);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, kv->value);
    }
    lua_setfield(L, -2, key);
  }
}

/* "host:port", "[v6]:port": by hand, as lua_pushfstring's formatting was
** a tenth of the per-request cost of a small reply. */
static void push_peer (lua_State *L, const char *host, unsigned port) {
  char buf[80], digits[8];
  size_t n = strlen(host), k = 0, i = 0;
  int v6 = strchr(host, ':') != NULL;
  if (n > sizeof buf - 10) n = sizeof buf - 10;
  if (v6) buf[i++] = '[';
  memcpy(buf + i, host, n);
  i += n;
  if (v6) buf[i++] = ']';
  buf[i++] = ':';
  do digits[k++] = (char)('0' + port % 10);
  while ((port /= 10) && k < sizeof digits);
  while (k) buf[i++] = digits[--k];
  lua_pushlstring(L, buf, i);
}

static void push_buffer (lua_State *L, struct evbuffer *b) {
  size_t n = evbuffer_get_length(b);
  lua_pushlstring(L, n ? (const char *)evbuffer_pullup(b, -1) : "", n);
}

/* { method, path, query, target, headers, body, peer } */
static void push_request (lua_State *L, struct evhttp_request *req) {
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
  const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
  struct evhttp_connection *evcon = evhttp_request_get_connection(req);
  char *host = NULL;
  ev_uint16_t port = 0;
  lua_createtable(L, 0, 8);
  lua_pushstring(L, method_name(evhttp_request_get_command(req)));
  lua_setfield(L, -2, "method");
  lua_pushstring(L, path && *path ? path : "/");
  lua_setfield(L, -2, "path");
  lua_pushstring(L, evhttp_request_get_uri(req));
  lua_setfield(L, -2, "target");
  lua_newtable(L);
  if (q) {
    struct evkeyvalq kv;
    struct evkeyval *e;
    kv.tqh_first = NULL; /* TAILQ_INIT, which event2 does not export */
    kv.tqh_last = &kv.tqh_first;
    if (evhttp_parse_query_str(q, &kv) == 0)
      for (e = kv.tqh_first; e; e = e->next.tqe_next) {
        lua_pushstring(L, e->value);
        lua_setfield(L, -2, e->key);
      }
    evhttp_clear_headers(&kv);
  }
  lua_setfield(L, -2, "query");
  push_headers(L, evhttp_request_get_input_headers(req));
  lua_setfield(L, -2, "headers");
  push_buffer(L, evhttp_request_get_input_buffer(req));
  lua_setfield(L, -2, "body");
  if (evcon) evhttp_connection_get_peer(evcon, &host, &port);
  if (host) {
    push_peer(L, host, port);
    lua_setfield(L, -2, "peer");
  }
}

static void reply_now (struct evhttp_request *req, int code, const char *close) {
  if (close) evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
  evhttp_send_reply(req, code, NULL, NULL);
}

/* Queues the handle on top of L (its request table in it) for an idle
** worker and wakes it (a new task per request would cost a coroutine
** each). Stack: dispatch, req, hreq; pops them. Returns 0, leaving them,
** when it cannot. */
static int hand_over (lua_State *L, lc_http *s) {
  queued *q = malloc(sizeof *q);
  if (q == NULL) return 0;
  q->uref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 2);
  q->next = NULL;
  if (s->qtail) s->qtail->next = q;
  else s->qhead = q;
  s->qtail = q;
  lc_wake_one(s->ctx, &s->idle);
  return 1;
}

/* gencb: every request evhttp parsed whole. Hands it to an idle worker, or
** spawns a task running dispatch(req, hreq). */
static void on_request (struct evhttp_request *req, void *arg) {
  lc_http *s = arg;
  lc_ctx *c = s->ctx;
  lua_State *L = c->L;
  hreq_ud *u;
  pend *p;
  if (s->draining || L == NULL || (p = calloc(1, sizeof *p)) == NULL) {
    reply_now(req, 503, "close");
    return;
  }
  p->req = req;
  p->srv = s;
  p->evcon = evhttp_request_get_connection(req);
  p->next = s->pending;
  if (s->pending) s->pending->prev = p;
  s->pending = p;
  s->npending++;
  evhttp_request_set_on_complete_cb(req, on_complete, p);
  evhttp_connection_set_closecb(p->evcon, on_conn_close, s);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->dispatch_ref);
  push_request(L, req);
  u = lua_newuserdatauv(L, sizeof *u, 1);
  u->p = p;
  p->ud = u;
  luaL_setmetatable(L, LC_HREQ_T);
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1); /* the request table rides with its handle */
  if (s->idle.head && hand_over(L, s)) return;
  lc_spawn_top(L, 2);
  lua_pop(L, 1);
}

/* ---- server: replies from Lua ---- */

static int valid_token (const char *s, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (s[i] <= ' ' || s[i] == ':' || s[i] == 127) return 0;
  return 1;
}

static int valid_value (const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
  return 1;
}

/* Checks the header table at idx before anything is added, so a bad one
** raises with the request untouched (the caller then answers 500). */
static void check_headers (lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kn, vn;
    const char *k, *v;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "header names must be strings");
    k = lua_tolstring(L, -2, &kn);
    if (!valid_token(k, kn)) luaL_error(L, "bad header name '%s'", k);
    if (!lua_isstring(L, -1)) luaL_error(L, "header '%s': a string or number expected", k);
    v = lua_tolstring(L, -1, &vn);
    if (!valid_value(v, vn)) luaL_error(L, "header '%s': value holds CR, LF or NUL", k);
    lua_pop(L, 1);
  }
}

static void add_headers (lua_State *L, int idx, struct evkeyvalq *out) {
  if (lua_isnoneornil(L, idx)) return;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pushvalue(L, -2); /* lua_tostring on the key itself would confuse lua_next */
    evhttp_add_header(out, lua_tostring(L, -1), lua_tostring(L, -2));
    lua_pop(L, 2);
  }
}

/* The body, unless the answer must not have one: evhttp 2.1 would write
** it after a HEAD answer too. HEAD gets the Content-Length a GET would. */
static void add_body (struct evhttp_request *req, int code, const char *body, size_t len) {
  struct evkeyvalq *out = evhttp_request_get_output_headers(req);
  if (code < 200 || code == 204 || code == 304) return;
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
    char n[32];
    if (evhttp_find_header(out, "Content-Length") == NULL) {
      snprintf(n, sizeof n, "%zu", len);
      evhttp_add_header(out, "Content-Length", n);
    }
    return;
  }
  evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
}

/* The Date header evhttp adds to an HTTP/1.1 answer, formatted once a
** second here instead of for every answer (gmtime and printf in evhttp). */
static void add_date (lc_http *s, struct evhttp_request *req) {
  static const char days[][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char months[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct evkeyvalq *out = evhttp_request_get_output_headers(req);
  time_t now = time(NULL);
  if (req->major != 1 || req->minor < 1 || evhttp_find_header(out, "Date")) return;
  if (now != s->date_t || s->date[0] == '\0') {
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(s->date,
             sizeof s->date,
             "%s, %02d %s %4d %02d:%02d:%02d GMT",
             days[tm.tm_wday],
             tm.tm_mday,
             months[tm.tm_mon],
             1900 + tm.tm_year,
             tm.tm_hour,
             tm.tm_min,
             tm.tm_sec);
    s->date_t = now;
  }
  evhttp_add_header(out, "Date", s->date);
}

/* One sendmsg of out's first chains, drained by what went. MSG_NOSIGNAL,
** as conn.c: a client gone meanwhile must not kill a stock lua5.4 with
** SIGPIPE (evbuffer_write's writev would). */
static ssize_t send_out (evutil_socket_t fd, struct evbuffer *out) {
  struct evbuffer_iovec v[8];
  struct iovec iov[8];
  struct msghdr msg;
  int i, n = evbuffer_peek(out, -1, NULL, v, 8);
  ssize_t w;
  if (n > 8) n = 8;
  for (i = 0; i < n; i++) {
    iov[i].iov_base = v[i].iov_base;
    iov[i].iov_len = v[i].iov_len;
  }
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = (size_t)n;
  do w = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if (w > 0) evbuffer_drain(out, (size_t)w);
  return w;
}

/* Writes a plain-TCP reply now instead of after the next poll: the
** bufferevent would arm EPOLLOUT, wait a loop turn, write, then disarm it
** (two epoll_ctl calls and a turn per request). When the socket takes the
** whole reply, evhttp's write-done callback runs here, from a task and so
** outside evhttp's own frames, and the write event it armed is dropped in
** the same turn: epoll never hears of it. What a full socket leaves is
** written by the bufferevent as before. When the client is gone (reset),
** the reply is dropped and evhttp moves on as if it went: its next read
** meets the reset and closes the connection. */
static void flush_reply (struct evhttp_connection *evcon) {
  struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
  struct evbuffer *out = bufferevent_get_output(bev);
  evutil_socket_t fd = bufferevent_getfd(bev);
  ssize_t n;
  if (fd < 0 || evbuffer_get_length(out) == 0) return;
  evbuffer_unfreeze(out, 1); /* a socket bufferevent drains it only itself */
  n = send_out(fd, out);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) evbuffer_drain(out, evbuffer_get_length(out));
  evbuffer_freeze(out, 1);
  if (evbuffer_get_length(out) == 0) bufferevent_trigger(bev, EV_WRITE, 0);
}

/* hreq:reply(status, [headers], [body]) -> true, or false when the
** request's connection is gone (the reply is dropped). */
static int hreq_reply (lua_State *L) {
  hreq_ud *u = luaL_checkudata(L, 1, LC_HREQ_T);
  lua_Integer code = luaL_checkinteger(L, 2);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 4, "", &len);
  pend *p = u->p;
  struct evhttp_request *req;
  struct evhttp_connection *evcon;
  luaL_argcheck(L, code >= 100 && code <= 599, 2, "status must be 100..599");
  check_headers(L, 3);
  if (p == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  req = p->req;
  add_headers(L, 3, evhttp_request_get_output_headers(req));
  if (p->srv->draining) evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
  add_body(req, (int)code, body, len);
  add_date(p->srv, req);
  u->p = NULL;
  p->ud = NULL;
  evcon = p->srv->tls ? NULL : p->evcon;
  evhttp_send_reply(req, (int)code, NULL, NULL); /* req may be gone after flush_reply */
  if (evcon) flush_reply(evcon);
  lua_pushboolean(L, 1);
  return 1;
}

/* A task that ended without replying (cancelled, cut): answer 500 so the
** client is not left waiting for a reply nobody will write. */
static int hreq_gc (lua_State *L) {
  hreq_ud *u = luaL_checkudata(L, 1, LC_HREQ_T);
  pend *p = u->p;
  if (p == NULL) return 0;
  u->p = NULL;
  p->ud = NULL;
  evhttp_clear_headers(evhttp_request_get_output_headers(p->req));
  reply_now(p->req, 500, "close");
  return 0;
}

/* ---- server: creating ---- */

static double opt_num (lua_State *L, int idx, const char *k, double def) {
  double v = def;
  if (lua_istable(L, idx) && lua_getfield(L, idx, k) != LUA_TNIL) {
    v = luaL_checknumber(L, -1);
    if (!(v > 0)) luaL_error(L, "bad option '%s' (a positive number expected)", k);
  }
  if (lua_istable(L, idx)) lua_pop(L, 1);
  return v;
}

static evutil_socket_t bind_listen (const lc_addr *a, int backlog) {
  evutil_socket_t fd = lc_socket(a, SOCK_STREAM);
  int one = 1, err;
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == 0 && listen(fd, backlog) == 0) return fd;
  err = errno;
  close(fd);
  errno = err;
  return -1;
}

/* evhttp's bufferevent for each accepted HTTPS connection (tls_http.c). */
static struct bufferevent *tls_bevcb (struct event_base *base, void *arg) {
  lc_http *s = arg;
  return lc_tlsapi->https_server_bev(base, s->tls);
}

static void configure (lua_State *L, lc_http *s, int opts) {
  struct timeval tv = lc_timeval(opt_num(L, opts, "timeout", DEFAULT_TIMEOUT));
  evhttp_set_gencb(s->http, on_request, s);
  evhttp_set_max_body_size(s->http, lc_opt_int(L, opts, "max_body", DEFAULT_MAX_BODY, 0));
  evhttp_set_max_headers_size(s->http, lc_opt_int(L, opts, "max_headers", DEFAULT_MAX_HEADERS, 256));
  evhttp_set_timeout_tv(s->http, &tv);
  evhttp_set_allowed_methods(s->http,
                             EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                               EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
  evhttp_set_default_content_type(s->http, "text/plain; charset=utf-8");
  if (s->tls) evhttp_set_bevcb(s->http, tls_bevcb, s);
}

/* opts.tls at opts -> a server context, NULL without one; on a bad file,
** NULL with the reason in err. */
static struct ssl_ctx_st *server_tls (lua_State *L, int opts, char *err, size_t errlen) {
  struct ssl_ctx_st *ctx = NULL;
  err[0] = '\0';
  if (!lua_istable(L, opts)) return NULL;
  if (lua_getfield(L, opts, "tls") == LUA_TTABLE)
    ctx = lc_tls_load(L)->https_server_ctx(L, lua_gettop(L), lc_getctx(L), err, errlen);
  else if (!lua_isnil(L, -1)) luaL_error(L, "bad option 'tls' (a table expected)");
  lua_pop(L, 1);
  return ctx;
}

/* core.http_serve(addr, dispatch, [opts]) -> server | nil, err.
** opts: max_body, max_headers, timeout, backlog, aux (kept through a
** stop's "listeners" step and not keeping the process alive). */
static int http_serve (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  const char *where = luaL_checkstring(L, 1);
  int backlog = lc_opt_int(L, 3, "backlog", 511, 1), aux = 0;
  const char *bad;
  lc_hud *u;
  lc_http *s;
  lc_addr a;
  evutil_socket_t fd;
  struct ssl_ctx_st *tls;
  char err[256];
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "aux");
    aux = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  opt_num(L, 3, "timeout", DEFAULT_TIMEOUT); /* bad options raise before any side effect */
  lc_opt_int(L, 3, "max_body", DEFAULT_MAX_BODY, 0);
  lc_opt_int(L, 3, "max_headers", DEFAULT_MAX_HEADERS, 256);
  bad = lc_parse_addr(where, SOCK_STREAM, &a);
  if (bad && bad[0] == '!') return luaL_argerror(L, 1, bad + 1);
  if (bad) return lc_fail(L, bad);
  if (a.ss.ss_family == AF_UNIX) return luaL_argerror(L, 1, "unix sockets are not supported for HTTP");
  tls = server_tls(L, 3, err, sizeof err);
  if (tls == NULL && err[0]) return lc_fail(L, err);
  u = lc_newhud(L, &server_class);
  fd = bind_listen(&a, backlog);
  if (fd < 0) {
    if (tls) lc_tlsapi->ctx_free(tls);
    return lc_fail(L, lc_strerror(errno, err, sizeof err));
  }
  evutil_make_socket_nonblocking(fd);
  s = calloc(1, sizeof *s);
  if (s) s->tls = tls;
  else if (tls) lc_tlsapi->ctx_free(tls);
  if (s == NULL || (s->http = evhttp_new(c->base)) == NULL ||
      (s->reap = event_new(c->base, -1, 0, on_reap, s)) == NULL ||
      (s->bound = evhttp_accept_socket_with_handle(s->http, fd)) == NULL) {
    close(fd);
    if (s && s->http) evhttp_free(s->http);
    if (s && s->reap) event_free(s->reap);
    if (s && s->tls) lc_tlsapi->ctx_free(s->tls);
    free(s);
    return luaL_error(L, "luacomm: cannot create an HTTP server");
  }
  s->ctx = c;
  s->pool = !aux;
  s->h.destroy = handle_destroy;
  s->h.close = handle_destroy;
  lua_pushvalue(L, 2);
  s->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  configure(L, s, 3);
  lc_handle_add(c, &s->h, aux ? LC_H_AUX : LC_H_LISTENER);
  lc_hud_attach(u, &s->h);
  return 1;
}

/* srv:close(), __close and __gc: stops accepting; answers being written
** go out. (The dispatch function holds the userdata while the server
** lives, so __gc only comes after the server is gone.) */
static int server_close (lua_State *L) {
  return lc_hud_close(L, &server_class);
}

static int server_addr (lua_State *L) {
  lc_http *s = (lc_http *)lc_checkopen(L, 1, &server_class);
  lc_addr a;
  if (s == NULL || s->bound == NULL) return lc_fail(L, "closed");
  a.len = sizeof a.ss;
  if (getsockname(evhttp_bound_socket_get_fd(s->bound), (struct sockaddr *)&a.ss, &a.len) != 0)
    return lc_fail(L, strerror(errno));
  return lc_push_sockaddr(L, (struct sockaddr *)&a.ss, a.len);
}

/* Resumed by a request handed over, the server closing, or the idle time. */
static int server_next_k (lua_State *L, int status, lua_KContext kc) {
  lc_http *s = (lc_http *)((lc_hud *)lua_touserdata(L, 1))->h;
  (void)status;
  if (s == NULL || s->draining || !s->pool) return 0;
  if (s->qhead) {
    queued *q = s->qhead;
    s->qhead = q->next;
    if (s->qhead == NULL) s->qtail = NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, q->uref);
    luaL_unref(L, LUA_REGISTRYINDEX, q->uref);
    free(q);
    lua_getiuservalue(L, -1, 1);
    lua_insert(L, -2); /* req, hreq */
    return 2;
  }
  if (lc_expired(L, kc)) return 0;
  return lc_wait(s->ctx, L, &s->idle, kc, server_next_k);
}

/* server:next([idle]) -> req, hreq | nothing: for the task that just
** answered a request, the next one, waiting up to idle seconds (default 5)
** for it; nothing when the time passed or the server closed (the task ends). */
static int server_next (lua_State *L) {
  lc_hud *u = lc_tohud(L, 1, &server_class);
  double idle = luaL_optnumber(L, 2, 5);
  lua_settop(L, 1);
  if (u->h == NULL) return 0;
  return server_next_k(L, LUA_OK, lc_push_deadline(L, lc_now() + idle));
}

/* core.http_pending() -> requests handed to tasks and not yet answered,
** over every server: a graceful stop waits for them. */
static int http_pending (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  lc_handle *h;
  int n = 0;
  for (h = c->handles.next; h != &c->handles; h = h->next)
    if (h->destroy == handle_destroy) n += ((lc_http *)h)->npending;
  lua_pushinteger(L, n);
  return 1;
}

/* ---- client ---- */

typedef struct fetch {
  lc_ctx *ctx;
  lc_waitq waiters;
  struct evhttp_connection *evcon;
  struct evhttp_request *req; /* ours once done with a response */
  struct ssl_st *ssl;         /* HTTPS: owned by the connection's bufferevent */
  int done;
  char err[160];
} fetch;

typedef struct {
  fetch *f;
} fetch_ud;

static void fetch_free (fetch *f) {
  if (f->done && f->req) evhttp_request_free(f->req);
  if (f->evcon) evhttp_connection_free(f->evcon); /* frees a request still queued */
  free(f);
}

static int fetch_gc (lua_State *L) {
  fetch_ud *u = luaL_checkudata(L, 1, LC_FETCH_T);
  if (u->f) fetch_free(u->f);
  u->f = NULL;
  return 0;
}

static void on_fetch_error (enum evhttp_request_error e, void *arg) {
  fetch *f = arg;
  const char *what;
  switch (e) {
    case EVREQ_HTTP_TIMEOUT: what = "timeout"; break;
    case EVREQ_HTTP_EOF: what = "closed"; break;
    case EVREQ_HTTP_INVALID_HEADER: what = "bad response"; break;
    case EVREQ_HTTP_DATA_TOO_LONG: what = "response too large"; break;
    default: what = "closed"; break;
  }
  snprintf(f->err, sizeof f->err, "%s", what);
}

static void on_fetch_done (struct evhttp_request *req, void *arg) {
  fetch *f = arg;
  int err = errno;
  f->done = 1;
  if (req == NULL || evhttp_request_get_response_code(req) == 0) {
    /* evhttp frees it. A failed connect arrives here with no error call. */
    f->req = NULL;
    if (f->err[0] == '\0' || (f->ssl && !lc_tlsapi->https_finished(f->ssl))) {
      char buf[80];
      int refused = err == ECONNREFUSED || err == ENETUNREACH || err == EHOSTUNREACH;
      if (f->ssl && !refused && !lc_tlsapi->https_finished(f->ssl))
        lc_tlsapi->https_reason(f->ssl, f->err, sizeof f->err);
      else snprintf(f->err, sizeof f->err, "%s", refused ? lc_strerror(err, buf, sizeof buf) : "connection refused");
    }
  } else {
    evhttp_request_own(req); /* read in the task, freed with the fetch */
    f->req = req;
  }
  lc_wake_all(f->ctx, &f->waiters);
}

static int fetch_k (lua_State *L, int status, lua_KContext kc) {
  fetch_ud *u = lua_touserdata(L, -1);
  fetch *f = u->f;
  lc_ctx *c = f->ctx;
  (void)status;
  if (!f->done) {
    if (!lc_expired(L, kc)) return lc_wait(c, L, &f->waiters, kc, fetch_k);
    fetch_free(f);
    u->f = NULL;
    return lc_fail(L, "timeout");
  }
  if (f->req == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, f->err);
  } else {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, evhttp_request_get_response_code(f->req));
    lua_setfield(L, -2, "status");
    push_headers(L, evhttp_request_get_input_headers(f->req));
    lua_setfield(L, -2, "headers");
    push_buffer(L, evhttp_request_get_input_buffer(f->req));
    lua_setfield(L, -2, "body");
    lua_pushnil(L);
  }
  fetch_free(f);
  u->f = NULL;
  return 2;
}

static enum evhttp_cmd_type check_method (lua_State *L, int idx) {
  static const char *const names[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", NULL};
  static const enum evhttp_cmd_type types[] = {EVHTTP_REQ_GET,
                                               EVHTTP_REQ_POST,
                                               EVHTTP_REQ_HEAD,
                                               EVHTTP_REQ_PUT,
                                               EVHTTP_REQ_DELETE,
                                               EVHTTP_REQ_OPTIONS,
                                               EVHTTP_REQ_PATCH};
  return types[luaL_checkoption(L, idx, NULL, names)];
}

/* The connection for f to host:port, over TLS when a tls table is at 8
** (the name checked is tls.server_name, else the URL's host at 9).
** Returns NULL with err filled on a TLS setup failure. */
static struct evhttp_connection *fetch_connection (lua_State *L, fetch *f, const char *host, ev_uint16_t port,
                                                   char *err, size_t errlen) {
  lc_ctx *c = f->ctx;
  struct bufferevent *bev;
  if (!lua_istable(L, 8)) return evhttp_connection_base_new(c->base, NULL, host, port);
  bev = lc_tls_load(L)->https_client_bev(L, c->base, 8, luaL_optstring(L, 9, host), &f->ssl, err, errlen);
  if (bev == NULL) return NULL;
  return evhttp_connection_base_bufferevent_new(c->base, NULL, bev, host, port);
}

/* Sends the request to the numeric address a; stack: the 9 arguments,
** the deadline (slot kc), maybe the name lookup. */
static int fetch_start (lua_State *L, lc_ctx *c, const lc_addr *a, lua_KContext kc) {
  enum evhttp_cmd_type type = check_method(L, 2);
  const char *target = luaL_checkstring(L, 3);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 5, NULL, &len);
  double timeout = luaL_checknumber(L, 6);
  int max_body = (int)luaL_optinteger(L, 7, 64 * 1024 * 1024);
  char host[64], err[200];
  ev_uint16_t port;
  fetch_ud *u;
  fetch *f;
  struct evhttp_request *req;
  struct timeval tv = lc_timeval(timeout + 1); /* ours fires first: "timeout", not "closed" */
  if (a->ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
    evutil_inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a->ss;
    evutil_inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
    port = ntohs(in4->sin_port);
  }
  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->f = NULL;
  luaL_setmetatable(L, LC_FETCH_T);
  if ((f = calloc(1, sizeof *f)) == NULL) return luaL_error(L, "luacomm: out of memory");
  u->f = f;
  f->ctx = c;
  err[0] = '\0';
  f->evcon = fetch_connection(L, f, host, port, err, sizeof err);
  if (f->evcon == NULL && err[0]) return lc_fail(L, err);
  req = f->evcon ? evhttp_request_new(on_fetch_done, f) : NULL;
  if (req == NULL) return luaL_error(L, "luacomm: cannot create an HTTP request");
  f->req = req;
  evhttp_connection_set_timeout_tv(f->evcon, &tv);
  evhttp_connection_set_max_body_size(f->evcon, max_body);
  evhttp_request_set_error_cb(req, on_fetch_error);
  add_headers(L, 4, evhttp_request_get_output_headers(req));
  if (body) evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
  if (evhttp_make_request(f->evcon, req, type, target) != 0) { /* it freed req */
    f->req = NULL;
    return lc_fail(L, "cannot send the request");
  }
  return lc_wait(c, L, &f->waiters, kc, fetch_k);
}

static int fetch_resolve_k (lua_State *L, int status, lua_KContext kc) {
  lc_addr a;
  int nret;
  (void)status;
  if (!lc_lookup_await(L, 11, kc, fetch_resolve_k, &a, &nret)) return nret;
  return fetch_start(L, lc_getctx(L), &a, kc);
}

/* core.http_request(addr, method, target, headers, body, timeout, max_body,
** [tls, host]) -> { status, headers, body } | nil, err. Blocks the calling
** task; one connection per request. With a tls table, HTTPS, checking the
** certificate against tls.server_name or host. The caller puts Host and
** Content-Length in headers. */
static int http_request (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  const char *where = luaL_checkstring(L, 1);
  double timeout = luaL_checknumber(L, 6);
  lua_KContext kc;
  const char *bad;
  lc_addr a;
  check_method(L, 2);
  luaL_checkstring(L, 3);
  check_headers(L, 4);
  luaL_optstring(L, 5, NULL);
  luaL_argcheck(L, timeout >= 0, 6, "timeout must be >= 0");
  luaL_optstring(L, 9, NULL);
  lua_settop(L, 9);
  kc = lc_push_deadline(L, lc_now() + timeout); /* slot 10 */
  bad = lc_parse_addr_opt(where, SOCK_STREAM, &a, 1);
  if (bad == NULL) return fetch_start(L, c, &a, kc);
  if (bad[0] == '!') return luaL_argerror(L, 1, bad + 1);
  if (bad[0] == LC_NEEDS_DNS[0]) {
    char buf[512];
    const char *host, *port;
    lc_split_addr(where, buf, sizeof buf, &host, &port);
    if (lc_lookup_start(L, c, host, port, SOCK_STREAM) == NULL) return lc_fail(L, lua_tostring(L, -1));
    return fetch_resolve_k(L, LUA_OK, kc); /* the lookup at 11 */
  }
  return lc_fail(L, bad);
}

/* ---- registration ---- */

static const luaL_Reg server_methods[] = {
  {"close", server_close},
  {"addr", server_addr},
  {"next", server_next},
  {NULL, NULL},
};

static const luaL_Reg http_funcs[] = {
  {"http_serve", http_serve},
  {"http_request", http_request},
  {"http_pending", http_pending},
  {NULL, NULL},
};

static const lc_class server_class = {
  .name = LC_HTTP_T,
  .what = "HTTP server",
  .methods = server_methods,
  .funcs = http_funcs,
  .close = server_close,
  .fd = server_fd,
};

static const luaL_Reg hreq_methods[] = {
  {"reply", hreq_reply},
  {NULL, NULL},
};

/* A request's handle: closing it unanswered answers 500 (hreq_gc). */
static const lc_class hreq_class = {
  .name = LC_HREQ_T,
  .what = "HTTP request",
  .methods = hreq_methods,
  .close = hreq_gc,
};

static const luaL_Reg no_methods[] = {{NULL, NULL}};

/* A client request under way: closing it drops the connection. */
static const lc_class fetch_class = {
  .name = LC_FETCH_T,
  .what = "HTTP client request",
  .methods = no_methods,
  .close = fetch_gc,
};

/* Module table at -2, ctx at -1; both stay. */
int lc_http_open (lua_State *L) {
  lc_newclass(L, &server_class);
  lc_newclass(L, &hreq_class);
  lc_newclass(L, &fetch_class);
  return 0;
}
