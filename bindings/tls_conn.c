/*
** tls_conn.c — one TLS session on a non-blocking socket: the handshake on
** its own events, then SSL_read/SSL_write for conn.c, and the accepting
** side's handshakes that run before a connection reaches Lua.
**
** OpenSSL talks to the socket through a small BIO of ours instead of
** BIO_s_socket: its writes use MSG_NOSIGNAL (a library must not let a gone
** peer kill a stock lua5.4 with SIGPIPE), and both directions obey the
** max_io test knob, so the 1-byte mode splits TLS records on the wire too.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls.h"

#define TLS_WRITE_CHUNK (16 * 1024) /* one full record per SSL_write call */
#define HANDSHAKE_TIMEOUT 10.0

enum { ST_NEW, ST_HANDSHAKE, ST_OPEN, ST_FAILED };

struct lc_tls {
  lc_ctx *ctx;
  SSL *ssl;
  evutil_socket_t fd;
  int state;
  struct event *ev; /* the handshake's readiness and timeout */
  double deadline;  /* of the handshake (lc_now() clock), 0 = none */
  char why[200];    /* the reason it failed */
  lc_tls_done_fn done;
  void *arg;
  struct lc_tls *prev, *next; /* a server's handshakes under way, or ready */
  lc_tls_server *srv;         /* set while under way */
  lc_addr peer;               /* accepted sessions: for the log */
};

struct lc_tls_server {
  SSL_CTX *ctx;
  double timeout;
  int inflight, nready;
  lc_tls *head;                    /* handshakes under way */
  lc_tls *ready_head, *ready_tail; /* done, waiting for accept (FIFO) */
  lc_tls_notify_fn notify;
  void *notify_arg;
};

/* ---- the socket BIO ---- */

static int sock_write (BIO *b, const char *data, size_t len, size_t *written) {
  lc_tls *t = BIO_get_data(b);
  size_t cap = t->ctx->max_io > 0 && len > (size_t)t->ctx->max_io ? (size_t)t->ctx->max_io : len;
  ssize_t n = send(t->fd, data, cap, MSG_NOSIGNAL);
  BIO_clear_retry_flags(b);
  if (n >= 0) {
    *written = (size_t)n;
    return 1;
  }
  if (errno == EAGAIN || errno == EINTR) BIO_set_retry_write(b);
  return 0;
}

static int sock_read (BIO *b, char *data, size_t len, size_t *got) {
  lc_tls *t = BIO_get_data(b);
  size_t cap = t->ctx->max_io > 0 && len > (size_t)t->ctx->max_io ? (size_t)t->ctx->max_io : len;
  ssize_t n = recv(t->fd, data, cap, 0);
  BIO_clear_retry_flags(b);
  if (n > 0) {
    *got = (size_t)n;
    return 1;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) BIO_set_retry_read(b);
  if (n == 0) errno = 0; /* an end of stream, not a system error */
  return 0;
}

static long sock_ctrl (BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sock_create (BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

/* What this file keeps per context (lc_module_state, slot LC_MOD_TLS): the
** BIO method, freed with the context (the module may be unloaded before
** the process ends, so no static). */
typedef struct {
  BIO_METHOD *method;
} tls_state;

static void tls_state_fini (lc_ctx *c, void *state) {
  (void)c;
  BIO_meth_free(((tls_state *)state)->method);
}

static BIO *sock_bio (lc_tls *t) {
  tls_state *ts = lc_module_state(t->ctx, LC_MOD_TLS, sizeof *ts, tls_state_fini);
  BIO *b;
  if (ts == NULL) return NULL;
  if (ts->method == NULL) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "luacomm socket");
    if (m == NULL) return NULL;
    BIO_meth_set_write_ex(m, sock_write);
    BIO_meth_set_read_ex(m, sock_read);
    BIO_meth_set_ctrl(m, sock_ctrl);
    BIO_meth_set_create(m, sock_create);
    ts->method = m;
  }
  if ((b = BIO_new(ts->method)) != NULL) BIO_set_data(b, t);
  return b;
}

/* ---- sessions ---- */

lc_tls *lc_tls_new (lc_ctx *c, SSL_CTX *ctx, evutil_socket_t fd, int server, const char *server_name, char *err,
                    size_t errlen) {
  lc_tls *t = calloc(1, sizeof *t);
  BIO *b = NULL;
  if (t != NULL) {
    t->ctx = c;
    t->fd = fd;
    if ((t->ssl = SSL_new(ctx)) != NULL) b = sock_bio(t);
  }
  if (b == NULL) {
    snprintf(err, errlen, "tls: out of memory");
    ERR_clear_error();
    if (t) SSL_free(t->ssl);
    free(t);
    return NULL;
  }
  SSL_set_bio(t->ssl, b, b);
  if (server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (lc_tls_client_setup(t->ssl, server_name, err, errlen) != 0) {
      lc_tls_free(t, 0);
      return NULL;
    }
  }
  return t;
}

static void unlink_server (lc_tls *t) {
  lc_tls_server *srv = t->srv;
  if (srv == NULL) return;
  if (t->prev) t->prev->next = t->next;
  else srv->head = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
  t->srv = NULL;
  srv->inflight--;
}

void lc_tls_free (lc_tls *t, int notify) {
  if (t == NULL) return;
  unlink_server(t);
  if (t->ev) event_free(t->ev);
  if (notify && t->state == ST_OPEN) {
    char sink[4096];
    int i;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* sends close_notify if the socket takes it now */
    ERR_clear_error();
    /* Input nobody read (a TLS 1.3 server sends session tickets unasked)
    ** would make close() reset the connection, and the peer could lose
    ** the end of what we sent: discard it first. */
    for (i = 0; i < 16 && recv(t->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) continue;
  }
  SSL_free(t->ssl);
  free(t);
}

int lc_tls_ready (const lc_tls *t) {
  return t->state == ST_OPEN;
}

const char *lc_tls_failure (const lc_tls *t) {
  return t->state == ST_FAILED ? t->why : NULL;
}

/* Ends the handshake: the event goes, then the owner hears of it. */
static void finish (lc_tls *t, const char *err) {
  lc_tls_done_fn done = t->done;
  event_free(t->ev);
  t->ev = NULL;
  t->state = err ? ST_FAILED : ST_OPEN;
  if (err) snprintf(t->why, sizeof t->why, "%s", err);
  unlink_server(t);
  done(t, err, t->arg);
}

static void arm (lc_tls *t, short what, double timeout_left) {
  struct timeval tv;
  event_del(t->ev);
  event_assign(t->ev, event_get_base(t->ev), t->fd, what, event_get_callback(t->ev), t);
  if (timeout_left > 0) tv = lc_timeval(timeout_left);
  event_add(t->ev, timeout_left > 0 ? &tv : NULL);
}

/* One step of SSL_do_handshake; waits for what OpenSSL asks for, within
** what is left of the timeout. */
static void step (evutil_socket_t fd, short what, void *arg) {
  lc_tls *t = arg;
  double left = t->deadline > 0 ? t->deadline - lc_now() : 0;
  int r, e;
  char why[256];
  (void)fd;
  if ((what & EV_TIMEOUT) || (t->deadline > 0 && left <= 0)) {
    finish(t, "tls: handshake timed out");
    return;
  }
  ERR_clear_error();
  errno = 0;
  r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    finish(t, NULL);
    return;
  }
  e = SSL_get_error(t->ssl, r);
  if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
    finish(t, lc_tls_reason(t->ssl, r, why, sizeof why));
    return;
  }
  arm(t, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE, left);
}

void lc_tls_start (lc_tls *t, double timeout, lc_tls_done_fn done, void *arg) {
  struct timeval tv;
  if (t->state != ST_NEW) return;
  t->done = done;
  t->arg = arg;
  t->state = ST_HANDSHAKE;
  t->deadline = timeout > 0 ? lc_now() + timeout : 0;
  t->ev = event_new(t->ctx->base, t->fd, EV_WRITE, step, t);
  if (t->ev == NULL) {
    t->state = ST_FAILED;
    snprintf(t->why, sizeof t->why, "tls: out of memory");
    done(t, t->why, arg);
    return;
  }
  /* The first step runs from the loop (the socket is writable at once), so
  ** done never runs inside the caller. */
  if (timeout > 0) tv = lc_timeval(timeout);
  event_add(t->ev, timeout > 0 ? &tv : NULL);
}

/* ---- I/O after the handshake ---- */

/* Maps a failed SSL_read/SSL_write to errno: EAGAIN to wait, 0 (with a 0
** return) for an end of stream, else an error conn.c reports. */
static ssize_t io_result (lc_tls *t, int r) {
  int e = SSL_get_error(t->ssl, r);
  switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL:
      ERR_clear_error();
      if (errno == 0) errno = ECONNRESET;
      return -1;
    default:
      ERR_clear_error();
      errno = EPROTO; /* a bad record or alert: the stream cannot go on */
      return -1;
  }
}

ssize_t lc_tls_read (lc_tls *t, char *buf, size_t len) {
  size_t total = 0, got;
  ssize_t res = 0;
  /* Until OpenSSL has nothing more (or buf is full): bytes it decrypted
  ** but we left would never be announced by the socket. */
  while (total < len) {
    ERR_clear_error();
    if (SSL_read_ex(t->ssl, buf + total, len - total, &got) != 1) {
      res = io_result(t, 0);
      break;
    }
    total += got;
  }
  return total > 0 ? (ssize_t)total : res;
}

ssize_t lc_tls_write (lc_tls *t, struct evbuffer *out, size_t cap) {
  size_t total = 0, len, sent;
  while (total < cap && (len = evbuffer_get_length(out)) > 0) {
    struct evbuffer_iovec v;
    const void *p;
    if (len > cap - total) len = cap - total;
    if (len > TLS_WRITE_CHUNK) len = TLS_WRITE_CHUNK;
    /* A whole record from one place: the first chain when it is long
    ** enough, else a pullup of the head (small frames, coalesced). */
    evbuffer_peek(out, -1, NULL, &v, 1);
    p = v.iov_len >= len ? v.iov_base : evbuffer_pullup(out, (ev_ssize_t)len);
    if (p == NULL) return errno = ENOMEM, -1;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, p, len, &sent) != 1) {
      ssize_t r = io_result(t, 0);
      if (r < 0 && errno == EAGAIN && total > 0) break;
      if (r == 0) errno = EPIPE; /* the peer closed its side for good */
      return -1;
    }
    evbuffer_drain(out, sent);
    total += sent;
  }
  return (ssize_t)total;
}

int lc_tls_pending (const lc_tls *t) {
  return t->state == ST_OPEN && SSL_pending(t->ssl) > 0;
}

/* ---- conn:tls() ---- */

static void push_cn (lua_State *L, X509 *cert) {
  X509_NAME *name = X509_get_subject_name(cert);
  int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
  unsigned char *utf8 = NULL;
  int n;
  if (i < 0 || (n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)))) < 0) {
    lua_pushnil(L);
    return;
  }
  lua_pushlstring(L, (const char *)utf8, (size_t)n);
  OPENSSL_free(utf8);
}

/* The certificate's DNS subjectAltNames as a list. */
static void push_dns_names (lua_State *L, X509 *cert) {
  GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  int i, n = sans ? sk_GENERAL_NAME_num(sans) : 0, k = 0;
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
    if (g->type == GEN_DNS) {
      lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(g->d.dNSName), (size_t)ASN1_STRING_length(g->d.dNSName));
      lua_rawseti(L, -2, ++k);
    }
  }
  GENERAL_NAMES_free(sans);
}

int lc_tls_push_info (lua_State *L, const lc_tls *t) {
  X509 *peer = SSL_get1_peer_certificate(t->ssl);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, SSL_get_version(t->ssl));
  lua_setfield(L, -2, "version");
  lua_pushstring(L, SSL_get_cipher_name(t->ssl));
  lua_setfield(L, -2, "cipher");
  lua_pushboolean(
    L, peer != NULL && SSL_get_verify_result(t->ssl) == X509_V_OK && SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE);
  lua_setfield(L, -2, "verified");
  if (peer != NULL) {
    push_cn(L, peer);
    lua_setfield(L, -2, "peer");
    push_dns_names(L, peer);
    lua_setfield(L, -2, "peer_names");
    X509_free(peer);
  }
  return 1;
}

/* ---- the accepting side ---- */

lc_tls_server *lc_tls_server_new (lua_State *L, int opts_idx, char *err, size_t errlen) {
  lc_tls_server *srv;
  double timeout = HANDSHAKE_TIMEOUT;
  SSL_CTX *ctx;
  err[0] = '\0';
  if (!lua_istable(L, opts_idx)) return NULL;
  if (lua_getfield(L, opts_idx, "tls") == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_istable(L, -1)) {
    if (lua_getfield(L, -1, "handshake_timeout") != LUA_TNIL) {
      timeout = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
      if (!(timeout > 0)) luaL_error(L, "bad option 'tls.handshake_timeout' (a number > 0 expected)");
    }
    lua_pop(L, 1);
  }
  ctx = lc_tls_ctx_new(L, -1, 1, err, errlen);
  lua_pop(L, 1);
  if (ctx == NULL) return NULL;
  if ((srv = calloc(1, sizeof *srv)) == NULL) {
    SSL_CTX_free(ctx);
    snprintf(err, errlen, "tls: out of memory");
    return NULL;
  }
  srv->ctx = ctx;
  srv->timeout = timeout;
  return srv;
}

/* A server handshake ended: into the ready list, or logged, counted and
** closed. Either way the listener hears of it (a place may have freed). */
static void accept_finished (lc_tls *t, const char *err, void *arg) {
  lc_tls_server *srv = arg;
  if (err != NULL) {
    lua_State *L = t->ctx->mainL;
    char where[80] = "?";
    if (t->peer.len > 0) {
      lc_push_addrstring(L, (struct sockaddr *)&t->peer.ss, t->peer.len);
      snprintf(where, sizeof where, "%s", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lc_logf(t->ctx, LC_WARN, "connection from %s refused: %s", where, err);
    t->ctx->n.tls_failures++;
    close(t->fd);
    lc_tls_free(t, 0);
  } else {
    t->next = NULL;
    if (srv->ready_tail) srv->ready_tail->next = t;
    else srv->ready_head = t;
    srv->ready_tail = t;
    srv->nready++;
  }
  srv->notify(srv->notify_arg);
}

void lc_tls_accept (lc_tls_server *srv, lc_ctx *c, evutil_socket_t fd, lc_tls_notify_fn notify, void *arg) {
  char err[128];
  lc_tls *t = lc_tls_new(c, srv->ctx, fd, 1, NULL, err, sizeof err);
  srv->notify = notify;
  srv->notify_arg = arg;
  if (t == NULL) {
    lc_logf(c, LC_WARN, "connection refused: %s", err);
    c->n.tls_failures++;
    close(fd);
    return;
  }
  /* The peer's address now: a refused peer may be gone when it is logged. */
  t->peer.len = sizeof t->peer.ss;
  if (getpeername(fd, (struct sockaddr *)&t->peer.ss, &t->peer.len) != 0) t->peer.len = 0;
  t->srv = srv;
  t->next = srv->head;
  if (srv->head) srv->head->prev = t;
  srv->head = t;
  srv->inflight++;
  lc_tls_start(t, srv->timeout, accept_finished, srv);
}

lc_tls *lc_tls_server_pop (lc_tls_server *srv, evutil_socket_t *fd) {
  lc_tls *t = srv->ready_head;
  if (t == NULL) return NULL;
  srv->ready_head = t->next;
  if (srv->ready_head == NULL) srv->ready_tail = NULL;
  srv->nready--;
  t->next = NULL;
  *fd = t->fd;
  return t;
}

int lc_tls_server_ready (const lc_tls_server *srv) {
  return srv->nready;
}

int lc_tls_server_inflight (const lc_tls_server *srv) {
  return srv->inflight;
}

void lc_tls_server_free (lc_tls_server *srv) {
  evutil_socket_t fd;
  lc_tls *t;
  if (srv == NULL) return;
  while ((t = srv->head) != NULL) { /* under way */
    close(t->fd);
    lc_tls_free(t, 0);
  }
  while ((t = lc_tls_server_pop(srv, &fd)) != NULL) { /* never accepted */
    close(fd);
    lc_tls_free(t, 0);
  }
  SSL_CTX_free(srv->ctx);
  free(srv);
}
