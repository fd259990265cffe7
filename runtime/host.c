/*
** host.c — builds the Lua state the way lua.c does (GC stopped while
** building, everything under lua_pcall), puts luacomm.core on the host's
** event loop, and hands the script to scripts/luacomm/host.lua, which owns
** the policy: main task, services, reload, graceful stop.
*/
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lualib.h"

#include "evalloc.h"
#include "host.h"
#include "lc.h"
#include "log.h"
#include "pool.h"
#include "signals.h"
#include "workers.h"

#ifndef LC_SHARE_DIR
#define LC_SHARE_DIR "/usr/local/share/lua/5.4"
#endif
#ifndef LC_LIB_DIR
#define LC_LIB_DIR "/usr/local/lib/lua/5.4"
#endif

/* out = dir + rel when that fits and probe (a file under it) is readable. */
static int try_dir (char *out, size_t size, const char *dir, const char *rel, const char *probe) {
  int n = snprintf(out, size, "%s%s/%s", dir, rel, probe);
  if (n < 0 || (size_t)n >= size || access(out, R_OK) != 0) return 0;
  n = snprintf(out, size, "%s%s", dir, rel);
  return n > 0 && (size_t)n < size;
}

/* out = the first of the binary's directory + rels[i] that holds probe,
** else fallback. */
static void find_dir (char *out, size_t size, const char *const rels[], const char *probe, const char *fallback) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  char *slash;
  int i;
  if (n > 0) {
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      for (i = 0; rels[i]; i++)
        if (try_dir(out, size, exe, rels[i], probe)) return;
    }
  }
  snprintf(out, size, "%s", fallback);
}

/* Where luacomm's own Lua library is: next to the binary in a build tree
** (build/luacomm -> scripts/), else the installed share dir. */
static void find_library (char *out, size_t size) {
  static const char *const rels[] = {"/../scripts", "/../share/lua/5.4", NULL};
  find_dir(out, size, rels, "luacomm.lua", LC_SHARE_DIR);
}

/* Where the luacomm.tls module (luacomm/tls.so) is: lib/ next to the
** binary in a build tree, ../lib/lua/5.4 in an installed tree (moved or
** not), else the C module dir it was built for. The core loads it with
** require on first use of TLS or crypto. */
static void find_clib (char *out, size_t size) {
  static const char *const rels[] = {"/lib", "/../lib/lua/5.4", NULL};
  find_dir(out, size, rels, "luacomm/tls.so", LC_LIB_DIR);
}

/* package[field] = prefix .. ";" .. package[field] */
static void prepend_path (lua_State *L, const char *field, const char *prefix) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, field);
  lua_pushfstring(L, "%s;%s", prefix, lua_tostring(L, -1));
  lua_setfield(L, -3, field);
  lua_pop(L, 2);
}

static void add_dir (lua_State *L, const char *dir, int with_cpath) {
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", dir, dir);
  prepend_path(L, "path", lua_tostring(L, -1));
  lua_pop(L, 1);
  if (with_cpath) {
    lua_pushfstring(L, "%s/?.so", dir);
    prepend_path(L, "cpath", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* Search order: -I dirs (first given first), the script's folder, luacomm's
** library, then the standard path (LUA_PATH_5_4 and Lua's defaults). */
static void set_paths (lua_State *L, const rt_opts *o) {
  char lib[PATH_MAX];
  int i;
  find_library(lib, sizeof lib);
  add_dir(L, lib, 0);
  find_clib(lib, sizeof lib);
  lua_pushfstring(L, "%s/?.so", lib);
  prepend_path(L, "cpath", lua_tostring(L, -1));
  lua_pop(L, 1);
  if (o->script) {
    const char *slash = strrchr(o->script, '/');
    if (slash) lua_pushlstring(L, o->script, (size_t)(slash - o->script));
    else lua_pushliteral(L, ".");
    add_dir(L, lua_tostring(L, -1), 0);
    lua_pop(L, 1);
  }
  for (i = o->nincludes - 1; i >= 0; i--) add_dir(L, o->includes[i], 1);
}

/* arg as lua.c builds it: arg[0] = SCRIPT, arg[1..] = ARGS, negative
** indices for the interpreter and its options. */
static void create_arg (lua_State *L, const rt_opts *o) {
  int i;
  lua_createtable(L, o->argc - o->script_index - 1, o->script_index + 1);
  for (i = 0; i < o->argc; i++) {
    lua_pushstring(L, o->argv[i]);
    lua_rawseti(L, -2, i - o->script_index);
  }
  lua_setglobal(L, "arg");
}

static void preload_core (lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_luacomm_core);
  lua_setfield(L, -2, "luacomm.core");
  lua_pop(L, 1);
}

/* Generational collection, tuned for message workloads (the echo bench,
** callgrind and VmHWM):
** - The pause, which generational mode uses only after a collection that
**   freed little (the heap growing fast, as when a thousand connections
**   arrive at once), at 120 rather than 200: until the heap doubled, the
**   frames of that time piled up as garbage (1.5 MiB of 64-byte strings
**   with 1000 connections; peak RSS 6.6 -> 5.4 MiB).
** - A minor collection every 35% of growth rather than 20%: a heap kept
**   small (16 KiB frames, where the pass bound holds input down) would
**   otherwise be collected twice as often (D: 27,300 -> 25,300
**   instructions per echoed frame). */
static void tune_gc (lua_State *L) {
  lua_gc(L, LUA_GCINC, 120, 0, 0);
  lua_gc(L, LUA_GCGEN, 35, 0);
}

/* Runs under lua_pcall: returns the exit status on the stack. */
static int pmain (lua_State *L) {
  const rt_opts *o = lua_touserdata(L, 1);
  lc_ctx *c;
  int i, nargs = o->argc - o->script_index - 1;
  luaL_openlibs(L);
  rt_workers_publish(L); /* comm.worker() and the reload report, under --workers */
  c = lc_getctx(L);
  if (o->task_budget > 0 && lc_guard_start(L, c, o->task_budget) != 0)
    return luaL_error(L, "luacomm: cannot start the task budget's timer: %s", strerror(errno));
  preload_core(L);
  set_paths(L, o);
  create_arg(L, o);
  lua_gc(L, LUA_GCRESTART);
  tune_gc(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luacomm.host");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, 0, 4);
  if (o->script) lua_pushstring(L, o->script);
  else lua_pushnil(L);
  lua_setfield(L, -2, "script");
  if (o->code) lua_pushstring(L, o->code);
  else lua_pushnil(L);
  lua_setfield(L, -2, "code");
  lua_pushnumber(L, o->stop_timeout);
  lua_setfield(L, -2, "stop_timeout");
  lua_pushboolean(L, o->log_json);
  lua_setfield(L, -2, "log_json");
  if (o->metrics) lua_pushstring(L, o->metrics);
  else lua_pushnil(L);
  lua_setfield(L, -2, "metrics");
  lua_createtable(L, nargs, 1);
  for (i = 0; i < nargs; i++) {
    lua_pushstring(L, o->argv[o->script_index + 1 + i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, nargs);
  lua_setfield(L, -2, "n");
  lua_setfield(L, -2, "args");
  lua_createtable(L, o->nincludes, 0);
  for (i = 0; i < o->nincludes; i++) {
    lua_pushstring(L, o->includes[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "includes");
  lua_call(L, 1, 1);
  return 1;
}

/* The pidfile we wrote, removed at any exit: the normal return from
** rt_host_run, and rt_host_exit_now on a second stop signal. */
static const char *pidfile_written;

static void remove_pidfile (void) {
  if (pidfile_written) unlink(pidfile_written);
  pidfile_written = NULL;
}

static void write_pidfile (lc_ctx *c, const char *path) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    lc_logf(c, LC_WARN, "cannot write pidfile %s", path);
    return; /* not ours to remove: it may be another process's */
  }
  fprintf(f, "%ld\n", (long)getpid());
  fclose(f);
  pidfile_written = path;
  atexit(remove_pidfile);
}

/* Exits at once — no lua_close of a state that is busy, no atexit
** handlers (LeakSanitizer's among them: an abrupt exit leaks by design) —
** after removing the pidfile and flushing what was printed. */
void rt_host_exit_now (int status) {
  remove_pidfile();
  fflush(NULL);
  _exit(status);
}

/* glibc gives the top of the heap back to the system once 128 KiB of it
** are free. Large frames make the heap swing by more than that on every
** collection: thousands of brk calls a second, each a round of page
** faults. Trimming past 8 MiB leaves the peak (VmHWM) where it was. */
static void tune_malloc (void) {
#ifdef M_TRIM_THRESHOLD
  mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);
#endif
}

int rt_host_run (const rt_opts *o) {
  struct event_base *base;
  tune_malloc();
  rt_evalloc_install();
  base = lc_event_base_new();
  lua_State *L = luaL_newstate();
  rt_pool *pool = rt_pool_new(); /* NULL: Lua's own allocator stays */
  lc_ctx *c;
  int status;
  if (base == NULL || L == NULL) {
    fprintf(stderr, "luacomm: cannot create the event loop or the Lua state\n");
    rt_pool_free(pool);
    return 1;
  }
  /* luaL_newstate's panic and warning functions, the pool's allocation. */
  if (pool != NULL) lua_setallocf(L, rt_pool_alloc, pool);
  rt_log_configure(o->log_json);
  lua_gc(L, LUA_GCSTOP);
  lc_set_base(L, base);
  c = lc_getctx(L);
  lc_set_log(c, rt_log_sink, NULL, o->log_level);
  if (o->pidfile) write_pidfile(c, o->pidfile);
  if (rt_signals_install(base, L) != 0) lc_logf(c, LC_WARN, "cannot install signal handlers");
  lua_pushcfunction(L, pmain);
  lua_pushlightuserdata(L, (void *)o);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "luacomm: %s\n", msg ? msg : "(error object is not a string)");
    status = 1;
  } else {
    status = (int)lua_tointeger(L, -1);
  }
  fflush(stdout);
  lua_close(L);
  rt_pool_free(pool);
  rt_signals_free();
  event_base_free(base);
  rt_evalloc_release();
  remove_pidfile();
  return status;
}

/* --check: compile only; "file:line: message" and 1 on a syntax error. */
int rt_host_check (const char *script) {
  lua_State *L = luaL_newstate();
  int status = 0;
  if (L == NULL) return 1;
  if (luaL_loadfile(L, script) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    status = 1;
  }
  lua_close(L);
  return status;
}
