/*
** tlsmod.h — the seam between luacomm.core and luacomm.tls.
**
** Why two modules: OpenSSL is big to map. libcrypto and libssl cost a
** process about 1.7 MiB of RSS as soon as they are loaded (relocation
** tables and relocated data), used or not. So TLS, HMAC and random bytes
** live in their own shared object (build/lib/luacomm/tls.so: tls.c,
** tls_conn.c, tls_http.c, crypto.c, tls_mod.c), which the core loads with
** require "luacomm.tls" the first time a script asks for any of them; a
** plain process never maps OpenSSL.
**
** Neither side links against the other (the core may be the host binary
** or core.so), so each hands the other a table of functions: the core
** publishes lc_core_api in the registry (LC_CORE_API_KEY), the module
** publishes lc_tls_api (LC_TLS_API_KEY). The core calls TLS only through
** lc_tls_load() (or lc_tlsapi, once a session exists it is set).
*/
#ifndef LC_TLSMOD_H
#define LC_TLSMOD_H

#include <sys/types.h>

#include "lc.h"

#define LC_CORE_API_KEY "luacomm.core_api"
#define LC_TLS_API_KEY "luacomm.tls_api"

struct ssl_ctx_st; /* OpenSSL's SSL_CTX, opaque to the core */
struct ssl_st;     /* OpenSSL's SSL */
struct bufferevent;
typedef struct lc_tls lc_tls;
typedef struct lc_tls_server lc_tls_server;
typedef void (*lc_tls_done_fn)(lc_tls *t, const char *err, void *arg);
typedef void (*lc_tls_notify_fn)(void *arg);

/* The core's functions the module calls. */
typedef struct lc_core_api {
  lc_ctx *(*getctx)(lua_State *L);
  void (*logf)(lc_ctx *c, int level, const char *fmt, ...);
  void *(*module_state)(lc_ctx *c, int slot, size_t size, lc_fini_fn fini);
  double (*now)(void);
  struct timeval (*timeval)(double seconds);
  void (*push_addrstring)(lua_State *L, const struct sockaddr *sa, socklen_t len);
} lc_core_api;

/* The module's functions the core calls: tls.h says what each does (the
** names there are lc_tls_<field>); the https_* ones serve http.c. */
typedef struct lc_tls_api {
  /* contexts and client sessions (conn.c) */
  struct ssl_ctx_st *(*ctx_new)(lua_State *L, int opts_idx, int server, char *err, size_t errlen);
  void (*ctx_free)(struct ssl_ctx_st *ctx);
  const char *(*server_name)(lua_State *L, int opts_idx, const char *host);
  lc_tls *(*session_new)(lc_ctx *c, struct ssl_ctx_st *ctx, evutil_socket_t fd, int server, const char *server_name,
                         char *err, size_t errlen);
  void (*start)(lc_tls *t, double timeout, lc_tls_done_fn done, void *arg);
  int (*ready)(const lc_tls *t);
  const char *(*failure)(const lc_tls *t);
  void (*free)(lc_tls *t, int notify);
  ssize_t (*read)(lc_tls *t, char *buf, size_t len);
  ssize_t (*write)(lc_tls *t, struct evbuffer *out, size_t cap);
  int (*pending)(const lc_tls *t);
  int (*push_info)(lua_State *L, const lc_tls *t);
  /* accepting (listener.c) */
  lc_tls_server *(*server_new)(lua_State *L, int opts_idx, char *err, size_t errlen);
  void (*accept)(lc_tls_server *srv, lc_ctx *c, evutil_socket_t fd, lc_tls_notify_fn notify, void *arg);
  lc_tls *(*server_pop)(lc_tls_server *srv, evutil_socket_t *fd);
  int (*server_ready)(const lc_tls_server *srv);
  int (*server_inflight)(const lc_tls_server *srv);
  void (*server_free)(lc_tls_server *srv);
  /* HTTPS (http.c): a server context whose failed handshakes c logs and
  ** counts; a bufferevent per accepted connection; a client bufferevent
  ** checking the name (its SSL in *ssl, owned by the bufferevent); and,
  ** after a failed request, whether its handshake finished and why not. */
  struct ssl_ctx_st *(*https_server_ctx)(lua_State *L, int opts_idx, lc_ctx *c, char *err, size_t errlen);
  struct bufferevent *(*https_server_bev)(struct event_base *base, struct ssl_ctx_st *ctx);
  struct bufferevent *(*https_client_bev)(lua_State *L, struct event_base *base, int tls_idx, const char *name,
                                          struct ssl_st **ssl, char *err, size_t errlen);
  int (*https_finished)(const struct ssl_st *ssl);
  const char *(*https_reason)(struct ssl_st *ssl, char *buf, size_t len);
  /* crypto.c: core.hmac_sha256, core.random_bytes, core.equal_consttime */
  lua_CFunction hmac_sha256, random_bytes, equal_consttime;
} lc_tls_api;

/* The module's table once loaded (a TLS session or server exists only
** then), else NULL. */
extern const lc_tls_api *lc_tlsapi;

/* Loads luacomm.tls if it is not yet: its table, or raises (the module
** is missing or broken: an installation fault, not a bad input). */
const lc_tls_api *lc_tls_load(lua_State *L);

/* Whether the options table at idx (any value) has a non-nil "tls". */
int lc_has_tls_opt(lua_State *L, int idx);

/* Publishes lc_core_api in the registry (luaopen_luacomm_core). */
void lc_tls_publish_core(lua_State *L);

/* conn.c: hands the session t (handshake done) to the connection at idx,
** which then reads and writes through it and frees it. */
void lc_conn_set_tls(lua_State *L, int idx, lc_tls *t);

#endif
