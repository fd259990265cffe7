/*
** core.c — luaopen_luacomm_core: the per-state context, logging, counters,
** and the one exported symbol of the module (R1).
**
** The context lives in the registry under LC_CTX_KEY. The host creates it
** first (lc_set_base) so the bindings run on the host's loop; under stock
** Lua the first require creates it with an event_base of its own, freed by
** the context's __gc, which runs last because the context is created first.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc.h"

/* Runs last at lua_close: whatever is still open (a connection lingering to
** flush, a timer whose userdata is gone) is cut before the base goes. */
static int ctx_gc (lua_State *L) {
  lc_ctx *c = lua_touserdata(L, 1);
  int k;
  while (c->handles.next != &c->handles) c->handles.next->destroy(c->handles.next);
  if (c->drain_ev) event_free(c->drain_ev); /* no task may run from here on */
  c->drain_ev = NULL;
  c->L = NULL;
  for (k = LC_MODS - 1; k >= 0; k--) { /* with the base still there: evdns needs it */
    lc_module *m = &c->mods[k];
    if (m->state == NULL) continue;
    if (m->fini) m->fini(c, m->state);
    free(m->state);
    m->state = NULL;
  }
  if (c->own_base && c->base) event_base_free(c->base);
  c->base = NULL;
  return 0;
}

const char *const lc_level_names[] = {"debug", "info", "warn", "error", NULL};

/* The level named name, or -1 when there is none. */
int lc_level_from (const char *name) {
  int i;
  for (i = 0; lc_level_names[i]; i++)
    if (strcmp(name, lc_level_names[i]) == 0) return i;
  return -1;
}

/* The sink under stock Lua. Filtering is not its business: the core has
** already dropped what is below its level. */
static void stderr_log (void *ud, int level, const char *msg, size_t len) {
  (void)ud;
  fprintf(stderr, "[%s] %.*s\n", lc_level_names[level], (int)len, msg);
}

/* libevent's timers otherwise run on CLOCK_MONOTONIC_COARSE, which lags
** the clock of comm.now() by up to a tick (4 ms here): a sleep would end
** before its time as comm.now() measures it. For hosts too. */
struct event_base *lc_event_base_new (void) {
  struct event_config *cfg = event_config_new();
  struct event_base *base;
  if (cfg == NULL) return NULL;
  event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
  /* Batches epoll_ctl calls per loop turn: evhttp turns reading off and on
  ** again for every request, and a connection's write event comes and goes
  ** within a pass; each descriptor's changes reach the kernel as at most one
  ** epoll_ctl per turn (an off-then-on still costs one MOD). (Unsafe only for
  ** dup()ed descriptors, which luacomm never makes.) */
  event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  return base;
}

/* Creates the context with the given base (NULL: a base of its own) and
** leaves it registered; pushes nothing. */
static lc_ctx *ctx_create (lua_State *L, struct event_base *base) {
  lc_ctx *c = lua_newuserdatauv(L, sizeof *c, 0);
  const char *max_io = getenv("LUACOMM_MAX_IO");
  memset(c, 0, sizeof *c);
  c->handles.next = c->handles.prev = &c->handles;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  c->mainL = lua_tothread(L, -1);
  lua_pop(L, 1);
  c->log = stderr_log;
  c->log_level = LC_INFO;
  c->max_io = max_io ? atoi(max_io) : 0;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  if (base == NULL) {
    base = lc_event_base_new();
    if (base == NULL) luaL_error(L, "luacomm: cannot create an event base");
    c->own_base = 1;
  }
  c->base = base;
  lua_setfield(L, LUA_REGISTRYINDEX, LC_CTX_KEY);
  return c;
}

lc_ctx *lc_getctx (lua_State *L) {
  lc_ctx *c;
  lua_getfield(L, LUA_REGISTRYINDEX, LC_CTX_KEY);
  c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c ? c : ctx_create(L, NULL);
}

/* For the host: run the bindings on its loop. Call before requiring the module. */
void lc_set_base (lua_State *L, struct event_base *base) {
  ctx_create(L, base);
}

/* The fail convention (R7): nil, err. */
int lc_fail (lua_State *L, const char *err) {
  luaL_pushfail(L);
  lua_pushstring(L, err);
  return 2;
}

/* For a host: where records go, and the level to start with (Lua may
** change it with core.log_level; the sink never filters on its own). */
void lc_set_log (lc_ctx *c, lc_log_fn fn, void *ud, int level) {
  c->log = fn;
  c->log_ud = ud;
  c->log_level = level;
}

void lc_logf (lc_ctx *c, int level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  int n;
  if (level < c->log_level) return;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  c->log(c->log_ud, level, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void lc_handle_add (lc_ctx *c, lc_handle *h, int kind) {
  h->kind = kind;
  h->next = c->handles.next;
  h->prev = &c->handles;
  c->handles.next->prev = h;
  c->handles.next = h;
  c->nhandles[kind]++;
}

void lc_handle_remove (lc_ctx *c, lc_handle *h) {
  if (h->next == NULL) return;
  h->prev->next = h->next;
  h->next->prev = h->prev;
  h->next = h->prev = NULL;
  c->nhandles[h->kind]--;
}

/*
** The state a file keeps in this context under slot, created zeroed on
** first use; NULL when out of memory. The context owns it: fini (may be
** NULL) releases what it holds, then it is freed, when the context ends.
*/
void *lc_module_state (lc_ctx *c, int slot, size_t size, lc_fini_fn fini) {
  lc_module *m = &c->mods[slot];
  if (m->state == NULL && (m->state = calloc(1, size)) != NULL) m->fini = fini;
  return m->state;
}

/* Adds fn to the hooks run at the end of every scheduler pass, once (a
** module opened twice registers once). -1 when LC_MAX_PASS_HOOKS are taken:
** a build error of ours, which the caller raises. */
int lc_on_pass_end (lc_ctx *c, lc_pass_fn fn) {
  int i;
  for (i = 0; i < c->npass_end; i++)
    if (c->pass_end[i] == fn) return 0;
  if (c->npass_end == LC_MAX_PASS_HOOKS) return -1;
  c->pass_end[c->npass_end++] = fn;
  return 0;
}

/* opts[k] as an integer >= min, or def when opts (at idx) or the field is nil. */
int lc_opt_int (lua_State *L, int idx, const char *k, lua_Integer def, lua_Integer min) {
  lua_Integer v = def;
  if (lua_istable(L, idx)) {
    if (lua_getfield(L, idx, k) != LUA_TNIL) {
      int isnum;
      v = lua_tointegerx(L, -1, &isnum);
      if (!isnum || v < min) luaL_error(L, "bad option '%s' (an integer >= %d expected)", k, (int)min);
    }
    lua_pop(L, 1);
  }
  return (int)(v > INT32_MAX ? INT32_MAX : v);
}

#define ctxup(L) ((lc_ctx *)lua_touserdata(L, lua_upvalueindex(1)))

/* core.log(level, msg): hands msg to the sink when level is not filtered. */
static int core_log (lua_State *L) {
  lc_ctx *c = ctxup(L);
  int level = luaL_checkoption(L, 1, NULL, lc_level_names);
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len);
  if (level >= c->log_level) c->log(c->log_ud, level, msg, len);
  return 0;
}

/* core.log_level([level]) -> name, rank: sets the one minimum level there
** is and returns it; rank (1 = debug) lets Lua skip formatting a record
** the core would drop anyway. */
static int core_log_level (lua_State *L) {
  lc_ctx *c = ctxup(L);
  if (!lua_isnoneornil(L, 1)) c->log_level = luaL_checkoption(L, 1, NULL, lc_level_names);
  lua_pushstring(L, lc_level_names[c->log_level]);
  lua_pushinteger(L, c->log_level + 1);
  return 2;
}

/* core.log_levels() -> {"debug", ...}: the names, in rank order. */
static int core_log_levels (lua_State *L) {
  int i;
  lua_createtable(L, 4, 0);
  for (i = 0; lc_level_names[i]; i++) {
    lua_pushstring(L, lc_level_names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static void setcount (lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static int core_stats (lua_State *L) {
  lc_ctx *c = ctxup(L);
  lua_createtable(L, 0, 24);
  setcount(L, "tasks", (uint64_t)c->live_tasks);
  setcount(L, "tasks_spawned", c->n.tasks_spawned);
  setcount(L, "timers", (uint64_t)c->nhandles[LC_H_TIMER]);
  setcount(L, "conns", (uint64_t)c->nhandles[LC_H_CONN]);
  setcount(L, "lingering", (uint64_t)lc_conn_lingering(c));
  setcount(L, "listeners", (uint64_t)c->nhandles[LC_H_LISTENER]);
  setcount(L, "udp", (uint64_t)c->nhandles[LC_H_UDP]);
  setcount(L, "frames_in", c->n.frames_in);
  setcount(L, "frames_out", c->n.frames_out);
  setcount(L, "bytes_in", c->n.bytes_in);
  setcount(L, "bytes_out", c->n.bytes_out);
  setcount(L, "reloads", c->n.reloads);
  setcount(L, "reload_failures", c->n.reload_failures);
  setcount(L, "task_errors", c->n.task_errors);
  setcount(L, "refused", c->n.refused);
  setcount(L, "accept_errors", c->n.accept_errors);
  setcount(L, "idle_closed", c->n.idle_closed);
  setcount(L, "budget_closed", c->n.budget_closed);
  setcount(L, "frames_too_large", c->n.frames_too_large);
  setcount(L, "buffered_in", (uint64_t)lc_limits_of(c)->buffered_in);
  setcount(L, "tls_failures", c->n.tls_failures);
  return 1;
}

/* core.count(name): bumps one of the counters only the Lua layer can
** tell (a reload's outcome is known in host.lua). Everything else the core
** counts itself, where it happens. */
static int core_count (lua_State *L) {
  static const char *const names[] = {"reloads", "reload_failures", NULL};
  lc_ctx *c = ctxup(L);
  if (luaL_checkoption(L, 1, NULL, names) == 0) c->n.reloads++;
  else c->n.reload_failures++;
  return 0;
}

/* ---- the host's hooks ---- */

static const char *const host_hooks[] = {"signal", "stop", "stopping", "reload", NULL};

/*
** core.set_host{ signal = fn, stop = fn, stopping = fn, reload = fn }: the
** one place a host plugs into the library (scripts/luacomm/host.lua).
** signal(name) runs in a task of its own for SIGHUP/SIGTERM/SIGINT;
** comm.stop, comm.stopping and comm.reload call the others. Replaces any
** earlier set; an unknown key or a non-function raises.
*/
static int core_set_host (lua_State *L) {
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_createtable(L, 0, 4);
  lua_pushnil(L);
  while (lua_next(L, 1)) { /* t, hooks, key, value */
    luaL_argcheck(L, lua_type(L, -2) == LUA_TSTRING, 1, "hook names are strings");
    for (i = 0; host_hooks[i] && strcmp(host_hooks[i], lua_tostring(L, -2)) != 0; i++) {}
    if (host_hooks[i] == NULL)
      return luaL_error(L, "bad argument #1 to 'set_host' (unknown hook '%s')", lua_tostring(L, -2));
    luaL_argexpected(L, lua_isfunction(L, -1), 1, "functions");
    lua_pushvalue(L, -2);
    lua_insert(L, -2); /* t, hooks, key, key, value */
    lua_rawset(L, -4);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, LC_HOST_KEY);
  return 0;
}

/* Pushes the host's hook name and returns 1, or pushes nothing and returns
** 0 when no host set one. */
int lc_push_host_hook (lua_State *L, const char *name) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LC_HOST_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  if (lua_getfield(L, -1, name) != LUA_TFUNCTION) {
    lua_pop(L, 2);
    return 0;
  }
  lua_remove(L, -2);
  return 1;
}

/* core.host(name) -> the host's hook, or nil (stock Lua). */
static int core_host (lua_State *L) {
  const char *name = host_hooks[luaL_checkoption(L, 1, NULL, host_hooks)];
  if (!lc_push_host_hook(L, name)) lua_pushnil(L);
  return 1;
}

/* Destroys every handle of the kinds in mask; returns how many. */
static int destroy_kinds (lc_ctx *c, unsigned mask) {
  lc_handle *h, *next;
  int n = 0;
  for (h = c->handles.next; h != &c->handles; h = next) {
    next = h->next;
    if (mask & (1u << h->kind)) {
      h->destroy(h);
      n++;
    }
  }
  return n;
}

/*
** core.shutdown(what) -> n, the steps of a graceful stop:
** "listeners": stop accepting; "conns": close every connection, flushing
** what was sent (as conn:close()); "all": cut everything still open —
** lingering connections, timers, UDP sockets — at once.
*/
static int core_shutdown (lua_State *L) {
  static const char *const steps[] = {"listeners", "conns", "all", NULL};
  lc_ctx *c = ctxup(L);
  int n;
  switch (luaL_checkoption(L, 1, NULL, steps)) {
    case 0: n = destroy_kinds(c, 1u << LC_H_LISTENER); break;
    case 1: n = lc_conn_close_all(c); break;
    default: n = destroy_kinds(c, ~0u); break;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* core.max_io([n]): caps every read and write at n bytes (0 = no cap), to
** drive every partial-frame path in tests; LUACOMM_MAX_IO sets it at start. */
static int core_max_io (lua_State *L) {
  lc_ctx *c = ctxup(L);
  if (!lua_isnoneornil(L, 1)) c->max_io = (int)luaL_checkinteger(L, 1);
  lua_pushinteger(L, c->max_io);
  return 1;
}

static int core_versions (lua_State *L) {
  lua_pushstring(L, LC_VERSION);
  lua_pushstring(L, event_get_version());
  return 2;
}

static const luaL_Reg core_funcs[] = {
  {"log", core_log},
  {"log_level", core_log_level},
  {"log_levels", core_log_levels},
  {"stats", core_stats},
  {"count", core_count},
  {"set_host", core_set_host},
  {"host", core_host},
  {"versions", core_versions},
  {"shutdown", core_shutdown},
  {"max_io", core_max_io},
  {NULL, NULL},
};

int luaopen_luacomm_core (lua_State *L) {
  lc_ctx *c = lc_getctx(L);
  luaL_checkversion(L);
  lua_newtable(L);
  lua_pushlightuserdata(L, c); /* mod, ctx */
  lc_sched_open(L);
  lc_timer_open(L);
  lc_cond_open(L);
  lc_conn_open(L);
  lc_listener_open(L);
  lc_udp_open(L);
  lc_crypto_open(L);
  lc_limits_open(L);
  lc_http_open(L);
  lua_pushvalue(L, -1);
  lua_insert(L, -3);               /* ctx, mod, ctx */
  luaL_setfuncs(L, core_funcs, 1); /* ctx, mod */
  lua_remove(L, -2);
  return 1;
}
