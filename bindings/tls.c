/*
** tls.c — SSL_CTX from a Lua `tls` options table, peer verification, and
** the reasons a handshake failed (CONTRACT §8). No connection state here:
** tls_conn.c drives sessions on sockets.
*/
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls.h"

/* The optional string field k of the table at idx, or NULL; raises when it
** is set to something else (misuse). */
static const char *opt_string (lua_State *L, int idx, const char *k) {
  const char *s = NULL;
  int t = lua_getfield(L, idx, k);
  if (t == LUA_TSTRING) s = lua_tostring(L, -1);
  else if (t != LUA_TNIL) luaL_error(L, "bad option 'tls.%s' (string expected, got %s)", k, luaL_typename(L, -1));
  lua_pop(L, 1); /* the string stays alive: the options table holds it */
  return s;
}

static int opt_bool (lua_State *L, int idx, const char *k, int def) {
  int t = lua_getfield(L, idx, k), v = def;
  if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (t != LUA_TNIL) luaL_error(L, "bad option 'tls.%s' (boolean expected, got %s)", k, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* OpenSSL's first queued error as text (the queue is cleared), or the
** system's when there is none. */
static const char *ssl_error_text (char *buf, size_t len) {
  unsigned long e = ERR_peek_error();
  if (e != 0) {
    const char *r = ERR_reason_error_string(e);
    if (r != NULL) snprintf(buf, len, "%s", r);
    else ERR_error_string_n(e, buf, len);
  } else {
    snprintf(buf, len, "%s", errno ? strerror(errno) : "unknown error");
  }
  ERR_clear_error();
  return buf;
}

/* A file we cannot read is named with the system's reason, before OpenSSL
** buries it in a PEM error. */
static int check_readable (const char *what, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    snprintf(err, errlen, "tls: cannot read %s file '%s': %s", what, path, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

/* Certificate chain and key; the key must match the certificate. */
static int load_identity (SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen) {
  char why[160];
  if (check_readable("cert", cert, err, errlen) != 0) return -1;
  if (check_readable("key", key, err, errlen) != 0) return -1;
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    snprintf(err, errlen, "tls: bad cert file '%s': %s", cert, ssl_error_text(why, sizeof why));
    return -1;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      snprintf(err, errlen, "tls: key file '%s' does not match cert file '%s'", key, cert);
      return -1;
    }
    snprintf(err, errlen, "tls: bad key file '%s': %s", key, ssl_error_text(why, sizeof why));
    return -1;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "tls: key file '%s' does not match cert file '%s'", key, cert);
    return -1;
  }
  return 0;
}

/* The trust anchors: a PEM file or a hashed directory, else the system's. */
static int load_trust (SSL_CTX *ctx, const char *ca, int server, char *err, size_t errlen) {
  char why[160];
  struct stat st;
  int ok;
  if (ca == NULL) {
    if (SSL_CTX_set_default_verify_paths(ctx) == 1) return 0;
    snprintf(err, errlen, "tls: cannot load the system's CA store: %s", ssl_error_text(why, sizeof why));
    return -1;
  }
  if (stat(ca, &st) != 0) {
    snprintf(err, errlen, "tls: cannot read ca file '%s': %s", ca, strerror(errno));
    return -1;
  }
  if (S_ISDIR(st.st_mode)) {
    ok = SSL_CTX_load_verify_locations(ctx, NULL, ca);
  } else {
    if (check_readable("ca", ca, err, errlen) != 0) return -1;
    ok = SSL_CTX_load_verify_locations(ctx, ca, NULL);
    /* A server asking for client certificates names the CAs it accepts. */
    if (ok == 1 && server) {
      STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
      if (names != NULL) SSL_CTX_set_client_CA_list(ctx, names);
    }
  }
  if (ok != 1) {
    snprintf(err, errlen, "tls: bad ca file '%s': %s", ca, ssl_error_text(why, sizeof why));
    return -1;
  }
  return 0;
}

/* Settings every luacomm context shares: TLS 1.2+, no renegotiation,
** writes that may be retried from a moved buffer (the output evbuffer
** rearranges itself between attempts), record buffers released while a
** connection is idle (about 34 KiB each otherwise), and an EOF without close_notify
** read as an end of stream (frames carry their own length, so a cut is
** still seen as "truncated"). */
static SSL_CTX *ctx_base (int server, char *err, size_t errlen) {
  char why[160];
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) {
    snprintf(err, errlen, "tls: cannot create a context: %s", ssl_error_text(why, sizeof why));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  if (server) {
    /* Resumed sessions under client verification need an id context. */
    static const unsigned char sid[] = "luacomm";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
  }
  return ctx;
}

SSL_CTX *lc_tls_ctx_new (lua_State *L, int opts_idx, int server, char *err, size_t errlen) {
  const char *cert, *key, *ca;
  int verify;
  SSL_CTX *ctx;
  opts_idx = lua_absindex(L, opts_idx);
  if (!lua_istable(L, opts_idx)) luaL_error(L, "bad option 'tls' (table expected, got %s)", luaL_typename(L, opts_idx));
  cert = opt_string(L, opts_idx, "cert");
  key = opt_string(L, opts_idx, "key");
  ca = opt_string(L, opts_idx, "ca");
  opt_string(L, opts_idx, "server_name"); /* type-checked here, used by the caller */
  verify = opt_bool(L, opts_idx, "verify", !server);
  err[0] = '\0';
  if (server && (cert == NULL || key == NULL)) {
    snprintf(err, errlen, "tls: listening needs both tls.cert and tls.key");
    return NULL;
  }
  if ((cert == NULL) != (key == NULL)) {
    snprintf(err, errlen, "tls: tls.cert and tls.key go together");
    return NULL;
  }
  if ((ctx = ctx_base(server, err, errlen)) == NULL) return NULL;
  if ((cert != NULL && load_identity(ctx, cert, key, err, errlen) != 0) ||
      ((verify || ca != NULL) && load_trust(ctx, ca, server, err, errlen) != 0)) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (!verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (!server) lc_logf(lc_getctx(L), LC_WARN, "tls: verify = false: the server's certificate is not checked");
  } else {
    SSL_CTX_set_verify(ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, NULL);
  }
  return ctx;
}

/* An IPv4 or IPv6 literal (IPv6 without brackets) is checked against the
** certificate's IP entries, never its DNS names, and sent as no SNI. */
static int is_ip_literal (const char *name) {
  ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);
  if (ip == NULL) return 0;
  ASN1_OCTET_STRING_free(ip);
  return 1;
}

const char lc_tls_any_name[] = "";

int lc_tls_client_setup (SSL *ssl, const char *server_name, char *err, size_t errlen) {
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  int ip;
  if (server_name == lc_tls_any_name) return 0; /* the chain is checked; names are the caller's */
  if (server_name == NULL || server_name[0] == '\0') {
    if (SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE) return 0;
    snprintf(err, errlen, "tls: no server_name to verify the certificate against");
    return -1;
  }
  ip = is_ip_literal(server_name);
  if (!ip && SSL_set_tlsext_host_name(ssl, server_name) != 1) {
    snprintf(err, errlen, "tls: bad server_name '%s'", server_name);
    ERR_clear_error();
    return -1;
  }
  if (SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE) return 0;
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name) : X509_VERIFY_PARAM_set1_host(param, server_name, 0)) !=
      1) {
    snprintf(err, errlen, "tls: bad server_name '%s'", server_name);
    ERR_clear_error();
    return -1;
  }
  return 0;
}

const char *lc_tls_server_name (lua_State *L, int opts_idx, const char *host) {
  const char *name = opt_string(L, lua_absindex(L, opts_idx), "server_name");
  if (!opt_bool(L, lua_absindex(L, opts_idx), "verify_name", 1)) return lc_tls_any_name;
  return name != NULL ? name : host;
}

const char *lc_tls_reason (SSL *ssl, int ret, char *buf, size_t len) {
  char why[200];
  long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
  int e = ssl != NULL ? SSL_get_error(ssl, ret) : SSL_ERROR_SSL;
  if (v != X509_V_OK) {
    snprintf(buf, len, "tls: certificate verify failed: %s", X509_verify_cert_error_string(v));
    ERR_clear_error();
  } else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    snprintf(buf, len, "tls: %s", errno != 0 ? strerror(errno) : "connection closed during handshake");
  } else if (e == SSL_ERROR_ZERO_RETURN) {
    snprintf(buf, len, "tls: connection closed during handshake");
  } else {
    snprintf(buf, len, "tls: %s", ssl_error_text(why, sizeof why));
  }
  return buf;
}
