/*
** timer.c — comm.after / comm.every: timers whose callback runs in a task
** of its own, so it may block, and whose errors are logged by the scheduler
** without stopping the timer (an `every` keeps firing).
**
** A timer's userdata is anchored in the registry while armed; its user
** value holds { fn, args... }.
*/
#include <stdlib.h>
#include <string.h>

#include "lc.h"

typedef struct lc_timer {
  lc_handle h;
  lc_ctx *ctx;
  struct event *ev;
  int ref; /* registry anchor while armed */
  int repeat;
  int nargs;
  double due;      /* of a one-shot: comm.now() time it may fire */
  lua_Integer gen; /* bumped by cancel: firings not yet started are dropped */
} lc_timer;

#define totimer(L, i) ((lc_timer *)luaL_checkudata(L, i, LC_TIMER_T))

/* Stops the timer and drops its registry anchor (L: any thread that may
** run API calls now). Bumping gen makes firings already queued as tasks
** do nothing, so nothing runs once cancel() has returned. */
static void disarm (lua_State *L, lc_timer *t) {
  t->gen++;
  if (t->ref == LUA_NOREF) return;
  event_del(t->ev);
  lc_handle_remove(t->ctx, &t->h);
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
}

/* core.shutdown("all") and the context's end: no caller's thread to hand,
** so the anchor goes through the main thread. */
static void handle_destroy (lc_handle *h) {
  lc_timer *t = (lc_timer *)h;
  disarm(t->ctx->mainL, t);
}

/* After fn returned (it may have yielded): its results are the task's. */
static int callback_k (lua_State *L, int status, lua_KContext kc) {
  (void)status, (void)kc;
  return lua_gettop(L) - 2;
}

/* The body of a firing's task: fn(args...), unless the timer was cancelled
** between the firing and the task's first turn, so that nothing runs once
** cancel() has returned. Stack: timer, gen. */
static int callback (lua_State *L) {
  lc_timer *t = totimer(L, 1);
  int i;
  if (t->gen != lua_tointeger(L, 2)) return 0;
  lua_getiuservalue(L, 1, 1); /* timer, gen, {fn, args} */
  for (i = 1; i <= t->nargs + 1; i++) lua_rawgeti(L, 3, i);
  lua_remove(L, 3); /* timer, gen, fn, args... */
  lua_callk(L, t->nargs, LUA_MULTRET, 0, callback_k);
  return callback_k(L, LUA_OK, 0);
}

/* libevent fired: spawn a task for this firing (fn may block; an error is
** the scheduler's to log, and an `every` keeps going). A one-shot drops
** its anchor now: the task's stack keeps the timer alive until it ran. */
static void on_fire (evutil_socket_t fd, short what, void *arg) {
  lc_timer *t = arg;
  lc_ctx *c = t->ctx;
  lua_State *L = c->L;
  (void)fd, (void)what;
  if (!t->repeat && lc_now() < t->due) { /* a base on a coarse clock fires early */
    struct timeval tv = lc_timeval(t->due - lc_now());
    event_add(t->ev, &tv);
    return;
  }
  lua_pushcfunction(L, callback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_pushinteger(L, t->gen); /* callback, timer, gen */
  lc_spawn_top(L, 2);         /* task */
  lua_pop(L, 1);
  if (!t->repeat) {
    lua_Integer gen = t->gen;
    disarm(L, t);
    t->gen = gen; /* a one-shot that fired is not a cancel */
  }
}

/* comm.after/every(s, fn, ...) -> timer. The timer is anchored in the
** registry while armed (nothing else may reference it) and counts as
** pending for the loop; { fn, args } live in its user value. */
static int arm (lua_State *L, int repeat) {
  lc_ctx *c = lc_getctx(L);
  double s = luaL_checknumber(L, 1);
  int n = lua_gettop(L), i;
  lc_timer *t;
  struct timeval tv;
  luaL_argcheck(L, s >= 0 && s == s, 1, "interval must be a non-negative number");
  luaL_argcheck(L, !repeat || s > 0, 1, "interval must be positive");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  t = lua_newuserdatauv(L, sizeof *t, 1);
  memset(t, 0, sizeof *t);
  t->ctx = c;
  t->ref = LUA_NOREF;
  luaL_setmetatable(L, LC_TIMER_T);
  t->ev = event_new(c->base, -1, repeat ? EV_PERSIST : 0, on_fire, t);
  if (t->ev == NULL) return luaL_error(L, "luacomm: cannot create a timer");
  t->repeat = repeat;
  t->nargs = n - 2;
  lua_createtable(L, n - 1, 0);
  for (i = 2; i <= n; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->h.destroy = handle_destroy;
  lc_handle_add(c, &t->h, LC_H_TIMER);
  tv = lc_timeval(s);
  t->due = lc_now() + s;
  event_base_update_cache_time(c->base); /* else relative to when this pass began */
  event_add(t->ev, &tv);
  return 1;
}

static int timer_after (lua_State *L) {
  return arm(L, 0);
}

static int timer_every (lua_State *L) {
  return arm(L, 1);
}

/* timer:cancel() and __close: idempotent. */
static int timer_cancel (lua_State *L) {
  disarm(L, totimer(L, 1));
  return 0;
}

/* timer:active() -> whether it is still armed. */
static int timer_active (lua_State *L) {
  lua_pushboolean(L, totimer(L, 1)->ref != LUA_NOREF);
  return 1;
}

/* __gc: an unanchored timer is disarmed already; free its event. */
static int timer_gc (lua_State *L) {
  lc_timer *t = totimer(L, 1);
  if (t->ev) {
    event_free(t->ev);
    t->ev = NULL;
  }
  lc_handle_remove(t->ctx, &t->h);
  return 0;
}

static const luaL_Reg timer_methods[] = {
  {"cancel", timer_cancel},
  {"active", timer_active},
  {NULL, NULL},
};

/* A to-be-closed timer is cancelled at the end of its block; a collected
** one (never armed, or fired and let go) frees its event. */
static const luaL_Reg timer_funcs[] = {
  {"after", timer_after},
  {"every", timer_every},
  {NULL, NULL},
};

static const lc_class timer_class = {
  .name = LC_TIMER_T,
  .what = "timer",
  .methods = timer_methods,
  .funcs = timer_funcs,
  .close = timer_cancel,
  .gc = timer_gc,
};

/* Module table at -2, ctx at -1; both stay. */
int lc_timer_open (lua_State *L) {
  lc_newclass(L, &timer_class);
  return 0;
}
