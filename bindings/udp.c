/*
** udp.c — comm.udp: datagram sockets. sendto writes at once (a full socket
** buffer parks the task until writable); recvfrom parks until a datagram
** arrives or the timeout passes.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lc.h"

#define MAX_DATAGRAM 65536

typedef struct lc_udp {
  lc_handle h;
  lc_ctx *ctx;
  evutil_socket_t fd;
  struct event *rev, *wev;
  lc_waitq readers, writers;
  char *dns_name;   /* the last name sendto looked up (malloc'ed, ours) */
  lc_addr dns_addr; /* its answer ... */
  double dns_until; /* ... good until then (comm.now() time) */
} lc_udp;

static const lc_class udp_class;

/* The socket at i, raising when closed by close(); NULL when the core
** closed it: the caller answers nil, "closed". */
#define checkopen(L, i) ((lc_udp *)lc_checkopen(L, i, &udp_class))

/* In a continuation: argument 1 was checked by the first call. */
#define argudp(L) ((lc_udp *)((lc_hud *)lua_touserdata(L, 1))->h)

/* Frees the socket at once (datagrams have nothing to flush), closes its
** fd and wakes parked readers and writers, who find it gone ("closed").
** Ends the loop if this was the last thing pending. */
static void destroy (lc_udp *s) {
  lc_ctx *c = s->ctx;
  lc_handle_unlink(c, &s->h);
  if (s->rev) event_free(s->rev);
  if (s->wev) event_free(s->wev);
  if (s->fd >= 0) evutil_closesocket(s->fd);
  lc_wake_all(c, &s->readers);
  lc_wake_all(c, &s->writers);
  free(s->dns_name);
  free(s);
  lc_maybe_idle(c);
}

/* lc_handle.destroy and .close. */
static void handle_destroy (lc_handle *h) {
  destroy((lc_udp *)h);
}

/* Readable or writable again: wake the side that waits; its continuation
** retries the system call. */
static void on_ready (evutil_socket_t fd, short what, void *arg) {
  lc_udp *s = arg;
  (void)fd;
  lc_wake_all(s->ctx, what & EV_READ ? &s->readers : &s->writers);
}

/* nil, the errno's text (R8 vocabulary where lc_strerror has a word). */
static int io_error (lua_State *L, int err) {
  char buf[128];
  return lc_fail(L, lc_strerror(err, buf, sizeof buf));
}

/* Stack: sock, deadline (slot kc). Yields until a datagram arrives; the
** read event is only armed while a task waits, so an idle socket costs
** the loop nothing. */
static int udp_recvfrom_k (lua_State *L, int status, lua_KContext kc) {
  lc_udp *s = argudp(L);
  char buf[MAX_DATAGRAM];
  lc_addr from;
  ssize_t n;
  (void)status;
  if (s == NULL) return lc_fail(L, "closed");
  from.len = sizeof from.ss;
  n = recvfrom(s->fd, buf, sizeof buf, 0, (struct sockaddr *)&from.ss, &from.len);
  if (n >= 0) {
    event_del(s->rev);
    s->ctx->n.bytes_in += (uint64_t)n; /* as sendto counts bytes_out */
    lua_pushlstring(L, buf, (size_t)n);
    lc_push_addrstring(L, (struct sockaddr *)&from.ss, from.len);
    return 2;
  }
  if (errno != EAGAIN && errno != EINTR) return io_error(L, errno);
  if (lc_expired(L, kc)) {
    event_del(s->rev);
    return lc_fail(L, "timeout");
  }
  event_add(s->rev, NULL);
  return lc_wait(s->ctx, L, &s->readers, kc, udp_recvfrom_k);
}

/* sock:recvfrom([timeout]) -> data, "host:port" | nil, err */
static int udp_recvfrom (lua_State *L) {
  lc_udp *s = checkopen(L, 1);
  double deadline = lc_deadline(L, 2);
  if (s == NULL) return lc_fail(L, "closed");
  if (s->readers.head) return luaL_error(L, "luacomm: another task is already reading this socket");
  lua_settop(L, 1);
  return udp_recvfrom_k(L, LUA_OK, lc_push_deadline(L, deadline));
}

/* Stack: sock, data, addr, to. Yields while the socket buffer is full. */
static int udp_sendto_k (lua_State *L, int status, lua_KContext kc) {
  lc_udp *s = argudp(L);
  size_t len;
  const char *p = lua_tolstring(L, 2, &len);
  lc_addr *to = lua_touserdata(L, 4);
  ssize_t n;
  (void)status, (void)kc;
  if (s == NULL) return lc_fail(L, "closed");
  n = sendto(s->fd, p, len, 0, (struct sockaddr *)&to->ss, to->len);
  if (n >= 0) {
    event_del(s->wev);
    s->ctx->n.bytes_out += (uint64_t)n;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (errno != EAGAIN && errno != EINTR) return io_error(L, errno);
  event_add(s->wev, NULL);
  return lc_wait(s->ctx, L, &s->writers, 0, udp_sendto_k);
}

/* How long a looked-up name is reused: evdns's getaddrinfo does not tell
** the record's TTL, and a name a node sends to is looked up at most this
** often instead of once per datagram. */
#define DNS_CACHE_SECONDS 30.0

/* Stack: sock, data, addr, to, lookup. Yields until the name lookup for
** sendto answered (evdns always answers, within its own timeout). */
static int udp_resolve_k (lua_State *L, int status, lua_KContext kc) {
  lc_udp *s = argudp(L);
  lc_lookup *lk = *(lc_lookup **)lua_touserdata(L, 5);
  lc_addr *to = lua_touserdata(L, 4);
  const char *err = NULL;
  (void)status;
  if (s == NULL) return lc_fail(L, "closed");
  switch (lc_lookup_result(lk, to, &err)) {
    case 0: {
      char *name = strdup(lua_tostring(L, 3));
      if (name != NULL) { /* else no cache: the next send asks again */
        free(s->dns_name);
        s->dns_name = name;
        s->dns_addr = *to;
        s->dns_until = lc_now() + DNS_CACHE_SECONDS;
      }
      lua_settop(L, 4);
      return udp_sendto_k(L, LUA_OK, 0);
    }
    case 1: return lc_fail(L, err);
    default: return lc_wait(s->ctx, L, lc_lookup_waiters(lk), kc, udp_resolve_k);
  }
}

/* The datagram's destination into *to: a numeric address at once, a name
** from the cache, else a lookup through resolve.c, pushed at 5 with
** *lookup set (the caller waits for it). NULL, or the error to return. */
static const char *destination (lua_State *L, lc_udp *s, lc_addr *to, int *lookup) {
  const char *where = lua_tostring(L, 3), *bad, *host, *port;
  char buf[512];
  *lookup = 0;
  bad = lc_parse_addr_opt(where, SOCK_DGRAM, to, 1);
  if (bad == NULL) return NULL;
  if (bad[0] == '!') luaL_argerror(L, 3, bad + 1);
  if (bad[0] != LC_NEEDS_DNS[0]) return bad;
  if (s->dns_name && strcmp(s->dns_name, where) == 0 && lc_now() < s->dns_until) {
    *to = s->dns_addr;
    return NULL;
  }
  lc_split_addr(where, buf, sizeof buf, &host, &port);
  if (lc_lookup_start(L, s->ctx, host, port, SOCK_DGRAM) == NULL) return lua_tostring(L, -1);
  *lookup = 1;
  return NULL;
}

/* sock:sendto(data, addr) -> true | nil, err. May yield: for a name
** lookup (not a blocking getaddrinfo), and while the socket buffer is full. */
static int udp_sendto (lua_State *L) {
  lc_udp *s = checkopen(L, 1);
  lc_addr *to;
  const char *err;
  int lookup;
  if (s == NULL) return lc_fail(L, "closed");
  luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  lua_settop(L, 3);
  to = lua_newuserdatauv(L, sizeof *to, 0); /* 4: kept on the stack across waits */
  if ((err = destination(L, s, to, &lookup)) != NULL) return lc_fail(L, err);
  if (lookup) return udp_resolve_k(L, LUA_OK, 0);
  return udp_sendto_k(L, LUA_OK, 0);
}

/* sock:addr() -> host, port it is bound to. */
static int udp_addr (lua_State *L) {
  lc_udp *s = checkopen(L, 1);
  lc_addr a;
  if (s == NULL) return lc_fail(L, "closed");
  a.len = sizeof a.ss;
  if (getsockname(s->fd, (struct sockaddr *)&a.ss, &a.len) != 0) return io_error(L, errno);
  return lc_push_sockaddr(L, (struct sockaddr *)&a.ss, a.len);
}

/* close(), __close, __gc: idempotent (object.c). */
static int udp_close (lua_State *L) {
  return lc_hud_close(L, &udp_class);
}

/* For __tostring. */
static evutil_socket_t udp_fd (lc_handle *h) {
  return ((lc_udp *)h)->fd;
}

/* comm.udp([addr]) -> socket | nil, err */
static int udp_new (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  const char *where = luaL_optstring(L, 1, "127.0.0.1:0");
  const char *bad;
  lc_hud *u;
  lc_udp *s;
  lc_addr a;
  evutil_socket_t fd;
  bad = lc_parse_addr(where, SOCK_DGRAM, &a);
  if (bad && bad[0] == '!') return luaL_argerror(L, 1, bad + 1);
  if (bad) return lc_fail(L, bad);
  u = lc_newhud(L, &udp_class);
  fd = lc_socket(&a, SOCK_DGRAM);
  if (fd < 0) return io_error(L, errno);
  if (bind(fd, (struct sockaddr *)&a.ss, a.len) != 0) {
    int err = errno;
    close(fd);
    return io_error(L, err);
  }
  s = calloc(1, sizeof *s);
  if (s == NULL) {
    close(fd);
    return luaL_error(L, "luacomm: out of memory");
  }
  s->ctx = c;
  s->fd = fd;
  s->h.destroy = handle_destroy;
  s->h.close = handle_destroy;
  lc_handle_add(c, &s->h, LC_H_UDP);
  s->rev = event_new(c->base, fd, EV_READ | EV_PERSIST, on_ready, s);
  s->wev = event_new(c->base, fd, EV_WRITE | EV_PERSIST, on_ready, s);
  if (!s->rev || !s->wev) {
    destroy(s);
    return luaL_error(L, "luacomm: out of memory");
  }
  lc_hud_attach(u, &s->h);
  return 1;
}

static const luaL_Reg udp_methods[] = {
  {"sendto", udp_sendto},
  {"recvfrom", udp_recvfrom},
  {"addr", udp_addr},
  {"close", udp_close},
  {NULL, NULL},
};

static const luaL_Reg udp_funcs[] = {
  {"udp", udp_new},
  {NULL, NULL},
};

static const lc_class udp_class = {
  .name = LC_UDP_T,
  .what = "socket",
  .methods = udp_methods,
  .funcs = udp_funcs,
  .close = udp_close,
  .fd = udp_fd,
};

/* Module table at -2, ctx at -1; both stay. */
int lc_udp_open (lua_State *L) {
  lc_newclass(L, &udp_class);
  return 0;
}
