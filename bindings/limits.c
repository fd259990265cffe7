/*
** limits.c — process-wide limits that no single connection can see:
** warnings held to one line a second, the budget for buffered input, and
** giving memory back to the system once big buffers have drained.
*/
#include <stdarg.h>
#include <stdio.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "lc.h"

/* A storm (hundreds of oversized frames, an fd shortage) must not turn
** into a storm of log lines: one line a second, and the lines held back
** are summed up in the next one, or by a timer when no next one comes, so
** nothing goes unsaid. */
static void emit (lc_ctx *c, lc_ratelog *r, int level, const char *msg) {
  if (r->held > 0) lc_logf(c, level, "%s (and %llu more like it in the last second)", msg, (unsigned long long)r->held);
  else lc_logf(c, level, "%s", msg);
  r->next = lc_now() + 1;
  r->held = 0;
}

static void on_held (evutil_socket_t fd, short what, void *arg) {
  lc_ratelog *r = arg;
  (void)fd, (void)what;
  if (r->held == 0) return;
  r->held--; /* the last one is the line itself */
  emit(r->ctx, r, r->level, r->last);
}

void lc_lograte (lc_ctx *c, lc_ratelog *r, int level, const char *fmt, ...) {
  char buf[sizeof((lc_ratelog *)0)->last];
  double now = lc_now();
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (now >= r->next) {
    emit(c, r, level, buf);
    return;
  }
  r->held++;
  r->level = level;
  snprintf(r->last, sizeof r->last, "%s", buf);
  if (r->ev == NULL) {
    r->ctx = c;
    if ((r->ev = evtimer_new(c->base, on_held, r)) == NULL) return;
  }
  if (!evtimer_pending(r->ev, NULL)) {
    struct timeval tv = lc_timeval(r->next - now);
    evtimer_add(r->ev, &tv);
  }
}

/* After big buffers are gone the heap keeps their pages: Lua's garbage
** holds the strings until a collection, and malloc keeps freed pages below
** the top of the heap. Once big traffic has been quiet for a second, a full
** collection and malloc_trim hand them back. */
static void on_trim (evutil_socket_t fd, short what, void *arg) {
  lc_ctx *c = arg;
  (void)fd, (void)what;
  lua_gc(c->mainL, LUA_GCCOLLECT, 0);
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

#define TRIM_QUIET 1.0

/* A buffer of at least LC_BIG_BUFFER bytes was just released. Re-arms the
** quiet timer, so steady big traffic never pays for a trim. */
void lc_big_released (lc_ctx *c) {
  lc_limits *lim = lc_limits_of(c);
  struct timeval tv = lc_timeval(TRIM_QUIET);
  if (lim->trim_ev == NULL && (lim->trim_ev = evtimer_new(c->base, on_trim, c)) == NULL) return;
  evtimer_add(lim->trim_ev, &tv);
}

/* The context ends (lc_module fini): the timers go; the state is freed
** by the caller. */
static void limits_fini (lc_ctx *c, void *state) {
  lc_limits *lim = state;
  lc_ratelog *all[] = {
    &lim->rl.accept, &lim->rl.refused, &lim->rl.idle, &lim->rl.budget, &lim->rl.too_large, &lim->rl.nomem};
  size_t i;
  (void)c;
  if (lim->trim_ev) event_free(lim->trim_ev);
  for (i = 0; i < sizeof all / sizeof all[0]; i++)
    if (all[i]->ev) event_free(all[i]->ev);
}

#define ctxup(L) ((lc_ctx *)lua_touserdata(L, lua_upvalueindex(1)))

/* core.limits([t]) -> t: reads, and with t sets, the process-wide limits:
** input_budget (bytes of input all connections may hold at once). */
static int core_limits (lua_State *L) {
  lc_ctx *c = ctxup(L);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "input_budget") != LUA_TNIL) {
      int isnum;
      lua_Integer v = lua_tointegerx(L, -1, &isnum);
      if (!isnum || v < 1) luaL_error(L, "bad limit 'input_budget' (an integer >= 1 expected)");
      lc_limits_of(c)->input_budget = (size_t)v;
    }
    lua_pop(L, 1);
  }
  lua_createtable(L, 0, 1);
  lua_pushinteger(L, (lua_Integer)lc_limits_of(c)->input_budget);
  lua_setfield(L, -2, "input_budget");
  return 1;
}

/* Module table at -2, ctx at -1; both stay. */
int lc_limits_open (lua_State *L) {
  lc_ctx *c = lua_touserdata(L, -1);
  lc_limits *lim = lc_module_state(c, LC_MOD_LIMITS, sizeof *lim, limits_fini);
  if (lim == NULL) return luaL_error(L, "luacomm: out of memory");
  if (lim->input_budget == 0) lim->input_budget = LC_DEFAULT_INPUT_BUDGET;
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, core_limits, 1);
  lua_setfield(L, -3, "limits");
  return 0;
}
