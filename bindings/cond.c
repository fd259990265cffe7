/*
** cond.c — core.cond(): a condition tasks can wait on. The Lua layer builds
** channels and other queues from it (mechanism in C, policy in Lua).
*/
#include "lc.h"

typedef struct lc_cond {
  lc_ctx *ctx;
  lc_waitq waiters;
} lc_cond;

#define tocond(L, i) ((lc_cond *)luaL_checkudata(L, i, LC_COND_T))

/* Resumed by a signal, or by the deadline. */
static int cond_wait_k (lua_State *L, int status, lua_KContext kc) {
  (void)status;
  if (lc_expired(L, kc)) return lc_fail(L, "timeout");
  lua_pushboolean(L, 1);
  return 1;
}

/* cond:wait([timeout]) -> true | nil, "timeout". Yields the calling task
** until a signal or the deadline; the cond stays alive on its stack. */
static int cond_wait (lua_State *L) {
  lc_cond *cv = tocond(L, 1);
  double deadline = lc_deadline(L, 2);
  lua_settop(L, 1);
  return lc_wait(cv->ctx, L, &cv->waiters, lc_push_deadline(L, deadline), cond_wait_k);
}

/* cond:signal() -> whether a task was waiting: wakes the first one. */
static int cond_signal (lua_State *L) {
  lc_cond *cv = tocond(L, 1);
  int any = cv->waiters.head != NULL;
  lc_wake_one(cv->ctx, &cv->waiters);
  lua_pushboolean(L, any);
  return 1;
}

/* cond:broadcast() and __close: wakes every waiter. */
static int cond_broadcast (lua_State *L) {
  lc_cond *cv = tocond(L, 1);
  lc_wake_all(cv->ctx, &cv->waiters);
  return 0;
}

/* core.cond() -> a new condition, plain memory in its userdata. */
static int cond_new (lua_State *L) {
  lc_cond *cv = lua_newuserdatauv(L, sizeof *cv, 0);
  cv->ctx = lc_getctx(L);
  cv->waiters.head = cv->waiters.tail = NULL;
  luaL_setmetatable(L, LC_COND_T);
  return 1;
}

static const luaL_Reg cond_methods[] = {
  {"wait", cond_wait},
  {"signal", cond_signal},
  {"broadcast", cond_broadcast},
  {NULL, NULL},
};

/* Nothing to free: a cond is plain memory in its userdata, and a task
** waiting on it keeps it alive (argument 1 of the wait). A to-be-closed
** cond wakes whoever still waits at the end of its block (a wake-up is
** never a promise: waiters re-check their condition). */
static const luaL_Reg cond_funcs[] = {
  {"cond", cond_new},
  {NULL, NULL},
};

static const lc_class cond_class = {
  .name = LC_COND_T,
  .what = "cond",
  .methods = cond_methods,
  .funcs = cond_funcs,
  .close = cond_broadcast,
};

/* Module table at -2, ctx at -1; both stay. */
int lc_cond_open (lua_State *L) {
  lc_newclass(L, &cond_class);
  return 0;
}
