/*
** tls_http.c — the OpenSSL half of HTTPS (part of luacomm.tls): http.c
** runs evhttp over a bufferevent_openssl made here, so that http.c itself
** needs no OpenSSL and a plain HTTP server never maps it.
*/
#include <stdio.h>
#include <sys/socket.h>

#include <event2/bufferevent_ssl.h>

#include "tls.h"

/* A fatal alert, sent or received, before a handshake finished: that
** connection never reaches a handler. Logged and counted (tls_failures)
** as comm.listen does for its own. The context's app data is the lc_ctx. */
static void tls_info (const SSL *ssl, int where, int ret) {
  lc_ctx *c;
  lc_addr a;
  char peer[80] = "?";
  if (!(where & SSL_CB_ALERT) || (ret >> 8) != SSL3_AL_FATAL || SSL_is_init_finished(ssl)) return;
  c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  if (c == NULL) return;
  a.len = sizeof a.ss;
  if (getpeername(SSL_get_fd(ssl), (struct sockaddr *)&a.ss, &a.len) == 0) {
    lc_push_addrstring(c->mainL, (struct sockaddr *)&a.ss, a.len);
    snprintf(peer, sizeof peer, "%s", lua_tostring(c->mainL, -1));
    lua_pop(c->mainL, 1);
  }
  lc_logf(c,
          LC_WARN,
          "https: connection from %s refused: tls: alert %s: %s",
          peer,
          (where & SSL_CB_READ) ? "received" : "sent",
          SSL_alert_desc_string_long(ret));
  c->n.tls_failures++;
}

/* The server context for the tls table at opts_idx (NULL with err on a bad
** file), its failed handshakes logged and counted in c. */
SSL_CTX *lc_tls_https_server_ctx (lua_State *L, int opts_idx, lc_ctx *c, char *err, size_t errlen) {
  SSL_CTX *ctx = lc_tls_ctx_new(L, opts_idx, 1, err, errlen);
  if (ctx != NULL) {
    SSL_CTX_set_app_data(ctx, c);
    SSL_CTX_set_info_callback(ctx, tls_info);
  }
  return ctx;
}

/* evhttp's bufferevent for each accepted HTTPS connection: the handshake
** runs inside the bufferevent before evhttp reads a byte. */
struct bufferevent *lc_tls_https_server_bev (struct event_base *base, SSL_CTX *ctx) {
  SSL *ssl = SSL_new(ctx);
  struct bufferevent *bev;
  if (ssl == NULL) return NULL;
  bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
  if (bev == NULL) SSL_free(ssl);
  else bufferevent_openssl_set_allow_dirty_shutdown(bev, 1); /* a client that just closes */
  return bev;
}

/* A client bufferevent over TLS for the tls table at tls_idx, checking
** name as lc_tls_server_name says; its SSL in *ssl (the bufferevent owns
** it). NULL with err filled when it cannot be made. */
struct bufferevent *lc_tls_https_client_bev (lua_State *L, struct event_base *base, int tls_idx, const char *name,
                                             SSL **ssl, char *err, size_t errlen) {
  SSL_CTX *ctx;
  struct bufferevent *bev;
  *ssl = NULL;
  if ((ctx = lc_tls_ctx_new(L, tls_idx, 0, err, errlen)) == NULL) return NULL;
  *ssl = SSL_new(ctx);
  SSL_CTX_free(ctx); /* the SSL holds its own reference */
  if (*ssl == NULL || lc_tls_client_setup(*ssl, lc_tls_server_name(L, tls_idx, name), err, errlen) != 0) {
    if (*ssl) SSL_free(*ssl);
    *ssl = NULL;
    if (err[0] == '\0') snprintf(err, errlen, "tls: cannot make a session");
    return NULL;
  }
  bev = bufferevent_openssl_socket_new(
    base, -1, *ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
  if (bev == NULL) {
    SSL_free(*ssl);
    *ssl = NULL;
    snprintf(err, errlen, "tls: cannot make a session");
    return NULL;
  }
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  return bev;
}

int lc_tls_https_finished (const SSL *ssl) {
  return SSL_is_init_finished(ssl);
}

/* Why the handshake of a failed request did not finish ("tls: ..."). */
const char *lc_tls_https_reason (SSL *ssl, char *buf, size_t len) {
  return lc_tls_reason(ssl, -1, buf, len);
}
