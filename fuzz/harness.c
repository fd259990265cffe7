/*
** harness.c — one libFuzzer entry point for every Lua-driven harness.
**
** Each input gets a fresh Lua state with the real luacomm.core (these very
** objects, built with the sanitizers) and the real Lua library, and is
** handed to fuzz/DRIVER.lua, which pushes it through real sockets into the
** code under test. A Lua error out of the driver is a finding: it means a
** broken invariant (the driver checks the results against an oracle, and
** that no task of the process failed), so the harness aborts with it.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc.h"
#include "lualib.h"

int luaopen_luacomm_tls(lua_State *L); /* tls_mod.c, linked in here */

#ifndef DRIVER
#error "build with -DDRIVER=\"name\""
#endif
#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Coverage of the Lua code too: libFuzzer only sees the C it compiled, and
** most of a node is Lua. A line hook counts (chunk name, line) pairs into
** libFuzzer's extra counters, so inputs that reach new Lua lines are kept.
** Threads created later inherit the hook. */
#define LUA_COUNTERS 65536
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[LUA_COUNTERS];

static void line_hook (lua_State *L, lua_Debug *ar) {
  uint32_t h = 2166136261u;
  const char *p;
  if (!lua_getinfo(L, "S", ar)) return;
  for (p = ar->source; *p && p - ar->source < 96; p++) h = (h ^ (unsigned char)*p) * 16777619u;
  h = (h ^ (uint32_t)ar->currentline) * 16777619u;
  lua_cov[h % LUA_COUNTERS]++;
}

static int msgh (lua_State *L) {
  luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
  return 1;
}

/* Loads the driver: it returns the function each input goes to. */
static int setup (lua_State *L) {
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_luacomm_core);
  lua_setfield(L, -2, "luacomm.core");
  lua_pushcfunction(L, luaopen_luacomm_tls); /* what the core loads on first use */
  lua_setfield(L, -2, "luacomm.tls");
  lua_getglobal(L, "package");
  lua_pushstring(L, FUZZ_ROOT "/scripts/?.lua;" FUZZ_ROOT "/scripts/?/init.lua;" FUZZ_ROOT "/fuzz/?.lua");
  lua_setfield(L, -2, "path");
  lua_getglobal(L, "require");
  lua_pushstring(L, DRIVER);
  lua_call(L, 1, 1);
  return 1;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate();
  if (L == NULL) abort();
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, setup);
  if (lua_pcall(L, 0, 1, 1) == LUA_OK) {
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 1) == LUA_OK) {
      lua_close(L);
      return 0;
    }
  }
  fprintf(stderr, "fuzz/%s.lua: %s\n", DRIVER, lua_tostring(L, -1));
  abort();
}
