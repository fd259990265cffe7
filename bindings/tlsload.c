/*
** tlsload.c — the core's side of the luacomm.tls seam (tlsmod.h): loads
** the module the first time TLS or crypto is asked for, and stands in for
** the crypto functions until then.
*/
#include "tlsmod.h"

const lc_tls_api *lc_tlsapi;

static const lc_core_api core_api = {
  .getctx = lc_getctx,
  .logf = lc_logf,
  .module_state = lc_module_state,
  .now = lc_now,
  .timeval = lc_timeval,
  .push_addrstring = lc_push_addrstring,
};

void lc_tls_publish_core (lua_State *L) {
  lua_pushlightuserdata(L, (void *)&core_api);
  lua_setfield(L, LUA_REGISTRYINDEX, LC_CORE_API_KEY);
}

/* Through require, so that package.preload (a static build) and cpath
** both work. The stack is left as it was. */
const lc_tls_api *lc_tls_load (lua_State *L) {
  if (lc_tlsapi != NULL) return lc_tlsapi;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luacomm.tls");
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    return luaL_error(L, "luacomm: TLS and crypto need the luacomm.tls module: %s", lua_tostring(L, -1)), NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, LC_TLS_API_KEY);
  lc_tlsapi = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lc_tlsapi == NULL) return luaL_error(L, "luacomm: luacomm.tls did not register itself"), NULL;
  return lc_tlsapi;
}

int lc_has_tls_opt (lua_State *L, int idx) {
  int has;
  if (!lua_istable(L, idx)) return 0;
  has = lua_getfield(L, idx, "tls") != LUA_TNIL;
  lua_pop(L, 1);
  return has;
}

/* core.hmac_sha256, core.random_bytes, core.equal_consttime: the
** module's own, called with this call's arguments. */
static int crypto_hmac_sha256 (lua_State *L) {
  return lc_tls_load(L)->hmac_sha256(L);
}

static int crypto_random_bytes (lua_State *L) {
  return lc_tls_load(L)->random_bytes(L);
}

static int crypto_equal_consttime (lua_State *L) {
  return lc_tls_load(L)->equal_consttime(L);
}

static const luaL_Reg crypto_funcs[] = {{"hmac_sha256", crypto_hmac_sha256},
                                        {"random_bytes", crypto_random_bytes},
                                        {"equal_consttime", crypto_equal_consttime},
                                        {NULL, NULL}};

/* Stack: mod, ctx (as for every lc_*_open); adds the functions to mod. */
int lc_crypto_open (lua_State *L) {
  const luaL_Reg *f;
  lc_tls_publish_core(L);
  for (f = crypto_funcs; f->name != NULL; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -3, f->name);
  }
  return 0;
}
