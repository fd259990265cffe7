/*
** tls_mod.c — luacomm.tls: TLS, HTTPS and the node handshake's crypto,
** in a shared object of their own so that OpenSSL is mapped only by a
** process that uses it (tlsmod.h says why). The core loads it on first
** use; a script never needs to require it.
*/
#include "tls.h"

const lc_core_api *lc_core;

static const lc_tls_api tls_api = {
  .ctx_new = lc_tls_ctx_new,
  .ctx_free = SSL_CTX_free,
  .server_name = lc_tls_server_name,
  .session_new = lc_tls_new,
  .start = lc_tls_start,
  .ready = lc_tls_ready,
  .failure = lc_tls_failure,
  .free = lc_tls_free,
  .read = lc_tls_read,
  .write = lc_tls_write,
  .pending = lc_tls_pending,
  .push_info = lc_tls_push_info,
  .server_new = lc_tls_server_new,
  .accept = lc_tls_accept,
  .server_pop = lc_tls_server_pop,
  .server_ready = lc_tls_server_ready,
  .server_inflight = lc_tls_server_inflight,
  .server_free = lc_tls_server_free,
  .https_server_ctx = lc_tls_https_server_ctx,
  .https_server_bev = lc_tls_https_server_bev,
  .https_client_bev = lc_tls_https_client_bev,
  .https_finished = lc_tls_https_finished,
  .https_reason = lc_tls_https_reason,
  .hmac_sha256 = lc_crypto_hmac_sha256,
  .random_bytes = lc_crypto_random_bytes,
  .equal_consttime = lc_crypto_equal_consttime,
};

/* require "luacomm.tls": takes the core's table from the registry (the
** core must be loaded: it is what loads this), publishes its own there,
** and returns a table with the crypto functions. */
int luaopen_luacomm_tls (lua_State *L) {
  luaL_checkversion(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LC_CORE_API_KEY);
  lc_core = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lc_core == NULL) return luaL_error(L, "luacomm.tls: load luacomm.core first");
  lua_pushlightuserdata(L, (void *)&tls_api);
  lua_setfield(L, LUA_REGISTRYINDEX, LC_TLS_API_KEY);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, lc_crypto_hmac_sha256);
  lua_setfield(L, -2, "hmac_sha256");
  lua_pushcfunction(L, lc_crypto_random_bytes);
  lua_setfield(L, -2, "random_bytes");
  lua_pushcfunction(L, lc_crypto_equal_consttime);
  lua_setfield(L, -2, "equal_consttime");
  return 1;
}
