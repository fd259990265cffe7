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

#ifndef DRIVER
#error "build with -DDRIVER=\"name\""
#endif
#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
